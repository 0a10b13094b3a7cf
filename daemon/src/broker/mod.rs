//! The heart of brokerd: the session registry, `GetToken`, login, logout, refresh and the
//! schedule that keeps tokens fresh before anyone asks.
//!
//! Invariants:
//! - A fresh token is answered from memory: no I/O, and no lock that a refresh holds.
//! - Per session, one refresh runs at a time and one login prompts at a time; concurrent
//!   callers wait for it and share its result.
//! - A rotated refresh token reaches the secret store before the old one is forgotten.
//! - An expired access token is never handed out.
//! - The IdP is never asked in a loop: passing failures back off, refusals wait for a login,
//!   and at most `refresh.max_concurrent` token requests are in flight.
//! - Work that changes a session (a refresh, a login, a logout, credentials kept) runs to its
//!   end in a task of its own: a caller that hangs up stops waiting, nothing else.

mod credentials;
mod error;
mod events;
mod federated;
mod forwarding;
mod login;
mod persist;
mod pop;
mod refresh;
pub mod scheduler;
mod session;
#[cfg(test)]
mod tests;

/// Entry points for `cargo fuzz` (fuzz/): a session index file as a restarted brokerd reads
/// it, every session's status and plan computed from it. Built only under `--cfg fuzzing`.
#[cfg(fuzzing)]
pub mod fuzzing {
    pub fn session_index(bytes: &[u8]) {
        let Ok(records) = crate::store::parse_index(bytes) else {
            return;
        };
        let now = std::time::SystemTime::now();
        let policy = crate::config::RefreshPolicy::default();
        for session in super::persist::sessions_from(records, now).values() {
            let _ = session.status(now, &policy);
            let _ = session.next_work(now, &policy);
        }
    }
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

pub use crate::spec::{LoginMode, SessionId, SessionSpec, SpecInput};
pub use error::{BrokerError, Reason};
pub use events::{EventKind, SessionEvent};
pub use forwarding::PendingLogin;
pub use login::LoggedIn;
use session::Remembered;
pub use session::{Session, SessionState, SessionStatus};

use crate::clock::Clock;
use crate::config::watch::{ConfigStatus, Settings};
use crate::config::{RefreshPolicy, Resolve};
use crate::identity::IdentityClient;
use crate::identity::credential::Supplied;
use crate::identity::token::AccessToken;
use crate::store::{SecretStore, SessionIndex};

/// How long a logout waits for an issuer to revoke the refresh token.
const REVOKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An access token handed to a caller.
#[derive(Clone, Debug)]
pub struct Grant {
    pub session_id: SessionId,
    pub token: AccessToken,
    /// What the caller is told: the real expiry less the policy's margin, but never earlier
    /// than now while the token is still valid.
    pub expires_at: SystemTime,
}

/// Which sessions a logout or refresh is about.
#[derive(Clone, Debug)]
pub enum Selector {
    Id(String),
    Spec(Box<SessionSpec>),
}

pub struct Broker {
    /// This broker itself, for the tasks it spawns (scheduled refreshes, logins, index writes).
    me: std::sync::Weak<Broker>,
    sessions: RwLock<HashMap<SessionId, Arc<Session>>>,
    store: Arc<dyn SecretStore>,
    /// Absent when sessions must not outlive the process (the memory store).
    index: Option<SessionIndex>,
    persist: persist::IndexWriter,
    store_calls: persist::StoreCalls,
    identity: IdentityClient,
    clock: Arc<dyn Clock>,
    settings: Arc<Settings>,
    /// Caps concurrent token requests; replaced when the configured cap changes.
    permits: Mutex<(usize, Arc<tokio::sync::Semaphore>)>,
    logins: login::Flights,
    federated: federated::FederatedFiles,
    /// Wakes the scheduler: a session changed, or the clock moved.
    wake: tokio::sync::Notify,
    events: events::Events,
    /// Sign-ins that callers without a terminal needed, and how the user is told of them.
    pending: forwarding::PendingLogins,
    notifier: Arc<dyn crate::notify::Notifier>,
}

impl Broker {
    /// A broker that knows the sessions of `index`, their refresh tokens still in the store.
    /// Start [`scheduler::run`] beside it for refreshes ahead of time.
    pub fn new(
        store: Arc<dyn SecretStore>,
        index: Option<SessionIndex>,
        identity: IdentityClient,
        clock: Arc<dyn Clock>,
        settings: Arc<Settings>,
    ) -> Arc<Self> {
        let sessions = index
            .as_ref()
            .map(|index| persist::load_sessions(index, clock.now()))
            .unwrap_or_default();
        tracing::info!("{} session(s) known from the index", sessions.len());
        let cap = settings.get().refresh.max_concurrent;
        Arc::new_cyclic(|me| Broker {
            me: me.clone(),
            sessions: RwLock::new(sessions),
            store,
            index,
            persist: persist::IndexWriter::default(),
            store_calls: persist::StoreCalls::default(),
            identity,
            clock,
            settings,
            permits: Mutex::new((cap, Arc::new(tokio::sync::Semaphore::new(cap)))),
            logins: login::Flights::default(),
            federated: federated::FederatedFiles::default(),
            wake: tokio::sync::Notify::new(),
            events: events::Events::default(),
            pending: forwarding::PendingLogins::default(),
            notifier: crate::notify::desktop(),
        })
    }

