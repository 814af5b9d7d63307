//! The typed messages that flow between actors: frames to a device, detections to a connector,
//! events to the sinks.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::Message;
use bytes::Bytes;
use serde::Serialize;

use crate::detector::{Detection, Letterbox, ObjectClass};

/// Camera ids are validated at the API edge ([A-Za-z0-9_-], at most 64 chars); shared cheaply.
pub type CameraId = Arc<str>;

/// One sampled frame, already in the model's input layout.
#[derive(Debug, Clone)]
pub struct Frame {
    pub camera_id: CameraId,
    /// Sampled-frame number since the camera actor started; continues across reconnects.
    pub seq: u64,
    pub captured_at: SystemTime,
    /// Monotonic capture time, for latency measurements.
    pub captured: Instant,
    /// CHW BGR bytes of `letterbox.input_len()`; shared, never copied after decode.
    pub pixels: Bytes,
    pub letterbox: Letterbox,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// A published analytics event. Serialised as the JSON that Redis and PostgreSQL carry.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Deterministic from camera, stream epoch, track, line and frame, so a replay is idempotent.
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub camera_id: CameraId,
    /// Capture time of the frame that produced the event (RFC 3339).
    pub ts: chrono::DateTime<chrono::Utc>,
    pub frame_seq: u64,
    pub track_id: u64,
    pub class: ObjectClass,
    pub line_id: String,
    pub direction: Direction,
    #[serde(skip)]
    pub captured: Option<Instant>,
}

pub const LINE_CROSSING: &str = "line_crossing";
