//! Talking to the identity provider, and nothing else: which endpoints, which grants, what the
//! answers mean. No state lives here; the broker decides when to call and keeps the results.

pub mod certificate;
pub mod ci_tokens;
pub mod cli;
pub mod cloud;
pub mod credential;
pub mod discovery;
pub mod error;
mod flows;
pub mod http;
pub mod managed_identity;
pub mod pop;
pub mod token;

use std::time::{Duration, SystemTime};

use oauth2::basic::{
    BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, ClientId, EndpointNotSet, EndpointSet, RequestTokenError, Scope,
    StandardRevocableToken, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use cloud::Authority;
pub use error::{EntraErrorBody, ErrorClass};
use http::{HttpError, IdpHttp};
use token::{AccessToken, IdToken, RefreshToken, TokenSet};

/// Whose tokens, from where, for what: an app registration in a tenant asking an authority for
/// scopes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub authority: Authority,
    pub tenant: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// Set for any OpenID Connect issuer but Entra: endpoints by discovery, the ID token served.
    pub oidc: Option<OidcTarget>,
    /// Proof-of-possession: the `req_cnf` naming the session's key; the token asked for is
    /// bound to it.
    pub pop: Option<String>,
    /// A confidential client's secret, sent with every grant of a user session (an OpenID
    /// Connect issuer that wants it even with PKCE, as Google's installed apps do).
    pub client_secret: Option<TargetSecret>,
}

/// A client secret travelling with a [`Target`]: compared by value, never printed, and left
/// out of the hash (a target is the same whatever its secret).
#[derive(Clone)]
pub struct TargetSecret(pub secrecy::SecretString);

impl PartialEq for TargetSecret {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl Eq for TargetSecret {}

impl std::hash::Hash for TargetSecret {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl std::fmt::Debug for TargetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TargetSecret(..)")
    }
}

/// What differs for an OpenID Connect issuer that is not Entra.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OidcTarget {
    /// As given; its discovery document is under it.
    pub issuer: String,
    /// Serve the access token instead of the ID token (`--oidc-use-access-token`).
    pub use_access_token: bool,
    /// Extra parameters of the authorization request.
    pub auth_params: Vec<(String, String)>,
    /// PEM certificates trusted for this issuer besides the system's; empty for none.
    pub certificate_authority: String,
}

/// What the user must see or do while a login waits for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginPrompt {
    DeviceCode {
        verification_uri: String,
        user_code: String,
        message: String,
        expires_at: SystemTime,
    },
    OpenUrl {
        url: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Network trouble, a timeout or a server fault: worth retrying later.
    #[error(transparent)]
    Unavailable(#[from] HttpError),
    /// The IdP answered with something that is not a valid OAuth answer.
    #[error("the identity provider sent an invalid answer: {0}")]
    Malformed(String),
    /// The IdP refused the request.
    #[error("the identity provider refused: {body}")]
    Rejected {
        class: ErrorClass,
        body: Box<EntraErrorBody>,
    },
    /// A login that ended without a grant: declined, expired, abandoned or tampered with.
    #[error("{0}")]
    LoginFailed(String),
    /// The endpoints built from the session's parameters are not valid URLs.
    #[error("invalid identity provider endpoint: {0}")]
    InvalidEndpoint(String),
    /// The local listener for the browser's redirect could not be started.
    #[error("cannot listen for the browser's redirect on localhost: {0}")]
    Loopback(std::io::Error),
    /// A credential that was supplied cannot be used (an unreadable certificate, an empty
    /// federated token file, an identity IMDS does not know).
    #[error("{0}")]
    Credential(String),
    /// An OpenID Connect answer without the ID token the session serves: Kubernetes' OIDC
    /// authenticator takes nothing else, so only a new sign-in helps.
    #[error(
        "the issuer's answer has no id_token (the session serves ID tokens; a sign-in asking \
         for the openid scope gives one, or use --oidc-use-access-token)"
    )]
    NoIdToken,
    /// `az` or `azd` failed.
    #[error("{tool}: {message}")]
    Cli {
        tool: &'static str,
        message: String,
        class: ErrorClass,
    },
}

