//! One session's state: its access token for the hot path, its credentials behind a lock that
//! makes refreshes single-flight, and the facts its schedule and `status` are computed from.
//!
//! The state machine is derived, not stored: fresh → refresh due → refreshing → fresh |
//! degraded (a passing failure, retried with backoff) | login required. The facts are private
//! to this module: every change goes through a method named for what happened (a refresh
//! begun, tokens accepted, a failure, a sign-in), so that no caller can leave them half
//! changed. Flags that say "something is under way" (`refreshing`, `scheduled`) are held by
//! guards, cleared when the guard goes, whether the work ends, returns early, panics or its
//! future is dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use crate::clock::{from_unix_seconds, unix_seconds};
use crate::config::RefreshPolicy;
use crate::identity::ci_tokens::CiCredential;
use crate::identity::cli::Tool;
use crate::identity::credential::CertificateSource;
use crate::identity::token::{AccessToken, RefreshToken};
use crate::spec::{SessionId, SessionSpec};

/// No proactive refresh comes sooner than this after the last one, however short the token.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// How often brokerd tries again to store a rotated refresh token the store refused.
const UNSAVED_RETRY: Duration = Duration::from_secs(30);

/// What the broker redeems for a new access token.
#[derive(Clone, Debug)]
pub(super) enum Grantor {
    /// User sessions: the refresh token from the last sign-in.
    RefreshToken(RefreshToken),
    /// Service principal: a client secret (in the keyring when a login was given it).
    ClientSecret(SecretString),
    /// Service principal: a certificate file (and its password, if any).
    ClientCertificate(CertificateSource),
    /// Workload identity: the file the kubelet keeps a federated token in.
    FederatedToken(PathBuf),
    ManagedIdentity,
    Cli(Tool),
    /// A CI job's credential (Azure Pipelines, GitHub Actions), as its last caller supplied
    /// it (never stored: it lives as long as the job).
    CiToken(CiCredential),
}

/// A session's credentials, behind the refresh lock.
#[derive(Debug, Default)]
pub(super) struct Credentials {
    /// Whether the secret store was read (after a restart it has not been yet).
    pub loaded: bool,
    pub grantor: Option<Grantor>,
    /// ROPC: the password, to sign in again when the refresh token runs out. Only when the
    /// caller supplies it (memory) or a login asked to keep it (keyring).
    pub password: Option<SecretString>,
    /// An OpenID Connect user session of a confidential client: its secret, sent with every
    /// grant (kept in the keyring, as a service principal's is).
    pub client_secret: Option<SecretString>,
}

impl Credentials {
    /// The secret a user session's grants carry, if its client has one.
    pub fn target_secret(&self) -> Option<crate::identity::TargetSecret> {
        self.client_secret
            .clone()
            .map(crate::identity::TargetSecret)
    }

    /// The refresh token, if that is what the session redeems.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        match &self.grantor {
            Some(Grantor::RefreshToken(rt)) => Some(rt),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// An access token with more than `min_remaining` left is in memory.
    Fresh,
    /// No such token: the scheduler or the next request refreshes.
    RefreshDue,
    Refreshing,
    /// The last refresh failed for a passing reason; retried with backoff meanwhile.
    Degraded,
    /// The refresh token is missing or was refused: only the user can fix it.
    LoginRequired,
}

/// What `status` shows of a session. No secrets.
#[derive(Clone, Debug)]
pub struct SessionStatus {
    pub id: SessionId,
    pub spec: SessionSpec,
    pub account: Option<String>,
    pub state: SessionState,
    pub token_expires_at: Option<SystemTime>,
    pub last_refresh: Option<SystemTime>,
    pub next_refresh: Option<SystemTime>,
    pub last_served: Option<SystemTime>,
    pub last_error: Option<String>,
    pub last_error_codes: Vec<i64>,
    pub tokens_served: u64,
    pub refreshes: u64,
    pub refresh_failures: u64,
    /// Why the current refresh token lives in memory only (the store refused it); `None` once
    /// it is stored.
    pub unsaved: Option<String>,
    /// Served on the forwarding socket (allowed for the session itself; a profile may allow
    /// it too, which the broker adds), and how many of `tokens_served` went there.
    pub forwarding_allowed: bool,
    pub forwarded_served: u64,
}

/// A passing failure being retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Backoff {
    pub failures: u32,
    pub retry_at: SystemTime,
}

