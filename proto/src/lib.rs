//! token-broker's wire contract, shared by brokerd, brokerctl and broker-shim.
//!
//! Besides the generated gRPC code this crate holds the few rules every binary must agree on:
//! where the socket is, how a machine-readable error reason travels in a gRPC status, and how a
//! session spec is spelled as a `brokerctl login` command. It stays small because broker-shim
//! links it on every kubectl run.

use std::path::{Path, PathBuf};

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tokenbroker.v1.rs"));
}

pub mod exec_credential;
pub mod kubelogin;
mod on_demand;
pub mod socket;
pub mod text;

pub use on_demand::{ConnectError, brokerd_program, check_before_connect, start_daemon};

use v1::{ErrorDetail, ErrorReason, LoginMode, SessionSpec};

/// Overrides the socket path for brokerd, brokerctl and broker-shim alike.
pub const SOCKET_ENV: &str = "TOKEN_BROKER_SOCKET";

/// Every answer of brokerd carries its version in these response headers, so that a client
/// newer than the daemon can say so plainly when the daemon does not know what it asks.
pub const VERSION_HEADER: &str = "tokenbroker-version";
/// The protocol revision, sent with every answer.
///
/// The rule: bump it when an RPC, or a field that clients act on, is added to broker.proto;
/// never reuse or renumber a field, never change what one means. Older clients then keep
/// working with newer daemons (they ignore what they do not know), and a client newer than the
/// daemon that calls what the daemon lacks gets UNIMPLEMENTED, which it turns into "brokerd X
/// (protocol N) is older than this client; restart brokerd". A package upgrade replaces the
/// binaries while the old brokerd runs on: the next `brokerctl service install`, logout of the
/// desktop session or SIGTERM brings up the new one; the socket survives under systemd.
///
/// 3: Status says whether the secret store answers and the index was written, each session's
/// unsaved refresh token; Logout names the store.
/// 4: the forwarding socket (SetForwarding, Login's allow_forwarding, Status's forwarding
/// fields), GetToken's `interactive` and Status's pending logins, the store's caveat.
pub const PROTOCOL_HEADER: &str = "tokenbroker-protocol";
pub const PROTOCOL_VERSION: u32 = 4;

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
///
/// On macOS the temp dir is the user's own (`/var/folders/…/T/`), which is what `TMPDIR` holds
/// in a login session. Processes launchd starts without it (an agent, a cron job) ask the OS
/// for the same directory (`confstr(_CS_DARWIN_USER_TEMP_DIR)`), so that they meet the
/// terminal's clients instead of starting a second brokerd under `/tmp`.
pub fn default_socket_path() -> PathBuf {
    default_socket_path_from(
        std::env::var_os("XDG_RUNTIME_DIR"),
        std::env::var_os("TMPDIR"),
        user_temp_dir,
        current_uid(),
    )
}

fn default_socket_path_from(
    runtime_dir: Option<std::ffi::OsString>,
    tmp_dir: Option<std::ffi::OsString>,
    os_temp_dir: impl FnOnce() -> Option<PathBuf>,
    uid: u32,
) -> PathBuf {
    let absolute =
        |dir: Option<std::ffi::OsString>| dir.map(PathBuf::from).filter(|d| d.is_absolute());
    if let Some(runtime) = absolute(runtime_dir) {
        return runtime.join(SOCKET_DIR).join(SOCKET_FILE);
    }
    let tmp = absolute(tmp_dir)
        .or_else(|| os_temp_dir().filter(|d| d.is_absolute()))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    tmp.join(format!("{SOCKET_DIR}-{uid}")).join(SOCKET_FILE)
}

/// The user's own temp dir as the OS knows it, whatever the environment says: macOS only.
#[cfg(target_os = "macos")]
fn user_temp_dir() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buffer = vec![0u8; 1024];
    // SAFETY: the buffer is valid for writes of its length, which is passed; confstr writes at
    // most that many bytes, NUL included.
    let needed = unsafe {
        libc::confstr(
            libc::_CS_DARWIN_USER_TEMP_DIR,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    // 0: no such value; more than the buffer: cut short (a path this long is no temp dir).
    if needed == 0 || needed > buffer.len() {
        return None;
    }
    let text = buffer.get(..needed - 1)?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(text)))
}

