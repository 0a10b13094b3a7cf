//! `brokerctl forward allow|deny|ssh`: which sessions the forwarding socket serves, and an SSH
//! session that carries it to another machine, as `ssh -A` carries ssh-agent.
//!
//! `forward ssh` runs ssh twice: once to make the remote socket's directory (private, as the
//! clients there demand) and clear a socket left by an earlier forward (sshd does not remove
//! it, and fails to bind over it unless its own `StreamLocalBindUnlink` is on); then the
//! session itself with `-R REMOTE:LOCAL`, where REMOTE is the remote user's default socket, so
//! that broker-shim there finds brokerd with no configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use broker_proto::text::printable;
use broker_proto::v1;
use clap::Subcommand;

use crate::output::{errln, outln};
use crate::spec::SessionArgs;

#[derive(Subcommand, Debug)]
pub enum ForwardCommand {
    /// Serve a session on the forwarding socket (forward.sock), to machines brokerd is
    /// forwarded to
    Allow {
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Stop serving a session on the forwarding socket
    Deny {
        #[command(flatten)]
        session: SessionArgs,
    },
    /// ssh to HOST with brokerd forwarded onto the remote user's default socket, so that
    /// broker-shim there gets tokens from this machine. Everything after HOST goes to ssh as it
    /// is (options, then `--` and a command)
    Ssh {
        /// [user@]host, as ssh takes it
        host: String,
        /// ssh's options, then optionally `--` and the remote command
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ssh_args: Vec<String>,
    },
}

pub async fn run(command: ForwardCommand, socket: &Path) -> Result<ExitCode> {
    match command {
        ForwardCommand::Allow { session } => set(socket, &session, true).await,
        ForwardCommand::Deny { session } => set(socket, &session, false).await,
        ForwardCommand::Ssh { host, ssh_args } => ssh(socket, &host, &ssh_args).await,
    }
}

async fn set(socket: &Path, session: &SessionArgs, allowed: bool) -> Result<ExitCode> {
    let mut client = crate::connect(socket).await?;
    let answer = client
        .set_forwarding(v1::SetForwardingRequest {
            session: Some(session.to_wire()?),
            allowed,
        })
        .await?
        .into_inner();
    let status = client.status(v1::StatusRequest {}).await?.into_inner();
    if allowed {
        outln!(
            "Session {} is served on the forwarding socket{}.",
            answer.session_id,
            if status.forward_socket.is_empty() {
                String::new()
            } else {
                format!(" ({})", status.forward_socket)
            }
        );
    } else {
        outln!(
            "Session {} is no longer served on the forwarding socket.",
            answer.session_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The remote side's preparation, for any POSIX sh: the user's default socket path as
/// broker_proto computes it (`$XDG_RUNTIME_DIR/token-broker/broker.sock`, else the temp dir's
/// `token-broker-<uid>/`), its directory made private, a socket left there removed; the path
/// printed. One line with no single quote or `!` in it: it travels in single quotes through
/// the remote user's login shell, whatever that is (csh reads neither a newline nor `!` there).
const PREPARE: &str = concat!(
    "set -e; r=\"${XDG_RUNTIME_DIR:-}\"; ",
    "case \"$r\" in /*) d=\"${r%/}/token-broker\" ;; ",
    "*) t=\"${TMPDIR:-}\"; ",
    "case \"$t\" in /*) ;; *) t=\"$(getconf DARWIN_USER_TEMP_DIR 2>/dev/null || true)\" ;; esac; ",
    "case \"$t\" in /*) ;; *) t=/tmp ;; esac; ",
    "d=\"${t%/}/token-broker-$(id -u)\" ;; esac; ",
    "umask 077; mkdir -p \"$d\"; chmod 700 \"$d\"; s=\"$d/broker.sock\"; ",
    "if [ -S \"$s\" ] && [ -O \"$s\" ]; then rm -f \"$s\"; fi; ",
    "printf \"%s\\n\" \"$s\"",
);

/// `ssh [options] HOST [-- command]` with the forward: preparation, then the session.
async fn ssh(socket: &Path, host: &str, ssh_args: &[String]) -> Result<ExitCode> {
    let local = local_forward_socket(socket).await?;
    let (options, command) = split_command(ssh_args);
    let remote = prepare_remote(host, options)?;
    let forward = forward_spec(&remote, &local)?;
    errln!(
        "brokerctl: forwarding {} to {host}:{}",
        local.display(),
        remote.display()
    );
    let mut ssh = Command::new("ssh");
    ssh.args(["-R", &forward])
        .args(["-o", "ExitOnForwardFailure=yes"])
        .args(["-o", "StreamLocalBindUnlink=yes"])
        .arg(host)
        .args(options);
    if let Some(command) = command {
        ssh.arg("--").args(command);
    }
    let status = ssh.status().context("cannot run ssh")?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// The forwarding socket of the brokerd behind `socket`, started if need be.
async fn local_forward_socket(socket: &Path) -> Result<PathBuf> {
    let mut client = crate::connect(socket).await?;
    let status = client.status(v1::StatusRequest {}).await?.into_inner();
    if status.forward_socket.is_empty() {
        bail!(
            "brokerd serves no forwarding socket: {}",
            printable(&status.forward_socket_problem)
        );
    }
    if !status.sessions.iter().any(|s| s.forwarding_allowed) {
        errln!(
            "brokerctl: no session is allowed on the forwarding socket yet, so the other side \
             gets no token: brokerctl forward allow SESSION (see brokerctl status)"
        );
    }
    Ok(PathBuf::from(status.forward_socket))
}

/// ssh's options, and the remote command after `--` if there is one.
fn split_command(args: &[String]) -> (&[String], Option<&[String]>) {
    match args.iter().position(|a| a == "--") {
        Some(at) => (&args[..at], Some(&args[at + 1..])),
        None => (args, None),
    }
}

/// Runs the preparation on `host`; the remote socket path it printed.
fn prepare_remote(host: &str, options: &[String]) -> Result<PathBuf> {
    let output = Command::new("ssh")
        .arg("-T")
        .arg(host)
        .args(options)
        .arg("--")
        .arg(format!("sh -c '{PREPARE}'"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run ssh")?;
    if !output.status.success() {
        bail!(
            "could not prepare the socket's directory on {host} (ssh {}); nothing was forwarded",
            output.status
        );
    }
    remote_socket(&String::from_utf8_lossy(&output.stdout))
}

/// The path the preparation printed, if it is one ssh can forward onto.
fn remote_socket(printed: &str) -> Result<PathBuf> {
    let line = printed.lines().last().unwrap_or("").trim_end();
    if !line.starts_with('/') || line.chars().any(|c| c.is_control()) {
        bail!(
            "the other side printed no socket path (it said {:?})",
            printable(line)
        );
    }
    Ok(PathBuf::from(line))
}

/// `-R`'s argument: ssh splits it at colons, so neither path may hold one.
fn forward_spec(remote: &Path, local: &Path) -> Result<String> {
    let (remote, local) = (remote.display().to_string(), local.display().to_string());
    for path in [&remote, &local] {
        if path.contains(':') {
            bail!("ssh cannot forward a socket whose path holds a colon: {path}");
        }
    }
    Ok(format!("{remote}:{local}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preparation_travels_in_single_quotes() {
        assert!(!PREPARE.contains(['\'', '!', '\n']));
    }

    #[test]
    fn options_and_command_are_told_apart() {
        let args: Vec<String> = ["-p", "2222", "--", "kubectl", "get", "pods"]
            .map(String::from)
            .to_vec();
        let (options, command) = split_command(&args);
        assert_eq!(options, ["-p", "2222"]);
        assert_eq!(command.unwrap(), ["kubectl", "get", "pods"]);
        assert_eq!(split_command(&args[..2]).1, None);
    }

    #[test]
    fn only_an_absolute_path_is_taken_and_never_one_with_a_colon() {
        let path = remote_socket("motd line\n/run/user/1001/token-broker/broker.sock\n").unwrap();
        assert_eq!(path, Path::new("/run/user/1001/token-broker/broker.sock"));
        assert!(remote_socket("").is_err());
        assert!(remote_socket("relative/broker.sock\n").is_err());
        assert!(remote_socket("/tmp/x\u{1b}[2J/broker.sock").is_err());
        assert!(forward_spec(Path::new("/a:b/s"), Path::new("/l")).is_err());
        assert_eq!(
            forward_spec(Path::new("/r/s"), Path::new("/l/f")).unwrap(),
            "/r/s:/l/f"
        );
    }

    /// The preparation, run here by sh as the remote side would: the default path as
    /// broker_proto computes it, made private.
    #[test]
    fn the_preparation_makes_the_directory_the_clients_compute() {
        let runtime = tempfile::tempdir().unwrap();
        let output = Command::new("sh")
            .arg("-c")
            .arg(PREPARE)
            .env("XDG_RUNTIME_DIR", runtime.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let path = remote_socket(&String::from_utf8_lossy(&output.stdout)).unwrap();
        assert_eq!(path, runtime.path().join("token-broker/broker.sock"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
