//! What the overlay draws on a camera's picture: exclusions, zones, lanes (direction and stop
//! line), counting lines (with their counts and an arrow to the `in` side), calibration points,
//! then every tracked box with its label `#<track id> <class>` on top. Geometry and boxes are in
//! camera pixels and are scaled by the letterbox ratio onto the picture.

use super::canvas::{Bgr, Canvas};
use super::font;
use crate::analytics::geometry::Geometry;
use crate::analytics::lines::LineCount;
use crate::analytics::tracker::TrackedObject;
use crate::objects::ObjectClass;

/// Colours of the overlay (BGR), also listed in `docs/ARCHITECTURE.md`.
pub const LINE_COLOUR: Bgr = [255, 255, 255];
pub const ZONE_COLOUR: Bgr = [255, 144, 30];
pub const LANE_COLOUR: Bgr = [211, 0, 148];
pub const STOP_LINE_COLOUR: Bgr = [0, 0, 200];
/// The upstream edge (`at`) of a lane's loop: teal.
pub const LOOP_COLOUR: Bgr = [128, 128, 0];
pub const EXCLUSION_COLOUR: Bgr = [128, 128, 128];
pub const CALIBRATION_COLOUR: Bgr = [180, 105, 255];
const TEXT_ON_COLOUR: Bgr = [0, 0, 0];
const TEXT_BACKGROUND: Bgr = [0, 0, 0];

/// Pixels of a box's outline.
pub const BOX_THICKNESS: u32 = 2;
/// Length of a counting line's `in` arrow, picture pixels.
const ARROW_LENGTH: f32 = 18.0;
/// Rows a line label moves up at most to clear the labels drawn before it.
const MAX_LABEL_MOVES: usize = 8;

/// The colour of a class's boxes and labels.
pub fn class_colour(class: ObjectClass) -> Bgr {
    match class {
        ObjectClass::Car => [0, 255, 0],
        ObjectClass::Van => [255, 128, 0],
        ObjectClass::Truck => [0, 165, 255],
        ObjectClass::Bus => [0, 255, 255],
        ObjectClass::Motorcycle => [255, 0, 255],
        ObjectClass::Bicycle => [255, 255, 0],
        ObjectClass::Person => [0, 0, 255],
    }
}

/// What one overlay shows.
pub struct Scene<'a> {
    pub objects: &'a [TrackedObject],
    pub geometry: &'a Geometry,
    pub counts: &'a [LineCount],
    /// Picture pixels per camera pixel (`Letterbox::ratio`).
    pub scale: f32,
    /// The camera pixel at the picture's top-left corner (a cropping camera's region corner).
    pub origin: [f32; 2],
}

/// Draws `scene` on `canvas`.
pub fn draw(canvas: &mut Canvas, scene: &Scene) {
    let [ox, oy] = scene.origin;
    let at = |p: [f64; 2]| ((p[0] as f32 - ox) * scene.scale, (p[1] as f32 - oy) * scene.scale);
    let px = |x: f32, y: f32| (((x - ox) * scene.scale).round() as i64, ((y - oy) * scene.scale).round() as i64);
    let geometry = scene.geometry;
    for exclusion in &geometry.exclusions {
        let points: Vec<_> = exclusion.polygon.iter().map(|&p| at(p)).collect();
        canvas.polygon(&points, 1, EXCLUSION_COLOUR);
    }
    for zone in &geometry.zones {
        let points: Vec<_> = zone.polygon.iter().map(|&p| at(p)).collect();
        let colour = if zone.is_lane() { LANE_COLOUR } else { ZONE_COLOUR };
        canvas.polygon(&points, 1, colour);
        if let Some([from, to]) = zone.direction {
            canvas.arrow(at(from), at(to), 1, colour);
        }
        if let Some([a, b]) = zone.stop_line {
            canvas.line(at(a), at(b), 2, STOP_LINE_COLOUR);
        }
        if let Some(detection_loop) = &zone.detection_loop {
            let [a, b] = detection_loop.at;
            canvas.line(at(a), at(b), 2, LOOP_COLOUR);
        }
    }
    // Line labels already drawn: a label that would cover one moves up (lines often share a
    // row: one across the road and one per lane).
    let mut placed: Vec<(i64, i64, i64, i64)> = Vec::new();
    for line in &geometry.lines {
        let (a, b) = (at(line.a), at(line.b));
        canvas.line(a, b, 2, LINE_COLOUR);
        let middle = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
        let (tip, _) = in_arrow(a, b, middle);
        canvas.arrow(middle, tip, 2, LINE_COLOUR);
        let count = scene.counts.iter().find(|c| c.id == line.id);
        let text = match count {
            Some(c) => format!("{} in {} out {}", line.id, c.in_, c.out),
            None => line.id.clone(),
        };
        // On the `out` side, clear of the arrow.
        let (_, normal) = in_arrow(a, b, middle);
        let (x, y) = (middle.0 + 6.0 - normal.0 * 14.0, middle.1 - 5.0 - normal.1 * 14.0);
        let (x, mut y) = (x as i64, y as i64);
        for _ in 0..MAX_LABEL_MOVES {
            let here = canvas.label_box(x, y, &text);
            if !placed.iter().any(|p| overlap(*p, here)) {
                break;
            }
            y -= font::HEIGHT as i64 + 3;
        }
        placed.push(canvas.label(x, y, &text, LINE_COLOUR, TEXT_BACKGROUND));
    }
    if let Some(calibration) = &geometry.calibration {
        for point in &calibration.points {
            canvas.marker(at(point.image), 4.0, CALIBRATION_COLOUR);
        }
    }
    for object in scene.objects {
        let colour = class_colour(object.class);
        let b = object.bbox;
        let ((x1, y1), (x2, y2)) = (px(b.x1, b.y1), px(b.x2, b.y2));
        canvas.rect(x1, y1, x2, y2, BOX_THICKNESS, colour);
    }
    // Labels after every box, so no box is drawn over a label; above the box where there is room.
    for object in scene.objects {
        let b = object.bbox;
        let text = format!("#{} {}", object.track_id, object.class);
        let (x, y) = px(b.x1, b.y1);
        let above = y - (font::HEIGHT as i64 + 2);
        canvas.label(x, if above >= 0 { above } else { y }, &text, TEXT_ON_COLOUR, class_colour(object.class));
    }
}

