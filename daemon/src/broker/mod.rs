//! The heart of brokerd: the session registry, `GetToken`, login, logout and refresh.
//!
//! Invariants:
//! - A fresh token is answered from memory: no I/O, and no lock that a refresh holds.
//! - Per session, one refresh or login runs at a time; concurrent callers wait for it and
//!   share its result.
//! - A rotated refresh token reaches the secret store before the old one is forgotten.
//! - An expired access token is never handed out.

mod error;
mod session;
pub mod spec;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

pub use error::{BrokerError, Reason};
use session::{Meta, RefreshSlot};
pub use session::{Session, SessionState, SessionStatus};
pub use spec::{LoginMode, SessionId, SessionSpec};

use crate::clock::{self, Clock};
use crate::identity::token::{AccessToken, RefreshToken, TokenSet};
use crate::identity::{IdentityClient, IdentityError, LoginPrompt};
use crate::store::{IndexedSession, SecretStore, SessionIndex, StoreError};

/// Tunables of the serving rule and of logins.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// A token with less than this left is refreshed before it is served.
    pub min_remaining: Duration,
    /// How long a login waits for the user.
    pub login_timeout: Duration,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            min_remaining: Duration::from_secs(10 * 60),
            login_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// An access token handed to a caller, with the session it came from.
#[derive(Clone, Debug)]
pub struct Grant {
    pub session_id: SessionId,
    pub token: AccessToken,
}

/// The end of a successful login.
#[derive(Clone, Debug)]
pub struct LoggedIn {
    pub session_id: SessionId,
    pub account: Option<String>,
    pub expires_at: SystemTime,
}

/// Which sessions a logout or refresh is about.
#[derive(Clone, Debug)]
pub enum Selector {
    Id(String),
    Spec(SessionSpec),
}

pub struct Broker {
    sessions: RwLock<HashMap<SessionId, Arc<Session>>>,
    store: Arc<dyn SecretStore>,
    /// Absent when sessions must not outlive the process (the memory store).
    index: Option<SessionIndex>,
    /// Serialises index rewrites so that the last one written is the newest.
    index_writer: tokio::sync::Mutex<()>,
    identity: IdentityClient,
    clock: Arc<dyn Clock>,
    options: BrokerOptions,
}

/// The secret store key of a session's refresh token.
fn refresh_token_key(id: &SessionId) -> String {
    format!("refresh-token/{id}")
}

impl Broker {
    /// A broker that knows the sessions of `index`, their refresh tokens still in the store.
    pub fn new(
        store: Arc<dyn SecretStore>,
        index: Option<SessionIndex>,
        identity: IdentityClient,
        clock: Arc<dyn Clock>,
        options: BrokerOptions,
    ) -> Self {
        let mut sessions = HashMap::new();
        if let Some(index) = &index {
            match index.load() {
                Ok(records) => {
                    for record in records {
                        match session_from_index(&record) {
                            Ok(session) => {
                                sessions.insert(session.id.clone(), Arc::new(session));
                            }
                            Err(e) => {
                                tracing::warn!("skipping session {} of the index: {e}", record.id)
                            }
                        }
                    }
                }
                Err(e) => tracing::error!("{e}; starting with no sessions"),
            }
        }
        tracing::info!("{} session(s) known from the index", sessions.len());
        Broker {
            sessions: RwLock::new(sessions),
            store,
            index,
            index_writer: tokio::sync::Mutex::new(()),
            identity,
            clock,
            options,
        }
    }

    pub fn store_backend(&self) -> &str {
        self.store.backend()
    }

