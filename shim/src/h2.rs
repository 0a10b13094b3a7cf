//! Just enough HTTP/2 (RFC 9113) for gRPC calls to brokerd over its Unix socket, blocking.
//!
//! broker-shim makes one or two calls per process. A full HTTP/2 stack and an async runtime
//! (tonic, hyper, h2, tokio) cost it most of its size and a large part of its start-up time,
//! which every kubectl run pays. This is the client half that a single caller needs: the
//! preface, settings and their acknowledgement, PING answers, header blocks split over
//! CONTINUATION frames, padding, and no flow control to speak of, because the windows it
//! advertises are larger than anything brokerd sends. Requests go out in one write.
//!
//! Everything read is bounded: a frame larger than the default maximum frame size, a header
//! block over [`MAX_HEADER_BLOCK`] or a malformed frame ends the connection with an error. And
//! every wait is: brokerd must send its SETTINGS (the first thing an HTTP/2 server says)
//! within [`GREETING`] of the connection, and the whole conversation ends at the caller's
//! deadline, however many frames (an endless stream of PINGs, say) keep arriving before it.

use std::io::{self, BufReader, Read, Write};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's default, which this client never raises: larger frames are errors.
pub const MAX_FRAME: usize = 16_384;
/// The largest header block accepted, all CONTINUATION frames included; also the decoded
/// header list size this client advertises (SETTINGS_MAX_HEADER_LIST_SIZE).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// How long brokerd has to say its first frame after accepting: a live daemon answers at once,
/// so a socket that accepts and stays silent is not brokerd (or it is stuck).
pub const GREETING: Duration = Duration::from_secs(5);
/// The receive window advertised for each stream and for the connection: the largest there is,
/// so that brokerd never waits for a WINDOW_UPDATE from a client that never sends one.
const WINDOW: u32 = (1 << 31) - 1;
/// The window every peer starts with (RFC 9113 §6.9.2); a request body must fit in it, since
/// this client does not wait for brokerd to open a larger one.
pub const INITIAL_PEER_WINDOW: usize = 65_535;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// What the caller hears from the connection; SETTINGS, PING and WINDOW_UPDATE are handled here.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete header block (CONTINUATIONs joined), still HPACK-encoded.
    Headers {
        stream: u32,
        block: Vec<u8>,
        end_stream: bool,
    },
    Data {
        stream: u32,
        payload: Vec<u8>,
        end_stream: bool,
    },
    Reset {
        stream: u32,
        code: u32,
    },
    GoAway {
        last_stream: u32,
        code: u32,
    },
}

/// Why the connection cannot go on.
#[derive(Debug)]
pub enum WireError {
    Io(io::Error),
    /// brokerd closed the connection.
    Closed,
    /// brokerd sent something HTTP/2 does not allow, or more than this client accepts.
    Protocol(&'static str),
    /// brokerd accepted the connection but sent nothing within [`GREETING`].
    Silent,
    /// The caller's deadline passed; the call had run this long.
    Deadline(Duration),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Closed => write!(f, "brokerd closed the connection"),
            WireError::Protocol(what) => write!(f, "brokerd broke the HTTP/2 protocol: {what}"),
            WireError::Silent => write!(
                f,
                "brokerd accepted the connection but did not speak HTTP/2 within {} s; it is \
                 stuck, or what listens there is not brokerd",
                GREETING.as_secs()
            ),
            WireError::Deadline(waited) => write!(
                f,
                "brokerd did not finish answering within {} s (the --timeout)",
                waited.as_secs()
            ),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for WireError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else {
            WireError::Io(error)
        }
    }
}

/// What a connection runs over: a Unix socket, or a script in tests. Each read and write is
/// bounded by a timeout set just before it.
pub trait Transport: Read + Write {
    fn set_timeout(&self, timeout: Duration) -> io::Result<()>;
}

/// What the shim reaches brokerd through: its Unix socket, or on Windows its named pipe.
#[cfg(unix)]
pub type Stream = UnixStream;
#[cfg(windows)]
pub type Stream = crate::pipe::Pipe;

