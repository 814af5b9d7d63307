//! The inference threads' concurrency, in-process: a scripted model (no file, no libtorch call),
//! the real supervisor, and a real connector shard with an in-memory sink. Every frame carries
//! its sequence number in its pixels, so the script sees which frames each model call got.

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::actors::connector::{start_shard, AddCamera, Registration, ShardConfig, HANDOVER_WAIT};
use crate::actors::gpu::batch::{PushOutcome, Queued};
use crate::actors::status::CameraStatus;
use crate::detector::config::{ModelFamily, ModelSettings};
use crate::sinks::MemorySink;
use crate::supervision::{BreakerConfig, ChildState, ChildView, RestartPolicy, Supervisor};

const CAMERA: &str = "cam";
/// Long enough for any test here; a regression fails at this bound instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the scripted model does on a call, given the call number (from 1) and the frames' seqs.
type Behaviour = dyn Fn(usize, &[u8]) -> Result<(), DetectorError> + Send + Sync;

/// The model: records every call's frames, then does what the script says.
struct Scripted {
    calls: Arc<Mutex<Vec<Vec<u8>>>>,
    behaviour: Arc<Behaviour>,
}

impl Model for Scripted {
    fn detect(&self, frames: &[(&[u8], Letterbox)]) -> Result<Vec<Vec<Detection>>, DetectorError> {
        let seqs: Vec<u8> = frames.iter().map(|(pixels, _)| pixels[0]).collect();
        let call = {
            let mut calls = self.calls.lock();
            calls.push(seqs.clone());
            calls.len()
        };
        (self.behaviour)(call, &seqs)?;
        Ok(vec![Vec::new(); frames.len()])
    }
}

struct Harness {
    state: Arc<DeviceState>,
    status: Arc<CameraStatus>,
    calls: Arc<Mutex<Vec<Vec<u8>>>>,
    loads: Arc<AtomicUsize>,
    supervisor: Supervisor,
    heartbeat_timeout: Option<Duration>,
}

fn policy() -> RestartPolicy {
    RestartPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        healthy_after: Duration::from_secs(60),
        max_restarts: 10,
        within: Duration::from_secs(60),
        jitter: 0.0,
    }
}

/// A device with the scripted model and camera `CAMERA` attached (replay: every frame waits for
/// room, nothing is dropped for space); its inference thread starts with `start`, so that frames
/// queued before make the batches known in advance.
async fn harness(max_batch: usize, heartbeat_timeout: Option<Duration>, behaviour: Arc<Behaviour>) -> Harness {
    let metrics = Arc::new(Metrics::new());
    let sink = Arc::new(MemorySink::default());
    let supervisor =
        Supervisor::spawn("test", policy(), Box::new(|_: &str, _: &str| {}), Box::new(|_: &ChildView| {}), || {});
    let (calls, loads) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicUsize::new(0)));
    let loader: ModelLoader = {
        let (calls, loads) = (calls.clone(), loads.clone());
        Arc::new(move |_: &ModelSettings, _: tch::Device| {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(Scripted { calls: calls.clone(), behaviour: behaviour.clone() }) as Box<dyn Model>)
        })
    };
    let breaker = BreakerConfig { failure_threshold: 5, open_for: Duration::from_secs(10), half_open_successes: 1 };
    let state = DeviceState::load(DeviceParts {
        device: tch::Device::Cpu,
        name: "cpu".into(),
        config: WorkerConfig {
            max_batch,
            max_wait: Duration::from_millis(1),
            frame_deadline: None,
            cpu_threads: 1,
            cpu_memory_budget: None,
            frame_bytes: 1,
            grow_after: 1000,
            rollback_failure_rate: 1.0,
            rollback_window: 8,
        },
        model: ModelSettings {
            path: "scripted.pt".into(),
            family: ModelFamily::Yolox,
            input_size: 8,
            overview: false,
            score_threshold: 0.3,
            nms_iou: 0.5,
            onnxruntime_library: Default::default(),
            rollback_failure_rate: 1.0,
            rollback_window: 8,
            drift: Default::default(),
            lifecycle: crate::settings::Settings::load(None).expect("the default settings load").model.lifecycle,
        },
        version: 1,
        loader,
        metrics: metrics.clone(),
        breaker: metrics.breaker("model:scripted:cpu", &breaker),
        transitions: ModelTransitions::new("scripted".into(), metrics.clone(), sink.clone(), None),
        faults: Arc::new(FaultInjector::default()),
    })
    .expect("the scripted model loads");
    let status = Arc::new(CameraStatus::new(CAMERA.into(), 0, 1, &metrics, &breaker));
    let shard = ShardConfig {
        shard: 0,
        model: "scripted".into(),
        drift: None,
        mailbox: 64,
        tracker: Default::default(),
        analytics: Default::default(),
        sink,
        metrics,
        panic_at_frame: 0,
        panic_fired: Arc::default(),
        handover_wait: HANDOVER_WAIT,
        live: Arc::default(),
    };
    let shard_reporter = supervisor.add("shard-0", None, |_, _| Ok(()));
    let connector = start_shard(shard, shard_reporter);
    let registration = Registration { status: status.clone(), geometry: Default::default(), geometry_version: 1 };
    connector.addr().send(AddCamera(registration)).await.expect("the shard runs");
    let route = CameraRoute { connector, status: status.clone(), when_full: WhenFull::Wait };
    state.queue.attach(CAMERA.into(), 64, WhenFull::Wait, route);
    Harness { state, status, calls, loads, supervisor, heartbeat_timeout }
}

