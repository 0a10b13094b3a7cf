//! Refreshing ahead of time: active sessions at the IdP's `refresh_in` or about half their
//! token's life, idle ones only as a keepalive, failed ones at their backoff's retry time.
//!
//! Plans are wall-clock times. The scheduler sleeps until the earliest one, but never longer
//! than a minute: a monotonic sleep does not count time a laptop spends suspended, so after a
//! resume overdue refreshes start within a minute (and a request that finds a stale token
//! refreshes at once anyway). Nothing wakes it more often than that while nothing is due.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Broker;
use super::refresh::Trigger;
use crate::identity::credential::Supplied;

/// The longest the scheduler sleeps without looking at the wall clock again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Runs until the broker is dropped.
pub async fn run(broker: Arc<Broker>) {
    let mut config = broker.settings.subscribe();
    loop {
        let sleep = plan(&broker);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = broker.wake.notified() => {}
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts a refresh for every session that is due, and says how long to sleep until the next.
fn plan(broker: &Arc<Broker>) -> Duration {
    let now = broker.clock.now();
    let policy = broker.policy();
    let mut sleep = MAX_SLEEP;
    for session in broker.all_sessions() {
        let Some(at) = session.next_refresh(now, &policy) else {
            continue;
        };
        match at.duration_since(now) {
            Ok(wait) if !wait.is_zero() => sleep = sleep.min(wait),
            _ => {
                if session.scheduled.swap(true, Ordering::SeqCst) {
                    continue;
                }
                let broker = broker.clone();
                tokio::spawn(async move {
                    let _ = broker
                        .refresh_session(&session, Trigger::Scheduled, &Supplied::default())
                        .await;
                    session.scheduled.store(false, Ordering::SeqCst);
                    broker.wake_scheduler();
                });
            }
        }
    }
    sleep
}