/// What the session index keeps of a session besides its spec, to find it again after a
/// restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Remembered {
    pub account: Option<String>,
    pub logged_in_at: Option<SystemTime>,
    pub last_refresh: Option<SystemTime>,
    pub certificate_path: Option<PathBuf>,
    pub federated_token_file: Option<PathBuf>,
    /// Served on the forwarding socket, to machines the user forwards brokerd to.
    pub allow_forwarding: bool,
}

/// The facts a session's state and schedule are derived from.
#[derive(Debug)]
struct Facts {
    remembered: Remembered,
    last_error: Option<String>,
    last_error_codes: Vec<i64>,
    refreshing: bool,
    /// Set when the refresh token is missing or was refused (or the IdP rejects the
    /// configuration): requests fail fast instead of asking the IdP again. A login clears it.
    login_required: bool,
    backoff: Option<Backoff>,
    /// When the access token in memory was issued, how long it lives, and the IdP's hint.
    issued_at: Option<SystemTime>,
    lifetime: Option<Duration>,
    refresh_in: Option<Duration>,
    /// This session's draw in [-1, 1], scaled by the policy's jitter, drawn anew at every
    /// refresh so that sessions that started together drift apart.
    jitter: f64,
    refreshes: u64,
    failures: u64,
    /// The rotated refresh token in memory that the store refused, why, and when to try
    /// storing it again.
    unsaved: Option<(String, SystemTime)>,
}

/// How a failed attempt counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The IdP refused the grant or the configuration: only a login (or new credentials)
    /// helps, so nothing is retried until then.
    Refused,
    /// Worth trying again after the backoff (at least `retry_after`, when the IdP said).
    Passing { retry_after: Option<Duration> },
}

/// What holds a request back without asking the IdP.
pub(super) enum Hold {
    /// A login (or new credentials) is needed; the last error and its codes.
    Refused { why: String, codes: Vec<i64> },
    /// A passing failure is being backed off.
    BackingOff {
        why: String,
        codes: Vec<i64>,
        retry_in: Duration,
    },
}

pub struct Session {
    pub id: SessionId,
    pub spec: SessionSpec,
    /// The hot path reads this and nothing else; writers hold it for a pointer swap.
    token: RwLock<Option<AccessToken>>,
    /// Held for the whole of a refresh, so concurrent requests share one.
    pub(super) credentials: tokio::sync::Mutex<Credentials>,
    facts: Mutex<Facts>,
    tokens_served: AtomicU64,
    /// Of those, the ones served on the forwarding socket.
    forwarded_served: AtomicU64,
    /// Unix seconds of the last token served; 0 = never.
    last_served: AtomicI64,
    /// A scheduler task is on its way for this session.
    scheduled: AtomicBool,
    /// Proof-of-possession sessions: the key their tokens are bound to, once loaded or made.
    pub(super) pop_key: std::sync::OnceLock<Arc<crate::identity::pop::PopKey>>,
}

/// While held, the session shows `refreshing` and the scheduler leaves it alone.
pub(super) struct Refreshing<'a>(&'a Session);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.facts().refreshing = false;
    }
}

/// A scheduler task's claim on a session: no second task starts for it while this lives.
pub(super) struct Scheduled(Arc<Session>);

impl Scheduled {
    pub fn session(&self) -> &Arc<Session> {
        &self.0
    }
}

impl Drop for Scheduled {
    fn drop(&mut self) {
        self.0.scheduled.store(false, Ordering::SeqCst);
    }
}

/// A draw in [-1, 1] for spreading planned refreshes.
fn draw_jitter() -> f64 {
    rand::random_range(-1.0..=1.0)
}

impl Session {
    /// A session nobody has signed in to yet, or one found again in the index.
    pub(super) fn new(spec: SessionSpec, remembered: Remembered) -> Self {
        Session {
            id: spec.id(),
            spec,
            token: RwLock::new(None),
            credentials: tokio::sync::Mutex::new(Credentials::default()),
            facts: Mutex::new(Facts {
                remembered,
                last_error: None,
                last_error_codes: Vec::new(),
                refreshing: false,
                login_required: false,
                backoff: None,
                issued_at: None,
                lifetime: None,
                refresh_in: None,
                jitter: draw_jitter(),
                refreshes: 0,
                failures: 0,
                unsaved: None,
            }),
            tokens_served: AtomicU64::new(0),
            forwarded_served: AtomicU64::new(0),
            last_served: AtomicI64::new(0),
            scheduled: AtomicBool::new(false),
            pop_key: std::sync::OnceLock::new(),
        }
    }

