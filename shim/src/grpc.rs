//! gRPC calls to brokerd over [`crate::h2`]: request headers and length-prefixed messages out,
//! response headers, messages and the status trailers in.
//!
//! One call at a time on one connection, which is all the shim makes: a GetToken, and when a
//! login is needed, a Login stream followed by another GetToken.

use std::path::Path;
use std::time::Instant;

use base64::Engine as _;
use broker_proto::{CallFailure, ConnectError, PROTOCOL_HEADER, VERSION_HEADER};
use prost::Message;

use crate::h2::{self, Event, INITIAL_PEER_WINDOW, MAX_HEADER_BLOCK, Transport};
use crate::hpack;

/// The largest answer accepted: brokerd's are a few kilobytes.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// gRPC's length prefix: a compression flag and a 32-bit length.
const PREFIX: usize = 5;

pub const GET_TOKEN: &str = "/tokenbroker.v1.Broker/GetToken";
pub const LOGIN: &str = "/tokenbroker.v1.Broker/Login";

/// Why a call did not give its answer.
#[derive(Debug)]
pub enum CallError {
    /// brokerd answered with an error status.
    Failed(CallFailure),
    /// The conversation broke down: I/O, HTTP/2 or gRPC framing.
    Broken(String),
}

impl CallError {
    /// One line for people.
    pub fn to_message(&self) -> String {
        match self {
            CallError::Failed(failure) => failure.to_message(),
            CallError::Broken(why) => format!("lost the connection to brokerd: {why}"),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_message())
    }
}

impl std::error::Error for CallError {}

impl From<h2::WireError> for CallError {
    fn from(error: h2::WireError) -> Self {
        CallError::Broken(error.to_string())
    }
}

/// A connection to brokerd.
pub struct Channel<T = h2::Stream> {
    connection: h2::Connection<T>,
    decoder: hpack::Decoder,
}

/// Connects to brokerd's socket; when nothing listens, starts brokerd on demand (once). Every
/// wait ends by `deadline`.
pub fn connect_or_start(path: &Path, deadline: Instant) -> Result<Channel, ConnectError> {
    match connect(path, deadline) {
        Err(ConnectError::NotRunning { .. }) => {
            broker_proto::start_daemon(path)?;
            connect(path, deadline)
        }
        other => other,
    }
}

/// Connects after checking whom it reaches ([`broker_proto::socket`]): the socket's place
/// before connecting, the listening process's uid after, and nothing sent before both pass.
fn connect(path: &Path, deadline: Instant) -> Result<Channel, ConnectError> {
    broker_proto::check_before_connect(path)?;
    let stream = open(path, deadline).map_err(|e| ConnectError::from_io(path, &e))?;
    let mut channel = Channel::new(stream);
    channel.connection.set_deadline(Some(deadline));
    Ok(channel)
}

#[cfg(unix)]
fn open(path: &Path, _deadline: Instant) -> std::io::Result<h2::Stream> {
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    broker_proto::socket::check_peer(&stream, path, broker_proto::current_uid())?;
    Ok(stream)
}

#[cfg(windows)]
fn open(path: &Path, deadline: Instant) -> std::io::Result<h2::Stream> {
    let user = broker_proto::pipe::current_user_sid()?;
    let pipe = crate::pipe::open(path, deadline)?;
    broker_proto::pipe::check_server(pipe.raw_handle(), path, &user)?;
    Ok(pipe)
}

impl<T: Transport> Channel<T> {
    pub fn new(io: T) -> Self {
        Channel {
            connection: h2::Connection::new(io),
            // SETTINGS_HEADER_TABLE_SIZE's default, which this client never changes, and the
            // header list size it advertises.
            decoder: hpack::Decoder::new(4096, MAX_HEADER_BLOCK),
        }
    }

