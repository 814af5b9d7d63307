//! Non-maximum suppression.
//!
//! Car, bus and truck are suppressed as one group: YOLOX often returns two near-identical boxes
//! for one vehicle, one "car" and one "truck". Kept per class, both survive, the tracker runs two
//! tracks on one vehicle that swap boxes, and crossings are lost (24 of 27 on the overpass clip in
//! a Python peer; 27 of 27 with group suppression). The best-scoring box keeps its class.

use super::yolox::Decoded;
use crate::objects::{Detection, ObjectClass};

fn group(class: ObjectClass) -> u8 {
    if class.is_motor_vehicle() {
        0
    } else {
        1 + class as u8
    }
}

/// Whether `b` is a duplicate of kept box `a`: same group, overlapping by more than `iou_threshold`.
fn duplicates(a: &Detection, b: &Detection, iou_threshold: f32) -> bool {
    group(a.class) == group(b.class) && a.bbox.iou(&b.bbox) > iou_threshold
}

/// Greedy NMS: highest score first, dropping boxes of the same group that overlap a kept one
/// by more than `iou_threshold`.
pub fn suppress(mut detections: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    detections.retain(|d| d.score.is_finite());
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(detections.len());
    for det in detections {
        if !kept.iter().any(|k| duplicates(k, &det, iou_threshold)) {
            kept.push(det);
        }
    }
    kept
}

/// A frame's detections: the main view's after NMS, and those of the overview (after NMS among
/// themselves) that no kept main box overlaps by more than `iou_threshold`. The overview only adds
/// what the main view misses: where both see a vehicle, the main view's finer box is the one kept.
pub fn suppress_views(decoded: Decoded, iou_threshold: f32) -> Vec<Detection> {
    let mut kept = suppress(decoded.main, iou_threshold);
    let main = kept.len();
    for det in suppress(decoded.overview, iou_threshold) {
        if !kept[..main].iter().any(|k| duplicates(k, &det, iou_threshold)) {
            kept.push(det);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::BBox;

    fn det(x: f32, score: f32, class: ObjectClass) -> Detection {
        Detection::new(BBox::new(x, 0.0, x + 10.0, 10.0), score, class)
    }

    #[test]
    fn car_and_truck_on_one_vehicle_become_one_box_with_the_better_class() {
        let kept = suppress(vec![det(0.0, 0.6, ObjectClass::Car), det(0.5, 0.7, ObjectClass::Truck)], 0.45);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].class, ObjectClass::Truck);
    }

    #[test]
    fn other_classes_are_suppressed_separately() {
        let kept = suppress(vec![det(0.0, 0.6, ObjectClass::Car), det(0.0, 0.5, ObjectClass::Person)], 0.45);
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn distinct_boxes_survive_and_duplicates_do_not() {
        let kept = suppress(
            vec![det(0.0, 0.9, ObjectClass::Car), det(1.0, 0.8, ObjectClass::Car), det(50.0, 0.3, ObjectClass::Car)],
            0.45,
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].bbox.x1, 50.0);
    }

    #[test]
    fn nan_scores_are_dropped() {
        assert!(suppress(vec![det(0.0, f32::NAN, ObjectClass::Car)], 0.45).is_empty());
    }

    #[test]
    fn the_overview_adds_only_what_the_main_view_misses() {
        let decoded = Decoded {
            main: vec![det(0.0, 0.3, ObjectClass::Car)],
            overview: vec![
                det(0.5, 0.6, ObjectClass::Truck), // the main view's vehicle: its box stays
                det(40.0, 0.4, ObjectClass::Truck),
                det(40.5, 0.2, ObjectClass::Bus), // a duplicate within the overview
            ],
        };
        let kept = suppress_views(decoded, 0.45);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!((kept[0].bbox.x1, kept[0].class), (0.0, ObjectClass::Car));
        assert_eq!((kept[1].bbox.x1, kept[1].score), (40.0, 0.4));
    }
}
