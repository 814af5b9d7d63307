//! The supervisor: applies each child's [`RestartPolicy`] to real children.
//!
//! A child is anything with a factory that can start a fresh instance of it: a connector shard,
//! a device's inference thread. The instance reports through a [`Reporter`] tagged with its
//! [`Generation`]: `failed` when it caught a panic or gave up, `heartbeat` while it makes progress.
//! The supervisor (its own thread, so a slow factory never blocks an actor) restarts a failed child
//! after the policy's backoff, restarts a child whose heartbeat stopped (frozen), ignores reports of
//! replaced generations, and escalates a crash loop: `max_restarts` within `within` and the next
//! failure calls the escalation hook, which at the root stops the process with a non-zero status
//! so the orchestrator restarts it.
//!
//! The decisions live in [`SupervisorCore`], driven with explicit instants so tests need no sleep;
//! [`Supervisor::spawn`] runs it on a thread against the real clock.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::policy::{ChildSlot, ChildView, Decision, Generation, JitterSource, RestartPolicy};

/// Starts a fresh instance of a child, tagged `generation`. An error counts as a failure of that
/// generation (the policy decides whether to try again).
pub trait Factory: Send {
    fn start(&mut self, generation: Generation, reporter: Reporter) -> Result<(), String>;
}

impl<F: FnMut(Generation, Reporter) -> Result<(), String> + Send> Factory for F {
    fn start(&mut self, generation: Generation, reporter: Reporter) -> Result<(), String> {
        self(generation, reporter)
    }
}

/// Called once when a child crash-loops past its policy: the child's name and its last error.
pub type EscalationHook = Box<dyn FnMut(&str, &str) + Send>;

/// Called after every change of a child: its new view (for metrics and logs).
pub type ChildObserver = Box<dyn FnMut(&ChildView) + Send>;

enum Report {
    Failed { child: Arc<str>, generation: Generation, error: String },
    Heartbeat { child: Arc<str>, generation: Generation },
    Add { child: Arc<str>, heartbeat_timeout: Option<Duration>, factory: Box<dyn Factory> },
    Remove { child: Arc<str> },
    Stop,
}

/// How one instance of a child talks to its supervisor. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct Reporter {
    tx: Sender<Report>,
    child: Arc<str>,
    generation: Generation,
}

impl Reporter {
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// This instance failed (a caught panic, an error it cannot get past): restart per policy.
    pub fn failed(&self, error: impl Into<String>) {
        let _ = self.tx.send(Report::Failed {
            child: self.child.clone(),
            generation: self.generation,
            error: error.into(),
        });
    }

    /// This instance is making progress.
    pub fn heartbeat(&self) {
        let _ = self.tx.send(Report::Heartbeat { child: self.child.clone(), generation: self.generation });
    }
}

struct Child {
    slot: ChildSlot,
    heartbeat_timeout: Option<Duration>,
    factory: Box<dyn Factory>,
    /// When a scheduled restart is due.
    restart_at: Option<Instant>,
}

/// The supervisor's decisions, without a thread: feed it reports and ticks with the time.
struct SupervisorCore {
    name: String,
    policy: RestartPolicy,
    tx: Sender<Report>,
    children: BTreeMap<Arc<str>, Child>,
    jitter: JitterSource,
    escalate: EscalationHook,
    observe: ChildObserver,
    views: Arc<Mutex<Vec<ChildView>>>,
    escalated: Arc<Mutex<Option<String>>>,
}

impl SupervisorCore {
    /// Adds a child whose generation 0 its owner starts.
    fn add(&mut self, child: Arc<str>, heartbeat_timeout: Option<Duration>, factory: Box<dyn Factory>, now: Instant) {
        let slot = ChildSlot::new(child.to_string(), self.policy.clone(), now);
        self.children.insert(child.clone(), Child { slot, heartbeat_timeout, factory, restart_at: None });
        self.publish(&child);
    }

    fn reporter(&self, child: &Arc<str>, generation: Generation) -> Reporter {
        Reporter { tx: self.tx.clone(), child: child.clone(), generation }
    }

