//! token-broker's wire contract, shared by brokerd, brokerctl and broker-shim.
//!
//! Besides the generated gRPC code this crate holds the few rules every binary must agree on:
//! where the socket is, how a machine-readable error reason travels in a gRPC status, and how a
//! session spec is spelled as a `brokerctl login` command. It stays small because broker-shim
//! links it on every kubectl run.

use std::path::{Path, PathBuf};

pub mod v1 {
    tonic::include_proto!("tokenbroker.v1");
}

pub mod kubelogin;

use v1::{ErrorDetail, ErrorReason, LoginMode, SessionSpec};

/// Overrides the socket path for brokerd, brokerctl and broker-shim alike.
pub const SOCKET_ENV: &str = "TOKEN_BROKER_SOCKET";

/// Every answer of brokerd carries its version in these response headers, so that a client
/// newer than the daemon can say so plainly when the daemon does not know what it asks.
pub const VERSION_HEADER: &str = "tokenbroker-version";
/// The protocol revision: bumped when an RPC or field that clients rely on is added. Older
/// clients keep working with newer daemons (fields are only ever added).
pub const PROTOCOL_HEADER: &str = "tokenbroker-protocol";
pub const PROTOCOL_VERSION: u32 = 2;

/// Name of the per-user directory that holds the socket.
const SOCKET_DIR: &str = "token-broker";
const SOCKET_FILE: &str = "broker.sock";

/// The socket path: an explicit path (brokerd's `--socket`) wins, then `TOKEN_BROKER_SOCKET`,
/// then the per-user default.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    match std::env::var_os(SOCKET_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => default_socket_path(),
    }
}

/// `$XDG_RUNTIME_DIR/token-broker/broker.sock`. Where there is no runtime dir (macOS, or a
/// Linux session without pam_systemd) the socket goes under the temp dir in a directory named
/// for the user, as tmux and ssh-agent do; brokerd checks that directory's owner and mode.
pub fn default_socket_path() -> PathBuf {
    default_socket_path_from(
        std::env::var_os("XDG_RUNTIME_DIR"),
        std::env::var_os("TMPDIR"),
        current_uid(),
    )
}

fn default_socket_path_from(
    runtime_dir: Option<std::ffi::OsString>,
    tmp_dir: Option<std::ffi::OsString>,
    uid: u32,
) -> PathBuf {
    let absolute =
        |dir: Option<std::ffi::OsString>| dir.map(PathBuf::from).filter(|d| d.is_absolute());
    if let Some(runtime) = absolute(runtime_dir) {
        return runtime.join(SOCKET_DIR).join(SOCKET_FILE);
    }
    let tmp = absolute(tmp_dir).unwrap_or_else(|| PathBuf::from("/tmp"));
    tmp.join(format!("{SOCKET_DIR}-{uid}")).join(SOCKET_FILE)
}

/// The real user id of this process.
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail (POSIX).
    unsafe { libc::getuid() }
}

/// The short, stable name of a reason as scripts see it: `LOGIN_REQUIRED`, `CONFIG`, ...
pub fn reason_name(reason: ErrorReason) -> &'static str {
    let full = reason.as_str_name();
    full.strip_prefix("ERROR_REASON_").unwrap_or(full)
}

/// Login modes and kubelogin's names for them.
const LOGIN_MODES: [(LoginMode, &str); 8] = [
    (LoginMode::DeviceCode, "devicecode"),
    (LoginMode::Interactive, "interactive"),
    (LoginMode::ServicePrincipal, "spn"),
    (LoginMode::Ropc, "ropc"),
    (LoginMode::ManagedIdentity, "msi"),
    (LoginMode::AzureCli, "azurecli"),
    (LoginMode::AzureDeveloperCli, "azd"),
    (LoginMode::WorkloadIdentity, "workloadidentity"),
];

/// kubelogin's spelling of a login mode.
pub fn login_mode_name(mode: LoginMode) -> &'static str {
    LOGIN_MODES
        .iter()
        .find(|(m, _)| *m == mode)
        .map_or("devicecode", |(_, name)| name)
}

/// Parses kubelogin's `--login` values.
pub fn parse_login_mode(name: &str) -> Option<LoginMode> {
    LOGIN_MODES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(mode, _)| *mode)
}

/// kubelogin's login mode names, for messages.
pub fn login_mode_names() -> String {
    LOGIN_MODES.map(|(_, name)| name).join(", ")
}

