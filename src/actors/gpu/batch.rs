//! The device's intake: one bounded queue per camera, and fair batch forming across them.
//!
//! A camera's decode thread pushes frames here; the inference thread takes batches. A live camera
//! never waits: when its queue is full the oldest queued frame is dropped and counted. A replayed
//! file (`analyze`, `bench`, `realtime: false`) waits instead, so nothing is lost and runs repeat.
//! Batches take one frame per camera per round, starting after the camera that led the last
//! batch, so a busy camera cannot starve the others.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::actors::messages::Frame;
use crate::ids::CameraId;
use crate::overflow::WhenFull;

/// Where decoded frames go: the camera's queue on its device.
pub trait FrameSink: Send + Sync {
    /// Never blocks a live camera; a replay waits for room unless `cancelled()` turns true.
    fn push(&self, item: Queued, cancelled: &dyn Fn() -> bool) -> PushOutcome;
}

/// An item of a camera's queue: a frame, or the end of its stream behind the last frame.
#[derive(Debug)]
pub enum Queued {
    Frame(Frame),
    End,
}

struct CameraQueue<R> {
    camera_id: CameraId,
    items: VecDeque<Queued>,
    /// Frames among `items` (the rest are end markers).
    frames: usize,
    capacity: usize,
    when_full: WhenFull,
    route: R,
}

/// The queues of all cameras on one device, plus the round-robin cursor. Pure data: the
/// blocking wrapper is [`FrameQueue`].
pub struct Intake<R> {
    cameras: Vec<CameraQueue<R>>,
    cursor: usize,
    queued_frames: usize,
}

/// A batch for the model, with what else the former found at the queue heads.
pub struct Batch<R> {
    pub frames: Vec<(Frame, R)>,
    /// Cameras whose stream ended after their last frame in this or an earlier batch.
    pub ended: Vec<(CameraId, R)>,
    /// Frames skipped because they were older than the deadline.
    pub expired: Vec<(CameraId, R)>,
}

impl<R> Default for Batch<R> {
    fn default() -> Self {
        Self { frames: Vec::new(), ended: Vec::new(), expired: Vec::new() }
    }
}

impl<R> Batch<R> {
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.ended.is_empty() && self.expired.is_empty()
    }
}

pub enum PushOutcome {
    Queued,
    /// Queued after dropping the camera's oldest queued frame.
    DroppedOldest,
    /// The camera is not attached (detached meanwhile), or the device stopped.
    Detached,
    /// The queue is full and the camera waits for room.
    Full,
    /// The queue is full and refused the frame (`WhenFull::Reject`).
    Rejected,
}

impl<R: Clone> Intake<R> {
    pub fn new() -> Self {
        Self { cameras: Vec::new(), cursor: 0, queued_frames: 0 }
    }

    pub fn attach(&mut self, camera_id: CameraId, capacity: usize, when_full: WhenFull, route: R) {
        self.detach(&camera_id);
        self.cameras.push(CameraQueue {
            camera_id,
            items: VecDeque::new(),
            frames: 0,
            capacity: capacity.max(1),
            when_full,
            route,
        });
    }

    pub fn detach(&mut self, camera_id: &str) {
        if let Some(i) = self.cameras.iter().position(|c| &*c.camera_id == camera_id) {
            let removed = self.cameras.remove(i);
            self.queued_frames -= removed.frames;
            if self.cursor > i {
                self.cursor -= 1;
            }
        }
    }

    pub fn queued_frames(&self) -> usize {
        self.queued_frames
    }

    /// The most frames the queues can hold together: a batch cannot grow past this while
    /// waiting, so the former stops waiting there.
    pub fn capacity(&self) -> usize {
        self.cameras.iter().map(|c| c.capacity).sum()
    }

    pub fn push(&mut self, camera_id: &str, item: Queued) -> (PushOutcome, Option<Queued>) {
        let Some(queue) = self.cameras.iter_mut().find(|c| &*c.camera_id == camera_id) else {
            return (PushOutcome::Detached, Some(item));
        };
        let is_frame = matches!(item, Queued::Frame(_));
        let mut outcome = PushOutcome::Queued;
        if is_frame && queue.frames >= queue.capacity {
            match queue.when_full {
                WhenFull::Wait => return (PushOutcome::Full, Some(item)),
                WhenFull::Reject => return (PushOutcome::Rejected, None),
                WhenFull::DropOldest => {
                    if let Some(i) = queue.items.iter().position(|q| matches!(q, Queued::Frame(_))) {
                        queue.items.remove(i);
                        queue.frames -= 1;
                        self.queued_frames -= 1;
                        outcome = PushOutcome::DroppedOldest;
                    }
                }
            }
        }
        if is_frame {
            queue.frames += 1;
            self.queued_frames += 1;
        }
        queue.items.push_back(item);
        (outcome, None)
    }

