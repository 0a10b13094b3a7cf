//! The checks behind `brokerctl doctor`.
//!
//! Those about brokerd's own world run where brokerd runs, since that is where they matter: its
//! secret store, the proxy and trust store in its environment, and the identity providers as
//! its HTTP client sees them ([`daemon_side`], for the `Diagnose` RPC; brokerctl runs the same
//! functions itself when brokerd is not running). Those about the user's setup (the socket
//! directory, the user service, the kubeconfig) run in brokerctl.
//!
//! A check never fixes anything: it says what it found and what to do. None of them puts a
//! secret in what it says (proxy credentials are masked; the test secret is random and never
//! printed).

pub mod kubeconfigs;
pub mod network;
mod secret_service;
pub mod secret_store;
pub mod setup;

pub use kubeconfigs::kubeconfig_users;

use std::sync::Arc;

use crate::clock::Clock;
use crate::identity::cloud::{Authority, AuthorityError};
use crate::store::SecretStore;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

/// One finding: what was checked, how it went, and what to do when it did not go well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Stable, for scripts: `secret_store`, `proxy`, `trust_store`, `idp`, `clock`, ...
    pub id: String,
    pub level: Level,
    pub summary: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(id: &'static str, summary: impl Into<String>) -> Self {
        Check {
            id: id.to_string(),
            level: Level::Pass,
            summary: summary.into(),
            fix: None,
        }
    }

    pub fn warn(id: &'static str, summary: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            id: id.to_string(),
            level: Level::Warn,
            summary: summary.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(id: &'static str, summary: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            id: id.to_string(),
            level: Level::Fail,
            summary: summary.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Reads an environment variable; tests give a map instead of the process environment.
pub type Env<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// The authorities to reach: those asked for, then those of the sessions; when there are
/// none, AZURE_AUTHORITY_HOST's or the public cloud's. Each once.
pub fn authorities(
    requested: &[String],
    of_sessions: impl IntoIterator<Item = Authority>,
    env: Env<'_>,
) -> Result<Vec<Authority>, AuthorityError> {
    let mut all = requested
        .iter()
        .map(|host| Authority::from_host(host))
        .collect::<Result<Vec<_>, _>>()?;
    all.extend(of_sessions);
    if all.is_empty() {
        all.push(Authority::resolve(
            "",
            &env("AZURE_AUTHORITY_HOST").unwrap_or_default(),
        )?);
    }
    let mut seen = std::collections::HashSet::new();
    all.retain(|a| seen.insert(a.clone()));
    Ok(all)
}

/// Everything brokerd's side of doctor checks, in the order people read it.
/// Whether this process's memory is out of reach of core files and debuggers: brokerd's, when
/// it answers `Diagnose` (there is no such check when brokerd is not running).
#[cfg(unix)]
pub fn this_process_protection() -> Check {
    process_protection(crate::hardening::dumpable(), crate::hardening::core_limit())
}

/// Windows: brokerd applies no protection there (`hardening.rs`); said as it is.
#[cfg(windows)]
pub fn this_process_protection() -> Check {
    Check::warn(
        "process_protection",
        crate::hardening::UNPROTECTED_ON_WINDOWS,
        "none within brokerd; run only programs you trust under this account",
    )
}

#[cfg_attr(windows, allow(dead_code))]
fn process_protection(dumpable: Option<bool>, core_limit: u64) -> Check {
    const ID: &str = "process_protection";
    let fix = "brokerd sets this itself at start; its log says why it could not";
    match (dumpable, core_limit) {
        (Some(true), _) => Check::warn(
            ID,
            "brokerd can be dumped or traced by other processes of this user",
            fix,
        ),
        (_, limit) if limit > 0 => Check::warn(
            ID,
            format!("brokerd may write core files (limit {limit} bytes)"),
            fix,
        ),
        (Some(false), _) => Check::pass(ID, "brokerd's memory: no core dumps, no debugger attach"),
        (None, _) => Check::pass(ID, "brokerd's memory: no core dumps"),
    }
}

pub async fn daemon_side(
    store: Arc<dyn SecretStore>,
    clock: &dyn Clock,
    authorities: &[Authority],
    env: Env<'_>,
) -> Vec<Check> {
    let mut checks = secret_store::check(store).await;
    checks.push(network::proxy(env));
    checks.push(network::trust_store(env));
    checks.extend(network::identity_providers(authorities, clock).await);
    checks
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn process_protection_warns_unless_both_hold() {
        assert_eq!(process_protection(Some(false), 0).level, Level::Pass);
        assert_eq!(process_protection(None, 0).level, Level::Pass);
        assert_eq!(process_protection(Some(true), 0).level, Level::Warn);
        let core = process_protection(Some(false), 4096);
        assert_eq!(core.level, Level::Warn);
        assert!(core.summary.contains("4096"), "{}", core.summary);
    }
}
