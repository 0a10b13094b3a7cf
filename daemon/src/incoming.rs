//! The connections brokerd accepts, bounded: at most [`max_connections`] at once, each closed
//! when it says nothing for too long.
//!
//! Only the user's own processes (and root) can reach the socket, but one of them holding
//! thousands of idle connections used to exhaust brokerd's descriptors: accept() then failed
//! with EMFILE in a loop (tonic retries at once: 120% CPU) and new clients hung. So:
//! - a connection over the cap takes the place of the oldest one that has not said a word yet
//!   (closed at once), so that a flood of silent connections never keeps a real client out;
//!   when every connection has spoken, the new one is closed and its client hears at once;
//! - a connection must send its first bytes within [`GREETING`] (a client speaks first in
//!   HTTP/2) and then never goes [`IDLE`] without a byte (brokerd's HTTP/2 keepalive pings,
//!   answered by any live client, count);
//! - an accept error (EMFILE from elsewhere) pauses accepting for a moment instead of spinning.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use std::collections::VecDeque;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
#[cfg(unix)]
use tokio::net::{UnixListener, UnixStream};

use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tonic::transport::server::Connected;

/// How long a new connection has to send its first bytes.
pub const GREETING: Duration = Duration::from_secs(10);
/// How long an open connection may go without a byte from its client. More than the HTTP/2
/// keepalive interval, so that a live client (a `status --watch`, a login waiting for its
/// user) always answers in time.
pub const IDLE: Duration = Duration::from_secs(5 * 60);
/// brokerd's keepalive pings on connections with nothing going on.
pub const KEEPALIVE: Duration = Duration::from_secs(60);
/// How long accepting pauses after accept() fails.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Descriptors kept free for everything else brokerd opens (the secret store's bus, the IdP's
/// connections, the log, the index).
#[cfg(unix)]
const RESERVED_DESCRIPTORS: u64 = 128;
#[cfg(unix)]
const MOST_CONNECTIONS: u64 = 4096;

/// The most client connections at once: well below the open-file limit, and no more than any
/// honest use needs (a thousand parallel kubectl runs).
#[cfg(unix)]
pub fn max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let cap = limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .clamp(16, MOST_CONNECTIONS);
    usize::try_from(cap).unwrap_or(16)
}

/// On Windows a pipe instance is a kernel object, not a slot in a per-process table: the cap is
/// the most any honest use needs.
#[cfg(windows)]
pub fn max_connections() -> usize {
    1024
}

/// Where connections come from: brokerd's Unix socket, or on Windows the named pipe's
/// accepted (and already vetted) instances.
pub trait Accept: Unpin {
    type Conn: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static;
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Conn>>;
}

#[cfg(unix)]
impl Accept for UnixListener {
    type Conn = UnixStream;
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<UnixStream>> {
        UnixListener::poll_accept(self, cx).map_ok(|(stream, _)| stream)
    }
}

/// How many connections, and how much silence from each.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub greeting: Duration,
    pub idle: Duration,
}

impl Limits {
    /// What brokerd serves with.
    pub fn serving() -> Self {
        Limits {
            max_connections: max_connections(),
            greeting: GREETING,
            idle: IDLE,
        }
    }
}

/// The accepted connections, as tonic's server takes them.
pub struct Incoming<L> {
    listener: L,
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Connections in the order they came, to find the oldest that has not spoken.
    silent: VecDeque<Weak<Liveness>>,
    pause: Option<Pin<Box<Sleep>>>,
    /// When a refusal was last logged: one line a second at most, whatever the flood.
    last_refusal_log: Option<Instant>,
}

impl<L: Accept> Incoming<L> {
    pub fn new(listener: L, limits: Limits) -> Self {
        Incoming {
            listener,
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            silent: VecDeque::new(),
            pause: None,
            last_refusal_log: None,
        }
    }

    /// Closes the oldest connection that has not said a word yet; false when there is none.
    fn evict_one_silent(&mut self) -> bool {
        while let Some(weak) = self.silent.pop_front() {
            if let Some(liveness) = weak.upgrade()
                && !liveness.spoke.load(Ordering::SeqCst)
            {
                liveness.evict.notify_one();
                return true;
            }
        }
        false
    }

    /// Remembers a new connection, forgetting the ones that are gone or have spoken.
    fn track(&mut self, liveness: &Arc<Liveness>) {
        if self.silent.len() >= 2 * self.limits.max_connections {
            self.silent
                .retain(|w| w.upgrade().is_some_and(|l| !l.spoke.load(Ordering::SeqCst)));
        }
        self.silent.push_back(Arc::downgrade(liveness));
    }

    fn log_refusal(&mut self, what: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .last_refusal_log
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1))
        {
            self.last_refusal_log = Some(now);
            tracing::warn!("{}", what());
        }
    }
}

impl<L: Accept> Stream for Incoming<L> {
    type Item = io::Result<Guarded<L::Conn>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            match ready!(self.listener.poll_accept(cx)) {
                Ok(stream) => {
                    let slot = match self.slots.clone().try_acquire_owned() {
                        Ok(slot) => Some(slot),
                        // Full: a silent connection makes room (its slot is free a moment
                        // later; until then this one goes without).
                        Err(_) if self.evict_one_silent() => {
                            self.log_refusal(|| {
                                "closed silent connections to make room: brokerd holds as many \
                                 as it serves at once (a client opens connections without \
                                 using them?)"
                                    .to_string()
                            });
                            None
                        }
                        Err(_) => {
                            // Closed at once: the client hears, instead of waiting in a queue.
                            drop(stream);
                            self.log_refusal(|| {
                                "refused a connection: brokerd already holds as many as it \
                                 serves at once, all of them busy"
                                    .to_string()
                            });
                            continue;
                        }
                    };
                    let liveness = Arc::new(Liveness::default());
                    self.track(&liveness);
                    let limits = self.limits;
                    return Poll::Ready(Some(Ok(Guarded::new(stream, slot, liveness, limits))));
                }
                Err(error) => {
                    self.log_refusal(|| format!("cannot accept a connection: {error}"));
                    self.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_PAUSE)));
                }
            }
        }
    }
}

