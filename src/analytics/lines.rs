//! Directed counting lines.
//!
//! A line is a segment from `a` to `b` in source-frame pixels (x right, y down). A track crosses it
//! when its ground point (bottom centre of its box) moves across the segment between two of its
//! observations. Direction: `in` when the ground point passes from the left-hand side to the
//! right-hand side of the line as seen travelling from `a` to `b` on the image; `out` the other way.
//! For a horizontal line drawn left to right (a = (0, y), b = (width, y)), `in` is moving down the
//! image, i.e. towards a camera that looks along the road. Each track is counted at most once per
//! line, in the direction of its first crossing, so jitter on the line cannot count it twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::events::Direction;
use crate::objects::ObjectClass;

/// A counting line as the API and the config give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub a: [f64; 2],
    pub b: [f64; 2],
}

impl LineSpec {
    /// Problems with this line, each naming it.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !crate::ids::is_valid_id(&self.id) {
            errors.push(format!("line id {:?} must be 1-64 characters of A-Z a-z 0-9 _ -", self.id));
        }
        if self.name.chars().count() > 200 {
            errors.push(format!("line {:?}: name is longer than 200 characters", self.id));
        }
        if self.name.chars().any(char::is_control) {
            errors.push(format!("line {:?}: name must not contain control characters", self.id));
        }
        let coords = [self.a[0], self.a[1], self.b[0], self.b[1]];
        if coords.iter().any(|c| !c.is_finite() || c.abs() > 100_000.0) {
            errors.push(format!("line {:?}: coordinates must be finite pixel positions", self.id));
        } else if (self.a[0] - self.b[0]).hypot(self.a[1] - self.b[1]) < 1.0 {
            errors.push(format!("line {:?}: a and b must be at least one pixel apart (zero-length segment)", self.id));
        }
        errors
    }
}

/// Which side of the directed line `a -> b` a point is on: > 0 right-hand (image coordinates), < 0 left.
fn side(a: (f64, f64), b: (f64, f64), p: (f64, f64)) -> f64 {
    (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0)
}

/// The direction in which the move `from -> to` crosses segment `a -> b`, if it does. Both points
/// must be strictly off the line (see `LineCounter` for points on it).
pub fn crossing(a: (f64, f64), b: (f64, f64), from: (f64, f64), to: (f64, f64)) -> Option<Direction> {
    let s_from = side(a, b, from);
    let s_to = side(a, b, to);
    let direction = if s_from < 0.0 && s_to > 0.0 {
        Direction::In
    } else if s_from > 0.0 && s_to < 0.0 {
        Direction::Out
    } else {
        return None;
    };
    // The move crosses the infinite line; it must also pass between a and b.
    let t_a = side(from, to, a);
    let t_b = side(from, to, b);
    if (t_a > 0.0 && t_b > 0.0) || (t_a < 0.0 && t_b < 0.0) {
        return None;
    }
    Some(direction)
}

/// Counts of one line, by direction and class.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LineCount {
    pub id: String,
    pub name: String,
    #[serde(rename = "in")]
    pub in_: u64,
    pub out: u64,
    pub by_class: BTreeMap<ObjectClass, DirectionCount>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DirectionCount {
    #[serde(rename = "in")]
    pub in_: u64,
    pub out: u64,
}

impl DirectionCount {
    fn add(&mut self, direction: Direction) {
        match direction {
            Direction::In => self.in_ += 1,
            Direction::Out => self.out += 1,
        }
    }
}

/// A crossing found in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    pub line_id: String,
    pub direction: Direction,
    pub class: ObjectClass,
}

/// The lines of one camera and the state needed to detect crossings: for each track and line,
/// the track's last ground point that was off the line (a point exactly on a line does not move
/// the anchor, so stopping on the line and leaving still counts), and which lines it was counted on.
pub struct LineCounter {
    lines: Vec<LineSpec>,
    counts: Vec<LineCount>,
    anchors: HashMap<(u64, usize), (f64, f64)>,
    counted: HashSet<(u64, usize)>,
}

impl LineCounter {
    pub fn new(lines: Vec<LineSpec>) -> Self {
        let counts =
            lines.iter().map(|l| LineCount { id: l.id.clone(), name: l.name.clone(), ..Default::default() }).collect();
        Self { lines, counts, anchors: HashMap::new(), counted: HashSet::new() }
    }

    /// Records a track's new ground point; returns the lines it crossed since its last one.
    pub fn observe(&mut self, track_id: u64, point: (f64, f64), class: ObjectClass) -> Vec<Crossing> {
        let mut crossings = Vec::new();
        for (i, line) in self.lines.iter().enumerate() {
            let key = (track_id, i);
            if self.counted.contains(&key) {
                continue;
            }
            let a = (line.a[0], line.a[1]);
            let b = (line.b[0], line.b[1]);
            if side(a, b, point) == 0.0 {
                continue;
            }
            let Some(anchor) = self.anchors.insert(key, point) else { continue };
            if let Some(direction) = crossing(a, b, anchor, point) {
                self.counted.insert(key);
                self.anchors.remove(&key);
                let count = &mut self.counts[i];
                match direction {
                    Direction::In => count.in_ += 1,
                    Direction::Out => count.out += 1,
                }
                count.by_class.entry(class).or_default().add(direction);
                crossings.push(Crossing { line_id: line.id.clone(), direction, class });
            }
        }
        crossings
    }

