//! The gRPC face of the broker: wire types in, domain calls, wire types out.
//!
//! The only module that knows both the protobuf types and the broker's: the handlers here,
//! the conversions in [`wire`], the one mapping from broker errors to statuses in [`status`],
//! the audit trail in [`audit`]. Every call first passes the peer check: the caller's uid
//! (SO_PEERCRED / getpeereid) must be the daemon's own.
//!
//! The same service answers on two sockets. On the forwarding socket ([`Origin::Forwarded`])
//! every call but GetToken is refused, and GetToken takes no credentials and serves only the
//! sessions allowed there (see `broker::forwarding`).

mod audit;
mod status;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use broker_proto::v1::{self, broker_server, login_event};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
#[cfg(unix)]
use tonic::transport::server::UdsConnectInfo;
use tonic::{Code, Request, Response, Status};

use crate::broker::{Broker, Selector};
use crate::clock::{AdjustableClock, unix_seconds};
use crate::doctor;
use crate::identity::LoginPrompt;
use crate::identity::credential::Supplied;
use crate::spec::SessionSpec;
use status::{error_detail, invalid, status, to_status};

/// Which socket a call came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `broker.sock`: the user's own machine.
    Local,
    /// `forward.sock`: wherever the user forwarded brokerd to.
    Forwarded,
}

/// The forwarding socket as status reports it: where brokerd serves it, or why it does not.
#[derive(Clone, Debug)]
pub enum ForwardSocket {
    Serving(PathBuf),
    NotServed(String),
}

#[derive(Clone)]
pub struct BrokerService {
    broker: Arc<Broker>,
    socket: PathBuf,
    forward: ForwardSocket,
    origin: Origin,
    started: Instant,
}

impl BrokerService {
    pub fn new(broker: Arc<Broker>, socket: PathBuf, forward: ForwardSocket) -> Self {
        BrokerService {
            broker,
            socket,
            forward,
            origin: Origin::Local,
            started: Instant::now(),
        }
    }

    /// The same service, answering on the forwarding socket.
    pub fn forwarded(&self) -> Self {
        BrokerService {
            origin: Origin::Forwarded,
            ..self.clone()
        }
    }

    /// Refuses `what` on the forwarding socket.
    fn local_only(&self, what: &str) -> Result<(), Status> {
        match self.origin {
            Origin::Local => Ok(()),
            Origin::Forwarded => Err(status(
                Code::PermissionDenied,
                v1::ErrorReason::PermissionDenied,
                format!(
                    "permission denied: {what} is not served on the forwarding socket, only \
                     tokens of the sessions allowed there; run it on the machine brokerd runs on"
                ),
            )),
        }
    }
}

/// Refuses callers whose uid is not `daemon_uid`. Installed as a tonic interceptor.
#[cfg(unix)]
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
                ))
            }
            None => Err(status(
                Code::PermissionDenied,
                v1::ErrorReason::PermissionDenied,
                "permission denied: the caller's credentials are unknown".into(),
            )),
        }
    }
}

/// Windows: refuses calls on connections the pipe did not vet (whose client's process was
/// checked to run as the user, `crate::pipe`). Installed as a tonic interceptor.
#[cfg(windows)]
pub fn peer_check() -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        if request
            .extensions()
            .get::<crate::pipe::PipeConnectInfo>()
            .is_some()
        {
            Ok(request)
        } else {
            Err(status(
                Code::PermissionDenied,
                v1::ErrorReason::PermissionDenied,
                "permission denied: the caller's credentials are unknown".into(),
            ))
        }
    }
}

/// The process that made a call, where the transport says.
fn caller_pid<T>(request: &Request<T>) -> Option<i32> {
    #[cfg(unix)]
    {
        request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .and_then(|cred| cred.pid())
    }
    #[cfg(windows)]
    {
        request
            .extensions()
            .get::<crate::pipe::PipeConnectInfo>()
            .and_then(|info| i32::try_from(info.pid).ok())
    }
}

