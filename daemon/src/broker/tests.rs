//! The broker's rules, with a clock the tests move and the mock Entra ID in process.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use broker_tests::mock_entra::{AKS_SERVER_ID, Fault, MockConfig, MockEntra, TENANT_ID};
use secrecy::SecretString;

use super::*;
use crate::clock::testing::ManualClock;
use crate::config::Config;
use crate::config::watch::Settings;
use crate::identity::LoginPrompt;
use crate::identity::credential::Supplied;
use crate::store::{MemoryStore, SecretStore, StoreError, StoreKind};

struct Bench {
    mock: MockEntra,
    clock: Arc<ManualClock>,
    broker: Arc<Broker>,
    spec: SessionSpec,
}

fn bench_with_store(store: Arc<dyn SecretStore>) -> Bench {
    let mock = MockEntra::start(MockConfig {
        device_code_interval: 1,
        ..MockConfig::default()
    });
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let identity = IdentityClient::new(clock.clone()).unwrap();
    let settings = Arc::new(Settings::with(
        "/nonexistent/config.toml".into(),
        Config::default(),
    ));
    let broker = Broker::new(store, None, identity, clock.clone(), settings);
    let spec = SessionSpec::new(&SpecInput {
        authority_host: mock.authority_host(),
        tenant_id: TENANT_ID.into(),
        server_id: AKS_SERVER_ID.into(),
        ..SpecInput::default()
    })
    .unwrap();
    Bench {
        mock,
        clock,
        broker,
        spec,
    }
}

/// The refresh token `store` holds for session `id`.
fn stored_refresh_token(store: &dyn SecretStore, id: &impl std::fmt::Display) -> String {
    use secrecy::ExposeSecret;
    store
        .load(&format!("refresh-token/{id}"))
        .unwrap()
        .expect("a stored refresh token")
        .expose_secret()
        .to_string()
}

fn bench() -> Bench {
    bench_with_store(Arc::new(MemoryStore::new()))
}

impl Bench {
    /// What a GetToken for the bench's session gets, with no credentials supplied.
    async fn get_token(&self) -> Result<Grant, BrokerError> {
        self.broker
            .get_token(&self.spec, &Supplied::default())
            .await
    }

