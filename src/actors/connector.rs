//! ConnectorActor: a shard that tracks objects and counts line crossings for the cameras pinned
//! to it, and emits typed events. Cameras are pinned to shards by rendezvous hashing of their id,
//! so a camera's tracker state lives in exactly one place.

pub mod lines;
pub mod tracker;

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Context, Handler, Message};

use crate::actors::camera::{CameraStatus, StreamState};
use crate::actors::messages::{CameraId, Event, FrameDetections, ToConnector, LINE_CROSSING};
use crate::metrics::Metrics;
use crate::sinks::EventSink;
use lines::{LineCounter, LineSpec};
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

/// The deterministic id of a crossing: the same crossing replayed gets the same id.
pub fn event_id(camera_id: &str, epoch_ms: u64, track_id: u64, line_id: &str, frame_seq: u64) -> String {
    let name = format!("{camera_id}/{epoch_ms}/{track_id}/{line_id}/{frame_seq}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

struct CameraAnalytics {
    status: Arc<CameraStatus>,
    tracker: Tracker,
    lines: LineCounter,
    /// Frames this shard has tracked for the camera (dropped frames do not count: the tracker
    /// ages its lost tracks in tracked frames too).
    tracked_frames: u64,
    /// `tracked_frames` when each live track was last seen, to forget finished tracks.
    last_seen: HashMap<u64, u64>,
}

pub struct ConnectorActor {
    shard: usize,
    mailbox: usize,
    tracker_config: TrackerConfig,
    sink: Arc<dyn EventSink>,
    metrics: Arc<Metrics>,
    cameras: HashMap<CameraId, CameraAnalytics>,
}

impl ConnectorActor {
    pub fn new(shard: usize, mailbox: usize, tracker_config: TrackerConfig, sink: Arc<dyn EventSink>, metrics: Arc<Metrics>) -> Self {
        Self { shard, mailbox, tracker_config, sink, metrics, cameras: HashMap::new() }
    }

    fn on_frame(&mut self, frame: FrameDetections) {
        let Some(camera) = self.cameras.get_mut(&frame.camera_id) else { return };
        let started = std::time::Instant::now();
        camera.tracked_frames += 1;
        let now = camera.tracked_frames;
        let tracked = camera.tracker.update(&frame.detections);
        let mut changed = false;
        for object in &tracked {
            camera.last_seen.insert(object.track_id, now);
            let (x, y) = object.bbox.ground_point();
            for crossing in camera.lines.observe(object.track_id, (x as f64, y as f64), object.class) {
                changed = true;
                camera.status.events.inc();
                self.sink.submit(Event {
                    event_id: event_id(&frame.camera_id, camera.status.epoch_ms, object.track_id, &crossing.line_id, frame.seq),
                    kind: LINE_CROSSING,
                    camera_id: frame.camera_id.clone(),
                    ts: frame.captured_at.into(),
                    frame_seq: frame.seq,
                    track_id: object.track_id,
                    class: crossing.class,
                    line_id: crossing.line_id,
                    direction: crossing.direction,
                    captured: Some(frame.captured),
                });
            }
        }
        if changed {
            camera.status.set_counts(camera.lines.counts());
        }
        camera.status.processed.inc();
        self.metrics.stages.tracking.record(started.elapsed());
        self.metrics.stages.frame_latency.record(frame.captured.elapsed());
        // Track ids are never reused, so a track unseen for longer than the tracker keeps lost
        // tracks is finished; forget it every so often.
        if now % 256 == 0 {
            let horizon = self.tracker_config.max_lost_frames as u64 + 1;
            camera.last_seen.retain(|_, seen| now - *seen <= horizon);
            let alive = &camera.last_seen;
            camera.lines.retain_tracks(|id| alive.contains_key(&id));
        }
    }
}

impl Actor for ConnectorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
        tracing::debug!(shard = self.shard, "connector shard started");
    }
}

/// Starts analysing a camera on this shard; must arrive before its first frame.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddCamera {
    pub status: Arc<CameraStatus>,
    pub lines: Vec<LineSpec>,
}

impl Handler<AddCamera> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: AddCamera, _ctx: &mut Self::Context) {
        let lines = LineCounter::new(msg.lines);
        msg.status.set_counts(lines.counts());
        self.cameras.insert(
            msg.status.id.clone(),
            CameraAnalytics {
                status: msg.status,
                tracker: Tracker::new(self.tracker_config),
                lines,
                tracked_frames: 0,
                last_seen: HashMap::new(),
            },
        );
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveCamera(pub CameraId);

impl Handler<RemoveCamera> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveCamera, _ctx: &mut Self::Context) {
        self.cameras.remove(&msg.0);
    }
}

impl Handler<ToConnector> for ConnectorActor {
    type Result = ();

    fn handle(&mut self, msg: ToConnector, _ctx: &mut Self::Context) {
        match msg {
            ToConnector::Detections(frame) => self.on_frame(frame),
            ToConnector::StreamEnded(camera_id) => {
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
        let a = event_id("cam", 1, 2, "l1", 3);
        assert_eq!(a, event_id("cam", 1, 2, "l1", 3));
        assert_ne!(a, event_id("cam", 1, 2, "l1", 4));
        assert_ne!(a, event_id("cam", 9, 2, "l1", 3), "a restarted camera gets new ids");
    }
}
