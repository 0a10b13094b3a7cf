//! What the broker keeps outside memory: refresh tokens in the secret store, and the session
//! index (no secrets) that lets a restarted brokerd find its sessions.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Broker;
use super::error::BrokerError;
use super::session::{Meta, Session};
use crate::clock;
use crate::spec::{LoginMode, SessionId, SessionSpec, SpecInput};
use crate::store::{IndexedSession, SessionIndex, StoreError};

/// Refreshes happen all day; their index updates (the last refresh time, for keepalives after a
/// restart) are written together, at most this often.
const INDEX_FLUSH_DELAY: Duration = Duration::from_secs(5);

/// The secrets a session may keep in the secret store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SecretKind {
    RefreshToken,
    ClientSecret,
    CertificatePassword,
    Password,
}

impl SecretKind {
    pub const ALL: [SecretKind; 4] = [
        SecretKind::RefreshToken,
        SecretKind::ClientSecret,
        SecretKind::CertificatePassword,
        SecretKind::Password,
    ];

    /// The secret store key: `refresh-token/<session id>` and so on.
    pub fn key(self, id: &SessionId) -> String {
        let kind = match self {
            SecretKind::RefreshToken => "refresh-token",
            SecretKind::ClientSecret => "client-secret",
            SecretKind::CertificatePassword => "certificate-password",
            SecretKind::Password => "password",
        };
        format!("{kind}/{id}")
    }
}

/// Serialises index rewrites, and coalesces the ones refreshes ask for.
#[derive(Default)]
pub(super) struct IndexWriter {
    writing: tokio::sync::Mutex<()>,
    flush_pending: AtomicBool,
}

/// The sessions an index file records. Records that no longer make sense are skipped with a
/// warning; their refresh tokens stay in the keyring.
pub(super) fn load_sessions(index: &SessionIndex) -> HashMap<SessionId, Arc<Session>> {
    let records = match index.load() {
        Ok(records) => records,
        Err(e) => {
            tracing::error!("{e}; starting with no sessions");
            return HashMap::new();
        }
    };
    let mut sessions = HashMap::new();
    for record in records {
        match session_from_index(&record) {
            Ok(session) => {
                sessions.insert(session.id.clone(), Arc::new(session));
            }
            Err(e) => tracing::warn!("skipping session {} of the index: {e}", record.id),
        }
    }
    sessions
}

fn session_from_index(record: &IndexedSession) -> Result<Session, BrokerError> {
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
    })?;
    if spec.id().as_str() != record.id {
        return Err(BrokerError::Internal(format!(
            "its parameters now name session {}",
            spec.id()
        )));
    }
    let time = |secs: i64| (secs > 0).then(|| clock::from_unix_seconds(secs));
    let path = |p: &str| (!p.is_empty()).then(|| std::path::PathBuf::from(p));
    let meta = Meta {
        account: record.account.clone(),
        logged_in_at: time(record.logged_in_at),
        last_refresh: time(record.last_refresh_at),
        certificate_path: path(&record.certificate_path),
        federated_token_file: path(&record.federated_token_file),
        ..Meta::default()
    };
    Ok(Session::new(spec, meta))
}

fn index_record(session: &Session) -> IndexedSession {
    let meta = session.meta();
    let spec = &session.spec;
    let secs = |t: Option<std::time::SystemTime>| t.map(clock::unix_seconds).unwrap_or(0);
    let text = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    IndexedSession {
        id: session.id.to_string(),
        environment: spec.environment.clone(),
        authority_host: spec.authority_host.clone(),
        tenant_id: spec.tenant_id.clone(),
        client_id: spec.client_id.clone(),
        server_id: spec.server_id.clone(),
        login_mode: spec.login_mode.name().to_string(),
        account: meta.account.clone(),
        logged_in_at: secs(meta.logged_in_at),
        last_refresh_at: secs(meta.last_refresh),
        username: spec.username.clone(),
        identity_resource_id: spec.identity_resource_id.clone(),
        certificate_path: text(&meta.certificate_path),
        federated_token_file: text(&meta.federated_token_file),
    }
}

impl Broker {
    /// Rewrites the session index from memory now. A failure is logged, not returned: the
    /// sessions work now and their refresh tokens are safe in the store; only a restart would
    /// miss them.
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
        match tokio::task::spawn_blocking(move || index.save(&records)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("writing the session index panicked: {e}"),
        }
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
        let store = self.store.clone();
        blocking(move || store.load(&key)).await
    }

    pub(super) async fn save_secret(
        &self,
        key: String,
        label: String,
        secret: secrecy::SecretString,
    ) -> Result<(), BrokerError> {
        let store = self.store.clone();
        blocking(move || store.save(&key, &label, &secret)).await
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
