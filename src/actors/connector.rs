//! ConnectorActor: a shard that tracks objects and runs the analytics (`crate::analytics`) for
//! the cameras pinned to it, and emits typed events, per-minute measures and live state. Cameras
//! are pinned to shards by rendezvous hashing of their id, so a camera's tracker state lives in
//! exactly one place.
//!
//! A shard is supervised (`supervision::Supervisor`), each instance on its own arbiter thread. A
//! panic in a handler poisons the instance: its analytics state is dropped (it may be half
//! updated), and from then on it keeps what arrives, in order, instead of handling it. The
//! supervisor starts a new instance after its backoff; the new one rebuilds every camera of the
//! shard from its registration (fresh trackers, line counts continuing from the camera's status),
//! takes over the shard's address (`ShardSlot`) and is handed what the old one kept, so frames
//! queued behind the panic are analysed, not lost. A frozen instance (no heartbeat) cannot hand
//! anything over: the new one starts after `ShardConfig::handover_wait` without it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::dev::SendError;
use actix::{Actor, ActorContext, Addr, Arbiter, AsyncContext, Context, Handler, Message};
use parking_lot::RwLock;

use crate::actors::messages::{FrameDetections, ToConnector};
use crate::actors::status::{CameraStatus, StreamState};
use crate::analytics::config::AnalyticsConfig;
use crate::analytics::geometry::Geometry;
use crate::analytics::scene::{FrameOutput, SceneAnalytics, StreamIdentity};
use crate::analytics::tracker::{Tracker, TrackerConfig};
use crate::analytics::StateSnapshot;
use crate::detector::drift::{DriftConfig, Observed};
use crate::ids::CameraId;
use crate::metrics::Metrics;
use crate::picture::LatestTracks;
use crate::sinks::EventSink;
use crate::supervision::{panic_message, Reporter};

/// The shard (of `shards`) that owns `camera_id`: highest-random-weight hashing, so adding a
/// shard moves only the cameras that the new shard wins.
pub fn shard_for(camera_id: &str, shards: usize) -> usize {
    (0..shards.max(1)).max_by_key(|&shard| weight(camera_id, shard as u64)).unwrap_or(0)
}

/// FNV-1a over the id, then a splitmix64 finaliser with the shard number: stable across
/// processes and Rust versions (unlike `DefaultHasher`).
fn weight(id: &str, shard: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ shard.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct CameraAnalytics {
    status: Arc<CameraStatus>,
    tracker: Tracker,
    scene: SceneAnalytics,
    /// The geometry `scene` was built from, shown on the camera's overlay.
    geometry: Arc<Geometry>,
    /// Last frame's sequence number, for the events of a flush.
    last_seq: u64,
    /// Frame time of the last state snapshot sent to the cache.
    last_state_ms: Option<i64>,
    /// Whether `ml_model_drift_kl` of the camera may be set (so is removed when a new reference
    /// starts).
    drift_published: bool,
}

/// The live state is cached at most this often per camera (frame time), plus at every minute
/// close and at the end.
const STATE_INTERVAL_MS: i64 = 1_000;

/// What every instance of a shard is built from.
#[derive(Clone)]
pub struct ShardConfig {
    pub shard: usize,
    /// The model whose detections this shard tracks (`ml_model_accuracy{model}`).
    pub model: Arc<str>,
    /// Drift detection per camera (`model.drift`); `None` when it is off.
    pub drift: Option<DriftConfig>,
    pub mailbox: usize,
    pub tracker: TrackerConfig,
    pub analytics: AnalyticsConfig,
    pub sink: Arc<dyn EventSink>,
    pub metrics: Arc<Metrics>,
    /// `faults.shard_panic_at_frame` (0: never): the first instance to analyse that frame panics.
    pub panic_at_frame: u64,
    /// Whether the injected panic has fired; shared by every shard of a pipeline, so it fires once.
    pub panic_fired: Arc<AtomicBool>,
    /// The generation of the shard's live instance: an instance that is not it (a frozen one
    /// that came back) keeps what it is sent instead of analysing it beside its successor.
    pub live: Arc<AtomicU64>,
    /// How long a restarted instance waits for its predecessor's backlog before it starts
    /// without it (the predecessor is frozen): `HANDOVER_WAIT` in the service.
    pub handover_wait: Duration,
}

/// A camera of a shard, as a new instance rebuilds it.
pub struct Registration {
    pub status: Arc<CameraStatus>,
    pub geometry: Geometry,
    pub geometry_version: u32,
}

/// The address of a shard's live instance; the supervisor replaces it on a restart, and every
/// sender goes through it.
pub struct ShardSlot {
    addr: RwLock<Addr<ConnectorActor>>,
}

impl ShardSlot {
    pub fn addr(&self) -> Addr<ConnectorActor> {
        self.addr.read().clone()
    }

    // The message comes back in the error, as actix's own `try_send` gives it.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, message: ToConnector) -> Result<(), SendError<ToConnector>> {
        self.addr.read().try_send(message)
    }

    /// Points the slot at a new instance; returns the old one.
    fn replace(&self, addr: Addr<ConnectorActor>) -> Addr<ConnectorActor> {
        std::mem::replace(&mut *self.addr.write(), addr)
    }
}

