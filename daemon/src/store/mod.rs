//! Where the broker keeps what must outlive it: secrets in the OS keyring (or, for tests and
//! demos, in memory) and the non-secret session index in a file.
//!
//! The store knows nothing of sessions or tokens; it keeps strings under keys. Calls block (the
//! keyring APIs are synchronous), so the broker makes them from blocking threads.

mod index;
mod keyring;
mod memory;

pub use self::index::{IndexError, IndexedSession, SessionIndex, parse as parse_index};
pub use self::keyring::KeyringStore;
pub use self::memory::MemoryStore;

use secrecy::SecretString;

/// A place for secrets, keyed by strings such as `refresh-token/<session id>`.
pub trait SecretStore: Send + Sync + 'static {
    /// A name people recognise: "Secret Service", "macOS Keychain", "memory".
    fn backend(&self) -> &str;

    fn kind(&self) -> StoreKind;

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
