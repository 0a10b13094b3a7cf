//! The gRPC face of the broker: wire types in, domain calls, wire types out.
//!
//! This is the only module that knows both the protobuf types and the broker's, and the only
//! place where a broker error becomes a gRPC status. Every call first passes the peer check:
//! the caller's uid (SO_PEERCRED / getpeereid) must be the daemon's own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use broker_proto::v1::{self, broker_server, login_event};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Code, Request, Response, Status};

use crate::broker::SpecInput;
use crate::broker::{
    Broker, BrokerError, EventKind, LoginMode, Reason, Selector, SessionEvent, SessionSpec,
    SessionState, SessionStatus,
};
use crate::clock::{AdjustableClock, unix_seconds};
use crate::doctor;
use crate::identity::LoginPrompt;
use crate::identity::credential::{CertificateSource, Supplied};

pub struct BrokerService {
    broker: Arc<Broker>,
    socket: PathBuf,
    started: Instant,
}

impl BrokerService {
    pub fn new(broker: Arc<Broker>, socket: PathBuf) -> Self {
        BrokerService {
            broker,
            socket,
            started: Instant::now(),
        }
    }
}

/// Refuses callers whose uid is not `daemon_uid`. Installed as a tonic interceptor.
pub fn peer_check(daemon_uid: u32) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let peer = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred);
        match peer {
            Some(cred) if cred.uid() == daemon_uid => Ok(request),
            Some(cred) => {
                tracing::warn!(
                    "refused a call from uid {} (pid {:?}): only uid {daemon_uid} may use this \
                     daemon",
                    cred.uid(),
                    cred.pid()
                );
                Err(status(
                    Code::PermissionDenied,
                    v1::ErrorReason::PermissionDenied,
                    format!(
                        "permission denied: this brokerd serves uid {daemon_uid} only, and the \
                         caller is uid {}",
                        cred.uid()
                    ),
                    Vec::new(),
                ))
            }
            None => Err(status(
                Code::PermissionDenied,
                v1::ErrorReason::PermissionDenied,
                "permission denied: the caller's credentials are unknown".into(),
                Vec::new(),
            )),
        }
    }
}

#[tonic::async_trait]
impl broker_server::Broker for BrokerService {
    async fn get_token(
        &self,
        request: Request<v1::GetTokenRequest>,
    ) -> Result<Response<v1::GetTokenResponse>, Status> {
        let caller_pid = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .and_then(|cred| cred.pid());
        let request = request.into_inner();
        let spec = self.session_spec(request.spec)?;
        let supplied = supplied(request.credentials);
        let grant = self
            .broker
            .get_token(&spec, &supplied)
            .await
            .map_err(|e| to_status(&e))?;
        audit_token_served(&grant.session_id.to_string(), caller_pid);
        Ok(Response::new(v1::GetTokenResponse {
            access_token: grant.token.expose().to_string(),
            expires_at_unix: unix_seconds(grant.expires_at),
            session_id: grant.session_id.to_string(),
        }))
    }

    type LoginStream = ReceiverStream<Result<v1::LoginEvent, Status>>;