/// How long a new instance waits for its predecessor's backlog before it starts without it (the
/// predecessor is frozen).
pub const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// How often an instance reports progress to its supervisor.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A message kept by an instance that does not handle messages now (poisoned, or waiting for
/// its predecessor's backlog), handled in order later.
enum Kept {
    Data(ToConnector),
    Add(AddCamera),
    Geometry(SetGeometry),
    Remove(RemoveCamera),
}

pub struct ConnectorActor {
    config: ShardConfig,
    reporter: Reporter,
    cameras: HashMap<CameraId, CameraAnalytics>,
    /// `Some` while messages are kept instead of handled.
    kept: Option<Vec<Kept>>,
    /// Waiting for the predecessor's backlog (a restarted instance).
    awaiting_handover: bool,
}

/// Starts a shard's first instance on its own arbiter; every sender reaches it through the slot.
pub fn start_shard(config: ShardConfig, reporter: Reporter) -> Arc<ShardSlot> {
    let addr = spawn_instance(config, reporter, Vec::new(), false);
    Arc::new(ShardSlot { addr: RwLock::new(addr) })
}

/// Starts a new instance of a shard with its cameras rebuilt from `registrations`, points the
/// slot at it and has the old instance hand over what it kept (the supervisor's factory).
pub fn restart_shard(config: &ShardConfig, reporter: Reporter, registrations: Vec<Registration>, slot: &ShardSlot) {
    let addr = spawn_instance(config.clone(), reporter, registrations, true);
    let old = slot.replace(addr.clone());
    // HandOver is queued behind everything the old instance was sent: its successor gets it all,
    // in order. A frozen one never answers; the successor stops waiting (`handover_wait`).
    old.do_send(HandOver { successor: addr });
}

/// An instance on its own arbiter (a frozen one then blocks nothing else), made the live one.
fn spawn_instance(
    config: ShardConfig,
    reporter: Reporter,
    registrations: Vec<Registration>,
    awaiting_handover: bool,
) -> Addr<ConnectorActor> {
    config.live.store(reporter.generation().0, Ordering::SeqCst);
    ConnectorActor::start_in_arbiter(&Arbiter::new().handle(), move |_| {
        ConnectorActor::new(config, reporter, registrations, awaiting_handover)
    })
}

impl ConnectorActor {
    /// An instance with `cameras` rebuilt; a restarted one (`awaiting_handover`) keeps messages
    /// until its predecessor's backlog arrives.
    fn new(config: ShardConfig, reporter: Reporter, cameras: Vec<Registration>, awaiting_handover: bool) -> Self {
        let mut actor = Self {
            config,
            reporter,
            cameras: HashMap::new(),
            kept: awaiting_handover.then(Vec::new),
            awaiting_handover,
        };
        for camera in cameras {
            actor.add_camera(camera, true);
        }
        actor
    }

    fn on_frame(&mut self, frame: FrameDetections) {
        if self.config.panic_at_frame > 0
            && frame.seq == self.config.panic_at_frame
            && !self.config.panic_fired.swap(true, Ordering::SeqCst)
        {
            panic!("injected fault: shard {} panics at frame {}", self.config.shard, frame.seq);
        }
        let Some(camera) = self.cameras.get_mut(&frame.camera_id) else { return };
        let started = std::time::Instant::now();
        observe_drift(&self.config, camera, &frame);
        let tracking = crate::child_span!(&frame.span, "tracking", shard = self.config.shard);
        let _entered = tracking.enter();
        let detections: Vec<_> =
            frame.detections.iter().filter(|d| camera.scene.keep_detection(&d.bbox)).copied().collect();
        let tracked = camera.tracker.update(&detections);
        // The overlay's boxes: a small copy, drawn only when a picture is asked for.
        let latest = LatestTracks { seq: frame.seq, objects: tracked.clone(), geometry: camera.geometry.clone() };
        camera.status.pictures.set_tracks(latest);
        let continuity = camera.tracker.take_continuity();
        self.config.metrics.record_continuity(&self.config.model, frame.model_version, continuity);
        let ts_ms = chrono::DateTime::<chrono::Utc>::from(frame.captured_at).timestamp_millis();
        let mut out = camera.scene.observe(ts_ms, frame.seq, frame.captured, &tracked);
        camera.last_seq = frame.seq;
        let due = camera.last_state_ms.is_none_or(|last| ts_ms - last >= STATE_INTERVAL_MS);
        let force_state = !out.aggregates.is_empty();
        for event in &mut out.events {
            event.span = crate::child_span!(&tracking, "event", kind = event.kind());
        }
        emit(&*self.config.sink, camera, out);
        if force_state || due {
            camera.last_state_ms = Some(ts_ms);
            send_state(&*self.config.sink, camera);
        }
        camera.status.processed.inc();
        self.config.metrics.stages.tracking.record(started.elapsed());
        self.config.metrics.stages.frame_latency.record(frame.captured.elapsed());
    }