impl IdentityError {
    pub fn class(&self) -> ErrorClass {
        match self {
            IdentityError::Unavailable(_) | IdentityError::Malformed(_) => ErrorClass::Transient,
            IdentityError::Rejected { class, .. } => *class,
            IdentityError::LoginFailed(_) | IdentityError::NoIdToken => ErrorClass::LoginRequired,
            IdentityError::InvalidEndpoint(_) | IdentityError::Credential(_) => ErrorClass::Config,
            IdentityError::Loopback(_) => ErrorClass::Transient,
            IdentityError::Cli { class, .. } => *class,
        }
    }

    /// How long the IdP asked us to wait (HTTP 429/503 Retry-After), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            IdentityError::Unavailable(HttpError::ServerFault { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }

    /// The IdP's AADSTS codes, if it gave any.
    pub fn idp_error_codes(&self) -> &[i64] {
        match self {
            IdentityError::Rejected { body, .. } => &body.error_codes,
            _ => &[],
        }
    }

    /// Maps an `oauth2` request failure. The raw answer that `oauth2` attaches to parse errors
    /// is dropped on purpose: a malformed token answer may still contain tokens.
    fn from_request<TE>(
        error: RequestTokenError<HttpError, TE>,
        to_body: impl Fn(TE) -> Self,
    ) -> Self
    where
        TE: oauth2::ErrorResponse + 'static,
    {
        match error {
            RequestTokenError::ServerResponse(body) => to_body(body),
            RequestTokenError::Request(http) => IdentityError::Unavailable(http),
            RequestTokenError::Parse(err, _raw) => IdentityError::Malformed(format!(
                "cannot read field `{}` of the answer",
                err.path()
            )),
            RequestTokenError::Other(message) => IdentityError::Malformed(message),
        }
    }

    fn rejected(body: EntraErrorBody) -> Self {
        IdentityError::Rejected {
            class: body.classify(),
            body: Box::new(body),
        }
    }
}

/// Entra's additions to the standard token answer.
#[derive(Debug, Deserialize, Serialize)]
pub struct EntraTokenFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<IdToken>,
    /// Seconds after which to refresh; MSAL accepts a number or a quoted number.
    #[serde(
        default,
        deserialize_with = "lenient_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    refresh_in: Option<u64>,
}

impl oauth2::ExtraTokenFields for EntraTokenFields {}

type EntraTokenResponse = oauth2::StandardTokenResponse<EntraTokenFields, BasicTokenType>;

type OAuthClient = oauth2::Client<
    EntraErrorBody,
    EntraTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// When a token answer gives no lifetime, assume a short one rather than a long one.
const ASSUMED_LIFETIME: Duration = Duration::from_secs(300);

/// The assertion type Entra expects for certificate and federated client assertions.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What a user sign-in may be told besides its target: the account expected (kubelogin's
/// `--login-hint`) and where the browser comes back (`--redirect-url`).
#[derive(Clone, Copy, Debug, Default)]
pub struct UserLogin<'a> {
    pub login_hint: Option<&'a str>,
    pub redirect_url: Option<&'a str>,
}

/// Runs OAuth grants against Entra ID (or any IdP with the same endpoint layout).
#[derive(Clone)]
pub struct IdentityClient {
    http: IdpHttp,
    clock: std::sync::Arc<dyn Clock>,
    imds_endpoint: String,
    discovered: discovery::Discovered,
    /// Clients that trust an issuer's private CA besides the system's, by the CA's digest.
    with_roots: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, IdpHttp>>>,
}

/// Sends a token request to `target`'s token endpoint and reads the answer: the one way every
/// grant but the device code's polling is redeemed. For proof-of-possession the request gets
/// `token_type=pop` and the key's `req_cnf` (kubelogin's PoP authentication scheme). A macro
/// because oauth2's request builders share no trait.
macro_rules! exchange {
    ($identity:expr, $request:expr, $target:expr) => {{
        let (identity, target) = ($identity, $target);
        let request = $request;
        let request = match &target.pop {
            Some(cnf) => request
                .add_extra_param("token_type", "pop")
                .add_extra_param("req_cnf", cnf.clone()),
            None => request,
        };
        let answer = request
            .request_async(&identity.http_for(target)?)
            .await
            .map_err(|e| {
                crate::identity::IdentityError::from_request(
                    e,
                    crate::identity::IdentityError::rejected,
                )
            })?;
        identity.token_set(answer, target)
    }};
}
pub(crate) use exchange;