    fn facts(&self) -> MutexGuard<'_, Facts> {
        // The facts are plain values: a panic elsewhere cannot leave them unusable.
        self.facts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The access token if it has more than `min_remaining` left at `now`.
    pub fn fresh_token(&self, now: SystemTime, min_remaining: Duration) -> Option<AccessToken> {
        let token = self.token.read().unwrap_or_else(|p| p.into_inner());
        token
            .as_ref()
            .filter(|t| t.remaining(now) > min_remaining)
            .cloned()
    }

    /// The access token if it has not expired at `now`, however little time it has left.
    pub fn usable_token(&self, now: SystemTime) -> Option<AccessToken> {
        self.fresh_token(now, Duration::ZERO)
    }

    /// Counts a token handed out: lock-free, for the hot path.
    pub(super) fn served(&self, now: SystemTime) {
        self.tokens_served.fetch_add(1, Ordering::Relaxed);
        self.last_served.store(unix_seconds(now), Ordering::Relaxed);
    }

    /// Counts a token handed out on the forwarding socket (besides [`Session::served`]).
    pub(super) fn served_forwarded(&self) {
        self.forwarded_served.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the session itself is allowed on the forwarding socket.
    pub(super) fn forwarding_allowed(&self) -> bool {
        self.facts().remembered.allow_forwarding
    }

    /// Allows or denies the session on the forwarding socket; true when that changed it.
    pub(super) fn set_forwarding(&self, allowed: bool) -> bool {
        let mut facts = self.facts();
        let changed = facts.remembered.allow_forwarding != allowed;
        facts.remembered.allow_forwarding = allowed;
        changed
    }

    fn last_served(&self) -> Option<SystemTime> {
        match self.last_served.load(Ordering::Relaxed) {
            0 => None,
            secs => Some(from_unix_seconds(secs)),
        }
    }

    /// Marks a refresh as running until the guard is dropped.
    pub(super) fn begin_refresh(&self) -> Refreshing<'_> {
        self.facts().refreshing = true;
        Refreshing(self)
    }

    /// Claims the session for one scheduler task; `None` when a task already has it.
    pub(super) fn try_schedule(self: &Arc<Self>) -> Option<Scheduled> {
        if self.scheduled.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(Scheduled(self.clone()))
    }

    /// A grant was accepted at `now`: its access token is served from here on. `unsaved` says
    /// why its rotated refresh token could not be stored, if it could not.
    pub(super) fn accepted(
        &self,
        now: SystemTime,
        access: AccessToken,
        account: Option<String>,
        refresh_in: Option<Duration>,
        unsaved: Option<String>,
    ) {
        let lifetime = access.remaining(now);
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = Some(access);
        let mut facts = self.facts();
        if account.is_some() {
            facts.remembered.account = account;
        }
        facts.remembered.last_refresh = Some(now);
        facts.issued_at = Some(now);
        facts.lifetime = Some(lifetime);
        facts.refresh_in = refresh_in;
        facts.jitter = draw_jitter();
        facts.refreshes += 1;
        facts.last_error = unsaved
            .as_ref()
            .map(|why| format!("could not store the rotated refresh token: {why}"));
        facts.last_error_codes.clear();
        facts.login_required = false;
        facts.backoff = None;
        facts.unsaved = unsaved.map(|why| (why, now + UNSAVED_RETRY));
    }

    /// A failed attempt, counted as `failure`; returns the backoff delay when one was set.
    pub(super) fn failed(
        &self,
        now: SystemTime,
        error: String,
        codes: Vec<i64>,
        failure: Failure,
        policy: &RefreshPolicy,
    ) -> Option<(u32, Duration)> {
        let mut facts = self.facts();
        facts.failures += 1;
        facts.last_error = Some(error);
        facts.last_error_codes = codes;
        match failure {
            Failure::Refused => {
                facts.login_required = true;
                facts.backoff = None;
                None
            }
            Failure::Passing { retry_after } => {
                let failures = facts.backoff.map_or(0, |b| b.failures) + 1;
                let delay = backoff_delay(failures, policy, retry_after, rand::random());
                facts.backoff = Some(Backoff {
                    failures,
                    retry_at: now.checked_add(delay).unwrap_or(now),
                });
                Some((failures, delay))
            }
        }
    }

