//! The events the analytics emit and the sinks deliver: typed, serialised once to the JSON that
//! the outbox, Redis and PostgreSQL carry, and identified deterministically so replays are
//! idempotent. Definitions: `docs/ANALYTICS.md`, Events.

use std::borrow::Cow;
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

/// A published analytics event. Serialised once, when the publisher accepts it, as the JSON that
/// the outbox, Redis and PostgreSQL carry: the common fields, `type`, then the fields of that type
/// (see `docs/ANALYTICS.md`, Events). Nothing reads it back into an `Event`: the stores take the
/// JSON and an [`EventHeader`] read from it.
#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip)]
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

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventDetail {
    LineCrossing(LineCrossing),
    IncidentOpened(IncidentEvent),
    IncidentUpdated(IncidentEvent),
    IncidentClosed(IncidentEvent),
}

#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
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

/// An event as the stores take it: the JSON it was serialised to when it was accepted (the bytes
/// the outbox keeps) and the fields the stores index, read from that JSON.
#[derive(Debug)]
pub struct EventRecord<'a> {
    pub json: &'a str,
    pub header: EventHeader<'a>,
}

impl<'a> EventRecord<'a> {
    pub fn parse(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        let json = std::str::from_utf8(json).map_err(<serde_json::Error as serde::de::Error>::custom)?;
        Ok(Self { json, header: serde_json::from_str(json)? })
    }
}

/// The fields of an event's JSON that the stores index (PostgreSQL's columns, the stream's fields
/// and the channel), read without building the event: the fields of every type side by side, each
/// absent where its type has none.
#[derive(Debug, Deserialize)]
pub struct EventHeader<'a> {
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    #[serde(borrow)]
    pub camera_id: Cow<'a, str>,
    /// The `type` field.
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    pub ts: chrono::DateTime<chrono::Utc>,
    pub frame_seq: u64,
    pub geometry_version: u32,
    pub track_id: Option<u64>,
    pub class: Option<ObjectClass>,
    #[serde(borrow)]
    pub line_id: Option<Cow<'a, str>>,
    pub direction: Option<Direction>,
    #[serde(borrow)]
    pub zone_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub incident_id: Option<Cow<'a, str>>,
}

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

    fn event(detail: EventDetail) -> Event {
        Event {
            event_id: "e-1".into(),
            camera_id: "cam-1".into(),
            ts: "2026-01-02T03:04:05.678Z".parse().unwrap(),
            frame_seq: 42,
            geometry_version: 3,
            detail,
            captured: None,
            span: tracing::Span::none(),
        }
    }

    #[test]
    fn the_header_read_from_the_json_is_the_event_s() {
        let crossing = event(EventDetail::LineCrossing(LineCrossing {
            track_id: 7,
            class: ObjectClass::Truck,
            line_id: "north \"1\"".into(),
            direction: Direction::Out,
            speed_kmh: Some(51.5),
            speed_uncertainty_kmh: None,
        }));
        let json = serde_json::to_vec(&crossing).unwrap();
        let record = EventRecord::parse(&json).unwrap();
        assert_eq!(record.json.as_bytes(), json.as_slice());
        let h = &record.header;
        assert_eq!((h.event_id.as_ref(), h.camera_id.as_ref(), h.kind.as_ref()), ("e-1", "cam-1", LINE_CROSSING));
        assert_eq!((h.ts, h.frame_seq, h.geometry_version), (crossing.ts, 42, 3));
        assert_eq!((h.track_id, h.class, h.direction), (Some(7), Some(ObjectClass::Truck), Some(Direction::Out)));
        assert_eq!(h.line_id.as_deref(), Some("north \"1\""), "an escaped string is read too");
        assert_eq!((h.zone_id.as_deref(), h.incident_id.as_deref()), (None, None));

        let incident = event(EventDetail::IncidentOpened(IncidentEvent {
            incident_id: "i-9".into(),
            incident_type: "stopped_vehicle".into(),
            zone_id: "lane-2".into(),
            track_id: None,
            class: Some(ObjectClass::Car),
            started_at: crossing.ts,
            duration_s: 15.0,
            speed_kmh: None,
            density_per_km: None,
        }));
        let json = serde_json::to_vec(&incident).unwrap();
        let h = EventRecord::parse(&json).unwrap().header;
        assert_eq!(h.kind, incident.kind());
        assert_eq!((h.track_id, h.class, h.direction), (None, Some(ObjectClass::Car), None));
        assert_eq!((h.zone_id.as_deref(), h.incident_id.as_deref(), h.line_id), (Some("lane-2"), Some("i-9"), None));
        assert!(EventRecord::parse(b"{\"event_id\": 1}").is_err());
        assert!(EventRecord::parse(b"\xff").is_err());
    }
}
