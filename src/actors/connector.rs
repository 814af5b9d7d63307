//! ConnectorActor: a shard that tracks objects and runs the analytics (`crate::analytics`) for
//! the cameras pinned to it, and emits typed events, per-minute measures and live state. Cameras are pinned to shards by rendezvous hashing of their id,
//! so a camera's tracker state lives in exactly one place.

pub mod lines;
pub mod tracker;

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Context, Handler, Message};

use crate::actors::camera::{CameraStatus, StreamState};
use crate::actors::messages::{CameraId, FrameDetections, ToConnector};
use crate::analytics::config::AnalyticsConfig;
use crate::analytics::geometry::Geometry;
use crate::analytics::scene::{FrameOutput, SceneAnalytics, StreamIdentity};
use crate::analytics::StateSnapshot;
use crate::metrics::Metrics;
use crate::sinks::EventSink;
use tracker::{Tracker, TrackerConfig};

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

/// The deterministic id of a crossing: the same crossing replayed under the same geometry
/// version gets the same id.
pub fn event_id(camera_id: &str, epoch_ms: u64, geometry_version: u32, track_id: u64, line_id: &str, frame_seq: u64) -> String {
    let name = format!("{camera_id}/{epoch_ms}/{geometry_version}/{track_id}/{line_id}/{frame_seq}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

struct CameraAnalytics {
    status: Arc<CameraStatus>,
    tracker: Tracker,
    scene: SceneAnalytics,
    /// Last frame's sequence number, for the events of a flush.
    last_seq: u64,
    /// Frame time of the last state snapshot sent to the cache.
    last_state_ms: Option<i64>,
}

/// The live state is cached at most this often per camera (frame time), plus at every minute
/// close and at the end.
const STATE_INTERVAL_MS: i64 = 1_000;

pub struct ConnectorActor {
    shard: usize,
    /// The model whose detections this shard tracks (`ml_model_accuracy{model}`).
    model: Arc<str>,
    mailbox: usize,
    tracker_config: TrackerConfig,
    analytics_config: AnalyticsConfig,
    sink: Arc<dyn EventSink>,
    metrics: Arc<Metrics>,
    cameras: HashMap<CameraId, CameraAnalytics>,
}

impl ConnectorActor {
    pub fn new(
        shard: usize,
        model: Arc<str>,
        mailbox: usize,
        tracker_config: TrackerConfig,
        analytics_config: AnalyticsConfig,
        sink: Arc<dyn EventSink>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { shard, model, mailbox, tracker_config, analytics_config, sink, metrics, cameras: HashMap::new() }
    }

    fn on_frame(&mut self, frame: FrameDetections) {
        let Some(camera) = self.cameras.get_mut(&frame.camera_id) else { return };
        let started = std::time::Instant::now();
        let tracking = crate::child_span!(&frame.span, "tracking", shard = self.shard);
        let _entered = tracking.enter();
        let detections: Vec<_> =
            frame.detections.iter().filter(|d| camera.scene.keep_detection(&d.bbox)).copied().collect();
        let tracked = camera.tracker.update(&detections);
        self.metrics.record_continuity(&self.model, camera.tracker.take_continuity());
        let ts_ms = chrono::DateTime::<chrono::Utc>::from(frame.captured_at).timestamp_millis();
        let mut out = camera.scene.observe(ts_ms, frame.seq, frame.captured, &tracked);
        camera.last_seq = frame.seq;
        let due = camera.last_state_ms.is_none_or(|last| ts_ms - last >= STATE_INTERVAL_MS);
        let force_state = !out.aggregates.is_empty();
        for event in &mut out.events {
            event.span = crate::child_span!(&tracking, "event", kind = event.kind());
        }
        emit(&*self.sink, camera, out);
        if force_state || due {
            camera.last_state_ms = Some(ts_ms);
            send_state(&*self.sink, camera);
        }
        camera.status.processed.inc();
        self.metrics.stages.tracking.record(started.elapsed());
        self.metrics.stages.frame_latency.record(frame.captured.elapsed());
    }

    fn finish(&mut self, camera_id: &CameraId) {
        let Some(camera) = self.cameras.get_mut(camera_id) else { return };
        let out = camera.scene.finish(camera.last_seq);
        emit(&*self.sink, camera, out);
        send_state(&*self.sink, camera);
    }
}

fn emit(sink: &dyn EventSink, camera: &CameraAnalytics, out: FrameOutput) {
    let crossed = out.events.iter().any(|e| matches!(e.detail, crate::actors::messages::EventDetail::LineCrossing(_)));
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

impl Actor for ConnectorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
        tracing::debug!(shard = self.shard, "connector shard started");
    }
}

/// Starts analysing a camera on this shard; must arrive before its first frame. The geometry
/// has been validated.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddCamera {
    pub status: Arc<CameraStatus>,
    pub geometry: Geometry,
    pub geometry_version: u32,
}

impl Handler<AddCamera> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: AddCamera, _ctx: &mut Self::Context) {
        let identity = StreamIdentity {
            camera_id: msg.status.id.clone(),
            epoch_ms: msg.status.epoch_ms,
            geometry_version: msg.geometry_version,
        };
        let scene = match SceneAnalytics::new(identity, &msg.geometry, self.analytics_config.clone()) {
            Ok(scene) => scene,
            Err(errors) => {
                // Validated at the edge; a stored geometry that no longer compiles is reported.
                msg.status.set_state(StreamState::Failed, Some(format!("invalid geometry: {}", errors.join("; "))));
                return;
            }
        };
        msg.status.set_counts(scene.line_counts());
        let camera = CameraAnalytics {
            status: msg.status,
            tracker: Tracker::new(self.tracker_config),
            scene,
            last_seq: 0,
            last_state_ms: None,
        };
        send_state(&*self.sink, &camera);
        self.cameras.insert(camera.status.id.clone(), camera);
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
        let Some(camera) = self.cameras.get(&msg.camera_id) else { return };
        let current = camera.scene.identity().clone();
        // Two quick changes may arrive out of order: the newest version wins.
        if msg.version <= current.geometry_version {
            return;
        }
        let identity = StreamIdentity { geometry_version: msg.version, ..current };
        let scene = match SceneAnalytics::new(identity, &msg.geometry, self.analytics_config.clone()) {
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
        camera.status.geometry_version.store(msg.version, std::sync::atomic::Ordering::SeqCst);
        camera.status.set_counts(camera.scene.line_counts());
        send_state(&*self.sink, camera);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveCamera(pub CameraId);

impl Handler<RemoveCamera> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveCamera, _ctx: &mut Self::Context) {
        self.finish(&msg.0);
        self.cameras.remove(&msg.0);
    }
}

impl Handler<ToConnector> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: ToConnector, _ctx: &mut Self::Context) {
        match msg {
            ToConnector::Detections(frame) => self.on_frame(frame),
            ToConnector::StreamEnded(camera_id) => {
                self.finish(&camera_id);
                if let Some(camera) = self.cameras.get(&camera_id) {
                    if camera.status.state() != StreamState::Failed {
                        camera.status.set_state(StreamState::Ended, None);
                    }
                    camera.status.mark_finished();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        let a = event_id("cam", 1, 1, 2, "l1", 3);
        assert_eq!(a, event_id("cam", 1, 1, 2, "l1", 3));
        assert_ne!(a, event_id("cam", 1, 1, 2, "l1", 4));
        assert_ne!(a, event_id("cam", 9, 1, 2, "l1", 3), "a restarted camera gets new ids");
        assert_ne!(a, event_id("cam", 1, 2, 2, "l1", 3), "another geometry version, another event");
    }
}
