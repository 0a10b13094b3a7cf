//! What the mock Entra ID remembers, and the rules of each grant.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use rand::Rng;
use serde_json::{Value, json};
use sha2::Digest;

use super::errors::{device_flow_error, entra_error, guid, now_unix};
use super::{AKS_CLIENT_ID, AKS_SERVER_ID, Fault, MockConfig};
use crate::jwt::{AccessClaims, SigningKey};

/// How long authorization codes live ("about 10 minutes").
const CODE_LIFETIME: u64 = 600;

/// What a hostile IdP slips into the text it sends: a window title, a screen clear, a fake
/// hyperlink, and a right-to-left override.
pub const HOSTILE_TEXT: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}]8;;https://evil.example\u{1b}\\click\u{1b}]8;;\u{1b}\\\u{202e}";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    Approved,
    Declined,
}

/// The client, tenant and scopes a grant was made for.
#[derive(Clone, Debug)]
pub(super) struct GrantBase {
    pub client_id: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    /// Who signed in (a upn of `config.user` or of `users`); `None`: `config.user`.
    pub user: Option<String>,
}

#[derive(Debug)]
struct DeviceGrant {
    base: GrantBase,
    user_code: String,
    status: DeviceStatus,
    expires_at: u64,
}

#[derive(Debug)]
struct CodeGrant {
    base: GrantBase,
    redirect_uri: String,
    challenge: Option<(String, String)>,
    expires_at: u64,
    redeemed: bool,
}

#[derive(Debug)]
struct RefreshGrant {
    base: GrantBase,
    revoked: bool,
    /// Redeemed once already (strict rotation).
    used: bool,
    /// The sign-in it descends from: reuse detection revokes a whole family.
    family: u64,
}

/// What the browser is sent back with by `/authorize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    SignIn,
    Deny,
}

pub(super) struct Inner {
    pub config: MockConfig,
    clients: HashSet<String>,
    resources: HashSet<String>,
    device_codes: HashMap<String, DeviceGrant>,
    auth_codes: HashMap<String, CodeGrant>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    pub(super) access_tokens: Vec<String>,
    pub faults: VecDeque<Fault>,
    next_family: u64,
    /// The family the next refresh token issued belongs to (a refresh continues one).
    issuing_family: Option<u64>,
    /// Every token request answers this status while set (an outage).
    pub outage: Option<u16>,
    /// Every token request waits this long before it is answered.
    pub delay: Option<Duration>,
    counts: HashMap<String, u64>,
    in_flight: u64,
    max_in_flight: u64,
    pub authorize_outcome: AuthorizeOutcome,
    /// Applications that authenticate themselves: service principals and workload identities.
    pub apps: HashMap<String, super::apps::App>,
    /// Managed identities IMDS knows, by client id (the system-assigned one included).
    pub managed_identities: Vec<super::apps::ManagedIdentity>,
    /// More people of the tenant besides `config.user`.
    pub users: Vec<super::MockUser>,
    /// Azure Pipelines: the job token its OIDC endpoint accepts, and the service connections
    /// it issues tokens for.
    pub pipeline_job_token: Option<String>,
    /// GitHub Actions: the request token its ID token endpoint accepts.
    pub github_request_token: Option<String>,
    /// Generic OpenID Connect issuers (Keycloak-shaped realms) by name.
    pub realms: HashSet<String>,
    /// Realms leave the ID token out of refresh answers.
    pub omit_id_token_on_refresh: bool,
    /// Realm clients that must send their secret with every grant, PKCE or not (Google's
    /// installed-app clients).
    pub realm_client_secrets: HashMap<String, String>,
}

impl Inner {
    /// The person a grant was made for.
    pub(super) fn user_of(&self, base: &GrantBase) -> super::MockUser {
        base.user
            .as_deref()
            .and_then(|upn| self.users.iter().find(|u| u.upn.eq_ignore_ascii_case(upn)))
            .cloned()
            .unwrap_or_else(|| self.config.user.clone())
    }

    /// The upn of a known person, for a login hint.
    fn known_upn(&self, hint: &str) -> Option<String> {
        std::iter::once(&self.config.user)
            .chain(&self.users)
            .find(|u| u.upn.eq_ignore_ascii_case(hint))
            .map(|u| u.upn.clone())
    }