    fn handle(&mut self, report: Report, now: Instant) -> bool {
        match report {
            Report::Failed { child, generation, error } => self.failed(&child, generation, error, now),
            Report::Heartbeat { child, generation } => {
                if let Some(c) = self.children.get_mut(&child) {
                    c.slot.heartbeat(generation, now);
                }
            }
            Report::Add { child, heartbeat_timeout, factory } => self.add(child, heartbeat_timeout, factory, now),
            Report::Remove { child } => {
                // Its instances' later reports find no child and are ignored.
                self.children.remove(&child);
                *self.views.lock() = self.children.values().map(|c| c.slot.view()).collect();
            }
            Report::Stop => return false,
        }
        true
    }

    fn failed(&mut self, child: &Arc<str>, generation: Generation, error: String, now: Instant) {
        let sample = self.jitter.next_sample();
        let Some(c) = self.children.get_mut(child) else { return };
        // Stale (an instance already replaced) or already acted on: nothing to do.
        let Some(decision) = c.slot.report_failure(generation, error.clone(), now, sample) else { return };
        match decision {
            Decision::Restart { after, attempt } => {
                let (supervisor, after_ms) = (&self.name, after.as_millis() as u64);
                tracing::warn!(%supervisor, %child, %generation, %error, attempt, after_ms, "child failed; restarting");
                c.restart_at = Some(now + after);
            }
            Decision::Escalate { restarts_in_window } => {
                let supervisor = &self.name;
                tracing::error!(%supervisor, %child, %error, restarts_in_window, "child is crash-looping; escalating");
                *self.escalated.lock() = Some(format!("{child}: {error}"));
                (self.escalate)(child, &error);
            }
        }
        self.publish(child);
    }

    /// Starts due restarts and fails frozen children.
    fn tick(&mut self, now: Instant) {
        let frozen: Vec<(Arc<str>, Generation, Duration)> = self
            .children
            .iter()
            .filter_map(|(name, c)| {
                let timeout = c.heartbeat_timeout?;
                c.slot.is_frozen(now, timeout).then(|| (name.clone(), c.slot.generation(), timeout))
            })
            .collect();
        for (child, generation, timeout) in frozen {
            self.failed(&child, generation, format!("no progress for {} ms (frozen)", timeout.as_millis()), now);
        }
        let due: Vec<Arc<str>> = self
            .children
            .iter()
            .filter(|(_, c)| c.restart_at.is_some_and(|at| at <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for child in due {
            let generation = {
                let c = self.children.get_mut(&child).expect("due child exists");
                c.restart_at = None;
                c.slot.restarted(now)
            };
            let reporter = self.reporter(&child, generation);
            let c = self.children.get_mut(&child).expect("due child exists");
            match c.factory.start(generation, reporter) {
                Ok(()) => {
                    // The freeze timer starts when the instance exists: a factory that took long
                    // (a model reload) does not count against it.
                    c.slot.heartbeat(generation, now.max(Instant::now()));
                    tracing::info!(supervisor = %self.name, child = %child, %generation, "child restarted");
                }
                Err(error) => self.failed(&child, generation, format!("restart failed: {error}"), now),
            }
            self.publish(&child);
        }
    }

    fn publish(&mut self, child: &Arc<str>) {
        if let Some(c) = self.children.get(child) {
            (self.observe)(&c.slot.view());
        }
        *self.views.lock() = self.children.values().map(|c| c.slot.view()).collect();
    }
}

/// A running supervisor: children are added through it, and its state is read from it.
#[derive(Clone)]
pub struct Supervisor {
    tx: Sender<Report>,
    views: Arc<Mutex<Vec<ChildView>>>,
    escalated: Arc<Mutex<Option<String>>>,
}

/// How often the supervisor thread looks for due restarts and frozen children.
const TICK: Duration = Duration::from_millis(50);

impl Supervisor {
    /// Starts the supervisor thread. `setup` runs first on that thread (e.g. to make it an actix
    /// system thread, so factories can start arbiters).
    pub fn spawn(
        name: &str,
        policy: RestartPolicy,
        escalate: EscalationHook,
        observe: ChildObserver,
        setup: impl FnOnce() + Send + 'static,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (mut core, supervisor) = Self::core(name, policy, tx, escalate, observe);
        let thread_name = format!("supervisor-{name}");
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                setup();
                run(&mut core, rx);
            })
            .expect("cannot start the supervisor thread");
        supervisor
    }

