//! How far two models agree on the same frames: each detection of the judged model is matched to
//! at most one detection of the reference of the same class at IoU >= `MATCH_IOU` (greedily, best
//! overlap first). Matched: a true positive; left over on the judged side: a false positive; left
//! over on the reference side: a false negative. Precision, recall and F1 follow per class and
//! over all classes (micro-averaged). F1 is symmetric: swapping the two models swaps precision
//! and recall and keeps F1.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::objects::{Detection, ObjectClass};

/// The overlap at which two detections count as the same object.
pub const MATCH_IOU: f32 = 0.5;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.true_positives += other.true_positives;
        self.false_positives += other.false_positives;
        self.false_negatives += other.false_negatives;
    }

    /// Whether either model saw anything.
    pub fn is_empty(&self) -> bool {
        self.true_positives + self.false_positives + self.false_negatives == 0
    }

    pub fn scores(&self) -> Scores {
        let tp = self.true_positives as f64;
        let ratio = |den: f64| if den > 0.0 { tp / den } else { 1.0 };
        Scores {
            precision: ratio(tp + self.false_positives as f64),
            recall: ratio(tp + self.false_negatives as f64),
            // Two models that both see nothing agree.
            f1: ratio(tp + 0.5 * (self.false_positives + self.false_negatives) as f64),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// The agreement of a judged model with a reference, accumulated over frames.
#[derive(Debug, Clone, Default)]
pub struct Agreement {
    by_class: BTreeMap<ObjectClass, Tally>,
    frames: u64,
}

impl Agreement {
    /// Adds one frame: the reference's and the judged model's detections on it.
    pub fn add_frame(&mut self, reference: &[Detection], judged: &[Detection]) {
        self.frames += 1;
        for class in ObjectClass::ALL {
            let r: Vec<_> = reference.iter().filter(|d| d.class == class).collect();
            let j: Vec<_> = judged.iter().filter(|d| d.class == class).collect();
            if r.is_empty() && j.is_empty() {
                continue;
            }
            let matched = match_count(&r, &j);
            self.by_class.entry(class).or_default().add(Tally {
                true_positives: matched,
                false_positives: j.len() as u64 - matched,
                false_negatives: r.len() as u64 - matched,
            });
        }
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Over all classes.
    pub fn total(&self) -> Tally {
        let mut total = Tally::default();
        for tally in self.by_class.values() {
            total.add(*tally);
        }
        total
    }

    pub fn by_class(&self) -> &BTreeMap<ObjectClass, Tally> {
        &self.by_class
    }
}

/// Greedy one-to-one matching, best overlap first.
fn match_count(reference: &[&Detection], judged: &[&Detection]) -> u64 {
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (i, r) in reference.iter().enumerate() {
        for (k, j) in judged.iter().enumerate() {
            let iou = r.bbox.iou(&j.bbox);
            if iou >= MATCH_IOU {
                pairs.push((iou, i, k));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut used_r, mut used_j) = (vec![false; reference.len()], vec![false; judged.len()]);
    let mut matched = 0;
    for (_, i, k) in pairs {
        if !used_r[i] && !used_j[k] {
            used_r[i] = true;
            used_j[k] = true;
            matched += 1;
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::BBox;

    fn car(x: f32) -> Detection {
        Detection::new(BBox::new(x, 0.0, x + 10.0, 10.0), 0.9, ObjectClass::Car)
    }

    #[test]
    fn the_same_detections_agree_fully_and_two_empty_frames_agree() {
        let mut a = Agreement::default();
        a.add_frame(&[car(0.0), car(50.0)], &[car(0.0), car(50.0)]);
        a.add_frame(&[], &[]);
        let s = a.total().scores();
        assert_eq!((s.precision, s.recall, s.f1), (1.0, 1.0, 1.0));
        assert_eq!(a.frames(), 2);
    }

    #[test]
    fn misses_extras_shifts_and_other_classes_lower_the_scores() {
        let mut a = Agreement::default();
        // One match, one shifted box (IoU 1/3: no match), one extra truck on the judged side.
        let truck = Detection::new(BBox::new(100.0, 0.0, 110.0, 10.0), 0.9, ObjectClass::Truck);
        a.add_frame(&[car(0.0), car(50.0)], &[car(0.0), car(55.0), truck]);
        let car_tally = a.by_class()[&ObjectClass::Car];
        assert_eq!(car_tally, Tally { true_positives: 1, false_positives: 1, false_negatives: 1 });
        let s = a.total().scores();
        assert!((s.precision - 1.0 / 3.0).abs() < 1e-9 && (s.recall - 0.5).abs() < 1e-9, "{s:?}");
        assert!((s.f1 - 0.4).abs() < 1e-9, "{s:?}");
        // Swapping the sides keeps F1.
        let mut b = Agreement::default();
        b.add_frame(&[car(0.0), car(55.0), truck], &[car(0.0), car(50.0)]);
        assert!((b.total().scores().f1 - s.f1).abs() < 1e-12);
    }

    #[test]
    fn each_detection_matches_once() {
        let mut a = Agreement::default();
        a.add_frame(&[car(0.0)], &[car(0.0), car(1.0)]);
        assert_eq!(a.total(), Tally { true_positives: 1, false_positives: 1, false_negatives: 0 });
    }
}