/// Whether a connection's client has spoken, and the call to close it to make room.
#[derive(Default)]
struct Liveness {
    spoke: AtomicBool,
    evict: Arc<Notify>,
}

/// One accepted connection, holding its slot, closed when its client falls silent.
pub struct Guarded<S> {
    stream: S,
    _slot: Option<OwnedSemaphorePermit>,
    liveness: Arc<Liveness>,
    /// Until the client speaks: done when the connection is to make room for another.
    evicted: Option<Pin<Box<OwnedNotified>>>,
    /// Fires at the end of the current silence allowance.
    timer: Pin<Box<Sleep>>,
    /// When the client last sent a byte (`None`: not yet).
    last_read: Option<Instant>,
    idle: Duration,
}

impl<S> Guarded<S> {
    fn new(
        stream: S,
        slot: Option<OwnedSemaphorePermit>,
        liveness: Arc<Liveness>,
        limits: Limits,
    ) -> Self {
        let evicted = Some(Box::pin(liveness.evict.clone().notified_owned()));
        Guarded {
            stream,
            _slot: slot,
            liveness,
            evicted,
            timer: Box::pin(tokio::time::sleep(limits.greeting)),
            last_read: None,
            idle: limits.idle,
        }
    }

    /// Ready with an error once the client has been silent for longer than allowed. The timer
    /// is moved only when it fires, so reads cost no timer update.
    fn poll_silence(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if let Some(evicted) = self.evicted.as_mut()
            && evicted.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "closed to make room: the client had sent nothing",
            ));
        }
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let Some(last) = self.last_read else {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing after connecting",
                ));
            };
            let end = last + self.idle;
            if Instant::now() >= end {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client went silent",
                ));
            }
            self.timer.as_mut().reset(end);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    if this.last_read.is_none() {
                        this.liveness.spoke.store(true, Ordering::SeqCst);
                        this.evicted = None;
                    }
                    this.last_read = Some(Instant::now());
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.poll_silence(cx) {
                Poll::Ready(error) => Poll::Ready(Err(error)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl<S: Connected> Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn listener() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        (dir, path, listener)
    }

    fn limits(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            greeting: Duration::from_millis(100),
            idle: Duration::from_millis(300),
        }
    }

    async fn next(incoming: &mut Incoming<UnixListener>) -> Guarded<UnixStream> {
        std::future::poll_fn(|cx| Pin::new(&mut *incoming).poll_next(cx))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_that_never_speaks_is_closed_after_its_greeting_time() {
        let (_dir, path, listener) = listener();
        let mut incoming = Incoming::new(listener, limits(4));
        let _client = UnixStream::connect(&path).await.unwrap();
        let mut server = next(&mut incoming).await;
        let mut buf = [0u8; 8];
        let error = server.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_client_that_speaks_now_and_then_is_kept() {
        let (_dir, path, listener) = listener();
        let mut incoming = Incoming::new(listener, limits(4));
        let mut client = UnixStream::connect(&path).await.unwrap();
        let mut server = next(&mut incoming).await;
        let mut buf = [0u8; 8];
        for _ in 0..3 {
            client.write_all(b"x").await.unwrap();
            assert_eq!(server.read(&mut buf).await.unwrap(), 1);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Then silence: closed once IDLE has passed since the last byte.
        let error = server.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_new_connection_over_the_cap_takes_the_place_of_a_silent_one() {
        let (_dir, path, listener) = listener();
        let mut incoming = Incoming::new(listener, limits(2));
        let limits = Limits {
            greeting: Duration::from_secs(60),
            ..limits(2)
        };
        incoming.limits = limits;
        let mut talker = UnixStream::connect(&path).await.unwrap();
        let mut talking = next(&mut incoming).await;
        talker.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(talking.read(&mut buf).await.unwrap(), 1);
        let _quiet = UnixStream::connect(&path).await.unwrap();
        let mut quiet = next(&mut incoming).await;
        // Full. The next one evicts the quiet connection, never the one that spoke.
        let _new = UnixStream::connect(&path).await.unwrap();
        let _newest = next(&mut incoming).await;
        let error = quiet.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        talker.write_all(b"y").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn when_every_connection_has_spoken_a_new_one_is_closed_at_once() {
        let (_dir, path, listener) = listener();
        let mut incoming = Incoming::new(listener, limits(1));
        incoming.limits.greeting = Duration::from_secs(60);
        let mut talker = UnixStream::connect(&path).await.unwrap();
        let mut talking = next(&mut incoming).await;
        talker.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(talking.read(&mut buf).await.unwrap(), 1);
        let mut refused = UnixStream::connect(&path).await.unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(200), next(&mut incoming)).await;
        assert!(pending.is_err(), "no connection over the cap is handed on");
        assert_eq!(refused.read(&mut buf).await.unwrap(), 0, "closed");
    }

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        let cap = max_connections() as u64;
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        assert!((16..=MOST_CONNECTIONS).contains(&cap), "{cap}");
        if limit > 16 + RESERVED_DESCRIPTORS {
            assert!(cap + RESERVED_DESCRIPTORS <= limit, "{cap} of {limit}");
        }
    }
}