    fn me(&self) -> Option<Arc<Broker>> {
        self.me.upgrade()
    }

    fn shutting_down() -> BrokerError {
        BrokerError::Internal("brokerd is shutting down".into())
    }

    /// Runs `work` to its end in a task of its own and waits for it: a caller that goes away
    /// stops waiting, and the work (a logout half done, a secret half stored) finishes anyway.
    async fn detached<T, F>(&self, work: impl FnOnce(Arc<Broker>) -> F) -> Result<T, BrokerError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, BrokerError>> + Send + 'static,
    {
        let me = self.me().ok_or_else(Self::shutting_down)?;
        tokio::spawn(work(me))
            .await
            .unwrap_or_else(|e| Err(BrokerError::Internal(format!("the task failed: {e}"))))
    }

    pub fn store_backend(&self) -> &str {
        self.store.backend()
    }

    /// The secret store, for `brokerctl doctor` to test.
    pub fn store(&self) -> Arc<dyn SecretStore> {
        self.store.clone()
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub fn config_status(&self) -> ConfigStatus {
        self.settings.status()
    }

    pub fn profiles(&self) -> Vec<String> {
        self.settings.get().profiles.keys().cloned().collect()
    }

    fn policy(&self) -> RefreshPolicy {
        self.settings.get().refresh.clone()
    }

    /// Every session event from now on, for as long as the receiver is kept.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    fn emit(&self, session_id: &SessionId, kind: EventKind, message: Option<String>) {
        self.events.send(SessionEvent {
            kind,
            session_id: session_id.clone(),
            at: self.clock.now(),
            message,
        });
    }

    /// One session's status, as `status` would show it.
    pub fn session_status(&self, id: &SessionId) -> Option<SessionStatus> {
        let session = self.session(id)?;
        Some(session.status(self.clock.now(), &self.policy()))
    }

    /// Tells the scheduler to look again: the wall clock jumped, or a session changed.
    pub fn wake_scheduler(&self) {
        self.wake.notify_one();
    }

    /// Resolves what a caller gave, with a profile of the configuration underneath when it
    /// names one.
    pub fn resolve(&self, profile: &str, input: &SpecInput) -> Result<SessionSpec, BrokerError> {
        let resolved = match self.settings.get().resolve(profile, input) {
            // Saved a moment ago (`brokerctl login --profile X` writes it, and the file watch
            // may not have told us yet): read the file again before saying there is none.
            Err(Resolve::UnknownProfile) if self.settings.reload_quietly().is_ok() => {
                self.settings.get().resolve(profile, input)
            }
            other => other,
        };
        resolved.map_err(|error| match error {
            Resolve::Spec(e) => BrokerError::InvalidSpec(e),
            Resolve::UnknownProfile => BrokerError::UnknownProfile {
                name: profile.to_string(),
                path: self.settings.path().display().to_string(),
            },
            Resolve::InvalidProfile(reason) => BrokerError::InvalidProfile {
                name: profile.to_string(),
                reason,
            },
        })
    }