    /// Whether any queue has something at its head (a frame or an end marker).
    pub fn has_work(&self) -> bool {
        self.cameras.iter().any(|c| !c.items.is_empty())
    }

    /// Forms a batch of at most `max_batch` frames, one per camera per round. Frames of live
    /// cameras captured before `expire_before` are skipped (a replay's frames never expire: it
    /// waits instead of dropping). End markers are taken only when they reach the head of their
    /// queue, so they always follow the camera's last frame.
    pub fn form_batch(&mut self, max_batch: usize, expire_before: Option<Instant>) -> Batch<R> {
        let mut batch = Batch::default();
        let n = self.cameras.len();
        if n == 0 {
            return batch;
        }
        let start = self.cursor % n;
        let mut progressed = true;
        while progressed && batch.frames.len() < max_batch {
            progressed = false;
            for k in 0..n {
                if batch.frames.len() >= max_batch {
                    break;
                }
                let queue = &mut self.cameras[(start + k) % n];
                // Skip expired frames and collect end markers until this camera yields a frame.
                while let Some(head) = queue.items.pop_front() {
                    match head {
                        Queued::End => batch.ended.push((queue.camera_id.clone(), queue.route.clone())),
                        Queued::Frame(frame) => {
                            queue.frames -= 1;
                            self.queued_frames -= 1;
                            let live = queue.when_full == WhenFull::DropOldest;
                            if live && expire_before.is_some_and(|t| frame.captured < t) {
                                batch.expired.push((frame.camera_id.clone(), queue.route.clone()));
                                continue;
                            }
                            batch.frames.push((frame, queue.route.clone()));
                            progressed = true;
                            break;
                        }
                    }
                }
            }
        }
        self.cursor = (start + 1) % n;
        batch
    }
}

impl<R: Clone> Default for Intake<R> {
    fn default() -> Self {
        Self::new()
    }
}

/// The thread-safe intake of one device: producers push, the inference thread takes batches.
pub struct FrameQueue<R> {
    state: Mutex<(Intake<R>, bool)>,
    /// Signalled when something is queued or the queue closes.
    work: Condvar,
    /// Signalled when room appears for a waiting producer.
    room: Condvar,
}

