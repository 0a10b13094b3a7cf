//! One session's state: its access token for the hot path, its refresh token behind a lock that
//! makes refreshes single-flight, and the facts its schedule and `status` are computed from.
//!
//! The state machine is derived, not stored: fresh → refresh due → refreshing → fresh |
//! degraded (a passing failure, retried with backoff) | login required.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use std::path::PathBuf;

use secrecy::SecretString;

use crate::clock::{from_unix_seconds, unix_seconds};
use crate::config::RefreshPolicy;
use crate::identity::cli::Tool;
use crate::identity::credential::CertificateSource;
use crate::identity::token::{AccessToken, RefreshToken};

use crate::spec::{SessionId, SessionSpec};

/// No proactive refresh comes sooner than this after the last one, however short the token.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

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
}

/// A passing failure being retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Backoff {
    pub failures: u32,
    pub retry_at: SystemTime,
}

#[derive(Debug)]
pub(super) struct Meta {
    pub account: Option<String>,
    pub logged_in_at: Option<SystemTime>,
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<String>,
    pub last_error_codes: Vec<i64>,
    pub refreshing: bool,
    /// Set when the refresh token is missing or was refused (or the IdP rejects the
    /// configuration): requests fail fast instead of asking the IdP again. A login clears it.
    pub login_required: bool,
    pub backoff: Option<Backoff>,
    /// When the access token in memory was issued, how long it lives, and the IdP's hint.
    pub issued_at: Option<SystemTime>,
    pub lifetime: Option<Duration>,
    pub refresh_in: Option<Duration>,
    /// This session's draw in [-1, 1], scaled by the policy's jitter, drawn anew at every
    /// refresh so that sessions that started together drift apart.
    pub jitter: f64,
    pub refreshes: u64,
    pub failures: u64,
    /// Non-secret credential locations, kept in the index for restarts.
    pub certificate_path: Option<PathBuf>,
    pub federated_token_file: Option<PathBuf>,
}

pub struct Session {
    pub id: SessionId,
    pub spec: SessionSpec,
    /// The hot path reads this and nothing else; writers hold it for a pointer swap.
    token: RwLock<Option<AccessToken>>,
    /// Held for the whole of a refresh, so concurrent requests share one.
    pub(super) refresh: tokio::sync::Mutex<Credentials>,
    pub(super) meta: Mutex<Meta>,
    tokens_served: AtomicU64,
    /// Unix seconds of the last token served; 0 = never.
    last_served: AtomicI64,
    /// A scheduler task is on its way for this session.
    pub(super) scheduled: AtomicBool,
}

impl Session {
    pub(super) fn new(spec: SessionSpec, meta: Meta) -> Self {
        Session {
            id: spec.id(),
            spec,
            token: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(Credentials::default()),
            meta: Mutex::new(meta),
            tokens_served: AtomicU64::new(0),
            last_served: AtomicI64::new(0),
            scheduled: AtomicBool::new(false),
        }
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

    pub(super) fn set_token(&self, token: Option<AccessToken>) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }

    pub(super) fn meta(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a token handed out: lock-free, for the hot path.
    pub(super) fn served(&self, now: SystemTime) {
        self.tokens_served.fetch_add(1, Ordering::Relaxed);
        self.last_served.store(unix_seconds(now), Ordering::Relaxed);
    }

    fn last_served(&self) -> Option<SystemTime> {
        match self.last_served.load(Ordering::Relaxed) {
            0 => None,
            secs => Some(from_unix_seconds(secs)),
        }
    }

    /// Served a token, or signed in, within the policy's active window.
    fn is_active(&self, meta: &Meta, now: SystemTime, policy: &RefreshPolicy) -> bool {
        [self.last_served(), meta.logged_in_at]
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
        let meta = self.meta();
        if meta.refreshing || meta.login_required {
            return None;
        }
        if let Some(backoff) = meta.backoff {
            return Some(backoff.retry_at);
        }
        let factor = 1.0 + meta.jitter * policy.jitter;
        // Only refresh tokens expire from disuse; app credentials need no keepalive.
        let keepalive = self.spec.login_mode.keeps_refresh_token().then(|| {
            meta.last_refresh
                .or(meta.logged_in_at)
                .map(|last| last + policy.keepalive.mul_f64(factor))
                .unwrap_or(now)
        });
        if !self.is_active(&meta, now, policy) {
            return keepalive;
        }
        let token = self.usable_token(now);
        let (Some(token), Some(issued)) = (token, meta.issued_at) else {
            // Active, and nothing to serve: get a token now.
            return Some(now);
        };
        let half_life = meta
            .refresh_in
            .or(meta.lifetime.map(|l| l / 2))
            .unwrap_or(MIN_REFRESH_INTERVAL);
        let planned = issued + half_life.mul_f64(factor);
        // Never later than the serving rule would refresh anyway, never sooner than the floor.
        let latest = token
            .expires_at
            .checked_sub(policy.min_remaining)
            .unwrap_or(issued);
        let planned = planned.min(latest).max(issued + MIN_REFRESH_INTERVAL);
        Some(keepalive.map_or(planned, |k| planned.min(k)))
    }

    pub fn status(&self, now: SystemTime, policy: &RefreshPolicy) -> SessionStatus {
        let token_expires_at = self.usable_token(now).map(|t| t.expires_at);
        let fresh = self.fresh_token(now, policy.min_remaining).is_some();
        let next_refresh = self.next_refresh(now, policy);
        let meta = self.meta();
        // A session whose refresh token was refused needs the user even while its last access
        // token is still served, so that state wins over freshness.
        let state = if meta.refreshing {
            SessionState::Refreshing
        } else if meta.login_required {
            SessionState::LoginRequired
        } else if meta.backoff.is_some() {
            SessionState::Degraded
        } else if fresh {
            SessionState::Fresh
        } else {
            SessionState::RefreshDue
        };
        SessionStatus {
            id: self.id.clone(),
            spec: self.spec.clone(),
            account: meta.account.clone(),
            state,
            token_expires_at,
            last_refresh: meta.last_refresh,
            next_refresh,
            last_served: self.last_served(),
            last_error: meta.last_error.clone(),
            last_error_codes: meta.last_error_codes.clone(),
            tokens_served: self.tokens_served.load(Ordering::Relaxed),
            refreshes: meta.refreshes,
            refresh_failures: meta.failures,
        }
    }
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
}
