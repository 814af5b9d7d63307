//! GpuActor: one per inference device (each CUDA device, or the CPU). A thin actor in front of a
//! dedicated inference thread that owns the model; cameras attach to it and get a queue.

pub mod batch;
pub mod memory;
pub mod registry;
pub mod transitions;
pub mod worker;

use std::sync::Arc;

use actix::{Actor, Context, Handler, Message};

use crate::actors::connector::ShardSlot;
use crate::actors::status::CameraStatus;
use crate::ids::CameraId;
use crate::overflow::WhenFull;
use batch::{FrameQueue, FrameSink, PushOutcome, Queued};

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
    name: String,
    queue: Arc<DeviceQueue>,
}

impl GpuActor {
    pub fn new(name: String, queue: Arc<DeviceQueue>) -> Self {
        Self { name, queue }
    }
}

impl Actor for GpuActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::info!(device = %self.name, "device stopping; inference thread drains its queue");
        self.queue.close();
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
    type Result = actix::MessageResult<AttachCamera>;

    fn handle(&mut self, msg: AttachCamera, _ctx: &mut Self::Context) -> Self::Result {
        let when_full = msg.route.when_full;
        self.queue.attach(msg.camera_id.clone(), msg.capacity, when_full, msg.route);
        actix::MessageResult(DeviceIntake { queue: self.queue.clone(), camera_id: msg.camera_id })
    }
}

/// Detaches a camera; frames it still has queued are discarded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DetachCamera(pub CameraId);

impl Handler<DetachCamera> for GpuActor {
    type Result = ();

    fn handle(&mut self, msg: DetachCamera, _ctx: &mut Self::Context) {
        self.queue.detach(&msg.0);
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
