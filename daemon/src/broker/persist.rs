//! What the broker keeps outside memory: secrets in the secret store, and the session index
//! (no secrets) that lets a restarted brokerd find its sessions.
//!
//! Store calls block (D-Bus, the Keychain), so they run on blocking threads, each with a
//! deadline: a hung keyring daemon once made a shim wait 90 s until it was killed. A call past
//! its deadline is abandoned (its thread finishes on its own) and reported as the store not
//! answering; while calls are still stuck, new ones fail at once rather than pile up threads.
//! The outcome of the last call is kept, so that status and doctor say whether the store
//! answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::Broker;
use super::error::BrokerError;
use super::session::{Remembered, Session};
use crate::clock;
use crate::spec::{LoginMode, SessionId, SessionSpec, SpecInput};
use crate::store::{IndexedSession, SecretStore, SessionIndex, StoreError};

/// Refreshes happen all day; their index updates (the last refresh time, for keepalives after a
/// restart) are written together, at most this often.
const INDEX_FLUSH_DELAY: Duration = Duration::from_secs(5);

/// How long one secret store call may take when nobody is at the keyboard to answer an unlock
/// prompt.
pub(super) const STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call made for a login may take: the keyring may be asking its user to unlock.
pub(super) const LOGIN_STORE_TIMEOUT: Duration = Duration::from_secs(60);
/// Calls abandoned but still running, past which new calls fail at once.
const MOST_STUCK_CALLS: usize = 4;

/// The secrets a session may keep in the secret store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SecretKind {
    RefreshToken,
    ClientSecret,
    CertificatePassword,
    Password,
    /// A proof-of-possession session's private key (PKCS#8, base64).
    PopKey,
}

impl SecretKind {
    pub const ALL: [SecretKind; 5] = [
        SecretKind::RefreshToken,
        SecretKind::ClientSecret,
        SecretKind::CertificatePassword,
        SecretKind::Password,
        SecretKind::PopKey,
    ];

    /// The secret store key: `refresh-token/<session id>` and so on.
    pub fn key(self, id: &SessionId) -> String {
        let kind = match self {
            SecretKind::RefreshToken => "refresh-token",
            SecretKind::ClientSecret => "client-secret",
            SecretKind::CertificatePassword => "certificate-password",
            SecretKind::Password => "password",
            SecretKind::PopKey => "pop-key",
        };
        format!("{kind}/{id}")
    }
}

