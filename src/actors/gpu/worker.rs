//! The inference thread of one device: takes batches from the device queue, runs the model,
//! and sends each frame's detections to its camera's connector shard in capture order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::SendError;

use super::batch::WhenFull;
use super::{CameraRoute, DeviceQueue};
use crate::actors::messages::{FrameDetections, ToConnector};
use crate::detector::{model::device_name, Detector};
use crate::metrics::{DeviceLabels, Metrics};
use crate::settings::Settings;

pub struct WorkerConfig {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub frame_deadline: Option<Duration>,
    pub cpu_threads: usize,
}

impl WorkerConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            max_batch: settings.batching.max_batch,
            max_wait: settings.batching.max_wait(),
            frame_deadline: settings.batching.frame_deadline(),
            cpu_threads: settings.device.cpu_threads,
        }
    }
}

/// Loads the model on `device` inside a new inference thread and runs it until the queue closes.
/// Returns once the model is loaded and validated, or with the reason it could not be. `alive`
/// turns false when the thread ends (readiness reports it).
pub fn spawn(
    settings: &Settings,
    device: tch::Device,
    queue: Arc<DeviceQueue>,
    metrics: Arc<Metrics>,
    alive: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let model = settings.model.clone();
    let config = WorkerConfig::from_settings(settings);
    let name = device_name(device);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name(format!("infer-{name}"))
        .spawn(move || {
            let _alive = AliveGuard(alive);
            set_up_thread(device, config.cpu_threads);
            let detector = match Detector::load(&model, device) {
                Ok(d) => {
                    let _ = ready_tx.send(Ok(()));
                    d
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            Worker { detector, queue, metrics, labels: DeviceLabels { device: name }, config }.run();
        })
        .map_err(|e| format!("cannot start inference thread: {e}"))?;
    ready_rx.recv().map_err(|_| "inference thread died while loading the model".to_string())??;
    Ok(handle)
}

/// Marks the device dead when the inference thread ends, however it ends.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
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

struct Worker {
    detector: Detector,
    queue: Arc<DeviceQueue>,
    metrics: Arc<Metrics>,
    labels: DeviceLabels,
    config: WorkerConfig,
}

impl Worker {
    fn run(self) {
        while let Some(batch) = self.queue.next_batch(self.config.max_batch, self.config.max_wait, self.config.frame_deadline) {
            for (_, route) in &batch.expired {
                route.status.dropped.inc();
            }
            if !batch.frames.is_empty() {
                self.infer(batch.frames);
            }
            for (camera_id, route) in batch.ended {
                deliver(&route, ToConnector::StreamEnded(camera_id), true);
            }
            self.metrics.queue_depth.get_or_create(&self.labels).set(self.queue.queued_frames() as i64);
        }
        tracing::info!(device = %self.labels.device, "inference thread ended");
    }

    fn infer(&self, frames: Vec<(crate::actors::messages::Frame, CameraRoute)>) {
        let inputs: Vec<_> = frames.iter().map(|(f, _)| (f.pixels.as_ref(), f.letterbox)).collect();
        // Per traced frame: `batch` (this batch, until its results are handed on) and, inside it,
        // `inference` (the model call the frame shared with the rest of the batch).
        let device = self.labels.device.as_str();
        let batch_spans: Vec<_> = frames
            .iter()
            .map(|(f, _)| crate::child_span!(&f.span, "batch", device, batch_size = frames.len()))
            .collect();
        let inference_spans: Vec<_> = batch_spans.iter().map(|b| crate::child_span!(b, "inference", device)).collect();
        let started = Instant::now();
        // libtorch errors surface as panics in some tch calls (device out of memory, say): one
        // failed batch is dropped and counted, the device keeps serving.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.detector.detect(&inputs)))
            .unwrap_or_else(|_| Err(crate::detector::DetectorError::Inference("inference panicked".into())));
        drop(inference_spans);
        self.metrics.stages.inference.record(started.elapsed());
        self.metrics.inference_latency.get_or_create(&self.labels).observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.get_or_create(&self.labels).observe(frames.len() as f64);
        match result {
            Ok(per_frame) => {
                for ((frame, route), detections) in frames.into_iter().zip(per_frame) {
                    let message = ToConnector::Detections(FrameDetections {
                        camera_id: frame.camera_id,
                        seq: frame.seq,
                        captured_at: frame.captured_at,
                        captured: frame.captured,
                        detections,
                        span: frame.span,
                    });
                    deliver(&route, message, false);
                }
                drop(batch_spans);
            }
            Err(error) => {
                tracing::error!(device = %self.labels.device, %error, frames = frames.len(), "inference failed; frames dropped");
                for (_, route) in &frames {
                    route.status.dropped.inc();
                }
            }
        }
    }
}

/// Sends to a connector without blocking it: a replay (or an end marker, which must arrive)
/// waits for mailbox room on this thread; a live camera's result is dropped and counted instead.
fn deliver(route: &CameraRoute, mut message: ToConnector, must_arrive: bool) {
    loop {
        match route.connector.try_send(message) {
            Ok(()) => return,
            Err(SendError::Full(back)) if must_arrive || route.when_full == WhenFull::Wait => {
                message = back;
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