    /// A device code login in which the user approves at once.
    async fn login(&self) -> Result<LoggedIn, Arc<BrokerError>> {
        let state = self.mock.shared_state();
        let approve = move |prompt: LoginPrompt| {
            if let LoginPrompt::DeviceCode { user_code, .. } = prompt {
                assert!(state.decide_device_code(
                    &user_code,
                    broker_tests::mock_entra::DeviceStatus::Approved
                ));
            }
        };
        self.broker
            .login(&self.spec, &Supplied::default(), false, &approve)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_never_served_even_when_the_idp_is_down() {
    let b = bench();
    b.login().await.unwrap();
    // The laptop slept past the token's expiry; the IdP is down on wake-up.
    b.clock.advance(Duration::from_secs(3600));
    b.mock.inject(Fault::Status(503), 1);
    let err = b.get_token().await.unwrap_err();
    assert_eq!(err.reason(), Reason::IdpUnavailable, "{err}");
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    // While it backs off, requests fail fast without asking the IdP.
    let err = b.get_token().await.unwrap_err();
    assert!(err.to_string().contains("retrying in"), "{err}");
    assert_eq!(b.mock.requests("refresh_token"), 1);
    // Once the backoff is over, the next request refreshes.
    b.clock.advance(Duration::from_secs(10));
    let grant = b.get_token().await.unwrap();
    assert!(grant.token.remaining(b.clock.now()) > Duration::from_secs(3000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_valid_token_is_served_while_the_idp_fails() {
    let b = bench();
    b.login().await.unwrap();
    let first = b.get_token().await.unwrap();
    // Within the refresh margin but not expired: refresh is tried, fails, the token stays.
    b.clock.advance(Duration::from_secs(3599 - 300));
    b.mock.inject(Fault::TooManyRequests { retry_after: 30 }, 1);
    let served = b.get_token().await.unwrap();
    assert_eq!(served.token.expose(), first.token.expose());
    let status = &b.broker.status()[0];
    assert!(status.last_error.as_deref().unwrap().contains("429"));
    assert_eq!(status.state, SessionState::Degraded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_refresh() {
    let b = bench();
    b.login().await.unwrap();
    b.clock.advance(Duration::from_secs(3599 - 60));
    // Slow the IdP so that every request arrives while the refresh is in flight.
    b.mock.inject(Fault::Delay(Duration::from_millis(300)), 1);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let broker = b.broker.clone();
        let spec = b.spec.clone();
        tasks.push(tokio::spawn(async move {
            broker.get_token(&spec, &Supplied::default()).await
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap().token.expose().to_string());
    }
    assert_eq!(b.mock.requests("refresh_token"), 1);
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every waiter got the one new token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_fails_fast_until_the_next_login() {
    let b = bench();
    b.login().await.unwrap();
    b.mock.revoke_refresh_tokens();
    b.clock.advance(Duration::from_secs(3700));
    let err = b.get_token().await.unwrap_err();
    assert_eq!(err.reason(), Reason::LoginRequired);
    assert_eq!(err.idp_codes(), &[50173]);
    let asked = b.mock.requests("refresh_token");
    for _ in 0..5 {
        let err = b.get_token().await.unwrap_err();
        assert_eq!(err.reason(), Reason::LoginRequired);
    }
    assert_eq!(b.mock.requests("refresh_token"), asked, "no request loop");
    assert_eq!(b.broker.status()[0].state, SessionState::LoginRequired);

    b.login().await.unwrap();
    assert!(b.get_token().await.is_ok());
    assert_eq!(b.broker.status()[0].state, SessionState::Fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_arrives_expired_is_refused() {
    let b = bench();
    b.mock.set_access_token_lifetime(0);
    let err = b.login().await.unwrap_err();
    assert!(err.to_string().contains("already expired"), "{err}");
    assert!(b.broker.status().is_empty(), "no half-made session");
}

/// A refresh whose access token has no life left by the time brokerd reads it (the clock
/// stepped, or the machine slept, while the request was out) is not served; but the issuer
/// has rotated the refresh token, and at one that rotates strictly the old one is dead: the
/// new one is kept, and the next refresh presents it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_arrives_expired_keeps_the_rotated_refresh_token() {
    let store = Arc::new(MemoryStore::new());
    let b = bench_with_store(store.clone());
    b.mock.set_strict_rotation(true);
    let id = b.login().await.unwrap().session_id;
    let first = stored_refresh_token(store.as_ref(), &id);

    b.clock.advance(Duration::from_secs(3600));
    b.mock.set_access_token_lifetime(0);
    let err = b.get_token().await.unwrap_err();
    assert!(err.to_string().contains("already expired"), "{err}");
    assert_eq!(b.mock.requests("refresh_token"), 1);
    let rotated = stored_refresh_token(store.as_ref(), &id);
    assert!(rotated != first, "the rotated refresh token is stored");
    assert!(b.mock.issued_refresh_tokens().contains(&rotated));

    // Once the backoff is over, the next refresh presents the rotated token, not the used one.
    b.mock.set_access_token_lifetime(3600);
    b.clock.advance(Duration::from_secs(60));
    let grant = b.get_token().await.unwrap();
    assert!(grant.token.remaining(b.clock.now()) > Duration::from_secs(3000));
    assert_eq!(b.mock.requests("refresh_token"), 2);
    assert_eq!(b.mock.requests("refresh_token_reused"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_session_needs_a_login() {
    let b = bench();
    let err = b.get_token().await.unwrap_err();
    assert_eq!(err.reason(), Reason::LoginRequired);
    assert_eq!(b.mock.requests("refresh_token"), 0);
}

/// A keyring that refuses everything, as a locked one does.
struct LockedStore;

impl SecretStore for LockedStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Keyring
    }

    fn backend(&self) -> &str {
        "Locked Keyring"
    }
    fn load(&self, _: &str) -> Result<Option<SecretString>, StoreError> {
        Err(self.error())
    }
    fn save(&self, _: &str, _: &str, _: &SecretString) -> Result<(), StoreError> {
        Err(self.error())
    }
    fn delete(&self, _: &str) -> Result<bool, StoreError> {
        Err(self.error())
    }
}

impl LockedStore {
    fn error(&self) -> StoreError {
        StoreError::Locked {
            backend: self.backend().into(),
            reason: "the collection is locked".into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_keyring_fails_the_login_clearly_and_keeps_nothing_half_done() {
    let b = bench_with_store(Arc::new(LockedStore));
    let err = b.login().await.unwrap_err();
    assert_eq!(err.reason(), Reason::StoreUnavailable);
    assert_eq!(
        err.to_string(),
        "cannot sign in: Locked Keyring is locked or refused access: the collection is locked; \
         unlock the keyring, or run brokerd --store memory (forgets every login when it stops)"
    );
    // Found out before anyone was asked to sign in.
    assert_eq!(b.mock.requests("devicecode"), 0);
    assert!(b.broker.status().is_empty(), "no session was left behind");
}

/// A keyring that starts refusing writes when told to (as one that gets locked does).
#[derive(Default)]
struct WriteFailingStore {
    inner: MemoryStore,
    refuse: std::sync::atomic::AtomicBool,
}

impl SecretStore for WriteFailingStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Keyring
    }

    fn backend(&self) -> &str {
        "Test Keyring"
    }
    fn load(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        self.inner.load(key)
    }
    fn save(&self, key: &str, label: &str, secret: &SecretString) -> Result<(), StoreError> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Locked {
                backend: "Test Keyring".into(),
                reason: "the collection is locked".into(),
            });
        }
        self.inner.save(key, label, secret)
    }
    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_keyring_write_keeps_the_old_refresh_token_and_says_so() {
    let store = Arc::new(WriteFailingStore::default());
    let b = bench_with_store(store.clone());
    let id = b.login().await.unwrap().session_id;
    let stored = stored_refresh_token(store.as_ref(), &id);

    store
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    b.clock.advance(Duration::from_secs(3599 - 60));
    let grant = b.get_token().await.unwrap();
    assert!(grant.token.remaining(b.clock.now()) > Duration::from_secs(3000));
    // The old refresh token is still the stored one, and status says why.
    assert_eq!(stored_refresh_token(store.as_ref(), &id), stored);
    let status = &b.broker.status()[0];
    assert_eq!(status.state, SessionState::Fresh);
    let error = status.last_error.as_deref().unwrap();
    assert!(
        error.contains("could not store the rotated refresh token"),
        "{error}"
    );
    assert!(error.contains("Test Keyring is locked"), "{error}");
    assert!(status.unsaved.is_some(), "status says it is in memory only");
    // Entra keeps old refresh tokens valid, so a restart could still use the stored one.
    assert!(b.mock.issued_refresh_tokens().contains(&stored));

    // The store takes writes again: the next try (the scheduler's, or shutdown's) stores the
    // rotated token, and status stops saying otherwise.
    store
        .refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    b.broker.save_all_unsaved().await;
    let now_stored = stored_refresh_token(store.as_ref(), &id);
    assert_ne!(now_stored, stored, "the rotated token is stored");
    let status = &b.broker.status()[0];
    assert_eq!(status.unsaved, None);
    assert_eq!(status.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_share_one_prompt_and_every_waiter_gets_the_result() {
    let b = bench();
    let prompts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let state = b.mock.shared_state();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let broker = b.broker.clone();
        let spec = b.spec.clone();
        let prompts = prompts.clone();
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let show = move |prompt: LoginPrompt| {
                prompts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let LoginPrompt::DeviceCode { user_code, .. } = prompt {
                    // Every waiter sees the one code; the first to approve wins.
                    state.decide_device_code(
                        &user_code,
                        broker_tests::mock_entra::DeviceStatus::Approved,
                    );
                }
            };
            broker
                .login(&spec, &Supplied::default(), false, &show)
                .await
                .map(|done| done.session_id)
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(b.mock.requests("devicecode"), 1, "one device code for all");
    assert_eq!(
        prompts.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "each waiter saw it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_login_times_out_and_frees_its_waiters() {
    let mock = MockEntra::start(MockConfig {
        device_code_interval: 1,
        ..MockConfig::default()
    });
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let identity = IdentityClient::new(clock.clone()).unwrap();
    let config = Config::parse("[login]\ntimeout = \"10s\"\n").unwrap();
    let settings = Arc::new(Settings::with("/nonexistent".into(), config));
    let broker = Broker::new(
        Arc::new(MemoryStore::new()),
        None,
        identity,
        clock,
        settings,
    );
    let spec = SessionSpec::new(&SpecInput {
        authority_host: mock.authority_host(),
        tenant_id: TENANT_ID.into(),
        server_id: AKS_SERVER_ID.into(),
        ..SpecInput::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let broker = broker.clone();
            let spec = spec.clone();
            tokio::spawn(async move {
                broker
                    .login(&spec, &Supplied::default(), false, &|_| {})
                    .await
            })
        })
        .collect();
    for waiter in waiters {
        let err = waiter.await.unwrap().unwrap_err();
        assert_eq!(err.reason(), Reason::LoginFailed, "{err}");
        assert!(
            err.to_string()
                .contains("expired after 10 s without a sign-in"),
            "{err}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(mock.requests("devicecode"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_answers_are_passing_failures() {
    for fault in [Fault::Malformed, Fault::Oversized] {
        let b = bench();
        b.login().await.unwrap();
        b.clock.advance(Duration::from_secs(3599 - 60));
        b.mock.inject(fault.clone(), 1);
        // The token from the login still has a minute: it is served, and the session degrades.
        let grant = b.get_token().await.unwrap();
        assert!(grant.token.remaining(b.clock.now()) <= Duration::from_secs(60));
        let status = &b.broker.status()[0];
        assert_eq!(status.state, SessionState::Degraded, "{fault:?}");
        assert_eq!(status.refresh_failures, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let b = bench();
    b.login().await.unwrap();
    b.clock.advance(Duration::from_secs(3599 - 120));
    b.mock.inject(Fault::TooManyRequests { retry_after: 90 }, 1);
    b.get_token().await.unwrap();
    let now = b.clock.now();
    let next = b.broker.status()[0].next_refresh.unwrap();
    assert!(
        next >= now + Duration::from_secs(89),
        "retry at {next:?}, now {now:?}"
    );
    // Until then requests do not ask again.
    b.get_token().await.unwrap();
    assert_eq!(b.mock.requests("refresh_token"), 1);
}
