//! Serving the broker on its socket until asked to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use broker_proto::v1::broker_server::BrokerServer;
use broker_proto::v1::test_clock_server::TestClockServer;
use tonic::service::interceptor::InterceptedService;

use crate::broker::Broker;
use crate::hardening::Reclaimer;
use crate::incoming::{self, Accept, Incoming};
#[cfg(unix)]
use crate::listener::Listener;
use crate::rpc::{BrokerService, ForwardSocket, TestClockService, peer_check};

/// How long in-flight calls (a login waiting for its user, say) may run after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request brokerd reads. The largest honest one, a GetToken carrying a client
/// secret and file paths, is a few hundred bytes; the cap keeps a hostile client from making
/// the daemon buffer megabytes per call.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Calls one connection may have running at once (kubectl and the shim make one). More streams
/// are refused at the HTTP/2 level, so one client cannot hold the whole daemon.
pub const CALLS_PER_CONNECTION: u32 = 32;

/// The largest header block brokerd reads; gRPC's headers are a few hundred bytes.
const MAX_HEADER_BYTES: u32 = 16 * 1024;

/// Adds brokerd's version and protocol revision to every answer, errors included.
fn stamp_version<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    headers.insert(
        broker_proto::VERSION_HEADER,
        http::HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    headers.insert(
        broker_proto::PROTOCOL_HEADER,
        http::HeaderValue::from(broker_proto::PROTOCOL_VERSION),
    );
    response
}

/// Serves until `shutdown` completes and in-flight calls finish (or the drain time runs out),
/// then removes the socket files. `forward` is the forwarding socket beside the main one (or
/// why there is none), served by the same broker with every call but GetToken refused.
/// `test_clock` adds the clock-moving service tests use, on the main socket only.
#[cfg(unix)]
pub async fn serve(
    listener: Listener,
    forward: Result<Listener, String>,
    broker: Arc<Broker>,
    test_clock: Option<TestClockService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let path = listener.path.clone();
    let uid = broker_proto::current_uid();
    let socket = tokio::net::UnixListener::from_std(listener.socket.try_clone()?)?;
    let forward_socket = match &forward {
        Ok(listener) => ForwardSocket::Serving(listener.path.clone()),
        Err(why) => ForwardSocket::NotServed(why.clone()),
    };
    let service = BrokerService::new(broker, path.clone(), forward_socket);
    let stop = Stop::on(shutdown);
    let reclaimer = Reclaimer::start();
    let forwarded = match &forward {
        Ok(listener) => Some((
            tokio::net::UnixListener::from_std(listener.socket.try_clone()?)?,
            service.forwarded(),
        )),
        Err(_) => None,
    };
    let main = one_socket(
        socket,
        service,
        test_clock,
        peer_check(uid),
        reclaimer.clone(),
        stop.stopped(),
    );
    let forward_stopped = stop.stopped();
    let servers = async move {
        match forwarded {
            Some((socket, service)) => {
                let (main, forwarded) = tokio::join!(
                    main,
                    one_socket(
                        socket,
                        service,
                        None,
                        peer_check(uid),
                        reclaimer,
                        forward_stopped
                    )
                );
                main.and(forwarded)
            }
            None => main.await,
        }
    };
    let result = stop.drained(servers).await;
    listener.remove();
    drop(listener);
    if let Ok(forward) = forward {
        forward.remove();
    }
    result
}

/// Windows: serves on the named pipe until `shutdown` completes and in-flight calls finish (or
/// the drain time runs out). There is no forwarding socket: a forward reaches brokerd through
/// OpenSSH's Unix socket forwarding, which Windows's sshd does not do for pipes.
#[cfg(windows)]
pub async fn serve(
    listener: crate::pipe::PipeListener,
    broker: Arc<Broker>,
    test_clock: Option<TestClockService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = BrokerService::new(
        broker,
        listener.path.clone(),
        ForwardSocket::NotServed("a forwarding socket is served on Linux and macOS only".into()),
    );
    let stop = Stop::on(shutdown);
    let server = one_socket(
        listener.accept(),
        service,
        test_clock,
        peer_check(),
        Reclaimer::start(),
        stop.stopped(),
    );
    stop.drained(server).await
}

/// What a shutdown sets off: the servers stop accepting, and in-flight calls get
/// [`DRAIN_TIMEOUT`] to finish.
struct Stop {
    stop: tokio::sync::watch::Receiver<bool>,
    stopping: tokio::sync::oneshot::Receiver<()>,
}

impl Stop {
    /// Watches `shutdown` from a task of its own.
    fn on(shutdown: impl Future<Output = ()> + Send + 'static) -> Stop {
        let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            let _ = stopping_tx.send(());
        });
        Stop { stop, stopping }
    }

    /// Completes when the shutdown starts: a server's cue to stop accepting.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    }

    /// Runs `servers` to their end, or until the drain time after the shutdown runs out.
    async fn drained(
        self,
        servers: impl Future<Output = Result<(), tonic::transport::Error>>,
    ) -> std::io::Result<()> {
        let stopping = self.stopping;
        let drain_deadline = async move {
            if stopping.await.is_ok() {
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = servers => result.map_err(std::io::Error::other),
            () = drain_deadline => {
                tracing::warn!("in-flight calls did not finish within {} s; stopping anyway", DRAIN_TIMEOUT.as_secs());
                Ok(())
            }
        }
    }
}

/// tonic on one socket: the peer check in front, the version headers on every answer.
async fn one_socket<L: Accept + Send + 'static>(
    socket: L,
    service: BrokerService,
    test_clock: Option<TestClockService>,
    check: impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>
    + Clone
    + Send
    + Sync
    + 'static,
    reclaimer: Reclaimer,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let broker_server = BrokerServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(CALLS_PER_CONNECTION))
        .http2_max_header_list_size(Some(MAX_HEADER_BYTES))
        // A client that no longer answers pings is gone; one that does keeps its connection.
        .http2_keepalive_interval(Some(incoming::KEEPALIVE))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(tower::util::MapRequestLayer::new(
            move |request: http::Request<tonic::body::Body>| {
                reclaimer.poke();
                request
            },
        ))
        .layer(tower::util::MapResponseLayer::new(stamp_version))
        .add_service(InterceptedService::new(broker_server, check.clone()))
        .add_optional_service(
            test_clock.map(|clock| TestClockServer::with_interceptor(clock, check)),
        )
        .serve_with_incoming_shutdown(Incoming::new(socket, incoming::Limits::serving()), stopped)
        .await
}