#[cfg(not(target_os = "macos"))]
fn user_temp_dir() -> Option<PathBuf> {
    None
}

/// The forwarding socket brokerd serves beside `socket` (for SSH hosts, devcontainers, WSL):
/// `forward.sock` beside `broker.sock`, and `NAME-forward.sock` beside any other `NAME.sock`.
pub fn forward_socket_path(socket: &Path) -> PathBuf {
    let name = socket
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let forward = if name == SOCKET_FILE {
        "forward.sock".to_string()
    } else {
        match name.strip_suffix(".sock") {
            Some(stem) => format!("{stem}-forward.sock"),
            None => format!("{name}-forward"),
        }
    };
    socket.with_file_name(forward)
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

/// kubelogin's spelling of a login mode: the one table of login mode names. `None` for
/// UNSPECIFIED, which names no mode (brokerd then takes the profile's, else kubelogin's
/// default, devicecode).
pub fn login_mode_name(mode: LoginMode) -> Option<&'static str> {
    Some(match mode {
        LoginMode::Unspecified => return None,
        LoginMode::DeviceCode => "devicecode",
        LoginMode::Interactive => "interactive",
        LoginMode::ServicePrincipal => "spn",
        LoginMode::Ropc => "ropc",
        LoginMode::ManagedIdentity => "msi",
        LoginMode::AzureCli => "azurecli",
        LoginMode::AzureDeveloperCli => "azd",
        LoginMode::WorkloadIdentity => "workloadidentity",
    })
}

/// Every login mode the protocol knows, in the order of their numbers.
pub fn login_modes() -> impl Iterator<Item = LoginMode> {
    (1..).map_while(|n| LoginMode::try_from(n).ok())
}

/// Parses kubelogin's `--login` values.
pub fn parse_login_mode(name: &str) -> Option<LoginMode> {
    login_modes().find(|mode| login_mode_name(*mode) == Some(name))
}

/// kubelogin's login mode names, for messages.
pub fn login_mode_names() -> String {
    login_modes()
        .filter_map(login_mode_name)
        .collect::<Vec<_>>()
        .join(", ")
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
    flag(
        "login",
        login_mode_name(spec.login_mode()).unwrap_or_default(),
    );
    cmd
}

/// Quotes a value for a POSIX shell when it holds anything but plain word characters.
pub fn shell_quote(value: &str) -> String {
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// gRPC's code for UNIMPLEMENTED: the daemon does not know the method, so it is older.
pub const CODE_UNIMPLEMENTED: i32 = 12;

/// What a failed call told its client, whatever the transport: the gRPC code and message, the
/// prost-encoded [`ErrorDetail`] if brokerd sent one, and brokerd's version headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFailure {
    pub code: i32,
    pub message: String,
    pub details: Vec<u8>,
    pub daemon_version: Option<String>,
    pub daemon_protocol: Option<String>,
}

impl CallFailure {
    /// The machine-readable detail, if brokerd sent one.
    pub fn detail(&self) -> Option<ErrorDetail> {
        use prost::Message;
        if self.details.is_empty() {
            return None;
        }
        ErrorDetail::decode(self.details.as_slice()).ok()
    }

    /// The reason brokerd gave; `Unspecified` when it gave none.
    pub fn reason(&self) -> ErrorReason {
        self.detail()
            .and_then(|d| ErrorReason::try_from(d.reason).ok())
            .unwrap_or(ErrorReason::Unspecified)
    }

