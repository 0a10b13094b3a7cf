//! Wire ↔ domain: the protobuf types of `broker.proto` and the broker's own, converted in one
//! place, each conversion an exhaustive `match` or a plain field copy, so that a new variant or
//! field is a compile error here rather than a silent default.

use std::path::PathBuf;

use broker_proto::v1::{self, login_event};
use secrecy::SecretString;

use crate::broker::{Broker, EventKind, PendingLogin, SessionEvent, SessionState, SessionStatus};
use crate::clock::unix_seconds;
use crate::doctor;
use crate::identity::LoginPrompt;
use crate::identity::ci_tokens::{CiCredential, CiSystem};
use crate::identity::credential::{CertificateSource, Supplied};

/// The credentials a caller sent, as the broker takes them. Empty strings are "not given"; a
/// CI endpoint that the job's token must not be sent to is an error.
impl TryFrom<Option<v1::Credentials>> for Supplied {
    type Error = String;

    fn try_from(credentials: Option<v1::Credentials>) -> Result<Self, String> {
        let c = credentials.unwrap_or_default();
        let secret = |s: String| (!s.is_empty()).then(|| SecretString::from(s));
        let path = |s: String| (!s.is_empty()).then(|| PathBuf::from(s));
        let ci = |system, endpoint: String, token: String| {
            (!endpoint.is_empty() && !token.is_empty())
                .then(|| CiCredential::new(system, &endpoint, SecretString::from(token)))
                .transpose()
        };
        let pipelines = ci(
            CiSystem::AzurePipelines,
            c.oidc_request_uri,
            c.system_access_token,
        )?;
        let github = ci(
            CiSystem::GitHubActions,
            c.actions_id_token_request_url,
            c.actions_id_token_request_token,
        )?;
        Ok(Supplied {
            client_secret: secret(c.client_secret),
            certificate: path(c.client_certificate_path).map(|path| CertificateSource {
                path,
                password: secret(c.client_certificate_password),
            }),
            federated_token_file: path(c.federated_token_file),
            password: secret(c.password),
            ci: github.or(pipelines),
        })
    }
}

impl From<SessionState> for v1::SessionState {
    fn from(state: SessionState) -> Self {
        match state {
            SessionState::Fresh => v1::SessionState::Fresh,
            SessionState::RefreshDue => v1::SessionState::RefreshDue,
            SessionState::Refreshing => v1::SessionState::Refreshing,
            SessionState::Degraded => v1::SessionState::Degraded,
            SessionState::LoginRequired => v1::SessionState::LoginRequired,
        }
    }
}

impl From<SessionStatus> for v1::SessionInfo {
    fn from(status: SessionStatus) -> Self {
        v1::SessionInfo {
            session_id: status.id.to_string(),
            spec: Some(v1::SessionSpec::from(&status.spec)),
            authority: status.spec.authority.to_string(),
            account: status.account.unwrap_or_default(),
            state: v1::SessionState::from(status.state) as i32,
            token_expires_at_unix: unix_or_zero(status.token_expires_at),
            last_refresh_unix: unix_or_zero(status.last_refresh),
            last_error: status.last_error.unwrap_or_default(),
            next_refresh_unix: unix_or_zero(status.next_refresh),
            tokens_served: status.tokens_served,
            refreshes: status.refreshes,
            refresh_failures: status.refresh_failures,
            last_error_codes: status.last_error_codes,
            last_served_unix: unix_or_zero(status.last_served),
            unsaved_refresh_token: status.unsaved.unwrap_or_default(),
            forwarding_allowed: status.forwarding_allowed,
            forwarded_tokens_served: status.forwarded_served,
        }
    }
}

impl From<PendingLogin> for v1::PendingLogin {
    fn from(pending: PendingLogin) -> Self {
        let spec = v1::SessionSpec::from(&pending.spec);
        v1::PendingLogin {
            session_id: pending.id.to_string(),
            command: broker_proto::login_command(&spec),
            spec: Some(spec),
            since_unix: unix_seconds(pending.since),
            callers: pending.callers,
            notified: pending.notified,
        }
    }
}

impl From<EventKind> for v1::SessionEventKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Refreshed => v1::SessionEventKind::Refreshed,
            EventKind::RefreshFailed => v1::SessionEventKind::RefreshFailed,
            EventKind::LoginRequired => v1::SessionEventKind::LoginRequired,
            EventKind::LoggedIn => v1::SessionEventKind::LoggedIn,
            EventKind::LoggedOut => v1::SessionEventKind::LoggedOut,
        }
    }
}

/// A session event, with the session as it is right after it (absent once logged out).
pub(super) fn session_event(broker: &Broker, event: SessionEvent) -> v1::SessionEvent {
    v1::SessionEvent {
        kind: v1::SessionEventKind::from(event.kind) as i32,
        at_unix: unix_seconds(event.at),
        message: event.message.unwrap_or_default(),
        session: broker
            .session_status(&event.session_id)
            .map(v1::SessionInfo::from),
        session_id: event.session_id.to_string(),
        missed: 0,
    }
}

impl From<doctor::Check> for v1::Check {
    fn from(check: doctor::Check) -> Self {
        v1::Check {
            id: check.id,
            level: match check.level {
                doctor::Level::Pass => v1::CheckLevel::Pass,
                doctor::Level::Warn => v1::CheckLevel::Warn,
                doctor::Level::Fail => v1::CheckLevel::Fail,
            } as i32,
            summary: check.summary,
            fix: check.fix.unwrap_or_default(),
        }
    }
}

impl From<LoginPrompt> for v1::LoginEvent {
    fn from(prompt: LoginPrompt) -> Self {
        let event = match prompt {
            LoginPrompt::DeviceCode {
                verification_uri,
                user_code,
                message,
                expires_at,
            } => login_event::Event::DeviceCode(v1::DeviceCode {
                verification_uri,
                user_code,
                message,
                expires_at_unix: unix_seconds(expires_at),
            }),
            LoginPrompt::OpenUrl { url } => login_event::Event::OpenUrl(v1::OpenUrl { url }),
        };
        v1::LoginEvent { event: Some(event) }
    }
}

/// The wire's "0 = never".
pub(super) fn unix_or_zero(time: Option<std::time::SystemTime>) -> i64 {
    time.map(unix_seconds).unwrap_or(0)
}