/// The `brokerctl login` command that signs in the session `spec` names, for messages that tell
/// a user what to run.
pub fn login_command(spec: &SessionSpec) -> String {
    let mut cmd = String::from("brokerctl login");
    let mut flag = |name: &str, value: &str| {
        if !value.is_empty() {
            cmd.push_str(" --");
            cmd.push_str(name);
            cmd.push(' ');
            cmd.push_str(&shell_quote(value));
        }
    };
    flag("profile", &spec.profile);
    flag("server-id", &spec.server_id);
    flag("client-id", &spec.client_id);
    flag("tenant-id", &spec.tenant_id);
    flag("username", &spec.username);
    flag("identity-resource-id", &spec.identity_resource_id);
    if spec.authority_host.is_empty() {
        flag("environment", &spec.environment);
    } else {
        flag("authority-host", &spec.authority_host);
    }
    flag("login", login_mode_name(spec.login_mode()));
    cmd
}

/// Quotes a value for a POSIX shell when it holds anything but plain word characters.
fn shell_quote(value: &str) -> String {
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// A gRPC status that carries `detail` (prost-encoded) for programs and its message for people.
pub fn status_with_detail(code: tonic::Code, detail: ErrorDetail) -> tonic::Status {
    use prost::Message;
    let message = detail.message.clone();
    tonic::Status::with_details(code, message, detail.encode_to_vec().into())
}

/// The machine-readable detail of a status from brokerd, if it carries one.
pub fn error_detail(status: &tonic::Status) -> Option<ErrorDetail> {
    use prost::Message;
    if status.details().is_empty() {
        return None;
    }
    ErrorDetail::decode(status.details()).ok()
}

/// The reason a status from brokerd carries; `Unspecified` when it carries none.
pub fn error_reason(status: &tonic::Status) -> ErrorReason {
    error_detail(status)
        .and_then(|d| ErrorReason::try_from(d.reason).ok())
        .unwrap_or(ErrorReason::Unspecified)
}

/// One line for people: brokerd's message (written for them already), or the gRPC code when a
/// status has no message.
pub fn error_message(status: &tonic::Status) -> String {
    if status.code() == tonic::Code::Unimplemented {
        let header = |name: &str| {
            status
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let theirs = match (header(VERSION_HEADER), header(PROTOCOL_HEADER)) {
            (Some(version), Some(protocol)) => format!("brokerd {version} (protocol {protocol})"),
            _ => "the running brokerd".to_string(),
        };
        return format!(
            "{theirs} is older than this client ({}, protocol {PROTOCOL_VERSION}) and does not \
             know what it asked; restart brokerd so that it runs the installed version",
            env!("CARGO_PKG_VERSION")
        );
    }
    if status.message().is_empty() {
        format!("brokerd failed: {:?}", status.code())
    } else {
        status.message().to_string()
    }
}

#[cfg(feature = "client")]
pub use client::{ConnectError, brokerd_program, connect, connect_or_start};

#[cfg(feature = "client")]
mod client {
    use std::path::{Path, PathBuf};

    use super::v1::broker_client::BrokerClient;
    use tonic::transport::{Channel, Endpoint};

    /// Why a client could not reach brokerd.
    #[derive(Debug)]
    pub enum ConnectError {
        /// Nothing listens on the socket: brokerd is not running.
        NotRunning { path: PathBuf },
        /// The socket or its directory belongs to someone else.
        PermissionDenied { path: PathBuf },
        /// The path cannot be used as a socket address.
        BadPath { path: PathBuf },
        /// Nothing listened, and brokerd could not be started on demand.
        StartFailed { path: PathBuf, reason: String },
        Other {
            path: PathBuf,
            source: tonic::transport::Error,
        },
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
                ConnectError::StartFailed { path, reason } => write!(
                    f,
                    "brokerd is not running (no answer on {}) and could not be started: {reason}",
                    path.display()
                ),
                ConnectError::Other { path, source } => {
                    write!(f, "cannot reach brokerd on {}: {source}", path.display())?;
                    if let Some(io) = io_cause(source) {
                        write!(f, ": {io}")?;
                    }
                    Ok(())
                }
            }
        }
    }

    impl std::error::Error for ConnectError {}

    /// Connects to brokerd's Unix socket.
    pub async fn connect(path: &Path) -> Result<BrokerClient<Channel>, ConnectError> {
        let bad_path = || ConnectError::BadPath {
            path: path.to_path_buf(),
        };
        let text = path.to_str().ok_or_else(bad_path)?;
        let endpoint = Endpoint::from_shared(format!("unix:{text}")).map_err(|_| bad_path())?;
        match endpoint.connect().await {
            Ok(channel) => Ok(BrokerClient::new(channel)),
            Err(source) => Err(classify(path, source)),
        }
    }

    /// [`connect`], and when nothing answers, brokerd started on demand (once) and connected to.
    /// Blocks while brokerd starts: it says when it serves, or why it cannot.
    pub async fn connect_or_start(path: &Path) -> Result<BrokerClient<Channel>, ConnectError> {
        match connect(path).await {
            Err(ConnectError::NotRunning { .. }) => {
                start_daemon(path).map_err(|reason| ConnectError::StartFailed {
                    path: path.to_path_buf(),
                    reason,
                })?;
                connect(path).await
            }
            other => other,
        }
    }

    /// Runs `brokerd --on-demand` for `path` and waits for its readiness line. brokerd itself
    /// queues behind any other start, so that many clients racing here start one daemon; the
    /// losers answer `ready` as soon as the winner serves.
    fn start_daemon(path: &Path) -> Result<(), String> {
        use std::io::{BufRead, Read};
        use std::process::{Command, Stdio};

        let brokerd = brokerd_program();
        let mut child = Command::new(&brokerd)
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
        std::env::current_exe()
            .ok()
            .map(|me| me.with_file_name("brokerd"))
            .filter(|sibling| sibling.is_file())
            .unwrap_or_else(|| PathBuf::from("brokerd"))
    }

    fn classify(path: &Path, source: tonic::transport::Error) -> ConnectError {
        use std::io::ErrorKind;
        let path = path.to_path_buf();
        match io_cause(&source).map(|e| e.kind()) {
            Some(ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                ConnectError::NotRunning { path }
            }
            Some(ErrorKind::PermissionDenied) => ConnectError::PermissionDenied { path },
            _ => ConnectError::Other { path, source },
        }
    }

    fn io_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
        let mut cause = error.source();
        while let Some(err) = cause {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return Some(io);
            }
            cause = err.source();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_socket_follows_xdg_then_falls_back_to_a_per_user_temp_dir() {
        assert_eq!(
            default_socket_path_from(Some("/run/user/1000".into()), Some("/var/tmp".into()), 1000),
            PathBuf::from("/run/user/1000/token-broker/broker.sock")
        );
        // macOS: no runtime dir, a per-user TMPDIR.
        assert_eq!(
            default_socket_path_from(None, Some("/var/folders/ab/T/".into()), 501),
            PathBuf::from("/var/folders/ab/T/token-broker-501/broker.sock")
        );
        // Relative or empty values are ignored, as the XDG spec says.
        assert_eq!(
            default_socket_path_from(Some("".into()), Some("tmp".into()), 7),
            PathBuf::from("/tmp/token-broker-7/broker.sock")
        );
    }

    #[test]
    fn reason_names_are_short() {
        assert_eq!(reason_name(ErrorReason::LoginRequired), "LOGIN_REQUIRED");
        assert_eq!(reason_name(ErrorReason::IdpUnavailable), "IDP_UNAVAILABLE");
    }

    #[test]
    fn login_command_quotes_odd_values_and_prefers_authority_host() {
        let spec = SessionSpec {
            environment: "AzurePublicCloud".into(),
            authority_host: "http://127.0.0.1:8080/".into(),
            tenant_id: "my tenant".into(),
            client_id: "c".into(),
            server_id: "s".into(),
            login_mode: LoginMode::Interactive as i32,
            ..SessionSpec::default()
        };
        assert_eq!(
            login_command(&spec),
            "brokerctl login --server-id s --client-id c --tenant-id 'my tenant' \
             --authority-host http://127.0.0.1:8080/ --login interactive"
        );
    }

    #[test]
    fn error_detail_round_trips_through_a_status() {
        let detail = ErrorDetail {
            reason: ErrorReason::LoginRequired as i32,
            message: "run brokerctl login".into(),
            idp_error_codes: vec![700082],
        };
        let status = status_with_detail(tonic::Code::Unauthenticated, detail.clone());
        assert_eq!(error_message(&status), "run brokerctl login");
        assert_eq!(error_detail(&status), Some(detail));
        assert_eq!(error_reason(&status), ErrorReason::LoginRequired);
        let plain = tonic::Status::internal("");
        assert_eq!(error_detail(&plain), None);
        assert_eq!(error_reason(&plain), ErrorReason::Unspecified);
        assert_eq!(error_message(&plain), "brokerd failed: Internal");
    }

    #[test]
    fn login_modes_use_kubelogin_names() {
        for (mode, name) in LOGIN_MODES {
            assert_eq!(parse_login_mode(login_mode_name(mode)), Some(mode));
            assert_eq!(login_mode_name(mode), name);
        }
        assert_eq!(parse_login_mode("azurepipelines"), None);
        assert_eq!(login_mode_name(LoginMode::Unspecified), "devicecode");
    }
}