    fn finish(&mut self, camera_id: &CameraId) {
        let Some(camera) = self.cameras.get_mut(camera_id) else { return };
        let out = camera.scene.finish(camera.last_seq);
        emit(&*self.config.sink, camera, out);
        send_state(&*self.config.sink, camera);
    }
}

/// Feeds the camera's drift monitor with the model's detections (all of them: a geometry change
/// is no drift) and publishes a comparison; a new reference removes the last one's values.
fn observe_drift(config: &ShardConfig, camera: &mut CameraAnalytics, frame: &FrameDetections) {
    if config.drift.is_none() {
        return;
    }
    // The frame's size, for box sizes relative to it: the latest decoded frame's, the same camera.
    let size = camera.status.pictures.frame().map(|f| (f.letterbox.src_width, f.letterbox.src_height));
    match camera.status.drift.observe(frame.model_version, &frame.detections, size) {
        Some(Observed::Compared(kl)) => {
            config.metrics.set_drift(&camera.status.id, &config.model, &kl);
            camera.drift_published = true;
        }
        Some(Observed::Capturing) if camera.drift_published => {
            config.metrics.remove_drift(&camera.status.id, &config.model);
            camera.drift_published = false;
        }
        _ => {}
    }
}

fn emit(sink: &dyn EventSink, camera: &CameraAnalytics, out: FrameOutput) {
    let crossed = out.events.iter().any(|e| matches!(e.detail, crate::events::EventDetail::LineCrossing(_)));
    for event in out.events {
        camera.status.events.inc();
        sink.submit(event);
    }
    if crossed {
        camera.status.set_counts(camera.scene.line_counts());
    }
    if !out.aggregates.is_empty() {
        sink.submit_aggregates(out.aggregates);
    }
}

fn send_state(sink: &dyn EventSink, camera: &CameraAnalytics) {
    let state = serde_json::to_value(camera.scene.live_state()).unwrap_or_default();
    sink.submit_state(StateSnapshot { camera_id: camera.status.id.clone(), state });
}

impl ConnectorActor {
    /// Starts analysing a camera. `continuing`: a restarted instance rebuilding it, whose counts
    /// continue from the camera's status.
    fn add_camera(&mut self, registration: Registration, continuing: bool) {
        let Registration { status, geometry, geometry_version } = registration;
        let identity = StreamIdentity { camera_id: status.id.clone(), epoch_ms: status.epoch_ms, geometry_version };
        let mut scene = match SceneAnalytics::new(identity, &geometry, self.config.analytics.clone()) {
            Ok(scene) => scene,
            Err(errors) => {
                // Validated at the edge; a stored geometry that no longer compiles is reported.
                status.set_state(StreamState::Failed, Some(format!("invalid geometry: {}", errors.join("; "))));
                return;
            }
        };
        if continuing {
            scene.continue_counts(&status.counts());
        }
        status.set_counts(scene.line_counts());
        if let Some(drift) = self.config.drift {
            // A rebuilt camera keeps its monitor, and its reference.
            status.drift.start(drift);
        }
        let camera = CameraAnalytics {
            status,
            tracker: Tracker::new(self.config.tracker),
            scene,
            geometry: Arc::new(geometry),
            last_seq: 0,
            last_state_ms: None,
            // A rebuilt camera's series may be set.
            drift_published: true,
        };
        send_state(&*self.config.sink, &camera);
        self.cameras.insert(camera.status.id.clone(), camera);
    }

    fn set_geometry(&mut self, msg: SetGeometry) {
        let Some(camera) = self.cameras.get(&msg.camera_id) else { return };
        let current = camera.scene.identity().clone();
        // Two quick changes may arrive out of order: the newest version wins.
        if msg.version <= current.geometry_version {
            return;
        }
        let identity = StreamIdentity { geometry_version: msg.version, ..current };
        let scene = match SceneAnalytics::new(identity, &msg.geometry, self.config.analytics.clone()) {
            Ok(scene) => scene,
            Err(errors) => {
                // Validated at the edge, so this is a bug; the old geometry keeps running.
                tracing::error!(camera = %msg.camera_id, ?errors, "geometry not applied");
                return;
            }
        };
        self.finish(&msg.camera_id);
        let Some(camera) = self.cameras.get_mut(&msg.camera_id) else { return };
        camera.scene = scene;
        camera.geometry = Arc::new(msg.geometry);
        camera.status.geometry_version.store(msg.version, Ordering::SeqCst);
        camera.status.set_counts(camera.scene.line_counts());
        send_state(&*self.config.sink, camera);
    }