#[cfg(unix)]
impl Transport for UnixStream {
    fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

/// A transport whose every read and write ends by `deadline`: the time left is set as the
/// socket's timeout before each one, so a peer that trickles a byte at a time still cannot
/// stretch a wait past it.
struct Timed<T> {
    io: T,
    deadline: Option<Instant>,
}

impl<T: Transport> Timed<T> {
    fn arm(&self) -> io::Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.io.set_timeout(left)
    }
}

/// A socket timeout reads as WouldBlock on Unix; either way, the wait is over.
fn timed_out(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::WouldBlock {
        io::ErrorKind::TimedOut.into()
    } else {
        error
    }
}

impl<T: Transport> Read for Timed<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.io.read(buf).map_err(timed_out)
    }
}

impl<T: Transport> Write for Timed<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.io.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.io.flush()
    }
}

/// A client connection: `T` is a `UnixStream`, or a byte buffer in tests.
pub struct Connection<T = Stream> {
    /// Buffered for reading, so that a frame header and its payload cost one read between
    /// them; writes go to the stream underneath (`get_mut`), whole.
    io: BufReader<Timed<T>>,
    out: Vec<u8>,
    started: bool,
    next_stream: u32,
    opened: Instant,
    /// Until brokerd's first frame: the end of its [`GREETING`] time.
    greeting: Option<Instant>,
    /// The caller's deadline for everything.
    deadline: Option<Instant>,
}

impl<T: Transport> Connection<T> {
    pub fn new(io: T) -> Self {
        Self::with_greeting(io, GREETING)
    }

    /// A connection whose peer must speak within `greeting`.
    pub fn with_greeting(io: T, greeting: Duration) -> Self {
        let opened = Instant::now();
        let mut connection = Connection {
            io: BufReader::with_capacity(16 * 1024, Timed { io, deadline: None }),
            out: Vec::with_capacity(1024),
            started: false,
            next_stream: 1,
            opened,
            greeting: Some(opened + greeting),
            deadline: None,
        };
        connection.arm();
        connection
    }

