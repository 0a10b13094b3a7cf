//! brokerd's side of a conversation with broker-shim, any bytes at all: HTTP/2 frames, HPACK
//! header blocks, gRPC messages and trailers, read as the shim reads them for a GetToken and
//! for a Login stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    broker_shim::fuzzing::conversation(bytes);
});