    async fn login(
        &self,
        request: Request<v1::LoginRequest>,
    ) -> Result<Response<Self::LoginStream>, Status> {
        let request = request.into_inner();
        let spec = self.session_spec(request.spec)?;
        let supplied = supplied(request.credentials);
        let remember_password = request.remember_password;
        let (events, stream) = mpsc::channel(8);
        let broker = self.broker.clone();
        tokio::spawn(async move {
            let prompts = events.clone();
            let prompt = move |prompt: LoginPrompt| {
                let _ = prompts.try_send(Ok(prompt_event(prompt)));
            };
            // A caller that hangs up stops waiting; the login itself runs on for any other
            // caller until it succeeds or times out.
            let outcome = tokio::select! {
                outcome = broker.login(&spec, &supplied, remember_password, &prompt) => outcome,
                () = events.closed() => return,
            };
            let event = match outcome {
                Ok(done) => login_event::Event::LoggedIn(v1::LoggedIn {
                    session_id: done.session_id.to_string(),
                    account: done.account.unwrap_or_default(),
                    expires_at_unix: unix_seconds(done.expires_at),
                }),
                Err(error) => login_event::Event::Failed(v1::LoginFailed {
                    reason: wire_reason(error.reason()) as i32,
                    message: error.to_string(),
                }),
            };
            let _ = events.send(Ok(v1::LoginEvent { event: Some(event) })).await;
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn logout(
        &self,
        request: Request<v1::LogoutRequest>,
    ) -> Result<Response<v1::LogoutResponse>, Status> {
        let request = request.into_inner();
        let selector = match (request.session, request.all) {
            (None, true) => None,
            (Some(session), false) => Some(self.selector(session)?),
            (Some(_), true) => return Err(invalid("give a session or all, not both")),
            (None, false) => return Err(invalid("name a session, or ask for all")),
        };
        let removed = self
            .broker
            .logout(selector.as_ref())
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(v1::LogoutResponse {
            session_ids: removed.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let config = self.broker.config_status();
        Ok(Response::new(v1::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
            socket_path: self.socket.display().to_string(),
            secret_store: self.broker.store_backend().to_string(),
            sessions: self.broker.status().into_iter().map(session_info).collect(),
            pid: std::process::id(),
            config: Some(v1::ConfigInfo {
                path: config.path.display().to_string(),
                loaded_at_unix: unix_seconds(config.loaded_at),
                error: config.error.unwrap_or_default(),
                profiles: self.broker.profiles(),
            }),
        }))
    }

    async fn remember(
        &self,
        request: Request<v1::RememberRequest>,
    ) -> Result<Response<v1::RememberResponse>, Status> {
        let request = request.into_inner();
        let spec = self.session_spec(request.spec)?;
        let id = self
            .broker
            .remember(&spec, &supplied(request.credentials))
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(v1::RememberResponse {
            session_id: id.to_string(),
        }))
    }

    async fn diagnose(
        &self,
        request: Request<v1::DiagnoseRequest>,
    ) -> Result<Response<v1::DiagnoseResponse>, Status> {
        let env = |name: &str| std::env::var(name).ok();
        let sessions = self.broker.status().into_iter().map(|s| s.spec.authority);
        let authorities =
            doctor::authorities(&request.into_inner().authority_hosts, sessions, &env)
                .map_err(|e| invalid(&e.to_string()))?;
        let mut checks =
            doctor::daemon_side(self.broker.store(), self.broker.clock(), &authorities, &env).await;
        // After the secret store's checks: both are about where secrets live.
        let at = checks
            .iter()
            .rposition(|c| c.id == "secret_store" || c.id == "keyring")
            .map_or(0, |i| i + 1);
        checks.insert(at, doctor::this_process_protection());
        Ok(Response::new(v1::DiagnoseResponse {
            checks: checks.into_iter().map(wire_check).collect(),
        }))
    }

    type WatchEventsStream = ReceiverStream<Result<v1::SessionEvent, Status>>;

    async fn watch_events(
        &self,
        _request: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let mut events = self.broker.watch();
        let (tx, stream) = mpsc::channel(16);
        let broker = self.broker.clone();
        tokio::spawn(async move {
            loop {
                let wire = tokio::select! {
                    event = events.recv() => match event {
                        Ok(event) => wire_event(&broker, event),
                        Err(broadcast::error::RecvError::Lagged(missed)) => v1::SessionEvent {
                            kind: v1::SessionEventKind::Lagged as i32,
                            missed,
                            ..Default::default()
                        },
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = tx.closed() => return,
                };
                if tx.send(Ok(wire)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn refresh(
        &self,
        request: Request<v1::RefreshRequest>,
    ) -> Result<Response<v1::RefreshResponse>, Status> {
        let session = request
            .into_inner()
            .session
            .ok_or_else(|| invalid("name the session to refresh"))?;
        let grant = self
            .broker
            .refresh(&self.selector(session)?)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(v1::RefreshResponse {
            session_id: grant.session_id.to_string(),
            expires_at_unix: unix_seconds(grant.token.expires_at),
        }))
    }
}

impl BrokerService {
    fn session_spec(&self, spec: Option<v1::SessionSpec>) -> Result<SessionSpec, Status> {
        let spec = spec.ok_or_else(|| invalid("the request names no session"))?;
        let login_mode = match v1::LoginMode::try_from(spec.login_mode) {
            Ok(v1::LoginMode::Unspecified) => None,
            Ok(mode) => LoginMode::from_name(broker_proto::login_mode_name(mode)),
            Err(_) => {
                return Err(invalid(&format!(
                    "login mode {} is not supported by this brokerd",
                    spec.login_mode
                )));
            }
        };
        let input = SpecInput {
            environment: spec.environment,
            authority_host: spec.authority_host,
            tenant_id: spec.tenant_id,
            client_id: spec.client_id,
            server_id: spec.server_id,
            login_mode,
            username: spec.username,
            identity_resource_id: spec.identity_resource_id,
        };
        self.broker
            .resolve(&spec.profile, &input)
            .map_err(|e| to_status(&e))
    }

    fn selector(&self, session: v1::SessionRef) -> Result<Selector, Status> {
        match session.target {
            Some(v1::session_ref::Target::SessionId(id)) => Ok(Selector::Id(id)),
            Some(v1::session_ref::Target::Spec(spec)) => {
                Ok(Selector::Spec(self.session_spec(Some(spec))?))
            }
            None => Err(invalid("the session reference is empty")),
        }
    }
}

fn wire_spec(spec: &SessionSpec) -> v1::SessionSpec {
    v1::SessionSpec {
        environment: spec.environment.clone(),
        authority_host: spec.authority_host.clone(),
        tenant_id: spec.tenant_id.clone(),
        client_id: spec.client_id.clone(),
        server_id: spec.server_id.clone(),
        login_mode: broker_proto::parse_login_mode(spec.login_mode.name())
            .unwrap_or(v1::LoginMode::Unspecified) as i32,
        profile: String::new(),
        username: spec.username.clone(),
        identity_resource_id: spec.identity_resource_id.clone(),
    }
}

/// The credentials a caller sent, as the broker takes them. Empty strings are "not given".
fn supplied(credentials: Option<v1::Credentials>) -> Supplied {
    let c = credentials.unwrap_or_default();
    let secret = |s: String| (!s.is_empty()).then(|| secrecy::SecretString::from(s));
    let path = |s: String| (!s.is_empty()).then(|| std::path::PathBuf::from(s));
    Supplied {
        client_secret: secret(c.client_secret),
        certificate: path(c.client_certificate_path).map(|path| CertificateSource {
            path,
            password: secret(c.client_certificate_password),
        }),
        federated_token_file: path(c.federated_token_file),
        password: secret(c.password),
    }
}

fn session_info(status: SessionStatus) -> v1::SessionInfo {
    v1::SessionInfo {
        session_id: status.id.to_string(),
        spec: Some(wire_spec(&status.spec)),
        authority: status.spec.authority.to_string(),
        account: status.account.unwrap_or_default(),
        state: match status.state {
            SessionState::Fresh => v1::SessionState::Fresh,
            SessionState::RefreshDue => v1::SessionState::RefreshDue,
            SessionState::Refreshing => v1::SessionState::Refreshing,
            SessionState::Degraded => v1::SessionState::Degraded,
            SessionState::LoginRequired => v1::SessionState::LoginRequired,
        } as i32,
        token_expires_at_unix: unix_or_zero(status.token_expires_at),
        last_refresh_unix: unix_or_zero(status.last_refresh),
        last_error: status.last_error.unwrap_or_default(),
        next_refresh_unix: unix_or_zero(status.next_refresh),
        tokens_served: status.tokens_served,
        refreshes: status.refreshes,
        refresh_failures: status.refresh_failures,
        last_error_codes: status.last_error_codes,
        last_served_unix: unix_or_zero(status.last_served),
    }
}

fn wire_event(broker: &Broker, event: SessionEvent) -> v1::SessionEvent {
    let kind = match event.kind {
        EventKind::Refreshed => v1::SessionEventKind::Refreshed,
        EventKind::RefreshFailed => v1::SessionEventKind::RefreshFailed,
        EventKind::LoginRequired => v1::SessionEventKind::LoginRequired,
        EventKind::LoggedIn => v1::SessionEventKind::LoggedIn,
        EventKind::LoggedOut => v1::SessionEventKind::LoggedOut,
    };
    v1::SessionEvent {
        kind: kind as i32,
        at_unix: unix_seconds(event.at),
        message: event.message.unwrap_or_default(),
        session: broker.session_status(&event.session_id).map(session_info),
        session_id: event.session_id.to_string(),
        missed: 0,
    }
}

fn wire_check(check: doctor::Check) -> v1::Check {
    v1::Check {
        id: check.id,
        level: match check.level {
            doctor::Level::Pass => v1::CheckLevel::Pass,
            doctor::Level::Warn => v1::CheckLevel::Warn,
            doctor::Level::Fail => v1::CheckLevel::Fail,
        } as i32,
        summary: check.summary,
        fix: check.fix.unwrap_or_default(),
    }
}

fn unix_or_zero(time: Option<std::time::SystemTime>) -> i64 {
    time.map(unix_seconds).unwrap_or(0)
}

fn prompt_event(prompt: LoginPrompt) -> v1::LoginEvent {
    let event = match prompt {
        LoginPrompt::DeviceCode {
            verification_uri,
            user_code,
            message,
            expires_at,
        } => login_event::Event::DeviceCode(v1::DeviceCode {
            verification_uri,
            user_code,
            message,
            expires_at_unix: unix_seconds(expires_at),
        }),
        LoginPrompt::OpenUrl { url } => login_event::Event::OpenUrl(v1::OpenUrl { url }),
    };
    v1::LoginEvent { event: Some(event) }
}

fn wire_reason(reason: Reason) -> v1::ErrorReason {
    match reason {
        Reason::LoginRequired => v1::ErrorReason::LoginRequired,
        Reason::Config => v1::ErrorReason::Config,
        Reason::IdpUnavailable => v1::ErrorReason::IdpUnavailable,
        Reason::StoreUnavailable => v1::ErrorReason::StoreUnavailable,
        Reason::NotFound => v1::ErrorReason::NotFound,
        Reason::LoginFailed => v1::ErrorReason::LoginFailed,
        Reason::Internal => v1::ErrorReason::Internal,
    }
}

/// The one mapping from broker errors to gRPC statuses.
fn to_status(error: &BrokerError) -> Status {
    let reason = error.reason();
    let code = match reason {
        Reason::LoginRequired => Code::Unauthenticated,
        Reason::Config => Code::InvalidArgument,
        Reason::IdpUnavailable | Reason::StoreUnavailable => Code::Unavailable,
        Reason::NotFound => Code::NotFound,
        Reason::LoginFailed => Code::Aborted,
        Reason::Internal => Code::Internal,
    };
    let message = match error {
        BrokerError::LoginRequired { spec, .. } => format!(
            "{error}; run: {}",
            broker_proto::login_command(&wire_spec(spec))
        ),
        _ => error.to_string(),
    };
    status(
        code,
        wire_reason(reason),
        message,
        error.idp_codes().to_vec(),
    )
}

fn invalid(message: &str) -> Status {
    status(
        Code::InvalidArgument,
        v1::ErrorReason::Config,
        message.to_string(),
        Vec::new(),
    )
}

fn status(code: Code, reason: v1::ErrorReason, message: String, idp_codes: Vec<i64>) -> Status {
    broker_proto::status_with_detail(
        code,
        v1::ErrorDetail {
            reason: reason as i32,
            message,
            idp_error_codes: idp_codes,
        },
    )
}

/// `tokenbroker.v1.TestClock`, served only by `brokerd --test-clock`.
pub struct TestClockService {
    pub clock: Arc<AdjustableClock>,
    pub broker: Arc<Broker>,
}

#[tonic::async_trait]
impl broker_proto::v1::test_clock_server::TestClock for TestClockService {
    async fn advance(
        &self,
        request: Request<v1::AdvanceClockRequest>,
    ) -> Result<Response<v1::AdvanceClockResponse>, Status> {
        let seconds = request.into_inner().seconds;
        let now = self.clock.advance(seconds);
        tracing::info!("test clock moved by {seconds} s");
        self.broker.wake_scheduler();
        Ok(Response::new(v1::AdvanceClockResponse {
            now_unix: unix_seconds(now),
        }))
    }
}

/// The audit trail: one line per token handed out, naming the session, the calling process
/// and its parent (the caller is usually broker-shim, whose parent is the kubectl that wanted
/// the token); never the token. On the `audit` target, so that a log filter can turn it off on
/// its own.
fn audit_token_served(session: &str, pid: Option<i32>) {
    if !tracing::enabled!(target: "audit", tracing::Level::INFO) {
        return;
    }
    let describe = |pid: Option<i32>| {
        let exe = pid
            .and_then(executable_of)
            .map_or_else(|| "unknown".to_string(), |e| e.display().to_string());
        (
            pid.map_or_else(|| "unknown".to_string(), |p| p.to_string()),
            exe,
        )
    };
    let (parent_pid, parent_exe) = describe(pid.and_then(parent_of));
    let (pid, exe) = describe(pid);
    tracing::info!(
        target: "audit",
        session = %session,
        pid = %pid,
        exe = %exe,
        parent_pid = %parent_pid,
        parent_exe = %parent_exe,
        "audit: token served"
    );
}

/// The parent of process `pid`, if the OS says and it still runs.
#[cfg(target_os = "linux")]
fn parent_of(pid: i32) -> Option<i32> {
    // The command name (field 2) is in parentheses and may hold anything, spaces included: the
    // fields after the last ')' are plain. The parent is the second of them.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(target_os = "macos")]
fn parent_of(pid: i32) -> Option<i32> {
    // SAFETY: proc_bsdinfo is plain data; proc_pidinfo writes at most its size into it.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as i32;
    let written =
        unsafe { libc::proc_pidinfo(pid, libc::PROC_PIDTBSDINFO, 0, (&raw mut info).cast(), size) };
    (written == size).then(|| info.pbi_ppid as i32)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn parent_of(_pid: i32) -> Option<i32> {
    None
}

/// The executable of process `pid`, if the OS says and it still runs.
#[cfg(target_os = "linux")]
fn executable_of(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

#[cfg(target_os = "macos")]
fn executable_of(pid: i32) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buffer = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    // SAFETY: the buffer is as long as the size given; proc_pidpath writes at most that much.
    let written =
        unsafe { libc::proc_pidpath(pid, buffer.as_mut_ptr().cast(), buffer.len() as u32) };
    (written > 0).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(&buffer[..written as usize])))
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn executable_of(_pid: i32) -> Option<PathBuf> {
    None
}
