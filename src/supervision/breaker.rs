//! A circuit breaker (closed / open / half-open) in front of a dependency: Redis, PostgreSQL, a camera
//! stream, a model.
//!
//! While the dependency keeps failing the breaker opens and callers stop hammering it (the outbox keeps
//! the events); after `open_for` one trial call is let through, and only its success closes the breaker.
//! The breaker is a pure state machine: time comes from an injected [`Clock`], and every state change is
//! handed back to the caller as a [`Transition`] (and to an optional observer), so the service emits its
//! log line and metric in one place.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::supervision::clock::Clock;

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures (no success in between) that open a closed breaker.
    pub failure_threshold: u32,
    /// How long an open breaker rejects calls before it admits a half-open trial. Also the time after
    /// which a trial that never reported back is considered lost, so a dropped result cannot wedge the
    /// breaker in half-open.
    pub open_for: Duration,
    /// Successful trials, one at a time, needed to close a half-open breaker.
    pub half_open_successes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow; consecutive failures are counted.
    Closed,
    /// Probing: one trial call at a time.
    HalfOpen,
    /// Calls are rejected until `open_for` has passed.
    Open,
}

impl BreakerState {
    /// Gauge value: 0 closed, 1 half-open, 2 open (higher is worse).
    pub fn as_metric(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change, reported exactly once by the call that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

impl std::fmt::Display for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)
    }
}

/// The answer to [`CircuitBreaker::admit`]: whether to make the call, and the transition (open ->
/// half-open) that admitting it caused, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Admission {
    pub allowed: bool,
    pub transition: Option<Transition>,
}

/// Serializable snapshot for `/api/v1/system`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerView {
    pub name: String,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// Seconds since the breaker last opened; null while closed.
    pub opened_secs_ago: Option<f64>,
    /// Times the breaker opened (from closed or from a failed trial) since it was created.
    pub total_opens: u64,
}

/// Called with the breaker's name on every transition, after the breaker's lock is released.
pub type TransitionObserver = Arc<dyn Fn(&str, Transition) + Send + Sync>;

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    /// Set when the breaker opens, cleared when it closes.
    opened_at: Option<Instant>,
    total_opens: u64,
    /// Half-open only: when the trial now in flight was admitted.
    trial_started: Option<Instant>,
    /// Half-open only: trials that succeeded since the breaker went half-open.
    trial_successes: u32,
}

pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    observer: Option<TransitionObserver>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("inner", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            name: name.into(),
            config,
            clock,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                total_opens: 0,
                trial_started: None,
                trial_successes: 0,
            }),
            observer: None,
        }
    }

    /// Also reports every transition to `observer` (e.g. one closure that logs and bumps the metric),
    /// including the open -> half-open one that [`allow`](Self::allow) cannot return.
    pub fn with_observer(mut self, observer: TransitionObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Whether to make a call now. Closed: yes. Open: no until `open_for` has passed, then the breaker
    /// goes half-open and this caller gets the single trial. Half-open: no while a trial is in flight.
    /// An admitted call must be followed by `record_success` or `record_failure`.
    pub fn admit(&self) -> Admission {
        let now = self.clock.now();
        let mut inner = self.lock();
        let (allowed, transition) = match inner.state {
            BreakerState::Closed => (true, None),
            BreakerState::Open => {
                let opened_at = inner.opened_at.unwrap_or(now);
                if now.saturating_duration_since(opened_at) >= self.config.open_for {
                    inner.state = BreakerState::HalfOpen;
                    inner.trial_started = Some(now);
                    inner.trial_successes = 0;
                    let t = Transition { from: BreakerState::Open, to: BreakerState::HalfOpen };
                    (true, Some(t))
                } else {
                    (false, None)
                }
            }
            BreakerState::HalfOpen => match inner.trial_started {
                Some(started) if now.saturating_duration_since(started) < self.config.open_for => (false, None),
                // No trial in flight, or the last one never reported back: admit the next.
                _ => {
                    inner.trial_started = Some(now);
                    (true, None)
                }
            },
        };
        drop(inner);
        self.notify(transition);
        Admission { allowed, transition }
    }

    /// [`admit`](Self::admit) without the transition; use it with an observer, or the open -> half-open
    /// transition goes unreported.
    pub fn allow(&self) -> bool {
        self.admit().allowed
    }

    /// The admitted call succeeded. Returns the transition it caused (half-open -> closed), if any.
    pub fn record_success(&self) -> Option<Transition> {
        let mut inner = self.lock();
        let transition = match inner.state {
            BreakerState::Closed => {
                inner.consecutive_failures = 0;
                None
            }
            // A call admitted before the breaker opened: says nothing about the dependency now.
            BreakerState::Open => None,
            BreakerState::HalfOpen => {
                if inner.trial_started.take().is_none() {
                    // Not a trial's result (a call admitted while still closed): ignore.
                    None
                } else {
                    inner.trial_successes += 1;
                    if inner.trial_successes >= self.config.half_open_successes {
                        inner.state = BreakerState::Closed;
                        inner.consecutive_failures = 0;
                        inner.opened_at = None;
                        inner.trial_successes = 0;
                        Some(Transition { from: BreakerState::HalfOpen, to: BreakerState::Closed })
                    } else {
                        None
                    }
                }
            }
        };
        drop(inner);
        self.notify(transition);
        transition
    }

    /// The admitted call failed. Returns the transition it caused (closed -> open after
    /// `failure_threshold` consecutive failures, or half-open -> open when the trial fails), if any.
    pub fn record_failure(&self) -> Option<Transition> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let transition = match inner.state {
            BreakerState::Closed => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                if inner.consecutive_failures >= self.config.failure_threshold {
                    Self::open(&mut inner, now);
                    Some(Transition { from: BreakerState::Closed, to: BreakerState::Open })
                } else {
                    None
                }
            }
            // Already open: a late failure must not extend the open period.
            BreakerState::Open => None,
            BreakerState::HalfOpen => {
                if inner.trial_started.is_none() {
                    None
                } else {
                    inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                    // Reopening restarts the open timer: the next trial waits a full `open_for`.
                    Self::open(&mut inner, now);
                    Some(Transition { from: BreakerState::HalfOpen, to: BreakerState::Open })
                }
            }
        };
        drop(inner);
        self.notify(transition);
        transition
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    pub fn view(&self) -> BreakerView {
        let now = self.clock.now();
        let inner = self.lock();
        BreakerView {
            name: self.name.clone(),
            state: inner.state,
            consecutive_failures: inner.consecutive_failures,
            opened_secs_ago: inner.opened_at.map(|at| now.saturating_duration_since(at).as_secs_f64()),
            total_opens: inner.total_opens,
        }
    }

    fn open(inner: &mut Inner, now: Instant) {
        inner.state = BreakerState::Open;
        inner.opened_at = Some(now);
        inner.total_opens += 1;
        inner.trial_started = None;
        inner.trial_successes = 0;
    }

    fn notify(&self, transition: Option<Transition>) {
        if let (Some(observer), Some(t)) = (&self.observer, transition) {
            observer(&self.name, t);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves `Inner` consistent before anything can panic, so a poisoned lock is safe.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervision::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    const CLOSED: BreakerState = BreakerState::Closed;
    const OPEN: BreakerState = BreakerState::Open;
    const HALF_OPEN: BreakerState = BreakerState::HalfOpen;

    fn t(from: BreakerState, to: BreakerState) -> Option<Transition> {
        Some(Transition { from, to })
    }

    fn config(threshold: u32, open_for_s: u64, successes: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: threshold,
            open_for: Duration::from_secs(open_for_s),
            half_open_successes: successes,
        }
    }

    fn breaker(config: BreakerConfig) -> (CircuitBreaker, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (CircuitBreaker::new("redis", config, clock.clone()), clock)
    }

    /// A breaker that is open right now.
    fn opened(config: BreakerConfig) -> (CircuitBreaker, Arc<ManualClock>) {
        let (b, clock) = breaker(config);
        for _ in 0..b.config.failure_threshold {
            assert!(b.allow());
            let _ = b.record_failure();
        }
        assert_eq!(b.state(), OPEN);
        (b, clock)
    }

    #[test]
    fn state_metric_and_names() {
        assert_eq!(CLOSED.as_metric(), 0);
        assert_eq!(HALF_OPEN.as_metric(), 1);
        assert_eq!(OPEN.as_metric(), 2);
        for s in [CLOSED, HALF_OPEN, OPEN] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(Transition { from: CLOSED, to: OPEN }.to_string(), "closed -> open");
    }

    #[test]
    fn opens_after_exactly_threshold_consecutive_failures() {
        let (b, _clock) = breaker(config(3, 10, 1));
        assert_eq!(b.record_failure(), None);
        assert_eq!(b.record_failure(), None);
        assert_eq!(b.state(), CLOSED);
        assert!(b.allow());
        assert_eq!(b.record_failure(), t(CLOSED, OPEN));
        assert_eq!(b.state(), OPEN);
        assert!(!b.allow());
        // Already open: no second transition, no extra open.
        assert_eq!(b.record_failure(), None);
        assert_eq!(b.view().total_opens, 1);
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let (b, _clock) = breaker(config(3, 10, 1));
        assert_eq!(b.record_failure(), None);
        assert_eq!(b.record_failure(), None);
        assert_eq!(b.record_success(), None);
        assert_eq!(b.view().consecutive_failures, 0);
        assert_eq!(b.record_failure(), None);
        assert_eq!(b.record_failure(), None);
        assert_eq!(b.state(), CLOSED);
        assert_eq!(b.record_failure(), t(CLOSED, OPEN));
    }

    #[test]
    fn stays_open_for_open_for_then_admits_one_trial() {
        let (b, clock) = opened(config(2, 10, 1));
        clock.advance(Duration::from_millis(9_999));
        assert_eq!(b.admit(), Admission { allowed: false, transition: None });
        assert_eq!(b.state(), OPEN);
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.admit(), Admission { allowed: true, transition: t(OPEN, HALF_OPEN) });
        assert_eq!(b.state(), HALF_OPEN);
        // The trial is in flight: everyone else waits, and the transition is not reported again.
        assert_eq!(b.admit(), Admission { allowed: false, transition: None });
        clock.advance(Duration::from_secs(5));
        assert!(!b.allow());
    }

    #[test]
    fn trial_failure_reopens_and_restarts_the_open_timer() {
        let (b, clock) = opened(config(2, 10, 1));
        clock.advance(Duration::from_secs(10));
        assert!(b.allow());
        clock.advance(Duration::from_secs(3));
        assert_eq!(b.record_failure(), t(HALF_OPEN, OPEN));
        assert_eq!(b.state(), OPEN);
        assert_eq!(b.view().total_opens, 2);
        // Timer restarted at the trial failure, not at the first opening.
        clock.advance(Duration::from_secs(9));
        assert!(!b.allow());
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.admit().transition, t(OPEN, HALF_OPEN));
    }

    #[test]
    fn trial_success_closes() {
        let (b, clock) = opened(config(2, 10, 1));
        clock.advance(Duration::from_secs(10));
        assert!(b.allow());
        assert_eq!(b.record_success(), t(HALF_OPEN, CLOSED));
        assert_eq!(b.state(), CLOSED);
        let v = b.view();
        assert_eq!(v.consecutive_failures, 0);
        assert_eq!(v.opened_secs_ago, None);
        assert!(b.allow() && b.allow());
        // Fresh count after closing.
        assert_eq!(b.record_failure(), None);
        assert_eq!(b.record_failure(), t(CLOSED, OPEN));
    }

    #[test]
    fn several_trial_successes_needed_one_at_a_time() {
        let (b, clock) = opened(config(1, 10, 3));
        clock.advance(Duration::from_secs(10));
        for i in 0..3 {
            assert!(b.allow(), "trial {i}");
            assert!(!b.allow(), "only one trial in flight");
            let expected = if i == 2 { t(HALF_OPEN, CLOSED) } else { None };
            assert_eq!(b.record_success(), expected);
        }
        assert_eq!(b.state(), CLOSED);
    }

    #[test]
    fn a_lost_trial_does_not_wedge_half_open() {
        let (b, clock) = opened(config(1, 10, 1));
        clock.advance(Duration::from_secs(10));
        assert!(b.allow());
        clock.advance(Duration::from_secs(9));
        assert!(!b.allow());
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.admit(), Admission { allowed: true, transition: None });
        assert_eq!(b.record_success(), t(HALF_OPEN, CLOSED));
    }

    #[test]
    fn late_results_from_before_opening_are_ignored() {
        let (b, clock) = opened(config(1, 10, 1));
        // Results from calls admitted while still closed.
        assert_eq!(b.record_success(), None);
        assert_eq!(b.record_failure(), None);
        assert_eq!(b.state(), OPEN);
        assert_eq!(b.view().total_opens, 1);
        clock.advance(Duration::from_secs(10));
        assert!(b.allow());
        assert_eq!(b.record_success(), t(HALF_OPEN, CLOSED));
        // No trial in flight any more: a stray second result changes nothing.
        assert_eq!(b.record_success(), None);
        assert_eq!(b.state(), CLOSED);
    }

    #[test]
    fn concurrent_allow_in_half_open_admits_only_one() {
        const THREADS: usize = 16;
        for _round in 0..20 {
            let (b, clock) = opened(config(1, 10, 1));
            clock.advance(Duration::from_secs(10));
            let b = Arc::new(b);
            let barrier = Arc::new(Barrier::new(THREADS));
            let admitted = Arc::new(AtomicUsize::new(0));
            let transitions = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (b, barrier) = (b.clone(), barrier.clone());
                    let (admitted, transitions) = (admitted.clone(), transitions.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let a = b.admit();
                        if a.allowed {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        if a.transition.is_some() {
                            transitions.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(admitted.load(Ordering::SeqCst), 1);
            assert_eq!(transitions.load(Ordering::SeqCst), 1);
            assert_eq!(b.state(), HALF_OPEN);
        }
    }

    #[test]
    fn every_transition_is_reported_exactly_once() {
        let clock = Arc::new(ManualClock::new());
        let seen: Arc<Mutex<Vec<(String, Transition)>>> = Arc::default();
        let sink = seen.clone();
        let b = CircuitBreaker::new("postgres", config(2, 10, 1), clock.clone())
            .with_observer(Arc::new(move |name: &str, t| sink.lock().unwrap().push((name.to_string(), t))));

        let mut returned = Vec::new();
        let mut record = |t: Option<Transition>| returned.extend(t);
        for _ in 0..4 {
            record(b.record_failure());
        }
        clock.advance(Duration::from_secs(10));
        for _ in 0..3 {
            record(b.admit().transition);
        }
        record(b.record_failure());
        record(b.record_failure());
        clock.advance(Duration::from_secs(10));
        // `allow` drops the transition; the observer still sees it.
        assert!(b.allow());
        assert!(!b.allow());
        record(b.record_success());
        record(b.record_success());

        assert_eq!(
            returned,
            vec![
                Transition { from: CLOSED, to: OPEN },
                Transition { from: OPEN, to: HALF_OPEN },
                Transition { from: HALF_OPEN, to: OPEN },
                Transition { from: HALF_OPEN, to: CLOSED },
            ]
        );
        let seen = seen.lock().unwrap();
        let observed: Vec<Transition> = seen.iter().map(|(_, t)| *t).collect();
        assert_eq!(
            observed,
            vec![
                Transition { from: CLOSED, to: OPEN },
                Transition { from: OPEN, to: HALF_OPEN },
                Transition { from: HALF_OPEN, to: OPEN },
                Transition { from: OPEN, to: HALF_OPEN },
                Transition { from: HALF_OPEN, to: CLOSED },
            ]
        );
        assert!(seen.iter().all(|(name, _)| name == "postgres"));
    }

    #[test]
    fn view_serializes_for_the_system_endpoint() {
        let (b, clock) = breaker(config(2, 10, 1));
        let json = serde_json::to_value(b.view()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "redis", "state": "closed", "consecutive_failures": 0,
                "opened_secs_ago": null, "total_opens": 0
            })
        );
        let _ = b.record_failure();
        let _ = b.record_failure();
        clock.advance(Duration::from_millis(2500));
        let json = serde_json::to_value(b.view()).unwrap();
        assert_eq!(json["state"], "open");
        assert_eq!(json["consecutive_failures"], 2);
        assert_eq!(json["opened_secs_ago"], 2.5);
        assert_eq!(json["total_opens"], 1);
    }
}