    fn session(&self, id: &SessionId) -> Option<Arc<Session>> {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn all_sessions(&self) -> Vec<Arc<Session>> {
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

    /// An access token for `spec`: from memory while it has more than `min_remaining` left,
    /// else after a refresh.
    pub async fn get_token(&self, spec: &SessionSpec) -> Result<Grant, BrokerError> {
        let id = spec.id();
        let Some(session) = self.session(&id) else {
            return Err(BrokerError::login_required(
                spec,
                "nobody has signed in to this session yet",
            ));
        };
        if let Some(token) = session.fresh_token(self.clock.now(), self.options.min_remaining) {
            return Ok(Grant {
                session_id: id,
                token,
            });
        }
        self.refresh_session(&session, false).await
    }

    /// Redeems a session's refresh token now, whatever its access token's age.
    pub async fn refresh(&self, selector: &Selector) -> Result<Grant, BrokerError> {
        let session = self.select_one(selector)?;
        self.refresh_session(&session, true).await
    }

    /// Refreshes `session` unless, once the refresh lock is ours, a concurrent caller already
    /// did (and `force` is off).
    async fn refresh_session(&self, session: &Session, force: bool) -> Result<Grant, BrokerError> {
        let mut slot = session.refresh.lock().await;
        let now = self.clock.now();
        let grant = |token: AccessToken| Grant {
            session_id: session.id.clone(),
            token,
        };
        if !force && let Some(token) = session.fresh_token(now, self.options.min_remaining) {
            return Ok(grant(token));
        }

        // Without `force`, a session the IdP already refused fails fast: asking again on
        // every kubectl run would be a loop of requests that cannot succeed.
        if !force && session.meta().login_required {
            return match session.usable_token(now) {
                Some(token) => Ok(grant(token)),
                None => Err(BrokerError::login_required(
                    &session.spec,
                    session
                        .meta()
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "the session has no refresh token".into()),
                )),
            };
        }

        if let RefreshSlot::NotLoaded = *slot {
            let stored = self.load_secret(refresh_token_key(&session.id)).await?;
            *slot = RefreshSlot::Loaded(stored.map(RefreshToken::new));
        }
        let RefreshSlot::Loaded(Some(refresh_token)) = &*slot else {
            let why = format!(
                "no refresh token for this session in {}",
                self.store.backend()
            );
            let mut meta = session.meta();
            meta.login_required = true;
            meta.last_error = Some(why.clone());
            drop(meta);
            return Err(BrokerError::login_required(&session.spec, why));
        };
        let refresh_token = refresh_token.clone();

        session.meta().refreshing = true;
        let result = self
            .identity
            .refresh(&session.spec.target(), &refresh_token)
            .await;
        session.meta().refreshing = false;

        let outcome = match result {
            Ok(tokens) => self.accept_tokens(session, &mut slot, tokens, false).await,
            Err(error) => Err(BrokerError::from_refresh(&session.spec, error)),
        };
        match outcome {
            Ok(token) => Ok(grant(token)),
            Err(error) => {
                tracing::warn!("refresh of session {} failed: {error}", session.id);
                {
                    let mut meta = session.meta();
                    meta.last_error = Some(error.to_string());
                    meta.login_required = error.reason() == Reason::LoginRequired;
                }
                // A token that still works is better than an error, whatever went wrong.
                match session.usable_token(self.clock.now()) {
                    Some(token) if !force => Ok(grant(token)),
                    _ => Err(error),
                }
            }
        }
    }

    /// Installs the result of a grant: a rotated refresh token goes to the secret store first,
    /// then memory takes the new tokens. `require_store` makes a store failure fatal (a login
    /// whose refresh token cannot be kept is not a login); after a refresh it is only logged,
    /// because the old refresh token stays valid at Entra and in the store.
    async fn accept_tokens(
        &self,
        session: &Session,
        slot: &mut RefreshSlot,
        tokens: TokenSet,
        require_store: bool,
    ) -> Result<AccessToken, BrokerError> {
        let now = self.clock.now();
        let TokenSet {
            access,
            refresh,
            account,
            ..
        } = tokens;
        if access.remaining(now).is_zero() {
            // Never hand out an expired token, even a brand-new one.
            return Err(BrokerError::Identity {
                source: IdentityError::Malformed(
                    "the identity provider issued an access token that has already expired \
                     (check this machine's clock)"
                        .into(),
                ),
            });
        }
        if let Some(new_refresh) = &refresh {
            let account_name = account
                .clone()
                .or_else(|| session.meta().account.clone())
                .unwrap_or_else(|| "unknown account".into());
            let label = format!(
                "token-broker refresh token: {account_name}, {}",
                session.spec.describe()
            );
            let saved = self
                .save_secret(refresh_token_key(&session.id), label, new_refresh.clone())
                .await;
            match saved {
                Ok(()) => {}
                Err(e) if require_store => return Err(e),
                Err(e) => tracing::warn!(
                    "session {}: keeping the new refresh token in memory only: {e}",
                    session.id
                ),
            }
        }
        if let Some(new_refresh) = refresh {
            *slot = RefreshSlot::Loaded(Some(new_refresh));
        } else if require_store {
            // A login without a refresh token serves its access token until it expires.
            *slot = RefreshSlot::Loaded(None);
        }
        session.set_token(Some(access.clone()));
        let mut meta = session.meta();
        if account.is_some() {
            meta.account = account;
        }
        meta.last_refresh = Some(now);
        meta.last_error = None;
        meta.login_required = false;
        Ok(access)
    }

    /// Signs the user of `spec` in, telling `prompt` what to show or open. On success the
    /// session exists, holds fresh tokens, and its refresh token is in the secret store.
    pub async fn login(
        &self,
        spec: &SessionSpec,
        prompt: &(dyn Fn(LoginPrompt) + Send + Sync),
    ) -> Result<LoggedIn, BrokerError> {
        let target = spec.target();
        let timeout = self.options.login_timeout;
        tracing::info!("login started for {}", spec.describe());
        let tokens = match spec.login_mode {
            LoginMode::DeviceCode => {
                self.identity
                    .device_code_login(&target, prompt, timeout)
                    .await
            }
            LoginMode::Interactive => {
                self.identity
                    .interactive_login(&target, prompt, timeout)
                    .await
            }
        }
        .map_err(|e| {
            tracing::warn!("login for {} failed: {e}", spec.describe());
            BrokerError::from_login(e)
        })?;

        let id = spec.id();
        let (session, created) = {
            let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
            let created = !sessions.contains_key(&id);
            let session = sessions
                .entry(id.clone())
                .or_insert_with(|| Arc::new(Session::new(spec.clone(), Meta::default())))
                .clone();
            (session, created)
        };
        let accepted = {
            let mut slot = session.refresh.lock().await;
            self.accept_tokens(&session, &mut slot, tokens, true).await
        };
        let access = match accepted {
            Ok(access) => access,
            Err(error) => {
                // A session this login created must not linger without tokens.
                if created {
                    self.sessions
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                }
                tracing::warn!("login for {} failed: {error}", spec.describe());
                return Err(error);
            }
        };
        session.meta().logged_in_at = Some(self.clock.now());
        self.save_index().await;
        let account = session.meta().account.clone();
        tracing::info!(
            "session {id} signed in as {}",
            account.as_deref().unwrap_or("an unnamed account")
        );
        Ok(LoggedIn {
            session_id: id,
            account,
            expires_at: access.expires_at,
        })
    }

    /// Forgets sessions: refresh tokens leave the secret store, then the sessions leave memory.
    /// With `None`, every session.
    pub async fn logout(&self, selector: Option<&Selector>) -> Result<Vec<SessionId>, BrokerError> {
        let targets = match selector {
            None => self.all_sessions(),
            // A spec with no session may still have an orphaned keyring entry: remove it.
            Some(Selector::Spec(spec)) if self.session(&spec.id()).is_none() => {
                let id = spec.id();
                return if self.delete_secret(refresh_token_key(&id)).await? {
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
            let mut slot = session.refresh.lock().await;
            // If the store refuses, the session stays as it was: nothing half-forgotten.
            self.delete_secret(refresh_token_key(&session.id)).await?;
            *slot = RefreshSlot::Loaded(None);
            session.set_token(None);
            self.sessions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&session.id);
            tracing::info!("session {} logged out", session.id);
            removed.push(session.id.clone());
        }
        self.save_index().await;
        Ok(removed)
    }

    pub fn status(&self) -> Vec<SessionStatus> {
        let now = self.clock.now();
        self.all_sessions()
            .iter()
            .map(|s| s.status(now, self.options.min_remaining))
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

    /// Rewrites the session index from memory. A failure is logged, not returned: the session
    /// works now and its refresh token is safe in the store; only a restart would miss it.
    async fn save_index(&self) {
        let Some(index) = self.index.clone() else {
            return;
        };
        let _writer = self.index_writer.lock().await;
        let records: Vec<IndexedSession> = self
            .all_sessions()
            .iter()
            .map(|s| index_record(s))
            .collect();
        let result = tokio::task::spawn_blocking(move || index.save(&records)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("writing the session index panicked: {e}"),
        }
    }

    async fn load_secret(&self, key: String) -> Result<Option<secrecy::SecretString>, BrokerError> {
        let store = self.store.clone();
        blocking(move || store.load(&key)).await
    }

    async fn save_secret(
        &self,
        key: String,
        label: String,
        secret: RefreshToken,
    ) -> Result<(), BrokerError> {
        let store = self.store.clone();
        blocking(move || store.save(&key, &label, secret.secret())).await
    }

    async fn delete_secret(&self, key: String) -> Result<bool, BrokerError> {
        let store = self.store.clone();
        blocking(move || store.delete(&key)).await
    }
}

/// Runs a secret store call on a blocking thread: keyring APIs block on D-Bus or the Keychain.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, BrokerError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| BrokerError::Internal(format!("secret store call panicked: {e}")))?
        .map_err(BrokerError::Store)
}

fn index_record(session: &Session) -> IndexedSession {
    let meta = session.meta();
    let spec = &session.spec;
    IndexedSession {
        id: session.id.to_string(),
        environment: spec.environment.clone(),
        authority_host: spec.authority_host.clone(),
        tenant_id: spec.tenant_id.clone(),
        client_id: spec.client_id.clone(),
        server_id: spec.server_id.clone(),
        login_mode: spec.login_mode.name().to_string(),
        account: meta.account.clone(),
        logged_in_at: meta.logged_in_at.map(clock::unix_seconds).unwrap_or(0),
    }
}

fn session_from_index(record: &IndexedSession) -> Result<Session, BrokerError> {
    let mode = LoginMode::from_name(&record.login_mode).ok_or_else(|| {
        BrokerError::Internal(format!("unknown login mode {:?}", record.login_mode))
    })?;
    let spec = SessionSpec::new(
        &record.environment,
        &record.authority_host,
        &record.tenant_id,
        &record.client_id,
        &record.server_id,
        mode,
    )?;
    if spec.id().as_str() != record.id {
        return Err(BrokerError::Internal(format!(
            "its parameters now name session {}",
            spec.id()
        )));
    }
    let meta = Meta {
        account: record.account.clone(),
        logged_in_at: (record.logged_in_at > 0)
            .then(|| clock::from_unix_seconds(record.logged_in_at)),
        ..Meta::default()
    };
    Ok(Session::new(spec, meta))
}
