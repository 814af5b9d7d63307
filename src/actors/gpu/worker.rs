//! The inference threads of one device: take batches from the device queue, run the model, and
//! send each frame's detections to its camera's connector shard in capture order.
//!
//! The device's state (`DeviceState`, owned by its `GpuActor`) outlives its threads. A thread is
//! one supervised instance: a panic in a model call ends it after it leaves its batch to be
//! retried first by the next instance,
//! which the supervisor starts after its backoff, with the model reloaded. A thread that stops
//! reporting progress (stuck in a call) is replaced the same way; if it ever returns, it sees it
//! was replaced and discards its batch. Out-of-memory errors halve the batch and retry the same
//! frames (`memory::BatchSizer`); the batch grows back when memory allows. The model itself can be
//! swapped between two batches (`registry`), and a swapped-in model whose batches keep failing is
//! rolled back to the previous one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::SendError;
use bytes::Bytes;
use parking_lot::Mutex;

use super::batch::FrameQueue;
use super::memory::BatchSizer;
use super::shadow::{CameraSelection, Comparison, ShadowLane};
use super::transitions::ModelTransitions;
use super::{CameraRoute, DeviceQueue};
use crate::actors::messages::{Frame, FrameDetections, ToConnector};
use crate::detector::{DetectorError, Letterbox, Model, ModelLoader};
use crate::metrics::{DeviceLabels, Metrics};
use crate::objects::Detection;
use crate::overflow::WhenFull;
use crate::settings::{FaultSettings, ModelSettings, Settings};
use crate::supervision::{finish_group, panic_message, CircuitBreaker, FinishToken, Finished, Reporter};

pub struct WorkerConfig {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub frame_deadline: Option<Duration>,
    pub cpu_threads: usize,
    pub cpu_memory_budget: Option<u64>,
    pub frame_bytes: u64,
    pub grow_after: u32,
    pub rollback_failure_rate: f64,
    pub rollback_window: usize,
}

impl WorkerConfig {
    pub fn from_settings(settings: &Settings, device: tch::Device) -> Self {
        const MIB: u64 = 1 << 20;
        Self {
            max_batch: settings.batching.max_batch_on(device),
            max_wait: settings.batching.max_wait(),
            frame_deadline: settings.batching.frame_deadline(),
            cpu_threads: settings.device.cpu_threads_per_worker(),
            cpu_memory_budget: (settings.device.cpu_memory_budget_mb > 0)
                .then(|| settings.device.cpu_memory_budget_mb * MIB),
            frame_bytes: settings.batching.frame_memory_mb * MIB,
            grow_after: settings.batching.grow_after_batches,
            rollback_failure_rate: settings.model.rollback_failure_rate,
            rollback_window: settings.model.rollback_window as usize,
        }
    }
}

/// A model loaded on a device, with the registry version it came from.
pub struct LoadedModel {
    pub version: u32,
    pub settings: ModelSettings,
    pub detector: Box<dyn Model>,
}

/// Shared, so a model call holds no lock: a thread stuck in a call cannot block a swap or its
/// own replacement.
struct DeviceModels {
    current: Arc<LoadedModel>,
    /// What `current` replaced, kept for a rollback.
    previous: Option<Arc<LoadedModel>>,
    /// Outcomes of `current`'s latest batches, for the rollback rule.
    outcomes: Outcomes,
    /// A candidate serving the canary cameras (`candidate`).
    canary: Option<Arc<Canary>>,
    /// The second model compared with what is delivered (`shadow`).
    lane: Option<Arc<ShadowLane>>,
}

/// A candidate model serving some cameras while the rest stay on `current`.
pub struct Canary {
    pub model: LoadedModel,
    pub cameras: CameraSelection,
    pub comparison: Arc<Comparison>,
}

/// The latest batch outcomes of a model (true: failed).
#[derive(Default)]
struct Outcomes(VecDeque<bool>);