    fn on_stream_ended(&mut self, camera_id: &CameraId) {
        self.finish(camera_id);
        if let Some(camera) = self.cameras.get(camera_id) {
            if camera.status.state() != StreamState::Failed {
                camera.status.set_state(StreamState::Ended, None);
            }
            camera.status.mark_finished();
        }
    }

    /// Handles a message now, or keeps it while this instance is poisoned or waiting for its
    /// predecessor's backlog.
    fn accept(&mut self, message: Kept) {
        if self.kept.is_none() && self.config.live.load(Ordering::SeqCst) != self.reporter.generation().0 {
            let (shard, generation) = (self.config.shard, self.reporter.generation());
            tracing::warn!(shard, %generation, "a replaced instance came back; it analyses nothing more");
            self.kept = Some(Vec::new());
        }
        let Some(kept) = &mut self.kept else {
            self.handle_now(message);
            return;
        };
        // Bounded like the mailbox: past it, the oldest frame is dropped and counted.
        if kept.len() >= self.config.mailbox {
            if let Some(i) = kept.iter().position(|k| matches!(k, Kept::Data(ToConnector::Detections(_)))) {
                if let Kept::Data(ToConnector::Detections(frame)) = kept.remove(i) {
                    self.config
                        .metrics
                        .frames_dropped
                        .get_or_create(&self.config.metrics.camera(&frame.camera_id))
                        .inc();
                }
            }
        }
        kept.push(message);
    }

    /// Handles one message; a panic poisons this instance (see the module doc).
    fn handle_now(&mut self, message: Kept) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match message {
            Kept::Data(ToConnector::Detections(frame)) => self.on_frame(frame),
            Kept::Data(ToConnector::StreamEnded(camera_id)) => self.on_stream_ended(&camera_id),
            Kept::Add(add) => self.add_camera(add.0, false),
            Kept::Geometry(set) => self.set_geometry(set),
            Kept::Remove(RemoveCamera(camera_id)) => {
                self.finish(&camera_id);
                self.cameras.remove(&camera_id);
                self.config.metrics.remove_drift(&camera_id, &self.config.model);
            }
        }));
        if let Err(panic) = result {
            let error = format!("shard {} panicked: {}", self.config.shard, panic_message(&*panic));
            let shard = self.config.shard;
            tracing::error!(shard, %error, "connector shard poisoned; the next instance rebuilds its cameras");
            self.cameras.clear();
            self.kept = Some(Vec::new());
            self.reporter.failed(error);
        }
    }

    /// Handles what was kept, in order, and then handles messages as they come.
    fn resume(&mut self, backlog: Vec<Kept>) {
        self.awaiting_handover = false;
        let own = self.kept.take().unwrap_or_default();
        for message in backlog.into_iter().chain(own) {
            // A panic on the way poisons this instance again; the rest is kept for the next.
            self.accept(message);
        }
    }
}

impl Actor for ConnectorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.config.mailbox);
        ctx.run_interval(HEARTBEAT, |actor, _| {
            if actor.kept.is_none() || actor.awaiting_handover {
                actor.reporter.heartbeat();
            }
        });
        if self.awaiting_handover {
            ctx.run_later(self.config.handover_wait, |actor, _| {
                if actor.awaiting_handover {
                    tracing::warn!(
                        shard = actor.config.shard,
                        "the previous instance handed nothing over (frozen); continuing without its backlog"
                    );
                    actor.resume(Vec::new());
                }
            });
        }
        tracing::debug!(shard = self.config.shard, generation = %self.reporter.generation(), "connector shard started");
    }
}

/// Starts analysing a camera on this shard; must arrive before its first frame. The geometry
/// has been validated.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddCamera(pub Registration);

impl Handler<AddCamera> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: AddCamera, _ctx: &mut Self::Context) {
        self.accept(Kept::Add(msg));
    }
}

/// Replaces a camera's geometry: the old version's minute and incidents are closed, tracks
/// continue under the new version.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetGeometry {
    pub camera_id: CameraId,
    pub geometry: Geometry,
    pub version: u32,
}

impl Handler<SetGeometry> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: SetGeometry, _ctx: &mut Self::Context) {
        self.accept(Kept::Geometry(msg));
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveCamera(pub CameraId);

impl Handler<RemoveCamera> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveCamera, _ctx: &mut Self::Context) {
        self.accept(Kept::Remove(msg));
    }
}

