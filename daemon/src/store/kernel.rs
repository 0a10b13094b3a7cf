//! The Linux kernel keyring, where no Secret Service answers: headless servers, SSH hosts,
//! containers, WSL without a desktop.
//!
//! Secrets go to the user's persistent keyring (persistent-keyring(7)), which the kernel keeps
//! per uid: it survives logouts and brokerd restarts, not reboots, and the kernel drops it
//! after `/proc/sys/kernel/keys/persistent_keyring_expiry` (three days by default) without
//! anyone asking for it; brokerd asks at every call, and refreshes tokens far more often. Each
//! secret is a `user` key, `token-broker:<key>`, readable only by processes that possess it
//! (brokerd links the persistent keyring into its process keyring), so other processes of the
//! same user must ask the kernel for the keyring first, and other users cannot at all.
//!
//! Limits, said wherever the store is named: a key holds at most 32,767 bytes, a user's keys
//! share a quota (`/proc/sys/kernel/keys/maxbytes`, 20,000 bytes for users other than root on
//! most kernels), and container runtimes' default seccomp profiles block the keyctl calls.

use linux_keyutils::{KeyError, KeyRing, KeyRingIdentifier};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{SecretStore, StoreError, StoreKind};

const BACKEND: &str = "kernel keyring";

/// What a user should know of this store, in a few words.
pub const CAVEAT: &str = "the user's persistent keyring: survives logouts and restarts of \
                          brokerd, not reboots";

/// Every key's description starts with this.
const PREFIX: &str = "token-broker:";

/// A `user` key's largest payload.
const MAX_PAYLOAD: usize = 32_767;

pub struct KernelKeyringStore;

impl KernelKeyringStore {
    /// The store, once the kernel has answered for the persistent keyring: a kernel without
    /// keyrings, or a seccomp profile that blocks keyctl, is told apart here.
    pub fn open() -> Result<Self, StoreError> {
        persistent()?;
        Ok(KernelKeyringStore)
    }
}

/// The user's persistent keyring, linked into (and so possessed by) this process.
fn persistent() -> Result<KeyRing, StoreError> {
    KeyRing::from_special_id(KeyRingIdentifier::Process, true)
        .and_then(|_| KeyRing::get_persistent(KeyRingIdentifier::Process))
        .map_err(|e| explain(e, None))
}

/// A kernel error as the user needs to hear it; never a secret's bytes.
fn explain(error: KeyError, key: Option<&str>) -> StoreError {
    let backend = BACKEND.to_string();
    match error {
        KeyError::PermissionDenied | KeyError::OperationNotSupported => StoreError::Unavailable {
            backend,
            reason: format!(
                "the kernel refused keyctl ({error:?}); a container's seccomp profile blocks it \
                 (Docker's default does)"
            ),
        },
        KeyError::Unknown(code) if code == libc::ENOSYS => StoreError::Unavailable {
            backend,
            reason: "this kernel has no keyrings (ENOSYS), or a seccomp profile hides them".into(),
        },
        KeyError::QuotaExceeded => StoreError::Failed {
            backend,
            reason: format!(
                "this user's key quota is full ({}); raise kernel.keys.maxbytes, or log out of \
                 sessions you no longer use",
                quota()
            ),
        },
        KeyError::AccessDenied => StoreError::Locked {
            backend,
            reason: format!(
                "the kernel denied access{}",
                key.map(|k| format!(" to {k}")).unwrap_or_default()
            ),
        },
        other => StoreError::Failed {
            backend,
            reason: format!("keyctl failed: {other:?}"),
        },
    }
}

/// The quota's figures, as /proc/key-users and /proc/sys/kernel/keys say, for error messages.
fn quota() -> String {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/keys/{name}"))
            .ok()
            .map(|v| v.trim().to_string())
    };
    match (read("maxbytes"), read("maxkeys")) {
        (Some(bytes), Some(keys)) => format!(
            "kernel.keys.maxbytes {bytes} bytes, maxkeys {keys} keys for users other than root"
        ),
        _ => "see /proc/key-users".to_string(),
    }
}

impl SecretStore for KernelKeyringStore {
    fn backend(&self) -> &str {
        BACKEND
    }

    fn caveat(&self) -> Option<&'static str> {
        Some(CAVEAT)
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Keyring
    }

    fn load(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        let ring = persistent()?;
        let found = match ring.search(&format!("{PREFIX}{key}")) {
            Ok(found) => found,
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => {
                return Ok(None);
            }
            Err(e) => return Err(explain(e, Some(key))),
        };
        let mut buffer = Zeroizing::new(vec![0u8; MAX_PAYLOAD + 1]);
        let length = found
            .read(&mut *buffer)
            .map_err(|e| explain(e, Some(key)))?;
        let bytes = buffer.get(..length).unwrap_or_default();
        let text = std::str::from_utf8(bytes).map_err(|_| StoreError::Corrupt {
            backend: BACKEND.into(),
            key: key.into(),
            reason: "the stored value is not UTF-8".into(),
        })?;
        Ok(Some(SecretString::from(text.to_string())))
    }

    fn save(&self, key: &str, _label: &str, secret: &SecretString) -> Result<(), StoreError> {
        let payload = secret.expose_secret().as_bytes();
        if payload.len() > MAX_PAYLOAD {
            return Err(StoreError::Failed {
                backend: BACKEND.into(),
                reason: format!(
                    "the secret for {key} is {} bytes; a kernel key holds at most {MAX_PAYLOAD}",
                    payload.len()
                ),
            });
        }
        // add_key replaces the payload of a key with the same description in one step.
        persistent()?
            .add_key(&format!("{PREFIX}{key}"), payload)
            .map(|_| ())
            .map_err(|e| explain(e, Some(key)))
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let ring = persistent()?;
        match ring.search(&format!("{PREFIX}{key}")) {
            Ok(found) => found
                .invalidate()
                .map(|()| true)
                .map_err(|e| explain(e, Some(key))),
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => {
                Ok(false)
            }
            Err(e) => Err(explain(e, Some(key))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real kernel keyring, where the kernel lets this process use it.
    #[test]
    fn a_secret_is_stored_read_back_replaced_and_removed() {
        let store = KernelKeyringStore::open();
        if !broker_tests::harness::require("the kernel keyring (keyctl)", store.is_ok()) {
            return;
        }
        let Ok(store) = store else { return };
        let key = format!("test/{}-{}", std::process::id(), rand::random::<u32>());
        assert!(store.load(&key).unwrap().is_none());
        let big: String = "r".repeat(16 * 1024);
        store
            .save(&key, "x", &SecretString::from(big.clone()))
            .unwrap();
        assert_eq!(store.load(&key).unwrap().unwrap().expose_secret(), big);
        store
            .save(&key, "x", &SecretString::from("second"))
            .unwrap();
        assert_eq!(store.load(&key).unwrap().unwrap().expose_secret(), "second");
        assert!(store.delete(&key).unwrap());
        assert!(store.load(&key).unwrap().is_none());
        assert!(!store.delete(&key).unwrap());
        let too_big = SecretString::from("x".repeat(MAX_PAYLOAD + 1));
        let refused = store.save(&key, "x", &too_big).unwrap_err().to_string();
        assert!(refused.contains("at most 32767"), "{refused}");
    }
}
