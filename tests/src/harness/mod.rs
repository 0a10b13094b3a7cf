//! Fixtures for end-to-end tests: the project's binaries ([`build`]), a sandbox HOME with
//! private XDG directories and a socket path ([`sandbox`]), brokerd and brokerctl as real
//! processes ([`process`]), the real Secret Service ([`keyring`]), client certificates
//! ([`certs`]), the steps and assertions tests share ([`flows`]), and the rule for tests that
//! need system pieces (kubectl, D-Bus, gnome-keyring, root).
//!
//! Waits use readiness signals (brokerd's `ready` line, a child's exit, a line of output), each
//! bounded by a generous deadline so that a broken build fails instead of hanging.

mod build;
mod certs;
mod flows;
mod keyring;
#[cfg(target_os = "linux")]
pub mod notifications;
mod process;
mod sandbox;
#[cfg(target_os = "linux")]
pub mod seccomp;
pub mod ssh;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

pub use build::{Binaries, binaries, cargo, profile};
pub use certs::ClientCert;
pub use flows::*;
pub use keyring::{KeyringSetup, SecretService};
pub use process::{CtlRun, Daemon, wait_for_exit};
pub use sandbox::{KubeUser, Sandbox, files_containing, files_under};

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub const EXEC_V1: &str = "client.authentication.k8s.io/v1";
pub const EXEC_V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// True when system tests must run: a missing piece is then a failure, not a skip.
pub fn system_tests_required() -> bool {
    std::env::var("TOKEN_BROKER_REQUIRE_SYSTEM_TESTS").is_ok_and(|v| v == "1")
}

/// Whether the test may go on, given that `what` is `available`. Prints a visible SKIPPED line
/// when it is not, or fails when system tests are required.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if system_tests_required() {
        panic!("{what} is required (TOKEN_BROKER_REQUIRE_SYSTEM_TESTS=1) but not available");
    }
    skipped(&format!(
        "{what} is not available; set TOKEN_BROKER_REQUIRE_SYSTEM_TESTS=1 to fail instead"
    ));
    false
}

/// Says that the running test skips its checks, and why: straight to the process's stderr,
/// past the test harness's capture of `eprintln!`, so that `cargo test` shows every skip
/// without `--nocapture`.
pub fn skipped(why: &str) {
    use std::io::Write;
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("SKIPPED: {test}: {why}\n").as_bytes());
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join(program);
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

pub fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

/// Runs a future to completion on a fresh single-threaded runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}
