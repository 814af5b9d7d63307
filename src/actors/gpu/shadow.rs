//! The shadow lane of a device: a second model run on a share of the frames the serving path has
//! already analysed, compared with what the serving path delivered for the same frames.
//!
//! It never delays the serving path: the inference thread only offers a frame (a shared buffer
//! and a copy of its detections) to the lane's own bounded queue, which drops its oldest frame
//! when full (`ml_model_shadow_dropped_total`); the lane runs on its own thread with a model
//! loaded on one CPU thread. Its results go nowhere but the comparison: detections matched at
//! IoU >= 0.5 (`detector::agreement`) and the line counts of two shadow trackers per camera, one
//! fed each side.
//!
//! Two arrangements, set by the candidate's stage (`candidate`):
//! - shadow: the serving model delivers, the candidate runs in the lane and is judged;
//! - canary: the candidate delivers on the canary cameras, the version it would replace runs in
//!   the lane as the reference, and the candidate is judged against it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use sha2::Digest;

use crate::analytics::lines::{LineCount, LineCounter, LineSpec};
use crate::analytics::tracker::{Tracker, TrackerConfig};
use crate::detector::agreement::Agreement;
use crate::detector::{Letterbox, Model};
use crate::ids::CameraId;
use crate::objects::Detection;
use crate::supervision::panic_message;

/// Which cameras take part: the listed ones (all when no list), and of those the share whose
/// stable position (a hash of the id, the same on every node) falls below `share`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CameraSelection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cameras: Option<HashSet<String>>,
    pub share: f64,
}

impl CameraSelection {
    pub fn all() -> Self {
        Self { cameras: None, share: 1.0 }
    }

    pub fn contains(&self, camera: &str) -> bool {
        self.cameras.as_ref().is_none_or(|list| list.contains(camera)) && camera_position(camera) < self.share
    }
}

