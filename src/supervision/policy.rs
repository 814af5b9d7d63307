//! The restart policy as pure data: when a child is restarted, after how long, and when the supervisor
//! gives up and escalates instead.
//!
//! Nothing here reads the clock or draws random numbers: `now` and the jitter sample are arguments, so
//! every decision is reproducible in a test. The supervisor owns one [`ChildSlot`] per child and feeds it
//! failure reports and heartbeats; the slot answers with a [`Decision`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::supervision::backoff::Backoff;

/// How a supervisor restarts one child.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Delay before the first restart after a healthy period.
    pub initial_backoff: Duration,
    /// Cap on the delay; it doubles per consecutive failure up to this.
    pub max_backoff: Duration,
    /// The backoff resets only after the child reported progress continuously for this long. Shorter
    /// healthy spells do not reset it, so a child that dies a second after each restart keeps backing
    /// off further instead of restarting at `initial_backoff` forever.
    pub healthy_after: Duration,
    /// At most this many restarts within `within`; one more failure escalates.
    pub max_restarts: u32,
    /// The sliding window for `max_restarts`. Independent of the backoff: a restart is forgotten only
    /// once it is older than this, even if the backoff was reset meanwhile.
    pub within: Duration,
    /// Fraction (0..=1) of each delay that is randomised, so children that failed together (a shared
    /// database went away) do not all restart in the same instant. The delay stays within
    /// `[delay * (1 - jitter), delay]`, so it never exceeds `max_backoff`.
    pub jitter: f64,
}

/// For tests; the service's policy comes from `[supervisor]` in the settings.
#[cfg(test)]
impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            max_restarts: 5,
            within: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

impl RestartPolicy {
    /// Every problem at once, so a config error is fixed in one edit. Empty means valid.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.initial_backoff.is_zero() {
            errors.push("initial_backoff must be greater than zero".to_string());
        }
        if self.max_backoff < self.initial_backoff {
            errors.push(format!(
                "max_backoff ({:?}) must be at least initial_backoff ({:?})",
                self.max_backoff, self.initial_backoff
            ));
        }
        if self.within.is_zero() && self.max_restarts > 0 {
            errors.push("within must be greater than zero when max_restarts > 0".to_string());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            // Also catches NaN, which `contains` rejects.
            errors.push(format!("jitter must be within 0..=1, got {}", self.jitter));
        }
        errors
    }

    /// `base` shortened by up to `jitter` of itself; `sample` is a uniform draw in `0..1` supplied by the
    /// caller. Out-of-range or NaN inputs are clamped rather than trusted, so a bad sample can never
    /// produce a delay above `base` or a panic.
    fn jittered(&self, base: Duration, sample: f64) -> Duration {
        let jitter = clamp_unit(self.jitter);
        let sample = clamp_unit(sample);
        base.mul_f64(1.0 - jitter * sample)
    }
}

fn clamp_unit(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// What the supervisor does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Rebuild the child once `after` has passed. `attempt` counts consecutive failures since the
    /// backoff last reset (1 for the first).
    Restart { after: Duration, attempt: u32 },
    /// Crash loop: the child already used its `max_restarts` within the window. Escalate to the parent
    /// instead of spinning.
    Escalate { restarts_in_window: u32 },
}

/// Restart bookkeeping for one child: the backoff and the sliding restart window.
#[derive(Debug, Clone)]
struct RestartTracker {
    policy: RestartPolicy,
    backoff: Backoff,
    /// Instants of the restarts granted within the last `within`, oldest first.
    window: VecDeque<Instant>,
    /// First progress report since the last failure; the healthy spell is measured from here.
    healthy_since: Option<Instant>,
}

impl RestartTracker {
    fn new(policy: RestartPolicy) -> Self {
        let backoff = Backoff::new(policy.initial_backoff, policy.max_backoff);
        Self { policy, backoff, window: VecDeque::new(), healthy_since: None }
    }