impl Outcomes {
    /// Records one outcome, keeps the last `window`; returns the failures among them.
    fn record(&mut self, failed: bool, window: usize) -> usize {
        self.0.push_back(failed);
        while self.0.len() > window {
            self.0.pop_front();
        }
        self.0.iter().filter(|f| **f).count()
    }
}

/// Whether `failures` within the last `window` batches call for a rollback. Judged against the
/// whole window, so failures right after a swap count as soon as they are enough.
fn reaches_rollback(failures: usize, window: usize, rate: f64) -> bool {
    failures as f64 >= rate * window as f64
}

/// What a device is built from.
pub struct DeviceParts {
    pub device: tch::Device,
    /// `cpu`, `cpu:1`, `cuda:0`: what metrics, logs and the API call it.
    pub name: String,
    pub config: WorkerConfig,
    /// The model to serve, and its registry version.
    pub model: ModelSettings,
    pub version: u32,
    pub loader: ModelLoader,
    pub metrics: Arc<Metrics>,
    /// Around the model: opens when its calls keep failing.
    pub breaker: Arc<CircuitBreaker>,
    pub transitions: Arc<ModelTransitions>,
    pub faults: Arc<FaultInjector>,
}

/// The state of one inference device, owned by its `GpuActor` and shared only with the device's
/// inference threads (which read it between batches and never wait on the actor): the frame
/// queues, the model versions, the memory budget and batch sizing. It outlives the threads.
pub struct DeviceState {
    pub name: String,
    pub device: tch::Device,
    pub queue: Arc<DeviceQueue>,
    config: WorkerConfig,
    loader: ModelLoader,
    metrics: Arc<Metrics>,
    labels: DeviceLabels,
    /// The model, swapped between batches.
    models: Mutex<DeviceModels>,
    pub breaker: Arc<CircuitBreaker>,
    transitions: Arc<ModelTransitions>,
    faults: Arc<FaultInjector>,
    sizer: Mutex<BatchSizer>,
    /// The batch a failed thread left, retried first by the next one.
    leftover: Mutex<Option<Leftover>>,
    /// The generation whose thread may take and deliver batches; older threads end.
    live: AtomicU64,
    /// Whether a thread of the live generation is running (readiness).
    running: AtomicBool,
    /// A recent real frame, for the smoke inference of a model reload.
    sample: Mutex<Option<(Bytes, Letterbox)>>,
    /// Cloned into every thread; `None` once the device is closed (no thread may start).
    finish: Mutex<Option<FinishToken>>,
    /// Says when every thread has ended.
    finished: Mutex<Option<Finished>>,
}

impl DeviceState {
    /// Loads the model of `parts` on the device; starts no thread (the actor starts the first,
    /// the supervisor's factory the others).
    pub fn load(parts: DeviceParts) -> Result<Arc<Self>, DetectorError> {
        let DeviceParts { device, name, config, model, version, loader, metrics, breaker, transitions, faults } = parts;
        set_up_thread(device, config.cpu_threads);
        let detector = loader(&model, device)?;
        let sizer = BatchSizer::new(config.max_batch, config.frame_bytes, config.grow_after);
        let (finish, finished) = finish_group();
        Ok(Arc::new(Self {
            labels: DeviceLabels { device: name.clone() },
            name,
            device,
            queue: FrameQueue::new(),
            config,
            loader,
            metrics,
            models: Mutex::new(DeviceModels {
                current: Arc::new(LoadedModel { version, settings: model, detector }),
                previous: None,
                outcomes: Outcomes::default(),
                canary: None,
                lane: None,
            }),
            breaker,
            transitions,
            faults,
            sizer: Mutex::new(sizer),
            leftover: Mutex::new(None),
            live: AtomicU64::new(0),
            running: AtomicBool::new(false),
            sample: Mutex::new(None),
            finish: Mutex::new(Some(finish)),
            finished: Mutex::new(Some(finished)),
        }))
    }

    /// Whether an inference thread of this device is running now.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// The version of the model serving now.
    pub fn model_version(&self) -> u32 {
        self.models.lock().current.version
    }

