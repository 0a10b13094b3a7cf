//! The one mapping from the broker's errors to what clients see: a gRPC status carrying an
//! `ErrorDetail` (the machine-readable reason, one line for people, the IdP's codes). The Login
//! stream's `LoginFailed` event carries the same detail.

use broker_proto::v1;
use tonic::{Code, Status};

use crate::broker::{BrokerError, Reason};

impl From<Reason> for v1::ErrorReason {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::LoginRequired => v1::ErrorReason::LoginRequired,
            Reason::Config => v1::ErrorReason::Config,
            Reason::IdpUnavailable => v1::ErrorReason::IdpUnavailable,
            Reason::StoreUnavailable => v1::ErrorReason::StoreUnavailable,
            Reason::NotFound => v1::ErrorReason::NotFound,
            Reason::LoginFailed => v1::ErrorReason::LoginFailed,
            Reason::PermissionDenied => v1::ErrorReason::PermissionDenied,
            Reason::Internal => v1::ErrorReason::Internal,
        }
    }
}

/// What a client is told of `error`. A login that is required names the exact command.
pub(super) fn error_detail(error: &BrokerError) -> v1::ErrorDetail {
    let message = match error {
        BrokerError::LoginRequired { spec, .. } => format!(
            "{error}; run: {}",
            broker_proto::login_command(&v1::SessionSpec::from(spec.as_ref()))
        ),
        _ => error.to_string(),
    };
    v1::ErrorDetail {
        reason: v1::ErrorReason::from(error.reason()) as i32,
        message,
        idp_error_codes: error.idp_codes().to_vec(),
    }
}

/// A broker error as a caller on the forwarding socket sees it: a sign-in cannot happen there,
/// so the command is for the machine brokerd runs on.
pub(super) fn forwarded(error: &BrokerError) -> Status {
    match error {
        BrokerError::LoginRequired { spec, .. } => broker_proto::status_with_detail(
            Code::Unauthenticated,
            v1::ErrorDetail {
                reason: v1::ErrorReason::LoginRequired as i32,
                message: format!(
                    "{error}; sign in on the machine brokerd runs on (it was told, if it has a \
                     desktop): {}",
                    broker_proto::login_command(&v1::SessionSpec::from(spec.as_ref()))
                ),
                idp_error_codes: error.idp_codes().to_vec(),
            },
        ),
        _ => to_status(error),
    }
}

/// A broker error as a gRPC status.
pub(super) fn to_status(error: &BrokerError) -> Status {
    let code = match error.reason() {
        Reason::LoginRequired => Code::Unauthenticated,
        Reason::Config => Code::InvalidArgument,
        Reason::IdpUnavailable | Reason::StoreUnavailable => Code::Unavailable,
        Reason::NotFound => Code::NotFound,
        Reason::LoginFailed => Code::Aborted,
        Reason::PermissionDenied => Code::PermissionDenied,
        Reason::Internal => Code::Internal,
    };
    broker_proto::status_with_detail(code, error_detail(error))
}

/// A request that makes no sense, whatever the broker's state.
pub(super) fn invalid(message: &str) -> Status {
    status(
        Code::InvalidArgument,
        v1::ErrorReason::Config,
        message.to_string(),
    )
}

/// A status the RPC layer itself decides (the peer check, malformed requests).
pub(super) fn status(code: Code, reason: v1::ErrorReason, message: String) -> Status {
    broker_proto::status_with_detail(
        code,
        v1::ErrorDetail {
            reason: reason as i32,
            message,
            idp_error_codes: Vec::new(),
        },
    )
}