    /// Nothing to redeem: the session needs a login. True when that is news.
    pub(super) fn needs_login(&self, why: String) -> bool {
        let mut facts = self.facts();
        let newly = !facts.login_required;
        facts.login_required = true;
        facts.last_error = Some(why);
        facts.last_error_codes.clear();
        newly
    }

    /// New credentials deserve a try, whatever failed with the old ones.
    pub(super) fn lift_refusal(&self) {
        let mut facts = self.facts();
        facts.login_required = false;
        facts.backoff = None;
    }

    /// What holds a request back at `now` without asking the IdP, if anything.
    pub(super) fn hold(&self, now: SystemTime) -> Option<Hold> {
        let facts = self.facts();
        let why = |default: &str| {
            facts
                .last_error
                .clone()
                .unwrap_or_else(|| default.to_string())
        };
        if facts.login_required {
            return Some(Hold::Refused {
                why: why("the session has no refresh token"),
                codes: facts.last_error_codes.clone(),
            });
        }
        let backoff = facts.backoff.filter(|b| b.retry_at > now)?;
        Some(Hold::BackingOff {
            why: why("the identity provider failed"),
            codes: facts.last_error_codes.clone(),
            retry_in: backoff.retry_at.duration_since(now).unwrap_or_default(),
        })
    }

    /// A user signed in at `now`.
    pub(super) fn signed_in(&self, now: SystemTime) {
        self.facts().remembered.logged_in_at = Some(now);
    }

