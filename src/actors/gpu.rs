//! GpuActor: one per inference device (each CUDA device, or the CPU). It owns the device
//! (`worker::DeviceState`): the cameras' frame queues, the model versions, the memory budget and
//! the batch sizing. Its worker is the device's inference thread, a supervised child
//! (`infer-DEVICE`) that reads that state between batches and never waits on the actor's mailbox.
//! Everything else (topology, the model registry, the API) reaches the device through the
//! actor's messages.

pub mod batch;
pub mod candidate;
pub mod memory;
pub mod registry;
pub mod shadow;
pub mod transitions;
pub mod worker;

use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, MessageResult};
use bytes::Bytes;

use crate::actors::connector::ShardSlot;
use crate::actors::status::CameraStatus;
use crate::detector::Letterbox;
use crate::ids::CameraId;
use crate::overflow::WhenFull;
use crate::supervision::{BreakerView, Reporter, Supervisor};
use batch::{FrameQueue, FrameSink, PushOutcome, Queued};
use worker::{DeviceState, LoadedModel};

/// Where a device sends one camera's results, and whose counters it updates.
#[derive(Clone)]
pub struct CameraRoute {
    /// The camera's shard, through its slot (the instance behind it may be replaced).
    pub connector: Arc<ShardSlot>,
    pub status: Arc<CameraStatus>,
    pub when_full: WhenFull,
}

pub type DeviceQueue = FrameQueue<CameraRoute>;

pub struct GpuActor {
    device: Arc<DeviceState>,
    supervisor: Supervisor,
    /// How long the inference thread may go without a heartbeat before it counts as frozen.
    heartbeat_timeout: std::time::Duration,
}

impl GpuActor {
    pub fn new(device: Arc<DeviceState>, supervisor: Supervisor, heartbeat_timeout: std::time::Duration) -> Self {
        Self { device, supervisor, heartbeat_timeout }
    }

    /// The device's child in the pipeline supervisor.
    pub fn child_name(device: &str) -> String {
        format!("infer-{device}")
    }
}

impl Actor for GpuActor {
    type Context = Context<Self>;

    /// Starts the inference thread as a supervised child: the supervisor's factory starts every
    /// later instance (with the model reloaded) on its own thread, never on this actor's.
    fn started(&mut self, _ctx: &mut Self::Context) {
        let device = self.device.clone();
        let factory = move |_, reporter: Reporter| device.start_thread(reporter);
        let reporter = self.supervisor.add(&Self::child_name(&self.device.name), Some(self.heartbeat_timeout), factory);
        if let Err(error) = self.device.start_thread(reporter.clone()) {
            reporter.failed(error);
        }
        tracing::info!(device = %self.device.name, "device ready");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::info!(device = %self.device.name, "device stopping; inference thread drains its queue");
        self.device.queue.close();
    }
}

/// Attaches a camera: frames pushed through the returned intake are batched on this device.
#[derive(Message)]
#[rtype(result = "DeviceIntake")]
pub struct AttachCamera {
    pub camera_id: CameraId,
    pub capacity: usize,
    pub route: CameraRoute,
}

impl Handler<AttachCamera> for GpuActor {
    type Result = MessageResult<AttachCamera>;

    fn handle(&mut self, msg: AttachCamera, _ctx: &mut Self::Context) -> Self::Result {
        let when_full = msg.route.when_full;
        let queue = &self.device.queue;
        queue.attach(msg.camera_id.clone(), msg.capacity, when_full, msg.route);
        MessageResult(DeviceIntake { queue: queue.clone(), camera_id: msg.camera_id })
    }
}

/// Detaches a camera; frames it still has queued are discarded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DetachCamera(pub CameraId);

impl Handler<DetachCamera> for GpuActor {
    type Result = ();

    fn handle(&mut self, msg: DetachCamera, _ctx: &mut Self::Context) {
        self.device.queue.detach(&msg.0);
    }
}

