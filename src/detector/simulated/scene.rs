//! The synthetic road scene: where every simulated vehicle is at a given time.
//!
//! Vehicles drive top to bottom across a 640x360 image, in lanes side by side. Vehicle `k` of a
//! camera has its ground point (bottom centre of its box) on the line y = 180 at exactly
//! `phase + k * period` seconds since the UNIX epoch, `period` being 60 / crossings per minute,
//! and `phase` drawn from the camera's seed. The scene is therefore a pure function of (seed,
//! rate, frame rate, time): two processes running the same camera see the same vehicles at the
//! same times, so handing a camera to another node does not change what is counted.
//!
//! The tracker must be able to follow every vehicle, so the geometry is derived from its needs:
//! a vehicle moves a third of its box height between two frames (an IoU of 0.5 with its previous
//! box, well above what confirms a new track), so its speed follows the frame rate and it stays
//! in view for 15 frames whatever the rate; consecutive vehicles take consecutive lanes, and
//! there are enough lanes that two vehicles of one lane are always more than a box height plus a
//! step apart (no box ever overlaps another vehicle's).

use crate::objects::{BBox, Detection, ObjectClass};

pub const FRAME_WIDTH: u32 = 640;
pub const FRAME_HEIGHT: u32 = 360;
/// Where the vehicles cross: the line `{"a": [0, 180], "b": [640, 180]}` counts each once, `in`.
pub const LINE_Y: f64 = 180.0;
/// Box height of every vehicle, pixels.
const BOX_HEIGHT: f64 = 60.0;
/// How far a vehicle moves between two frames, pixels.
const STEP: f64 = BOX_HEIGHT / 3.0;
/// Share of a lane's width a vehicle's box takes.
const BOX_WIDTH_SHARE: f64 = 0.75;
/// Headroom on the spacing of two vehicles of one lane over a box height plus a step.
const SPACING_MARGIN: f64 = 1.25;
const MIN_LANES: u32 = 4;
/// At most 64 lanes (10 pixels wide): beyond `MAX_LANES / lanes_per_rate()` crossings per frame
/// the vehicles of one lane come close enough to confuse the tracker.
const MAX_LANES: u32 = 64;
/// The score of every synthetic detection: above the tracker's thresholds (`new_track_thresh`
/// 0.6 by default), so every vehicle starts a track.
pub const SCORE: f32 = 0.9;

/// One simulated camera's scene.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scene {
    seed: u64,
    /// Seconds between two crossings.
    period: f64,
    /// Pixels per second down the image.
    speed: f64,
    lanes: u32,
    /// Crossing time of vehicle 0, seconds since the epoch, in `[0, period)`.
    phase: f64,
}

impl Scene {
    /// The scene of the camera seeded `seed`, `crossings_per_min` (> 0) vehicles a minute,
    /// sampled at `fps` (> 0) frames a second.
    pub fn new(seed: u64, crossings_per_min: f64, fps: f64) -> Self {
        let period = 60.0 / crossings_per_min;
        let per_frame = 1.0 / (period * fps);
        let lanes = (lanes_per_rate() * per_frame).ceil().clamp(f64::from(MIN_LANES), f64::from(MAX_LANES)) as u32;
        let phase = unit(mix(seed)) * period;
        Self { seed, period, speed: STEP * fps, lanes, phase }
    }

    pub fn lanes(&self) -> u32 {
        self.lanes
    }

    /// The vehicles in view at `t` seconds since the epoch, as a perfect detector sees them.
    pub fn detections_at(&self, t: f64) -> Vec<Detection> {
        // In view while the whole box is: ground point from BOX_HEIGHT down to the bottom edge.
        let earliest = t - (f64::from(FRAME_HEIGHT) - LINE_Y) / self.speed;
        let latest = t + (LINE_Y - BOX_HEIGHT) / self.speed;
        let first = ((earliest - self.phase) / self.period).ceil() as i64;
        let last = ((latest - self.phase) / self.period).floor() as i64;
        (first..=last).map(|k| self.vehicle(k, t)).collect()
    }

    /// How many vehicles cross the line in the time interval `(from, to]` (seconds since the epoch).
    pub fn crossings_between(&self, from: f64, to: f64) -> u64 {
        let index = |t: f64| ((t - self.phase) / self.period).floor() as i64;
        index(to).saturating_sub(index(from)).max(0) as u64
    }