    /// Records a failure at `now` and decides. `jitter_sample` is a uniform draw in `0..1`.
    fn on_failure(&mut self, now: Instant, jitter_sample: f64) -> Decision {
        // Whatever health the child had is over; the next spell starts from its next progress report.
        self.healthy_since = None;
        self.forget_old(now);
        let restarts_in_window = self.window.len();
        if restarts_in_window >= self.policy.max_restarts as usize {
            return Decision::Escalate { restarts_in_window: restarts_in_window as u32 };
        }
        self.window.push_back(now);
        let base = self.backoff.next_delay();
        Decision::Restart { after: self.policy.jittered(base, jitter_sample), attempt: self.backoff.failures() }
    }

    /// Records progress at `now`. Returns true when this report completes a healthy spell of
    /// `healthy_after` and so resets the backoff (worth a log line). The restart window is untouched.
    fn on_healthy(&mut self, now: Instant) -> bool {
        let since = *self.healthy_since.get_or_insert(now);
        let sustained = now.saturating_duration_since(since) >= self.policy.healthy_after;
        if sustained && self.backoff.failures() > 0 {
            self.backoff.reset();
            return true;
        }
        false
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(&oldest) = self.window.front() {
            if self.in_window(oldest, now) {
                break;
            }
            self.window.pop_front();
        }
    }

    fn in_window(&self, t: Instant, now: Instant) -> bool {
        now.saturating_duration_since(t) < self.policy.within
    }
}

/// Which incarnation of a child a report comes from. Bumped on every restart, so a late report from an
/// instance that was already replaced (its thread was still unwinding, its mailbox still draining) is
/// recognised and dropped instead of killing the healthy new instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Generation(pub u64);

impl Generation {
    pub fn next(self) -> Self {
        Generation(self.0.wrapping_add(1))
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a child stands, as shown by `/api/v1/system`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// The current generation is live.
    Running,
    /// It failed; a restart is scheduled.
    BackingOff,
    /// It stopped and this supervisor will not restart it (its factory failed for good, or shutdown).
    Failed,
    /// It crash-looped past `max_restarts`; the parent was told.
    Escalated,
}

/// Serializable snapshot of one child for `/api/v1/system`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChildView {
    pub name: String,
    pub generation: Generation,
    pub state: ChildState,
    /// Restarts over the child's whole life (not just the window).
    pub restarts: u64,
    pub last_error: Option<String>,
}

/// Everything a supervisor keeps about one child.
#[derive(Debug, Clone)]
pub struct ChildSlot {
    name: String,
    generation: Generation,
    tracker: RestartTracker,
    state: ChildState,
    last_error: Option<String>,
    restarts: u64,
    /// Start of the current generation or its latest heartbeat, whichever is later.
    last_progress: Instant,
}