    /// Threads of this device's inference thread on the CPU (`device.cpu_threads` per worker).
    pub fn cpu_threads(&self) -> usize {
        self.config.cpu_threads
    }

    /// The batch limit learnt from out-of-memory errors.
    pub fn batch_limit(&self) -> usize {
        self.sizer.lock().learnt()
    }

    /// A recent real frame of this device, if it has seen one.
    pub fn sample_frame(&self) -> Option<(Bytes, Letterbox)> {
        self.sample.lock().clone()
    }

    /// Makes `model` the one serving, between two batches; the one it replaces is kept for a rollback.
    pub fn install(&self, model: LoadedModel) {
        let mut models = self.models.lock();
        let old = std::mem::replace(&mut models.current, Arc::new(model));
        models.previous = Some(old);
        models.outcomes = Outcomes::default();
    }

    /// Sets the candidate's arrangement on this device (see `shadow`): a canary serving some
    /// cameras and a lane comparing; the ones it replaces stop.
    pub fn set_candidate(&self, canary: Option<Canary>, lane: Option<Arc<ShadowLane>>) {
        let mut models = self.models.lock();
        if let Some(old) = std::mem::replace(&mut models.lane, lane) {
            old.stop();
        }
        models.canary = canary.map(Arc::new);
    }

    /// Starts an inference thread of `reporter`'s generation (the supervisor's factory for all
    /// but the first). The first instance uses the model loaded by `load`; a later one reloads
    /// the serving version's file first, since a failed call may have left the module unusable.
    pub fn start_thread(self: &Arc<Self>, reporter: Reporter) -> Result<(), String> {
        let generation = reporter.generation().0;
        let finish = self.finish.lock().clone().ok_or("the device is stopped")?;
        if generation > 0 {
            let serving = self.models.lock().current.clone();
            set_up_thread(self.device, self.config.cpu_threads);
            let detector = (self.loader)(&serving.settings, self.device).map_err(|e| e.to_string())?;
            let reloaded =
                Arc::new(LoadedModel { version: serving.version, settings: serving.settings.clone(), detector });
            let mut models = self.models.lock();
            // Unless a swap or rollback replaced it meanwhile.
            if Arc::ptr_eq(&models.current, &serving) {
                models.current = reloaded;
            }
        }
        self.live.store(generation, Ordering::SeqCst);
        let state = self.clone();
        std::thread::Builder::new()
            .name(format!("infer-{}", self.name))
            .spawn(move || {
                let _finish = finish;
                state.run(reporter)
            })
            .map(drop)
            .map_err(|e| format!("cannot start inference thread: {e}"))
    }

    /// Closes the device's queues (its threads end after their batch) and waits for its threads,
    /// at most `deadline`: libtorch should not be mid-call while the process exits, but a thread
    /// stuck in a call (the reason it was replaced) must not hold the exit up for ever. Returns
    /// whether they all ended.
    pub fn close_and_wait(&self, deadline: Duration) -> bool {
        self.queue.close();
        if let Some(lane) = self.models.lock().lane.take() {
            lane.stop();
        }
        drop(self.finish.lock().take());
        let Some(finished) = self.finished.lock().take() else { return true };
        let ended = finished.wait(deadline);
        if !ended {
            tracing::error!(device = %self.name, "an inference thread is still in a model call; exiting without it");
        }
        ended
    }

    fn is_live(&self, reporter: &Reporter) -> bool {
        self.live.load(Ordering::SeqCst) == reporter.generation().0
    }

