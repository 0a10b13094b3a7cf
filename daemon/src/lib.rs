//! brokerd: the token-broker daemon, as a library that its two binaries share.
//!
//! Data flows one way: [`rpc`] → [`broker`] → [`identity`] and [`store`]; [`spec`] (what names
//! a session) and [`config`] lie below the broker, which reads them. See
//! `docs/ARCHITECTURE.md` for the map and the invariants each part keeps.

pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod hardening;
pub mod identity;
pub mod incoming;
pub mod kubeconfig;
#[cfg(unix)]
pub mod listener;
pub mod notify;
pub mod paths;
#[cfg(windows)]
pub mod pipe;
pub mod rpc;
#[cfg(windows)]
pub mod run_key;
pub mod server;
pub mod service;
pub mod spec;
pub mod store;
