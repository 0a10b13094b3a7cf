//! Refreshing ahead of time: active sessions at the IdP's `refresh_in` or about half their
//! token's life, idle ones only as a keepalive, failed ones at their backoff's retry time.
//!
//! Plans are wall-clock times. The scheduler sleeps until the earliest one, but never longer
//! than a minute, so that a step of the wall clock (or, where the sleep does not count suspended
//! time, a resume) delays overdue refreshes by a minute at most; a request that finds a stale
//! token refreshes at once anyway. Nothing wakes it more often than that while nothing is due:
//! on Linux the sleep is one timerfd on CLOCK_BOOTTIME, which fires once, exactly when due, and
//! counts time spent suspended (tokio's timer wheel would wake the runtime up to three times on
//! the way to a one-minute deadline, as it moves the timer down its levels).

use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use super::refresh::Trigger;
use crate::identity::credential::Supplied;

/// The longest the scheduler sleeps without looking at the wall clock again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Runs until the broker is dropped.
pub async fn run(broker: Arc<Broker>) {
    let mut config = broker.settings.subscribe();
    let alarm = Alarm::new();
    loop {
        let sleep = plan(&broker);
        tokio::select! {
            () = alarm.sleep(sleep) => {}
            () = broker.wake.notified() => {}
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts the work that is due (a refresh, or storing a rotated refresh token the store
/// refused), and says how long to sleep until the next.
fn plan(broker: &Arc<Broker>) -> Duration {
    let now = broker.clock.now();
    let policy = broker.policy();
    let mut sleep = MAX_SLEEP;
    for session in broker.all_sessions() {
        let Some(at) = session.next_work(now, &policy) else {
            continue;
        };
        match at.duration_since(now) {
            Ok(wait) if !wait.is_zero() => sleep = sleep.min(wait),
            _ => {
                // One task per session at a time; the claim ends with the task, however it ends.
                let Some(claim) = session.try_schedule() else {
                    continue;
                };
                let broker = broker.clone();
                tokio::spawn(async move {
                    let session = claim.session();
                    if session
                        .next_refresh(now, &broker.policy())
                        .is_some_and(|at| at <= now)
                    {
                        let _ = broker
                            .refresh_session(session, Trigger::Scheduled, &Supplied::default())
                            .await;
                    } else if session.unsaved_due(now) {
                        broker.save_unsaved(session).await;
                    }
                    drop(claim);
                    broker.wake_scheduler();
                });
            }
        }
    }
    sleep
}

/// A sleep that wakes the process once, when due.
struct Alarm {
    #[cfg(target_os = "linux")]
    timer: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl Alarm {
    fn new() -> Self {
        #[cfg(target_os = "linux")]
        {
            use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
            let timer = timerfd_create(
                TimerfdClockId::Boottime,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )
            .map_err(std::io::Error::from)
            .and_then(|fd| {
                // SAFETY: an OwnedFd keeps its descriptor open, and the same, until dropped,
                // and the AsyncFd owns it from here on.
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        fd,
                        tokio::io::Interest::READABLE,
                    )
                }
                .map_err(std::io::Error::from)
            });
            if let Err(e) = &timer {
                tracing::debug!("no timerfd ({e}); the scheduler uses tokio's timer");
            }
            Alarm { timer: timer.ok() }
        }
        #[cfg(not(target_os = "linux"))]
        {
            Alarm {}
        }
    }

    async fn sleep(&self, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(timer) = &self.timer
            && timerfd_sleep(timer, duration).await.is_ok()
        {
            return;
        }
        tokio::time::sleep(duration).await;
    }
}

/// Arms the timer for `duration` from now (replacing any earlier setting, and with it any
/// expiry not yet read) and waits for it to fire.
#[cfg(target_os = "linux")]
async fn timerfd_sleep(
    timer: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    duration: Duration,
) -> std::io::Result<()> {
    use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
    let value = Timespec {
        tv_sec: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(duration.subsec_nanos()),
    };
    let once = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: value,
    };
    timerfd_settime(timer.get_ref(), TimerfdTimerFlags::empty(), &once)?;
    loop {
        let mut ready = timer.readable().await?;
        let mut expirations = [0u8; 8];
        match rustix::io::read(timer.get_ref(), &mut expirations) {
            Ok(_) => return Ok(()),
            // Readiness left over from an earlier setting: wait for this one.
            Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod alarm_tests {
    use super::*;

    #[tokio::test]
    async fn the_alarm_sleeps_its_time_and_can_be_set_again() {
        let alarm = Alarm::new();
        #[cfg(target_os = "linux")]
        assert!(alarm.timer.is_some(), "a timerfd on Linux");
        for wanted in [Duration::from_millis(30), Duration::from_millis(10)] {
            let started = std::time::Instant::now();
            alarm.sleep(wanted).await;
            assert!(started.elapsed() >= wanted, "woke before its time");
        }
        // A sleep abandoned half way leaves nothing that ends the next one early.
        let _ = tokio::time::timeout(
            Duration::from_millis(5),
            alarm.sleep(Duration::from_millis(10)),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(15)).await;
        let started = std::time::Instant::now();
        alarm.sleep(Duration::from_millis(40)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "an old expiry ended it early"
        );
    }
}