    fn run(self: Arc<Self>, reporter: Reporter) {
        set_up_thread(self.device, self.config.cpu_threads);
        self.running.store(true, Ordering::SeqCst);
        let _running = RunningGuard(self.clone(), reporter.clone());
        let mut last_heartbeat = Instant::now();
        reporter.heartbeat();
        while self.is_live(&reporter) {
            let work = match self.leftover.lock().take() {
                Some(mut leftover) => {
                    leftover.retried = true;
                    let frames = leftover.frames.len();
                    tracing::info!(device = %self.name, frames, "retrying the batch of the failed instance");
                    leftover
                }
                None => {
                    let Some(batch) = self.queue.next_batch(
                        self.config.max_batch,
                        self.config.max_wait,
                        self.config.frame_deadline,
                        HEARTBEAT_EVERY,
                    ) else {
                        break;
                    };
                    for (_, route) in &batch.expired {
                        route.status.dropped.inc();
                    }
                    Leftover { frames: batch.frames, ended: batch.ended, retried: false }
                }
            };
            if let Err(Failed(error)) = self.run_batch(work, &reporter) {
                reporter.failed(error);
                return;
            }
            self.metrics.queue_depth.get_or_create(&self.labels).set(self.queue.queued_frames() as i64);
            if last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
                last_heartbeat = Instant::now();
                reporter.heartbeat();
            }
        }
        tracing::info!(device = %self.name, "inference thread ended");
    }

    /// Runs a batch and then delivers the end markers found with it, after its frames. On a
    /// failure what was not delivered is left for the next instance, once: a batch that fails
    /// again is dropped (its frames counted), so one poisonous frame cannot crash-loop the service.
    fn run_batch(&self, work: Leftover, reporter: &Reporter) -> Result<(), Failed> {
        let Leftover { frames, ended, retried } = work;
        match self.infer(frames, reporter) {
            Ok(()) => {
                for (camera_id, route) in ended {
                    self.deliver(&route, ToConnector::StreamEnded(camera_id), true, reporter);
                }
                Ok(())
            }
            Err((Failed(error), frames)) if retried => {
                let (device, count) = (&self.name, frames.len());
                tracing::error!(%device, %error, frames = count, "a retried batch failed again; frames dropped");
                for (_, route) in &frames {
                    route.status.dropped.inc();
                }
                *self.leftover.lock() = Some(Leftover { frames: Vec::new(), ended, retried: true });
                Err(Failed(error))
            }
            Err((failed, frames)) => {
                *self.leftover.lock() = Some(Leftover { frames, ended, retried: false });
                Err(failed)
            }
        }
    }

    /// Runs the model over `frames` in chunks the device's memory allows and delivers the
    /// detections. `Err`: this instance must end (a panic, or out of memory on a single frame),
    /// with the frames not yet delivered.
    fn infer(
        &self,
        mut frames: Vec<(Frame, CameraRoute)>,
        reporter: &Reporter,
    ) -> Result<(), (Failed, Vec<(Frame, CameraRoute)>)> {
        if let Some((frame, _)) = frames.first() {
            *self.sample.lock() = Some((frame.pixels.clone(), frame.letterbox));
        }
        // Per traced frame: `batch` (this batch, until its results are handed on) and, inside it,
        // `inference` (the model call the frame shared with others).
        let device = self.name.as_str();
        let mut batch_spans: VecDeque<_> = frames
            .iter()
            .map(|(f, _)| crate::child_span!(&f.span, "batch", device, batch_size = frames.len()))
            .collect();
        while !frames.is_empty() {
            if !self.is_live(reporter) {
                // Replaced (it was stuck): the new instance owns the device now.
                for (_, route) in &frames {
                    route.status.dropped.inc();
                }
                return Ok(());
            }
            let free = crate::device_memory::free_bytes(&self.name, self.config.cpu_memory_budget);
            let take = self.sizer.lock().limit(free).min(frames.len());
            let spans: Vec<_> =
                batch_spans.iter().take(take).map(|b| crate::child_span!(b, "inference", device)).collect();
            let started = Instant::now();
            let outcome = self.call_model(&frames[..take]);
            let lane = self.models.lock().lane.clone();
            drop(spans);
            self.metrics.stages.inference.record(started.elapsed());
            let busy = started.elapsed().as_secs_f64();
            self.metrics.inference_latency.get_or_create(&self.labels).observe(busy);
            self.metrics.device_busy.get_or_create(&self.labels).inc_by(busy);
            match outcome {
                Outcome::Detections(per_frame) => {
                    self.metrics.batch_size.get_or_create(&self.labels).observe(take as f64);
                    self.record(false);
                    if let Some(grown) = self.sizer.lock().on_success(free) {
                        tracing::info!(device = %self.name, batch = grown, "batch limit grown back");
                    }
                    for ((frame, route), (detections, version)) in frames.drain(..take).zip(per_frame) {
                        if let Some(lane) = &lane {
                            lane.offer(&frame.camera_id, &frame.pixels, frame.letterbox, &detections, version);
                        }
                        self.deliver(&route, detections_message(frame, detections, version), false, reporter);
                        drop(batch_spans.pop_front());
                    }
                }
                Outcome::OutOfMemory(error) => {
                    self.metrics.out_of_memory.get_or_create(&self.labels).inc();
                    let halved = self.sizer.lock().on_out_of_memory(take);
                    let Some(halved) = halved else {
                        return Err((Failed(format!("out of memory on a single frame: {error}")), frames));
                    };
                    tracing::warn!(
                        device = %self.name, %error, tried = take, batch = halved,
                        "device out of memory; retrying the same frames in smaller batches"
                    );
                }
                Outcome::Panicked(error) => {
                    self.record(true);
                    return Err((Failed(error), frames));
                }
                Outcome::Failed(error) => {
                    // The model answered with an error (not a crash): these frames cannot be
                    // analysed by it. A rollback gives them a second chance on the previous model.
                    let rolled_back = self.record(true);
                    tracing::error!(device = %self.name, %error, frames = take, rolled_back, "inference failed");
                    if !rolled_back {
                        for (_, route) in frames.drain(..take) {
                            route.status.dropped.inc();
                            drop(batch_spans.pop_front());
                        }
                    }
                }
            }
            self.metrics.batch_limit.get_or_create(&self.labels).set(self.sizer.lock().learnt() as i64);
        }
        Ok(())
    }

    /// Sends to a connector without blocking it: a replay (or an end marker, which must arrive)
    /// waits for mailbox room on this thread, reporting that it is alive meanwhile (a slow
    /// connector is not a frozen device) and giving up if it was replaced; a live camera's result
    /// is dropped and counted instead.
    fn deliver(&self, route: &CameraRoute, mut message: ToConnector, must_arrive: bool, reporter: &Reporter) {
        // A replaced thread back from a stuck call: its successor has served the frames behind
        // these, so they would arrive late and out of order. End markers still go: only this
        // thread holds them.
        if !must_arrive && !self.is_live(reporter) {
            route.status.dropped.inc();
            return;
        }
        let mut waiting_since = Instant::now();
        loop {
            match route.connector.try_send(message) {
                Ok(()) => return,
                Err(SendError::Full(back))
                    if (must_arrive || route.when_full == WhenFull::Wait) && self.is_live(reporter) =>
                {
                    message = back;
                    if waiting_since.elapsed() >= HEARTBEAT_EVERY {
                        waiting_since = Instant::now();
                        reporter.heartbeat();
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(SendError::Full(_)) => {
                    route.status.dropped.inc();
                    return;
                }
                Err(SendError::Closed(_)) => return,
            }
        }
    }

    /// Runs the frames' model: the canary's for frames of its cameras (the serving model takes
    /// them again when the canary's call fails), the serving one for the rest.
    fn call_model(&self, frames: &[(Frame, CameraRoute)]) -> Outcome {
        let (current, canary) = {
            let models = self.models.lock();
            (models.current.clone(), models.canary.clone())
        };
        // The call is made whatever the breaker says (there is no other model to fall back on but
        // a rollback); asking lets an open breaker move to half-open, so a success closes it.
        let _ = self.breaker.allow();
        let Some(canary) = canary.filter(|c| frames.iter().any(|(f, _)| c.cameras.contains(&f.camera_id))) else {
            return self.run_model(&current, frames.iter());
        };
        let (on_canary, on_current): (Vec<usize>, Vec<usize>) =
            (0..frames.len()).partition(|&i| canary.cameras.contains(&frames[i].0.camera_id));
        let mut results: Vec<Option<(Vec<Detection>, u32)>> = vec![None; frames.len()];
        let mut fill = |indices: &[usize], outcome: Outcome| match outcome {
            Outcome::Detections(per_frame) => {
                for (&i, detections) in indices.iter().zip(per_frame) {
                    results[i] = Some(detections);
                }
                None
            }
            other => Some(other),
        };
        if !on_current.is_empty() {
            if let Some(failed) = fill(&on_current, self.run_model(&current, on_current.iter().map(|&i| &frames[i]))) {
                return failed;
            }
        }
        let canary_frames = || on_canary.iter().map(|&i| &frames[i]);
        let outcome = self.run_model(&canary.model, canary_frames());
        canary.comparison.record_canary_batch(!matches!(outcome, Outcome::Detections(_)));
        if let Some(failed) = fill(&on_canary, outcome) {
            let device = &self.name;
            tracing::warn!(%device, error = ?failed, "canary model call failed; the serving model takes its frames");
            if let Some(failed) = fill(&on_canary, self.run_model(&current, canary_frames())) {
                return failed;
            }
        }
        Outcome::Detections(results.into_iter().map(|r| r.expect("every frame was filled")).collect())
    }

    fn run_model<'a>(&self, model: &LoadedModel, frames: impl Iterator<Item = &'a (Frame, CameraRoute)>) -> Outcome {
        let inputs: Vec<_> = frames.map(|(f, _)| (f.pixels.as_ref(), f.letterbox)).collect();
        // libtorch raises some errors as panics (device out of memory among them).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.faults.before_model_call(inputs.len())?;
            model.detector.detect(&inputs)
        }));
        match result {
            Ok(Ok(per_frame)) => Outcome::Detections(per_frame.into_iter().map(|d| (d, model.version)).collect()),
            Ok(Err(DetectorError::OutOfMemory(e))) => Outcome::OutOfMemory(e),
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(panic) => {
                let message = panic_message(&*panic);
                if DetectorError::is_out_of_memory(&message) {
                    Outcome::OutOfMemory(message)
                } else {
                    Outcome::Panicked(format!("inference panicked: {message}"))
                }
            }
        }
    }

    /// Records a batch outcome against the serving model and its breaker; rolls back to the
    /// previous model when the failure share of the window reaches the threshold. Returns whether
    /// it rolled back.
    fn record(&self, failed: bool) -> bool {
        if failed {
            self.breaker.record_failure();
        } else {
            self.breaker.record_success();
        }
        let mut models = self.models.lock();
        let window = self.config.rollback_window;
        let failures = models.outcomes.record(failed, window);
        if !reaches_rollback(failures, window, self.config.rollback_failure_rate) || models.previous.is_none() {
            return false;
        }
        let previous = models.previous.take().expect("checked above");
        let bad = std::mem::replace(&mut models.current, previous);
        models.outcomes = Outcomes::default();
        let restored = models.current.version;
        drop(models);
        self.transitions.rolled_back(&self.name, bad.version, restored, failures, window);
        true
    }
}