impl IdentityClient {
    pub fn new(clock: std::sync::Arc<dyn Clock>) -> Result<Self, IdentityError> {
        Ok(IdentityClient {
            http: IdpHttp::new(clock.clone())?,
            clock,
            imds_endpoint: managed_identity::endpoint(),
            discovered: discovery::Discovered::default(),
            with_roots: Default::default(),
        })
    }

    /// The HTTP client for `target`: the common one, or one that also trusts the issuer's own
    /// certificate authority (made once per CA).
    fn http_for(&self, target: &Target) -> Result<IdpHttp, IdentityError> {
        let pem = match &target.oidc {
            Some(oidc) if !oidc.certificate_authority.is_empty() => &oidc.certificate_authority,
            _ => return Ok(self.http.clone()),
        };
        use sha2::Digest;
        let digest: String = sha2::Sha256::digest(pem.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut clients = self.with_roots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(http) = clients.get(&digest) {
            return Ok(http.clone());
        }
        let http = self.http.with_roots(pem)?;
        clients.insert(digest, http.clone());
        Ok(http)
    }

    /// `target`'s endpoints: Entra's by their layout, any other issuer's by discovery.
    pub async fn endpoints(&self, target: &Target) -> Result<discovery::Endpoints, IdentityError> {
        match &target.oidc {
            None => Ok(discovery::Endpoints::entra(target)),
            Some(oidc) => {
                let http = self.http_for(target)?;
                self.discovered.endpoints(&http, &oidc.issuer).await
            }
        }
    }

    async fn oauth_client(&self, target: &Target) -> Result<OAuthClient, IdentityError> {
        let endpoints = self.endpoints(target).await?;
        Self::client_for(target, &endpoints)
    }

    fn client_for(
        target: &Target,
        endpoints: &discovery::Endpoints,
    ) -> Result<OAuthClient, IdentityError> {
        use secrecy::ExposeSecret;
        let invalid = |e: url::ParseError| IdentityError::InvalidEndpoint(e.to_string());
        let client = oauth2::Client::new(ClientId::new(target.client_id.clone()))
            // Public clients send client_id in the form body, as Entra expects.
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(AuthUrl::new(endpoints.authorize.clone()).map_err(invalid)?)
            .set_token_uri(TokenUrl::new(endpoints.token.clone()).map_err(invalid)?);
        Ok(match &target.client_secret {
            Some(secret) => client.set_client_secret(oauth2::ClientSecret::new(
                secret.0.expose_secret().to_string(),
            )),
            None => client,
        })
    }

    /// Revokes `refresh_token` at the issuer (RFC 7009), when it has a revocation endpoint.
    /// `Ok(false)` when it has none (Entra).
    pub async fn revoke(
        &self,
        target: &Target,
        refresh_token: &RefreshToken,
    ) -> Result<bool, IdentityError> {
        let endpoints = self.endpoints(target).await?;
        let Some(endpoint) = endpoints.revocation else {
            return Ok(false);
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", refresh_token.expose())
            .append_pair("token_type_hint", "refresh_token")
            .append_pair("client_id", &target.client_id)
            .finish();
        let request = ::http::Request::post(&endpoint)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.into_bytes())
            .map_err(|e| IdentityError::InvalidEndpoint(e.to_string()))?;
        let response = self.http_for(target)?.fetch(request).await?;
        // RFC 7009 §2.2: 200 whether or not the token was valid.
        match response.status().as_u16() {
            200 => Ok(true),
            status => Err(IdentityError::Malformed(format!(
                "the issuer's revocation endpoint answered HTTP {status}"
            ))),
        }
    }

    fn scopes(target: &Target) -> impl Iterator<Item = Scope> + '_ {
        target.scopes.iter().cloned().map(Scope::new)
    }

