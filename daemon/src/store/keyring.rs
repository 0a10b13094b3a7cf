//! The OS keyring through keyring-core: Secret Service on Linux and the BSDs, the Keychain on
//! macOS, Credential Manager on Windows (where a secret over one credential's 2,560 bytes is
//! split over several: [`super::chunked`]).
//!
//! The `keyring` crate's all-in-one `v1` API opens its platform store once per process and
//! keeps the failure forever if the keyring was not up yet; a daemon started at login often
//! comes up before the keyring does. So this module holds the platform store itself (the same
//! stores `keyring` uses, through keyring-core) and opens it again after a failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keyring_core::{CredentialStore, Entry, Error as KeyringError};
use secrecy::{ExposeSecret, SecretString};

use super::{SecretStore, StoreError, StoreKind};

/// The keyring `service` attribute of every entry token-broker writes.
const SERVICE: &str = "token-broker";

pub struct KeyringStore {
    store: Mutex<Option<Arc<CredentialStore>>>,
}

impl Default for KeyringStore {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyringStore {
    /// Does not touch the keyring yet: it is opened on first use, so that brokerd starts (and
    /// can explain the problem) even while the keyring is missing or locked.
    pub fn new() -> Self {
        KeyringStore {
            store: Mutex::new(None),
        }
    }

    fn store(&self) -> Result<Arc<CredentialStore>, KeyringError> {
        let mut slot = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        let store = open_platform_store()?;
        *slot = Some(store.clone());
        Ok(store)
    }

    /// Runs one keyring operation; a failure of the keyring itself drops the connection so
    /// that the next call opens a fresh one.
    fn with_entry<T>(
        &self,
        key: &str,
        modifiers: Option<&HashMap<&str, &str>>,
        op: impl FnOnce(&Entry) -> Result<T, KeyringError>,
    ) -> Result<T, KeyringError> {
        let store = self.store()?;
        let entry = match modifiers {
            Some(m) => Entry::new_in_store_with_modifiers(&store, SERVICE, key, m)?,
            None => Entry::new_in_store(&store, SERVICE, key)?,
        };
        let result = op(&entry);
        if matches!(result, Err(KeyringError::PlatformFailure(_))) {
            *self.store.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        result
    }

    /// Translates keyring errors, leaving out the bytes some of them carry.
    fn error(&self, key: &str, error: KeyringError) -> StoreError {
        let backend = self.backend().to_string();
        match error {
            KeyringError::NoStorageAccess(e) => StoreError::Locked {
                backend,
                reason: e.to_string(),
            },
            KeyringError::PlatformFailure(e) => StoreError::Unavailable {
                backend,
                reason: explain_unavailable(&e.to_string()),
            },
            KeyringError::NoDefaultStore => StoreError::Unavailable {
                backend,
                reason: "no credential store could be opened".into(),
            },
            KeyringError::BadEncoding(_) => StoreError::Corrupt {
                backend,
                key: key.into(),
                reason: "the stored value is not UTF-8".into(),
            },
            KeyringError::BadDataFormat(_, e) => StoreError::Corrupt {
                backend,
                key: key.into(),
                reason: e.to_string(),
            },
            KeyringError::Ambiguous(entries) => StoreError::Corrupt {
                backend,
                key: key.into(),
                reason: format!("{} entries match", entries.len()),
            },
            KeyringError::TooLong(what, limit) => StoreError::Failed {
                backend,
                reason: format!("{what} is longer than the store's limit of {limit}"),
            },
            other => StoreError::Failed {
                backend,
                reason: other.to_string(),
            },
        }
    }
}

/// The label a person sees for an item in their keyring's UI, where the store takes one.
/// Secret Service items have a label (Seahorse shows it). The Keychain store takes no such
/// modifier (it refuses unknown ones, so passing it would fail every write); Keychain Access
/// shows the service, `token-broker`, and the account, the key.
/// (Credential Manager's store takes no label either: it shows the target name.)
#[cfg(not(windows))]
fn label_modifier(label: &str) -> Option<HashMap<&'static str, &str>> {
    if cfg!(target_os = "macos") {
        None
    } else {
        Some(HashMap::from([("label", label)]))
    }
}

/// What the platform's error means for the user, first; its own words after.
fn explain_unavailable(raw: &str) -> String {
    let bus = std::env::var("DBUS_SESSION_BUS_ADDRESS").ok();
    if raw.contains("Failed to connect") || (raw.contains("address") && bus.is_none()) {
        let which = match &bus {
            Some(address) => format!("at {address}"),
            None => "(DBUS_SESSION_BUS_ADDRESS is not set)".to_string(),
        };
        return format!("no D-Bus session bus answers {which}: {raw}");
    }
    if raw.contains("org.freedesktop.secrets") || raw.contains("ServiceUnknown") {
        return format!(
            "no Secret Service provider (gnome-keyring, KeePassXC, KWallet) is on the session \
             bus: {raw}"
        );
    }
    raw.to_string()
}

#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
fn open_platform_store() -> Result<Arc<CredentialStore>, KeyringError> {
    let store: Arc<CredentialStore> = zbus_secret_service_keyring_store::Store::new()?;
    Ok(store)
}

#[cfg(target_os = "macos")]
fn open_platform_store() -> Result<Arc<CredentialStore>, KeyringError> {
    let store: Arc<CredentialStore> = apple_native_keyring_store::keychain::Store::new()?;
    Ok(store)
}

#[cfg(windows)]
fn open_platform_store() -> Result<Arc<CredentialStore>, KeyringError> {
    let store: Arc<CredentialStore> = windows_native_keyring_store::Store::new()?;
    Ok(store)
}

/// Credential Manager's most bytes in one credential (CRED_MAX_CREDENTIAL_BLOB_SIZE).
#[cfg(windows)]
const CREDENTIAL_BLOB_LIMIT: usize = 2560;

/// The credentials of one store, as [`super::chunked`] sees them.
#[cfg(windows)]
struct Credentials<'a>(&'a KeyringStore);