/// How often an idle inference thread reports that it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);

struct Failed(String);

/// What a failed instance leaves to the next: the frames not delivered and the end markers
/// that must follow them.
struct Leftover {
    frames: Vec<(Frame, CameraRoute)>,
    ended: Vec<(crate::ids::CameraId, CameraRoute)>,
    /// Already a retry: a second failure drops the frames.
    retried: bool,
}

#[derive(Debug)]
enum Outcome {
    /// Detections per frame, each with the version of the model that made them.
    Detections(Vec<(Vec<Detection>, u32)>),
    OutOfMemory(String),
    Panicked(String),
    Failed(String),
}

/// Marks the device not running when its live thread ends, however it ends.
struct RunningGuard(Arc<DeviceState>, Reporter);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.is_live(&self.1) {
            self.0.running.store(false, Ordering::SeqCst);
        }
    }
}

fn detections_message(frame: Frame, detections: Vec<Detection>, model_version: u32) -> ToConnector {
    ToConnector::Detections(FrameDetections {
        camera_id: frame.camera_id,
        seq: frame.seq,
        captured_at: frame.captured_at,
        captured: frame.captured,
        detections,
        model_version,
        span: frame.span,
    })
}

/// Faults of `[faults]`, made inside model calls (see `FaultSettings`).
#[derive(Default)]
pub struct FaultInjector {
    settings: FaultSettings,
    calls: AtomicU64,
    panicked: AtomicBool,
    ooms_left: AtomicU32,
}