    fn vehicle(&self, k: i64, t: f64) -> Detection {
        let crossing = self.phase + k as f64 * self.period;
        let ground = LINE_Y + (t - crossing) * self.speed;
        let lane_width = f64::from(FRAME_WIDTH) / f64::from(self.lanes);
        let lane = k.rem_euclid(i64::from(self.lanes)) as f64;
        let x1 = lane * lane_width + lane_width * (1.0 - BOX_WIDTH_SHARE) / 2.0;
        let x2 = x1 + lane_width * BOX_WIDTH_SHARE;
        let bbox = BBox::new(x1 as f32, (ground - BOX_HEIGHT) as f32, x2 as f32, ground as f32);
        Detection::new(bbox, SCORE, self.class_of(k))
    }

    /// A mix of classes, fixed per vehicle: 80 % cars, 10 % trucks, 5 % buses, 5 % motorcycles.
    fn class_of(&self, k: i64) -> ObjectClass {
        match mix(self.seed ^ mix(k as u64)) % 20 {
            0 | 1 => ObjectClass::Truck,
            2 => ObjectClass::Bus,
            3 => ObjectClass::Motorcycle,
            _ => ObjectClass::Car,
        }
    }
}

/// Lanes needed per crossing per frame so that two vehicles of one lane are always more than a
/// box height plus a step apart: the spacing in a lane is `STEP * lanes / crossings per frame`.
fn lanes_per_rate() -> f64 {
    SPACING_MARGIN * (BOX_HEIGHT + STEP) / STEP
}

/// SplitMix64's finaliser: a well-spread 64-bit hash of a 64-bit value.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in `[0, 1)` from the top 53 bits of `x`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::lines::{LineCounter, LineSpec};
    use crate::analytics::tracker::{Tracker, TrackerConfig};

    /// Around now: the scene must hold at epoch-sized times, not only near zero.
    const START: f64 = 1_750_000_000.0;

    /// Counts crossings of the line through the real tracker and line counter, frame by frame.
    fn counted(scene: &Scene, fps: f64, seconds: f64) -> u64 {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let line = LineSpec { id: "l1".into(), name: String::new(), a: [0.0, LINE_Y], b: [640.0, LINE_Y] };
        let mut counter = LineCounter::new(vec![line]);
        let frames = (seconds * fps) as u64;
        for n in 0..=frames {
            let t = START + n as f64 / fps;
            for object in tracker.update(&scene.detections_at(t)) {
                let (x, y) = object.bbox.ground_point();
                counter.observe(object.track_id, (f64::from(x), f64::from(y)), object.class);
            }
        }
        let count = &counter.counts()[0];
        assert_eq!(count.out, 0, "every vehicle drives down the image");
        count.in_
    }

    #[test]
    fn the_tracker_counts_every_scheduled_crossing() {
        for (rate, fps) in [(30.0, 1.0), (60.0, 2.0), (600.0, 1.0), (600.0, 5.0), (5.0, 25.0), (120.0, 0.5)] {
            let scene = Scene::new(7, rate, fps);
            let seconds = 300.0;
            // The first vehicles are already past the line when the tracker first sees them, and
            // the last ones have not been seen below it yet.
            let scheduled = scene.crossings_between(START + 10.0, START + seconds - 10.0);
            let got = counted(&scene, fps, seconds);
            assert!(
                got >= scheduled && got <= scene.crossings_between(START, START + seconds),
                "rate {rate}/min at {fps} fps: counted {got}, scheduled {scheduled} ({} lanes)",
                scene.lanes()
            );
        }
    }

    #[test]
    fn the_rate_holds_over_a_long_window() {
        let scene = Scene::new(42, 37.0, 3.0);
        let hour = scene.crossings_between(START, START + 3600.0);
        assert!((2219..=2221).contains(&hour), "{hour}");
        assert_eq!(scene.crossings_between(START, START), 0);
    }

    #[test]
    fn the_scene_depends_only_on_seed_rate_fps_and_time() {
        let a = Scene::new(1, 60.0, 2.0);
        assert_eq!(a.detections_at(START + 12.5), Scene::new(1, 60.0, 2.0).detections_at(START + 12.5));
        assert_ne!(a.detections_at(START + 12.5), Scene::new(2, 60.0, 2.0).detections_at(START + 12.5));
    }

    #[test]
    fn boxes_stay_inside_the_frame_and_apart() {
        let scene = Scene::new(3, 600.0, 1.0);
        for n in 0..200 {
            let boxes = scene.detections_at(START + f64::from(n) * 0.37);
            assert!(!boxes.is_empty());
            for (i, a) in boxes.iter().enumerate() {
                let b = a.bbox;
                assert!(b.x1 >= 0.0 && b.x2 <= 640.0 && b.y1 >= -0.01 && b.y2 <= 360.01, "{b:?}");
                assert!(boxes[i + 1..].iter().all(|o| o.bbox.iou(&b) == 0.0), "overlapping boxes");
            }
        }
    }
}
