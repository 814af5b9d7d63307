//! The vehicle classes traffic engineers count: car, van (light goods), bus, truck (heavy goods),
//! motorcycle and bicycle, one per track, voted over its life.
//!
//! The detector knows car, bus and truck, and its "truck" is any goods vehicle from a pick-up to an
//! articulated lorry. Three kinds of evidence decide between car, van, bus and truck:
//!
//! - **the detector's probabilities** of car, bus and truck, summed over the track's detections
//!   weighted by their scores (a van often scores as both car and truck);
//! - **size relative to the cars around it**: the square root of the box area, and the box height,
//!   against the typical car at the same place in the image, learnt from the camera's own confident
//!   car detections (planes `sqrt(area) = a + b x + c y` and `height = a + b x + c y` over their
//!   ground points: perspective makes a vehicle's image size grow linearly with its distance down
//!   the image on a flat road). The track's relative size and height are medians over its latest
//!   boxes, against the planes as they are when asked. Vans are hardly longer than cars but
//!   taller: the height tells them apart, the size (area) tells heavies.
//!
//! Sizes are relative, not in metres, on calibrated cameras too: the calibration maps the road
//! plane, and a box mixes a vehicle's length with its height (on the calibrated overpass clip the
//! ground distance from a car box's bottom to its top edge reads 10 to 20 m, and box widths of
//! 2.0-2.6 m do not separate cars from the box truck at 2.6 m). The typical car at the same place
//! already absorbs the perspective that metres would correct.
//!
//! Rules, in order (constants below; accuracy: docs/ANALYTICS.md, Classes):
//! 1. motorcycles, bicycles and persons keep the detector's vote;
//! 2. heavy: relative size at least `HEAVY_SIZE`, or at least `HEAVY_SIZE_WITH_TRUCK_VOTES` when the
//!    detector's share of bus and truck is at least `HEAVY_SHARE`; a bus when the detector's bus
//!    probability beats its truck probability, else a truck;
//! 3. a bus when the detector votes bus (its bus probability beats car and truck together) and the
//!    vehicle is at least van-sized;
//! 4. van: relative height at least `VAN_HEIGHT`, or relative size at least `VAN_SIZE`;
//! 5. otherwise a car.
//!
//! Until `REFERENCE_MIN_TRACKS` confident cars have taught the size reference (one or two cars
//! say nothing about the lanes they did not use), there is none, and the detector decides: a
//! heavy vehicle when its share of bus and truck is at least `HEAVY_SHARE`, else its vote.

use std::collections::HashMap;

use crate::analytics::tracker::TrackedObject;
use crate::objects::{BBox, ObjectClass};

/// Relative size (linear: square root of the area ratio) from which a vehicle is heavy.
pub const HEAVY_SIZE: f64 = 2.0;
/// Relative size from which a vehicle the detector calls partly a truck or bus is heavy.
pub const HEAVY_SIZE_WITH_TRUCK_VOTES: f64 = 1.2;
/// Share of bus and truck in the detector's probabilities that, with `HEAVY_SIZE_WITH_TRUCK_VOTES`,
/// makes a heavy vehicle (the vans of the highway clip score 0.17-0.20, its cars at most 0.14).
pub const HEAVY_SHARE: f64 = 0.25;
/// Relative height from which a vehicle is a van.
pub const VAN_HEIGHT: f64 = 1.18;
/// Relative size from which a vehicle is a van, whatever its height.
pub const VAN_SIZE: f64 = 1.3;
/// Confident car detections the size reference needs before it is used.
pub const REFERENCE_MIN_SAMPLES: f64 = 40.0;
/// Cars (tracks) that must have taught the size reference before it is used.
pub const REFERENCE_MIN_TRACKS: u32 = 5;
/// A detection teaches the reference only when at least this sure (and voted car).
const REFERENCE_MIN_SCORE: f32 = 0.5;
/// Once the reference is in use, only boxes within this factor of the typical car teach it, so
/// vans and lorries do not pull the typical car up.
const REFERENCE_TRIM: f64 = 1.25;
/// Weight of past samples per new one: the reference follows a camera that moved or zoomed over
/// a few thousand detections.
const REFERENCE_FORGET: f64 = 0.999;
/// Ridge (per sample, px^2) on the reference planes' x slope.
const X_SLOPE_RIDGE: f64 = 1600.0;
/// Boxes kept per track for its medians.
const MAX_SIZE_SAMPLES: usize = 64;
/// Frames after which an unseen track's evidence is dropped.
const FORGET_FRAMES: u64 = 900;

