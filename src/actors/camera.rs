//! CameraActor: one per camera, on the cameras' own arbiter. Owns the camera's stream: its decode
//! thread (`source`) is a supervised child (`decode-ID`) of the camera supervisor, which restarts
//! it after a panic and, when it crash-loops, marks the camera failed instead of stopping the
//! process. The actor hands frames to its device without ever blocking a handler.

pub mod source;

use actix::{Actor, ActorContext, Context, Handler, Message};

use crate::actors::status::StreamState;
use crate::supervision::{StopHandle, Supervisor};
use source::Source;

/// The prefix of a decode thread's child name.
const DECODE_CHILD: &str = "decode-";

pub struct CameraActor {
    source: Source,
    supervisor: Supervisor,
    /// Dropped when the actor stops: the decode thread ends at once, whichever generation runs.
    stop: Option<StopHandle>,
}

impl CameraActor {
    /// `stop` must be the handle of the signal `source` was built with.
    pub fn new(source: Source, stop: StopHandle, supervisor: Supervisor) -> Self {
        Self { source, supervisor, stop: Some(stop) }
    }

    /// The camera's child in the camera supervisor.
    pub fn child_name(camera_id: &str) -> String {
        format!("{DECODE_CHILD}{camera_id}")
    }

    /// The camera whose decode thread `child` is (the inverse of `child_name`).
    pub fn camera_of(child: &str) -> Option<&str> {
        child.strip_prefix(DECODE_CHILD)
    }
}

impl Actor for CameraActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let source = self.source.clone();
        let name = Self::child_name(self.source.camera_id());
        let reporter = self.supervisor.add(&name, None, move |_, reporter| source.start(reporter));
        if let Err(error) = self.source.start(reporter) {
            self.source.status().set_state(StreamState::Failed, Some(error));
            ctx.stop();
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Dropping the handle stops the decode thread within one read or push; joining here
        // would block the arbiter.
        drop(self.stop.take());
        self.source.status().set_state(StreamState::Stopped, None);
        self.supervisor.remove(&Self::child_name(self.source.camera_id()));
    }
}

/// Stops the camera: its decode thread ends and nothing more is sent to its device.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopCamera;

impl Handler<StopCamera> for CameraActor {
    type Result = ();

    fn handle(&mut self, _msg: StopCamera, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
