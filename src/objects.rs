//! The detector's output vocabulary: boxes, classes and scored detections in source-frame pixels.

use serde::{Deserialize, Serialize};

/// An axis-aligned box in source-frame pixel coordinates (x to the right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }

    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Intersection over union; 0 for disjoint or empty boxes.
    pub fn iou(&self, other: &BBox) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }

    /// The larger of width and height.
    pub fn larger_side(&self) -> f32 {
        (self.x2 - self.x1).max(self.y2 - self.y1)
    }

    /// The point where the object meets the road: bottom centre of the box.
    pub fn ground_point(&self) -> (f32, f32) {
        ((self.x1 + self.x2) * 0.5, self.y2)
    }
}

/// The object classes the service reports. Everything else the model knows is ignored.
///
/// The detector (COCO) knows car, bus, truck, motorcycle, bicycle and person; `Van` (light goods
/// vehicles, minibuses counted as bus aside) and the split of "truck" into van and heavy goods
/// come from the track's size (`analytics::vehicle_class`). `Truck` is a heavy goods vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectClass {
    Car,
    Motorcycle,
    Bus,
    Truck,
    Bicycle,
    Person,
    Van,
}

impl ObjectClass {
    pub const ALL: [ObjectClass; 7] = [
        ObjectClass::Car,
        ObjectClass::Van,
        ObjectClass::Motorcycle,
        ObjectClass::Bus,
        ObjectClass::Truck,
        ObjectClass::Bicycle,
        ObjectClass::Person,
    ];

    /// Maps a COCO class id to a reported class.
    pub fn from_coco(id: usize) -> Option<Self> {
        match id {
            0 => Some(ObjectClass::Person),
            1 => Some(ObjectClass::Bicycle),
            2 => Some(ObjectClass::Car),
            3 => Some(ObjectClass::Motorcycle),
            5 => Some(ObjectClass::Bus),
            7 => Some(ObjectClass::Truck),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ObjectClass::Car => "car",
            ObjectClass::Motorcycle => "motorcycle",
            ObjectClass::Bus => "bus",
            ObjectClass::Truck => "truck",
            ObjectClass::Bicycle => "bicycle",
            ObjectClass::Person => "person",
            ObjectClass::Van => "van",
        }
    }

    /// Four-wheeled motor vehicles: YOLOX often scores one such vehicle as both car and truck,
    /// so suppression treats them as one group (see `nms`).
    pub fn is_motor_vehicle(&self) -> bool {
        matches!(self, ObjectClass::Car | ObjectClass::Van | ObjectClass::Bus | ObjectClass::Truck)
    }
}

impl std::fmt::Display for ObjectClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The detector's probabilities of the three motor-vehicle classes it knows, for one box: a van
/// often scores as both car and truck, and the share of "truck" over a track's life is evidence
/// of its class (`analytics::vehicle_class`). All zero for other classes and simulated boxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VehicleProbs {
    pub car: f32,
    pub bus: f32,
    pub truck: f32,
}

/// One detected object in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub bbox: BBox,
    /// objectness x class probability, 0..1
    pub score: f32,
    pub class: ObjectClass,
    #[serde(default)]
    pub vehicle: VehicleProbs,
    /// Large in the model's input (`detector::yolox::LARGE_HEIGHT`), where YOLOX-Nano scores a
    /// vehicle close to the camera low: weak detections of such a box may start a track
    /// (`analytics::tracker`, weak tracks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub large: bool,
}

impl Detection {
    /// A detection without the detector's per-class probabilities, not large (simulated, tests).
    pub fn new(bbox: BBox, score: f32, class: ObjectClass) -> Self {
        Self { bbox, score, class, vehicle: VehicleProbs::default(), large: false }
    }
}