/// A camera's stable place in [0, 1).
pub fn camera_position(camera: &str) -> f64 {
    let digest = sha2::Sha256::digest(camera.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Which side of the comparison the lane's model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneRole {
    /// Shadow: the lane runs the candidate; the delivered detections are the reference.
    Candidate,
    /// Canary: the lane runs the reference; the delivered detections are the candidate's.
    Reference,
}

/// The comparison of one candidate stage, shared by the lanes of every device of this node.
#[derive(Default)]
pub struct Comparison {
    inner: Mutex<ComparisonInner>,
}

#[derive(Default)]
struct ComparisonInner {
    agreement: Agreement,
    counters: HashMap<CameraId, (ShadowCounter, ShadowCounter)>,
    dropped: u64,
    lane_failures: u64,
    canary_batches: u64,
    canary_failures: u64,
}

/// What a comparison says so far.
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonView {
    pub frames: u64,
    pub dropped: u64,
    /// Lane batches whose model call failed (their frames are not compared).
    pub lane_failures: u64,
    /// Over all classes; `null` until a frame was compared.
    pub overall: Option<crate::detector::agreement::Scores>,
    pub by_class: Vec<ClassAgreement>,
    pub counts: Vec<CameraCounts>,
    /// Canary only: model calls of the candidate on this node, and how many failed.
    pub canary_batches: u64,
    pub canary_failures: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassAgreement {
    pub class: crate::objects::ObjectClass,
    #[serde(flatten)]
    pub tally: crate::detector::agreement::Tally,
    #[serde(flatten)]
    pub scores: crate::detector::agreement::Scores,
}

/// The line counts of the two shadow trackers of one camera.
#[derive(Debug, Clone, Serialize)]
pub struct CameraCounts {
    pub camera_id: String,
    pub reference: Vec<LineCount>,
    pub candidate: Vec<LineCount>,
}

impl Comparison {
    pub fn view(&self) -> ComparisonView {
        let inner = self.inner.lock();
        let total = inner.agreement.total();
        let mut counts: Vec<CameraCounts> = inner
            .counters
            .iter()
            .map(|(camera, (reference, candidate))| CameraCounts {
                camera_id: camera.to_string(),
                reference: reference.lines.counts().to_vec(),
                candidate: candidate.lines.counts().to_vec(),
            })
            .collect();
        counts.sort_by(|a, b| a.camera_id.cmp(&b.camera_id));
        ComparisonView {
            frames: inner.agreement.frames(),
            dropped: inner.dropped,
            lane_failures: inner.lane_failures,
            overall: (inner.agreement.frames() > 0).then(|| total.scores()),
            by_class: inner
                .agreement
                .by_class()
                .iter()
                .map(|(class, tally)| ClassAgreement { class: *class, tally: *tally, scores: tally.scores() })
                .collect(),
            counts,
            canary_batches: inner.canary_batches,
            canary_failures: inner.canary_failures,
        }
    }

    /// A model call of the candidate on canary cameras.
    pub fn record_canary_batch(&self, failed: bool) {
        let mut inner = self.inner.lock();
        inner.canary_batches += 1;
        inner.canary_failures += u64::from(failed);
    }

    fn compare(&self, item: &LaneItem, lane: Vec<Detection>, role: LaneRole, start: &CounterStart) {
        let (reference, candidate) = match role {
            LaneRole::Candidate => (item.delivered.as_slice(), lane.as_slice()),
            LaneRole::Reference => (lane.as_slice(), item.delivered.as_slice()),
        };
        let mut inner = self.inner.lock();
        inner.agreement.add_frame(reference, candidate);
        if !inner.counters.contains_key(&item.camera_id) {
            let Some(lines) = (start.lines)(&item.camera_id) else { return };
            let counter = || ShadowCounter::new(start.tracker, lines.clone());
            inner.counters.insert(item.camera_id.clone(), (counter(), counter()));
        }
        let (r, c) = inner.counters.get_mut(&item.camera_id).expect("inserted above");
        r.observe(reference);
        c.observe(candidate);
    }
}

/// A tracker and the camera's counting lines, fed one side's detections.
struct ShadowCounter {
    tracker: Tracker,
    lines: LineCounter,
}

impl ShadowCounter {
    fn new(tracker: TrackerConfig, lines: Vec<LineSpec>) -> Self {
        Self { tracker: Tracker::new(tracker), lines: LineCounter::new(lines) }
    }

    fn observe(&mut self, detections: &[Detection]) {
        let tracked = self.tracker.update(detections);
        for object in &tracked {
            let (x, y) = object.bbox.ground_point();
            self.lines.observe(object.track_id, (x as f64, y as f64), object.class);
        }
        let alive: HashSet<u64> = tracked.iter().map(|o| o.track_id).collect();
        self.lines.retain_tracks(|id| alive.contains(&id));
    }
}

/// A running camera's counting lines; `None`: the camera is gone (no counts for it).
pub type CameraLines = Arc<dyn Fn(&CameraId) -> Option<Vec<LineSpec>> + Send + Sync>;

/// What the lanes need to start a camera's shadow trackers.
#[derive(Clone)]
pub struct CounterStart {
    pub tracker: TrackerConfig,
    pub lines: CameraLines,
}

/// What a device's lane is set up with (besides its model).
pub struct LanePlan {
    pub role: LaneRole,
    /// Frames delivered by this version are offered (the reference in shadow, the candidate in
    /// a canary).
    pub delivered_by: u32,
    pub cameras: CameraSelection,
    /// Share of the offered cameras' frames compared.
    pub share: f64,
    /// Frames the lane queues at most; when full its oldest is dropped.
    pub queue: usize,
    pub max_batch: usize,
    pub comparison: Arc<Comparison>,
    pub counters: CounterStart,
}

struct LaneItem {
    camera_id: CameraId,
    pixels: Bytes,
    letterbox: Letterbox,
    delivered: Vec<Detection>,
}

/// A running lane; `stop` ends its thread after its batch.
pub struct ShadowLane {
    plan: LanePlan,
    queue: Mutex<VecDeque<LaneItem>>,
    ready: Condvar,
    stopped: AtomicBool,
    /// Per camera, the share accumulated since its last compared frame.
    owed: Mutex<HashMap<CameraId, f64>>,
}

impl ShadowLane {
    /// Starts the lane's thread, running `model`: the lane's own instance (loaded for one CPU
    /// thread).
    pub fn start(plan: LanePlan, model: Box<dyn Model>, device: &str) -> std::io::Result<Arc<Self>> {
        let lane = Arc::new(Self {
            plan,
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            stopped: AtomicBool::new(false),
            owed: Mutex::default(),
        });
        let running = lane.clone();
        std::thread::Builder::new().name(format!("shadow-{device}")).spawn(move || running.run(model))?;
        Ok(lane)
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.queue.lock().clear();
        self.ready.notify_all();
    }

    /// Offers a delivered frame; never waits. Taken when its camera and version are the lane's
    /// and the camera's share is due.
    pub fn offer(&self, camera_id: &CameraId, pixels: &Bytes, letterbox: Letterbox, delivered: &[Detection], by: u32) {
        let plan = &self.plan;
        if by != plan.delivered_by || !plan.cameras.contains(camera_id) || self.stopped.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut owed = self.owed.lock();
            let due = owed.entry(camera_id.clone()).or_insert(0.0);
            *due += plan.share;
            if *due < 1.0 - 1e-9 {
                return;
            }
            *due -= 1.0;
        }
        let item =
            LaneItem { camera_id: camera_id.clone(), pixels: pixels.clone(), letterbox, delivered: delivered.to_vec() };
        let mut queue = self.queue.lock();
        if queue.len() >= plan.queue.max(1) {
            queue.pop_front();
            plan.comparison.inner.lock().dropped += 1;
        }
        queue.push_back(item);
        drop(queue);
        self.ready.notify_one();
    }

    fn run(&self, model: Box<dyn Model>) {
        let plan = &self.plan;
        loop {
            let batch: Vec<LaneItem> = {
                let mut queue = self.queue.lock();
                while queue.is_empty() && !self.stopped.load(Ordering::SeqCst) {
                    self.ready.wait_for(&mut queue, Duration::from_millis(500));
                }
                if self.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let take = queue.len().min(plan.max_batch.max(1));
                queue.drain(..take).collect()
            };
            let inputs: Vec<_> = batch.iter().map(|i| (i.pixels.as_ref(), i.letterbox)).collect();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.detect(&inputs)));
            match result {
                Ok(Ok(per_frame)) => {
                    for (item, lane) in batch.iter().zip(per_frame) {
                        plan.comparison.compare(item, lane, plan.role, &plan.counters);
                    }
                }
                Ok(Err(error)) => self.failed(error.to_string()),
                Err(panic) => self.failed(panic_message(&*panic)),
            }
        }
    }

    fn failed(&self, error: String) {
        tracing::warn!(%error, "shadow model call failed; its frames are not compared");
        self.plan.comparison.inner.lock().lane_failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_selection_takes_the_listed_cameras_and_a_stable_share() {
        let ids: Vec<String> = (0..1000).map(|i| format!("cam-{i}")).collect();
        let half = CameraSelection { cameras: None, share: 0.5 };
        let taken = ids.iter().filter(|id| half.contains(id)).count();
        assert!((400..600).contains(&taken), "{taken} of 1000 at share 0.5");
        assert!(ids.iter().all(|id| CameraSelection::all().contains(id)));
        assert!(ids.iter().all(|id| !CameraSelection { cameras: None, share: 0.0 }.contains(id)));
        let listed = CameraSelection { cameras: Some(["cam-1".to_string()].into()), share: 1.0 };
        assert!(listed.contains("cam-1") && !listed.contains("cam-2"));
        assert_eq!(camera_position("cam-7"), camera_position("cam-7"));
    }
}
