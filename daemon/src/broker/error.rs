//! The broker's errors, each with the reason a program can act on.

use crate::identity::{ErrorClass, IdentityError};
use crate::store::StoreError;

use crate::spec::{SessionSpec, SpecError};

/// Why a call failed, as clients branch on it. The RPC layer maps these to wire reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    LoginRequired,
    Config,
    IdpUnavailable,
    StoreUnavailable,
    NotFound,
    LoginFailed,
    PermissionDenied,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// The session has no usable refresh token; only the user can fix that.
    #[error("login required for {}: {why}", spec.describe())]
    LoginRequired {
        spec: Box<SessionSpec>,
        why: String,
        idp_codes: Vec<i64>,
    },
    /// The IdP could not be used: transient trouble, or it rejected the configuration.
    #[error("{source}")]
    Identity { source: IdentityError },
    #[error("login failed: {message}")]
    LoginFailed {
        message: String,
        idp_codes: Vec<i64>,
    },
    /// A refresh is backing off after a passing failure, and no valid token is left to serve.
    #[error("cannot refresh: {why}; retrying in {} s", retry_in.as_secs())]
    Unavailable {
        why: String,
        retry_in: std::time::Duration,
        idp_codes: Vec<i64>,
    },
    /// A non-interactive login mode with nothing to sign in with.
    #[error("{what}: {how}")]
    MissingCredential { what: String, how: String },
    /// An application credential the IdP refused earlier; only new credentials help.
    #[error("{why}")]
    Refused { why: String, idp_codes: Vec<i64> },
    #[error("no profile named {name:?} in {path}")]
    UnknownProfile { name: String, path: String },
    #[error("profile {name:?}: {reason}")]
    InvalidProfile { name: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A login was not started: the store could not keep its refresh token.
    #[error("cannot sign in: {why}; {}", store_fix(backend))]
    StoreUnusable { why: String, backend: String },
    #[error("no session {0}; `brokerctl status` lists the sessions")]
    NotFound(String),
    /// A caller on the forwarding socket asked for a session that is not allowed there.
    #[error(
        "session {id} ({described}) is not allowed on the forwarding socket; on the machine \
         brokerd runs on: brokerctl forward allow {id}"
    )]
    NotForwarded {
        id: crate::spec::SessionId,
        described: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// What to do when the secret store cannot keep a refresh token.
fn store_fix(backend: &str) -> String {
    let start = match backend {
        "Secret Service" => {
            "start brokerd inside your desktop session (where DBUS_SESSION_BUS_ADDRESS points \
             at a bus with a keyring such as gnome-keyring or KeePassXC), unlock the keyring"
        }
        crate::store::NO_STORE => {
            "sign in on a machine that has a keyring and forward its brokerd here \
             (`brokerctl forward ssh THIS-HOST` there), allow keyctl (a container's seccomp \
             profile), start a Secret Service"
        }
        _ => "unlock the keyring",
    };
    format!("{start}, or run brokerd --store memory (forgets every login when it stops)")
}

impl BrokerError {
    pub fn reason(&self) -> Reason {
        match self {
            BrokerError::InvalidSpec(_) => Reason::Config,
            BrokerError::LoginRequired { .. } => Reason::LoginRequired,
            BrokerError::Identity { source } => match source.class() {
                ErrorClass::Transient => Reason::IdpUnavailable,
                ErrorClass::Config => Reason::Config,
                ErrorClass::LoginRequired => Reason::LoginRequired,
            },
            BrokerError::LoginFailed { .. } => Reason::LoginFailed,
            BrokerError::Unavailable { .. } => Reason::IdpUnavailable,
            BrokerError::UnknownProfile { .. }
            | BrokerError::InvalidProfile { .. }
            | BrokerError::MissingCredential { .. }
            | BrokerError::Refused { .. } => Reason::Config,
            BrokerError::Store(_) | BrokerError::StoreUnusable { .. } => Reason::StoreUnavailable,
            BrokerError::NotFound(_) => Reason::NotFound,
            BrokerError::NotForwarded { .. } => Reason::PermissionDenied,
            BrokerError::Internal(_) => Reason::Internal,
        }
    }

    pub fn idp_codes(&self) -> &[i64] {
        match self {
            BrokerError::LoginRequired { idp_codes, .. }
            | BrokerError::LoginFailed { idp_codes, .. }
            | BrokerError::Unavailable { idp_codes, .. }
            | BrokerError::Refused { idp_codes, .. } => idp_codes,
            BrokerError::Identity { source } => source.idp_error_codes(),
            _ => &[],
        }
    }

    pub(super) fn login_required(spec: &SessionSpec, why: impl Into<String>) -> Self {
        BrokerError::LoginRequired {
            spec: Box::new(spec.clone()),
            why: why.into(),
            idp_codes: Vec::new(),
        }
    }

    /// An IdP failure while redeeming a refresh token.
    pub(super) fn from_refresh(spec: &SessionSpec, error: IdentityError) -> Self {
        match error.class() {
            ErrorClass::LoginRequired => BrokerError::LoginRequired {
                spec: Box::new(spec.clone()),
                idp_codes: error.idp_error_codes().to_vec(),
                why: error.to_string(),
            },
            _ => BrokerError::Identity { source: error },
        }
    }

    /// An IdP failure during an interactive login.
    pub(super) fn from_login(error: IdentityError) -> Self {
        match error.class() {
            ErrorClass::LoginRequired => BrokerError::LoginFailed {
                idp_codes: error.idp_error_codes().to_vec(),
                message: error.to_string(),
            },
            _ => BrokerError::Identity { source: error },
        }
    }
}
