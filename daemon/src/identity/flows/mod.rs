//! Interactive grants: each signs a user in and yields a token set.

pub(super) mod auth_code;
pub(super) mod device_code;
mod loopback;