    /// Ends every wait of this channel at `deadline`.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.connection.set_deadline(Some(deadline));
    }

    /// A unary call: one request, one answer.
    pub fn unary<Q: Message, A: Message + Default>(
        &mut self,
        method: &str,
        request: &Q,
    ) -> Result<A, CallError> {
        self.unary_from(method, request).map(|(answer, _)| answer)
    }

    /// A unary call, with the protocol revision brokerd announced with its answer.
    pub fn unary_from<Q: Message, A: Message + Default>(
        &mut self,
        method: &str,
        request: &Q,
    ) -> Result<(A, Option<String>), CallError> {
        let mut call = self.start(method, request)?;
        let answer = call
            .next_message()?
            .ok_or_else(|| CallError::Broken("brokerd sent no answer".into()))?;
        match call.next_message()? {
            None => Ok((answer, call.protocol.take())),
            Some(_) => Err(CallError::Broken(
                "brokerd sent two answers to one question".into(),
            )),
        }
    }

    /// A server-streaming call: read its messages with [`Call::next_message`].
    pub fn start<Q: Message, A: Message + Default>(
        &mut self,
        method: &str,
        request: &Q,
    ) -> Result<Call<'_, T, A>, CallError> {
        let length = request.encoded_len();
        if length + PREFIX > INITIAL_PEER_WINDOW {
            return Err(CallError::Broken(format!(
                "the request is {length} bytes, more than brokerd accepts"
            )));
        }
        let mut body = Vec::with_capacity(PREFIX + length);
        body.push(0);
        body.extend_from_slice(&(length as u32).to_be_bytes());
        request
            .encode(&mut body)
            .map_err(|e| CallError::Broken(e.to_string()))?;
        let stream = self.connection.send(&request_headers(method), &body)?;
        Ok(Call {
            channel: self,
            stream,
            buffer: Vec::new(),
            headers_seen: false,
            finished: false,
            version: None,
            protocol: None,
            _answer: std::marker::PhantomData,
        })
    }
}

/// One call in progress.
pub struct Call<'c, T, A> {
    channel: &'c mut Channel<T>,
    stream: u32,
    buffer: Vec<u8>,
    headers_seen: bool,
    finished: bool,
    version: Option<String>,
    protocol: Option<String>,
    _answer: std::marker::PhantomData<A>,
}

impl<T: Transport, A: Message + Default> Call<'_, T, A> {
    /// The next message of the answer; `None` once brokerd ends the call with status OK.
    pub fn next_message(&mut self) -> Result<Option<A>, CallError> {
        loop {
            if let Some(message) = self.take_message()? {
                return Ok(Some(message));
            }
            if self.finished {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(CallError::Broken(
                        "brokerd's answer ended mid-message".into(),
                    ))
                };
            }
            match self.channel.connection.next_event()? {
                Event::Headers {
                    stream,
                    block,
                    end_stream,
                } => {
                    // Every header block updates the decoder's table, whichever stream.
                    let headers = self.decode(&block)?;
                    if stream != self.stream {
                        continue;
                    }
                    self.headers(&headers, end_stream)?;
                }
                Event::Data {
                    stream,
                    payload,
                    end_stream,
                } if stream == self.stream => {
                    if !self.headers_seen {
                        return Err(CallError::Broken("brokerd sent data before headers".into()));
                    }
                    if self.buffer.len() + payload.len() > MAX_MESSAGE + PREFIX {
                        return Err(CallError::Broken("brokerd's answer is too large".into()));
                    }
                    self.buffer.extend_from_slice(&payload);
                    if end_stream {
                        return Err(CallError::Broken(
                            "brokerd ended the call without a status".into(),
                        ));
                    }
                }
                Event::Data { .. } => {}
                Event::Reset { stream, code } if stream == self.stream => {
                    return Err(CallError::Broken(format!(
                        "brokerd cancelled the call (HTTP/2 error {code})"
                    )));
                }
                Event::Reset { .. } => {}
                Event::GoAway { last_stream, code } if last_stream < self.stream => {
                    return Err(CallError::Broken(format!(
                        "brokerd is closing the connection (HTTP/2 error {code})"
                    )));
                }
                Event::GoAway { .. } => {}
            }
        }
    }

    fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, CallError> {
        let mut headers = Vec::new();
        self.channel
            .decoder
            .decode(block, |name, value| {
                headers.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                ));
            })
            .map_err(|e| CallError::Broken(format!("unreadable headers: {e}")))?;
        Ok(headers)
    }

    /// The response headers, or the trailers that end the call.
    fn headers(&mut self, headers: &[(String, String)], end_stream: bool) -> Result<(), CallError> {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if let Some(version) = get(VERSION_HEADER) {
            self.version = Some(version.to_string());
        }
        if let Some(protocol) = get(PROTOCOL_HEADER) {
            self.protocol = Some(protocol.to_string());
        }
        if !self.headers_seen {
            self.headers_seen = true;
            match get(":status") {
                Some("200") => {}
                Some(status) => {
                    return Err(CallError::Broken(format!("brokerd answered HTTP {status}")));
                }
                None => return Err(CallError::Broken("brokerd's answer has no status".into())),
            }
            if !end_stream {
                return Ok(());
            }
        } else if !end_stream {
            return Err(CallError::Broken("brokerd sent headers mid-answer".into()));
        }
        // Trailers (or a trailers-only answer): the call's outcome.
        self.finished = true;
        let code = get("grpc-status")
            .and_then(|c| c.parse::<i32>().ok())
            .ok_or_else(|| CallError::Broken("brokerd ended the call without a status".into()))?;
        if code == 0 {
            return Ok(());
        }
        let message = get("grpc-message")
            .map(|m| {
                percent_encoding::percent_decode_str(m)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        let details = get("grpc-status-details-bin")
            .and_then(|d| BASE64.decode(d.trim_end_matches('=')).ok())
            .unwrap_or_default();
        Err(CallError::Failed(CallFailure {
            code,
            message,
            details,
            daemon_version: self.version.clone(),
            daemon_protocol: self.protocol.clone(),
        }))
    }

    fn take_message(&mut self) -> Result<Option<A>, CallError> {
        if self.buffer.len() < PREFIX {
            return Ok(None);
        }
        if self.buffer[0] != 0 {
            return Err(CallError::Broken(
                "brokerd sent a compressed message".into(),
            ));
        }
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if length > MAX_MESSAGE {
            return Err(CallError::Broken("brokerd's answer is too large".into()));
        }
        if self.buffer.len() < PREFIX + length {
            return Ok(None);
        }
        let message = A::decode(&self.buffer[PREFIX..PREFIX + length])
            .map_err(|e| CallError::Broken(format!("unreadable answer ({e})")))?;
        self.buffer.drain(..PREFIX + length);
        Ok(Some(message))
    }
}

/// Base64 as gRPC sends binary headers: standard alphabet, padding optional.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
);