#[tonic::async_trait]
impl broker_server::Broker for BrokerService {
    async fn get_token(
        &self,
        request: Request<v1::GetTokenRequest>,
    ) -> Result<Response<v1::GetTokenResponse>, Status> {
        let caller_pid = caller_pid(&request);
        let request = request.into_inner();
        let spec = self.session_spec(request.spec)?;
        let result = match self.origin {
            Origin::Local => {
                let supplied =
                    Supplied::try_from(request.credentials).map_err(|e| status::invalid(&e))?;
                self.broker.get_token(&spec, &supplied).await
            }
            Origin::Forwarded => {
                if request
                    .credentials
                    .is_some_and(|c| c != v1::Credentials::default())
                {
                    return Err(status(
                        Code::PermissionDenied,
                        v1::ErrorReason::PermissionDenied,
                        "permission denied: the forwarding socket takes no credentials; keep \
                         them on the machine brokerd runs on (brokerctl login there)"
                            .into(),
                    ));
                }
                self.broker.get_token_forwarded(&spec).await
            }
        };
        let grant = match result {
            Ok(grant) => grant,
            Err(error) => {
                // Nobody at a terminal here can sign in: one pending login, one notice.
                let cannot_prompt = !request.interactive || self.origin == Origin::Forwarded;
                if cannot_prompt && error.reason() == crate::broker::Reason::LoginRequired {
                    self.broker.login_needed_without_terminal(&spec);
                }
                return Err(match self.origin {
                    Origin::Local => to_status(&error),
                    Origin::Forwarded => status::forwarded(&error),
                });
            }
        };
        audit::token_served(
            grant.session_id.as_str(),
            caller_pid,
            self.origin == Origin::Forwarded,
        );
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
        self.local_only("signing in")?;
        let request = request.into_inner();
        let spec = self.session_spec(request.spec)?;
        let supplied = Supplied::try_from(request.credentials).map_err(|e| status::invalid(&e))?;
        let remember_password = request.remember_password;
        let allow_forwarding = request.allow_forwarding;
        let (events, stream) = mpsc::channel(8);
        let broker = self.broker.clone();
        tokio::spawn(async move {
            let prompts = events.clone();
            let prompt = move |prompt: LoginPrompt| {
                let _ = prompts.try_send(Ok(v1::LoginEvent::from(prompt)));
            };
            // A caller that hangs up stops waiting; the login itself runs on for any other
            // caller until it succeeds or times out.
            let outcome = tokio::select! {
                outcome = broker.login(&spec, &supplied, remember_password, &prompt) => outcome,
                () = events.closed() => return,
            };
            if allow_forwarding
                && let Ok(done) = &outcome
                && let Err(error) = broker
                    .set_forwarding(&Selector::Id(done.session_id.to_string()), true)
                    .await
            {
                tracing::warn!("session {}: {error}", done.session_id);
            }
            let event = match outcome {
                Ok(done) => login_event::Event::LoggedIn(v1::LoggedIn {
                    session_id: done.session_id.to_string(),
                    account: done.account.unwrap_or_default(),
                    expires_at_unix: unix_seconds(done.expires_at),
                }),
                Err(error) => {
                    let detail = error_detail(&error);
                    login_event::Event::Failed(v1::LoginFailed {
                        reason: detail.reason,
                        message: detail.message,
                    })
                }
            };
            let _ = events.send(Ok(v1::LoginEvent { event: Some(event) })).await;
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn logout(
        &self,
        request: Request<v1::LogoutRequest>,
    ) -> Result<Response<v1::LogoutResponse>, Status> {
        self.local_only("logout")?;
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
            secret_store: self.broker.store_backend().to_string(),
        }))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        self.local_only("status")?;
        let config = self.broker.config_status();
        let (forward_socket, forward_socket_problem) = match &self.forward {
            ForwardSocket::Serving(path) => (path.display().to_string(), String::new()),
            ForwardSocket::NotServed(why) => (String::new(), why.clone()),
        };
        Ok(Response::new(v1::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
            socket_path: self.socket.display().to_string(),
            secret_store: self.broker.store_backend().to_string(),
            secret_store_caveat: self.broker.store().caveat().unwrap_or_default().into(),
            sessions: self
                .broker
                .status()
                .into_iter()
                .map(v1::SessionInfo::from)
                .collect(),
            forward_socket,
            forward_socket_problem,
            pending_logins: self
                .broker
                .pending_logins()
                .into_iter()
                .map(v1::PendingLogin::from)
                .collect(),
            pid: std::process::id(),
            secret_store_problem: self.broker.store_problem().unwrap_or_default(),
            index_error: self.broker.index_error().unwrap_or_default(),
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
        self.local_only("keeping credentials")?;
        let request = request.into_inner();
        let spec = self.session_spec(request.spec)?;
        let supplied = Supplied::try_from(request.credentials).map_err(|e| status::invalid(&e))?;
        let id = self
            .broker
            .remember(&spec, &supplied)
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
        self.local_only("doctor")?;
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
        checks.insert(at + 1, self.session_index_check());
        Ok(Response::new(v1::DiagnoseResponse {
            checks: checks.into_iter().map(v1::Check::from).collect(),
        }))
    }

    type WatchEventsStream = ReceiverStream<Result<v1::SessionEvent, Status>>;

    async fn watch_events(
        &self,
        _request: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.local_only("watching sessions")?;
        let mut events = self.broker.watch();
        let (tx, stream) = mpsc::channel(16);
        let broker = self.broker.clone();
        tokio::spawn(async move {
            loop {
                let wire = tokio::select! {
                    event = events.recv() => match event {
                        Ok(event) => wire::session_event(&broker, event),
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
        self.local_only("refresh")?;
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

    async fn set_forwarding(
        &self,
        request: Request<v1::SetForwardingRequest>,
    ) -> Result<Response<v1::SetForwardingResponse>, Status> {
        self.local_only("allowing forwarding")?;
        let request = request.into_inner();
        let session = request
            .session
            .ok_or_else(|| invalid("name the session to allow or deny"))?;
        let id = self
            .broker
            .set_forwarding(&self.selector(session)?, request.allowed)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(v1::SetForwardingResponse {
            session_id: id.to_string(),
        }))
    }
}

impl BrokerService {
    /// Whether the session index could be written the last time, for doctor.
    fn session_index_check(&self) -> doctor::Check {
        let Some(path) = self.broker.index_path() else {
            return doctor::Check::pass(
                "session_index",
                "no session index: the secret store forgets everything when brokerd stops",
            );
        };
        match self.broker.index_error() {
            None => {
                doctor::Check::pass("session_index", format!("{} is up to date", path.display()))
            }
            Some(error) => doctor::Check::fail(
                "session_index",
                format!("the session index could not be written: {error}"),
                format!(
                    "make room in {} (a full disk?); the sessions work meanwhile, brokerd \
                     writes the index again at the next login or refresh, and a restart finds \
                     the sessions through the secret store",
                    path.parent()
                        .map_or_else(String::new, |d| d.display().to_string())
                ),
            ),
        }
    }

    fn session_spec(&self, spec: Option<v1::SessionSpec>) -> Result<SessionSpec, Status> {
        let spec = spec.ok_or_else(|| invalid("the request names no session"))?;
        let (profile, input) = crate::spec::SpecInput::from_wire(spec).map_err(|mode| {
            invalid(&format!(
                "login mode {mode} is not supported by this brokerd"
            ))
        })?;
        self.broker
            .resolve(&profile, &input)
            .map_err(|e| to_status(&e))
    }

    fn selector(&self, session: v1::SessionRef) -> Result<Selector, Status> {
        match session.target {
            Some(v1::session_ref::Target::SessionId(id)) => Ok(Selector::Id(id)),
            Some(v1::session_ref::Target::Spec(spec)) => {
                Ok(Selector::Spec(Box::new(self.session_spec(Some(spec))?)))
            }
            None => Err(invalid("the session reference is empty")),
        }
    }
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