/// Why a track has the class it has.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClassEvidence {
    /// Share of truck and bus in the detector's motor-vehicle probabilities over the track.
    pub heavy_share: f64,
    /// Median size (square root of the area) against the typical car at the same place (None: no
    /// reference yet).
    pub relative_size: Option<f64>,
    /// Median box height against the typical car's at the same place.
    pub relative_height: Option<f64>,
}

/// One camera's classifier: the size reference and every live track's evidence.
#[derive(Default)]
pub struct VehicleClassifier {
    size: SizeReference,
    height: SizeReference,
    /// Tracks that taught the references.
    teachers: u32,
    tracks: HashMap<u64, TrackEvidence>,
    frame: u64,
}

impl VehicleClassifier {
    /// Adds this frame's detections to their tracks' evidence and returns the objects with the
    /// class the evidence gives.
    pub fn classify(&mut self, objects: &[TrackedObject]) -> Vec<TrackedObject> {
        self.frame += 1;
        let frame = self.frame;
        let mut out = Vec::with_capacity(objects.len());
        for object in objects {
            let evidence = self.tracks.entry(object.track_id).or_default();
            evidence.last_frame = frame;
            evidence.detected = Some(object.class);
            if object.class.is_motor_vehicle() {
                let w = f64::from(object.score);
                let v = object.vehicle;
                evidence.car += w * f64::from(v.car);
                evidence.bus += w * f64::from(v.bus);
                evidence.truck += w * f64::from(v.truck);
                if evidence.boxes.len() == MAX_SIZE_SAMPLES {
                    evidence.boxes.remove(0);
                }
                evidence.boxes.push(object.bbox);
                let looks_like_car = object.class == ObjectClass::Car
                    && object.score >= REFERENCE_MIN_SCORE
                    && v.car >= v.truck.max(v.bus);
                if looks_like_car {
                    self.size.learn(&object.bbox, linear_size);
                    self.height.learn(&object.bbox, BBox::height);
                    if !evidence.taught {
                        evidence.taught = true;
                        self.teachers += 1;
                    }
                }
            }
            let mut classified = *object;
            let references = (self.teachers >= REFERENCE_MIN_TRACKS).then_some((&self.size, &self.height));
            classified.class = evidence.class(references);
            out.push(classified);
        }
        self.tracks.retain(|_, e| frame - e.last_frame <= FORGET_FRAMES);
        out
    }

    /// The evidence behind a live track's class.
    pub fn evidence(&self, track_id: u64) -> Option<ClassEvidence> {
        self.tracks.get(&track_id).map(|e| e.summary(self.references()))
    }

    /// The size and height references, once enough cars taught them.
    fn references(&self) -> Option<(&SizeReference, &SizeReference)> {
        (self.teachers >= REFERENCE_MIN_TRACKS).then_some((&self.size, &self.height))
    }
}

fn linear_size(bbox: &BBox) -> f32 {
    bbox.area().sqrt()
}

/// The median of the boxes' measures against the reference; None without a reference.
fn median_ratio(boxes: &[BBox], reference: &SizeReference, measure: fn(&BBox) -> f32) -> Option<f64> {
    let mut sorted: Vec<f64> = boxes.iter().filter_map(|b| reference.ratio(b, measure)).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 })
}

#[derive(Default)]
struct TrackEvidence {
    detected: Option<ObjectClass>,
    car: f64,
    bus: f64,
    truck: f64,
    /// The latest boxes (at most `MAX_SIZE_SAMPLES`), judged against the reference as it is when
    /// the class is asked for: a track seen while the reference was young is judged again later.
    boxes: Vec<BBox>,
    /// Whether this track taught the references.
    taught: bool,
    last_frame: u64,
}

impl TrackEvidence {
    fn summary(&self, references: Option<(&SizeReference, &SizeReference)>) -> ClassEvidence {
        let motor = self.car + self.bus + self.truck;
        ClassEvidence {
            heavy_share: if motor > 0.0 { (self.bus + self.truck) / motor } else { 0.0 },
            relative_size: references.and_then(|(size, _)| median_ratio(&self.boxes, size, linear_size)),
            relative_height: references.and_then(|(_, height)| median_ratio(&self.boxes, height, BBox::height)),
        }
    }