    /// Forgets tracks that are no longer alive, so memory follows the live tracks.
    pub fn retain_tracks(&mut self, alive: impl Fn(u64) -> bool) {
        self.anchors.retain(|(id, _), _| alive(*id));
        self.counted.retain(|(id, _)| alive(*id));
    }

    pub fn counts(&self) -> &[LineCount] {
        &self.counts
    }

    /// Starts from the counts of an earlier instance (a restarted shard), line by line id; lines
    /// it did not have start at zero.
    pub fn continue_counts(&mut self, earlier: &[LineCount]) {
        for count in &mut self.counts {
            if let Some(before) = earlier.iter().find(|b| b.id == count.id) {
                *count = before.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn horizontal(y: f64) -> LineSpec {
        LineSpec { id: "l1".into(), name: String::new(), a: [0.0, y], b: [320.0, y] }
    }

    #[test]
    fn moving_down_across_a_left_to_right_line_is_in() {
        let d = crossing((0.0, 150.0), (320.0, 150.0), (100.0, 140.0), (102.0, 160.0));
        assert_eq!(d, Some(Direction::In));
        let d = crossing((0.0, 150.0), (320.0, 150.0), (100.0, 160.0), (102.0, 140.0));
        assert_eq!(d, Some(Direction::Out));
    }

    #[test]
    fn reversing_the_line_reverses_the_direction() {
        let d = crossing((320.0, 150.0), (0.0, 150.0), (100.0, 140.0), (102.0, 160.0));
        assert_eq!(d, Some(Direction::Out));
    }

    #[test]
    fn passing_beside_the_segment_is_not_a_crossing() {
        assert_eq!(crossing((0.0, 150.0), (100.0, 150.0), (200.0, 140.0), (200.0, 160.0)), None);
        assert_eq!(crossing((0.0, 150.0), (100.0, 150.0), (50.0, 100.0), (60.0, 140.0)), None);
    }

    #[test]
    fn landing_on_the_line_then_leaving_counts_once() {
        let mut counter = LineCounter::new(vec![horizontal(150.0)]);
        assert!(counter.observe(1, (10.0, 140.0), ObjectClass::Car).is_empty());
        assert!(counter.observe(1, (10.0, 150.0), ObjectClass::Car).is_empty());
        let c = counter.observe(1, (10.0, 160.0), ObjectClass::Car);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].direction, Direction::In);
    }

    #[test]
    fn a_track_is_counted_once_per_line_despite_jitter() {
        let mut counter = LineCounter::new(vec![horizontal(150.0)]);
        let mut total = 0;
        for y in [140.0, 151.0, 149.0, 152.0, 148.0, 170.0] {
            total += counter.observe(7, (50.0, y), ObjectClass::Truck).len();
        }
        assert_eq!(total, 1);
        let count = &counter.counts()[0];
        assert_eq!((count.in_, count.out), (1, 0));
        assert_eq!(count.by_class[&ObjectClass::Truck], DirectionCount { in_: 1, out: 0 });
    }

    #[test]
    fn each_track_and_line_counts_separately() {
        let mut counter = LineCounter::new(vec![horizontal(150.0), LineSpec { id: "l2".into(), ..horizontal(200.0) }]);
        for id in [1, 2] {
            counter.observe(id, (50.0, 100.0), ObjectClass::Car);
            counter.observe(id, (50.0, 210.0), ObjectClass::Car);
        }
        assert_eq!(counter.counts()[0].in_, 2);
        assert_eq!(counter.counts()[1].in_, 2);
        counter.retain_tracks(|id| id == 2);
        assert!(counter.observe(1, (50.0, 90.0), ObjectClass::Car).is_empty(), "forgotten track starts afresh");
    }

    #[test]
    fn zero_length_and_non_finite_lines_are_rejected() {
        let zero = LineSpec { id: "z".into(), name: String::new(), a: [5.0, 5.0], b: [5.0, 5.0] };
        assert!(zero.validate()[0].contains("zero-length"));
        let nan = LineSpec { id: "n".into(), name: String::new(), a: [f64::NAN, 5.0], b: [5.0, 5.0] };
        assert_eq!(nan.validate().len(), 1);
        assert!(horizontal(1.0).validate().is_empty());
        let bad_id = LineSpec { id: "a b".into(), ..horizontal(1.0) };
        assert_eq!(bad_id.validate().len(), 1);
        let nul = LineSpec { name: "gate\u{0}".into(), ..horizontal(1.0) };
        assert!(nul.validate()[0].contains("control characters"));
        let long = LineSpec { name: "é".repeat(200), ..horizontal(1.0) };
        assert!(long.validate().is_empty(), "200 characters, 400 bytes");
    }
}