    /// One line for people: brokerd's message (written for them already), a plain word on
    /// version skew, or the gRPC code when there is no message.
    pub fn to_message(&self) -> String {
        if self.code == CODE_UNIMPLEMENTED {
            let theirs = match (&self.daemon_version, &self.daemon_protocol) {
                (Some(version), Some(protocol)) => {
                    format!("brokerd {version} (protocol {protocol})")
                }
                _ => "the running brokerd".to_string(),
            };
            return format!(
                "{theirs} is older than this client ({}, protocol {PROTOCOL_VERSION}) and does \
                 not know what it asked; restart brokerd so that it runs the installed version",
                env!("CARGO_PKG_VERSION")
            );
        }
        if self.message.is_empty() {
            format!("brokerd failed: {}", code_name(self.code))
        } else {
            self.message.clone()
        }
    }
}

/// gRPC's name for a status code, as tonic's `Debug` spells it.
pub fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "Ok",
        "Cancelled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("Unknown")
}

#[cfg(any(feature = "client", feature = "server"))]
pub use with_tonic::{error_detail, error_message, error_reason, status_with_detail};

/// The same rules, for tonic's `Status`.
#[cfg(any(feature = "client", feature = "server"))]
mod with_tonic {
    use super::v1::{ErrorDetail, ErrorReason};
    use super::{CallFailure, PROTOCOL_HEADER, VERSION_HEADER};

    /// A gRPC status that carries `detail` (prost-encoded) for programs and its message for
    /// people.
    pub fn status_with_detail(code: tonic::Code, detail: ErrorDetail) -> tonic::Status {
        use prost::Message;
        let message = detail.message.clone();
        tonic::Status::with_details(code, message, detail.encode_to_vec().into())
    }

    fn failure(status: &tonic::Status) -> CallFailure {
        let header = |name: &str| {
            status
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        CallFailure {
            code: status.code() as i32,
            message: status.message().to_string(),
            details: status.details().to_vec(),
            daemon_version: header(VERSION_HEADER),
            daemon_protocol: header(PROTOCOL_HEADER),
        }
    }

    /// The machine-readable detail of a status from brokerd, if it carries one.
    pub fn error_detail(status: &tonic::Status) -> Option<ErrorDetail> {
        failure(status).detail()
    }

    /// The reason a status from brokerd carries; `Unspecified` when it carries none.
    pub fn error_reason(status: &tonic::Status) -> ErrorReason {
        failure(status).reason()
    }

    /// One line for people; see [`CallFailure::to_message`].
    pub fn error_message(status: &tonic::Status) -> String {
        failure(status).to_message()
    }
}

#[cfg(feature = "client")]
pub use client::{connect, connect_or_start};

#[cfg(feature = "client")]
mod client {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::ConnectError;
    use super::v1::broker_client::BrokerClient;
    use tonic::transport::{Channel, Endpoint, Uri};

    /// How long connecting may take: brokerd accepts at once when it runs.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// The longest any one call may wait for brokerd's answer to begin (a refresh that waits
    /// for the IdP is the slowest honest one). Streams (a login, a watch) then run as long as
    /// they need, kept alive by pings that a stuck daemon would not answer.
    const CALL_TIMEOUT: Duration = Duration::from_secs(60);
    const KEEPALIVE: Duration = Duration::from_secs(30);

    /// Connects to brokerd's socket, after checking its place ([`super::check_before_connect`])
    /// and, once connected, that the listening process is the user's (before tonic sends a
    /// byte; again on every reconnection).
    pub async fn connect(path: &Path) -> Result<BrokerClient<Channel>, ConnectError> {
        super::check_before_connect(path)?;
        let endpoint = Endpoint::from_static("http://localhost")
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(CONNECT_TIMEOUT)
            .keep_alive_while_idle(false);
        let socket: PathBuf = path.to_path_buf();
        let connector = tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&socket).await?;
                super::socket::check_peer(&stream, &socket, super::current_uid())?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        match endpoint.connect_with_connector(connector).await {
            Ok(channel) => Ok(BrokerClient::new(channel)),
            Err(source) => Err(classify(path, &source)),
        }
    }