/// The request's header block: literal fields, never indexed and never Huffman-coded, so that
/// the encoder keeps no state (RFC 7541 §6.2.2).
fn request_headers(method: &str) -> Vec<u8> {
    let mut block = Vec::with_capacity(256);
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", method),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        (
            "user-agent",
            concat!("broker-shim/", env!("CARGO_PKG_VERSION")),
        ),
    ] {
        block.push(0x00);
        string(&mut block, name);
        string(&mut block, value);
    }
    block
}

/// An HPACK string literal, not Huffman-coded: a 7-bit-prefix length, then the bytes.
fn string(block: &mut Vec<u8>, text: &str) {
    let mut length = text.len();
    if length < 127 {
        block.push(length as u8);
    } else {
        block.push(127);
        length -= 127;
        while length >= 128 {
            block.push((length % 128) as u8 | 0x80);
            length /= 128;
        }
        block.push(length as u8);
    }
    block.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::tests::{Scripted, frames};
    use broker_proto::v1::{ErrorDetail, ErrorReason, GetTokenRequest, GetTokenResponse};

    const HEADERS: u8 = 0x1;
    const DATA: u8 = 0x0;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;

    fn encode(headers: &[(&str, &str)], encoder: &mut loona_hpack::Encoder<'_>) -> Vec<u8> {
        encoder.encode(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn channel(input: Vec<u8>) -> Channel<Scripted> {
        Channel::new(Scripted {
            input: std::io::Cursor::new(input),
            written: Vec::new(),
        })
    }

    fn message(answer: &GetTokenResponse) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(answer.encoded_len() as u32).to_be_bytes());
        out.extend(answer.encode_to_vec());
        out
    }

    #[test]
    fn a_unary_answer_is_read_across_frames() {
        let mut encoder = loona_hpack::Encoder::new();
        let answer = GetTokenResponse {
            access_token: "at".into(),
            expires_at_unix: 42,
            session_id: "s".into(),
        };
        let bytes = message(&answer);
        let (first, second) = bytes.split_at(3);
        let input = frames(&[
            (
                HEADERS,
                END_HEADERS,
                1,
                &encode(
                    &[(":status", "200"), ("content-type", "application/grpc")],
                    &mut encoder,
                ),
            ),
            (DATA, 0, 1, first),
            (DATA, 0, 1, second),
            (
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &encode(&[("grpc-status", "0")], &mut encoder),
            ),
        ]);
        let mut channel = channel(input);
        let got: GetTokenResponse = channel
            .unary(GET_TOKEN, &GetTokenRequest::default())
            .unwrap();
        assert_eq!(got, answer);
    }

    #[test]
    fn a_trailers_only_error_keeps_its_detail_message_and_version() {
        let mut encoder = loona_hpack::Encoder::new();
        let detail = ErrorDetail {
            reason: ErrorReason::LoginRequired as i32,
            message: "run brokerctl login".into(),
            idp_error_codes: vec![],
        };
        let details =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(detail.encode_to_vec());
        let input = frames(&[(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &encode(
                &[
                    (":status", "200"),
                    ("grpc-status", "16"),
                    ("grpc-message", "run%20brokerctl%20login"),
                    ("grpc-status-details-bin", &details),
                    ("tokenbroker-version", "9.9.9"),
                ],
                &mut encoder,
            ),
        )]);
        let mut channel = channel(input);
        let error = channel
            .unary::<_, GetTokenResponse>(GET_TOKEN, &GetTokenRequest::default())
            .unwrap_err();
        let CallError::Failed(failure) = error else {
            panic!("{error:?}")
        };
        assert_eq!(failure.code, 16);
        assert_eq!(failure.message, "run brokerctl login");
        assert_eq!(failure.reason(), ErrorReason::LoginRequired);
        assert_eq!(failure.daemon_version.as_deref(), Some("9.9.9"));
    }

    #[test]
    fn broken_answers_are_errors_not_panics() {
        let mut encoder = loona_hpack::Encoder::new();
        let ok = encode(&[(":status", "200")], &mut encoder);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "http error",
                frames(&[(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    1,
                    &encode(&[(":status", "503")], &mut loona_hpack::Encoder::new()),
                )]),
            ),
            (
                "garbage hpack",
                frames(&[(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff])]),
            ),
            ("data first", frames(&[(DATA, 0, 1, &[0, 0, 0, 0, 0])])),
            (
                "compressed",
                frames(&[
                    (HEADERS, END_HEADERS, 1, &ok),
                    (DATA, 0, 1, &[1, 0, 0, 0, 0]),
                ]),
            ),
            (
                "huge",
                frames(&[
                    (HEADERS, END_HEADERS, 1, &ok),
                    (DATA, 0, 1, &[0, 0xff, 0xff, 0xff, 0xff]),
                ]),
            ),
            (
                "no status",
                frames(&[(HEADERS, END_HEADERS, 1, &ok), (DATA, END_STREAM, 1, &[])]),
            ),
            ("not protobuf", {
                let mut e = loona_hpack::Encoder::new();
                let h = encode(&[(":status", "200")], &mut e);
                let t = encode(&[("grpc-status", "0")], &mut e);
                frames(&[
                    (HEADERS, END_HEADERS, 1, &h),
                    (DATA, 0, 1, &[0, 0, 0, 0, 2, 0xff, 0xff]),
                    (HEADERS, END_HEADERS | END_STREAM, 1, &t),
                ])
            }),
            ("closed", frames(&[(HEADERS, END_HEADERS, 1, &ok)])),
        ];
        for (what, input) in cases {
            let mut channel = channel(input);
            let result =
                channel.unary::<_, GetTokenResponse>(GET_TOKEN, &GetTokenRequest::default());
            assert!(
                matches!(result, Err(CallError::Broken(_))),
                "{what}: {result:?}"
            );
        }
    }

    #[test]
    fn request_headers_decode_back() {
        // Decoded by an independent implementation.
        let mut decoder = loona_hpack::Decoder::new();
        let long = "x".repeat(300);
        let mut block = Vec::new();
        block.push(0);
        string(&mut block, "name");
        string(&mut block, &long);
        block.extend(request_headers(GET_TOKEN));
        let decoded = decoder.decode(&block).unwrap();
        assert_eq!(decoded[0], (b"name".to_vec(), long.into_bytes()));
        assert!(decoded.contains(&(b":path".to_vec(), GET_TOKEN.as_bytes().to_vec())));
        assert!(decoded.contains(&(b"te".to_vec(), b"trailers".to_vec())));
    }
}
