//! broker-shim's conversation with brokerd, as a library so that it can be fuzzed: just enough
//! HTTP/2 ([`h2`]) and HPACK ([`hpack`]) for the gRPC calls ([`grpc`]) the shim makes. The
//! binary (src/main.rs) adds kubectl's side: arguments, ExecCredential, the login prompt.

pub mod grpc;
pub mod h2;
pub mod hpack;