    fn class(&self, references: Option<(&SizeReference, &SizeReference)>) -> ObjectClass {
        let detected = self.detected.unwrap_or(ObjectClass::Car);
        if !detected.is_motor_vehicle() {
            return detected;
        }
        let evidence = self.summary(references);
        let heavy_kind = if self.bus > self.truck { ObjectClass::Bus } else { ObjectClass::Truck };
        let size = evidence.relative_size;
        let Some(size) = size else {
            // No reference yet: the detector alone.
            return if evidence.heavy_share >= HEAVY_SHARE { heavy_kind } else { detected };
        };
        if size >= HEAVY_SIZE || (size >= HEAVY_SIZE_WITH_TRUCK_VOTES && evidence.heavy_share >= HEAVY_SHARE) {
            return heavy_kind;
        }
        let van_sized = size >= VAN_SIZE || evidence.relative_height.is_some_and(|h| h >= VAN_HEIGHT);
        if self.bus > self.car + self.truck && van_sized {
            ObjectClass::Bus
        } else if van_sized {
            ObjectClass::Van
        } else {
            ObjectClass::Car
        }
    }
}

/// The typical car's measure (linear size or height) at a ground point: a weighted least-squares
/// plane `a + b x + c y` with exponential forgetting.
#[derive(Default)]
struct SizeReference {
    /// Normal equations: sum of w [1 x y]^T [1 x y] and of w [1 x y]^T s.
    xtx: [[f64; 3]; 3],
    xts: [f64; 3],
    samples: f64,
    plane: Option<[f64; 3]>,
}

impl SizeReference {
    fn typical(&self, x: f64, y: f64) -> Option<f64> {
        let [a, b, c] = self.plane?;
        Some(a + b * x + c * y).filter(|s| *s > 1.0)
    }

    /// The box's measure against the typical car's where it stands.
    fn ratio(&self, bbox: &BBox, measure: fn(&BBox) -> f32) -> Option<f64> {
        let (x, y) = bbox.ground_point();
        let typical = self.typical(f64::from(x), f64::from(y))?;
        Some(f64::from(measure(bbox)) / typical)
    }

    fn learn(&mut self, bbox: &BBox, measure: fn(&BBox) -> f32) {
        if let Some(ratio) = self.ratio(bbox, measure) {
            if !(1.0 / REFERENCE_TRIM..=REFERENCE_TRIM).contains(&ratio) {
                return;
            }
        }
        let (x, y) = bbox.ground_point();
        let row = [1.0, f64::from(x), f64::from(y)];
        let s = f64::from(measure(bbox));
        for i in 0..3 {
            for j in 0..3 {
                self.xtx[i][j] = self.xtx[i][j] * REFERENCE_FORGET + row[i] * row[j];
            }
            self.xts[i] = self.xts[i] * REFERENCE_FORGET + row[i] * s;
        }
        self.samples = self.samples * REFERENCE_FORGET + 1.0;
        if self.samples >= REFERENCE_MIN_SAMPLES {
            // A ridge on the x slope: until cars have spread across the image, size follows y.
            let mut xtx = self.xtx;
            xtx[1][1] += X_SLOPE_RIDGE * self.samples;
            self.plane = solve3(xtx, self.xts).or(self.plane);
        }
    }
}