    /// Ends every wait of this connection at `deadline` (at the latest).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
        self.arm();
    }

    /// The earlier of the caller's deadline and, until brokerd has spoken, its greeting time.
    fn arm(&mut self) {
        let deadline = match (self.deadline, self.greeting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.io.get_mut().deadline = deadline;
    }

    /// Which wait ran out, for an I/O error that says one did.
    fn wire_error(&self, error: io::Error) -> WireError {
        if error.kind() != io::ErrorKind::TimedOut {
            return WireError::from(error);
        }
        let greeting_over = self.greeting.is_some_and(|g| Instant::now() >= g);
        let deadline_over = self.deadline.is_some_and(|d| Instant::now() >= d);
        if greeting_over && !deadline_over {
            WireError::Silent
        } else {
            WireError::Deadline(self.opened.elapsed())
        }
    }

    /// Opens a stream carrying `header_block` (HPACK-encoded) and `body`, which ends it: the
    /// connection preface (on first use), the HEADERS and the DATA go out in one write.
    pub fn send_request(&mut self, header_block: &[u8], body: &[u8]) -> io::Result<u32> {
        if body.len() > INITIAL_PEER_WINDOW {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the request is too large to send",
            ));
        }
        if !self.started {
            self.started = true;
            self.out.extend_from_slice(PREFACE);
            let mut settings = Vec::with_capacity(18);
            for (id, value) in [
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, WINDOW),
                (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK as u32),
            ] {
                settings.extend_from_slice(&id.to_be_bytes());
                settings.extend_from_slice(&value.to_be_bytes());
            }
            frame(&mut self.out, SETTINGS, 0, 0, &settings);
            // The connection window starts at 65,535 whatever the settings say.
            let increment = WINDOW - INITIAL_PEER_WINDOW as u32;
            frame(&mut self.out, WINDOW_UPDATE, 0, 0, &increment.to_be_bytes());
        }
        let stream = self.next_stream;
        self.next_stream += 2;
        let mut chunks = header_block.chunks(MAX_FRAME).peekable();
        let first = chunks.next().unwrap_or_default();
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        frame(&mut self.out, HEADERS, flags, stream, first);
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_none() {
                END_HEADERS
            } else {
                0
            };
            frame(&mut self.out, CONTINUATION, flags, stream, chunk);
        }
        let mut chunks = body.chunks(MAX_FRAME).peekable();
        if chunks.peek().is_none() {
            frame(&mut self.out, DATA, END_STREAM, stream, &[]);
        }
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_none() {
                END_STREAM
            } else {
                0
            };
            frame(&mut self.out, DATA, flags, stream, chunk);
        }
        let sent = self.io.get_mut().write_all(&self.out);
        self.out.clear();
        sent.map(|()| stream)
    }

    /// [`Connection::send_request`], with a failure said as the connection's error.
    pub fn send(&mut self, header_block: &[u8], body: &[u8]) -> Result<u32, WireError> {
        self.send_request(header_block, body)
            .map_err(|e| self.wire_error(e))
    }

    /// The next event for the caller, answering SETTINGS and PING on the way.
    pub fn next_event(&mut self) -> Result<Event, WireError> {
        loop {
            let (kind, flags, stream, payload) = self.read_frame()?;
            match kind {
                DATA => {
                    let payload = unpad(flags, payload)?;
                    return Ok(Event::Data {
                        stream,
                        payload,
                        end_stream: flags & END_STREAM != 0,
                    });
                }
                HEADERS => {
                    let mut block = unpad(flags, payload)?;
                    if flags & PRIORITY != 0 {
                        if block.len() < 5 {
                            return Err(WireError::Protocol("a HEADERS frame too short"));
                        }
                        block.drain(..5);
                    }
                    if flags & END_HEADERS == 0 {
                        self.read_continuations(stream, &mut block)?;
                    }
                    return Ok(Event::Headers {
                        stream,
                        block,
                        end_stream: flags & END_STREAM != 0,
                    });
                }
                RST_STREAM => {
                    let code = u32_at(&payload, 0)
                        .ok_or(WireError::Protocol("a RST_STREAM frame too short"))?;
                    return Ok(Event::Reset { stream, code });
                }
                SETTINGS if flags & ACK == 0 => {
                    if payload.len() % 6 != 0 || stream != 0 {
                        return Err(WireError::Protocol("a malformed SETTINGS frame"));
                    }
                    frame(&mut self.out, SETTINGS, ACK, 0, &[]);
                    self.flush()?;
                }
                PING if flags & ACK == 0 => {
                    if payload.len() != 8 {
                        return Err(WireError::Protocol("a malformed PING frame"));
                    }
                    frame(&mut self.out, PING, ACK, 0, &payload);
                    self.flush()?;
                }
                GOAWAY => {
                    let last_stream = u32_at(&payload, 0)
                        .ok_or(WireError::Protocol("a GOAWAY frame too short"))?
                        & 0x7fff_ffff;
                    let code = u32_at(&payload, 4)
                        .ok_or(WireError::Protocol("a GOAWAY frame too short"))?;
                    return Ok(Event::GoAway { last_stream, code });
                }
                PUSH_PROMISE => {
                    return Err(WireError::Protocol("a push, which it was told not to"));
                }
                CONTINUATION => return Err(WireError::Protocol("a CONTINUATION out of place")),
                // SETTINGS and PING acknowledgements, WINDOW_UPDATE, PRIORITY and frame types
                // this client does not know: nothing to do (RFC 9113 §4.1 says to ignore the
                // unknown ones).
                _ => {}
            }
        }
    }

    fn read_continuations(&mut self, stream: u32, block: &mut Vec<u8>) -> Result<(), WireError> {
        loop {
            let (kind, flags, on, payload) = self.read_frame()?;
            if kind != CONTINUATION || on != stream {
                return Err(WireError::Protocol("a header block interrupted"));
            }
            if block.len() + payload.len() > MAX_HEADER_BLOCK {
                return Err(WireError::Protocol("a header block too large"));
            }
            block.extend_from_slice(&payload);
            if flags & END_HEADERS != 0 {
                return Ok(());
            }
        }
    }

    fn read_frame(&mut self) -> Result<(u8, u8, u32, Vec<u8>), WireError> {
        let mut header = [0u8; FRAME_HEADER];
        self.io
            .read_exact(&mut header)
            .map_err(|e| self.wire_error(e))?;
        let length =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        if length > MAX_FRAME {
            return Err(WireError::Protocol("a frame larger than allowed"));
        }
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        self.io
            .read_exact(&mut payload)
            .map_err(|e| self.wire_error(e))?;
        if self.greeting.take().is_some() {
            // brokerd has spoken: from here on only the caller's deadline holds.
            self.arm();
        }
        Ok((header[3], header[4], stream, payload))
    }

    fn flush(&mut self) -> Result<(), WireError> {
        let sent = self.io.get_mut().write_all(&self.out);
        self.out.clear();
        sent.map_err(|e| self.wire_error(e))
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let length = payload.len() as u32;
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

fn unpad(flags: u8, mut payload: Vec<u8>) -> Result<Vec<u8>, WireError> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let pad = usize::from(
        *payload
            .first()
            .ok_or(WireError::Protocol("a padded frame too short"))?,
    );
    if pad + 1 > payload.len() {
        return Err(WireError::Protocol("more padding than frame"));
    }
    payload.truncate(payload.len() - pad);
    payload.remove(0);
    Ok(payload)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A connection whose peer's bytes are given up front; what the client writes is kept.
    pub struct Scripted {
        pub input: io::Cursor<Vec<u8>>,
        pub written: Vec<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Transport for Scripted {
        fn set_timeout(&self, _timeout: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    pub fn frames(list: &[(u8, u8, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, flags, stream, payload) in list {
            frame(&mut out, *kind, *flags, *stream, payload);
        }
        out
    }

    pub fn scripted(input: Vec<u8>) -> Connection<Scripted> {
        Connection::new(Scripted {
            input: io::Cursor::new(input),
            written: Vec::new(),
        })
    }

    #[test]
    fn a_request_is_the_preface_settings_headers_and_data_in_one_write() {
        let mut conn = scripted(Vec::new());
        assert_eq!(conn.send_request(b"hdrs", b"body").unwrap(), 1);
        let written = &conn.io.get_ref().io.written;
        assert!(written.starts_with(PREFACE));
        let rest = &written[PREFACE.len()..];
        // SETTINGS with three entries, then the connection WINDOW_UPDATE.
        assert_eq!(&rest[..5], &[0, 0, 18, SETTINGS, 0]);
        let rest = &rest[FRAME_HEADER + 18..];
        assert_eq!(&rest[..5], &[0, 0, 4, WINDOW_UPDATE, 0]);
        let rest = &rest[FRAME_HEADER + 4..];
        assert_eq!(&rest[..9], &[0, 0, 4, HEADERS, END_HEADERS, 0, 0, 0, 1]);
        assert_eq!(&rest[9..13], b"hdrs");
        assert_eq!(&rest[13..22], &[0, 0, 4, DATA, END_STREAM, 0, 0, 0, 1]);
        assert_eq!(&rest[22..], b"body");
        // The next call on the same connection: stream 3, no second preface.
        conn.io.get_mut().io.written.clear();
        assert_eq!(conn.send_request(b"h", b"").unwrap(), 3);
        assert_eq!(conn.io.get_ref().io.written[3], HEADERS);
    }

    #[test]
    fn settings_and_pings_are_answered_and_headers_joined() {
        let input = frames(&[
            (SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]),
            (PING, 0, 0, b"12345678"),
            (WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]),
            (0x42, 0, 0, b"unknown frame types are ignored"),
            (
                HEADERS,
                PADDED | PRIORITY,
                1,
                &[2, 0, 0, 0, 0, 9, b'a', b'b', 0, 0],
            ),
            (CONTINUATION, END_HEADERS | END_STREAM, 1, b"cd"),
        ]);
        let mut conn = scripted(input);
        let event = conn.next_event().unwrap();
        assert_eq!(
            event,
            Event::Headers {
                stream: 1,
                block: b"abcd".to_vec(),
                end_stream: false
            }
        );
        let answers = frames(&[(SETTINGS, ACK, 0, &[]), (PING, ACK, 0, b"12345678")]);
        assert_eq!(conn.io.get_ref().io.written, answers);
    }

    #[test]
    fn hostile_frames_end_the_connection_with_an_error() {
        let too_big = {
            let mut out = vec![0x00, 0x40, 0x01, DATA, 0, 0, 0, 0, 1];
            out.extend(vec![0u8; 16_385]);
            out
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("oversized frame", too_big),
            ("padding", frames(&[(DATA, PADDED, 1, &[9, 1, 2])])),
            ("settings", frames(&[(SETTINGS, 0, 0, &[1, 2, 3])])),
            ("ping", frames(&[(PING, 0, 0, b"123")])),
            (
                "push",
                frames(&[(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2])]),
            ),
            (
                "stray continuation",
                frames(&[(CONTINUATION, END_HEADERS, 1, b"x")]),
            ),
            (
                "interrupted block",
                frames(&[(HEADERS, 0, 1, b"a"), (DATA, 0, 1, b"b")]),
            ),
            ("truncated", vec![0, 0, 5, DATA, 0, 0, 0, 0, 1, b'a']),
            ("reset too short", frames(&[(RST_STREAM, 0, 1, &[0, 0])])),
        ];
        for (what, input) in cases {
            let mut conn = scripted(input);
            assert!(conn.next_event().is_err(), "{what}");
        }
        let mut closed = scripted(Vec::new());
        assert!(matches!(closed.next_event(), Err(WireError::Closed)));
    }

    #[test]
    fn a_long_header_block_goes_out_in_continuations() {
        let block = vec![7u8; MAX_FRAME + 10];
        let mut conn = scripted(Vec::new());
        conn.started = true;
        conn.send_request(&block, b"").unwrap();
        let written = &conn.io.get_ref().io.written;
        assert_eq!(&written[3..5], &[HEADERS, 0]);
        let next = FRAME_HEADER + MAX_FRAME;
        assert_eq!(
            &written[next..next + 5],
            &[0, 0, 10, CONTINUATION, END_HEADERS]
        );
    }

    #[test]
    fn a_peer_that_accepts_and_never_speaks_is_given_up_on() {
        let (client, _server) = UnixStream::pair().unwrap();
        let mut conn = Connection::with_greeting(client, Duration::from_millis(100));
        conn.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
        conn.send_request(b"h", b"").unwrap();
        let started = Instant::now();
        let error = conn.next_event().unwrap_err();
        assert!(matches!(error, WireError::Silent), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn an_endless_stream_of_pings_ends_at_the_deadline() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let pinger = std::thread::spawn(move || {
            let ping = frames(&[(PING, 0, 0, b"12345678")]);
            // Until the client hangs up; its acknowledgements are left unread.
            let _ = server.set_nonblocking(false);
            while server.write_all(&ping).is_ok() {
                let mut sink = [0u8; 4096];
                let _ = server.set_read_timeout(Some(Duration::from_millis(1)));
                let _ = server.read(&mut sink);
            }
        });
        let mut conn = Connection::new(client);
        conn.set_deadline(Some(Instant::now() + Duration::from_millis(300)));
        conn.send_request(b"h", b"").unwrap();
        let error = conn.next_event().unwrap_err();
        assert!(matches!(error, WireError::Deadline(_)), "{error}");
        drop(conn);
        pinger.join().unwrap();
    }

    #[test]
    fn a_body_larger_than_the_initial_window_is_refused() {
        let mut conn = scripted(Vec::new());
        let body = vec![0u8; INITIAL_PEER_WINDOW + 1];
        assert!(conn.send_request(b"h", &body).is_err());
        assert!(conn.io.get_ref().io.written.is_empty());
    }
}