/// Whether two inclusive boxes share a pixel.
fn overlap(a: (i64, i64, i64, i64), b: (i64, i64, i64, i64)) -> bool {
    a.0 <= b.2 && b.0 <= a.2 && a.1 <= b.3 && b.1 <= a.3
}

/// The tip of the arrow from `from` towards the `in` side of the line `a -> b` (the right-hand
/// side travelling from a to b on the image, `analytics::lines`), and its unit direction.
pub fn in_arrow(a: (f32, f32), b: (f32, f32), from: (f32, f32)) -> ((f32, f32), (f32, f32)) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let length = dx.hypot(dy).max(f32::EPSILON);
    let normal = (-dy / length, dx / length);
    ((from.0 + normal.0 * ARROW_LENGTH, from.1 + normal.1 * ARROW_LENGTH), normal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::geometry::{ExclusionSpec, LineSpec, ZoneSpec};
    use crate::objects::BBox;

    const GREY: Bgr = [114, 114, 114];

    fn picture(w: u32, h: u32) -> Vec<u8> {
        GREY.repeat((w * h) as usize)
    }

    #[test]
    fn the_in_arrow_points_to_the_side_the_counter_calls_in() {
        // A horizontal line drawn left to right: `in` is moving down the image.
        let (_, direction) = in_arrow((0.0, 150.0), (320.0, 150.0), (160.0, 150.0));
        assert_eq!(direction, (-0.0, 1.0));
        let in_side = crate::analytics::lines::crossing((0.0, 150.0), (320.0, 150.0), (100.0, 140.0), (100.0, 160.0));
        assert_eq!(in_side, Some(crate::events::Direction::In));
        // Drawn right to left, `in` is up.
        assert_eq!(in_arrow((320.0, 150.0), (0.0, 150.0), (160.0, 150.0)).1, (0.0, -1.0));
    }

    #[test]
    fn boxes_get_their_class_colour_and_a_label_and_lines_an_arrow() {
        let (w, h) = (200u32, 150u32);
        let mut pixels = picture(w, h);
        let mut canvas = Canvas::new(&mut pixels, w, h);
        let car = TrackedObject {
            track_id: 7,
            bbox: BBox::new(40.0, 40.0, 80.0, 70.0),
            class: ObjectClass::Car,
            score: 0.9,
            vehicle: Default::default(),
        };
        let geometry = Geometry {
            lines: vec![LineSpec { id: "l1".into(), name: String::new(), a: [0.0, 100.0], b: [100.0, 100.0] }],
            zones: vec![ZoneSpec {
                id: "z".into(),
                name: String::new(),
                polygon: vec![[5.0, 5.0], [30.0, 5.0], [30.0, 30.0]],
                direction: None,
                stop_line: None,
                detection_loop: None,
            }],
            exclusions: vec![ExclusionSpec {
                id: "x".into(),
                polygon: vec![[150.0, 5.0], [190.0, 5.0], [190.0, 40.0]],
            }],
            ..Default::default()
        };
        let counts = [LineCount { id: "l1".into(), in_: 3, out: 1, ..Default::default() }];
        draw(
            &mut canvas,
            &Scene { objects: &[car], geometry: &geometry, counts: &counts, scale: 1.0, origin: [0.0, 0.0] },
        );
        let green = class_colour(ObjectClass::Car);
        for x in 40..=80 {
            assert_eq!(canvas.pixel(x, 70), Some(green), "bottom edge at {x}");
        }
        for y in 40..=70 {
            assert_eq!(canvas.pixel(40, y), Some(green), "left edge at {y}");
            assert_eq!(canvas.pixel(80, y), Some(green), "right edge at {y}");
        }
        assert_eq!(canvas.pixel(60, 55), Some(GREY), "inside the box untouched");
        // The label sits above the box on the class colour, with black glyph pixels in it.
        let label: Vec<Bgr> =
            (30..40).flat_map(|y| (40..96).map(move |x| (x, y))).filter_map(|(x, y)| canvas.pixel(x, y)).collect();
        assert!(label.iter().filter(|&&c| c == green).count() > 100, "label background");
        assert!(label.iter().filter(|&&c| c == TEXT_ON_COLOUR).count() > 20, "label glyphs");
        // The line and its arrow pointing down (in) from its middle at (50, 100).
        assert_eq!(canvas.pixel(10, 100), Some(LINE_COLOUR));
        assert_eq!(canvas.pixel(50, 100 + ARROW_LENGTH as i64 - 1), Some(LINE_COLOUR), "arrow shaft");
        assert_eq!(canvas.pixel(50, 100 - ARROW_LENGTH as i64 + 2), Some(GREY), "no arrow on the out side");
        assert_eq!(canvas.pixel(5, 5), Some(ZONE_COLOUR), "zone outline");
        assert_eq!(canvas.pixel(170, 5), Some(EXCLUSION_COLOUR), "exclusion outline");
    }
}