/// Serialises index rewrites, coalesces the ones refreshes ask for, and remembers whether the
/// last one failed.
#[derive(Default)]
pub(super) struct IndexWriter {
    writing: tokio::sync::Mutex<()>,
    flush_pending: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// The secret store's calls in flight past their deadline, and how the last call went.
#[derive(Default)]
pub(super) struct StoreCalls {
    stuck: Arc<AtomicUsize>,
    last_problem: Mutex<Option<String>>,
}

/// The sessions an index file records. Records that no longer make sense are skipped with a
/// warning; their refresh tokens stay in the keyring.
pub(super) fn load_sessions(
    index: &SessionIndex,
    now: SystemTime,
) -> HashMap<SessionId, Arc<Session>> {
    let records = match index.load() {
        Ok(records) => records,
        Err(e) => {
            tracing::error!("{e}; starting with no sessions");
            return HashMap::new();
        }
    };
    sessions_from(records, now)
}

/// The sessions index records name, skipping (with a warning) those that make no sense.
pub(super) fn sessions_from(
    records: Vec<IndexedSession>,
    now: SystemTime,
) -> HashMap<SessionId, Arc<Session>> {
    let mut sessions = HashMap::new();
    for record in records {
        match session_from_index(&record, now) {
            Ok(session) => {
                sessions.insert(session.id.clone(), Arc::new(session));
            }
            Err(e) => tracing::warn!("skipping session {} of the index: {e}", record.id),
        }
    }
    sessions
}

/// A time the index gives, as a time brokerd can plan with: 0 is "never", and anything later
/// than now (a clock that moved back, or a hand-edited file with a number near the end of
/// time) is now.
fn indexed_time(seconds: i64, now: SystemTime) -> Option<SystemTime> {
    (seconds > 0).then(|| clock::from_unix_seconds(seconds).min(now))
}

fn session_from_index(record: &IndexedSession, now: SystemTime) -> Result<Session, BrokerError> {
    let mode = LoginMode::from_name(&record.login_mode).ok_or_else(|| {
        BrokerError::Internal(format!("unknown login mode {:?}", record.login_mode))
    })?;
    let spec = SessionSpec::new(&SpecInput {
        environment: record.environment.clone(),
        authority_host: record.authority_host.clone(),
        tenant_id: record.tenant_id.clone(),
        client_id: record.client_id.clone(),
        server_id: record.server_id.clone(),
        login_mode: Some(mode),
        username: record.username.clone(),
        identity_resource_id: record.identity_resource_id.clone(),
        login_hint: record.login_hint.clone(),
        redirect_url: record.redirect_url.clone(),
        subscription: record.subscription.clone(),
        azure_config_dir: record.azure_config_dir.clone(),
        service_connection_id: record.service_connection_id.clone(),
        oidc_issuer_url: record.oidc_issuer_url.clone(),
        oidc_extra_scopes: record.oidc_extra_scopes.clone(),
        oidc_use_access_token: record.oidc_use_access_token,
        oidc_auth_params: record.oidc_auth_params.clone(),
        pop_claims: record.pop_claims.clone(),
        oidc_certificate_authority: record.oidc_certificate_authority.clone(),
        ..SpecInput::default()
    })?;
    if spec.id().as_str() != record.id {
        return Err(BrokerError::Internal(format!(
            "its parameters now name session {}",
            spec.id()
        )));
    }
    let path = |p: &str| (!p.is_empty()).then(|| std::path::PathBuf::from(p));
    let account = record
        .account
        .as_deref()
        .map(|a| broker_proto::text::printable(a).into_owned());
    let remembered = Remembered {
        account,
        logged_in_at: indexed_time(record.logged_in_at, now),
        last_refresh: indexed_time(record.last_refresh_at, now),
        certificate_path: path(&record.certificate_path),
        federated_token_file: path(&record.federated_token_file),
        allow_forwarding: record.allow_forwarding,
    };
    Ok(Session::new(spec, remembered))
}

fn index_record(session: &Session) -> IndexedSession {
    let remembered = session.remembered();
    let spec = &session.spec;
    let secs = |t: Option<SystemTime>| t.map(clock::unix_seconds).unwrap_or(0);
    let text = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    // The OIDC fields as the wire spells them: one spelling for both.
    let wire = broker_proto::v1::SessionSpec::from(spec);
    IndexedSession {
        id: session.id.to_string(),
        environment: spec.environment.clone(),
        authority_host: spec.authority_host.clone(),
        tenant_id: spec.tenant_id.clone(),
        client_id: spec.client_id.clone(),
        server_id: spec.server_id.clone(),
        login_mode: spec.login_mode.name().to_string(),
        account: remembered.account.clone(),
        logged_in_at: secs(remembered.logged_in_at),
        last_refresh_at: secs(remembered.last_refresh),
        username: spec.username.clone(),
        identity_resource_id: spec.identity_resource_id.clone(),
        login_hint: spec.login_hint.clone(),
        redirect_url: spec.redirect_url.clone(),
        subscription: spec.subscription.clone(),
        azure_config_dir: spec.azure_config_dir.clone(),
        service_connection_id: spec.service_connection_id.clone(),
        oidc_issuer_url: wire.oidc_issuer_url,
        oidc_extra_scopes: wire.oidc_extra_scopes,
        oidc_use_access_token: wire.oidc_use_access_token,
        oidc_auth_params: wire.oidc_auth_params,
        pop_claims: wire.pop_claims,
        oidc_certificate_authority: wire.oidc_certificate_authority,
        certificate_path: text(&remembered.certificate_path),
        federated_token_file: text(&remembered.federated_token_file),
        allow_forwarding: remembered.allow_forwarding,
    }
}

impl Broker {
    /// Rewrites the session index from memory now. A failure is logged and kept for status and
    /// doctor, not returned: the sessions work now and their refresh tokens are safe in the
    /// store; a restart finds them again through the store (see `get_token`).
    pub(super) async fn save_index(&self) {
        let Some(index) = self.index.clone() else {
            return;
        };
        let _writing = self.persist.writing.lock().await;
        self.persist.flush_pending.store(false, Ordering::SeqCst);
        let records: Vec<IndexedSession> = self
            .all_sessions()
            .iter()
            .map(|s| index_record(s))
            .collect();
        let outcome = match tokio::task::spawn_blocking(move || index.save(&records)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("writing the session index panicked: {e}")),
        };
        if let Some(error) = &outcome {
            tracing::error!("{error}");
        }
        *self
            .persist
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = outcome;
    }

    /// Where the session index is, if there is one.
    pub fn index_path(&self) -> Option<std::path::PathBuf> {
        self.index.as_ref().map(|i| i.path().to_path_buf())
    }

