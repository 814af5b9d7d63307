//! A camera's decode thread as a supervised child, in-process: a real clip through FFmpeg, a
//! CameraActor on an arbiter, the real supervisor, and a sink that records what the device would
//! get (no model, no service).

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use parking_lot::Mutex;

use its_analytics::actors::camera::source::{Source, SourceConfig};
use its_analytics::actors::camera::CameraActor;
use its_analytics::actors::gpu::batch::{FrameSink, PushOutcome, Queued};
use its_analytics::actors::status::{CameraStatus, StreamState};
use its_analytics::metrics::Metrics;
use its_analytics::supervision::{stop_signal, BreakerConfig, ChildView, RestartPolicy, Supervisor, SystemClock};

const PATIENCE: Duration = Duration::from_secs(60);

/// What a device would have been handed: frame numbers, then the end of the stream.
struct Recorder {
    seqs: Mutex<Vec<u64>>,
    ended: mpsc::SyncSender<()>,
}

impl FrameSink for Recorder {
    fn push(&self, item: Queued, _cancelled: &dyn Fn() -> bool) -> PushOutcome {
        match item {
            Queued::Frame(frame) => self.seqs.lock().push(frame.seq),
            Queued::End => {
                let _ = self.ended.try_send(());
            }
        }
        PushOutcome::Queued
    }
}

fn policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        healthy_after: Duration::from_secs(60),
        max_restarts,
        within: Duration::from_secs(60),
        jitter: 0.0,
    }
}

struct Camera {
    recorder: Arc<Recorder>,
    ended: mpsc::Receiver<()>,
    status: Arc<CameraStatus>,
    supervisor: Supervisor,
    escalations: mpsc::Receiver<(String, String)>,
    actor: actix::Addr<CameraActor>,
}

/// Starts camera `cam` on the highway clip (750 frames, every one kept, as fast as it decodes)
/// with the decode fault `panic_at_frame` / `panic_repeats`.
fn start(panic_at_frame: u64, panic_repeats: bool, max_restarts: u32) -> Camera {
    let metrics = Arc::new(Metrics::new());
    let (escalated, escalations) = mpsc::channel();
    let supervisor = Supervisor::spawn(
        "cameras",
        policy(max_restarts),
        Box::new(move |child: &str, error: &str| {
            let _ = escalated.send((child.to_string(), error.to_string()));
        }),
        Box::new(|_: &ChildView| {}),
        || {},
    );
    let (ended_tx, ended) = mpsc::sync_channel(8);
    let recorder = Arc::new(Recorder { seqs: Mutex::new(Vec::new()), ended: ended_tx });
    let breaker = BreakerConfig { failure_threshold: 5, open_for: Duration::from_secs(10), half_open_successes: 1 };
    let status = Arc::new(CameraStatus::new("cam".into(), 0, 1, &metrics, &breaker));
    let url = common::clip("highway_video02.avi").display().to_string();
    let config = SourceConfig {
        is_file: true,
        realtime: false,
        panic_at_frame,
        panic_repeats,
        ..SourceConfig::live("cam", &url, 25.0, 64)
    };
    let (stop, signal) = stop_signal();
    let source = Source::new(config, status.clone(), recorder.clone(), metrics, Arc::new(SystemClock), signal);
    let arbiter_supervisor = supervisor.clone();
    let actor = CameraActor::start_in_arbiter(&actix::Arbiter::new().handle(), move |_| {
        CameraActor::new(source, stop, arbiter_supervisor)
    });
    Camera { recorder, ended, status, supervisor, escalations, actor }
}

impl Camera {
    fn decode_child(&self) -> Option<ChildView> {
        self.supervisor.children().into_iter().find(|c| c.name == "decode-cam")
    }
}

#[actix::test]
async fn a_panicking_decode_thread_is_restarted_and_continues_the_stream() {
    let camera = start(20, false, 5);
    let ended = tokio::task::spawn_blocking(move || {
        let result = camera.ended.recv_timeout(PATIENCE);
        (camera, result)
    });
    let (camera, result) = ended.await.unwrap();
    assert!(result.is_ok(), "the stream never ended");
    let child = camera.decode_child().expect("the decode thread is supervised");
    assert_eq!((child.generation.0, child.restarts), (1, 1), "{child:?}");
    assert!(child.last_error.as_deref().unwrap_or_default().contains("injected fault"), "{child:?}");
    let seqs = camera.recorder.seqs.lock().clone();
    assert_eq!(&seqs[..20], (0..20).collect::<Vec<_>>(), "frames before the panic");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "frame numbers continue across the restart, none twice");
    // The new thread reopens the file: its frames (about 750) follow the 20 handed on before.
    assert!(seqs.len() > 20 + 700, "{} frames", seqs.len());
    assert_ne!(camera.status.state(), StreamState::Failed);
    assert!(camera.escalations.try_recv().is_err(), "one panic is no crash loop");
}

#[actix::test]
async fn a_crash_looping_decode_thread_escalates_and_stopping_its_camera_removes_the_child() {
    let camera = start(5, true, 2);
    let escalated = tokio::task::spawn_blocking(move || {
        let result = camera.escalations.recv_timeout(PATIENCE);
        (camera, result)
    });
    let (camera, result) = escalated.await.unwrap();
    let (child, error) = result.expect("the crash loop was escalated");
    assert_eq!(child, "decode-cam");
    assert!(error.contains("injected fault: decode panic at frame 5"), "{error}");
    let view = camera.decode_child().expect("still supervised until its camera stops");
    assert_eq!(view.restarts, 2, "{view:?}");
    assert_eq!(camera.recorder.seqs.lock().len(), 5, "frames 0..5, then nothing");

    camera.actor.send(its_analytics::actors::camera::StopCamera).await.expect("the camera actor runs");
    common::eventually("the child removed", Duration::from_secs(10), || async {
        camera.decode_child().is_none().then_some(())
    })
    .await;
    assert_eq!(camera.status.state(), StreamState::Stopped);
}
