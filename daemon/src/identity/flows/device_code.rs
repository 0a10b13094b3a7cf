//! The device code flow (RFC 8628 as Entra runs it): ask for a code, show it, poll the token
//! endpoint until the user finishes on another device.

use std::time::Duration;

use broker_proto::text::printable;
use serde::{Deserialize, Serialize};

use super::super::{IdentityClient, IdentityError, LoginPrompt, Target};
use crate::identity::error::{EntraErrorBody, ErrorClass};

/// Entra's addition to the device authorization answer: ready-made instructions.
#[derive(Debug, Deserialize, Serialize)]
struct EntraDeviceFields {
    #[serde(default)]
    message: Option<String>,
}

impl oauth2::ExtraDeviceAuthorizationFields for EntraDeviceFields {}

pub(in crate::identity) async fn run(
    identity: &IdentityClient,
    target: &Target,
    prompt: &(dyn Fn(LoginPrompt) + Send + Sync),
    timeout: Duration,
) -> Result<crate::identity::token::TokenSet, IdentityError> {
    let endpoints = identity.endpoints(target).await?;
    let device = endpoints.device.clone().ok_or_else(|| {
        IdentityError::InvalidEndpoint(
            "the issuer has no device authorization endpoint; sign in with the browser \
             (--grant-type authcode)"
                .into(),
        )
    })?;
    let client = IdentityClient::client_for(target, &endpoints)?.set_device_authorization_url(
        oauth2::DeviceAuthorizationUrl::new(device)
            .map_err(|e| IdentityError::InvalidEndpoint(e.to_string()))?,
    );
    let details: oauth2::DeviceAuthorizationResponse<EntraDeviceFields> = client
        .exchange_device_code()
        .add_scopes(IdentityClient::scopes(target))
        .request_async(&identity.http_for(target)?)
        .await
        .map_err(|e| IdentityError::from_request(e, IdentityError::rejected))?;

    // All three are shown to the user as the IdP wrote them, less any control character.
    let verification_uri = printable(details.verification_uri().as_str()).into_owned();
    let user_code = printable(details.user_code().secret()).into_owned();
    let message = match &details.extra_fields().message {
        Some(message) => printable(message).into_owned(),
        None => format!(
            "To sign in, use a web browser to open the page {verification_uri} and enter the \
             code {user_code} to authenticate."
        ),
    };
    let wait = details.expires_in().min(timeout);
    prompt(LoginPrompt::DeviceCode {
        verification_uri,
        user_code,
        message,
        expires_at: identity.clock.now() + wait,
    });

    let answer = client
        .exchange_device_access_token(&details)
        .request_async(&identity.http_for(target)?, tokio::time::sleep, Some(wait))
        .await
        .map_err(|e| IdentityError::from_request(e, |body| poll_failure(&body, wait)))?;
    identity.token_set(answer, target)
}

/// What a final device-flow error answer means. Entra's `authorization_declined` and
/// `bad_verification_code` are not in `oauth2`'s list, so they are matched by name.
fn poll_failure(body: &oauth2::DeviceCodeErrorResponse, waited: Duration) -> IdentityError {
    let error = serde_json::to_value(body.error())
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown_error".into());
    match error.as_str() {
        "authorization_declined" | "access_denied" => {
            IdentityError::LoginFailed("the sign-in was declined".into())
        }
        "expired_token" => IdentityError::LoginFailed(format!(
            "the device code expired after {} s without a sign-in; start the login again",
            waited.as_secs()
        )),
        "bad_verification_code" => IdentityError::LoginFailed(
            "the identity provider no longer knows this device code".into(),
        ),
        _ => {
            // An ordinary OAuth error such as invalid_client: keep the IdP's words and
            // classify them as for any other grant.
            let body = EntraErrorBody {
                error,
                error_description: body.error_description().cloned(),
                ..EntraErrorBody::default()
            };
            match body.classify() {
                ErrorClass::LoginRequired => IdentityError::LoginFailed(body.to_string()),
                class => IdentityError::Rejected {
                    class,
                    body: Box::new(body),
                },
            }
        }
    }
}
