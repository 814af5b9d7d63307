//! The typed messages that flow between actors: frames to a device, detections to a connector,
//! events to the sinks.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::Message;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::detector::{Detection, Letterbox, ObjectClass};

/// Camera ids are validated at the API edge ([A-Za-z0-9_-], at most 64 chars); shared cheaply.
pub type CameraId = Arc<str>;

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
    /// CHW BGR bytes of `letterbox.input_len()`; shared, never copied after decode.
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
    /// The frame's trace, carried on from `Frame::span`.
    pub span: tracing::Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// A published analytics event. Serialised as the JSON that Redis and PostgreSQL carry: the
/// common fields, `type`, then the fields of that type (see `docs/ANALYTICS.md`, Events). The
/// durable outbox keeps this JSON and reads it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Deterministic from what produced it (camera, stream epoch, track or incident, frame), so
    /// a replay is idempotent.
    pub event_id: String,
    pub camera_id: CameraId,
    /// Frame time of the frame that produced the event (RFC 3339).
    pub ts: chrono::DateTime<chrono::Utc>,
    pub frame_seq: u64,
    /// The camera geometry version whose lines and zones produced the event.
    pub geometry_version: u32,
    #[serde(flatten)]
    pub detail: EventDetail,
    #[serde(skip)]
    pub captured: Option<Instant>,
    /// The `event` span of a traced frame, the parent of its `publish` span; else `Span::none()`.
    #[serde(skip, default = "tracing::Span::none")]
    pub span: tracing::Span,
}

impl Event {
    /// The `type` field.
    pub fn kind(&self) -> &'static str {
        match &self.detail {
            EventDetail::LineCrossing(_) => LINE_CROSSING,
            EventDetail::IncidentOpened(_) => "incident_opened",
            EventDetail::IncidentUpdated(_) => "incident_updated",
            EventDetail::IncidentClosed(_) => "incident_closed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventDetail {
    LineCrossing(LineCrossing),
    IncidentOpened(IncidentEvent),
    IncidentUpdated(IncidentEvent),
    IncidentClosed(IncidentEvent),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LineCrossing {
    pub track_id: u64,
    pub class: ObjectClass,
    pub line_id: String,
    pub direction: Direction,
    /// Calibrated cameras only: the track's speed at the crossing and its 1-sigma uncertainty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_uncertainty_kmh: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentEvent {
    /// Stable over the incident's life.
    pub incident_id: String,
    pub incident_type: std::borrow::Cow<'static, str>,
    pub zone_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<ObjectClass>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density_per_km: Option<f64>,
}

pub const LINE_CROSSING: &str = "line_crossing";
