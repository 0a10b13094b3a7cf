//! Tokens for other machines, through the forwarding socket (`forward.sock`), and sign-ins that
//! callers without a terminal needed.
//!
//! The forwarding socket reaches brokerd from wherever the user forwards it (an SSH host, a
//! devcontainer, WSL): whoever can use the forward there gets its tokens. So it answers only
//! for sessions the user allowed (`brokerctl forward allow`, `login --allow-forwarding`, or a
//! profile's `allow_forwarding`), never creates a session, never takes credentials and never
//! signs in; every token served there is counted and audited as forwarded.
//!
//! A caller without a terminal (a GUI, a background tool, a forwarded shim) that finds a
//! sign-in needed cannot prompt. The first such caller leaves one pending login for the
//! session and at most one desktop notification naming the command; the hundredth fails as
//! fast as the first, with the same command, and notifies nobody.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::{Broker, BrokerError, Grant, Selector, Session, refresh};
use crate::identity::credential::Supplied;
use crate::spec::{SessionId, SessionSpec};

/// A sign-in that callers without a terminal needed.
#[derive(Clone, Debug)]
pub struct PendingLogin {
    pub id: SessionId,
    pub spec: SessionSpec,
    pub since: SystemTime,
    pub callers: u64,
    pub notified: bool,
}

#[derive(Default)]
pub(super) struct PendingLogins(Mutex<BTreeMap<SessionId, PendingLogin>>);

impl PendingLogins {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SessionId, PendingLogin>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the pending login of `id`: it was signed in to, or logged out.
    pub(super) fn clear(&self, id: &SessionId) {
        self.lock().remove(id);
    }
}

impl Broker {
    /// Whether `session` is served on the forwarding socket: allowed for itself, or named by
    /// a profile that allows it.
    pub fn forwarding_allowed(&self, session: &Session) -> bool {
        session.forwarding_allowed() || self.profile_allows_forwarding(&session.id)
    }

    fn profile_allows_forwarding(&self, id: &SessionId) -> bool {
        let config = self.settings.get();
        config
            .profiles
            .values()
            .filter(|profile| profile.allow_forwarding)
            .filter_map(|profile| profile.spec(None).ok())
            .any(|spec| spec.id() == *id)
    }

    /// Allows or denies a session on the forwarding socket, and keeps that in the index.
    pub async fn set_forwarding(
        &self,
        selector: &Selector,
        allowed: bool,
    ) -> Result<SessionId, BrokerError> {
        let session = self.select_one(selector)?;
        if session.set_forwarding(allowed) {
            tracing::info!(
                "session {} is {} on the forwarding socket",
                session.id,
                if allowed {
                    "allowed"
                } else {
                    "no longer allowed"
                }
            );
            self.save_index().await;
        }
        Ok(session.id.clone())
    }

    /// GetToken for a caller on the forwarding socket: an allowed session that exists, served
    /// or refreshed with what brokerd already holds.
    pub async fn get_token_forwarded(&self, spec: &SessionSpec) -> Result<Grant, BrokerError> {
        let session = self
            .session(&spec.id())
            .filter(|session| self.forwarding_allowed(session))
            .ok_or_else(|| BrokerError::NotForwarded {
                id: spec.id(),
                described: spec.describe(),
            })?;
        let policy = self.policy();
        let token = match session.fresh_token(self.clock.now(), policy.min_remaining) {
            Some(token) => token,
            None => {
                self.refresh_session(&session, refresh::Trigger::Request, &Supplied::default())
                    .await?
            }
        };
        session.served_forwarded();
        Ok(self.grant(&session, token, &policy))
    }

    /// A caller that cannot prompt found a sign-in needed for `spec`: one pending login per
    /// session, and (when the configuration allows) one desktop notification for it.
    pub fn login_needed_without_terminal(&self, spec: &SessionSpec) {
        let notify = {
            let mut pending = self.pending.lock();
            let entry = pending.entry(spec.id()).or_insert_with(|| PendingLogin {
                id: spec.id(),
                spec: spec.clone(),
                since: self.clock.now(),
                callers: 0,
                notified: false,
            });
            entry.callers += 1;
            let first = !entry.notified && self.settings.get().login.notify;
            if first {
                entry.notified = true;
            }
            first
        };
        if !notify {
            return;
        }
        let command = broker_proto::login_command(&broker_proto::v1::SessionSpec::from(spec));
        let notice = crate::notify::Notice {
            summary: "kubectl needs you to sign in".into(),
            body: format!(
                "A program without a terminal asked for a token for {}. Sign in with: {command}",
                spec.describe()
            ),
        };
        let notifier = self.notifier.clone();
        tokio::spawn(async move {
            if let Err(e) = notifier.notify(notice).await {
                tracing::info!("no desktop notification for the pending sign-in: {e}");
            }
        });
    }

    /// The sign-ins waiting for the user, oldest first.
    pub fn pending_logins(&self) -> Vec<PendingLogin> {
        let mut all: Vec<PendingLogin> = self.pending.lock().values().cloned().collect();
        all.sort_by_key(|p| p.since);
        all
    }
}
