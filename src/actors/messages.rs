//! The typed messages that flow between actors: frames to a device, detections to a connector.
//! Events, which leave the actors for the sinks, are `crate::events`.

use std::time::{Instant, SystemTime};

use actix::Message;
use bytes::Bytes;

use crate::detector::Letterbox;
pub use crate::ids::CameraId;
use crate::objects::Detection;

/// One sampled frame, already in the model's input layout.
#[derive(Debug, Clone)]
pub struct Frame {
    pub camera_id: CameraId,
    /// Sampled-frame number since the camera actor started; continues across reconnects.
    pub seq: u64,
    /// The frame's time on the camera clock, which every analytics measure uses: capture time
    /// for live streams; for files the open time plus the frame's media time.
    pub captured_at: SystemTime,
    /// Monotonic capture time, for latency measurements.
    pub captured: Instant,
    /// Interleaved (HWC) BGR bytes of `letterbox.input_len()`: the letterboxed frame at the top
    /// left of the model input, padded with `PAD_VALUE`, then the overview's input if any;
    /// shared, never copied after decode.
    pub pixels: Bytes,
    pub letterbox: Letterbox,
    /// The frame's trace (`frame` root span) when it was sampled, else `Span::none()`; every
    /// stage hangs its span below it (`telemetry`).
    pub span: tracing::Span,
}

/// What a device sends to a connector shard, in capture order per camera.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum ToConnector {
    Detections(FrameDetections),
    /// The camera's source ended (a file that is not looped); nothing more follows.
    StreamEnded(CameraId),
}

#[derive(Debug)]
pub struct FrameDetections {
    pub camera_id: CameraId,
    pub seq: u64,
    pub captured_at: SystemTime,
    pub captured: Instant,
    pub detections: Vec<Detection>,
    /// The registry version of the model that produced `detections`.
    pub model_version: u32,
    /// The frame's trace, carried on from `Frame::span`.
    pub span: tracing::Span,
}