#[cfg(windows)]
impl super::chunked::Pieces for Credentials<'_> {
    type Error = KeyringError;

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, KeyringError> {
        match self.0.with_entry(name, None, |entry| entry.get_secret()) {
            Ok(value) => Ok(Some(value)),
            Err(KeyringError::NoEntry) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set(&self, name: &str, value: &[u8]) -> Result<(), KeyringError> {
        self.0
            .with_entry(name, None, |entry| entry.set_secret(value))
    }

    fn remove(&self, name: &str) -> Result<bool, KeyringError> {
        match self
            .0
            .with_entry(name, None, |entry| entry.delete_credential())
        {
            Ok(()) => Ok(true),
            Err(KeyringError::NoEntry) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(windows)]
impl KeyringStore {
    fn problem(&self, key: &str, problem: super::chunked::Problem<KeyringError>) -> StoreError {
        use super::chunked::Problem;
        match problem {
            Problem::Store(e) => self.error(key, e),
            Problem::TooLarge { bytes } => StoreError::Failed {
                backend: self.backend().to_string(),
                reason: format!(
                    "a secret of {bytes} bytes is more than {} credentials can hold",
                    super::chunked::MOST_PARTS
                ),
            },
            Problem::Corrupt(reason) => StoreError::Corrupt {
                backend: self.backend().to_string(),
                key: key.into(),
                reason,
            },
        }
    }
}

#[cfg(not(any(
    target_os = "macos",
    windows,
    all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    )
)))]
fn open_platform_store() -> Result<Arc<CredentialStore>, KeyringError> {
    Err(KeyringError::NotSupportedByStore(
        "no OS keyring is supported on this platform; run brokerd --store memory".into(),
    ))
}

impl SecretStore for KeyringStore {
    fn backend(&self) -> &str {
        if cfg!(target_os = "macos") {
            "macOS Keychain"
        } else if cfg!(windows) {
            "Windows Credential Manager"
        } else {
            "Secret Service"
        }
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Keyring
    }

    #[cfg(windows)]
    fn load(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        let Some(bytes) =
            super::chunked::load(&Credentials(self), key).map_err(|p| self.problem(key, p))?
        else {
            return Ok(None);
        };
        let bytes = zeroize::Zeroizing::new(bytes);
        let text = std::str::from_utf8(&bytes).map_err(|_| StoreError::Corrupt {
            backend: self.backend().to_string(),
            key: key.into(),
            reason: "the stored value is not UTF-8".into(),
        })?;
        Ok(Some(SecretString::from(text.to_string())))
    }

    #[cfg(windows)]
    fn save(&self, key: &str, _label: &str, secret: &SecretString) -> Result<(), StoreError> {
        super::chunked::save(
            &Credentials(self),
            key,
            secret.expose_secret().as_bytes(),
            CREDENTIAL_BLOB_LIMIT,
            rand::random(),
        )
        .map_err(|p| self.problem(key, p))
    }

    #[cfg(windows)]
    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        super::chunked::delete(&Credentials(self), key).map_err(|p| self.problem(key, p))
    }

    #[cfg(not(windows))]
    fn load(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        match self.with_entry(key, None, |entry| entry.get_password()) {
            Ok(secret) => Ok(Some(SecretString::from(secret))),
            Err(KeyringError::NoEntry) => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    #[cfg(not(windows))]
    fn save(&self, key: &str, label: &str, secret: &SecretString) -> Result<(), StoreError> {
        let modifiers = label_modifier(label);
        self.with_entry(key, modifiers.as_ref(), |entry| {
            entry.set_password(secret.expose_secret())
        })
        .map_err(|e| self.error(key, e))
    }

    #[cfg(not(windows))]
    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        match self.with_entry(key, None, |entry| entry.delete_credential()) {
            Ok(()) => Ok(true),
            Err(KeyringError::NoEntry) => Ok(false),
            Err(e) => Err(self.error(key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Keychain, for real: a 16 KB secret stored, read back whole and removed. Runs in the
    /// macOS CI job, on a temporary keychain it makes the default
    /// (`TOKEN_BROKER_KEYCHAIN_TESTS=1`); never against a developer's login keychain unasked.
    #[cfg(target_os = "macos")]
    #[test]
    fn the_keychain_keeps_a_16_kb_secret_whole() {
        use broker_tests::harness::require;
        if !require(
            "a throwaway default keychain (TOKEN_BROKER_KEYCHAIN_TESTS=1)",
            std::env::var_os("TOKEN_BROKER_KEYCHAIN_TESTS").is_some(),
        ) {
            return;
        }
        let store = KeyringStore::new();
        let key = format!("test/{}", std::process::id());
        let secret: String = (0..16 * 1024)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        store
            .save(
                &key,
                "token-broker test",
                &SecretString::from(secret.clone()),
            )
            .unwrap();
        let back = store.load(&key).unwrap().expect("stored");
        assert_eq!(back.expose_secret(), secret);
        assert!(store.delete(&key).unwrap());
        assert!(store.load(&key).unwrap().is_none());
    }

    #[cfg(not(windows))]
    #[test]
    fn items_are_labelled_only_where_the_store_takes_a_label() {
        let modifiers = label_modifier("token-broker refresh token for 0afd6a203d41");
        if cfg!(target_os = "macos") {
            assert!(modifiers.is_none());
        } else {
            assert_eq!(
                modifiers.unwrap().get("label").copied(),
                Some("token-broker refresh token for 0afd6a203d41")
            );
        }
    }
}