    /// The core and a handle on it, without a thread (tests drive the core).
    fn core(
        name: &str,
        policy: RestartPolicy,
        tx: Sender<Report>,
        escalate: EscalationHook,
        observe: ChildObserver,
    ) -> (SupervisorCore, Self) {
        let views = Arc::new(Mutex::new(Vec::new()));
        let escalated = Arc::new(Mutex::new(None));
        let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let core = SupervisorCore {
            name: name.to_string(),
            policy,
            tx: tx.clone(),
            children: BTreeMap::new(),
            jitter: JitterSource::new(seed),
            escalate,
            observe,
            views: views.clone(),
            escalated: escalated.clone(),
        };
        (core, Self { tx, views, escalated })
    }

    /// Supervises a child. The caller starts its first instance (generation 0) with the returned
    /// reporter, after this call; `factory` starts every later one, on the supervisor thread.
    /// `heartbeat_timeout`: restart it when it reports no progress for that long.
    pub fn add(&self, child: &str, heartbeat_timeout: Option<Duration>, factory: impl Factory + 'static) -> Reporter {
        let child: Arc<str> = child.into();
        let _ = self.tx.send(Report::Add { child: child.clone(), heartbeat_timeout, factory: Box::new(factory) });
        Reporter { tx: self.tx.clone(), child, generation: Generation::default() }
    }

    /// Stops supervising a child (a removed camera); a running instance is its owner's to stop.
    pub fn remove(&self, child: &str) {
        let _ = self.tx.send(Report::Remove { child: child.into() });
    }

    /// Every child's state, by name.
    pub fn children(&self) -> Vec<ChildView> {
        self.views.lock().clone()
    }

    /// Why this supervisor escalated, once it has.
    pub fn escalated(&self) -> Option<String> {
        self.escalated.lock().clone()
    }

    /// Stops supervising: nothing is restarted any more (shutdown).
    pub fn stop(&self) {
        let _ = self.tx.send(Report::Stop);
    }
}

fn run(core: &mut SupervisorCore, rx: Receiver<Report>) {
    loop {
        let first = match rx.recv_timeout(TICK) {
            Ok(report) => Some(report),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Every report that is waiting (heartbeats queued while a factory ran, say) is handled
        // before anyone is judged frozen.
        for report in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            if !core.handle(report, Instant::now()) {
                return;
            }
        }
        core.tick(Instant::now());
    }
}

