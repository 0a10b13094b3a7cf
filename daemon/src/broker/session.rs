//! One session's state: its access token for the hot path, its refresh token behind a lock that
//! makes refreshes single-flight, and what `status` reports.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::identity::token::{AccessToken, RefreshToken};

use super::spec::{SessionId, SessionSpec};

/// Where the session's refresh token stands.
#[derive(Debug)]
pub(super) enum RefreshSlot {
    /// Not read from the secret store yet (a session known from the index after a restart).
    NotLoaded,
    /// Read or received: `None` means there is none and the user must sign in.
    Loaded(Option<RefreshToken>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// An access token with time to spare is in memory.
    Fresh,
    /// No usable access token in memory; the next request refreshes.
    Stale,
    Refreshing,
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
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Meta {
    pub account: Option<String>,
    pub logged_in_at: Option<SystemTime>,
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<String>,
    pub refreshing: bool,
    /// Set when the IdP refused the refresh token or none exists: requests fail fast instead of
    /// asking the IdP again. A login clears it.
    pub login_required: bool,
}

pub struct Session {
    pub id: SessionId,
    pub spec: SessionSpec,
    /// The hot path reads this and nothing else; writers hold it for a pointer swap.
    token: RwLock<Option<AccessToken>>,
    /// Held for the whole of a refresh or login, so concurrent requests share one.
    pub(super) refresh: tokio::sync::Mutex<RefreshSlot>,
    pub(super) meta: Mutex<Meta>,
}

impl Session {
    pub(super) fn new(spec: SessionSpec, meta: Meta) -> Self {
        Session {
            id: spec.id(),
            spec,
            token: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshSlot::NotLoaded),
            meta: Mutex::new(meta),
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

    pub fn status(&self, now: SystemTime, min_remaining: Duration) -> SessionStatus {
        let token_expires_at = self.usable_token(now).map(|t| t.expires_at);
        let fresh = self.fresh_token(now, min_remaining).is_some();
        let meta = self.meta();
        // A session whose refresh token was refused needs the user even while its last access
        // token is still served, so that state wins over freshness.
        let state = if meta.refreshing {
            SessionState::Refreshing
        } else if meta.login_required {
            SessionState::LoginRequired
        } else if fresh {
            SessionState::Fresh
        } else {
            SessionState::Stale
        };
        SessionStatus {
            id: self.id.clone(),
            spec: self.spec.clone(),
            account: meta.account.clone(),
            state,
            token_expires_at,
            last_refresh: meta.last_refresh,
            last_error: meta.last_error.clone(),
        }
    }
}