    /// Why the last index write failed, if it did.
    pub fn index_error(&self) -> Option<String> {
        self.persist
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks for an index rewrite a little later, together with any others asked for meanwhile.
    pub(super) fn save_index_soon(&self) {
        if self.index.is_none() || self.persist.flush_pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(me) = self.me() else { return };
        tokio::spawn(async move {
            tokio::time::sleep(INDEX_FLUSH_DELAY).await;
            if me.persist.flush_pending.load(Ordering::SeqCst) {
                me.save_index().await;
            }
        });
    }

    pub(super) async fn load_secret(
        &self,
        key: String,
    ) -> Result<Option<secrecy::SecretString>, BrokerError> {
        self.store_call(STORE_TIMEOUT, move |store| store.load(&key))
            .await
    }

    pub(super) async fn save_secret(
        &self,
        key: String,
        label: String,
        secret: secrecy::SecretString,
    ) -> Result<(), BrokerError> {
        self.store_call(STORE_TIMEOUT, move |store| {
            store.save(&key, &label, &secret)
        })
        .await
    }

    /// Removes every secret the session may have in the store. True if there was any.
    pub(super) async fn delete_secrets(&self, id: &SessionId) -> Result<bool, BrokerError> {
        let mut any = false;
        for kind in SecretKind::ALL {
            any |= self.delete_secret(kind.key(id)).await?;
        }
        Ok(any)
    }

    pub(super) async fn delete_secret(&self, key: String) -> Result<bool, BrokerError> {
        self.store_call(STORE_TIMEOUT, move |store| store.delete(&key))
            .await
    }

    /// Whether the store can keep a secret now: a test entry written, read back and removed,
    /// within `timeout`. Asked before a login prompts, so that nobody signs in for nothing.
    pub(super) async fn probe_store(&self, timeout: Duration) -> Result<(), BrokerError> {
        let key = format!("probe/{:016x}", rand::random::<u64>());
        self.store_call(timeout, move |store| {
            let probe = secrecy::SecretString::from("token-broker store check".to_string());
            store.save(&key, "token-broker: store check (removed at once)", &probe)?;
            let read = store.load(&key);
            store.delete(&key)?;
            match read? {
                Some(_) => Ok(()),
                None => Err(StoreError::Failed {
                    backend: store.backend().to_string(),
                    reason: "a test secret was stored but could not be read back".into(),
                }),
            }
        })
        .await
    }

    /// Asks the store a question that needs no unlock (is there such an entry?), within
    /// `timeout`: whether it answers at all, for the start-up line. `None` when it does.
    pub async fn store_reachable(&self, timeout: Duration) -> Option<String> {
        let key = "probe/reachable".to_string();
        self.store_call(timeout, move |store| store.load(&key))
            .await
            .err()
            .map(|e| e.to_string())
    }

    /// Why the last secret store call failed, if it did: what status and doctor say of the
    /// store.
    pub fn store_problem(&self) -> Option<String> {
        self.store_calls
            .last_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs a secret store call on a blocking thread (keyring APIs block on D-Bus or the
    /// Keychain), bounded by `timeout`, and records how it went.
    async fn store_call<T: Send + 'static>(
        &self,
        timeout: Duration,
        call: impl FnOnce(&dyn SecretStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, BrokerError> {
        let backend = self.store.backend().to_string();
        let calls = &self.store_calls;
        let stuck = calls.stuck.load(Ordering::SeqCst);
        let result = if stuck >= MOST_STUCK_CALLS {
            Err(StoreError::Unavailable {
                backend,
                reason: format!(
                    "it has not answered {stuck} calls yet (is the keyring daemon hung, or \
                     waiting for an unlock prompt?)"
                ),
            })
        } else {
            // RUNNING until the call returns or its caller gives up on it (ABANDONED, counted
            // as stuck until it does return).
            const RUNNING: u8 = 0;
            const ABANDONED: u8 = 1;
            const RETURNED: u8 = 2;
            let state = Arc::new(AtomicU8::new(RUNNING));
            let store = self.store.clone();
            let (call_state, counter) = (state.clone(), calls.stuck.clone());
            let task = tokio::task::spawn_blocking(move || {
                struct Returned(Arc<AtomicU8>, Arc<AtomicUsize>);
                impl Drop for Returned {
                    fn drop(&mut self) {
                        if self.0.swap(RETURNED, Ordering::SeqCst) == ABANDONED {
                            self.1.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                }
                let _returned = Returned(call_state, counter);
                call(store.as_ref())
            });
            match tokio::time::timeout(timeout, task).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => {
                    return Err(BrokerError::Internal(format!(
                        "secret store call panicked: {e}"
                    )));
                }
                Err(_) => {
                    calls.stuck.fetch_add(1, Ordering::SeqCst);
                    if state
                        .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
                        .is_err()
                    {
                        // It returned just now after all.
                        calls.stuck.fetch_sub(1, Ordering::SeqCst);
                    }
                    Err(StoreError::Unavailable {
                        backend,
                        reason: format!(
                            "it did not answer within {} s (is the keyring daemon hung, or \
                             waiting for an unlock prompt?)",
                            timeout.as_secs()
                        ),
                    })
                }
            }
        };
        *calls.last_problem.lock().unwrap_or_else(|p| p.into_inner()) =
            result.as_ref().err().map(ToString::to_string);
        result.map_err(BrokerError::Store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_times_are_clamped_where_read() {
        let now = SystemTime::now();
        assert_eq!(indexed_time(0, now), None);
        assert_eq!(indexed_time(-7, now), None);
        assert_eq!(indexed_time(i64::MAX, now), Some(now));
        assert_eq!(
            indexed_time(1_700_000_000, now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }
}