impl ChildSlot {
    /// A slot for a child whose first generation was started at `now`.
    pub fn new(name: impl Into<String>, policy: RestartPolicy, now: Instant) -> Self {
        Self {
            name: name.into(),
            generation: Generation::default(),
            tracker: RestartTracker::new(policy),
            state: ChildState::Running,
            last_error: None,
            restarts: 0,
            last_progress: now,
        }
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Whether a report tagged `generation` comes from the live instance.
    fn is_current(&self, generation: Generation) -> bool {
        generation == self.generation
    }

    /// A failure report. `None` when it must be ignored: it comes from an older generation, or the
    /// current one already failed (a panic and the resulting stop are reported once, acted on once).
    pub fn report_failure(
        &mut self,
        generation: Generation,
        error: impl Into<String>,
        now: Instant,
        jitter_sample: f64,
    ) -> Option<Decision> {
        if !self.is_current(generation) || self.state != ChildState::Running {
            return None;
        }
        self.last_error = Some(error.into());
        let decision = self.tracker.on_failure(now, jitter_sample);
        self.state = match decision {
            Decision::Restart { .. } => ChildState::BackingOff,
            Decision::Escalate { .. } => ChildState::Escalated,
        };
        Some(decision)
    }

    /// The supervisor started a new instance at `now`; returns the generation to tag it with.
    /// `now` starts the freeze timer, so a fresh instance is not judged by its predecessor's silence.
    pub fn restarted(&mut self, now: Instant) -> Generation {
        self.generation = self.generation.next();
        self.restarts += 1;
        self.state = ChildState::Running;
        self.last_progress = now;
        self.generation
    }

    /// Progress from the child. Returns false (and changes nothing) for a stale generation or a child
    /// that is not running.
    pub fn heartbeat(&mut self, generation: Generation, now: Instant) -> bool {
        if !self.is_current(generation) || self.state != ChildState::Running {
            return false;
        }
        self.last_progress = self.last_progress.max(now);
        self.tracker.on_healthy(now);
        true
    }

    /// Running, yet no progress for longer than `heartbeat_timeout`: alive but stuck, to be treated as
    /// a failure by the supervisor.
    pub fn is_frozen(&self, now: Instant, heartbeat_timeout: Duration) -> bool {
        self.state == ChildState::Running && now.saturating_duration_since(self.last_progress) > heartbeat_timeout
    }

    pub fn view(&self) -> ChildView {
        ChildView {
            name: self.name.clone(),
            generation: self.generation,
            state: self.state,
            restarts: self.restarts,
            last_error: self.last_error.clone(),
        }
    }
}

/// A small deterministic source of jitter samples (SplitMix64), so the supervisor needs no `rand` and a
/// test can replay the exact sequence from a seed. Seed each supervisor differently (e.g. from a hash of
/// its name) so that unrelated children do not draw the same delays.
#[derive(Debug, Clone)]
pub struct JitterSource {
    state: u64,
}

impl JitterSource {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next sample, uniform in `0..1`.
    pub fn next_sample(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits fill an f64 mantissa exactly.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// No jitter and no restart limit, so backoff is observed alone.
    fn plain_policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: ms(100),
            max_backoff: ms(800),
            healthy_after: secs(60),
            max_restarts: 1000,
            within: secs(60),
            jitter: 0.0,
        }
    }

    /// What the tests read of a tracker; the supervisor only acts on its decisions.
    impl RestartTracker {
        /// Consecutive failures since the backoff last reset.
        fn consecutive_failures(&self) -> u32 {
            self.backoff.failures()
        }

        /// Restarts granted within the window ending at `now`.
        fn restarts_in_window(&self, now: Instant) -> u32 {
            self.window.iter().filter(|&&t| self.in_window(t, now)).count() as u32
        }
    }