impl<R: Clone> FrameQueue<R> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { state: Mutex::new((Intake::new(), false)), work: Condvar::new(), room: Condvar::new() })
    }

    pub fn attach(&self, camera_id: CameraId, capacity: usize, when_full: WhenFull, route: R) {
        self.state.lock().0.attach(camera_id, capacity, when_full, route);
    }

    pub fn detach(&self, camera_id: &str) {
        self.state.lock().0.detach(camera_id);
        self.room.notify_all();
    }

    /// Queues an item. Never blocks a `DropOldest` camera; a `Wait` camera blocks until there is
    /// room, the camera is detached, or `cancelled` returns true (checked every 100 ms).
    pub fn push(&self, camera_id: &str, mut item: Queued, cancelled: &dyn Fn() -> bool) -> PushOutcome {
        let mut state = self.state.lock();
        loop {
            if state.1 {
                return PushOutcome::Detached;
            }
            match state.0.push(camera_id, item) {
                (PushOutcome::Full, Some(back)) => {
                    if cancelled() {
                        return PushOutcome::Detached;
                    }
                    item = back;
                    self.room.wait_for(&mut state, Duration::from_millis(100));
                }
                (outcome, _) => {
                    self.work.notify_one();
                    return outcome;
                }
            }
        }
    }

    /// Blocks until work arrives, lets the batch fill for up to `max_wait` (or until `max_batch`
    /// frames are queued), then forms it. An empty batch after `idle` without work (so the caller
    /// can report that it is alive); `None` once closed and drained.
    pub fn next_batch(
        &self,
        max_batch: usize,
        max_wait: Duration,
        deadline: Option<Duration>,
        idle: Duration,
    ) -> Option<Batch<R>> {
        let mut state = self.state.lock();
        while !state.0.has_work() {
            if state.1 {
                return None;
            }
            if self.work.wait_for(&mut state, idle).timed_out() && !state.0.has_work() && !state.1 {
                return Some(Batch::default());
            }
        }
        let fill_until = Instant::now() + max_wait;
        let target = max_batch.min(state.0.capacity());
        while state.0.queued_frames() < target && !state.1 {
            if self.work.wait_until(&mut state, fill_until).timed_out() {
                break;
            }
        }
        let expire_before = deadline.and_then(|d| Instant::now().checked_sub(d));
        let batch = state.0.form_batch(max_batch, expire_before);
        self.room.notify_all();
        Some(batch)
    }

    pub fn queued_frames(&self) -> usize {
        self.state.lock().0.queued_frames()
    }

    /// Stops intake; the inference thread drains what is queued and ends.
    pub fn close(&self) {
        self.state.lock().1 = true;
        self.work.notify_all();
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::Letterbox;
    use bytes::Bytes;
    use std::time::SystemTime;

    fn frame(camera: &str, seq: u64) -> Queued {
        frame_at(camera, seq, Instant::now())
    }

    fn frame_at(camera: &str, seq: u64, captured: Instant) -> Queued {
        Queued::Frame(Frame {
            camera_id: camera.into(),
            seq,
            captured_at: SystemTime::now(),
            captured,
            pixels: Bytes::new(),
            letterbox: Letterbox::new(1, 1, 32),
            span: tracing::Span::none(),
        })
    }

    fn seqs(batch: &Batch<()>) -> Vec<(String, u64)> {
        batch.frames.iter().map(|(f, _)| (f.camera_id.to_string(), f.seq)).collect()
    }

    /// Runs a test that blocks on the queue on a thread of its own, and fails it when it has not
    /// returned within seconds: a regression fails instead of blocking for as long as it waits.
    fn within_seconds(test: impl FnOnce() + Send + 'static) {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            test();
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(5)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("still blocked after 5 s"),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the test panicked (see above)"),
        }
    }

    #[test]
    fn a_full_live_queue_drops_its_oldest_frame() {
        let mut intake = Intake::new();
        intake.attach("a".into(), 2, WhenFull::DropOldest, ());
        assert!(matches!(intake.push("a", frame("a", 1)).0, PushOutcome::Queued));
        assert!(matches!(intake.push("a", frame("a", 2)).0, PushOutcome::Queued));
        assert!(matches!(intake.push("a", frame("a", 3)).0, PushOutcome::DroppedOldest));
        assert_eq!(seqs(&intake.form_batch(8, None)), vec![("a".into(), 2), ("a".into(), 3)]);
        assert_eq!(intake.queued_frames(), 0);
    }

    #[test]
    fn a_full_replay_queue_refuses_instead_of_dropping() {
        let mut intake = Intake::new();
        intake.attach("a".into(), 1, WhenFull::Wait, ());
        intake.push("a", frame("a", 1));
        let (outcome, back) = intake.push("a", frame("a", 2));
        assert!(matches!(outcome, PushOutcome::Full));
        assert!(back.is_some());
    }

    #[test]
    fn batches_take_cameras_in_turn() {
        let mut intake = Intake::new();
        for cam in ["a", "b", "c"] {
            intake.attach(cam.into(), 8, WhenFull::DropOldest, ());
        }
        for seq in 0..4 {
            intake.push("a", frame("a", seq));
        }
        intake.push("b", frame("b", 0));
        intake.push("c", frame("c", 0));
        let first = seqs(&intake.form_batch(4, None));
        assert_eq!(first, vec![("a".into(), 0), ("b".into(), 0), ("c".into(), 0), ("a".into(), 1)]);
        // next batch starts from the next camera; a busy camera alone may fill a batch
        let second = seqs(&intake.form_batch(4, None));
        assert_eq!(second, vec![("a".into(), 2), ("a".into(), 3)]);
    }

    #[test]
    fn the_lead_camera_rotates() {
        let mut intake = Intake::new();
        for cam in ["a", "b"] {
            intake.attach(cam.into(), 8, WhenFull::DropOldest, ());
            for seq in 0..2 {
                intake.push(cam, frame(cam, seq));
            }
        }
        assert_eq!(seqs(&intake.form_batch(1, None)), vec![("a".into(), 0)]);
        assert_eq!(seqs(&intake.form_batch(1, None)), vec![("b".into(), 0)]);
        assert_eq!(seqs(&intake.form_batch(1, None)), vec![("a".into(), 1)]);
    }

    #[test]
    fn end_markers_follow_the_last_frame() {
        let mut intake = Intake::new();
        intake.attach("a".into(), 8, WhenFull::Wait, ());
        intake.push("a", frame("a", 0));
        intake.push("a", frame("a", 1));
        intake.push("a", Queued::End);
        let first = intake.form_batch(1, None);
        assert_eq!(seqs(&first), vec![("a".into(), 0)]);
        assert!(first.ended.is_empty());
        let second = intake.form_batch(1, None);
        assert_eq!(seqs(&second), vec![("a".into(), 1)]);
        assert!(second.ended.is_empty());
        let third = intake.form_batch(1, None);
        assert!(third.frames.is_empty());
        assert_eq!(third.ended.len(), 1);
        assert!(!intake.has_work());
    }

    #[test]
    fn expired_frames_are_skipped_and_reported() {
        let mut intake = Intake::new();
        intake.attach("a".into(), 8, WhenFull::DropOldest, ());
        let old = Instant::now();
        let cutoff = old + Duration::from_millis(10);
        intake.push("a", frame_at("a", 0, old));
        intake.push("a", frame_at("a", 1, cutoff + Duration::from_millis(1)));
        let batch = intake.form_batch(4, Some(cutoff));
        assert_eq!(seqs(&batch), vec![("a".into(), 1)]);
        assert_eq!(batch.expired.len(), 1);
        assert_eq!(intake.queued_frames(), 0);
    }

    #[test]
    fn replay_frames_never_expire() {
        let mut intake = Intake::new();
        intake.attach("a".into(), 8, WhenFull::Wait, ());
        let old = Instant::now();
        intake.push("a", frame_at("a", 0, old));
        let batch = intake.form_batch(4, Some(old + Duration::from_secs(1)));
        assert_eq!(seqs(&batch), vec![("a".into(), 0)]);
        assert!(batch.expired.is_empty());
    }

    #[test]
    fn a_batch_stops_waiting_at_what_the_queues_can_hold() {
        within_seconds(|| {
            let queue = FrameQueue::<()>::new();
            queue.attach("a".into(), 2, WhenFull::Wait, ());
            queue.push("a", frame("a", 0), &|| false);
            queue.push("a", frame("a", 1), &|| false);
            // max_batch 8 can never fill from one queue of 2; an hour's max_wait must not be waited.
            let batch = queue.next_batch(8, Duration::from_secs(3600), None, Duration::from_secs(3600)).unwrap();
            assert_eq!(batch.frames.len(), 2);
        });
    }

    #[test]
    fn detaching_forgets_queued_frames() {
        let mut intake = Intake::new();
        intake.attach("a".into(), 8, WhenFull::DropOldest, ());
        intake.attach("b".into(), 8, WhenFull::DropOldest, ());
        intake.push("a", frame("a", 0));
        intake.push("b", frame("b", 0));
        intake.detach("a");
        assert_eq!(intake.queued_frames(), 1);
        assert!(matches!(intake.push("a", frame("a", 1)).0, PushOutcome::Detached));
        assert_eq!(seqs(&intake.form_batch(4, None)), vec![("b".into(), 0)]);
    }

    #[test]
    fn an_idle_queue_answers_with_an_empty_batch_so_its_reader_can_report_progress() {
        within_seconds(|| {
            let queue = FrameQueue::<()>::new();
            queue.attach("a".into(), 2, WhenFull::Wait, ());
            let idle = Duration::from_millis(20);
            let batch = queue.next_batch(4, Duration::from_millis(1), None, idle).expect("not closed");
            assert!(batch.is_empty());
            queue.close();
            assert!(queue.next_batch(4, Duration::from_millis(1), None, idle).is_none());
        });
    }

    #[test]
    fn a_closed_queue_drains_then_ends() {
        within_seconds(|| {
            let queue = FrameQueue::<()>::new();
            queue.attach("a".into(), 8, WhenFull::Wait, ());
            queue.push("a", frame("a", 0), &|| false);
            queue.close();
            // A closed queue waits for nothing: an hour's waits must not be waited.
            let hour = Duration::from_secs(3600);
            let batch = queue.next_batch(4, hour, None, hour).expect("queued work drains");
            assert_eq!(batch.frames.len(), 1);
            assert!(queue.next_batch(4, hour, None, hour).is_none());
        });
    }
}
