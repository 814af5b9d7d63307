//! Identifiers shared by every layer: camera ids (and the rule every API-given id follows).

use std::sync::Arc;

/// Camera ids are validated at the API edge ([A-Za-z0-9_-], at most 64 chars); shared cheaply.
pub type CameraId = Arc<str>;

/// Camera, line, zone and lane ids: short, safe in Redis keys, URLs and metric labels.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