impl Harness {
    /// Starts the inference thread as a supervised child, as the device's actor does.
    fn start(&self) {
        let state = self.state.clone();
        let factory = move |_, reporter: Reporter| state.start_thread(reporter);
        let reporter = self.supervisor.add("infer-cpu", self.heartbeat_timeout, factory);
        self.state.start_thread(reporter).expect("the first thread starts");
    }

    /// Queues frames `seqs` of the camera, then the end of its stream.
    fn play(&self, seqs: std::ops::Range<u8>) {
        let letterbox = Letterbox::new(8, 8, 8);
        for seq in seqs {
            let frame = Frame {
                camera_id: CAMERA.into(),
                seq: seq.into(),
                captured_at: std::time::SystemTime::now(),
                captured: Instant::now(),
                pixels: Bytes::from(vec![seq; letterbox.input_len()]),
                letterbox,
                span: tracing::Span::none(),
            };
            assert!(matches!(self.state.queue.push(CAMERA, Queued::Frame(frame), &|| false), PushOutcome::Queued));
        }
        assert!(matches!(self.state.queue.push(CAMERA, Queued::End, &|| false), PushOutcome::Queued));
    }

    /// Waits until the connector has seen the end of the stream (behind every frame delivered).
    async fn finished(&self) {
        let finished = tokio::time::timeout(PATIENCE, self.status.wait_finished()).await;
        assert!(finished.is_ok(), "the stream never ended at the connector; calls: {:?}", self.calls.lock());
    }

    fn calls(&self) -> Vec<Vec<u8>> {
        self.calls.lock().clone()
    }

    /// The inference thread's child as the supervisor shows it. The supervisor publishes its
    /// children from its own thread, which may not have taken the `add` yet when a short test
    /// already ended (seen under load in CI): wait for it to list the child, within PATIENCE.
    fn child(&self) -> ChildView {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(child) = self.supervisor.children().into_iter().find(|c| c.name == "infer-cpu") {
                return child;
            }
            assert!(Instant::now() < deadline, "infer-cpu is never supervised");
            std::thread::yield_now();
        }
    }
}

#[actix::test]
async fn a_panicking_call_leaves_its_batch_to_the_next_thread_which_reloads_the_model_and_runs_it_first() {
    // Call 2 (frames 4..8) panics once.
    let h = harness(4, None, Arc::new(|call, _| if call == 2 { panic!("scripted panic") } else { Ok(()) })).await;
    h.play(0..12);
    h.start();
    h.finished().await;
    assert_eq!(h.status.processed.get(), 12, "every frame analysed once");
    assert_eq!(h.status.dropped.get(), 0);
    let calls = h.calls();
    assert_eq!(calls[1], vec![4, 5, 6, 7], "the batch that panicked");
    assert_eq!(calls[2], vec![4, 5, 6, 7], "retried first, before anything newer");
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(calls[3], vec![8, 9, 10, 11]);
    assert_eq!(h.loads.load(Ordering::SeqCst), 2, "the next thread reloaded the model");
    let child = h.child();
    assert_eq!((child.generation.0, child.restarts, child.state), (1, 1, ChildState::Running));
}

#[actix::test]
async fn a_batch_that_fails_again_is_dropped_and_counted_and_the_stream_still_ends() {
    // Whatever holds frame 5 panics, every time.
    let h =
        harness(4, None, Arc::new(|_, seqs| if seqs.contains(&5) { panic!("poisonous frame") } else { Ok(()) })).await;
    h.play(0..12);
    h.start();
    h.finished().await;
    assert_eq!(h.status.dropped.get(), 4, "the twice-failed batch of four");
    assert_eq!(h.status.processed.get(), 8, "the others analysed");
    let with_five = h.calls().iter().filter(|c| c.contains(&5)).count();
    assert_eq!(with_five, 2, "tried, retried once, then dropped: no crash loop");
    assert_eq!(h.child().generation.0, 2, "the retry's failure ended that thread too");
}

#[actix::test]
async fn out_of_memory_halves_the_batch_and_retries_the_same_frames_without_a_restart() {
    // Batches of more than two frames do not fit.
    let h = harness(
        8,
        None,
        Arc::new(|_, seqs| if seqs.len() > 2 { Err(DetectorError::OutOfMemory("scripted".into())) } else { Ok(()) }),
    )
    .await;
    h.play(0..8);
    h.start();
    h.finished().await;
    assert_eq!((h.status.processed.get(), h.status.dropped.get()), (8, 0));
    assert_eq!(h.state.batch_limit(), 2, "the limit learnt");
    assert_eq!(h.child().generation.0, 0, "no restart");
    let served: Vec<u8> = h.calls().into_iter().filter(|c| c.len() <= 2).flatten().collect();
    assert_eq!(served, (0..8).collect::<Vec<_>>(), "the same frames, in order, once each");
}