    /// Forgets the tokens in memory (a logout).
    pub(super) fn forget_tokens(&self) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.facts().unsaved = None;
    }

    pub(super) fn account(&self) -> Option<String> {
        self.facts().remembered.account.clone()
    }

    /// Never got a token: a session a failed first attempt may drop again.
    pub(super) fn never_served(&self, now: SystemTime) -> bool {
        self.usable_token(now).is_none() && self.facts().refreshes == 0
    }

    /// What the index keeps of this session.
    pub(super) fn remembered(&self) -> Remembered {
        self.facts().remembered.clone()
    }

    pub(super) fn set_certificate_path(&self, path: PathBuf) {
        self.facts().remembered.certificate_path = Some(path);
    }

    pub(super) fn set_federated_token_file(&self, file: PathBuf) {
        self.facts().remembered.federated_token_file = Some(file);
    }

    /// Its federated token file is in `dir`.
    pub(super) fn federated_file_in(&self, dir: &std::path::Path) -> bool {
        self.facts()
            .remembered
            .federated_token_file
            .as_deref()
            .and_then(std::path::Path::parent)
            .is_some_and(|d| d == dir)
    }

    /// Refused or backing off: stuck until something changes.
    pub(super) fn is_stuck(&self) -> bool {
        let facts = self.facts();
        facts.login_required || facts.backoff.is_some()
    }

    /// Whether a rotated refresh token waits to be stored, and storing it is due at `now`.
    pub(super) fn unsaved_due(&self, now: SystemTime) -> bool {
        self.facts()
            .unsaved
            .as_ref()
            .is_some_and(|(_, at)| *at <= now)
    }

    /// When storing the rotated refresh token is next due, if one waits.
    fn unsaved_retry_at(&self) -> Option<SystemTime> {
        self.facts().unsaved.as_ref().map(|(_, at)| *at)
    }

    /// The rotated refresh token is stored now, or could not be (`Err`: why).
    pub(super) fn unsaved_result(&self, now: SystemTime, result: Result<(), String>) {
        let mut facts = self.facts();
        match result {
            Ok(()) => {
                facts.unsaved = None;
                if facts
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("could not store the rotated refresh token"))
                {
                    facts.last_error = None;
                }
            }
            Err(why) => facts.unsaved = Some((why, now + UNSAVED_RETRY)),
        }
    }

    pub(super) fn has_unsaved(&self) -> bool {
        self.facts().unsaved.is_some()
    }

    /// Served a token, or signed in, within the policy's active window.
    fn is_active(&self, facts: &Facts, now: SystemTime, policy: &RefreshPolicy) -> bool {
        [self.last_served(), facts.remembered.logged_in_at]
            .into_iter()
            .flatten()
            .max()
            .is_some_and(|last| {
                now.duration_since(last).unwrap_or(Duration::ZERO) < policy.active_window
            })
    }

    /// When brokerd should refresh this session next on its own, or `None` when it should not
    /// (a refresh is running, or only the user can help).
    pub(super) fn next_refresh(
        &self,
        now: SystemTime,
        policy: &RefreshPolicy,
    ) -> Option<SystemTime> {
        let facts = self.facts();
        if facts.refreshing || facts.login_required {
            return None;
        }
        if let Some(backoff) = facts.backoff {
            return Some(backoff.retry_at);
        }
        let factor = 1.0 + facts.jitter * policy.jitter;
        // Only refresh tokens expire from disuse; app credentials need no keepalive. Times
        // from the index were clamped when read; the arithmetic saturates all the same.
        let keepalive = self.spec.login_mode.keeps_refresh_token().then(|| {
            facts
                .remembered
                .last_refresh
                .or(facts.remembered.logged_in_at)
                .map(|last| later(last, policy.keepalive.mul_f64(factor)))
                .unwrap_or(now)
        });
        if !self.is_active(&facts, now, policy) {
            return keepalive;
        }
        let token = self.usable_token(now);
        let (Some(token), Some(issued)) = (token, facts.issued_at) else {
            // Active, and nothing to serve: get a token now.
            return Some(now);
        };
        let half_life = facts
            .refresh_in
            .or(facts.lifetime.map(|l| l / 2))
            .unwrap_or(MIN_REFRESH_INTERVAL);
        let planned = later(issued, half_life.mul_f64(factor));
        // Never later than the serving rule would refresh anyway, never sooner than the floor.
        let latest = token
            .expires_at
            .checked_sub(policy.min_remaining)
            .unwrap_or(issued);
        let planned = planned.min(latest).max(later(issued, MIN_REFRESH_INTERVAL));
        Some(keepalive.map_or(planned, |k| planned.min(k)))
    }

    /// When the scheduler has something to do for this session: a refresh, or storing a
    /// rotated refresh token again.
    pub(super) fn next_work(&self, now: SystemTime, policy: &RefreshPolicy) -> Option<SystemTime> {
        let refresh = self.next_refresh(now, policy);
        match (refresh, self.unsaved_retry_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn status(&self, now: SystemTime, policy: &RefreshPolicy) -> SessionStatus {
        let token_expires_at = self.usable_token(now).map(|t| t.expires_at);
        let fresh = self.fresh_token(now, policy.min_remaining).is_some();
        let next_refresh = self.next_refresh(now, policy);
        let facts = self.facts();
        // A session whose refresh token was refused needs the user even while its last access
        // token is still served, so that state wins over freshness.
        let state = if facts.refreshing {
            SessionState::Refreshing
        } else if facts.login_required {
            SessionState::LoginRequired
        } else if facts.backoff.is_some() {
            SessionState::Degraded
        } else if fresh {
            SessionState::Fresh
        } else {
            SessionState::RefreshDue
        };
        SessionStatus {
            id: self.id.clone(),
            spec: self.spec.clone(),
            account: facts.remembered.account.clone(),
            state,
            token_expires_at,
            last_refresh: facts.remembered.last_refresh,
            next_refresh,
            last_served: self.last_served(),
            last_error: facts.last_error.clone(),
            last_error_codes: facts.last_error_codes.clone(),
            tokens_served: self.tokens_served.load(Ordering::Relaxed),
            refreshes: facts.refreshes,
            refresh_failures: facts.failures,
            unsaved: facts.unsaved.as_ref().map(|(why, _)| why.clone()),
            forwarding_allowed: facts.remembered.allow_forwarding,
            forwarded_served: self.forwarded_served.load(Ordering::Relaxed),
        }
    }
}

/// `time + by`, or the latest representable time when that overflows.
fn later(time: SystemTime, by: Duration) -> SystemTime {
    time.checked_add(by).unwrap_or(time)
}

/// The delay before retry number `failures` (1-based) after a passing failure: exponential from
/// `backoff_min`, capped at `backoff_max`, drawn from the upper half of that ("equal jitter") so
/// that many sessions failing together do not retry together. A Retry-After from the IdP is a
/// floor (capped at an hour).
pub(super) fn backoff_delay(
    failures: u32,
    policy: &RefreshPolicy,
    retry_after: Option<Duration>,
    draw: f64,
) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let ceiling = policy
        .backoff_min
        .saturating_mul(1 << exponent)
        .min(policy.backoff_max);
    let delay = ceiling / 2 + (ceiling / 2).mul_f64(draw.clamp(0.0, 1.0));
    match retry_after {
        Some(after) => delay.max(after.min(Duration::from_secs(3600))),
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecInput;

    fn session() -> Arc<Session> {
        let spec = SessionSpec::new(&SpecInput {
            tenant_id: "contoso.example".into(),
            server_id: "6dae42f8-4368-4678-94ff-3960e28e3630".into(),
            ..SpecInput::default()
        })
        .unwrap();
        Arc::new(Session::new(spec, Remembered::default()))
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
        let policy = RefreshPolicy::default(); // 5 s .. 5 min
        let top = |n| backoff_delay(n, &policy, None, 1.0);
        let bottom = |n| backoff_delay(n, &policy, None, 0.0);
        assert_eq!(top(1), Duration::from_secs(5));
        assert_eq!(bottom(1), Duration::from_millis(2500));
        assert_eq!(top(2), Duration::from_secs(10));
        assert_eq!(top(4), Duration::from_secs(40));
        assert_eq!(top(7), Duration::from_secs(300));
        assert_eq!(top(60), Duration::from_secs(300));
        assert_eq!(
            backoff_delay(1, &policy, Some(Duration::from_secs(90)), 0.5),
            Duration::from_secs(90)
        );
        assert_eq!(
            backoff_delay(1, &policy, Some(Duration::from_secs(86_400)), 0.5),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn a_refresh_that_ends_any_way_leaves_the_session_not_refreshing() {
        let s = session();
        let now = SystemTime::now();
        let policy = RefreshPolicy::default();
        {
            let _refreshing = s.begin_refresh();
            assert_eq!(s.status(now, &policy).state, SessionState::Refreshing);
            assert_eq!(s.next_refresh(now, &policy), None);
        }
        assert_ne!(s.status(now, &policy).state, SessionState::Refreshing);
        // A panic halfway through is no different.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _refreshing = s.begin_refresh();
            panic!("the refresh failed badly");
        }));
        assert!(caught.is_err());
        assert_ne!(s.status(now, &policy).state, SessionState::Refreshing);
        assert!(s.next_refresh(now, &policy).is_some());
    }

    #[test]
    fn one_scheduler_task_at_a_time_and_the_claim_ends_with_it() {
        let s = session();
        let claim = s.try_schedule().unwrap();
        assert!(s.try_schedule().is_none());
        drop(claim);
        assert!(s.try_schedule().is_some());
    }

    #[test]
    fn times_at_the_end_of_the_clock_do_not_overflow_the_plan() {
        let s = session();
        let far = latest_time();
        s.facts().remembered.last_refresh = Some(far);
        let now = SystemTime::now();
        // An idle session plans its keepalive from the last refresh: saturated, no panic.
        let next = s.next_refresh(now, &RefreshPolicy::default());
        assert!(next.is_some());
        let _ = s.status(now, &RefreshPolicy::default());
    }

    fn latest_time() -> SystemTime {
        // The latest time this platform represents, found by halving.
        let mut time = SystemTime::UNIX_EPOCH;
        let mut step = Duration::from_secs(u64::MAX / 2);
        while step > Duration::from_secs(1) {
            if let Some(t) = time.checked_add(step) {
                time = t;
            } else {
                step /= 2;
            }
        }
        time
    }

    #[test]
    fn an_unsaved_refresh_token_is_retried_and_said_until_stored() {
        let s = session();
        let now = SystemTime::now();
        let token = AccessToken::new("at".to_string().into(), now + Duration::from_secs(3600));
        s.accepted(now, token, None, None, Some("the keyring is locked".into()));
        let status = s.status(now, &RefreshPolicy::default());
        assert_eq!(status.unsaved.as_deref(), Some("the keyring is locked"));
        assert!(!s.unsaved_due(now));
        assert!(s.unsaved_due(now + UNSAVED_RETRY));
        s.unsaved_result(now, Ok(()));
        let status = s.status(now, &RefreshPolicy::default());
        assert_eq!(status.unsaved, None);
        assert_eq!(status.last_error, None);
    }
}