impl FaultInjector {
    pub fn new(settings: FaultSettings) -> Self {
        let ooms = settings.oom_times;
        Self { settings, calls: AtomicU64::new(0), panicked: AtomicBool::new(false), ooms_left: AtomicU32::new(ooms) }
    }

    fn before_model_call(&self, frames: usize) -> Result<(), DetectorError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let s = &self.settings;
        if s.inference_panic_at_batch > 0
            && call >= s.inference_panic_at_batch
            && (s.inference_panic_repeats || !self.panicked.swap(true, Ordering::SeqCst))
        {
            panic!("injected fault: inference panic at model call {call}");
        }
        let oom_due = s.oom_at_batch > 0 && call >= s.oom_at_batch && frames > 1;
        if oom_due && self.ooms_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(DetectorError::OutOfMemory(format!(
                "injected fault: CUDA out of memory on a batch of {frames}"
            )));
        }
        Ok(())
    }
}

/// Sets libtorch's thread count for CPU inference on the calling thread (the setting is per thread).
pub fn set_up_thread(device: tch::Device, cpu_threads: usize) {
    if device == tch::Device::Cpu {
        tch::set_num_threads(effective_threads(cpu_threads) as i32);
    }
}

pub fn effective_threads(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}

#[cfg(test)]
mod threads;

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(settings: FaultSettings) -> FaultInjector {
        FaultInjector::new(settings)
    }

    #[test]
    fn an_injected_oom_hits_only_multi_frame_calls_and_only_so_often() {
        let f = faults(FaultSettings { oom_at_batch: 2, oom_times: 2, ..Default::default() });
        assert!(f.before_model_call(8).is_ok(), "call 1 is before the fault");
        assert!(matches!(f.before_model_call(8), Err(DetectorError::OutOfMemory(_))));
        assert!(f.before_model_call(1).is_ok(), "a single frame always fits");
        assert!(matches!(f.before_model_call(4), Err(DetectorError::OutOfMemory(_))));
        assert!(f.before_model_call(8).is_ok(), "two errors, then none");
    }

    #[test]
    fn a_model_rolls_back_once_its_failures_reach_the_share_of_the_window() {
        let mut outcomes = Outcomes::default();
        // Window 8 at 0.5: four failures, however early, and not three.
        for _ in 0..3 {
            let failures = outcomes.record(true, 8);
            assert!(!reaches_rollback(failures, 8, 0.5));
        }
        assert!(reaches_rollback(outcomes.record(true, 8), 8, 0.5));
        // Old failures leave the window.
        let mut outcomes = Outcomes::default();
        outcomes.record(true, 4);
        outcomes.record(true, 4);
        for _ in 0..4 {
            outcomes.record(false, 4);
        }
        assert_eq!(outcomes.record(true, 4), 1);
        assert!(!reaches_rollback(1, 4, 0.5));
    }

    #[test]
    fn an_injected_panic_fires_once_unless_it_repeats() {
        let once = faults(FaultSettings { inference_panic_at_batch: 2, ..Default::default() });
        assert!(once.before_model_call(1).is_ok());
        assert!(std::panic::catch_unwind(|| once.before_model_call(1)).is_err());
        assert!(once.before_model_call(1).is_ok());
        let repeats =
            faults(FaultSettings { inference_panic_at_batch: 1, inference_panic_repeats: true, ..Default::default() });
        for _ in 0..3 {
            assert!(std::panic::catch_unwind(|| repeats.before_model_call(1)).is_err());
        }
    }
}