    /// Redeems a refresh token. The answer's refresh token, if any, replaces the old one.
    pub async fn refresh(
        &self,
        target: &Target,
        refresh_token: &RefreshToken,
    ) -> Result<TokenSet, IdentityError> {
        let client = self.oauth_client(target).await?;
        let presented = oauth2::RefreshToken::new(refresh_token.expose().to_string());
        exchange!(
            self,
            client
                .exchange_refresh_token(&presented)
                .add_scopes(Self::scopes(target)),
            target
        )
    }

    /// The client credentials grant with a client secret (kubelogin `spn`).
    pub async fn client_secret(
        &self,
        target: &Target,
        secret: &secrecy::SecretString,
    ) -> Result<TokenSet, IdentityError> {
        use secrecy::ExposeSecret;
        let client = self
            .oauth_client(target)
            .await?
            .set_client_secret(oauth2::ClientSecret::new(
                secret.expose_secret().to_string(),
            ));
        exchange!(
            self,
            client
                .exchange_client_credentials()
                .add_scopes(Self::scopes(target)),
            target
        )
    }

    /// The client credentials grant with a signed client assertion: a certificate's, or a
    /// federated token from another issuer (workload identity).
    async fn client_assertion(
        &self,
        target: &Target,
        assertion: String,
    ) -> Result<TokenSet, IdentityError> {
        let client = self.oauth_client(target).await?;
        exchange!(
            self,
            client
                .exchange_client_credentials()
                .add_scopes(Self::scopes(target))
                .add_extra_param("client_assertion_type", JWT_BEARER)
                .add_extra_param("client_assertion", assertion),
            target
        )
    }

    /// The client credentials grant with a certificate (kubelogin `spn` with a PEM or PFX).
    pub async fn client_certificate(
        &self,
        target: &Target,
        source: &credential::CertificateSource,
    ) -> Result<TokenSet, IdentityError> {
        let loaded = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || certificate::ClientCertificate::load(&source))
                .await
                .map_err(|e| IdentityError::Credential(format!("loading the certificate: {e}")))??
        };
        let audience = target.authority.endpoint(&target.tenant, "token");
        let assertion = loaded.assertion(&target.client_id, &audience, self.clock.now())?;
        self.client_assertion(target, assertion).await
    }

    /// Workload identity: the federated token in `file` (re-read every time: the kubelet
    /// rotates it) is the client assertion.
    pub async fn federated(
        &self,
        target: &Target,
        file: &std::path::Path,
    ) -> Result<TokenSet, IdentityError> {
        let text = tokio::fs::read_to_string(file).await.map_err(|e| {
            IdentityError::Credential(format!(
                "cannot read the federated token file {}: {e}",
                file.display()
            ))
        })?;
        let assertion = text.trim();
        if assertion.is_empty() {
            return Err(IdentityError::Credential(format!(
                "the federated token file {} is empty",
                file.display()
            )));
        }
        self.client_assertion(target, assertion.to_string()).await
    }

    /// A CI job (Azure Pipelines, GitHub Actions): its OIDC token, bought with the job's own
    /// token, is the client assertion.
    pub async fn ci_token(
        &self,
        target: &Target,
        credential: &ci_tokens::CiCredential,
        service_connection_id: &str,
    ) -> Result<TokenSet, IdentityError> {
        let assertion =
            ci_tokens::oidc_token(&self.http_for(target)?, credential, service_connection_id)
                .await?;
        self.client_assertion(target, assertion).await
    }

    /// The resource owner password grant (kubelogin `ropc`).
    pub async fn password(
        &self,
        target: &Target,
        username: &str,
        password: &secrecy::SecretString,
    ) -> Result<TokenSet, IdentityError> {
        use secrecy::ExposeSecret;
        let client = self.oauth_client(target).await?;
        let username = oauth2::ResourceOwnerUsername::new(username.to_string());
        let password = oauth2::ResourceOwnerPassword::new(password.expose_secret().to_string());
        exchange!(
            self,
            client
                .exchange_password(&username, &password)
                .add_scopes(Self::scopes(target)),
            target
        )
    }

    /// A managed identity's token from IMDS (kubelogin `msi`).
    pub async fn managed_identity(
        &self,
        resource: &str,
        id: managed_identity::ManagedIdentityId<'_>,
    ) -> Result<TokenSet, IdentityError> {
        let clock = self.clock.clone();
        managed_identity::acquire(&self.http, &self.imds_endpoint, resource, id, move || {
            clock.now()
        })
        .await
    }

    /// A token from `az` or `azd` (kubelogin `azurecli`, `azd`).
    pub async fn from_cli(&self, request: &cli::CliRequest<'_>) -> Result<TokenSet, IdentityError> {
        cli::acquire(request, self.clock.now()).await
    }

    /// Signs a user in with the device code flow; `prompt` receives the code to show.
    pub async fn device_code_login(
        &self,
        target: &Target,
        prompt: &(dyn Fn(LoginPrompt) + Send + Sync),
        timeout: Duration,
    ) -> Result<TokenSet, IdentityError> {
        flows::device_code::run(self, target, prompt, timeout).await
    }

    /// Signs a user in with the authorization code flow and PKCE, the browser being sent back
    /// to a listener on localhost; `prompt` receives the URL to open.
    pub async fn interactive_login(
        &self,
        target: &Target,
        user: &UserLogin<'_>,
        prompt: &(dyn Fn(LoginPrompt) + Send + Sync),
        timeout: Duration,
    ) -> Result<TokenSet, IdentityError> {
        flows::auth_code::run(self, target, user, prompt, timeout).await
    }

    /// The tokens of an answer from `target`'s token endpoint, read on the issuer's clock. An
    /// OpenID Connect session serves the ID token, which Kubernetes' OIDC authenticator takes,
    /// until its own expiry.
    fn token_set(
        &self,
        answer: EntraTokenResponse,
        target: &Target,
    ) -> Result<TokenSet, IdentityError> {
        let skew = self.http.skew(&target.authority.host());
        let now = self.clock.now();
        let mut set = token_set(&answer, now, skew);
        if target.oidc.as_ref().is_some_and(|o| !o.use_access_token) {
            let id_token = answer
                .extra_fields()
                .id_token
                .as_ref()
                .ok_or(IdentityError::NoIdToken)?;
            set.access = served_until_exp(id_token.expose(), now, skew);
        }
        Ok(set)
    }
}

