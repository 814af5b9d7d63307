//! Time behind a trait, so backoff, breakers and freeze detection are tested without sleeping.
//!
//! Logic in `supervision` never calls `Instant::now()` itself: it asks a [`Clock`] (the breaker) or
//! takes `now` as an argument (the restart policy). Production code uses [`SystemClock`]; tests use
//! `ManualClock` (test builds only) and move time forward explicitly.

use std::time::{Duration, Instant};

use super::shutdown::StopSignal;

/// A source of monotonic time, and the way threads wait on it.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;

    /// Waits `duration`, or less if `stop` fires; true when stopped.
    fn wait(&self, stop: &StopSignal, duration: Duration) -> bool;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wait(&self, stop: &StopSignal, duration: Duration) -> bool {
        stop.wait_timeout(duration)
    }
}

#[cfg(test)]
pub use manual::ManualClock;

#[cfg(test)]
mod manual {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::Clock;
    use crate::supervision::StopSignal;

    /// A clock that only moves when told to, for tests. Share it as `Arc<ManualClock>`: the test keeps one
    /// handle to advance time, the code under test gets another as `Arc<dyn Clock>`.
    #[derive(Debug)]
    pub struct ManualClock {
        // `Instant` has no public constructor besides `now()`, so the clock starts at the real time of
        // creation and only ever moves by `advance`.
        now: Mutex<Instant>,
    }

    impl ManualClock {
        pub fn new() -> Self {
            Self { now: Mutex::new(Instant::now()) }
        }

        /// Moves time forward by `by`.
        pub fn advance(&self, by: Duration) {
            let mut now = self.lock();
            *now += by;
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
            // The guarded value is a plain `Instant`; a panic elsewhere cannot leave it half-written.
            self.now.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    impl Default for ManualClock {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.lock()
        }

        /// Time jumps: the wait is over at once, `duration` later.
        fn wait(&self, stop: &StopSignal, duration: Duration) -> bool {
            if !stop.is_stopped() {
                self.advance(duration);
            }
            stop.is_stopped()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(3));
        clock.advance(Duration::from_millis(500));
        assert_eq!(clock.now() - start, Duration::from_millis(3500));
    }

    #[test]
    fn manual_clock_is_shared_through_arc_dyn_clock() {
        let manual = Arc::new(ManualClock::new());
        let shared: Arc<dyn Clock> = manual.clone();
        let start = shared.now();
        manual.advance(Duration::from_secs(10));
        assert_eq!(shared.now() - start, Duration::from_secs(10));
    }

    #[test]
    fn a_manual_wait_moves_time_instead_of_sleeping() {
        let clock = ManualClock::new();
        let (stop, signal) = crate::supervision::stop_signal();
        let start = clock.now();
        assert!(!clock.wait(&signal, Duration::from_secs(3600)));
        assert_eq!(clock.now() - start, Duration::from_secs(3600));
        drop(stop);
        assert!(clock.wait(&signal, Duration::from_secs(1)), "a stopped wait says so");
        assert_eq!(clock.now() - start, Duration::from_secs(3600), "and takes no time");
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock;
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }
}