impl Handler<ToConnector> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: ToConnector, _ctx: &mut Self::Context) {
        self.accept(Kept::Data(msg));
    }
}

/// To a replaced instance from `restart_shard`: give what you kept to `successor`, then stop.
#[derive(Message)]
#[rtype(result = "()")]
struct HandOver {
    successor: Addr<ConnectorActor>,
}

impl Handler<HandOver> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: HandOver, ctx: &mut Self::Context) {
        let kept = self.kept.take().unwrap_or_default();
        msg.successor.do_send(Backlog(kept));
        ctx.stop();
        // This instance had its own arbiter thread.
        Arbiter::current().stop();
    }
}

/// What a predecessor kept, for its successor.
#[derive(Message)]
#[rtype(result = "()")]
struct Backlog(Vec<Kept>);

impl Handler<Backlog> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: Backlog, _ctx: &mut Self::Context) {
        if self.awaiting_handover {
            self.resume(msg.0);
        } else {
            // Arrived after the wait: these frames are older than what was already analysed.
            tracing::warn!(
                shard = self.config.shard,
                messages = msg.0.len(),
                "a late backlog from a replaced instance was dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::OnceLock;
    use std::time::{Instant, UNIX_EPOCH};

    use crate::analytics::lines::LineSpec;
    use crate::detector::drift::{Binning, DriftSettings, DriftState};
    use crate::events::{Event, EventDetail};
    use crate::objects::{BBox, Detection, ObjectClass};
    use crate::sinks::MemorySink;
    use crate::supervision::supervisor::Factory;
    use crate::supervision::{BreakerConfig, ChildState, ChildView, Generation, RestartPolicy, Supervisor};

    #[test]
    fn shards_are_stable_and_spread() {
        let ids: Vec<String> = (0..2000).map(|i| format!("cam-{i}")).collect();
        let mut load = [0usize; 4];
        for id in &ids {
            let s = shard_for(id, 4);
            assert_eq!(s, shard_for(id, 4));
            load[s] += 1;
        }
        for l in load {
            assert!((400..=600).contains(&l), "uneven spread {load:?}");
        }
    }

    #[test]
    fn adding_a_shard_moves_only_cameras_to_the_new_shard() {
        for i in 0..2000 {
            let id = format!("cam-{i}");
            let (before, after) = (shard_for(&id, 4), shard_for(&id, 5));
            assert!(after == before || after == 4, "{id} moved {before} -> {after}");
        }
    }

    /// The longest any test waits for an actor: a regression fails after it instead of hanging.
    const WAIT: Duration = Duration::from_secs(5);
    const CAMERA: &str = "cam-1";
    /// A minute boundary, so the few seconds of frame time of a test close no minute.
    const EPOCH_MS: u64 = 1_700_000_040_000;

    /// Polls `done` until it holds; fails the test once `WAIT` has passed.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// One counting line across the image at y = 300; moving down across it is `in`.
    fn geometry() -> Geometry {
        let line = LineSpec { id: "l1".into(), name: String::new(), a: [0.0, 300.0], b: [640.0, 300.0] };
        Geometry { lines: vec![line], ..Geometry::default() }
    }

    fn registration(status: &Arc<CameraStatus>) -> Registration {
        Registration { status: status.clone(), geometry: geometry(), geometry_version: 1 }
    }

    /// A car 80 px wide whose bottom edge, its ground point, is at `bottom`.
    fn car(left: f32, bottom: f32) -> BBox {
        BBox::new(left, bottom - 100.0, left + 80.0, bottom)
    }

    /// Car A drives down 10 px a frame and crosses the line between frames 5 and 6.
    fn car_a(seq: u64) -> BBox {
        car(100.0, 245.0 + 10.0 * seq as f32)
    }

    /// Car B appears at frame 8 and crosses the line between frames 12 and 13.
    fn car_b(seq: u64) -> BBox {
        let bottom = if seq <= 12 { 170.0 + 10.0 * seq as f32 } else { 180.0 + 10.0 * seq as f32 };
        car(400.0, bottom)
    }

    fn frame(seq: u64, cars: &[BBox]) -> ToConnector {
        ToConnector::Detections(FrameDetections {
            camera_id: CAMERA.into(),
            seq,
            captured_at: UNIX_EPOCH + Duration::from_millis(EPOCH_MS + 100 * seq),
            captured: Instant::now(),
            detections: cars.iter().map(|&bbox| Detection::new(bbox, 0.9, ObjectClass::Car)).collect(),
            model_version: 1,
            span: tracing::Span::none(),
        })
    }

    /// Line crossings the sink received, as (frame, direction), after checking each was emitted once.
    fn crossings(sink: &MemorySink) -> Vec<(u64, &'static str)> {
        let events: Vec<Event> = sink.take().into_iter().map(|(event, _)| event).collect();
        let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), events.len(), "an event was emitted twice");
        events
            .iter()
            .filter_map(|e| match &e.detail {
                EventDetail::LineCrossing(crossing) => Some((e.frame_seq, crossing.direction.as_str())),
                _ => None,
            })
            .collect()
    }

