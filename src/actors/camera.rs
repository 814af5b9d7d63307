//! CameraActor: one per camera. Owns the camera's stream (a decode thread, see `source`) and its
//! live status; hands frames to its device without ever blocking a handler.

pub mod source;

use std::sync::Arc;

use actix::{Actor, ActorContext, Context, Handler, Message};

use crate::actors::status::{CameraStatus, StreamState};

use crate::actors::gpu::batch::FrameSink;
use crate::metrics::Metrics;
use source::{SourceConfig, SourceHandle};

pub struct CameraActor {
    config: SourceConfig,
    status: Arc<CameraStatus>,
    sink: Option<Box<dyn FrameSink>>,
    metrics: Arc<Metrics>,
    source: Option<SourceHandle>,
}

impl CameraActor {
    pub fn new(
        config: SourceConfig,
        status: Arc<CameraStatus>,
        sink: Box<dyn FrameSink>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { config, status, sink: Some(sink), metrics, source: None }
    }
}

impl Actor for CameraActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        if let Some(sink) = self.sink.take() {
            self.source = Some(source::spawn(self.config.clone(), self.status.clone(), sink, self.metrics.clone()));
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // The decode thread notices within one read or push; joining here would block the arbiter.
        if let Some(source) = self.source.take() {
            source.stop();
        }
        self.status.set_state(StreamState::Stopped, None);
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