/// The message of a caught panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervision::ChildState;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            healthy_after: Duration::from_secs(10),
            max_restarts: 3,
            within: Duration::from_secs(60),
            jitter: 0.0,
        }
    }

    struct Harness {
        core: SupervisorCore,
        rx: Receiver<Report>,
        supervisor: Supervisor,
        started: Arc<Mutex<Vec<Generation>>>,
        escalations: Arc<AtomicU64>,
        reporters: Arc<Mutex<Vec<Reporter>>>,
    }

    fn harness(fail_factory_from: Option<u64>) -> Harness {
        let (tx, rx) = std::sync::mpsc::channel();
        let escalations = Arc::new(AtomicU64::new(0));
        let e = escalations.clone();
        let (core, supervisor) = Supervisor::core(
            "test",
            policy(),
            tx,
            Box::new(move |_, _| {
                e.fetch_add(1, Ordering::SeqCst);
            }),
            Box::new(|_| {}),
        );
        Harness { core, rx, supervisor, started: Default::default(), escalations, reporters: Default::default() }
            .with_child(fail_factory_from)
    }

    impl Harness {
        fn with_child(mut self, fail_from: Option<u64>) -> Self {
            let (started, reporters) = (self.started.clone(), self.reporters.clone());
            let factory = move |generation: Generation, reporter: Reporter| {
                started.lock().push(generation);
                reporters.lock().push(reporter);
                match fail_from {
                    Some(n) if generation.0 >= n => Err("cannot build".to_string()),
                    _ => Ok(()),
                }
            };
            let child: Arc<str> = "shard-0".into();
            self.core.add(child.clone(), Some(Duration::from_secs(5)), Box::new(factory), Instant::now());
            // The owner starts generation 0.
            self.started.lock().push(Generation(0));
            self.reporters.lock().push(self.core.reporter(&child, Generation(0)));
            self
        }

        /// Delivers everything reported so far.
        fn pump(&mut self, now: Instant) {
            while let Ok(report) = self.rx.try_recv() {
                self.core.handle(report, now);
            }
            self.core.tick(now);
        }

        fn reporter(&self, generation: u64) -> Reporter {
            self.reporters.lock().iter().find(|r| r.generation().0 == generation).cloned().expect("generation started")
        }

        fn state(&self) -> ChildState {
            self.supervisor.children()[0].state
        }
    }

    #[test]
    fn a_failed_child_is_restarted_after_its_backoff_with_a_new_generation() {
        let mut h = harness(None);
        let t0 = Instant::now();
        h.reporter(0).failed("panicked: boom");
        h.pump(t0);
        assert_eq!(h.state(), ChildState::BackingOff);
        assert_eq!(h.started.lock().len(), 1, "not before the backoff");
        h.pump(t0 + Duration::from_millis(99));
        assert_eq!(h.started.lock().len(), 1);
        h.pump(t0 + Duration::from_millis(100));
        assert_eq!(*h.started.lock(), vec![Generation(0), Generation(1)]);
        let view = &h.supervisor.children()[0];
        assert_eq!(
            (view.state, view.restarts, view.last_error.as_deref()),
            (ChildState::Running, 1, Some("panicked: boom"))
        );
    }

    #[test]
    fn a_removed_child_is_never_restarted_and_leaves_the_view() {
        let mut h = harness(None);
        let t0 = Instant::now();
        h.reporter(0).failed("panicked: boom");
        h.supervisor.remove("shard-0");
        h.pump(t0);
        h.pump(t0 + Duration::from_secs(5));
        assert_eq!(h.started.lock().len(), 1, "restarted after removal");
        assert!(h.supervisor.children().is_empty());
    }

    #[test]
    fn reports_of_a_replaced_generation_are_ignored() {
        let mut h = harness(None);
        let t0 = Instant::now();
        h.reporter(0).failed("first");
        h.pump(t0);
        h.pump(t0 + Duration::from_millis(100));
        // The old instance, still unwinding, reports again: the new one is not touched.
        h.reporter(0).failed("late report from generation 0");
        h.pump(t0 + Duration::from_millis(200));
        assert_eq!(h.state(), ChildState::Running);
        assert_eq!(h.started.lock().len(), 2);
    }

    #[test]
    fn a_crash_loop_escalates_instead_of_spinning() {
        let mut h = harness(None);
        let mut now = Instant::now();
        for generation in 0..3 {
            h.reporter(generation).failed("boom");
            h.pump(now);
            now += Duration::from_secs(2);
            h.pump(now);
        }
        assert_eq!(h.started.lock().len(), 4, "three restarts granted");
        h.reporter(3).failed("boom again");
        h.pump(now);
        assert_eq!(h.state(), ChildState::Escalated);
        assert_eq!(h.escalations.load(Ordering::SeqCst), 1);
        assert_eq!(h.supervisor.escalated().as_deref(), Some("shard-0: boom again"));
        now += Duration::from_secs(60);
        h.pump(now);
        assert_eq!(h.started.lock().len(), 4, "an escalated child is not restarted");
    }

    #[test]
    fn a_child_without_heartbeats_is_frozen_and_restarted() {
        let mut h = harness(None);
        let t0 = Instant::now();
        h.reporter(0).heartbeat();
        h.pump(t0 + Duration::from_secs(4));
        assert_eq!(h.state(), ChildState::Running);
        h.pump(t0 + Duration::from_millis(9_001));
        assert_eq!(h.state(), ChildState::BackingOff);
        assert!(h.supervisor.children()[0].last_error.as_deref().unwrap().contains("frozen"));
        h.pump(t0 + Duration::from_millis(9_101));
        assert_eq!(h.started.lock().len(), 2);
    }

    #[test]
    fn a_factory_that_keeps_failing_escalates_too() {
        let mut h = harness(Some(1));
        let mut now = Instant::now();
        h.reporter(0).failed("boom");
        for _ in 0..10 {
            h.pump(now);
            now += Duration::from_secs(2);
        }
        assert_eq!(h.state(), ChildState::Escalated);
        assert!(h.supervisor.escalated().unwrap().contains("restart failed: cannot build"));
    }

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let text = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*text), "plain");
        let formatted = std::panic::catch_unwind(|| panic!("with {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*formatted), "with 1");
    }
}
