//! Measures per element (line, zone, lane) and interval: raw, mergeable accumulators
//! ([`IntervalMeasures`], what PostgreSQL stores per minute; 15-minute and hourly values are
//! merges of minute rows) and the numbers derived from them ([`MeasuresView`]), level of service,
//! class lengths and the queue at a stop line. Definitions: `docs/ANALYTICS.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ElementKind;
use crate::objects::ObjectClass;

/// Kilometres per mile: HCM thresholds in pc/mi/ln are divided by this to give veh/km/ln.
pub const KM_PER_MILE: f64 = 1.609344;
/// Upper bound (inclusive) of LOS A, veh/km/ln (11 pc/mi/ln; 6.835..., printed 6.84).
pub const LOS_A_MAX: f64 = 11.0 / KM_PER_MILE;
/// Upper bound (inclusive) of LOS B, veh/km/ln (18 pc/mi/ln; 11.18).
pub const LOS_B_MAX: f64 = 18.0 / KM_PER_MILE;
/// Upper bound (inclusive) of LOS C, veh/km/ln (26 pc/mi/ln; 16.16).
pub const LOS_C_MAX: f64 = 26.0 / KM_PER_MILE;
/// Upper bound (inclusive) of LOS D, veh/km/ln (35 pc/mi/ln; 21.75).
pub const LOS_D_MAX: f64 = 35.0 / KM_PER_MILE;
/// Upper bound (inclusive) of LOS E, veh/km/ln (45 pc/mi/ln; 27.96); above it is F.
pub const LOS_E_MAX: f64 = 45.0 / KM_PER_MILE;

/// Speeds above this (km/h) are recorded as this: the histogram stays bounded.
pub const MAX_SPEED_KMH: f64 = 400.0;

/// Volume keys: line crossings by direction, zone and lane entries.
pub const VOLUME_IN: &str = "in";
pub const VOLUME_OUT: &str = "out";
pub const VOLUME_ENTERED: &str = "entered";

/// Calibrated queues: a vehicle up to this far (m) past the stop line still queues at it.
pub const STOP_LINE_TOLERANCE_M: f64 = 2.0;
/// Uncalibrated queues: the same tolerance in box heights.
pub const STOP_LINE_TOLERANCE_BOX_HEIGHTS: f64 = 0.5;

/// Level of service (HCM 6th edition, basic freeway segments), from density.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Los {
    A,
    B,
    C,
    D,
    E,
    F,
}

impl Los {
    /// Level of service of a density in vehicles per km per lane. Each bound is the exact
    /// conversion of the HCM pc/mi/ln threshold and is inclusive (`<= 11 pc/mi/ln` is A), so
    /// the table's rounded values are not the bounds: 6.84 veh/km/ln is 11.008 pc/mi/ln, B.
    /// Negative densities are A; NaN and +inf are F (callers give finite densities; see
    /// [`Los::try_from_density`]).
    pub fn from_density(veh_per_km_per_lane: f64) -> Los {
        let d = veh_per_km_per_lane;
        if d <= LOS_A_MAX {
            Los::A
        } else if d <= LOS_B_MAX {
            Los::B
        } else if d <= LOS_C_MAX {
            Los::C
        } else if d <= LOS_D_MAX {
            Los::D
        } else if d <= LOS_E_MAX {
            Los::E
        } else {
            Los::F
        }
    }

    /// As [`Los::from_density`], `None` for a NaN or infinite density.
    pub fn try_from_density(veh_per_km_per_lane: f64) -> Option<Los> {
        veh_per_km_per_lane.is_finite().then(|| Los::from_density(veh_per_km_per_lane))
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Los::A => "A",
            Los::B => "B",
            Los::C => "C",
            Los::D => "D",
            Los::E => "E",
            Los::F => "F",
        }
    }

    /// E or F: the level at which a lane counts as congested.
    pub fn is_congested(&self) -> bool {
        *self >= Los::E
    }
}

/// Nominal length (m) of a class, for gaps and queue lengths.
pub fn class_length_m(class: ObjectClass) -> f64 {
    match class {
        ObjectClass::Car => 4.5,
        ObjectClass::Van => 5.5,
        ObjectClass::Motorcycle => 2.2,
        ObjectClass::Bus => 12.0,
        ObjectClass::Truck => 10.0,
        ObjectClass::Bicycle => 1.8,
        ObjectClass::Person => 0.5,
    }
}