/// A camera's handle on its device queue; what the decode thread pushes into.
pub struct DeviceIntake {
    queue: Arc<DeviceQueue>,
    camera_id: CameraId,
}

impl FrameSink for DeviceIntake {
    fn push(&self, item: Queued, cancelled: &dyn Fn() -> bool) -> PushOutcome {
        self.queue.push(&self.camera_id, item, cancelled)
    }
}

/// A device as `/health/ready`, `/api/v1/system` and `/api/v1/models` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceView {
    pub name: String,
    /// An inference thread runs.
    pub alive: bool,
    /// The largest batch it runs now (halved by out-of-memory errors, grown back later).
    pub batch_limit: usize,
    pub model_version: u32,
    pub model_breaker: BreakerView,
}

#[derive(Message)]
#[rtype(result = "DeviceView")]
pub struct GetDeviceView;

impl Handler<GetDeviceView> for GpuActor {
    type Result = MessageResult<GetDeviceView>;

    fn handle(&mut self, _msg: GetDeviceView, _ctx: &mut Self::Context) -> Self::Result {
        let d = &self.device;
        MessageResult(DeviceView {
            name: d.name.clone(),
            alive: d.is_running(),
            batch_limit: d.batch_limit(),
            model_version: d.model_version(),
            model_breaker: d.breaker.view(),
        })
    }
}

/// What a model reload is validated against: the device, and a recent real frame of it.
pub struct ValidationTarget {
    pub name: String,
    pub device: tch::Device,
    /// The device's CPU threads, which an ONNX Runtime session takes at load.
    pub cpu_threads: usize,
    pub sample: Option<(Bytes, Letterbox)>,
}

#[derive(Message)]
#[rtype(result = "ValidationTarget")]
pub struct GetValidationTarget;

impl Handler<GetValidationTarget> for GpuActor {
    type Result = MessageResult<GetValidationTarget>;

    fn handle(&mut self, _msg: GetValidationTarget, _ctx: &mut Self::Context) -> Self::Result {
        let d = &self.device;
        let (name, device, cpu_threads) = (d.name.clone(), d.device, d.cpu_threads());
        MessageResult(ValidationTarget { name, device, cpu_threads, sample: d.sample_frame() })
    }
}

/// Makes a validated model the one serving, between two batches; the one it replaces is kept
/// for a rollback.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InstallModel(pub LoadedModel);

impl Handler<InstallModel> for GpuActor {
    type Result = ();

    fn handle(&mut self, msg: InstallModel, _ctx: &mut Self::Context) {
        self.device.install(msg.0);
    }
}

/// Sets the candidate's arrangement on the device (`candidate`): a canary serving some cameras and
/// a shadow lane; `None`s end them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetCandidate {
    pub canary: Option<worker::Canary>,
    pub lane: Option<Arc<shadow::ShadowLane>>,
}

impl Handler<SetCandidate> for GpuActor {
    type Result = ();

    fn handle(&mut self, msg: SetCandidate, _ctx: &mut Self::Context) {
        self.device.set_candidate(msg.canary, msg.lane);
    }
}

/// Stops the device for shutdown: its queues close, its threads end after their batch. The
/// answer waits for them (off any actor thread: it blocks).
#[derive(Message)]
#[rtype(result = "DeviceStopped")]
pub struct StopDevice;

pub struct DeviceStopped(Arc<DeviceState>);

impl DeviceStopped {
    /// Blocks until the device's threads ended, at most `deadline`; whether they did.
    pub fn wait(&self, deadline: std::time::Duration) -> bool {
        self.0.close_and_wait(deadline)
    }
}

impl Handler<StopDevice> for GpuActor {
    type Result = MessageResult<StopDevice>;

    fn handle(&mut self, _msg: StopDevice, _ctx: &mut Self::Context) -> Self::Result {
        self.device.queue.close();
        MessageResult(DeviceStopped(self.device.clone()))
    }
}
