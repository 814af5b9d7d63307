//! Traffic analytics on tracked objects: camera geometry (lines, zones, lanes, exclusions, a
//! ground-plane calibration), per-track kinematics, interval measures (volumes, occupancy,
//! density, speed, headway, queues, level of service) and incidents. Everything here is pure:
//! time comes from frame timestamps, so a replayed clip gives the same answers at any speed.
//! Definitions and units: `docs/ANALYTICS.md`.

pub mod config;
pub mod framing;
pub mod geometry;
pub mod homography;
pub mod incidents;
pub mod kinematics;
pub mod lines;
pub mod measures;
pub mod rollup;
pub mod scene;
pub mod tracker;
pub mod vehicle_class;

use serde::Serialize;

use crate::ids::CameraId;

/// What a measured element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementKind {
    Line,
    Zone,
    Lane,
}

impl ElementKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ElementKind::Line => "line",
            ElementKind::Zone => "zone",
            ElementKind::Lane => "lane",
        }
    }
}

/// The measures of one element over one UTC minute of frame time: a row of `analytics_1m`.
#[derive(Debug, Clone)]
pub struct AggregateRow {
    pub camera_id: CameraId,
    pub interval_start: chrono::DateTime<chrono::Utc>,
    pub geometry_version: u32,
    pub element_id: String,
    /// The run of the camera (see `Pipeline::start_camera`): two runs in one minute keep a row each.
    pub stream_epoch_ms: u64,
    pub element_kind: ElementKind,
    pub measures: measures::IntervalMeasures,
}

/// The latest state of a camera (counts, who is in which zone, open incidents, the last
/// complete minute), cached in Redis for the live API.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    pub camera_id: CameraId,
    pub state: serde_json::Value,
}