/// Raw accumulators of one element over one interval. Everything adds up under
/// [`IntervalMeasures::merge`], so rows of any span merge into rows of a longer one exactly.
/// Non-finite or negative inputs are ignored (counted nowhere).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IntervalMeasures {
    /// Frames covered.
    pub frames: u64,
    /// Sum of the covered frames' durations, seconds.
    pub seconds: f64,
    /// Counts by key (`in`/`out` for lines, `entered` for zones and lanes), then by class.
    pub volume: BTreeMap<String, BTreeMap<ObjectClass, u64>>,
    /// Frames with at least one vehicle present.
    pub occupied_frames: u64,
    /// Sum over frames of the vehicles present.
    pub present_sum: u64,
    /// Lanes: sum over frames of the class lengths (m) of the vehicles present, for the space
    /// occupancy.
    pub present_length_sum_m: f64,
    /// Lanes with a loop: the loop's length (m); its time occupancy is reported only then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_length_m: Option<f64>,
    /// Frames in which a vehicle's footprint covered the loop.
    pub loop_occupied_frames: u64,
    /// Element length (m) for density: lane extent along the axis, zone's largest ground
    /// extent; calibrated zones and lanes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length_m: Option<f64>,
    /// Speed samples by 1 km/h bin: bin `k` holds speeds in `[k, k + 1)`.
    pub speed_hist: BTreeMap<u32, u64>,
    /// Sum of the speed samples, km/h (as recorded, i.e. capped at [`MAX_SPEED_KMH`]).
    pub speed_sum_kmh: f64,
    pub speed_count: u64,
    pub headway_count: u64,
    pub headway_sum_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headway_min_s: Option<f64>,
    pub gap_count: u64,
    pub gap_sum_s: f64,
    /// Frames with a queue measurement (lanes with a stop line), queue or not.
    pub queue_frames: u64,
    /// Of those, frames with a length in metres (calibrated).
    pub queue_metres_frames: u64,
    pub queue_sum_m: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_max_m: Option<f64>,
    pub queue_sum_vehicles: u64,
    pub queue_max_vehicles: u64,
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn usable(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

impl IntervalMeasures {
    pub fn new(length_m: Option<f64>) -> Self {
        Self { length_m: length_m.filter(|l| l.is_finite() && *l > 0.0), ..Self::default() }
    }

    /// The same, for a lane with a loop `loop_length_m` long (`None`: no loop).
    pub fn with_loop(self, loop_length_m: Option<f64>) -> Self {
        Self { loop_length_m: loop_length_m.filter(|l| l.is_finite() && *l > 0.0), ..self }
    }

    /// An empty interval of the same element (its lengths kept), for the next interval.
    pub fn fresh(&self) -> Self {
        Self::new(self.length_m).with_loop(self.loop_length_m)
    }

    /// One frame of `dt_s` seconds with `present` vehicles in the element (persons excluded
    /// by the caller). A non-finite or negative duration counts the frame with 0 s.
    pub fn record_frame(&mut self, dt_s: f64, present: usize) {
        self.frames += 1;
        if usable(dt_s) {
            self.seconds += dt_s;
        }
        if present > 0 {
            self.occupied_frames += 1;
        }
        self.present_sum = self.present_sum.saturating_add(present as u64);
    }

    /// A lane's footprints in one frame (call once per frame, beside `record_frame`): whether a
    /// vehicle covered the loop, and the summed class lengths (m) of the vehicles present. A
    /// non-finite or negative length counts as 0.
    pub fn record_footprints(&mut self, loop_covered: bool, present_length_m: f64) {
        if loop_covered {
            self.loop_occupied_frames += 1;
        }
        if usable(present_length_m) {
            self.present_length_sum_m += present_length_m;
        }
    }

    /// One crossing (`in`/`out`) or entry (`entered`) of a `class` object.
    pub fn record_volume(&mut self, key: &str, class: ObjectClass) {
        let count = self.volume.entry(key.to_string()).or_default().entry(class).or_insert(0);
        *count = count.saturating_add(1);
    }

    /// One speed sample (km/h), capped at [`MAX_SPEED_KMH`].
    pub fn record_speed(&mut self, kmh: f64) {
        if !usable(kmh) {
            return;
        }
        let kmh = kmh.min(MAX_SPEED_KMH);
        *self.speed_hist.entry(kmh.floor() as u32).or_insert(0) += 1;
        self.speed_sum_kmh += kmh;
        self.speed_count += 1;
    }

    /// One headway (s) between consecutive vehicles at the reference section.
    pub fn record_headway(&mut self, s: f64) {
        if !usable(s) {
            return;
        }
        self.headway_count += 1;
        self.headway_sum_s += s;
        self.headway_min_s = min_opt(self.headway_min_s, Some(s));
    }

    /// One gap (s); negative gaps count as 0.
    pub fn record_gap(&mut self, s: f64) {
        if s.is_nan() || s == f64::INFINITY {
            return;
        }
        self.gap_count += 1;
        self.gap_sum_s += s.max(0.0);
    }

    /// One frame's queue at the stop line: `vehicles` queued, `metres` long (calibrated).
    pub fn record_queue(&mut self, metres: Option<f64>, vehicles: usize) {
        self.queue_frames += 1;
        let vehicles = vehicles as u64;
        self.queue_sum_vehicles = self.queue_sum_vehicles.saturating_add(vehicles);
        self.queue_max_vehicles = self.queue_max_vehicles.max(vehicles);
        if let Some(m) = metres.filter(|m| usable(*m)) {
            self.queue_metres_frames += 1;
            self.queue_sum_m += m;
            self.queue_max_m = max_opt(self.queue_max_m, Some(m));
        }
    }

    /// Adds `other` (another interval of the same element) to `self`. Rows of one geometry
    /// version share `length_m`; if they differ the first known one is kept.
    pub fn merge(&mut self, other: &IntervalMeasures) {
        self.frames = self.frames.saturating_add(other.frames);
        self.seconds += other.seconds;
        for (key, by_class) in &other.volume {
            let mine = self.volume.entry(key.clone()).or_default();
            for (class, n) in by_class {
                let c = mine.entry(*class).or_insert(0);
                *c = c.saturating_add(*n);
            }
        }
        self.occupied_frames = self.occupied_frames.saturating_add(other.occupied_frames);
        self.present_sum = self.present_sum.saturating_add(other.present_sum);
        self.present_length_sum_m += other.present_length_sum_m;
        if self.length_m.is_none() {
            self.length_m = other.length_m;
        }
        if self.loop_length_m.is_none() {
            self.loop_length_m = other.loop_length_m;
        }
        self.loop_occupied_frames = self.loop_occupied_frames.saturating_add(other.loop_occupied_frames);
        for (bin, n) in &other.speed_hist {
            let c = self.speed_hist.entry(*bin).or_insert(0);
            *c = c.saturating_add(*n);
        }
        self.speed_sum_kmh += other.speed_sum_kmh;
        self.speed_count = self.speed_count.saturating_add(other.speed_count);
        self.headway_count = self.headway_count.saturating_add(other.headway_count);
        self.headway_sum_s += other.headway_sum_s;
        self.headway_min_s = min_opt(self.headway_min_s, other.headway_min_s);
        self.gap_count = self.gap_count.saturating_add(other.gap_count);
        self.gap_sum_s += other.gap_sum_s;
        self.queue_frames = self.queue_frames.saturating_add(other.queue_frames);
        self.queue_metres_frames = self.queue_metres_frames.saturating_add(other.queue_metres_frames);
        self.queue_sum_m += other.queue_sum_m;
        self.queue_max_m = max_opt(self.queue_max_m, other.queue_max_m);
        self.queue_sum_vehicles = self.queue_sum_vehicles.saturating_add(other.queue_sum_vehicles);
        self.queue_max_vehicles = self.queue_max_vehicles.max(other.queue_max_vehicles);
    }

    /// Vehicles counted over all keys, persons excluded (they stay in `volume`).
    pub fn vehicle_volume(&self) -> u64 {
        self.volume
            .values()
            .flat_map(|by_class| by_class.iter())
            .filter(|(class, _)| **class != ObjectClass::Person)
            .fold(0u64, |acc, (_, n)| acc.saturating_add(*n))
    }

    /// The 85th percentile speed from the histogram, interpolated linearly within its 1 km/h
    /// bin (samples spread evenly over `[k, k + 1)`): the speed below which 85 % of the samples
    /// lie. Resolution is the bin; `None` without samples.
    pub fn speed_percentile_kmh(&self, fraction: f64) -> Option<f64> {
        let total: u64 = self.speed_hist.values().fold(0u64, |a, n| a.saturating_add(*n));
        if total == 0 || !fraction.is_finite() {
            return None;
        }
        let rank = fraction.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        let mut last = None;
        for (bin, n) in &self.speed_hist {
            if *n == 0 {
                continue;
            }
            let upto = below.saturating_add(*n);
            if rank <= upto as f64 {
                let within = ((rank - below as f64) / *n as f64).clamp(0.0, 1.0);
                return Some(*bin as f64 + within);
            }
            below = upto;
            last = Some(*bin as f64 + 1.0);
        }
        last
    }

    /// The derived numbers for a zone (`is_lane = false`) or a lane. Lines: use
    /// [`IntervalMeasures::view_kind`] with [`ElementKind::Line`] (no occupancy, presence or
    /// density is reported for them).
    pub fn view(&self, is_lane: bool) -> MeasuresView {
        self.view_kind(if is_lane { ElementKind::Lane } else { ElementKind::Zone })
    }

    /// The derived numbers for an element of `kind`. A number is present only when its
    /// inputs are (e.g. no speed without speed samples, no density without a length).
    pub fn view_kind(&self, kind: ElementKind) -> MeasuresView {
        let ratio = |num: f64, den: u64| (den > 0).then(|| num / den as f64);
        let volume_total = self.vehicle_volume();
        let has_presence = kind != ElementKind::Line && self.frames > 0;
        let mean_present = if has_presence { ratio(self.present_sum as f64, self.frames) } else { None };
        let density_per_km = match (mean_present, self.length_m) {
            (Some(m), Some(l)) if l.is_finite() && l > 0.0 => Some(m / (l / 1000.0)),
            _ => None,
        };
        let los = if kind == ElementKind::Lane { density_per_km.and_then(Los::try_from_density) } else { None };
        let is_lane = kind == ElementKind::Lane && self.frames > 0;
        let space_occupancy_percent = match self.length_m {
            Some(l) if is_lane && l.is_finite() && l > 0.0 => {
                Some(100.0 * self.present_length_sum_m / self.frames as f64 / l)
            }
            _ => None,
        };
        let loop_occupancy_percent = (is_lane && self.loop_length_m.is_some())
            .then(|| 100.0 * self.loop_occupied_frames as f64 / self.frames as f64);
        MeasuresView {
            frames: self.frames,
            seconds: self.seconds,
            volume: self.volume.clone(),
            volume_total,
            flow_per_hour: (self.seconds > 0.0).then(|| volume_total as f64 * 3600.0 / self.seconds),
            occupancy_percent: if has_presence {
                ratio(100.0 * self.occupied_frames as f64, self.frames)
            } else {
                None
            },
            loop_occupancy_percent,
            space_occupancy_percent,
            mean_present,
            density_per_km,
            speed_mean_kmh: ratio(self.speed_sum_kmh, self.speed_count),
            speed_p85_kmh: self.speed_percentile_kmh(0.85),
            speed_samples: self.speed_count,
            headway_mean_s: ratio(self.headway_sum_s, self.headway_count),
            headway_min_s: self.headway_min_s,
            gap_mean_s: ratio(self.gap_sum_s, self.gap_count),
            queue_max_m: self.queue_max_m,
            queue_mean_m: ratio(self.queue_sum_m, self.queue_metres_frames),
            queue_max_vehicles: (self.queue_frames > 0).then_some(self.queue_max_vehicles),
            queue_mean_vehicles: ratio(self.queue_sum_vehicles as f64, self.queue_frames),
            los,
        }
    }
}

/// The measures of one element and interval as the API reports them (`docs/ANALYTICS.md`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasuresView {
    pub frames: u64,
    pub seconds: f64,
    /// Counts by key (`in`/`out`, `entered`) and class, persons included.
    pub volume: BTreeMap<String, BTreeMap<ObjectClass, u64>>,
    /// All keys and classes but persons.
    pub volume_total: u64,
    /// `volume_total` x 3600 / seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_per_hour: Option<f64>,
    /// Share of the frames with at least one vehicle anywhere in the zone (presence share: on
    /// a long zone near 100 % in any traffic; not what a loop detector measures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occupancy_percent: Option<f64>,
    /// Lanes with a loop: share of the frames in which a vehicle's footprint covered the loop,
    /// a loop detector's time occupancy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_occupancy_percent: Option<f64>,
    /// Calibrated lanes: mean share of the lane's length covered by the vehicles present (their
    /// class lengths), i.e. density x mean vehicle length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space_occupancy_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_present: Option<f64>,
    /// Vehicles per km (per lane for lanes); calibrated only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density_per_km: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mean_kmh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_p85_kmh: Option<f64>,
    pub speed_samples: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headway_mean_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headway_min_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_mean_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_max_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_mean_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_max_vehicles: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_mean_vehicles: Option<f64>,
    /// Lanes with a density only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub los: Option<Los>,
}

