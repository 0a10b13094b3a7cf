//! The authorization code flow with PKCE (S256), the browser returning to a listener on
//! localhost: kubelogin's and MSAL's `interactive` login.

use std::time::Duration;

use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, RedirectUrl};

use super::super::{IdentityClient, IdentityError, LoginPrompt, Target, UserLogin};
use super::loopback::{Loopback, Redirect};
use crate::identity::token::TokenSet;

pub(in crate::identity) async fn run(
    identity: &IdentityClient,
    target: &Target,
    user: &UserLogin<'_>,
    prompt: &(dyn Fn(LoginPrompt) + Send + Sync),
    timeout: Duration,
) -> Result<TokenSet, IdentityError> {
    let loopback = match user.redirect_url {
        Some(given) => Loopback::bind_at(given).await,
        None => Loopback::bind().await,
    }
    .map_err(IdentityError::Loopback)?;
    let redirect = RedirectUrl::new(loopback.redirect_uri())
        .map_err(|e| IdentityError::InvalidEndpoint(e.to_string()))?;
    let client = identity
        .oauth_client(target)
        .await?
        .set_redirect_uri(redirect);

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut authorize = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(IdentityClient::scopes(target))
        .set_pkce_challenge(challenge);
    // With an account named, Entra fills it in; without, the user picks one.
    authorize = match user.login_hint {
        Some(hint) => authorize.add_extra_param("login_hint", hint),
        None => authorize.add_extra_param("prompt", "select_account"),
    };
    for (key, value) in target.oidc.iter().flat_map(|o| &o.auth_params) {
        authorize = authorize.add_extra_param(key.as_str(), value.as_str());
    }
    let (url, state) = authorize.url();
    prompt(LoginPrompt::OpenUrl {
        url: url.to_string(),
    });

    let code = match loopback.wait(state.secret(), timeout).await? {
        Redirect::Code(code) => code,
        Redirect::Denied { error, description } => {
            let first_line = description.lines().next().unwrap_or("").trim().to_string();
            return Err(IdentityError::LoginFailed(if first_line.is_empty() {
                format!("sign-in failed: {error}")
            } else {
                format!("sign-in failed: {error}: {first_line}")
            }));
        }
    };

    crate::identity::exchange!(
        identity,
        client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .add_extra_param("scope", target.scopes.join(" ")),
        target
    )
}
