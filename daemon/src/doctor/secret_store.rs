//! Is the secret store there, open, lasting, and does it give back what it was given?

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};

use super::{Check, secret_service};
use crate::store::{SecretStore, StoreError, StoreKind};

const ID: &str = "secret_store";

/// A keyring that waits on an unlock prompt nobody answers would stall doctor forever.
const PATIENCE: Duration = Duration::from_secs(15);

/// The key of the test secret: never one of a session's (those have a `kind/` prefix).
const PROBE_KEY: &str = "doctor-probe";

pub async fn check(store: Arc<dyn SecretStore>) -> Vec<Check> {
    let mut checks = Vec::new();
    if store.kind() == StoreKind::Memory {
        checks.push(Check::warn(
            ID,
            "brokerd keeps refresh tokens in memory (--store memory): every session needs a new \
             login after brokerd restarts",
            "run brokerd without `--store memory` to keep them in the OS keyring",
        ));
    } else if store.backend() == crate::store::NO_STORE {
        // What every call of that store says: both stores' reasons.
        let reasons = match store.load(PROBE_KEY) {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        checks.push(Check::fail(
            "keyring",
            format!("no store can keep a refresh token here, so no one can sign in: {reasons}"),
            "sign in on a machine with a keyring and forward its brokerd here (`brokerctl \
             forward ssh THIS-HOST` there); or allow keyctl (a container's seccomp profile); or \
             start a Secret Service; or run brokerd --store memory (forgets every login when it \
             stops)",
        ));
        return checks;
    } else if let Some(caveat) = store.caveat() {
        checks.push(Check::warn(
            "keyring",
            format!(
                "{}: {caveat}; a reboot means signing in again",
                store.backend()
            ),
            "to keep sign-ins across reboots, run brokerd where a Secret Service answers (a \
             desktop session), or forward brokerd from a machine that has one (brokerctl \
             forward ssh)",
        ));
    } else if let Some(found) = diagnose_platform().await {
        let stop = found.level == super::Level::Fail;
        checks.push(found);
        if stop {
            // Writing to a missing or locked keyring only repeats the failure (or waits on an
            // unlock prompt).
            return checks;
        }
    }
    checks.push(round_trip(store).await);
    checks
}

/// The platform's own account of the keyring, where there is one to ask (Secret Service).
async fn diagnose_platform() -> Option<Check> {
    let run = tokio::task::spawn_blocking(secret_service::diagnose);
    match tokio::time::timeout(PATIENCE, run).await {
        Ok(Ok(found)) => found,
        Ok(Err(panic)) => Some(Check::fail(
            ID,
            format!("the keyring check crashed: {panic}"),
            "report this as a bug",
        )),
        Err(_) => Some(not_answering()),
    }
}

fn not_answering() -> Check {
    Check::fail(
        ID,
        format!(
            "the keyring did not answer within {} s (it may be waiting on an unlock prompt)",
            PATIENCE.as_secs()
        ),
        "unlock the keyring in your desktop session (Seahorse, Keychain Access), then try again",
    )
}

/// Stores a random test secret, reads it back and removes it.
async fn round_trip(store: Arc<dyn SecretStore>) -> Check {
    let backend = store.backend().to_string();
    let probe = SecretString::from(format!("{:032x}", rand::rng().random::<u128>()));
    let run = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
        store.save(
            PROBE_KEY,
            "token-broker doctor test secret (safe to delete)",
            &probe,
        )?;
        let back = store.load(PROBE_KEY);
        // Removed whatever the read said, so that no test secret lingers.
        let removed = store.delete(PROBE_KEY);
        let same = back?.is_some_and(|b| b.expose_secret() == probe.expose_secret());
        removed?;
        Ok(same)
    });
    match tokio::time::timeout(PATIENCE, run).await {
        Ok(Ok(Ok(true))) => Check::pass(
            ID,
            format!("{backend}: a test secret was stored, read back and removed"),
        ),
        Ok(Ok(Ok(false))) => Check::fail(
            ID,
            format!("{backend} gave back something other than the test secret it was given"),
            "the keyring is not keeping what it is given: check its provider, or recreate the \
             keyring",
        ),
        Ok(Ok(Err(error))) => Check::fail(ID, error.to_string(), store_fix(&error)),
        Ok(Err(panic)) => Check::fail(
            ID,
            format!("the keyring check crashed: {panic}"),
            "report this as a bug",
        ),
        Err(_) => not_answering(),
    }
}

fn store_fix(error: &StoreError) -> &'static str {
    match error {
        StoreError::Locked { .. } => {
            "unlock the keyring in your desktop session (Seahorse, Keychain Access)"
        }
        StoreError::Unavailable { .. } => {
            "start a keyring: gnome-keyring, KeePassXC (Secret Service integration) or KWallet \
             on Linux; on a headless machine see the README's keyring section"
        }
        StoreError::Corrupt { .. } | StoreError::Failed { .. } => {
            "check the keyring's own logs; `brokerd --store memory` works without one (secrets \
             then last until brokerd stops)"
        }
    }
}