    /// [`connect`], and when nothing answers, brokerd started on demand (once) and connected to.
    /// Blocks while brokerd starts: it says when it serves, or why it cannot.
    pub async fn connect_or_start(path: &Path) -> Result<BrokerClient<Channel>, ConnectError> {
        match connect(path).await {
            Err(ConnectError::NotRunning { .. }) => {
                super::start_daemon(path)?;
                connect(path).await
            }
            other => other,
        }
    }

    fn classify(path: &Path, source: &tonic::transport::Error) -> ConnectError {
        match io_cause(source) {
            Some(io) => ConnectError::from_io(path, io),
            None if is_timeout(source) => ConnectError::TimedOut {
                path: path.to_path_buf(),
                waited: CONNECT_TIMEOUT,
            },
            None => ConnectError::Other {
                path: path.to_path_buf(),
                reason: source.to_string(),
            },
        }
    }

    fn causes<'a>(
        error: &'a (dyn std::error::Error + 'static),
    ) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
        std::iter::successors(error.source(), |e| e.source())
    }

    fn io_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
        causes(error).find_map(|e| e.downcast_ref::<std::io::Error>())
    }

    fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
        causes(error).any(|e| e.to_string().contains("timed out"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_socket_follows_xdg_then_falls_back_to_a_per_user_temp_dir() {
        let none = || None;
        assert_eq!(
            default_socket_path_from(
                Some("/run/user/1000".into()),
                Some("/var/tmp".into()),
                none,
                1000
            ),
            PathBuf::from("/run/user/1000/token-broker/broker.sock")
        );
        // macOS: no runtime dir, a per-user TMPDIR.
        let darwin = || Some(PathBuf::from("/var/folders/ab/cd/T/"));
        assert_eq!(
            default_socket_path_from(None, Some("/var/folders/ab/cd/T/".into()), darwin, 501),
            PathBuf::from("/var/folders/ab/cd/T/token-broker-501/broker.sock")
        );
        // A process launchd started without TMPDIR meets the terminal's at the same place.
        assert_eq!(
            default_socket_path_from(None, None, darwin, 501),
            PathBuf::from("/var/folders/ab/cd/T/token-broker-501/broker.sock")
        );
        // Relative or empty values are ignored, as the XDG spec says.
        assert_eq!(
            default_socket_path_from(Some("".into()), Some("tmp".into()), none, 7),
            PathBuf::from("/tmp/token-broker-7/broker.sock")
        );
        assert_eq!(
            default_socket_path_from(None, None, || Some("relative".into()), 7),
            PathBuf::from("/tmp/token-broker-7/broker.sock")
        );
    }

    #[test]
    fn the_forwarding_socket_is_beside_the_socket() {
        assert_eq!(
            forward_socket_path(Path::new("/run/user/1/token-broker/broker.sock")),
            PathBuf::from("/run/user/1/token-broker/forward.sock")
        );
        assert_eq!(
            forward_socket_path(Path::new("/tmp/x/test.sock")),
            PathBuf::from("/tmp/x/test-forward.sock")
        );
        assert_eq!(
            forward_socket_path(Path::new("/tmp/x/sock")),
            PathBuf::from("/tmp/x/sock-forward")
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

    #[cfg(feature = "client")]
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
        let names: Vec<&str> = login_modes().filter_map(login_mode_name).collect();
        assert_eq!(
            names,
            [
                "devicecode",
                "interactive",
                "spn",
                "ropc",
                "msi",
                "azurecli",
                "azd",
                "workloadidentity"
            ]
        );
        for mode in login_modes() {
            assert_eq!(parse_login_mode(login_mode_name(mode).unwrap()), Some(mode));
        }
        assert_eq!(parse_login_mode("azurepipelines"), None);
        assert_eq!(login_mode_name(LoginMode::Unspecified), None);
    }

    #[test]
    fn a_profile_login_command_names_no_mode_it_was_not_given() {
        let spec = SessionSpec {
            profile: "prod".into(),
            ..SessionSpec::default()
        };
        assert_eq!(login_command(&spec), "brokerctl login --profile prod");
    }
}