    /// What an instance holds, for the tests' eyes.
    #[derive(Debug, PartialEq)]
    struct Inside {
        cameras: usize,
        /// What it keeps instead of analysing, oldest first.
        kept: Option<Vec<String>>,
        awaiting_handover: bool,
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Peek(Sender<Inside>);

    impl Handler<Peek> for ConnectorActor {
        type Result = ();

        fn handle(&mut self, Peek(reply): Peek, _ctx: &mut Self::Context) {
            let describe = |kept: &Kept| match kept {
                Kept::Data(ToConnector::Detections(frame)) => format!("frame {}", frame.seq),
                Kept::Data(ToConnector::StreamEnded(_)) => "end".to_string(),
                Kept::Add(_) => "add".to_string(),
                Kept::Geometry(set) => format!("geometry {}", set.version),
                Kept::Remove(_) => "remove".to_string(),
            };
            let _ = reply.send(Inside {
                cameras: self.cameras.len(),
                kept: self.kept.as_ref().map(|kept| kept.iter().map(describe).collect()),
                awaiting_handover: self.awaiting_handover,
            });
        }
    }

    /// What `addr` holds once it has handled everything sent to it before.
    fn peek(addr: &Addr<ConnectorActor>) -> Inside {
        let (reply, answer) = channel();
        addr.do_send(Peek(reply));
        answer.recv_timeout(WAIT).expect("the instance answers")
    }

    /// Blocks the instance's thread until released: a frozen instance. At most twice `WAIT`, so
    /// that a test fails on a wait of its own first.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Freeze(Receiver<()>);

    impl Handler<Freeze> for ConnectorActor {
        type Result = ();

        fn handle(&mut self, Freeze(release): Freeze, _ctx: &mut Self::Context) {
            let _ = release.recv_timeout(2 * WAIT);
        }
    }

    /// One shard of one camera, supervised, as `topology` builds it, in an actix system of the
    /// test's own.
    struct Fixture {
        _system: actix::SystemRunner,
        config: ShardConfig,
        sink: Arc<MemorySink>,
        status: Arc<CameraStatus>,
        supervisor: Supervisor,
    }

    impl Fixture {
        fn new(panic_at_frame: u64, mailbox: usize, handover_wait: Duration) -> Self {
            let system = actix::System::new();
            let metrics = Arc::new(Metrics::new());
            let sink = Arc::new(MemorySink::default());
            let config = ShardConfig {
                shard: 0,
                model: "test".into(),
                // A reference of 2 frames, then a window of 2 compared at every frame.
                drift: Some(DriftConfig {
                    settings: DriftSettings { enabled: true, reference_frames: 2, window_frames: 2, every_frames: 1 },
                    binning: Binning { score_floor: 0.1 },
                }),
                mailbox,
                tracker: TrackerConfig::default(),
                analytics: AnalyticsConfig::default(),
                sink: sink.clone(),
                metrics: metrics.clone(),
                panic_at_frame,
                panic_fired: Arc::default(),
                live: Arc::default(),
                handover_wait,
            };
            // The camera stream's breaker: there is no stream here.
            let breaker = BreakerConfig { failure_threshold: 5, open_for: WAIT, half_open_successes: 1 };
            let status = Arc::new(CameraStatus::new(CAMERA.into(), EPOCH_MS, 1, &metrics, &breaker));
            let policy = RestartPolicy {
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(10),
                jitter: 0.0,
                ..RestartPolicy::default()
            };
            let actix_system = actix::System::current();
            let supervisor = Supervisor::spawn(
                "test",
                policy,
                Box::new(|_, _| {}),
                Box::new(|_| {}),
                // Factories start arbiters, which belong to the test's actix system.
                move || actix::System::set_current(actix_system),
            );
            Self { _system: system, config, sink, status, supervisor }
        }

        fn registration(&self) -> Registration {
            registration(&self.status)
        }

        /// Starts the shard's first instance with its camera; `factory` starts every later one.
        /// Returns the shard's slot and the first instance's reporter.
        fn supervise(&self, factory: impl Factory + 'static) -> (Arc<ShardSlot>, Reporter) {
            let reporter = self.supervisor.add("shard-0", None, factory);
            let slot = start_shard(self.config.clone(), reporter.clone());
            slot.addr().do_send(AddCamera(self.registration()));
            (slot, reporter)
        }