    fn session(&self, id: &SessionId) -> Option<Arc<Session>> {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub(crate) fn all_sessions(&self) -> Vec<Arc<Session>> {
        let mut all: Vec<_> = self
            .sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    fn grant(&self, session: &Session, token: AccessToken, policy: &RefreshPolicy) -> Grant {
        let now = self.clock.now();
        session.served(now);
        let margined = token
            .expires_at
            .checked_sub(policy.expiry_margin)
            .filter(|t| *t > now)
            .unwrap_or(token.expires_at);
        Grant {
            session_id: session.id.clone(),
            expires_at: margined,
            token,
        }
    }

    /// An access token for `spec`: from memory while it has more than `min_remaining` left,
    /// else after a refresh. `supplied` are the caller's credentials for the non-interactive
    /// modes; with them a session is set up on first use, without a separate login.
    pub async fn get_token(
        &self,
        spec: &SessionSpec,
        supplied: &Supplied,
    ) -> Result<Grant, BrokerError> {
        let grant = self.bearer_grant(spec, supplied).await?;
        self.as_requested(spec, grant)
    }

    /// The session's access token as the IdP issued it (see [`Self::get_token`]).
    async fn bearer_grant(
        &self,
        spec: &SessionSpec,
        supplied: &Supplied,
    ) -> Result<Grant, BrokerError> {
        let policy = self.policy();
        let session = match self.session(&spec.id()) {
            Some(session) => session,
            None if spec.login_mode.prompts() => {
                // The index may have missed it (a full disk when it was written): a refresh
                // token in the store is a session all the same.
                if !self.has_stored_refresh_token(spec).await {
                    return Err(BrokerError::login_required(
                        spec,
                        "nobody has signed in to this session yet",
                    ));
                }
                tracing::info!(
                    "session {} is not in the index, but its refresh token is in {}: using it",
                    spec.id(),
                    self.store.backend()
                );
                let (session, _) = self.session_for(spec);
                let token = self
                    .refresh_session(&session, refresh::Trigger::Request, supplied)
                    .await?;
                self.save_index().await;
                return Ok(self.grant(&session, token, &policy));
            }
            None => {
                // A non-interactive session starts with its first request. If that fails, the
                // session stays (refused or backing off, as status shows), so that the same
                // request again fails fast instead of asking the IdP again.
                let (session, created) = self.session_for(spec);
                let token = self
                    .refresh_session(&session, refresh::Trigger::Request, supplied)
                    .await?;
                if created {
                    self.save_index().await;
                }
                return Ok(self.grant(&session, token, &policy));
            }
        };
        if let Some(token) = session.fresh_token(self.clock.now(), policy.min_remaining) {
            return Ok(self.grant(&session, token, &policy));
        }
        let token = self
            .refresh_session(&session, refresh::Trigger::Request, supplied)
            .await?;
        Ok(self.grant(&session, token, &policy))
    }

    /// Whether the store holds a refresh token for the session `spec` names (only a store that
    /// outlives brokerd can, and only a session that keeps one).
    async fn has_stored_refresh_token(&self, spec: &SessionSpec) -> bool {
        if self.store.kind() == crate::store::StoreKind::Memory
            || !spec.login_mode.keeps_refresh_token()
        {
            return false;
        }
        let key = persist::SecretKind::RefreshToken.key(&spec.id());
        matches!(self.load_secret(key).await, Ok(Some(_)))
    }

    /// The session for `spec`, created (empty) if there is none; true when created.
    fn session_for(&self, spec: &SessionSpec) -> (Arc<Session>, bool) {
        let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        let id = spec.id();
        let created = !sessions.contains_key(&id);
        let session = sessions
            .entry(id)
            .or_insert_with(|| Arc::new(Session::new(spec.clone(), Remembered::default())))
            .clone();
        (session, created)
    }

    /// Drops a session that never got a token, so that a failed first attempt leaves nothing
    /// behind.
    fn forget_if_empty(&self, session: &Session) {
        if session.never_served(self.clock.now()) {
            self.sessions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&session.id);
        }
    }

    /// Keeps credentials for `spec` in the secret store without signing in; the session exists
    /// afterwards.
    pub async fn remember(
        &self,
        spec: &SessionSpec,
        supplied: &Supplied,
    ) -> Result<SessionId, BrokerError> {
        let (spec, supplied) = (spec.clone(), supplied.clone());
        self.detached(|me| async move {
            let (session, _) = me.session_for(&spec);
            me.keep_credentials(&session, &supplied).await?;
            me.save_index().await;
            Ok(session.id.clone())
        })
        .await
    }

    /// Redeems a session's credentials now, whatever its access token's age or backoff.
    pub async fn refresh(&self, selector: &Selector) -> Result<Grant, BrokerError> {
        let session = self.select_one(selector)?;
        let token = self
            .refresh_session(&session, refresh::Trigger::Forced, &Supplied::default())
            .await?;
        Ok(Grant {
            session_id: session.id.clone(),
            expires_at: token.expires_at,
            token,
        })
    }

    /// Forgets sessions: refresh tokens leave the secret store, then the sessions leave memory.
    /// With `None`, every session.
    pub async fn logout(&self, selector: Option<&Selector>) -> Result<Vec<SessionId>, BrokerError> {
        let selector = selector.cloned();
        self.detached(|me| async move { me.logout_now(selector.as_ref()).await })
            .await
    }

    async fn logout_now(&self, selector: Option<&Selector>) -> Result<Vec<SessionId>, BrokerError> {
        let targets = match selector {
            None => self.all_sessions(),
            // A spec with no session may still have an orphaned keyring entry: remove it.
            Some(Selector::Spec(spec)) if self.session(&spec.id()).is_none() => {
                let id = spec.id();
                return if self.delete_secrets(&id).await? {
                    Ok(vec![id])
                } else {
                    Err(BrokerError::NotFound(format!(
                        "for {}; nobody is signed in to it",
                        spec.describe()
                    )))
                };
            }
            Some(selector) => vec![self.select_one(selector)?],
        };
        let mut removed = Vec::new();
        for session in targets {
            let mut credentials = session.credentials.lock().await;
            self.revoke_at_issuer(&session, &mut credentials).await;
            // If the store refuses, the session stays as it was: nothing half-forgotten.
            self.delete_secrets(&session.id).await?;
            *credentials = session::Credentials {
                loaded: true,
                ..Default::default()
            };
            session.forget_tokens();
            self.sessions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&session.id);
            self.pending.clear(&session.id);
            tracing::info!("session {} logged out", session.id);
            self.emit(&session.id, EventKind::LoggedOut, None);
            removed.push(session.id.clone());
        }
        self.save_index().await;
        Ok(removed)
    }