#[actix::test]
async fn a_frozen_thread_is_replaced_and_when_it_returns_it_delivers_nothing() {
    // The first call hangs until the test lets it go.
    let (release, hold) = mpsc::channel::<()>();
    let hold = Arc::new(Mutex::new(hold));
    let h = harness(
        4,
        Some(Duration::from_millis(300)),
        Arc::new(move |call, _| {
            if call == 1 {
                let _ = hold.lock().recv_timeout(PATIENCE);
            }
            Ok(())
        }),
    )
    .await;
    h.play(0..8);
    h.start();
    // Frames 4..8 and the end marker need the replacement: the stuck thread holds 0..4.
    h.finished().await;
    let child = h.child();
    assert!(child.generation.0 >= 1, "the frozen thread was replaced: {child:?}");
    assert_eq!(h.status.processed.get(), 4, "the replacement served the rest");
    release.send(()).expect("the stuck call still waits");
    // The stuck thread comes back, sees it was replaced, and counts its batch as dropped.
    let state = h.state.clone();
    let all_ended = tokio::task::spawn_blocking(move || state.close_and_wait(PATIENCE)).await;
    assert!(matches!(all_ended, Ok(true)), "the stuck thread never ended");
    assert_eq!(h.status.dropped.get(), 4, "the stale batch is discarded, not delivered");
    assert_eq!(h.status.processed.get(), 4, "nothing delivered late");
}

#[actix::test]
async fn closing_a_device_waits_for_its_threads_and_no_new_one_starts() {
    let h = harness(4, None, Arc::new(|_, _| Ok(()))).await;
    h.start();
    let state = h.state.clone();
    let ended = tokio::task::spawn_blocking(move || state.close_and_wait(PATIENCE)).await;
    assert!(matches!(ended, Ok(true)), "the idle thread did not end when its queue closed");
    let reporter = h.supervisor.add("late", None, |_, _| Ok(()));
    assert!(h.state.start_thread(reporter).is_err(), "a closed device starts no thread");
}

#[actix::test]
async fn a_canary_serves_its_cameras_a_failed_canary_call_is_served_again_and_the_lane_takes_its_share() {
    let h = harness(4, None, Arc::new(|_, _| Ok(()))).await;
    // The canary's second call (frames 4..8) fails: the serving model analyses those frames.
    let canary_calls = Arc::new(Mutex::new(Vec::new()));
    let canary = Scripted {
        calls: canary_calls.clone(),
        behaviour: Arc::new(
            |call, _| if call == 2 { Err(DetectorError::Inference("scripted".into())) } else { Ok(()) },
        ),
    };
    let lane_calls = Arc::new(Mutex::new(Vec::new()));
    let reference = Scripted { calls: lane_calls.clone(), behaviour: Arc::new(|_, _| Ok(())) };
    let cameras = CameraSelection { cameras: Some([CAMERA.to_string()].into()), share: 1.0 };
    let comparison = Arc::new(Comparison::default());
    let settings = h.state.models.lock().current.settings.clone();
    let lane = ShadowLane::start(
        super::super::shadow::LanePlan {
            role: super::super::shadow::LaneRole::Reference,
            delivered_by: 2,
            cameras: cameras.clone(),
            share: 0.5,
            queue: 64,
            max_batch: 4,
            comparison: comparison.clone(),
            counters: super::super::shadow::CounterStart { tracker: Default::default(), lines: Arc::new(|_| None) },
        },
        Box::new(reference),
        "cpu",
    )
    .unwrap();
    let canary = Canary {
        model: LoadedModel { version: 2, settings, detector: Box::new(canary) },
        cameras,
        comparison: comparison.clone(),
    };
    h.state.set_candidate(Some(canary), Some(lane));
    h.play(0..12);
    h.start();
    h.finished().await;
    assert_eq!((h.status.processed.get(), h.status.dropped.get()), (12, 0), "every frame analysed once");
    assert_eq!(*canary_calls.lock(), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9, 10, 11]]);
    assert_eq!(h.calls(), vec![vec![4, 5, 6, 7]], "the serving model took the failed canary call's frames");
    // The lane is offered the eight frames the canary delivered and compares every second one.
    let deadline = Instant::now() + PATIENCE;
    while comparison.view().frames < 4 {
        assert!(Instant::now() < deadline, "the lane compared {} frames", comparison.view().frames);
        std::thread::yield_now();
    }
    let view = comparison.view();
    assert_eq!((view.frames, view.dropped, view.canary_batches, view.canary_failures), (4, 0, 3, 1));
    let compared: Vec<u8> = lane_calls.lock().iter().flatten().copied().collect();
    assert!(compared.iter().all(|seq| !(4..8).contains(seq)), "frames the serving model delivered: {compared:?}");
    h.state.set_candidate(None, None);
}
