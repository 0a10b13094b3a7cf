//! Which kubeconfig users still call kubelogin (or the legacy azure auth-provider) instead of
//! broker-shim. Read-only: the same conversion `brokerctl kubeconfig convert` runs, never
//! written.

use std::path::{Path, PathBuf};

use super::{Check, Env};
use crate::kubeconfig::{ConvertOptions, KubeconfigError, convert};

/// `explicit` is the `--kubeconfig` the user gave, kept in the fix so that it converts the file
/// that was checked.
pub fn kubeconfig_users(files: &[PathBuf], explicit: Option<&Path>, env: Env<'_>) -> Check {
    let options = ConvertOptions {
        context: None,
        command: "broker-shim",
        env,
    };
    let mut ours = 0;
    let mut theirs = Vec::new();
    let mut read = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Check::fail(
                    "kubeconfig",
                    format!("cannot read {}: {e}", path.display()),
                    "check the file's permissions",
                );
            }
        };
        let conversion = match convert(&text, &options) {
            Ok(conversion) => conversion,
            Err(e @ (KubeconfigError::Yaml(_) | KubeconfigError::NotAKubeconfig)) => {
                return Check::fail(
                    "kubeconfig",
                    format!("{}: {e}", path.display()),
                    "fix the file: kubectl cannot read it either",
                );
            }
            Err(e) => {
                return Check::fail(
                    "kubeconfig",
                    format!("{}: {e}", path.display()),
                    "fix the file",
                );
            }
        };
        read.push(path.display().to_string());
        ours += conversion.already.len();
        theirs.extend(
            conversion
                .converted
                .iter()
                .map(|c| format!("{} ({})", c.user, c.origin)),
        );
        theirs.extend(
            conversion
                .skipped
                .iter()
                .map(|s| format!("{} (kubelogin, cannot convert: {})", s.user, s.why)),
        );
    }
    if read.is_empty() {
        return Check::pass(
            "kubeconfig",
            format!(
                "no kubeconfig at {}",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if theirs.is_empty() {
        return Check::pass(
            "kubeconfig",
            format!(
                "{ours} user(s) of {} run broker-shim; none calls kubelogin",
                read.join(", ")
            ),
        );
    }
    Check::warn(
        "kubeconfig",
        format!(
            "{} user(s) of {} still call kubelogin: {}",
            theirs.len(),
            read.join(", "),
            theirs.join(", ")
        ),
        format!(
            "brokerctl kubeconfig convert{} (add --dry-run to see the change first)",
            kubeconfig_flag(explicit)
        ),
    )
}

/// ` --kubeconfig PATH` when the user named a file, so that a suggested command acts on it.
pub fn kubeconfig_flag(explicit: Option<&Path>) -> String {
    explicit
        .map(|p| {
            format!(
                " --kubeconfig {}",
                broker_proto::shell_quote(&p.display().to_string())
            )
        })
        .unwrap_or_default()
}
