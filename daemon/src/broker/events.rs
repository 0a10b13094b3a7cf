//! What happens to sessions, told to whoever watches (`brokerctl status --watch`).
//!
//! A broadcast channel: sending never waits, so a slow or stuck watcher cannot hold up a
//! refresh; it loses the oldest events instead, and is told how many.

use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::spec::SessionId;

/// Events kept for a watcher that has not read them yet.
const BACKLOG: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Refreshed,
    RefreshFailed,
    /// The session cannot get tokens until someone signs in (or gives new credentials).
    LoginRequired,
    LoggedIn,
    LoggedOut,
}

#[derive(Clone, Debug)]
pub struct SessionEvent {
    pub kind: EventKind,
    pub session_id: SessionId,
    pub at: SystemTime,
    /// Why, for failures. Error text only: never a token.
    pub message: Option<String>,
}

pub(super) struct Events(broadcast::Sender<SessionEvent>);

impl Default for Events {
    fn default() -> Self {
        Events(broadcast::channel(BACKLOG).0)
    }
}

impl Events {
    /// Tells every watcher; with none, the event is dropped.
    pub(super) fn send(&self, event: SessionEvent) {
        tracing::debug!(
            "session {}: {:?}{}",
            event.session_id,
            event.kind,
            event
                .message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        );
        let _ = self.0.send(event);
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.0.subscribe()
    }
}