    /// Records `token` as a refresh token for `base`: in the family it continues (a rotation),
    /// or in a new one (a sign-in), which reuse detection revokes as a whole.
    fn keep_refresh_token(&mut self, token: &str, base: &GrantBase, continued: Option<u64>) {
        let family = continued.unwrap_or_else(|| {
            self.next_family += 1;
            self.next_family
        });
        self.refresh_tokens.insert(
            token.to_string(),
            RefreshGrant {
                base: base.clone(),
                revoked: false,
                used: false,
                family,
            },
        );
    }
}

impl Inner {
    pub(super) fn access_tokens_mut(&mut self) -> &mut Vec<String> {
        &mut self.access_tokens
    }
}

pub struct State {
    pub base_url: String,
    pub key: SigningKey,
    /// The key of another token issuer (a Kubernetes cluster's service account issuer), whose
    /// tokens workload identities present as federated assertions.
    pub federation_key: SigningKey,
    pub(super) inner: Mutex<Inner>,
    /// Signalled whenever a request is counted.
    counted: Condvar,
}

/// Counts a token request as in flight until dropped.
pub struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

/// A failure answer, ready to send.
pub type Refusal = Box<Response>;

fn refuse(response: Response) -> Refusal {
    Box::new(response)
}

pub(super) fn random_text(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

pub(super) const URL_SAFE: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(super) fn is_guid(value: &str) -> bool {
    value.len() == 36
        && value.chars().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

impl State {
    pub fn new(config: MockConfig, base_url: String) -> Self {
        State {
            base_url,
            key: SigningKey::generate(),
            federation_key: SigningKey::generate(),
            inner: Mutex::new(Inner {
                config,
                clients: HashSet::from([AKS_CLIENT_ID.to_string()]),
                resources: HashSet::from([AKS_SERVER_ID.to_string()]),
                device_codes: HashMap::new(),
                auth_codes: HashMap::new(),
                refresh_tokens: HashMap::new(),
                access_tokens: Vec::new(),
                faults: VecDeque::new(),
                next_family: 1,
                issuing_family: None,
                outage: None,
                delay: None,
                counts: HashMap::new(),
                in_flight: 0,
                max_in_flight: 0,
                authorize_outcome: AuthorizeOutcome::SignIn,
                apps: HashMap::new(),
                managed_identities: vec![super::apps::ManagedIdentity::system_assigned()],
                users: Vec::new(),
                pipeline_job_token: None,
                github_request_token: None,
                realms: HashSet::new(),
                omit_id_token_on_refresh: false,
                realm_client_secrets: HashMap::new(),
            }),
            counted: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register_client(&self, client_id: &str) {
        self.lock().clients.insert(client_id.to_string());
    }

    pub fn knows_resource(&self, server_id: &str) -> bool {
        self.lock().resources.contains(server_id)
    }

    pub fn register_resource(&self, server_id: &str) {
        self.lock().resources.insert(server_id.to_string());
    }

    pub fn count(&self, what: &str) -> u64 {
        self.lock().counts.get(what).copied().unwrap_or(0)
    }

    pub(super) fn bump(&self, what: &str) {
        *self.lock().counts.entry(what.to_string()).or_default() += 1;
        self.counted.notify_all();
    }

    /// Waits until `what` has been requested at least `count` times; false after `timeout`.
    pub fn wait_for(&self, what: &str, count: u64, timeout: Duration) -> bool {
        let guard = self.lock();
        let (_guard, result) = self
            .counted
            .wait_timeout_while(guard, timeout, |inner| {
                inner.counts.get(what).copied().unwrap_or(0) < count
            })
            .unwrap_or_else(|p| p.into_inner());
        !result.timed_out()
    }

    /// Marks a refresh token request as being answered; the most at once is recorded.
    pub(super) fn enter(&self) -> InFlight<'_> {
        let mut inner = self.lock();
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        InFlight(self)
    }

    /// The most refresh token requests that were ever being answered at once.
    pub fn max_in_flight(&self) -> u64 {
        self.lock().max_in_flight
    }

    pub fn counts(&self) -> HashMap<String, u64> {
        self.lock().counts.clone()
    }

    pub fn take_fault(&self) -> Option<Fault> {
        self.lock().faults.pop_front()
    }

    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.lock().refresh_tokens.keys().cloned().collect()
    }

    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.lock().access_tokens.clone()
    }

    pub fn pending_user_codes(&self) -> Vec<String> {
        self.lock()
            .device_codes
            .values()
            .filter(|g| g.status == DeviceStatus::Pending)
            .map(|g| g.user_code.clone())
            .collect()
    }

    /// Approves (or declines) the device code the user typed. False if no such pending code.
    pub fn decide_device_code(&self, user_code: &str, status: DeviceStatus) -> bool {
        self.decide_device_code_as(user_code, status, None)
    }

    /// As [`Self::decide_device_code`], signed in as `upn` (one of `users`).
    pub fn decide_device_code_as(
        &self,
        user_code: &str,
        status: DeviceStatus,
        upn: Option<&str>,
    ) -> bool {
        let mut inner = self.lock();
        let wanted = user_code.trim().to_ascii_uppercase();
        match inner
            .device_codes
            .values_mut()
            .find(|g| g.user_code == wanted && g.status == DeviceStatus::Pending)
        {
            Some(grant) => {
                grant.status = status;
                grant.base.user = upn.map(str::to_string);
                true
            }
            None => false,
        }
    }

    /// Whether `tenant` names a generic issuer (a realm) rather than an Entra tenant.
    pub fn is_realm(&self, tenant: &str) -> bool {
        self.lock().realms.contains(tenant)
    }

    /// The issuer of realm `name`: it has a path, as Keycloak's do.
    pub fn realm_issuer(&self, name: &str) -> String {
        if name == super::DEX {
            format!("{}/dex", self.base_url)
        } else {
            format!("{}/realms/{name}", self.base_url)
        }
    }

    /// A realm client's secret check, for the grants a user signs in with: `Some` refusal when
    /// the client has a secret and the request does not carry it.
    pub fn realm_client_refusal(
        &self,
        tenant: &str,
        form: &HashMap<String, String>,
    ) -> Option<Refusal> {
        let inner = self.lock();
        if !inner.realms.contains(tenant) {
            return None;
        }
        let client = form.get("client_id")?;
        let expected = inner.realm_client_secrets.get(client)?;
        match form.get("client_secret") {
            Some(given) if given == expected => None,
            Some(_) => Some(refuse(super::errors::json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_client", "error_description": "Unauthorized"}),
            ))),
            None => Some(refuse(super::errors::json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_request", "error_description": "client_secret is missing."}),
            ))),
        }
    }

    /// Revokes the refresh token `token` and every other of its sign-in. Unknown tokens are
    /// ignored, as RFC 7009 asks.
    pub fn revoke_family(&self, token: &str) {
        let mut inner = self.lock();
        let Some(family) = inner.refresh_tokens.get(token).map(|g| g.family) else {
            return;
        };
        for grant in inner.refresh_tokens.values_mut() {
            if grant.family == family {
                grant.revoked = true;
            }
        }
    }

    /// Revokes every refresh token issued so far (as a password change would).
    pub fn revoke_refresh_tokens(&self) {
        for grant in self.lock().refresh_tokens.values_mut() {
            grant.revoked = true;
        }
    }

    /// Checks client, tenant and scopes the way Entra does before any grant.
    pub(super) fn check_base(
        inner: &Inner,
        tenant: &str,
        client_id: Option<&str>,
        scope: Option<&str>,
    ) -> Result<GrantBase, Refusal> {
        let client_id = client_id.filter(|c| !c.is_empty()).ok_or_else(|| {
            refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
                None,
            ))
        })?;
        if inner.config.unknown_tenants.iter().any(|t| t == tenant) {
            return Err(refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_tenant",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
                None,
            )));
        }
        if !inner.clients.contains(client_id) {
            return Err(refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
                ),
                None,
            )));
        }
        let scopes: Vec<String> = scope
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if let Some(resource) = scopes
            .iter()
            .find_map(|s| s.rsplit_once('/').map(|(r, _)| r))
            && !inner.resources.contains(resource)
        {
            return Err(refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_resource",
                500011,
                &format!(
                    "The resource principal named {resource} was not found in the tenant named {tenant}."
                ),
                None,
            )));
        }
        Ok(GrantBase {
            client_id: client_id.to_string(),
            tenant: tenant.to_string(),
            scopes,
            user: None,
        })
    }

    /// `POST /{tenant}/oauth2/v2.0/devicecode`.
    pub fn start_device_code(
        &self,
        tenant: &str,
        form: &HashMap<String, String>,
    ) -> Result<Value, Refusal> {
        let mut inner = self.lock();
        let base = Self::check_base(
            &inner,
            tenant,
            form.get("client_id").map(String::as_str),
            form.get("scope").map(String::as_str),
        )?;
        if base.scopes.is_empty() {
            return Err(refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
                None,
            )));
        }
        let device_code = random_text(96, URL_SAFE);
        let user_code = random_text(9, b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789");
        let lifetime = inner.config.device_code_lifetime;
        let status = if inner.config.auto_approve {
            DeviceStatus::Approved
        } else {
            DeviceStatus::Pending
        };
        inner.device_codes.insert(
            device_code.clone(),
            DeviceGrant {
                base,
                user_code: user_code.clone(),
                status,
                expires_at: now_unix() + lifetime,
            },
        );
        let realm = inner.realms.contains(tenant);
        let verification_uri = if realm {
            format!("{}/device", self.realm_issuer(tenant))
        } else {
            format!("{}/devicelogin", self.base_url)
        };
        let hostile = if inner.config.hostile_text {
            HOSTILE_TEXT
        } else {
            ""
        };
        let mut answer = json!({
            "device_code": device_code,
            "user_code": format!("{user_code}{hostile}"),
            "verification_uri": verification_uri,
            "expires_in": lifetime,
            "interval": inner.config.device_code_interval,
            "message": format!("To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate.{hostile}"),
        });
        if realm {
            // Keycloak's answer has no ready-made instructions, but a complete URI.
            if let Some(fields) = answer.as_object_mut() {
                fields.remove("message");
                fields.insert(
                    "verification_uri_complete".into(),
                    json!(format!("{verification_uri}?user_code={user_code}")),
                );
            }
        }
        Ok(answer)
    }

    /// The device code grant; `grant_type` may be the URN or Entra's short `device_code`.
    pub fn redeem_device_code(
        &self,
        tenant: &str,
        form: &HashMap<String, String>,
    ) -> Result<Value, Refusal> {
        let mut inner = self.lock();
        let code = form.get("device_code").cloned().unwrap_or_default();
        let Some(grant) = inner.device_codes.get(&code) else {
            return Err(refuse(device_flow_error(
                "bad_verification_code",
                Some(70018),
                "Invalid verification code entered.",
            )));
        };
        if grant.base.tenant != tenant || Some(&grant.base.client_id) != form.get("client_id") {
            return Err(refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                70000,
                "Provided grant is invalid or malformed.",
                None,
            )));
        }
        if now_unix() >= grant.expires_at {
            inner.device_codes.remove(&code);
            return Err(refuse(device_flow_error(
                "expired_token",
                Some(70019),
                "Verification code expired.",
            )));
        }
        match grant.status {
            DeviceStatus::Pending => Err(refuse(device_flow_error(
                "authorization_pending",
                Some(70016),
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            ))),
            DeviceStatus::Declined => {
                inner.device_codes.remove(&code);
                Err(refuse(device_flow_error(
                    "authorization_declined",
                    None,
                    "The end user denied the authorization request.",
                )))
            }
            DeviceStatus::Approved => {
                let grant = inner
                    .device_codes
                    .remove(&code)
                    .expect("the grant was just read");
                Ok(self.issue_for(&mut inner, &grant.base, form))
            }
        }
    }

    /// `GET /{tenant}/oauth2/v2.0/authorize`: the user signs in at once. Returns the URL to
    /// redirect the browser to, or a page to show when the redirect URI itself is unusable.
    pub fn authorize(
        &self,
        tenant: &str,
        query: &HashMap<String, String>,
    ) -> Result<String, Refusal> {
        let mut inner = self.lock();
        let base = Self::check_base(
            &inner,
            tenant,
            query.get("client_id").map(String::as_str),
            query.get("scope").map(String::as_str),
        )
        .map_err(|_| {
            refuse(super::errors::html(
                StatusCode::BAD_REQUEST,
                "Sign in failed",
                "<p>AADSTS700016: the application or resource is not known in this directory.</p>",
            ))
        })?;
        let redirect_uri = query.get("redirect_uri").cloned().unwrap_or_default();
        if !loopback_redirect(&redirect_uri) {
            return Err(refuse(super::errors::html(
                StatusCode::BAD_REQUEST,
                "Sign in failed",
                "<p>AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.</p>",
            )));
        }
        let mut target = url::Url::parse(&redirect_uri).expect("checked above");
        let state = query.get("state").cloned();
        let mut redirect = |pairs: &[(&str, &str)]| {
            let mut q = target.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
            if let Some(state) = &state {
                q.append_pair("state", state);
            }
            drop(q);
            target.to_string()
        };
        if !query
            .get("response_type")
            .is_some_and(|t| t.split(' ').any(|p| p == "code"))
        {
            return Ok(redirect(&[
                ("error", "unsupported_response_type"),
                (
                    "error_description",
                    "AADSTS700054: response_type 'code' is required.",
                ),
            ]));
        }
        if base.scopes.is_empty() {
            return Ok(redirect(&[
                ("error", "invalid_request"),
                (
                    "error_description",
                    "AADSTS900144: The request body must contain the following parameter: 'scope'.",
                ),
            ]));
        }
        if inner.authorize_outcome == AuthorizeOutcome::Deny {
            return Ok(redirect(&[
                ("error", "access_denied"),
                (
                    "error_description",
                    "AADSTS65004: User declined to consent to access the app.",
                ),
            ]));
        }
        let challenge = query.get("code_challenge").map(|c| {
            let method = query
                .get("code_challenge_method")
                .cloned()
                .unwrap_or_else(|| "plain".into());
            (c.clone(), method)
        });
        // The browser signs in as the hinted person when the tenant has one of that name (the
        // stand-in for a user who accepts what Entra fills in), else as `config.user`.
        let mut base = base;
        base.user = query
            .get("login_hint")
            .and_then(|hint| inner.known_upn(hint));
        let code = random_text(128, URL_SAFE);
        inner.auth_codes.insert(
            code.clone(),
            CodeGrant {
                base,
                redirect_uri: redirect_uri.clone(),
                challenge,
                expires_at: now_unix() + CODE_LIFETIME,
                redeemed: false,
            },
        );
        let session_state = guid();
        Ok(redirect(&[
            ("code", &code),
            ("session_state", &session_state),
        ]))
    }

    /// The authorization code grant, PKCE checked.
    pub fn redeem_code(
        &self,
        tenant: &str,
        form: &HashMap<String, String>,
    ) -> Result<Value, Refusal> {
        let mut inner = self.lock();
        let invalid_grant = |code: u32, text: &str| {
            refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                code,
                text,
                None,
            ))
        };
        let code = form.get("code").cloned().unwrap_or_default();
        let Some(grant) = inner.auth_codes.get_mut(&code) else {
            return Err(invalid_grant(
                9002313,
                "Invalid request. Request is malformed or invalid.",
            ));
        };
        if grant.redeemed {
            return Err(invalid_grant(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            ));
        }
        if now_unix() >= grant.expires_at {
            return Err(invalid_grant(
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            ));
        }
        if grant.base.tenant != tenant || Some(&grant.base.client_id) != form.get("client_id") {
            return Err(invalid_grant(
                70000,
                "Provided grant is invalid or malformed.",
            ));
        }
        if form.get("redirect_uri") != Some(&grant.redirect_uri) {
            return Err(invalid_grant(
                50148,
                "The redirect_uri does not match the redirect URI used in the authorization request.",
            ));
        }
        if let Some((challenge, method)) = &grant.challenge {
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let computed = if method == "S256" {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(sha2::Sha256::digest(verifier.as_bytes()))
            } else {
                verifier
            };
            if &computed != challenge {
                return Err(invalid_grant(
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                ));
            }
        }
        grant.redeemed = true;
        let base = grant.base.clone();
        Ok(self.issue_for(&mut inner, &base, form))
    }

    /// The refresh token grant: a new refresh token each time; the old one stays valid.
    pub fn redeem_refresh_token(
        &self,
        tenant: &str,
        form: &HashMap<String, String>,
    ) -> Result<Value, Refusal> {
        let mut inner = self.lock();
        let presented = form.get("refresh_token").cloned().unwrap_or_default();
        let Some(grant) = inner.refresh_tokens.get(&presented) else {
            return Err(refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid.",
                None,
            )));
        };
        if grant.revoked {
            let hostile = if inner.config.hostile_text {
                HOSTILE_TEXT
            } else {
                ""
            };
            return Err(refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                50173,
                &format!(
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed.{hostile} The user might have changed or reset their password."
                ),
                None,
            )));
        }
        let (used, family) = (grant.used, grant.family);
        if inner.config.strict_rotation && used {
            // Reuse detection: someone holds a copy. Nothing of this sign-in is good any more.
            for other in inner.refresh_tokens.values_mut() {
                if other.family == family {
                    other.revoked = true;
                }
            }
            drop(inner);
            self.bump("refresh_token_reused");
            return Err(refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                70043,
                "The refresh token was already used; every token of this sign-in is revoked.",
                None,
            )));
        }
        if grant.base.client_id.as_str() != form.get("client_id").map(String::as_str).unwrap_or("")
        {
            return Err(refuse(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                70000,
                "Provided grant is invalid or malformed.",
                None,
            )));
        }
        let mut base = grant.base.clone();
        base.tenant = tenant.to_string();
        if let Some(scope) = form.get("scope").filter(|s| !s.trim().is_empty()) {
            let user = base.user.take();
            base = Self::check_base(&inner, tenant, Some(&base.client_id), Some(scope))?;
            base.user = user;
        }
        if inner.config.strict_rotation
            && let Some(grant) = inner.refresh_tokens.get_mut(&presented)
        {
            grant.used = true;
        }
        inner.issuing_family = Some(family);
        Ok(self.issue_for(&mut inner, &base, form))
    }

    /// A realm's answer: an ID token for the client (its `iss` the realm's issuer, with a path),
    /// an access token, and always a refresh token, as Keycloak gives them.
    fn issue_for_realm(
        &self,
        inner: &mut Inner,
        base: &GrantBase,
        user: &super::MockUser,
        now: u64,
        continued_family: Option<u64>,
    ) -> Value {
        let issuer = self.realm_issuer(&base.tenant);
        let lifetime = inner.config.access_token_lifetime;
        let claims = |typ: &str| {
            json!({
                "iss": issuer, "aud": base.client_id, "azp": base.client_id, "typ": typ,
                "sub": user.oid, "preferred_username": user.upn, "email": user.upn,
                "name": user.name, "iat": now, "nbf": now, "exp": now + lifetime,
                "jti": random_text(22, URL_SAFE),
            })
        };
        let access_token = self.key.sign(&claims("Bearer"));
        let id_token = self.key.sign(&claims("ID"));
        inner.access_tokens.push(access_token.clone());
        inner.access_tokens.push(id_token.clone());
        let refresh_token = random_text(inner.config.refresh_token_length.max(32), URL_SAFE);
        inner.keep_refresh_token(&refresh_token, base, continued_family);
        let mut answer = json!({
            "access_token": access_token,
            "expires_in": lifetime,
            "refresh_expires_in": 1800,
            "refresh_token": refresh_token,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": guid(),
            "scope": base.scopes.join(" "),
        });
        // An issuer that leaves the ID token out of a refresh answer (OpenID Connect allows it).
        if !(inner.omit_id_token_on_refresh && continued_family.is_some()) {
            answer["id_token"] = json!(id_token);
        }
        answer
    }

    /// Mints the token answer for a successful user grant.
    pub(super) fn issue_for(
        &self,
        inner: &mut Inner,
        base: &GrantBase,
        form: &HashMap<String, String>,
    ) -> Value {
        let now = now_unix().saturating_add_signed(inner.config.clock_offset);
        let continued_family = inner.issuing_family.take();
        let user = inner.user_of(base);
        if inner.realms.contains(&base.tenant) {
            return self.issue_for_realm(inner, base, &user, now, continued_family);
        }
        let tid = if is_guid(&base.tenant) {
            base.tenant.clone()
        } else {
            user.home_tenant.clone()
        };
        let resource = base
            .scopes
            .iter()
            .find_map(|s| s.rsplit_once('/').map(|(r, _)| r.to_string()))
            .unwrap_or_else(|| "00000003-0000-0000-c000-000000000000".to_string());
        let lifetime = inner.config.access_token_lifetime;
        let claims = AccessClaims {
            aud: resource.clone(),
            iss: format!("{}/{tid}/v2.0", self.base_url),
            iat: now,
            nbf: now,
            exp: now + lifetime,
            tid: tid.clone(),
            oid: user.oid.clone(),
            sub: user.oid.clone(),
            upn: Some(user.upn.clone()),
            preferred_username: Some(user.upn.clone()),
            name: Some(user.name.clone()),
            azp: base.client_id.clone(),
            scp: Some("user.read".into()),
            ver: "2.0".into(),
            uti: random_text(22, URL_SAFE),
            cnf: pop_cnf(form),
        };
        let access_token = self.key.sign(&claims);
        inner.access_tokens.push(access_token.clone());
        let mut answer = json!({
            "token_type": if claims.cnf.is_some() { "pop" } else { "Bearer" },
            "scope": format!("{resource}/user.read {resource}/.default"),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        });
        if let Some(refresh_in) = inner.config.refresh_in {
            answer["refresh_in"] = json!(refresh_in);
        }
        if inner.config.omit_expires_in
            && let Some(fields) = answer.as_object_mut()
        {
            fields.remove("expires_in");
            fields.remove("ext_expires_in");
        }
        if base.scopes.iter().any(|s| s == "offline_access") {
            // Entra's refresh tokens are opaque and long; so are these.
            let length = inner.config.refresh_token_length.saturating_sub(3);
            let refresh_token = format!("1.A{}", random_text(length, URL_SAFE));
            inner.keep_refresh_token(&refresh_token, base, continued_family);
            answer["refresh_token"] = json!(refresh_token);
        }
        if base.scopes.iter().any(|s| s == "openid") {
            let id_claims = json!({
                "aud": base.client_id,
                "iss": format!("{}/{tid}/v2.0", self.base_url),
                "iat": now, "nbf": now, "exp": now + 3600,
                "name": user.name, "oid": user.oid, "sub": user.oid,
                "preferred_username": user.upn, "tid": tid, "ver": "2.0",
            });
            answer["id_token"] = json!(self.key.sign(&id_claims));
        }
        if form.get("client_info").map(String::as_str) == Some("1") {
            let info = json!({ "uid": user.oid, "utid": tid }).to_string();
            answer["client_info"] =
                json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(info));
        }
        answer
    }
}

/// A proof-of-possession request's key (`token_type=pop`, `req_cnf` = base64url of
/// `{"kid": …, "xms_ksl": "sw"}`), as the token's `cnf` claim; `None` for a bearer request or
/// a `req_cnf` that does not decode (the token route refuses those first).
pub fn pop_cnf(form: &HashMap<String, String>) -> Option<Value> {
    if form.get("token_type").map(String::as_str) != Some("pop") {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(form.get("req_cnf")?)
        .ok()?;
    let req_cnf: Value = serde_json::from_slice(&bytes).ok()?;
    let kid = req_cnf["kid"].as_str().filter(|k| !k.is_empty())?;
    Some(json!({ "kid": kid }))
}

/// Entra accepts `http` redirect URIs only for localhost, and ignores their port.
fn loopback_redirect(uri: &str) -> bool {
    match url::Url::parse(uri) {
        Ok(url) => {
            url.scheme() == "http"
                && matches!(url.host_str(), Some("localhost" | "127.0.0.1"))
                && url.fragment().is_none()
        }
        Err(_) => false,
    }
}

/// Sleeps for a fault's delay; kept here so the routes stay declarative.
pub async fn delay(duration: Duration) {
    tokio::time::sleep(duration).await;
}
