//! Reaching brokerd: the checks before connecting and after ([`crate::socket`]), what went
//! wrong connecting, and starting brokerd on demand when it is not running yet. Shared by the
//! tonic client (brokerctl) and broker-shim's own, so that both check whom they talk to, start
//! the daemon the same way and say the same thing when they cannot.

use std::path::{Path, PathBuf};

/// Why a client could not reach brokerd.
#[derive(Debug)]
pub enum ConnectError {
    /// Nothing listens on the socket: brokerd is not running.
    NotRunning {
        path: PathBuf,
    },
    /// The socket or its directory belongs to someone else.
    PermissionDenied {
        path: PathBuf,
    },
    /// The path cannot be used as a socket address.
    BadPath {
        path: PathBuf,
    },
    /// The socket's place, or the process listening there, is not the user's own: nothing is
    /// sent.
    Untrusted {
        path: PathBuf,
        reason: String,
    },
    /// brokerd accepted the connection but did not answer in time.
    TimedOut {
        path: PathBuf,
        waited: std::time::Duration,
    },
    /// Nothing listened, and brokerd could not be started on demand.
    StartFailed {
        path: PathBuf,
        reason: String,
    },
    /// Nothing listened, and there is no brokerd on this machine to start: the broker is
    /// meant to be reached through a forward from another machine, which is not there.
    NoBrokerHere {
        path: PathBuf,
    },
    Other {
        path: PathBuf,
        reason: String,
    },
}

impl ConnectError {
    /// Classifies a failed `connect()` on the socket at `path`, or a failed peer check.
    pub fn from_io(path: &Path, error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let path = path.to_path_buf();
        #[cfg(windows)]
        use crate::pipe::ForeignPeer;
        #[cfg(unix)]
        use crate::socket::ForeignPeer;
        if let Some(foreign) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<ForeignPeer>())
        {
            return ConnectError::Untrusted {
                path,
                reason: foreign.to_string(),
            };
        }
        match error.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => ConnectError::NotRunning { path },
            ErrorKind::PermissionDenied => ConnectError::PermissionDenied { path },
            ErrorKind::InvalidInput => ConnectError::BadPath { path },
            _ => ConnectError::Other {
                path,
                reason: error.to_string(),
            },
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::NotRunning { path } => {
                write!(
                    f,
                    "brokerd is not running (no answer on {})",
                    path.display()
                )
            }
            ConnectError::PermissionDenied { path } => write!(
                f,
                "permission denied on {}: it belongs to another user",
                path.display()
            ),
            ConnectError::BadPath { path } => {
                write!(f, "{} cannot be used as a socket path", path.display())
            }
            ConnectError::Untrusted { path, reason } => {
                write!(f, "refusing to talk to {}: {reason}", path.display())
            }
            ConnectError::TimedOut { path, waited } => write!(
                f,
                "brokerd on {} accepted the connection but did not answer within {} s; it may \
                 be stuck (see its log, or restart it)",
                path.display(),
                waited.as_secs()
            ),
            ConnectError::StartFailed { path, reason } => write!(
                f,
                "brokerd is not running (no answer on {}) and could not be started: {reason}",
                path.display()
            ),
            ConnectError::NoBrokerHere { path } => write!(
                f,
                "nothing answers on {0} and no brokerd is installed here: the broker on the \
                 other end is unreachable; forward it from the machine that runs it \
                 (`brokerctl forward ssh THIS-HOST` there, or `RemoteForward {0} <its \
                 forward.sock>` in its ~/.ssh/config; a devcontainer bind-mounts forward.sock \
                 at {0})",
                path.display()
            ),
            ConnectError::Other { path, reason } => {
                write!(f, "cannot reach brokerd on {}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for ConnectError {}

/// What a client checks before it connects to `path`: the socket's directory and every one
/// above it, and the socket file ([`crate::socket`]). A missing directory or socket means
/// brokerd is not running.
#[cfg(unix)]
pub fn check_before_connect(path: &Path) -> Result<(), ConnectError> {
    use crate::socket::{DirProblem, check_client_dir, check_socket_file, socket_dir};
    let uid = crate::current_uid();
    let untrusted = |problem: DirProblem| match problem {
        DirProblem::Missing { .. } => ConnectError::NotRunning {
            path: path.to_path_buf(),
        },
        problem => ConnectError::Untrusted {
            path: path.to_path_buf(),
            reason: problem.to_string(),
        },
    };
    let dir = socket_dir(path).ok_or_else(|| ConnectError::BadPath {
        path: path.to_path_buf(),
    })?;
    check_client_dir(dir, uid).map_err(untrusted)?;
    check_socket_file(path, uid).map_err(untrusted)
}

/// On Windows, only that `path` names a local pipe: the pipe namespace has no directories to
/// check, and the server's user is checked once connected ([`crate::pipe`]).
#[cfg(windows)]
pub fn check_before_connect(path: &Path) -> Result<(), ConnectError> {
    if crate::pipe::is_pipe_name(path) {
        Ok(())
    } else {
        Err(ConnectError::BadPath {
            path: path.to_path_buf(),
        })
    }
}

/// Runs `brokerd --on-demand` for `path` and waits for its readiness line. brokerd itself
/// queues behind any other start, so that many clients racing here start one daemon; the
/// losers answer `ready` as soon as the winner serves.
pub fn start_daemon(path: &Path) -> Result<(), ConnectError> {
    if !brokerd_installed() {
        return Err(ConnectError::NoBrokerHere {
            path: path.to_path_buf(),
        });
    }
    start(path).map_err(|reason| ConnectError::StartFailed {
        path: path.to_path_buf(),
        reason,
    })
}

/// Whether there is a brokerd to start: beside this binary, or on PATH. A machine with only
/// broker-shim (an SSH host, a container) reaches a brokerd elsewhere through a forward.
fn brokerd_installed() -> bool {
    let program = brokerd_program();
    if program.is_absolute() {
        return program.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(&program).is_file()))
}

fn start(path: &Path) -> Result<(), String> {
    use std::io::{BufRead, Read};
    use std::process::{Command, Stdio};

    let brokerd = brokerd_program();
    let mut command = Command::new(&brokerd);
    // No console window, ever: brokerd is a windowless program, and this keeps Windows from
    // giving it a console of its own even when it is started from a console program (kubectl
    // under k9s or a GUI: what Azure/kubelogin#438 is about).
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        const CREATE_NO_WINDOW: u32 = 0x0800_0000;
        command.creation_flags(CREATE_NO_WINDOW);
        crate::pipe::keep_std_handles_from_children();
    }
    let mut child = command
        .arg("--on-demand")
        .arg("--socket")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", brokerd.display()))?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    }
    if line.starts_with("ready ") {
        // brokerd lives on on its own; its stderr now points at /dev/null.
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let said = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim_start_matches("brokerd: ").to_string());
    Err(said.unwrap_or_else(|| format!("{} exited ({status})", brokerd.display())))
}

/// The brokerd installed beside this binary (as packages and `cargo install` put them),
/// else `brokerd`, to be found on PATH.
pub fn brokerd_program() -> PathBuf {
    let name = format!("brokerd{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .map(|me| me.with_file_name(&name))
        .filter(|sibling| sibling.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}
