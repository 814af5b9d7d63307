//! How a camera's frames are prepared for the model, from its geometry: which part of the frame
//! is letterboxed into the input (`crop`) and whether its levels are stretched (`normalise`).
//!
//! A crop to the region the geometry uses gives the model more pixels per vehicle at the same
//! input size: a camera whose lines and zones cover half the frame sees its vehicles twice as
//! large. Detections still come back in full-frame pixels (`Letterbox::region`), so nothing
//! downstream knows about it. The frame size is only known when the first frame is decoded, so
//! the geometry keeps the crop in its pixels and the decode thread resolves it (`region`).

use serde::{Deserialize, Serialize};

use crate::detector::input::Region;

/// Pixel coordinates beyond this are no frame's (the geometry's bound).
const MAX_COORD: f64 = 100_000.0;

/// The margin `crop: "auto"` adds around the geometry's elements, as a share of the frame's
/// longer side: room for a vehicle whose ground point is on a line or a zone's edge (its body
/// reaches about one vehicle length beyond it) and for the frames that start its track.
pub const AUTO_MARGIN: f64 = 0.15;
/// Pixels; an explicit crop narrower or lower than this cannot hold a vehicle.
pub const MIN_CROP_SIDE: f64 = 32.0;

/// `crop` in a geometry: `"auto"` or a rectangle in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "\"auto\" or a rectangle {\"x\", \"y\", \"width\", \"height\"} in pixels")]
pub enum Crop {
    Auto(AutoCrop),
    Rect(CropRect),
}

/// The keyword of `crop: "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoCrop {
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropRect {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Crop {
    /// Problems with this crop in a geometry that has lines or zones or not (empty when valid).
    pub fn problems(&self, has_elements: bool) -> Vec<String> {
        match self {
            Crop::Auto(_) if !has_elements => {
                vec!["crop: \"auto\" needs at least one line or zone to crop to".into()]
            }
            Crop::Auto(_) => Vec::new(),
            Crop::Rect(r) => {
                let mut errors = Vec::new();
                for (name, value) in [("x", r.x), ("y", r.y)] {
                    if !(value.is_finite() && (0.0..=MAX_COORD).contains(&value)) {
                        errors.push(format!(
                            "crop: {name} must be a number of pixels from 0 to {MAX_COORD} (got {value})"
                        ));
                    }
                }
                for (name, value) in [("width", r.width), ("height", r.height)] {
                    if !(value.is_finite() && (MIN_CROP_SIDE..=MAX_COORD).contains(&value)) {
                        errors.push(format!(
                            "crop: {name} must be a number of pixels from {MIN_CROP_SIDE} to {MAX_COORD} (got {value})"
                        ));
                    }
                }
                errors
            }
        }
    }
}

/// What the decode thread needs of a geometry, compiled: the crop's bounds (`None`: the whole
/// frame) and the levels stretch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FramePlan {
    pub crop: Option<CropBounds>,
    pub normalise: bool,
}

/// A crop before the frame size is known: `[x1, y1, x2, y2]` in source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CropBounds {
    /// The bounding box of the geometry's elements; the margin and squaring come with the frame.
    Auto([f64; 4]),
    Rect([f64; 4]),
}

impl FramePlan {
    /// The plan of a valid geometry's `crop` and `normalise`, `points` being those of its lines
    /// and zones (`Geometry::frame_plan`).
    pub fn new(crop: Option<Crop>, normalise: bool, mut points: impl Iterator<Item = [f64; 2]>) -> Self {
        let crop = crop.and_then(|crop| match crop {
            Crop::Auto(_) => {
                let first = points.next()?;
                let init = [first[0], first[1], first[0], first[1]];
                let bounds = points.fold(init, |b, p| [b[0].min(p[0]), b[1].min(p[1]), b[2].max(p[0]), b[3].max(p[1])]);
                Some(CropBounds::Auto(bounds))
            }
            Crop::Rect(r) => Some(CropBounds::Rect([r.x, r.y, r.x + r.width, r.y + r.height])),
        });
        Self { crop, normalise }
    }

    /// The part of a `width` x `height` frame the model sees: the crop clamped into the frame
    /// with even corners (chroma planes are subsampled by two), or the whole frame when there is
    /// no crop or nothing of it is in the frame (`Letterbox::cropped` reports which).
    pub fn region(&self, width: u32, height: u32) -> Region {
        let full = Region::full(width, height);
        let (w, h) = (width as f64, height as f64);
        let [mut x1, mut y1, mut x2, mut y2] = match self.crop {
            None => return full,
            Some(CropBounds::Rect(b)) => b,
            Some(CropBounds::Auto(b)) => {
                let margin = AUTO_MARGIN * w.max(h);
                [b[0] - margin, b[1] - margin, b[2] + margin, b[3] + margin]
            }
        };
        (x1, x2) = (x1.clamp(0.0, w), x2.clamp(0.0, w));
        (y1, y2) = (y1.clamp(0.0, h), y2.clamp(0.0, h));
        if matches!(self.crop, Some(CropBounds::Auto(_))) {
            // The input is square: context along the shorter side costs nothing.
            let side = (x2 - x1).max(y2 - y1);
            (x1, x2) = grow(x1, x2, side, w);
            (y1, y2) = grow(y1, y2, side, h);
        }
        let even_down = |v: f64| ((v / 2.0).floor() * 2.0) as u32;
        let (x1, y1) = (even_down(x1), even_down(y1));
        let x2 = ((x2 / 2.0).ceil() * 2.0).min(w) as u32;
        let y2 = ((y2 / 2.0).ceil() * 2.0).min(h) as u32;
        if x2 <= x1 || y2 <= y1 {
            return full;
        }
        Region { x: x1, y: y1, width: x2 - x1, height: y2 - y1 }
    }
}