    /// An OpenID Connect issuer that has a revocation endpoint (RFC 7009) is told the refresh
    /// token is done with, so that a copy of it is worth nothing either. Best effort, bounded:
    /// an unreachable issuer does not keep the user from signing out here.
    async fn revoke_at_issuer(&self, session: &Session, credentials: &mut session::Credentials) {
        if session.spec.oidc.is_none() {
            return;
        }
        if let Err(e) = self.load_credentials(session, credentials).await {
            tracing::warn!(
                "session {}: cannot read its refresh token to revoke it: {e}",
                session.id
            );
            return;
        }
        let Some(refresh_token) = credentials.refresh_token() else {
            return;
        };
        let target = session.spec.target();
        let revoked =
            tokio::time::timeout(REVOKE_TIMEOUT, self.identity.revoke(&target, refresh_token))
                .await;
        match revoked {
            Ok(Ok(true)) => tracing::info!(
                "session {}: refresh token revoked at the issuer",
                session.id
            ),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(
                "session {}: the issuer did not revoke the refresh token: {e}",
                session.id
            ),
            Err(_) => tracing::warn!(
                "session {}: the issuer did not answer the revocation within {} s",
                session.id,
                REVOKE_TIMEOUT.as_secs()
            ),
        }
    }

    pub fn status(&self) -> Vec<SessionStatus> {
        let now = self.clock.now();
        let policy = self.policy();
        self.all_sessions()
            .iter()
            .map(|s| s.status(now, &policy))
            .collect()
    }

    fn select_one(&self, selector: &Selector) -> Result<Arc<Session>, BrokerError> {
        match selector {
            Selector::Id(id) => self
                .all_sessions()
                .into_iter()
                .find(|s| s.id.as_str() == id.trim())
                .ok_or_else(|| BrokerError::NotFound(id.clone())),
            Selector::Spec(spec) => self
                .session(&spec.id())
                .ok_or_else(|| BrokerError::NotFound(format!("for {}", spec.describe()))),
        }
    }

    /// The semaphore that caps concurrent token requests, resized when the policy changed.
    fn permits(&self, cap: usize) -> Arc<tokio::sync::Semaphore> {
        let mut permits = self.permits.lock().unwrap_or_else(|p| p.into_inner());
        if permits.0 != cap {
            // Requests holding the old semaphore's permits finish under the old cap.
            *permits = (cap, Arc::new(tokio::sync::Semaphore::new(cap)));
        }
        permits.1.clone()
    }
}
