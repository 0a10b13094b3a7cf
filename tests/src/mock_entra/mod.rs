//! A mock of Microsoft Entra ID's v2.0 endpoints, faithful to `shared/reference`: the answers,
//! error bodies, device flow, authorization code + PKCE and refresh token rotation of the real
//! service, plus controls that tests need (approve a device code, set lifetimes, revoke refresh
//! tokens, inject faults, count requests).
//!
//! It runs on its own thread and Tokio runtime, so it serves real processes (brokerd) from
//! plain synchronous tests.

mod apps;
mod errors;
mod routes;
mod state;

pub use apps::{App, FEDERATION_AUDIENCE, ManagedIdentity, pipeline_subject};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

pub use state::{AuthorizeOutcome, DeviceStatus, State};

/// "Azure Kubernetes Service AAD Server": the resource AKS tokens are for.
pub const AKS_SERVER_ID: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";
/// "Azure Kubernetes Service AAD Client": the public client for user sign-in.
pub const AKS_CLIENT_ID: &str = "80faf920-1908-4b52-b5ef-a8e7bedfc67a";
/// The tenant the tests sign in to.
pub const TENANT_ID: &str = "00000000-0000-0000-0000-000000000001";

/// The subject of the ID tokens the mock's GitHub Actions issues.
pub const GITHUB_SUBJECT: &str = "repo:contoso/app:ref:refs/heads/main";

/// The realm name that makes the mock's generic issuer Dex-shaped.
pub const DEX: &str = "dex";

/// The user who signs in.
#[derive(Clone, Debug)]
pub struct MockUser {
    pub upn: String,
    pub name: String,
    pub oid: String,
    pub home_tenant: String,
    /// For the password grant (ROPC).
    pub password: String,
}

impl MockUser {
    /// A second person of the default user's tenant.
    pub fn bob() -> Self {
        MockUser {
            upn: "bob@contoso.example".into(),
            name: "Bob Example".into(),
            oid: "22222222-3333-4444-5555-666666666666".into(),
            home_tenant: TENANT_ID.into(),
            password: "another horse battery staple".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct MockConfig {
    /// `expires_in` of access tokens, seconds. Entra issues 60–90 minutes.
    pub access_token_lifetime: u64,
    /// Sent as `refresh_in` when set.
    pub refresh_in: Option<u64>,
    pub device_code_lifetime: u64,
    /// The polling interval the device code answer asks for; Entra says 5.
    pub device_code_interval: u64,
    /// Device codes are approved the moment they are issued.
    pub auto_approve: bool,
    /// Tenants that answer `invalid_tenant` (AADSTS90002).
    pub unknown_tenants: Vec<String>,
    /// Rotation as strict OIDC providers do it: a refresh token is good for one use, and
    /// presenting a used one again revokes every token descended from the same sign-in (reuse
    /// detection). Entra keeps the old one valid instead.
    pub strict_rotation: bool,
    /// How far the IdP's clock is ahead of the machine's (seconds; negative: behind): its
    /// tokens' `iat`, `nbf` and `exp` and its `Date` headers are on that clock.
    pub clock_offset: i64,
    /// Token answers without `expires_in` (which OAuth only recommends): the token's `exp`
    /// is all a client has.
    pub omit_expires_in: bool,
    /// A hostile IdP: its device code instructions, user codes and error descriptions carry
    /// terminal escape sequences (a window title, a screen clear) and bidi overrides.
    pub hostile_text: bool,
    /// How long the refresh tokens it issues are, in characters. Entra's are opaque and a
    /// few KB at most in practice; a test of the stores' item limits asks for more
    /// (Windows' Credential Manager holds 2,560 bytes; tools that go through macOS's
    /// `security` command fail near 4 KB).
    pub refresh_token_length: usize,
    pub user: MockUser,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            access_token_lifetime: 3599,
            refresh_in: None,
            device_code_lifetime: 900,
            device_code_interval: 5,
            auto_approve: false,
            unknown_tenants: Vec::new(),
            hostile_text: false,
            strict_rotation: false,
            clock_offset: 0,
            omit_expires_in: false,
            refresh_token_length: 703,
            user: MockUser {
                upn: "alice@contoso.example".into(),
                name: "Alice Example".into(),
                oid: "11111111-2222-3333-4444-555555555555".into(),
                home_tenant: TENANT_ID.into(),
                password: "correct horse battery staple".into(),
            },
        }
    }
}

/// A misbehaviour to answer the next token or device code request with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An HTTP error status with an HTML body, as a failing front end sends.
    Status(u16),
    /// 429 with Retry-After.
    TooManyRequests { retry_after: u64 },
    /// Answer normally, after a delay.
    Delay(Duration),
    /// HTTP 200 with a body that is not JSON.
    Malformed,
    /// HTTP 200 with a 4 MiB body.
    Oversized,
}