/// Solves the 3x3 system by Cramer's rule; None when it is (nearly) singular, e.g. every car so
/// far stood on one line of the image.
fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    let scale = m[0][0] * m[1][1] * m[2][2];
    if !d.is_finite() || d.abs() <= 1e-9 * scale.abs().max(1e-12) {
        return None;
    }
    let mut out = [0.0; 3];
    for (k, value) in out.iter_mut().enumerate() {
        let mut mk = m;
        for row in 0..3 {
            mk[row][k] = v[row];
        }
        *value = det(&mk) / d;
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::VehicleProbs;

    const CAR: VehicleProbs = VehicleProbs { car: 0.9, bus: 0.0, truck: 0.05 };

    /// A box whose linear size is `scale` times the typical car standing at (x, y): a car is
    /// 10 + 0.2 y pixels square (perspective: bigger lower in the image).
    fn object(track_id: u64, x: f32, y: f32, scale: f32, class: ObjectClass, vehicle: VehicleProbs) -> TrackedObject {
        let side = (10.0 + 0.2 * y) * scale;
        TrackedObject {
            track_id,
            bbox: BBox::new(x - side / 2.0, y - side, x + side / 2.0, y),
            class,
            score: 0.8,
            vehicle,
        }
    }

    /// Drives `n` cars down the image, each seen at 10 places, so the reference is learnt.
    fn learn_cars(classifier: &mut VehicleClassifier, n: u64) {
        for id in 0..n {
            for step in 0..10 {
                let (x, y) = (50.0 + (id % 5) as f32 * 40.0, 40.0 + step as f32 * 18.0);
                let out = classifier.classify(&[object(1000 + id, x, y, 1.0, ObjectClass::Car, CAR)]);
                assert_eq!(out[0].class, ObjectClass::Car, "a typical car stays a car");
            }
        }
    }

    fn class_of(
        classifier: &mut VehicleClassifier,
        id: u64,
        scale: f32,
        class: ObjectClass,
        p: VehicleProbs,
    ) -> ObjectClass {
        let mut last = class;
        for step in 0..8 {
            let out = classifier.classify(&[object(id, 120.0, 60.0 + step as f32 * 20.0, scale, class, p)]);
            last = out[0].class;
        }
        last
    }

    #[test]
    fn size_against_the_cars_around_it_splits_cars_vans_and_heavies() {
        let mut classifier = VehicleClassifier::default();
        learn_cars(&mut classifier, 20);
        assert_eq!(class_of(&mut classifier, 1, 1.05, ObjectClass::Car, CAR), ObjectClass::Car);
        assert_eq!(class_of(&mut classifier, 2, 1.45, ObjectClass::Car, CAR), ObjectClass::Van);
        // A van is hardly bigger than a car, but taller: 1.25 times the height, the same width.
        let mut tall = ObjectClass::Car;
        for step in 0..8 {
            let mut van = object(3, 120.0, 60.0 + step as f32 * 20.0, 1.0, ObjectClass::Car, CAR);
            van.bbox.y1 -= van.bbox.height() * 0.25;
            tall = classifier.classify(&[van])[0].class;
        }
        assert_eq!(tall, ObjectClass::Van);
        let evidence = classifier.evidence(3).unwrap();
        assert!(
            evidence.relative_size.unwrap() < VAN_SIZE && evidence.relative_height.unwrap() > VAN_HEIGHT,
            "{evidence:?}"
        );
        // A lorry is heavy whatever the detector's top class; a big vehicle it calls a bus is a bus.
        assert_eq!(class_of(&mut classifier, 4, 2.6, ObjectClass::Car, CAR), ObjectClass::Truck);
        let bus = VehicleProbs { car: 0.1, bus: 0.7, truck: 0.2 };
        assert_eq!(class_of(&mut classifier, 5, 2.6, ObjectClass::Bus, bus), ObjectClass::Bus);
        let evidence = classifier.evidence(4).expect("live track");
        assert!((evidence.relative_size.unwrap() - 2.6).abs() < 0.1, "{evidence:?}");
        // Vans and lorries did not teach the reference: a typical car is still a car.
        assert_eq!(class_of(&mut classifier, 6, 1.0, ObjectClass::Car, CAR), ObjectClass::Car);
    }

    #[test]
    fn without_a_reference_the_detector_decides_and_other_classes_keep_its_vote() {
        let mut classifier = VehicleClassifier::default();
        assert_eq!(class_of(&mut classifier, 1, 1.5, ObjectClass::Car, CAR), ObjectClass::Car);
        assert_eq!(class_of(&mut classifier, 2, 2.5, ObjectClass::Truck, VehicleProbs::default()), ObjectClass::Truck);
        learn_cars(&mut classifier, 20);
        let none = VehicleProbs::default();
        assert_eq!(class_of(&mut classifier, 3, 3.0, ObjectClass::Motorcycle, none), ObjectClass::Motorcycle);
        assert_eq!(class_of(&mut classifier, 4, 3.0, ObjectClass::Person, none), ObjectClass::Person);
    }

    #[test]
    fn a_vehicle_half_again_a_car_is_heavy_when_the_detector_sees_a_truck_in_it() {
        let mut classifier = VehicleClassifier::default();
        learn_cars(&mut classifier, 20);
        let box_truck = VehicleProbs { car: 0.4, bus: 0.0, truck: 0.3 };
        assert_eq!(class_of(&mut classifier, 1, 1.6, ObjectClass::Car, box_truck), ObjectClass::Truck);
        // As big, but a car to the detector: a large van.
        assert_eq!(class_of(&mut classifier, 2, 1.6, ObjectClass::Car, CAR), ObjectClass::Van);
    }

    #[test]
    fn the_plane_fit_solves_exact_systems_and_refuses_degenerate_ones() {
        let m = [[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]];
        let x = [1.0, -2.0, 0.5];
        let v = [0, 1, 2].map(|i| m[i][0] * x[0] + m[i][1] * x[1] + m[i][2] * x[2]);
        let solved = solve3(m, v).unwrap();
        assert!(solved.iter().zip(x).all(|(a, b)| (a - b).abs() < 1e-9), "{solved:?}");
        assert_eq!(solve3([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]], [1.0, 2.0, 3.0]), None);
    }
}
