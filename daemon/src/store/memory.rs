//! Secrets in process memory: for tests and demos. Everything is forgotten when brokerd exits.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::SecretString;

use super::{SecretStore, StoreError, StoreKind};

#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, SecretString>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, SecretString>> {
        // A panic elsewhere cannot leave a HashMap half-updated in a way that matters here.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SecretStore for MemoryStore {
    fn backend(&self) -> &str {
        "memory"
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn load(&self, key: &str) -> Result<Option<SecretString>, StoreError> {
        Ok(self.entries().get(key).cloned())
    }

    fn save(&self, key: &str, _label: &str, secret: &SecretString) -> Result<(), StoreError> {
        self.entries().insert(key.to_string(), secret.clone());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.entries().remove(key).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn save_replaces_and_delete_reports_presence() {
        let store = MemoryStore::new();
        assert!(store.load("k").unwrap().is_none());
        store.save("k", "l", &"one".into()).unwrap();
        store.save("k", "l", &"two".into()).unwrap();
        assert_eq!(store.load("k").unwrap().unwrap().expose_secret(), "two");
        assert!(store.delete("k").unwrap());
        assert!(!store.delete("k").unwrap());
    }
}