/// `[lo, hi]` widened to `side` around its centre, kept inside `[0, limit]`.
fn grow(lo: f64, hi: f64, side: f64, limit: f64) -> (f64, f64) {
    let side = side.min(limit);
    if hi - lo >= side {
        return (lo, hi);
    }
    let lo = ((lo + hi) / 2.0 - side / 2.0).clamp(0.0, limit - side);
    (lo, lo + side)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::geometry::{Geometry, ZoneSpec};
    use crate::analytics::lines::LineSpec;

    fn line(a: [f64; 2], b: [f64; 2]) -> LineSpec {
        LineSpec { id: "l".into(), name: String::new(), a, b }
    }

    fn with_crop(crop: &str, lines: Vec<LineSpec>) -> Geometry {
        let crop: Crop = serde_json::from_str(crop).unwrap();
        Geometry { lines, crop: Some(crop), ..Geometry::default() }
    }

    #[test]
    fn no_crop_is_the_whole_frame() {
        let plan = Geometry { lines: vec![line([0.0, 150.0], [320.0, 150.0])], ..Default::default() }.frame_plan();
        assert_eq!(plan, FramePlan::default());
        assert_eq!(plan.region(320, 240), Region::full(320, 240));
    }

    #[test]
    fn auto_is_the_elements_box_with_a_margin_made_square() {
        // The highway segment at 1440x1080 (x4.5): 351,166.5 -> 1080,832.5, margin 216.
        let geometry = with_crop("\"auto\"", vec![line([351.0, 166.5], [1080.0, 832.5])]);
        assert!(geometry.validate().is_empty(), "{:?}", geometry.validate());
        let region = geometry.frame_plan().region(1440, 1080);
        // x 135..1296 (1161 wide); y -49.5..1048.5 clamped to 0..1048.5, grown to 1161 -> the
        // frame's 1080; corners even.
        assert_eq!(region, Region { x: 134, y: 0, width: 1162, height: 1080 });
        // A zone counts too; exclusions do not.
        let mut geometry = with_crop("\"auto\"", vec![line([100.0, 100.0], [120.0, 100.0])]);
        geometry.zones.push(ZoneSpec {
            id: "z".into(),
            name: String::new(),
            polygon: vec![[100.0, 100.0], [140.0, 100.0], [140.0, 160.0]],
            direction: None,
            stop_line: None,
            detection_loop: None,
        });
        let region = geometry.frame_plan().region(1000, 1000);
        // 100..140 x 100..160, margin 150: -50..290 x -50..310 -> 0..290 x 0..310 -> 310 square.
        assert_eq!(region, Region { x: 0, y: 0, width: 310, height: 310 });
    }

    #[test]
    fn auto_over_the_whole_frame_is_the_whole_frame() {
        let geometry = with_crop("\"auto\"", vec![line([0.0, 675.0], [1440.0, 675.0])]);
        // Full width; 675 +- 216 grown to the square, which is the whole height.
        assert_eq!(geometry.frame_plan().region(1440, 1080), Region::full(1440, 1080));
    }

    #[test]
    fn a_rectangle_is_clamped_into_the_frame_with_even_corners() {
        let geometry = with_crop(r#"{"x": 101, "y": 51, "width": 200, "height": 99}"#, vec![]);
        assert!(geometry.validate().is_empty());
        assert_eq!(geometry.frame_plan().region(1920, 1080), Region { x: 100, y: 50, width: 202, height: 100 });
        assert_eq!(geometry.frame_plan().region(250, 120), Region { x: 100, y: 50, width: 150, height: 70 });
        // Nothing of it in the frame: the whole frame.
        assert_eq!(geometry.frame_plan().region(100, 50), Region::full(100, 50));
    }

    #[test]
    fn bad_crops_are_refused_with_what_is_wrong() {
        let geometry = with_crop("\"auto\"", vec![]);
        assert_eq!(geometry.validate(), vec!["crop: \"auto\" needs at least one line or zone to crop to"]);
        let geometry = with_crop(r#"{"x": -1, "y": 0, "width": 10, "height": 1e9}"#, vec![]);
        let errors = geometry.validate();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("crop: x must be"), "{errors:?}");
        assert!(errors[1].starts_with("crop: width must be a number of pixels from 32"), "{errors:?}");
        for bad in [r#""full""#, r#"{"x": 0, "y": 0, "width": 64}"#, r#"{"x": 0, "y": 0, "w": 64, "h": 64}"#] {
            let error = serde_json::from_str::<Crop>(bad).unwrap_err().to_string();
            assert!(error.contains("\"auto\" or a rectangle"), "{bad}: {error}");
        }
    }

    #[test]
    fn crops_round_trip_as_json() {
        for text in [r#""auto""#, r#"{"x":1.0,"y":2.0,"width":64.0,"height":48.0}"#] {
            let crop: Crop = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&crop).unwrap(), text);
        }
    }
}