/// A running mock. Stops when dropped.
pub struct MockEntra {
    base_url: String,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    /// Served over HTTPS: the private CA its certificate chains to.
    ca_pem: Option<String>,
}

/// TLS over a TCP listener, for `axum::serve`: an issuer behind a private CA.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that never finishes its handshake must not hold the listener.
            let handshake = self.acceptor.accept(stream);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl MockEntra {
    /// Starts on a free loopback port.
    pub fn start(config: MockConfig) -> Self {
        Self::start_on(config, 0).expect("the mock Entra ID starts on a free port")
    }

    /// Starts on `127.0.0.1:port` (0 = any free port).
    pub fn start_on(config: MockConfig, port: u16) -> std::io::Result<Self> {
        Self::start_with(config, port, None)
    }

    /// Starts over HTTPS on a free loopback port, its certificate from a private CA
    /// ([`Self::ca_pem`]) that no trust store holds.
    pub fn start_https(config: MockConfig) -> Self {
        Self::start_with(config, 0, Some(crate::apiserver::make_tls()))
            .expect("the mock Entra ID starts on a free port")
    }

    /// The private CA of a mock started with [`Self::start_https`].
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    fn start_with(
        config: MockConfig,
        port: u16,
        tls: Option<crate::apiserver::Tls>,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{}", listener.local_addr()?);
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(Arc::new(t.config)));
        let state = Arc::new(State::new(config, base_url.clone()));
        let app = routes::router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mock-entra")
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("mock-entra".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return eprintln!("mock-entra: {e}"),
                    };
                    let served = match acceptor {
                        None => {
                            tokio::select! {
                                result = axum::serve(listener, app) => result,
                                _ = stopped => Ok(()),
                            }
                        }
                        Some(acceptor) => {
                            let tls = TlsListener {
                                tcp: listener,
                                acceptor,
                            };
                            tokio::select! {
                                result = axum::serve(tls, app) => result,
                                _ = stopped => Ok(()),
                            }
                        }
                    };
                    if let Err(e) = served {
                        eprintln!("mock-entra: {e}");
                    }
                });
                // Dropping the runtime here closes every connection still open.
            })?;
        Ok(MockEntra {
            base_url,
            state,
            stop: Some(stop),
            ca_pem,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// What to pass as `--authority-host`.
    pub fn authority_host(&self) -> String {
        format!("{}/", self.base_url)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The state, shared: for the fake API server, which trusts what the mock signs.
    pub fn shared_state(&self) -> Arc<State> {
        self.state.clone()
    }

    pub fn approve(&self, user_code: &str) -> bool {
        self.state
            .decide_device_code(user_code, DeviceStatus::Approved)
    }

    /// Approves a device code signed in as `upn`, one of the people added by `add_user`.
    pub fn approve_as(&self, user_code: &str, upn: &str) -> bool {
        self.state
            .decide_device_code_as(user_code, DeviceStatus::Approved, Some(upn))
    }

    /// Another person of the tenant, who may sign in by device code or browser.
    pub fn add_user(&self, user: MockUser) {
        self.state.lock().users.push(user);
    }

    /// A generic OpenID Connect issuer shaped as a Keycloak realm, with `client_id` a public
    /// client of it. Returns the issuer (`{base}/realms/{name}`; for the name [`DEX`], Dex's
    /// shape, `{base}/dex`, with no revocation endpoint).
    pub fn add_realm(&self, name: &str, client_id: &str) -> String {
        let mut inner = self.state.lock();
        inner.realms.insert(name.to_string());
        drop(inner);
        self.state.register_client(client_id);
        self.state.realm_issuer(name)
    }

    /// As `add_realm`, with a client that must send `secret` with every grant, PKCE or not, as
    /// Google's installed-app clients must.
    pub fn add_confidential_realm(&self, name: &str, client_id: &str, secret: &str) -> String {
        let issuer = self.add_realm(name, client_id);
        self.state
            .lock()
            .realm_client_secrets
            .insert(client_id.to_string(), secret.to_string());
        issuer
    }

    /// Realms leave the ID token out of their refresh answers.
    pub fn set_omit_id_token_on_refresh(&self, omit: bool) {
        self.state.lock().omit_id_token_on_refresh = omit;
    }

    /// Azure Pipelines: the job token `SYSTEM_OIDCREQUESTURI` accepts.
    pub fn set_pipeline_job_token(&self, token: &str) {
        self.state.lock().pipeline_job_token = Some(token.to_string());
    }

    /// GitHub Actions: the request token `ACTIONS_ID_TOKEN_REQUEST_URL` accepts; the subject of its ID
    /// tokens is [`GITHUB_SUBJECT`].
    pub fn set_github_request_token(&self, token: &str) {
        self.state.lock().github_request_token = Some(token.to_string());
    }

    /// The `ACTIONS_ID_TOKEN_REQUEST_URL` of a GitHub Actions job (it carries a query).
    pub fn github_id_token_url(&self) -> String {
        format!("{}/_github/idtoken?api-version=2.0", self.base_url())
    }

    /// The `SYSTEM_OIDCREQUESTURI` of a pipeline job.
    pub fn pipelines_oidc_uri(&self) -> String {
        format!("{}/_pipelines/oidctoken", self.base_url())
    }

    pub fn decline(&self, user_code: &str) -> bool {
        self.state
            .decide_device_code(user_code, DeviceStatus::Declined)
    }

    pub fn set_access_token_lifetime(&self, seconds: u64) {
        self.state.lock().config.access_token_lifetime = seconds;
    }

    pub fn set_device_code_interval(&self, seconds: u64) {
        self.state.lock().config.device_code_interval = seconds;
    }

    pub fn set_authorize_outcome(&self, outcome: AuthorizeOutcome) {
        self.state.lock().authorize_outcome = outcome;
    }

    pub fn set_strict_rotation(&self, strict: bool) {
        self.state.lock().config.strict_rotation = strict;
    }

    pub fn revoke_refresh_tokens(&self) {
        self.state.revoke_refresh_tokens();
    }

    /// Registers a confidential client (a service principal or a workload identity).
    pub fn register_app(&self, client_id: &str, app: App) {
        let mut inner = self.state.lock();
        inner.apps.insert(client_id.to_string(), app);
    }

    /// Makes IMDS know a user-assigned managed identity.
    pub fn add_managed_identity(&self, identity: ManagedIdentity) {
        self.state.lock().managed_identities.push(identity);
    }

    /// An access token for `resource`, for the signed-in user, as `az` or `azd` would print.
    pub fn mint_user_token(&self, resource: &str, lifetime: u64) -> String {
        self.state.mint_user_token(resource, lifetime)
    }

    /// As `mint_user_token`, for another person.
    pub fn mint_token_for(&self, user: &MockUser, resource: &str, lifetime: u64) -> String {
        self.state.mint_token_for(user, resource, lifetime)
    }

    /// A token from the federation issuer (a cluster's service account issuer).
    pub fn mint_federated_token(
        &self,
        subject: &str,
        audience: &str,
        lifetime_secs: i64,
    ) -> String {
        self.state
            .mint_federated_token(subject, audience, lifetime_secs)
    }

    /// The issuer of [`MockEntra::mint_federated_token`]'s tokens.
    pub fn federation_issuer(&self) -> String {
        self.state.federation_issuer()
    }

    /// While `Some`, every token request answers with this HTTP status.
    pub fn set_outage(&self, status: Option<u16>) {
        self.state.lock().outage = status;
    }

    /// While `Some`, every token request is answered only after this delay.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state.lock().delay = delay;
    }

    /// Waits until `kind` has been requested `count` times; false after `timeout`.
    pub fn wait_for_requests(&self, kind: &str, count: u64, timeout: Duration) -> bool {
        self.state.wait_for(kind, count, timeout)
    }

    /// The most token requests (refreshes, client credentials, passwords) in flight at once.
    pub fn max_concurrent_token_requests(&self) -> u64 {
        self.state.max_in_flight()
    }

    /// The next `count` token or device code requests get `fault`.
    pub fn inject(&self, fault: Fault, count: usize) {
        let mut inner = self.state.lock();
        for _ in 0..count {
            inner.faults.push_back(fault.clone());
        }
    }

    /// Requests seen per kind: `device_code`, `authorization_code`, `refresh_token`,
    /// `devicecode` (the device authorization endpoint), `authorize`.
    pub fn requests(&self, kind: &str) -> u64 {
        self.state.count(kind)
    }

    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.state.issued_refresh_tokens()
    }

    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.state.issued_access_tokens()
    }

    /// The claims of `token` if the mock signed it, it has not expired, and it is for
    /// `audience`.
    pub fn verify(&self, token: &str, audience: &str) -> Result<crate::jwt::AccessClaims, String> {
        self.state.key.verify(token, audience)
    }
}

impl Drop for MockEntra {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