    fn restart_after(decision: Decision) -> Duration {
        match decision {
            Decision::Restart { after, .. } => after,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn validate_reports_every_problem_at_once() {
        assert!(RestartPolicy::default().validate().is_empty());
        let p = RestartPolicy {
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            healthy_after: secs(1),
            max_restarts: 3,
            within: Duration::ZERO,
            jitter: 1.5,
        };
        let errors = p.validate();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("initial_backoff")));
        assert!(errors.iter().any(|e| e.contains("within")));
        assert!(errors.iter().any(|e| e.contains("jitter")));

        let bad = RestartPolicy { max_backoff: ms(50), jitter: f64::NAN, ..RestartPolicy::default() };
        let errors = bad.validate();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("max_backoff")));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let mut t = RestartTracker::new(plain_policy());
        let now = Instant::now();
        let got: Vec<_> = (0..6).map(|_| t.on_failure(now, 0.5)).collect();
        let want: Vec<_> = [(100, 1), (200, 2), (400, 3), (800, 4), (800, 5), (800, 6)]
            .into_iter()
            .map(|(d, a)| Decision::Restart { after: ms(d), attempt: a })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn jitter_stays_within_bounds_and_is_deterministic() {
        let policy = RestartPolicy { jitter: 0.2, ..plain_policy() };
        let base = secs(10);
        for sample in [0.0, 0.25, 0.5, 0.999, 1.0, -3.0, 7.0, f64::NAN, f64::INFINITY] {
            let d = policy.jittered(base, sample);
            assert!(d >= secs(8) && d <= base, "sample {sample} gave {d:?}");
            assert_eq!(d, policy.jittered(base, sample), "same sample, same delay");
        }
        assert_eq!(policy.jittered(base, 0.0), base);
        assert_eq!(policy.jittered(base, 0.5), secs(9));
        assert_eq!(policy.jittered(base, 1.0), secs(8));

        // Through the tracker: same samples, same decisions; never above the cap.
        let run = || {
            let mut t = RestartTracker::new(policy.clone());
            let now = Instant::now();
            [0.1, 0.9, 0.4, 0.7, 0.3].map(|s| restart_after(t.on_failure(now, s)))
        };
        let a = run();
        assert_eq!(a, run());
        assert_eq!(a[0], ms(98));
        assert!(a.iter().all(|&d| d <= policy.max_backoff));
    }

    #[test]
    fn full_jitter_may_reach_zero_but_not_exceed_base() {
        let policy = RestartPolicy { jitter: 1.0, ..plain_policy() };
        assert_eq!(policy.jittered(secs(4), 1.0), Duration::ZERO);
        assert_eq!(policy.jittered(secs(4), 0.0), secs(4));
    }

    #[test]
    fn child_failing_soon_after_restart_keeps_growing_its_backoff() {
        let mut t = RestartTracker::new(plain_policy());
        let t0 = Instant::now();
        assert_eq!(restart_after(t.on_failure(t0, 0.0)), ms(100));
        // Restarted, reports progress, dies again a second later: no reset.
        assert!(!t.on_healthy(t0 + ms(100)));
        assert!(!t.on_healthy(t0 + ms(600)));
        assert_eq!(restart_after(t.on_failure(t0 + ms(1100), 0.0)), ms(200));
        // 59 s of health is still not enough ...
        assert!(!t.on_healthy(t0 + secs(2)));
        assert!(!t.on_healthy(t0 + secs(61)));
        assert_eq!(restart_after(t.on_failure(t0 + secs(61) + ms(1), 0.0)), ms(400));
        assert_eq!(t.consecutive_failures(), 3);
    }

    #[test]
    fn backoff_resets_after_sustained_health() {
        let mut t = RestartTracker::new(plain_policy());
        let t0 = Instant::now();
        for _ in 0..3 {
            t.on_failure(t0, 0.0);
        }
        assert_eq!(t.consecutive_failures(), 3);
        assert!(!t.on_healthy(t0 + secs(1)));
        assert!(!t.on_healthy(t0 + secs(30)));
        assert!(t.on_healthy(t0 + secs(61)), "60 s of health resets");
        assert!(!t.on_healthy(t0 + secs(62)), "reported once");
        assert_eq!(t.consecutive_failures(), 0);
        assert_eq!(t.on_failure(t0 + secs(70), 0.0), Decision::Restart { after: ms(100), attempt: 1 });
    }

    #[test]
    fn healthy_spell_restarts_from_zero_after_a_failure() {
        let mut t = RestartTracker::new(plain_policy());
        let t0 = Instant::now();
        t.on_failure(t0, 0.0);
        t.on_healthy(t0 + secs(1));
        t.on_failure(t0 + secs(59), 0.0);
        // Healthy from 59 s on; 61 s is only 2 s into the new spell.
        assert!(!t.on_healthy(t0 + secs(60)));
        assert!(!t.on_healthy(t0 + secs(61)));
        assert_eq!(t.consecutive_failures(), 2);
        assert!(t.on_healthy(t0 + secs(120)));
    }

    #[test]
    fn crash_loop_escalates_after_max_restarts_within_window() {
        let policy = RestartPolicy { max_restarts: 3, within: secs(60), ..plain_policy() };
        let mut t = RestartTracker::new(policy);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(matches!(t.on_failure(t0 + secs(i), 0.0), Decision::Restart { .. }));
        }
        assert_eq!(t.on_failure(t0 + secs(3), 0.0), Decision::Escalate { restarts_in_window: 3 });
        // Escalating grants nothing, so asking again still escalates.
        assert_eq!(t.on_failure(t0 + secs(4), 0.0), Decision::Escalate { restarts_in_window: 3 });
        assert_eq!(t.restarts_in_window(t0 + secs(4)), 3);
    }

    #[test]
    fn restarts_older_than_the_window_fall_out() {
        let policy = RestartPolicy { max_restarts: 2, within: secs(10), ..plain_policy() };
        let mut t = RestartTracker::new(policy);
        let t0 = Instant::now();
        assert!(matches!(t.on_failure(t0, 0.0), Decision::Restart { .. }));
        assert!(matches!(t.on_failure(t0 + secs(5), 0.0), Decision::Restart { .. }));
        // At 10 s the first restart is exactly `within` old: out. One slot is free.
        assert!(matches!(t.on_failure(t0 + secs(10), 0.0), Decision::Restart { .. }));
        assert_eq!(t.on_failure(t0 + secs(11), 0.0), Decision::Escalate { restarts_in_window: 2 });
        assert_eq!(t.restarts_in_window(t0 + secs(21)), 0);
        assert!(matches!(t.on_failure(t0 + secs(21), 0.0), Decision::Restart { .. }));
    }

    #[test]
    fn backoff_reset_does_not_forget_the_window() {
        let policy = RestartPolicy { max_restarts: 2, within: secs(300), healthy_after: secs(60), ..plain_policy() };
        let mut t = RestartTracker::new(policy);
        let t0 = Instant::now();
        t.on_failure(t0, 0.0);
        t.on_failure(t0 + secs(1), 0.0);
        t.on_healthy(t0 + secs(2));
        assert!(t.on_healthy(t0 + secs(70)));
        assert_eq!(t.consecutive_failures(), 0);
        assert_eq!(t.on_failure(t0 + secs(80), 0.0), Decision::Escalate { restarts_in_window: 2 });
    }

    #[test]
    fn zero_max_restarts_escalates_immediately() {
        let mut t = RestartTracker::new(RestartPolicy { max_restarts: 0, ..plain_policy() });
        assert_eq!(t.on_failure(Instant::now(), 0.0), Decision::Escalate { restarts_in_window: 0 });
    }

    #[test]
    fn stale_generation_reports_are_ignored() {
        let t0 = Instant::now();
        let mut slot = ChildSlot::new("camera-7", plain_policy(), t0);
        let g0 = slot.generation();
        assert!(slot.is_current(g0));

        let d = slot.report_failure(g0, "decode thread panicked", t0 + secs(1), 0.0);
        assert_eq!(d, Some(Decision::Restart { after: ms(100), attempt: 1 }));
        assert_eq!(slot.view().state, ChildState::BackingOff);
        // The same instance's stop, reported after its panic: acted on once only.
        assert_eq!(slot.report_failure(g0, "stopped", t0 + secs(1), 0.0), None);

        let g1 = slot.restarted(t0 + secs(2));
        assert_eq!(g1, g0.next());
        assert!(!slot.is_current(g0));
        assert_eq!(slot.view().state, ChildState::Running);
        assert_eq!(slot.view().restarts, 1);

        // A late report from the old instance neither fails the new one nor touches the tracker.
        assert_eq!(slot.report_failure(g0, "late", t0 + secs(3), 0.0), None);
        assert!(!slot.heartbeat(g0, t0 + secs(3)));
        assert_eq!(slot.view().state, ChildState::Running);
        assert_eq!(slot.view().last_error.as_deref(), Some("decode thread panicked"));
        assert_eq!(slot.tracker.consecutive_failures(), 1);

        assert!(slot.heartbeat(g1, t0 + secs(3)));
        let d = slot.report_failure(g1, "rtsp eof", t0 + secs(4), 0.0);
        assert_eq!(d, Some(Decision::Restart { after: ms(200), attempt: 2 }));
        assert_eq!(slot.view().last_error.as_deref(), Some("rtsp eof"));
    }

    #[test]
    fn slot_escalates_a_crash_loop() {
        let t0 = Instant::now();
        let policy = RestartPolicy { max_restarts: 1, ..plain_policy() };
        let mut slot = ChildSlot::new("gpu-0", policy, t0);
        let g = slot.generation();
        assert!(matches!(slot.report_failure(g, "oom", t0, 0.0), Some(Decision::Restart { .. })));
        let g = slot.restarted(t0 + secs(1));
        assert_eq!(
            slot.report_failure(g, "cuda context poisoned", t0 + secs(2), 0.0),
            Some(Decision::Escalate { restarts_in_window: 1 })
        );
        assert_eq!(slot.view().state, ChildState::Escalated);
        assert!(!slot.is_frozen(t0 + secs(1000), secs(5)), "not running, so not frozen");
    }

    #[test]
    fn frozen_when_running_without_progress() {
        let t0 = Instant::now();
        let timeout = secs(10);
        let mut slot = ChildSlot::new("connector-2", plain_policy(), t0);
        let g = slot.generation();
        assert!(!slot.is_frozen(t0 + secs(10), timeout), "exactly the timeout is still fine");
        assert!(slot.is_frozen(t0 + secs(11), timeout));

        assert!(slot.heartbeat(g, t0 + secs(8)));
        assert!(!slot.is_frozen(t0 + secs(15), timeout));
        assert!(slot.is_frozen(t0 + secs(19), timeout));

        // A failed child is backing off, not frozen; the new instance gets a fresh timer.
        slot.report_failure(g, "frozen", t0 + secs(19), 0.0);
        assert!(!slot.is_frozen(t0 + secs(40), timeout));
        let g = slot.restarted(t0 + secs(40));
        assert!(!slot.is_frozen(t0 + secs(45), timeout));
        assert!(slot.is_frozen(t0 + secs(51), timeout));
        assert!(slot.heartbeat(g, t0 + secs(51)));
        assert!(!slot.is_frozen(t0 + secs(51), timeout));
    }

    #[test]
    fn heartbeats_reset_backoff_through_the_slot() {
        let t0 = Instant::now();
        let mut slot = ChildSlot::new("sink-redis", plain_policy(), t0);
        let g = slot.generation();
        slot.report_failure(g, "conn refused", t0, 0.0);
        let g = slot.restarted(t0 + ms(100));
        for s in 1..=61 {
            assert!(slot.heartbeat(g, t0 + secs(s)));
        }
        assert_eq!(slot.tracker.consecutive_failures(), 0);
    }

    #[test]
    fn a_slot_that_is_not_running_takes_no_reports_until_restarted() {
        let t0 = Instant::now();
        let mut slot = ChildSlot::new("camera-1", plain_policy(), t0);
        let g = slot.generation();
        assert!(slot.report_failure(g, "eof", t0, 0.0).is_some());
        assert_eq!(slot.report_failure(g, "again", t0, 0.0), None);
        assert!(!slot.heartbeat(g, t0), "a heartbeat does not revive a failed instance");
        assert_eq!(slot.view().state, ChildState::BackingOff);
    }

    #[test]
    fn view_serializes_for_the_system_endpoint() {
        let t0 = Instant::now();
        let mut slot = ChildSlot::new("camera-3", plain_policy(), t0);
        let json = serde_json::to_value(slot.view()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "camera-3", "generation": 0, "state": "running",
                "restarts": 0, "last_error": null
            })
        );
        let g = slot.generation();
        slot.report_failure(g, "eof", t0, 0.0);
        let json = serde_json::to_value(slot.view()).unwrap();
        assert_eq!(json["state"], "backing_off");
        assert_eq!(json["last_error"], "eof");
        slot.restarted(t0 + secs(1));
        assert_eq!(serde_json::to_value(slot.view()).unwrap()["generation"], 1);

        let states = [ChildState::Running, ChildState::BackingOff, ChildState::Failed, ChildState::Escalated];
        let names = states.map(|state| serde_json::to_value(state).unwrap());
        assert_eq!(names, ["running", "backing_off", "failed", "escalated"]);
    }

    #[test]
    fn jitter_source_is_deterministic_and_in_range() {
        let mut a = JitterSource::new(42);
        let mut b = JitterSource::new(42);
        let xs: Vec<f64> = (0..1000).map(|_| a.next_sample()).collect();
        let ys: Vec<f64> = (0..1000).map(|_| b.next_sample()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
        assert_ne!(JitterSource::new(1).next_sample(), JitterSource::new(2).next_sample());
    }
}