/// A token served until its own `exp` (issuer time, so less the skew), or for the assumed
/// lifetime when it says none.
fn served_until_exp(token: &str, now: SystemTime, skew: i64) -> AccessToken {
    let expires_at = token::jwt_expiry(token)
        .map(|exp| crate::clock::from_unix_seconds(exp.saturating_sub(skew)))
        .unwrap_or(now + ASSUMED_LIFETIME);
    AccessToken::expiring_at(token.to_string().into(), now, expires_at)
}

/// What a successful token answer means, read at `now`, the issuer's clock `skew` seconds
/// ahead of ours. The token expires `expires_in` from now, or at its own `exp` (issuer time,
/// so less the skew), whichever is sooner: a token the API server (on the issuer's clock)
/// already refuses is never served as fresh, and an answer without `expires_in` (which OAuth
/// only recommends) still has its real lifetime.
fn token_set(answer: &EntraTokenResponse, now: std::time::SystemTime, skew: i64) -> TokenSet {
    let extra = answer.extra_fields();
    let secret = answer.access_token().secret();
    let by_lifetime = answer
        .expires_in()
        .map(|lifetime| AccessToken::expiring_in(secret.clone().into(), now, lifetime).expires_at);
    let by_exp = token::jwt_expiry(secret).map(|exp| {
        let local = crate::clock::from_unix_seconds(exp.saturating_sub(skew));
        AccessToken::expiring_at(secret.clone().into(), now, local).expires_at
    });
    let expires_at = match (by_lifetime, by_exp) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => now + ASSUMED_LIFETIME,
    };
    TokenSet {
        access: AccessToken::new(secret.clone().into(), expires_at),
        refresh: answer
            .refresh_token()
            .map(|rt| RefreshToken::new(rt.secret().clone().into())),
        refresh_in: extra
            .refresh_in
            .map(|seconds| Duration::from_secs(seconds).min(token::MAX_LIFETIME)),
        account: extra.id_token.as_ref().and_then(IdToken::account),
    }
}

