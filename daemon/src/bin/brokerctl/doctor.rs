//! `brokerctl doctor`: every check, its fix, and an exit status that is the worst result.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use broker_proto::v1;
use brokerd::clock::SystemClock;
use brokerd::doctor::{self, Check, Level};
use brokerd::store::KeyringStore;
use clap::Args;
use serde_json::json;

use crate::output::{Format, Paint, outln};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Reach this authority host too (repeatable) [default: those of brokerd's sessions, else
    /// AZURE_AUTHORITY_HOST's, else the public cloud's]
    #[arg(long = "authority-host", value_name = "URL")]
    authority_hosts: Vec<String>,
    /// The kubeconfig to look through [default: every file of $KUBECONFIG, else ~/.kube/config]
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    output: Format,
}

pub async fn run(args: DoctorArgs, socket: &Path) -> Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    let mut checks = Vec::new();
    let (daemon, remote) = daemon(socket, &args.authority_hosts).await;
    checks.push(daemon);
    #[cfg(unix)]
    checks.push(doctor::setup::socket_dir(
        socket,
        broker_proto::current_uid(),
    ));
    #[cfg(windows)]
    checks.push(doctor::setup::socket_dir(socket));
    match remote {
        Some(found) => checks.extend(found),
        // Nobody to ask: check what a brokerd started from here would meet.
        None => match doctor::authorities(&args.authority_hosts, [], &env) {
            Ok(authorities) => checks.extend(
                doctor::daemon_side(
                    Arc::new(KeyringStore::new()),
                    &SystemClock,
                    &authorities,
                    &env,
                )
                .await,
            ),
            Err(e) => anyhow::bail!("--authority-host: {e}"),
        },
    }
    checks.push(doctor::setup::user_service(&env));
    match brokerd::kubeconfig::kubeconfig_files(args.kubeconfig.as_deref(), &|name| {
        std::env::var_os(name)
    }) {
        Some(files) => checks.push(doctor::kubeconfig_users(
            &files,
            args.kubeconfig.as_deref(),
            &env,
        )),
        None => checks.push(Check::warn(
            "kubeconfig",
            "no home directory, so no kubeconfig to look through",
            "set HOME, or pass --kubeconfig",
        )),
    }

    let worst = checks.iter().map(|c| c.level).max().unwrap_or(Level::Pass);
    match args.output {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&to_json(&checks, worst))?
        ),
        Format::Text => print_text(&checks),
    }
    Ok(ExitCode::from(match worst {
        Level::Pass => 0,
        Level::Warn => 1,
        Level::Fail => 2,
    }))
}

/// Reaches brokerd and asks for its side of the checks. The checks are `None` when brokerd
/// did not answer.
async fn daemon(socket: &Path, authority_hosts: &[String]) -> (Check, Option<Vec<Check>>) {
    let mut client = match broker_proto::connect(socket).await {
        Ok(client) => client,
        Err(e) => {
            return (
                Check::fail(
                    "daemon",
                    format!("{e}; the checks below ran in brokerctl's environment instead"),
                    "install it as a user service (`brokerctl service install`); other \
                     brokerctl commands and broker-shim also start it on demand",
                ),
                None,
            );
        }
    };
    let status = match client.status(v1::StatusRequest {}).await {
        Ok(status) => status.into_inner(),
        Err(status) => {
            return (
                Check::fail(
                    "daemon",
                    format!(
                        "brokerd on {} refused: {}",
                        socket.display(),
                        broker_proto::error_message(&status)
                    ),
                    "make sure the socket is your own brokerd's (TOKEN_BROKER_SOCKET, --socket)",
                ),
                None,
            );
        }
    };
    let daemon = version_check(&status, socket, env!("CARGO_PKG_VERSION"));
    let request = v1::DiagnoseRequest {
        authority_hosts: authority_hosts.to_vec(),
    };
    let remote = match client.diagnose(request).await {
        Ok(answer) => answer
            .into_inner()
            .checks
            .into_iter()
            .map(from_wire)
            .collect(),
        Err(status) => vec![Check::fail(
            "daemon",
            format!(
                "brokerd could not run its checks: {}",
                broker_proto::error_message(&status)
            ),
            "see brokerd's log",
        )],
    };
    (daemon, Some(remote))
}

/// A daemon of another version than brokerctl's (an upgrade without a restart) may lack what
/// brokerctl asks for, or behave as the old version did.
fn version_check(status: &v1::StatusResponse, socket: &Path, mine: &str) -> Check {
    if status.version == mine {
        Check::pass(
            "daemon",
            format!(
                "brokerd {} (pid {}) answers on {}",
                status.version,
                status.pid,
                socket.display()
            ),
        )
    } else {
        Check::warn(
            "daemon",
            format!(
                "brokerd is version {} (pid {}), brokerctl {mine}",
                status.version, status.pid
            ),
            "restart brokerd so that it runs the installed version",
        )
    }
}

fn from_wire(check: v1::Check) -> Check {
    let level = match check.level() {
        v1::CheckLevel::Pass => Level::Pass,
        v1::CheckLevel::Warn => Level::Warn,
        _ => Level::Fail,
    };
    Check {
        id: check.id,
        level,
        summary: check.summary,
        fix: (!check.fix.is_empty()).then_some(check.fix),
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Pass => "pass",
        Level::Warn => "warn",
        Level::Fail => "fail",
    }
}

/// The documented shape of `brokerctl doctor --output json`.
fn to_json(checks: &[Check], worst: Level) -> serde_json::Value {
    json!({
        "result": level_name(worst),
        "checks": checks.iter().map(|c| json!({
            "id": c.id,
            "level": level_name(c.level),
            "summary": c.summary,
            "fix": c.fix,
        })).collect::<Vec<_>>(),
    })
}

fn print_text(checks: &[Check]) {
    let paint = Paint::stdout();
    let width = checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for check in checks {
        let (word, style) = match check.level {
            Level::Pass => ("PASS", Paint::GOOD),
            Level::Warn => ("WARN", Paint::WARN),
            Level::Fail => ("FAIL", Paint::BAD),
        };
        outln!(
            "{}  {:<width$}  {}",
            paint.apply(style, word),
            check.id,
            check.summary
        );
        if let Some(fix) = &check.fix {
            outln!("      {:<width$}  fix: {fix}", "");
        }
    }
    let count = |level| checks.iter().filter(|c| c.level == level).count();
    let (warnings, failures) = (count(Level::Warn), count(Level::Fail));
    outln!();
    match (warnings, failures) {
        (0, 0) => outln!("All {} checks passed.", checks.len()),
        _ => outln!(
            "{} passed, {warnings} warning(s), {failures} failure(s).",
            count(Level::Pass)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_of_another_version_is_a_warning_with_the_restart() {
        let status = v1::StatusResponse {
            version: "0.0.9".into(),
            pid: 42,
            ..Default::default()
        };
        let socket = Path::new("/run/user/1000/token-broker/broker.sock");
        let check = version_check(&status, socket, "0.1.0");
        assert_eq!(check.level, Level::Warn);
        assert_eq!(
            check.summary,
            "brokerd is version 0.0.9 (pid 42), brokerctl 0.1.0"
        );
        assert!(check.fix.unwrap().contains("restart brokerd"));
        assert_eq!(version_check(&status, socket, "0.0.9").level, Level::Pass);
    }
}
