//! Where the broker keeps what must outlive it: secrets in the OS keyring (the Secret Service
//! or, where none answers, the kernel keyring on Linux; the Keychain on macOS; for tests and
//! demos, memory) and the non-secret session index in a file.
//!
//! The store knows nothing of sessions or tokens; it keeps strings under keys. Calls block (the
//! keyring APIs are synchronous), so the broker makes them from blocking threads.

#[cfg(any(windows, test))]
mod chunked;
mod index;
#[cfg(target_os = "linux")]
mod kernel;
mod keyring;
mod memory;

pub use self::index::{IndexError, IndexedSession, SessionIndex, parse as parse_index};
#[cfg(target_os = "linux")]
pub use self::kernel::KernelKeyringStore;
pub use self::keyring::KeyringStore;
pub use self::memory::MemoryStore;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

/// A place for secrets, keyed by strings such as `refresh-token/<session id>`.
pub trait SecretStore: Send + Sync + 'static {
    /// A name people recognise: "Secret Service", "macOS Keychain", "memory".
    fn backend(&self) -> &str;

    fn kind(&self) -> StoreKind;

    /// What a user should know of where the secrets are, when it is not the obvious (the
    /// kernel keyring's "lost at reboot").
    fn caveat(&self) -> Option<&'static str> {
        None
    }

    fn load(&self, key: &str) -> Result<Option<SecretString>, StoreError>;

    /// Stores `secret`, replacing any earlier value in one step. `label` is what keyring UIs show.
    fn save(&self, key: &str, label: &str, secret: &SecretString) -> Result<(), StoreError>;

    /// Removes the entry; `Ok(false)` when there was none.
    fn delete(&self, key: &str) -> Result<bool, StoreError>;
}

/// What kind of place a store is, for what `brokerctl doctor` says of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// The OS keyring (Secret Service, macOS Keychain): secrets outlive brokerd.
    Keyring,
    /// brokerd's memory: secrets are gone when it stops.
    Memory,
}

/// No store can keep a secret here: every call fails with why, naming the ways out.
pub struct NoStore {
    reasons: String,
}

/// The name of [`NoStore`]'s backend.
pub const NO_STORE: &str = "no secret store";

impl NoStore {
    pub fn new(reasons: String) -> Self {
        NoStore { reasons }
    }

    fn refused(&self) -> StoreError {
        StoreError::Unavailable {
            backend: NO_STORE.into(),
            reason: self.reasons.clone(),
        }
    }
}

impl SecretStore for NoStore {
    fn backend(&self) -> &str {
        NO_STORE
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Keyring
    }

    fn load(&self, _key: &str) -> Result<Option<SecretString>, StoreError> {
        Err(self.refused())
    }

    fn save(&self, _key: &str, _label: &str, _secret: &SecretString) -> Result<(), StoreError> {
        Err(self.refused())
    }

    fn delete(&self, _key: &str) -> Result<bool, StoreError> {
        Err(self.refused())
    }
}

/// The OS keyring this machine offers, for `--store keyring`: the Keychain on macOS; on Linux
/// the Secret Service when it answers within `patience`, else the kernel keyring, else a
/// store that refuses with both reasons (and so refuses every sign-in before it prompts).
pub fn os_keyring(patience: Duration) -> Arc<dyn SecretStore> {
    let secret_service = Arc::new(KeyringStore::new());
    if cfg!(not(target_os = "linux")) {
        return secret_service;
    }
    let probe = secret_service.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(probe.load("probe/answers"));
    });
    let unanswered = match rx.recv_timeout(patience) {
        Ok(Ok(_)) => return secret_service,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!(
            "Secret Service did not answer within {} s",
            patience.as_secs()
        ),
    };
    fallback(unanswered)
}

#[cfg(target_os = "linux")]
fn fallback(secret_service: String) -> Arc<dyn SecretStore> {
    match KernelKeyringStore::open() {
        Ok(kernel) => {
            tracing::info!(
                "no Secret Service ({secret_service}): keeping secrets in the kernel keyring \
                 ({})",
                kernel::CAVEAT
            );
            Arc::new(kernel)
        }
        Err(e) => Arc::new(NoStore::new(format!("{secret_service}; {e}"))),
    }
}

#[cfg(not(target_os = "linux"))]
fn fallback(secret_service: String) -> Arc<dyn SecretStore> {
    Arc::new(NoStore::new(secret_service))
}

/// A secret store failure. It names the backend and never carries secret bytes.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("{backend} is not available: {reason}")]
    Unavailable { backend: String, reason: String },
    #[error("{backend} is locked or refused access: {reason}")]
    Locked { backend: String, reason: String },
    #[error("{backend} holds an unreadable entry for {key}: {reason}")]
    Corrupt {
        backend: String,
        key: String,
        reason: String,
    },
    #[error("{backend} failed: {reason}")]
    Failed { backend: String, reason: String },
}