        /// Supervises the shard with a factory that starts nothing: each later generation's
        /// reporter comes out of the returned channel, for the test to start the instance with.
        fn supervise_by_hand(&self) -> (Arc<ShardSlot>, Reporter, Receiver<Reporter>) {
            let (restart, restarts) = channel();
            let (slot, reporter) = self.supervise(move |_: Generation, reporter: Reporter| {
                let _ = restart.send(reporter);
                Ok(())
            });
            (slot, reporter, restarts)
        }

        fn child(&self) -> Option<ChildView> {
            self.supervisor.children().into_iter().next()
        }

        fn processed(&self) -> u64 {
            self.status.processed.get()
        }
    }

    #[test]
    fn a_panic_poisons_the_instance_which_keeps_what_follows_in_order_within_its_mailbox() {
        let f = Fixture::new(3, 4, WAIT);
        let (slot, _, restarts) = f.supervise_by_hand();
        let poisoned = slot.addr();
        // `do_send`: past the mailbox's capacity (4), which `try_send` would refuse.
        for seq in 1..=3 {
            poisoned.do_send(frame(seq, &[car_a(seq)]));
        }
        let next = restarts.recv_timeout(WAIT).expect("the poisoned instance reports its failure");
        assert_eq!(next.generation(), Generation(1));
        let error = f.child().and_then(|c| c.last_error).unwrap_or_default();
        assert!(error.contains("panics at frame 3"), "{error}");

        for seq in 4..=5 {
            poisoned.do_send(frame(seq, &[car_a(seq)]));
        }
        poisoned.do_send(SetGeometry { camera_id: CAMERA.into(), geometry: geometry(), version: 2 });
        for seq in 6..=8 {
            poisoned.do_send(frame(seq, &[car_a(seq)]));
        }
        // Bounded by the mailbox (4): the oldest frames go, the geometry change stays.
        let kept = ["geometry 2", "frame 6", "frame 7", "frame 8"].map(String::from).to_vec();
        assert_eq!(peek(&poisoned), Inside { cameras: 0, kept: Some(kept), awaiting_handover: false });
        assert_eq!(f.processed(), 2, "nothing after the panic is analysed");
        assert_eq!(f.status.dropped.get(), 2);
    }

    #[test]
    fn a_restarted_instance_analyses_its_predecessors_backlog_before_its_own_and_counts_on() {
        // The successor never gives up on its predecessor's backlog within the test.
        let f = Fixture::new(7, 64, 10 * WAIT);
        let (slot, _, restarts) = f.supervise_by_hand();
        let predecessor = slot.addr();
        for seq in 1..=7 {
            slot.try_send(frame(seq, &[car_a(seq)])).expect("room in the mailbox");
        }
        let reporter = restarts.recv_timeout(WAIT).expect("the poisoned instance reports its failure");
        // Kept by the poisoned predecessor: A past the line, B coming up to it.
        for seq in 8..=12 {
            slot.try_send(frame(seq, &[car_a(seq), car_b(seq)])).expect("room in the mailbox");
        }
        let kept = (8..=12).map(|seq| format!("frame {seq}")).collect();
        assert_eq!(peek(&predecessor).kept, Some(kept));
        // Held until the successor has frames of its own, so that the order is put to the test.
        let (release, frozen) = channel();
        predecessor.do_send(Freeze(frozen));
        restart_shard(&f.config, reporter, vec![f.registration()], &slot);
        let successor = slot.addr();
        assert!(successor != predecessor, "the slot points at the new instance");
        for seq in 13..=16 {
            slot.try_send(frame(seq, &[car_a(seq), car_b(seq)])).expect("room in the mailbox");
        }
        let own = (13..=16).map(|seq| format!("frame {seq}")).collect();
        assert_eq!(peek(&successor), Inside { cameras: 1, kept: Some(own), awaiting_handover: true });
        release.send(()).expect("the predecessor is frozen");

        // Frames 1-6 before the panic, 8-16 after it; frame 7 panicked.
        wait_for("every frame but the panicking one is analysed", || f.processed() == 15);
        // A, counted before the panic, is not counted again by its new track; B crosses in frame 13,
        // which only the predecessor's frames 8-12, analysed first, let its track see.
        assert_eq!(crossings(&f.sink), vec![(6, "in"), (13, "in")]);
        assert_eq!(f.status.counts()[0].in_, 2, "counts continue from the predecessor's");
    }