/// One vehicle in a lane, for [`queue_at`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueCandidate {
    /// Lane position `s`, increasing downstream (metres calibrated, the caller's image unit
    /// otherwise).
    pub position: f64,
    pub stopped: bool,
    pub class: ObjectClass,
    /// Scale of the join distance and stop-line tolerance: 1 when calibrated, the vehicle's
    /// box height (in position units) when not.
    pub join_scale: f64,
}

/// The queue at a stop line at lane position `stop_position`: `(vehicles, metres)`, metres
/// only when `calibrated` (`Some(0.0)` for no queue).
///
/// Candidates: stopped, not persons, finite position at or upstream of the stop line with a
/// tolerance (2 m calibrated, half a box height not). Sorted downstream first, they chain from
/// the stop line: the first within `join * join_scale` of it, each next within
/// `join * join_scale` (the next vehicle's scale) of the previous queued one; the first one
/// too far ends the queue. Moving vehicles are not part of the chain and do not break it
/// (the spec chains stopped vehicles only): a vehicle creeping or pulling away inside a queue
/// leaves the stopped ones behind it queued as long as they stay within the join distance
/// of the previous stopped one. Length: from the stop line to the last queued vehicle's
/// position plus its class length.
pub fn queue_at(stop_position: f64, vehicles: &[QueueCandidate], join: f64, calibrated: bool) -> (usize, Option<f64>) {
    let none = (0, calibrated.then_some(0.0));
    if !(stop_position.is_finite() && join.is_finite() && join > 0.0) {
        return none;
    }
    let scale_of = |v: &QueueCandidate| {
        if calibrated {
            1.0
        } else {
            v.join_scale
        }
    };
    let tolerance = |v: &QueueCandidate| {
        if calibrated {
            STOP_LINE_TOLERANCE_M
        } else {
            STOP_LINE_TOLERANCE_BOX_HEIGHTS * v.join_scale
        }
    };
    let mut queued: Vec<&QueueCandidate> = vehicles
        .iter()
        .filter(|v| {
            v.stopped
                && v.class != ObjectClass::Person
                && v.position.is_finite()
                && scale_of(v).is_finite()
                && scale_of(v) > 0.0
                && v.position <= stop_position + tolerance(v)
        })
        .collect();
    queued.sort_by(|a, b| b.position.total_cmp(&a.position));
    let mut reference = stop_position;
    let mut count = 0;
    let mut last: Option<&QueueCandidate> = None;
    for v in queued {
        let distance = (reference - v.position).max(0.0);
        if distance > join * scale_of(v) {
            break;
        }
        count += 1;
        reference = reference.min(v.position);
        last = Some(v);
    }
    let metres = if calibrated {
        Some(last.map_or(0.0, |v| (stop_position - v.position).max(0.0) + class_length_m(v.class)))
    } else {
        None
    };
    (count, metres)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn los_bounds_are_inclusive_exact_conversions() {
        let bounds = [
            (LOS_A_MAX, Los::A, Los::B, 6.84),
            (LOS_B_MAX, Los::B, Los::C, 11.18),
            (LOS_C_MAX, Los::C, Los::D, 16.16),
            (LOS_D_MAX, Los::D, Los::E, 21.75),
            (LOS_E_MAX, Los::E, Los::F, 27.96),
        ];
        for (bound, at, above, printed) in bounds {
            assert!((bound - printed).abs() < 0.005, "{bound} vs table {printed}");
            assert_eq!(Los::from_density(bound), at);
            assert_eq!(Los::from_density(bound.next_up()), above);
            assert_eq!(Los::from_density(bound - 0.01), at);
            assert_eq!(Los::from_density(bound + 0.01), above);
        }
        // The table's rounded value 6.84 is just above 11 pc/mi/ln (11.008): B, not A.
        assert_eq!(Los::from_density(6.84), Los::B);
        assert_eq!(Los::from_density(6.83), Los::A);
        assert_eq!(Los::from_density(0.0), Los::A);
        assert_eq!(Los::from_density(-1.0), Los::A);
        assert_eq!(Los::from_density(1e9), Los::F);
        assert_eq!(Los::try_from_density(f64::NAN), None);
        assert_eq!(Los::try_from_density(20.0), Some(Los::D));
        assert_eq!(serde_json::to_string(&Los::E).unwrap(), "\"E\"");
        assert_eq!(serde_json::from_str::<Los>("\"C\"").unwrap(), Los::C);
        assert!(Los::E.is_congested() && Los::F.is_congested() && !Los::D.is_congested());
    }

    #[test]
    fn queue_at_known_queue() {
        let car = |upstream: f64, stopped: bool| QueueCandidate {
            position: 100.0 - upstream,
            stopped,
            class: ObjectClass::Car,
            join_scale: 1.0,
        };
        let cars = [car(13.0, true), car(1.0, true), car(40.0, true), car(7.0, true)];
        let (n, m) = queue_at(100.0, &cars, 15.0, true);
        assert_eq!(n, 3);
        assert!((m.unwrap() - 17.5).abs() < 1e-9);

        // No queue: first stopped car farther than join from the stop line.
        let (n, m) = queue_at(100.0, &[car(16.0, true)], 15.0, true);
        assert_eq!((n, m), (0, Some(0.0)));
        // Moving vehicles neither join nor break the chain.
        let mixed = [car(1.0, true), car(5.0, false), car(10.0, true), car(20.0, false)];
        assert_eq!(queue_at(100.0, &mixed, 15.0, true).0, 2);
        // A front car pulling away leaves the ones behind queued.
        let (n, m) = queue_at(100.0, &[car(1.0, false), car(7.0, true)], 15.0, true);
        assert_eq!(n, 1);
        assert!((m.unwrap() - 11.5).abs() < 1e-9);
        // Past the stop line: within 2 m tolerance counts, beyond does not.
        let (n, m) = queue_at(100.0, &[car(-1.5, true), car(-3.0, true)], 15.0, true);
        assert_eq!(n, 1);
        assert!((m.unwrap() - 4.5).abs() < 1e-9);
        // Persons are not queued; a truck's class length counts.
        let person = QueueCandidate { class: ObjectClass::Person, ..car(2.0, true) };
        let truck = QueueCandidate { class: ObjectClass::Truck, ..car(12.0, true) };
        let (n, m) = queue_at(100.0, &[person, truck], 15.0, true);
        assert_eq!(n, 1);
        assert!((m.unwrap() - 22.0).abs() < 1e-9);
        // Empty and garbage input.
        assert_eq!(queue_at(100.0, &[], 15.0, true), (0, Some(0.0)));
        assert_eq!(queue_at(f64::NAN, &cars, 15.0, true), (0, Some(0.0)));
        assert_eq!(queue_at(100.0, &cars, f64::NAN, false), (0, None));
        let nan = QueueCandidate { position: f64::NAN, ..car(1.0, true) };
        assert_eq!(queue_at(100.0, &[nan], 15.0, true).0, 0);
    }

    #[test]
    fn queue_at_uncalibrated_scales_by_box_height() {
        // Pixels: box heights 40 px, join 3 box heights = 120 px.
        let c = |pos: f64| QueueCandidate { position: pos, stopped: true, class: ObjectClass::Car, join_scale: 40.0 };
        let (n, m) = queue_at(500.0, &[c(490.0), c(400.0), c(290.0), c(100.0)], 3.0, false);
        assert_eq!((n, m), (3, None));
        // 0.5 box heights past the stop line is tolerated, more is not.
        assert_eq!(queue_at(500.0, &[c(519.0)], 3.0, false).0, 1);
        assert_eq!(queue_at(500.0, &[c(521.0)], 3.0, false).0, 0);
        let zero = QueueCandidate { join_scale: 0.0, ..c(490.0) };
        assert_eq!(queue_at(500.0, &[zero], 3.0, false).0, 0);
    }

    /// Records a minute of synthetic frames, crossings, speeds, headways, gaps and queues.
    fn fill(m: &mut IntervalMeasures, seed: u64) {
        for i in 0..(1500 + seed) {
            m.record_frame(0.04, ((i + seed) % 4) as usize);
            m.record_footprints((i + seed).is_multiple_of(3), ((i + seed) % 4) as f64 * 4.5);
            if i % 100 == 0 {
                m.record_volume(VOLUME_ENTERED, ObjectClass::Car);
                m.record_speed(40.0 + (i % 13) as f64 + seed as f64 * 0.3);
                m.record_headway(2.0 + (i % 7) as f64 * 0.5 + seed as f64);
                m.record_gap(1.0 - (i % 5) as f64 * 0.4);
            }
            if i % 300 == 0 {
                m.record_volume(VOLUME_ENTERED, ObjectClass::Truck);
                m.record_volume(VOLUME_ENTERED, ObjectClass::Person);
            }
            m.record_queue(Some((i % 11) as f64 * 3.0 + seed as f64), (i % 11) as usize / 3);
        }
    }

    fn minute(seed: u64) -> IntervalMeasures {
        let mut m = IntervalMeasures::new(Some(50.0)).with_loop(Some(2.0));
        fill(&mut m, seed);
        m
    }

    fn assert_close(a: &IntervalMeasures, b: &IntervalMeasures) {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(1.0);
        assert!(close(a.seconds, b.seconds));
        assert!(close(a.speed_sum_kmh, b.speed_sum_kmh));
        assert!(close(a.headway_sum_s, b.headway_sum_s));
        assert!(close(a.gap_sum_s, b.gap_sum_s));
        assert!(close(a.queue_sum_m, b.queue_sum_m));
        assert!(close(a.present_length_sum_m, b.present_length_sum_m));
        let strip = |m: &IntervalMeasures| IntervalMeasures {
            seconds: 0.0,
            present_length_sum_m: 0.0,
            speed_sum_kmh: 0.0,
            headway_sum_s: 0.0,
            gap_sum_s: 0.0,
            queue_sum_m: 0.0,
            ..m.clone()
        };
        assert_eq!(strip(a), strip(b));
    }

    #[test]
    fn merge_of_two_minutes_equals_recording_both() {
        let mut merged = minute(1);
        merged.merge(&minute(2));
        let mut both = IntervalMeasures::new(Some(50.0)).with_loop(Some(2.0));
        fill(&mut both, 1);
        fill(&mut both, 2);
        assert_close(&merged, &both);
        // Merging is also what a rollup of stored JSON rows does.
        let a: IntervalMeasures = serde_json::from_str(&serde_json::to_string(&minute(1)).unwrap()).unwrap();
        let b: IntervalMeasures = serde_json::from_str(&serde_json::to_string(&minute(2)).unwrap()).unwrap();
        let mut rolled = IntervalMeasures::default();
        rolled.merge(&a);
        rolled.merge(&b);
        assert_close(&rolled, &both);
        assert_eq!(rolled.view(true).speed_p85_kmh, both.view(true).speed_p85_kmh);
        assert_eq!(rolled.view(true).loop_occupancy_percent, both.view(true).loop_occupancy_percent);
        assert!(rolled.view(true).loop_occupancy_percent.is_some());
        // The next interval of an element keeps its lengths and nothing else.
        assert_eq!(minute(1).fresh(), IntervalMeasures::new(Some(50.0)).with_loop(Some(2.0)));
        // Merging an empty row changes nothing; an empty row's view has no numbers.
        let mut same = minute(1);
        same.merge(&IntervalMeasures::default());
        assert_eq!(same, minute(1));
        let empty = IntervalMeasures::default().view(true);
        let json = serde_json::to_value(&empty).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 5, "{json}");
    }

    #[test]
    fn view_numbers() {
        // One minute at 25 fps on a 50 m lane with a 2 m loop: 1500 frames, vehicles present in
        // 600 of them (a car and a truck in 300, a car in 300), the loop covered in every fifth
        // frame; 20 cars + 2 persons entered.
        let mut m = IntervalMeasures::new(Some(50.0)).with_loop(Some(2.0));
        for i in 0..1500u32 {
            let (present, lengths) = if i < 300 {
                (2, class_length_m(ObjectClass::Car) + class_length_m(ObjectClass::Truck))
            } else if i < 600 {
                (1, class_length_m(ObjectClass::Car))
            } else {
                (0, 0.0)
            };
            m.record_frame(0.04, present);
            m.record_footprints(i.is_multiple_of(5), lengths);
        }
        for _ in 0..20 {
            m.record_volume(VOLUME_ENTERED, ObjectClass::Car);
        }
        m.record_volume(VOLUME_ENTERED, ObjectClass::Person);
        m.record_volume(VOLUME_ENTERED, ObjectClass::Person);
        // Speeds: 100 samples, 10 each at 41.5, 42.5, ..., 50.5 km/h.
        for k in 0..10 {
            for _ in 0..10 {
                m.record_speed(41.5 + k as f64);
            }
        }
        m.record_headway(3.0);
        m.record_headway(1.5);
        m.record_gap(-0.5);
        m.record_gap(2.0);
        m.record_queue(Some(10.0), 2);
        m.record_queue(Some(20.0), 4);
        m.record_queue(Some(0.0), 0);
        let v = m.view(true);
        assert_eq!(v.frames, 1500);
        assert!((v.seconds - 60.0).abs() < 1e-9);
        assert_eq!(v.volume_total, 20);
        assert_eq!(v.volume["entered"][&ObjectClass::Person], 2);
        assert!((v.flow_per_hour.unwrap() - 1200.0).abs() < 1e-6);
        assert!((v.occupancy_percent.unwrap() - 40.0).abs() < 1e-9);
        assert!((v.loop_occupancy_percent.unwrap() - 20.0).abs() < 1e-9);
        assert!((v.mean_present.unwrap() - 0.6).abs() < 1e-12);
        // 0.6 vehicles on 50 m = 12 veh/km: LOS C.
        assert!((v.density_per_km.unwrap() - 12.0).abs() < 1e-9);
        // (300 x 14.5 m + 300 x 4.5 m) / 1500 frames = 3.8 m of the 50 m covered: 7.6 %, which is
        // the density (12 veh/km) times the mean length present (5,700 m / 900 = 6.33 m).
        let space = v.space_occupancy_percent.unwrap();
        assert!((space - 7.6).abs() < 1e-9, "{space}");
        assert!((space - 100.0 * 12.0 / 1000.0 * (5700.0 / 900.0)).abs() < 1e-9);
        assert_eq!(v.los, Some(Los::C));
        assert!((v.speed_mean_kmh.unwrap() - 46.0).abs() < 1e-9);
        // 85th of 100 samples: rank 85 falls at the end of bin 49 (samples 81..=90 in
        // [49, 50)), half way: 49.5.
        assert!((v.speed_p85_kmh.unwrap() - 49.5).abs() < 1e-9);
        assert_eq!(v.speed_samples, 100);
        assert_eq!(v.headway_mean_s, Some(2.25));
        assert_eq!(v.headway_min_s, Some(1.5));
        assert_eq!(v.gap_mean_s, Some(1.0));
        assert_eq!(v.queue_max_m, Some(20.0));
        assert_eq!(v.queue_mean_m, Some(10.0));
        assert_eq!(v.queue_max_vehicles, Some(4));
        assert_eq!(v.queue_mean_vehicles, Some(2.0));
        // A zone has no LOS nor lane occupancies; a line has no presence; uncalibrated has no
        // density nor space occupancy; a lane without a loop has no loop occupancy.
        assert_eq!(m.view(false).los, None);
        assert!(m.view(false).density_per_km.is_some());
        assert_eq!((m.view(false).loop_occupancy_percent, m.view(false).space_occupancy_percent), (None, None));
        let line = m.view_kind(ElementKind::Line);
        assert_eq!((line.occupancy_percent, line.mean_present, line.density_per_km), (None, None, None));
        assert_eq!((line.loop_occupancy_percent, line.space_occupancy_percent), (None, None));
        let uncal = IntervalMeasures { length_m: None, ..m.clone() }.view(true);
        assert_eq!((uncal.density_per_km, uncal.los, uncal.space_occupancy_percent), (None, None, None));
        assert_eq!(IntervalMeasures { loop_length_m: None, ..m.clone() }.view(true).loop_occupancy_percent, None);
        // Null-free JSON.
        let json = serde_json::to_string(&uncal).unwrap();
        assert!(!json.contains("null"), "{json}");
    }

    #[test]
    fn p85_single_bin_and_skewed() {
        let mut m = IntervalMeasures::default();
        m.record_speed(50.2);
        assert!((m.view(true).speed_p85_kmh.unwrap() - 50.85).abs() < 1e-9);
        let mut s = IntervalMeasures::default();
        for _ in 0..85 {
            s.record_speed(30.0);
        }
        for _ in 0..15 {
            s.record_speed(90.0);
        }
        assert_eq!(s.speed_percentile_kmh(0.85), Some(31.0));
        assert_eq!(s.speed_percentile_kmh(0.0), Some(30.0));
        assert_eq!(s.speed_percentile_kmh(1.0), Some(91.0));
    }

    #[test]
    fn bad_inputs_are_ignored() {
        let mut m = IntervalMeasures::new(Some(f64::NAN));
        assert_eq!(m.length_m, None);
        m.record_frame(f64::NAN, 1);
        m.record_frame(-1.0, 0);
        m.record_speed(f64::NAN);
        m.record_speed(-3.0);
        m.record_speed(1e12);
        m.record_headway(f64::INFINITY);
        m.record_headway(-1.0);
        m.record_gap(f64::NAN);
        m.record_queue(Some(f64::NAN), 1);
        m.record_footprints(true, f64::NAN);
        m.record_footprints(false, -4.5);
        assert_eq!((m.loop_occupied_frames, m.present_length_sum_m), (1, 0.0));
        assert_eq!(IntervalMeasures::default().with_loop(Some(f64::INFINITY)).loop_length_m, None);
        assert_eq!(m.frames, 2);
        assert_eq!(m.seconds, 0.0);
        assert_eq!(m.speed_count, 1);
        assert_eq!(m.speed_hist.get(&400), Some(&1));
        assert_eq!(m.headway_count, 0);
        assert_eq!(m.gap_count, 0);
        assert_eq!((m.queue_frames, m.queue_metres_frames), (1, 0));
        let v = m.view(true);
        assert_eq!(v.flow_per_hour, None);
        assert_eq!(v.queue_mean_m, None);
        assert_eq!(v.queue_mean_vehicles, Some(1.0));
        // Rows stored before a field existed still load.
        let old: IntervalMeasures = serde_json::from_str(r#"{"frames": 3, "seconds": 0.12}"#).unwrap();
        assert_eq!(old.frames, 3);
    }
}
