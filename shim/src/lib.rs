//! broker-shim's conversation with brokerd, as a library so that it can be fuzzed: just enough
//! HTTP/2 ([`h2`]) and HPACK ([`hpack`]) for the gRPC calls ([`grpc`]) the shim makes. The
//! binary (src/main.rs) adds kubectl's side: arguments, ExecCredential, the login prompt.

pub mod grpc;
pub mod h2;
pub mod hpack;
#[cfg(windows)]
pub mod pipe;

/// Entry points for `cargo fuzz` (fuzz/): brokerd's side of a conversation, whatever bytes it
/// is, read the way the shim reads it. Built only under `--cfg fuzzing`.
#[cfg(fuzzing)]
pub mod fuzzing {
    use std::io::{self, Read, Write};

    use broker_proto::v1::{GetTokenRequest, GetTokenResponse, LoginEvent, LoginRequest};

    /// A connection whose peer says `input`; what the shim writes goes nowhere.
    struct Replay(io::Cursor<Vec<u8>>);

    impl Read for Replay {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Replay {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl crate::h2::Transport for Replay {
        fn set_timeout(&self, _timeout: std::time::Duration) -> io::Result<()> {
            Ok(())
        }
    }

    /// A GetToken answered with `input`, then (on the same bytes) a Login stream read to its
    /// end.
    pub fn conversation(input: &[u8]) {
        let mut channel = crate::grpc::Channel::new(Replay(io::Cursor::new(input.to_vec())));
        let _ = channel
            .unary::<_, GetTokenResponse>(crate::grpc::GET_TOKEN, &GetTokenRequest::default());
        let mut channel = crate::grpc::Channel::new(Replay(io::Cursor::new(input.to_vec())));
        if let Ok(mut call) =
            channel.start::<_, LoginEvent>(crate::grpc::LOGIN, &LoginRequest::default())
        {
            while let Ok(Some(_)) = call.next_message() {}
        }
    }

    /// One header block through a fresh decoder, then again through the same one (its dynamic
    /// table filled by the first).
    pub fn header_block(block: &[u8]) {
        let mut decoder = crate::hpack::Decoder::new(4096, crate::h2::MAX_HEADER_BLOCK);
        for _ in 0..2 {
            let _ = decoder.decode(block, |_, _| {});
        }
    }
}