    #[test]
    fn a_frozen_predecessor_is_left_behind_and_analyses_nothing_when_it_comes_back() {
        let f = Fixture::new(0, 64, Duration::from_millis(100));
        let (slot, first, restarts) = f.supervise_by_hand();
        let frozen = slot.addr();
        for seq in 1..=4 {
            slot.try_send(frame(seq, &[car_a(seq)])).expect("room in the mailbox");
        }
        wait_for("the first instance analyses its frames", || f.processed() == 4);
        let (release, freeze) = channel();
        frozen.do_send(Freeze(freeze));
        // They wait in the frozen instance's mailbox; car A crosses the line in frame 6.
        for seq in 5..=8 {
            slot.try_send(frame(seq, &[car_a(seq)])).expect("room in the mailbox");
        }
        // What the supervisor reports when an instance's heartbeats stop.
        first.failed("no progress (frozen)");
        let reporter = restarts.recv_timeout(WAIT).expect("the supervisor restarts the frozen shard");
        restart_shard(&f.config, reporter, vec![f.registration()], &slot);
        let successor = slot.addr();
        for seq in 9..=12 {
            slot.try_send(frame(seq, &[car_a(seq)])).expect("room in the mailbox");
        }
        wait_for("the successor goes on without the frozen instance", || f.processed() == 8);

        release.send(()).expect("the instance is frozen");
        wait_for("the frozen instance hands over and stops", || !frozen.connected());
        // Its late backlog reached the successor before this.
        peek(&successor);
        assert_eq!(f.processed(), 8, "frames 5-8 are analysed by neither instance");
        assert_eq!(crossings(&f.sink), vec![], "A crossed in a frame that is lost");
    }

    #[test]
    fn the_supervisor_restarts_a_panicked_shard_through_its_slot() {
        let f = Fixture::new(3, 64, HANDOVER_WAIT);
        // As topology's factory: the slot exists only once the first instance is started.
        let slot_of_shard: Arc<OnceLock<Arc<ShardSlot>>> = Arc::default();
        let factory = {
            let (config, status, slot) = (f.config.clone(), f.status.clone(), slot_of_shard.clone());
            move |_: Generation, reporter: Reporter| {
                let slot = slot.get().ok_or("the shard has no slot yet")?;
                restart_shard(&config, reporter, vec![registration(&status)], slot);
                Ok(())
            }
        };
        let (slot, _) = f.supervise(factory);
        let _ = slot_of_shard.set(slot.clone());
        let first = slot.addr();
        for seq in 1..=3 {
            slot.try_send(frame(seq, &[car_a(seq)])).expect("room in the mailbox");
        }
        wait_for("the supervisor restarts the shard", || {
            f.child().is_some_and(|c| c.generation == Generation(1) && c.state == ChildState::Running)
        });
        assert_eq!(f.config.live.load(Ordering::SeqCst), 1, "the new instance is the live one");
        assert!(slot.addr() != first, "the slot points at the new instance");
        for seq in 4..=8 {
            slot.try_send(frame(seq, &[car_a(seq)])).expect("room in the mailbox");
        }
        wait_for("frames sent through the slot after the restart are analysed", || f.processed() == 7);
        wait_for("the old instance stops", || !first.connected());
        assert_eq!(crossings(&f.sink), vec![(6, "in")]);
    }

    #[test]
    fn drift_is_published_per_camera_and_model_and_removed_with_a_new_reference_or_the_camera() {
        let f = Fixture::new(0, 64, WAIT);
        let (slot, _) = f.supervise(|_: Generation, _: Reporter| Ok(()));
        let series = "ml_model_drift_kl{camera=\"cam-1\",model=\"test\",feature=\"count\"}";
        let published = || f.config.metrics.encode().contains(series);
        for seq in 1..=3 {
            slot.try_send(frame(seq, &[car_a(seq)])).expect("room in the mailbox");
        }
        wait_for("three frames are analysed", || f.processed() == 3);
        let view = f.status.drift.view().expect("a monitor runs");
        assert_eq!((view.state, view.reference_frames, view.window_frames), (DriftState::Comparing, 2, 1));
        assert!(!published(), "no value before the window is full");
        slot.try_send(frame(4, &[car_a(4)])).expect("room in the mailbox");
        wait_for("the first comparison", published);
        assert_eq!(f.status.drift.view().and_then(|v| v.kl).map(|kl| kl.max()), Some(0.0));
        for feature in ["class", "confidence", "box_size"] {
            assert!(f.config.metrics.encode().contains(&format!("feature=\"{feature}\"")), "{feature}");
        }

        // A new reference: the last values go with the next frame.
        f.status.drift.recapture();
        slot.try_send(frame(5, &[])).expect("room in the mailbox");
        wait_for("the fifth frame is analysed", || f.processed() == 5);
        assert!(!published(), "a value of the old reference stays");
        for seq in 6..=8 {
            slot.try_send(frame(seq, &[])).expect("room in the mailbox");
        }
        wait_for("a comparison against the new reference", published);

        slot.addr().do_send(RemoveCamera(CAMERA.into()));
        peek(&slot.addr());
        assert!(!f.config.metrics.encode().contains("ml_model_drift_kl{"), "the camera's series are gone");
    }
}
