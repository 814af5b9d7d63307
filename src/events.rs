//! The events the analytics emit and the sinks deliver: typed, serialised once to the JSON that
//! the outbox, Redis and PostgreSQL carry, and identified deterministically so replays are
//! idempotent. Definitions: `docs/ANALYTICS.md`, Events.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::ids::CameraId;
use crate::objects::ObjectClass;

/// The deterministic id of a crossing: the same crossing replayed under the same geometry
/// version gets the same id.
pub fn event_id(
    camera_id: &str,
    epoch_ms: u64,
    geometry_version: u32,
    track_id: u64,
    line_id: &str,
    frame_seq: u64,
) -> String {
    let name = format!("{camera_id}/{epoch_ms}/{geometry_version}/{track_id}/{line_id}/{frame_seq}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        let a = event_id("cam", 1, 1, 2, "l1", 3);
        assert_eq!(a, event_id("cam", 1, 1, 2, "l1", 3));
        assert_ne!(a, event_id("cam", 1, 1, 2, "l1", 4));
        assert_ne!(a, event_id("cam", 9, 1, 2, "l1", 3), "a restarted camera gets new ids");
        assert_ne!(a, event_id("cam", 1, 2, 2, "l1", 3), "another geometry version, another event");
    }
}
