//! token-broker's test bench, shared by the end-to-end tests and the `mock-entra` binary.

pub mod apiserver;
pub mod bench;
pub mod harness;
pub mod jwt;
pub mod mock_entra;
