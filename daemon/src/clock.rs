//! The wall clock, behind a trait so that tests can move time.
//!
//! Token expiry is judged on `SystemTime`: a monotonic clock stops while a laptop sleeps, and a
//! token that expired during the night must not look fresh in the morning.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The wall clock moved by an offset that tests set (`brokerd --test-clock`), as a laptop's
/// sleep or a clock jump would move it. Reading it is one atomic load: no I/O, no lock.
#[derive(Debug, Default)]
pub struct AdjustableClock {
    offset_secs: std::sync::atomic::AtomicI64,
}

impl AdjustableClock {
    /// Moves the clock by `seconds` (backwards when negative) and returns the new time.
    pub fn advance(&self, seconds: i64) -> SystemTime {
        self.offset_secs
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
        self.now()
    }
}

impl Clock for AdjustableClock {
    fn now(&self) -> SystemTime {
        let offset = self.offset_secs.load(std::sync::atomic::Ordering::SeqCst);
        let real = SystemTime::now();
        if offset >= 0 {
            real + Duration::from_secs(offset.unsigned_abs())
        } else {
            real - Duration::from_secs(offset.unsigned_abs())
        }
    }
}

/// Seconds since the Unix epoch, negative before it; what the wire and the index carry.
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The inverse of [`unix_seconds`], for any number: one past what the platform's clock can
/// hold (a hostile or corrupt file may say anything) saturates at the end of year 9999, or at
/// the epoch.
pub fn from_unix_seconds(seconds: i64) -> SystemTime {
    const END_OF_9999: u64 = 253_402_300_799;
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    let time = if seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    time.unwrap_or_else(|| {
        if seconds >= 0 {
            UNIX_EPOCH + Duration::from_secs(END_OF_9999)
        } else {
            UNIX_EPOCH
        }
    })
}

#[cfg(test)]
pub mod testing {
    use super::*;
    use std::sync::Mutex;

    /// A clock that stands still until a test moves it.
    #[derive(Debug)]
    pub struct ManualClock(Mutex<SystemTime>);

    impl ManualClock {
        pub fn new(start: SystemTime) -> Self {
            ManualClock(Mutex::new(start))
        }

        pub fn advance(&self, by: Duration) {
            let mut now = self.0.lock().unwrap();
            *now += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adjustable_clock_moves_both_ways() {
        let clock = AdjustableClock::default();
        let before = SystemTime::now();
        let moved = clock.advance(3 * 3600);
        assert!(moved >= before + Duration::from_secs(3 * 3600));
        let back = clock.advance(-3 * 3600);
        assert!(back < moved - Duration::from_secs(3000));
    }

    #[test]
    fn unix_seconds_round_trip() {
        for s in [0, 1, 1_700_000_000, -5] {
            assert_eq!(unix_seconds(from_unix_seconds(s)), s);
        }
    }

    #[test]
    fn any_number_of_seconds_is_a_time() {
        for s in [i64::MAX, i64::MIN, i64::MAX - 1] {
            let _ = unix_seconds(from_unix_seconds(s));
        }
        assert!(from_unix_seconds(i64::MAX) > from_unix_seconds(4_000_000_000));
    }
}