/// Entry points for `cargo fuzz` (fuzz/): the parsers of what the identity provider sends, run
/// the way brokerd runs them. Built only under `--cfg fuzzing`.
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::*;

    /// A token endpoint's success answer, parsed and read as brokerd reads it.
    pub fn token_answer(body: &[u8]) {
        if let Ok(answer) = serde_json::from_slice::<EntraTokenResponse>(body) {
            let set = token_set(&answer, std::time::SystemTime::now(), 0);
            let _ = set.access.remaining(std::time::SystemTime::now());
        }
    }

    /// A token endpoint's error answer, classified and summarised as brokerd does.
    pub fn error_answer(body: &[u8]) {
        if let Ok(error) = serde_json::from_slice::<EntraErrorBody>(body) {
            let _ = error.classify();
            let _ = error.summary();
        }
    }

    /// An ID token's claims, read for the account name.
    pub fn id_token(text: &str) {
        let _ = IdToken::from_text(text).account();
    }
}

fn lenient_seconds<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(u64),
        Text(String),
    }
    Ok(match Option::<NumberOrText>::deserialize(deserializer)? {
        Some(NumberOrText::Number(n)) => Some(n),
        Some(NumberOrText::Text(t)) => t.trim().parse().ok(),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_in_may_be_a_number_or_a_string() {
        let f: EntraTokenFields = serde_json::from_str(r#"{"refresh_in":"1800"}"#).unwrap();
        assert_eq!(f.refresh_in, Some(1800));
        let f: EntraTokenFields = serde_json::from_str(r#"{"refresh_in":900}"#).unwrap();
        assert_eq!(f.refresh_in, Some(900));
        let f: EntraTokenFields = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(f.refresh_in, None);
    }

    #[test]
    fn a_token_answer_parses_as_entra_sends_it() {
        let answer: EntraTokenResponse = serde_json::from_str(
            r#"{"access_token":"at","client_info":"eyJ1aWQiOiIxIn0","expires_in":5302,"ext_expires_in":5302,"refresh_token":"rt","scope":"6dae42f8-4368-4678-94ff-3960e28e3630/user.read 6dae42f8-4368-4678-94ff-3960e28e3630/.default","token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(answer.expires_in(), Some(Duration::from_secs(5302)));
        assert_eq!(answer.refresh_token().unwrap().secret(), "rt");
    }

    fn jwt_expiring(exp: u64) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(&format!(r#"{{"exp":{exp}}}"#))
        )
    }

    #[test]
    fn expiry_is_judged_on_the_issuers_clock() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // The issuer's clock is ten minutes ahead; its token lives half an hour by its clock.
        let exp = 1_800_000_000 + 600 + 1800;
        let answer = |extra: &str| -> EntraTokenResponse {
            serde_json::from_str(&format!(
                r#"{{"access_token":"{}","token_type":"Bearer"{extra}}}"#,
                jwt_expiring(exp)
            ))
            .unwrap()
        };
        // No expires_in (OAuth only recommends it): exp less the skew, not exp as it stands.
        let set = token_set(&answer(""), now, 600);
        assert_eq!(set.access.expires_at, now + Duration::from_secs(1800));
        // With expires_in too, the sooner of the two.
        let set = token_set(&answer(r#","expires_in":3600"#), now, 600);
        assert_eq!(set.access.expires_at, now + Duration::from_secs(1800));
        let set = token_set(&answer(r#","expires_in":900"#), now, 600);
        assert_eq!(set.access.expires_at, now + Duration::from_secs(900));
        // An opaque token without expires_in: the short assumption.
        let opaque: EntraTokenResponse =
            serde_json::from_str(r#"{"access_token":"opaque","token_type":"Bearer"}"#).unwrap();
        assert_eq!(
            token_set(&opaque, now, 600).access.expires_at,
            now + ASSUMED_LIFETIME
        );
    }

    #[test]
    fn absurd_lifetimes_are_cut_down_instead_of_overflowing() {
        let answer: EntraTokenResponse = serde_json::from_str(
            r#"{"access_token":"at","token_type":"Bearer","expires_in":18446744073709551615,"refresh_in":"18446744073709551615"}"#,
        )
        .unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let set = token_set(&answer, now, 0);
        assert_eq!(set.access.expires_at, now + token::MAX_LIFETIME);
        assert_eq!(set.refresh_in, Some(token::MAX_LIFETIME));
    }
}
