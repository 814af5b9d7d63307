//! Settings of the traffic analytics (`analytics.*`): speed fitting, stopped and wrong-way
//! thresholds, incident timings and queue chaining. Defaults are those of `docs/ANALYTICS.md`;
//! every field has one, so a config file may name only some.

use serde::{Deserialize, Serialize};

/// Thresholds and timings of kinematics, measures and incidents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Span of the least-squares speed fit over a track's latest positions, milliseconds.
    pub speed_window_ms: u64,
    /// Calibrated: a track slower than this (km/h) is stopped.
    pub stopped_speed_kmh: f64,
    /// Uncalibrated: a track slower than this (box heights per second) is stopped.
    pub stopped_image_rate: f64,
    /// A track stopped in a lane this long (s) opens a `stopped_vehicle` incident.
    pub stopped_open_s: f64,
    /// A stopped vehicle moving above twice the stopped threshold this long (s) closes it.
    pub stopped_close_s: f64,
    /// A track unseen in its lane this long (s) closes its incidents and is forgotten.
    pub lost_close_s: f64,
    /// Calibrated: lane-axis speed below minus this (km/h) is against the lane direction.
    pub wrong_way_speed_kmh: f64,
    /// Uncalibrated: lane-axis speed below minus this (box heights per second) is against it.
    pub wrong_way_image_rate: f64,
    /// Moving against the lane direction this long (s) opens a `wrong_way` incident.
    pub wrong_way_open_s: f64,
    /// Calibrated: distance (m) a wrong-way track must have gone upstream before it opens.
    pub wrong_way_min_m: f64,
    /// Uncalibrated: the same distance in box heights.
    pub wrong_way_min_box_heights: f64,
    /// Lane density at LOS E or F this long (s) opens a `congestion` incident.
    pub congestion_open_s: f64,
    /// Lane density at LOS D or better this long (s) closes it.
    pub congestion_close_s: f64,
    /// Length (s) of the rolling mean of lane density that congestion is judged on.
    pub congestion_window_s: f64,
    /// An open incident emits `incident_updated` this often (s).
    pub incident_update_s: f64,
    /// Calibrated: queued vehicles chain when within this distance (m) of the previous one.
    pub queue_join_m: f64,
    /// Uncalibrated: the same chaining distance in box heights.
    pub queue_join_box_heights: f64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            speed_window_ms: 1_000,
            stopped_speed_kmh: 5.0,
            stopped_image_rate: 0.1,
            stopped_open_s: 15.0,
            stopped_close_s: 3.0,
            lost_close_s: 5.0,
            wrong_way_speed_kmh: 5.0,
            wrong_way_image_rate: 0.2,
            wrong_way_open_s: 2.0,
            wrong_way_min_m: 5.0,
            wrong_way_min_box_heights: 1.0,
            congestion_open_s: 60.0,
            congestion_close_s: 60.0,
            congestion_window_s: 60.0,
            incident_update_s: 30.0,
            queue_join_m: 15.0,
            queue_join_box_heights: 3.0,
        }
    }
}

/// Longest accepted duration setting (one day), so seconds always convert to milliseconds.
const MAX_DURATION_S: f64 = 86_400.0;

impl AnalyticsConfig {
    /// Every problem found, as human-readable messages naming the key; empty when usable.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(100..=60_000).contains(&self.speed_window_ms) {
            problems.push(format!("analytics.speed_window_ms must be in 100..=60000 (got {})", self.speed_window_ms));
        }
        let positive = [
            ("stopped_speed_kmh", self.stopped_speed_kmh),
            ("stopped_image_rate", self.stopped_image_rate),
            ("wrong_way_speed_kmh", self.wrong_way_speed_kmh),
            ("wrong_way_image_rate", self.wrong_way_image_rate),
            ("wrong_way_min_m", self.wrong_way_min_m),
            ("wrong_way_min_box_heights", self.wrong_way_min_box_heights),
            ("queue_join_m", self.queue_join_m),
            ("queue_join_box_heights", self.queue_join_box_heights),
        ];
        for (key, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                problems.push(format!("analytics.{key} must be > 0 (got {value})"));
            }
        }
        let durations = [
            ("stopped_open_s", self.stopped_open_s),
            ("stopped_close_s", self.stopped_close_s),
            ("lost_close_s", self.lost_close_s),
            ("wrong_way_open_s", self.wrong_way_open_s),
            ("congestion_open_s", self.congestion_open_s),
            ("congestion_close_s", self.congestion_close_s),
            ("congestion_window_s", self.congestion_window_s),
            ("incident_update_s", self.incident_update_s),
        ];
        for (key, value) in durations {
            if !(value.is_finite() && value > 0.0) {
                problems.push(format!("analytics.{key} must be > 0 (got {value})"));
            } else if value > MAX_DURATION_S {
                problems.push(format!("analytics.{key} must be at most {MAX_DURATION_S} s (got {value})"));
            }
        }
        problems
    }
}

/// Seconds to whole milliseconds; anything not a finite non-negative number is 0, and the
/// result is clamped so later arithmetic on timestamps cannot overflow.
pub(crate) fn secs_to_ms(seconds: f64) -> i64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0).round().min(1e15) as i64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let c = AnalyticsConfig::default();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.speed_window_ms, 1000);
        assert_eq!(c.stopped_open_s, 15.0);
        assert_eq!(c.incident_update_s, 30.0);
        assert_eq!(c.queue_join_m, 15.0);
    }

    #[test]
    fn partial_json_takes_defaults_and_unknown_keys_are_refused() {
        let c: AnalyticsConfig = serde_json::from_str(r#"{"stopped_open_s": 20}"#).unwrap();
        assert_eq!(c.stopped_open_s, 20.0);
        assert_eq!(c.lost_close_s, 5.0);
        assert!(serde_json::from_str::<AnalyticsConfig>(r#"{"stoped_open_s": 20}"#).is_err());
        let back: AnalyticsConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn validate_reports_every_problem() {
        let c = AnalyticsConfig {
            speed_window_ms: 0,
            stopped_open_s: -1.0,
            queue_join_m: f64::NAN,
            congestion_window_s: 1e9,
            ..AnalyticsConfig::default()
        };
        let p = c.validate();
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p.contains(&"analytics.stopped_open_s must be > 0 (got -1)".to_string()));
        assert!(p.iter().any(|m| m.starts_with("analytics.speed_window_ms")));
        assert!(p.iter().any(|m| m.starts_with("analytics.queue_join_m")));
        assert!(p.iter().any(|m| m.starts_with("analytics.congestion_window_s")));
    }

    #[test]
    fn secs_to_ms_is_total() {
        assert_eq!(secs_to_ms(1.5), 1500);
        assert_eq!(secs_to_ms(-3.0), 0);
        assert_eq!(secs_to_ms(f64::NAN), 0);
        assert_eq!(secs_to_ms(f64::INFINITY), 0);
        assert_eq!(secs_to_ms(1e300), 1_000_000_000_000_000);
    }
}
