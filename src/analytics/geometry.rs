//! Camera geometry as the API and `analyze --geometry` take it, its validation (every problem at
//! once), and its compiled form that the analytics query per frame.
//!
//! Image coordinates are source-frame pixels (x right, y down); ground coordinates are metres on
//! the road plane, from the calibration's homography.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use crate::analytics::framing::Crop;
use crate::analytics::framing::FramePlan;
pub use crate::analytics::homography::CalibrationPoint;
use crate::analytics::homography::Homography;
pub use crate::analytics::lines::LineSpec;
use crate::objects::BBox;

/// Per-camera limits: enough for any real intersection, and they bound the per-frame work and
/// the size of what the API stores.
pub const MAX_LINES: usize = 64;
pub const MAX_ZONES: usize = 64;
pub const MAX_EXCLUSIONS: usize = 32;
pub const MIN_POLYGON_VERTICES: usize = 3;
pub const MAX_POLYGON_VERTICES: usize = 64;
/// Pixel coordinates beyond this are no frame's (same bound as the counting lines).
pub const MAX_COORD: f64 = 100_000.0;
/// Square pixels; a smaller polygon cannot hold a ground point reliably.
pub const MIN_POLYGON_AREA: f64 = 1.0;
pub const MAX_NAME_CHARS: usize = 200;
/// Pixels; a larger minimum would discard every detection of any real frame.
pub const MAX_MIN_OBJECT_SIZE: f64 = 10_000.0;

/// A point in source-frame pixels.
pub type ImagePoint = [f64; 2];

/// Everything drawn on one camera's image. Each change is a new version (the API keeps them all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geometry {
    /// Directed counting lines.
    #[serde(default)]
    pub lines: Vec<LineSpec>,
    /// Zones; a zone with a `direction` is a lane.
    #[serde(default)]
    pub zones: Vec<ZoneSpec>,
    /// Areas whose detections are discarded before tracking (burnt-in text, a flag, a tree).
    #[serde(default)]
    pub exclusions: Vec<ExclusionSpec>,
    /// Detections smaller than this (either side) are discarded before tracking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_object_size: Option<MinObjectSize>,
    /// Image -> road-plane mapping; without it no speed, density, queue length in metres,
    /// level of service or congestion is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// The part of the frame the model sees: `"auto"` (the lines and zones with a margin) or a
    /// rectangle in pixels; none: the whole frame (`framing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<Crop>,
    /// Stretch each frame's levels before the model (dark cameras; `detector::levels`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub normalise: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// A simple polygon (3 to 64 vertices, not self-intersecting), image pixels.
    pub polygon: Vec<ImagePoint>,
    /// Travel direction `[from, to]` in image pixels: makes the zone a lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<[ImagePoint; 2]>,
    /// Stop line `[a, b]` in image pixels, lanes only: queues are measured upstream of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_line: Option<[ImagePoint; 2]>,
    /// A loop-like detection section, calibrated lanes only: its time occupancy is what a
    /// loop detector under the road there would measure.
    #[serde(rename = "loop", default, skip_serializing_if = "Option::is_none")]
    pub detection_loop: Option<LoopSpec>,
}

/// A section of a lane as long as a loop detector (about 2 m): it starts where `at` crosses the
/// lane (the lane position of its midpoint) and runs `length_m` downstream along the lane axis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopSpec {
    /// A segment across the lane, image pixels: the loop's upstream edge.
    pub at: [ImagePoint; 2],
    /// Length along the lane, metres on the road (so a loop needs the calibration).
    pub length_m: f64,
}

/// Longest loop (m): longer sections are zones, and their time occupancy tends to 100 %.
pub const MAX_LOOP_LENGTH_M: f64 = 50.0;

impl ZoneSpec {
    pub fn is_lane(&self) -> bool {
        self.direction.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionSpec {
    pub id: String,
    pub polygon: Vec<ImagePoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinObjectSize {
    /// Pixels.
    pub width: f64,
    pub height: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// At least four correspondences, no three collinear.
    pub points: Vec<CalibrationPoint>,
}

impl Geometry {
    /// Every problem with this geometry at once, each naming the element it is about (an empty
    /// list means valid). Never panics, whatever the input.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (what, count, max) in [
            ("lines", self.lines.len(), MAX_LINES),
            ("zones", self.zones.len(), MAX_ZONES),
            ("exclusions", self.exclusions.len(), MAX_EXCLUSIONS),
        ] {
            if count > max {
                errors.push(format!("at most {max} {what} are allowed (got {count})"));
            }
        }
        for line in &self.lines {
            errors.extend(line.validate());
        }
        for zone in &self.zones {
            zone.check(&mut errors);
        }
        for exclusion in &self.exclusions {
            let element = format!("exclusion {}", label(&exclusion.id));
            if !crate::ids::is_valid_id(&exclusion.id) {
                errors.push(format!("exclusion id {} {ID_RULE}", label(&exclusion.id)));
            }
            errors.extend(polygon_problems(&exclusion.polygon).into_iter().map(|p| format!("{element}: {p}")));
        }
        self.check_unique_ids(&mut errors);
        if let Some(size) = &self.min_object_size {
            for (side, value) in [("width", size.width), ("height", size.height)] {
                if !(value.is_finite() && (0.0..=MAX_MIN_OBJECT_SIZE).contains(&value)) {
                    errors.push(format!(
                        "min_object_size: {side} must be a number of pixels from 0 to {MAX_MIN_OBJECT_SIZE} \
                         (got {value})"
                    ));
                }
            }
        }
        if let Some(calibration) = &self.calibration {
            self.check_calibration(calibration, &mut errors);
        } else {
            for zone in self.zones.iter().filter(|z| z.detection_loop.is_some()) {
                errors.push(format!(
                    "zone {}: loop needs a calibration (its length_m and the vehicles' lengths are metres \
                     on the road)",
                    label(&zone.id)
                ));
            }
        }
        if let Some(crop) = &self.crop {
            errors.extend(crop.problems(self.element_points().next().is_some()));
        }
        errors
    }

    /// How the decode thread prepares this geometry's frames (crop, levels).
    pub fn frame_plan(&self) -> FramePlan {
        FramePlan::new(self.crop, self.normalise, self.element_points())
    }

    /// The points of the elements vehicles are measured on: lines, zones and lanes (with their
    /// direction and stop line), what `crop: "auto"` keeps in the picture. Exclusions and
    /// calibration points are left out: a crop that leaves an exclusion out loses nothing, and
    /// calibration points may lie anywhere on the road.
    fn element_points(&self) -> impl Iterator<Item = ImagePoint> + '_ {
        let lines = self.lines.iter().flat_map(|l| [l.a, l.b]);
        let zones = self.zones.iter().flat_map(|z| {
            let extra = z.direction.into_iter().chain(z.stop_line).flatten();
            z.polygon.iter().copied().chain(extra)
        });
        lines.chain(zones).filter(|p| p.iter().all(|c| c.is_finite()))
    }

    /// Lines, zones and exclusions share one id namespace, so an event's element id is unambiguous.
    fn check_unique_ids(&self, errors: &mut Vec<String>) {
        let ids = (self.lines.iter().map(|l| ("line", l.id.as_str())))
            .chain(self.zones.iter().map(|z| ("zone", z.id.as_str())))
            .chain(self.exclusions.iter().map(|e| ("exclusion", e.id.as_str())));
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (kind, id) in ids {
            match seen.get(id) {
                Some(first) => {
                    let article = if *first == "exclusion" { "an" } else { "a" };
                    errors.push(format!("{kind} {}: id is already used by {article} {first}", label(id)));
                }
                None => {
                    seen.insert(id, kind);
                }
            }
        }
    }

    fn check_calibration(&self, calibration: &Calibration, errors: &mut Vec<String>) {
        let input = Homography::input_problems(&calibration.points);
        if !input.is_empty() {
            errors.extend(input.into_iter().map(|p| format!("calibration: {p}")));
            return;
        }
        let homography = match Homography::solve(&calibration.points) {
            Ok(h) => h,
            Err(e) => {
                errors.push(format!("calibration: {e}"));
                return;
            }
        };
        // A calibrated lane measures in metres from its direction and stop line; if those do
        // not reach the road plane the lane would silently have no position at all.
        for zone in &self.zones {
            let element = format!("zone {}", label(&zone.id));
            // A vertex at or near the horizon would give no length or an absurd one, and so no
            // density, or a density of nearly zero: the zone must lie on the visible road.
            if zone.polygon.iter().all(|p| p.iter().all(|c| c.is_finite())) {
                let ground: Option<Vec<[f64; 2]>> = zone.polygon.iter().map(|p| homography.to_ground(*p)).collect();
                match ground {
                    None => errors.push(format!(
                        "{element}: polygon reaches the calibration's horizon (keep it on the visible road)"
                    )),
                    Some(points) => {
                        let span = points
                            .iter()
                            .flat_map(|a| points.iter().map(move |b| (a[0] - b[0]).hypot(a[1] - b[1])))
                            .fold(0.0, f64::max);
                        if span > MAX_ZONE_SPAN_M {
                            errors.push(format!(
                                "{element}: polygon spans {span:.0} m on the road (at most \
                                 {MAX_ZONE_SPAN_M:.0}); a vertex is too close to the horizon"
                            ));
                        }
                    }
                }
            }
            // Segments with bad coordinates are reported already; no second message for them.
            if let Some(direction) = zone.direction.as_ref().filter(|d| segment_problem(d).is_none()) {
                if direction.iter().any(|p| homography.to_ground(*p).is_none()) {
                    errors.push(format!(
                        "{element}: direction reaches the calibration's horizon (it does not map to the road)"
                    ));
                }
            }
            if let Some(stop_line) = zone.stop_line.as_ref().filter(|d| segment_problem(d).is_none()) {
                if stop_line.iter().any(|p| homography.to_ground(*p).is_none()) {
                    errors.push(format!(
                        "{element}: stop_line reaches the calibration's horizon (it does not map to the road)"
                    ));
                }
            }
            if let Some(problem) = loop_problem(zone, &homography) {
                errors.push(format!("{element}: {problem}"));
            }
        }
    }
}

/// Where a calibrated lane's loop does not lie on the lane: its `at` beyond the horizon, or its
/// section not within the lane's extent along the axis. Problems the zone's own checks report
/// (bad segments, lengths, a loop without a direction) give nothing here.
fn loop_problem(zone: &ZoneSpec, homography: &Homography) -> Option<String> {
    let detection_loop = zone.detection_loop.as_ref()?;
    let direction = zone.direction.as_ref()?;
    let length = detection_loop.length_m;
    if segment_problem(&detection_loop.at).is_some()
        || segment_problem(direction).is_some()
        || !(length.is_finite() && length > 0.0 && length <= MAX_LOOP_LENGTH_M)
    {
        return None;
    }
    if detection_loop.at.iter().any(|p| homography.to_ground(*p).is_none()) {
        return Some("loop at reaches the calibration's horizon (it does not map to the road)".into());
    }
    let axis = LaneAxis::new(direction, Some(homography))?;
    let (lo, hi) = axis.extent(&zone.polygon)?;
    let start = axis.position(midpoint(&detection_loop.at))?;
    let end = start + length;
    (start < lo || end > hi).then(|| {
        format!(
            "loop runs from {:.1} to {:.1} m along the lane, outside the lane (0.0 to {:.1} m): \
             draw its at across the lane, at least length_m before the lane's downstream end",
            start - lo,
            end - lo,
            hi - lo
        )
    })
}

fn midpoint(segment: &[ImagePoint; 2]) -> ImagePoint {
    [(segment[0][0] + segment[1][0]) / 2.0, (segment[0][1] + segment[1][1]) / 2.0]
}

/// Longest ground extent of a calibrated zone: no camera sees a lane usefully beyond this.
pub const MAX_ZONE_SPAN_M: f64 = 2_000.0;

const ID_RULE: &str = "must be 1-64 characters of A-Z a-z 0-9 _ -";

impl ZoneSpec {
    fn check(&self, errors: &mut Vec<String>) {
        let element = format!("zone {}", label(&self.id));
        if !crate::ids::is_valid_id(&self.id) {
            errors.push(format!("zone id {} {ID_RULE}", label(&self.id)));
        }
        if self.name.chars().count() > MAX_NAME_CHARS {
            errors.push(format!("{element}: name is longer than {MAX_NAME_CHARS} characters"));
        }
        if self.name.chars().any(char::is_control) {
            errors.push(format!("{element}: name must not contain control characters"));
        }
        errors.extend(polygon_problems(&self.polygon).into_iter().map(|p| format!("{element}: {p}")));
        if let Some(direction) = &self.direction {
            if let Some(p) = segment_problem(direction) {
                errors.push(format!("{element}: direction {p}"));
            }
        }
        if let Some(stop_line) = &self.stop_line {
            if self.direction.is_none() {
                errors.push(format!("{element}: stop_line needs a direction (stop lines are for lanes only)"));
            }
            if let Some(p) = segment_problem(stop_line) {
                errors.push(format!("{element}: stop_line {p}"));
            }
        }
        if let Some(detection_loop) = &self.detection_loop {
            if self.direction.is_none() {
                errors.push(format!("{element}: loop needs a direction (loops are for lanes only)"));
            }
            if let Some(p) = segment_problem(&detection_loop.at) {
                errors.push(format!("{element}: loop at {p}"));
            }
            let length = detection_loop.length_m;
            if !(length.is_finite() && length > 0.0 && length <= MAX_LOOP_LENGTH_M) {
                errors.push(format!(
                    "{element}: loop length_m must be a number of metres above 0 and at most \
                     {MAX_LOOP_LENGTH_M} (got {length})"
                ));
            }
        }
    }
}

/// An element's id for a message: quoted and escaped, and cut short so a huge id cannot make
/// a huge message.
fn label(id: &str) -> String {
    const SHOWN: usize = 64;
    if id.chars().count() > SHOWN {
        let head: String = id.chars().take(SHOWN).collect();
        format!("{head:?}...")
    } else {
        format!("{id:?}")
    }
}

fn valid_coord(p: &ImagePoint) -> bool {
    p.iter().all(|c| c.is_finite() && c.abs() <= MAX_COORD)
}

/// Problem with a two-point segment (direction, stop line), completing "direction ...".
fn segment_problem(segment: &[ImagePoint; 2]) -> Option<String> {
    if !segment.iter().all(valid_coord) {
        Some(format!("coordinates must be finite pixel positions (|c| <= {MAX_COORD})"))
    } else if dist(segment[0], segment[1]) < 1.0 {
        Some("must be at least 1 px long".into())
    } else {
        None
    }
}

/// Problems with a polygon, completing "zone "x": ...".
fn polygon_problems(polygon: &[ImagePoint]) -> Vec<String> {
    let mut problems = Vec::new();
    let n = polygon.len();
    if !(MIN_POLYGON_VERTICES..=MAX_POLYGON_VERTICES).contains(&n) {
        problems.push(format!("polygon needs {MIN_POLYGON_VERTICES} to {MAX_POLYGON_VERTICES} vertices (got {n})"));
    }
    if !polygon.iter().all(valid_coord) {
        problems.push(format!("polygon coordinates must be finite pixel positions (|c| <= {MAX_COORD})"));
    }
    if !problems.is_empty() {
        // The shape tests below need a bounded vertex count and finite values.
        return problems;
    }
    let repeated: Vec<String> = (0..n)
        .filter(|&i| polygon[i] == polygon[(i + 1) % n])
        .map(|i| format!("{} and {}", i + 1, (i + 1) % n + 1))
        .collect();
    if !repeated.is_empty() {
        problems.push(format!("polygon repeats consecutive vertices ({})", repeated.join(", ")));
    } else if let Some(crossing) = self_crossing(polygon) {
        problems.push(format!("polygon crosses itself ({crossing})"));
    } else {
        // Only a simple polygon has a meaningful shoelace area (a bow tie's halves cancel).
        let area = signed_area(polygon).abs();
        if area < MIN_POLYGON_AREA {
            problems.push(format!("polygon area {area} px² is below {MIN_POLYGON_AREA} px²"));
        }
    }
    problems
}

/// Twice the signed area of triangle a, b, c; exactly zero when collinear (pixel coordinates up
/// to 1e5 keep the products exact for whole and half pixels).
fn orient(a: ImagePoint, b: ImagePoint, c: ImagePoint) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

/// True when c, known to be collinear with a -> b, lies within the segment's bounding box.
fn on_segment(a: ImagePoint, b: ImagePoint, c: ImagePoint) -> bool {
    c[0] >= a[0].min(b[0]) && c[0] <= a[0].max(b[0]) && c[1] >= a[1].min(b[1]) && c[1] <= a[1].max(b[1])
}

/// Whether closed segments p1-p2 and q1-q2 share any point (touching counts).
fn segments_meet(p1: ImagePoint, p2: ImagePoint, q1: ImagePoint, q2: ImagePoint) -> bool {
    let d1 = orient(q1, q2, p1);
    let d2 = orient(q1, q2, p2);
    let d3 = orient(p1, p2, q1);
    let d4 = orient(p1, p2, q2);
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0)) && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0)) {
        return true;
    }
    (d1 == 0.0 && on_segment(q1, q2, p1))
        || (d2 == 0.0 && on_segment(q1, q2, p2))
        || (d3 == 0.0 && on_segment(p1, p2, q1))
        || (d4 == 0.0 && on_segment(p1, p2, q2))
}

/// The first place where a polygon (no repeated consecutive vertices) is not simple: two
/// non-adjacent edges that meet, or two adjacent edges that double back over each other.
/// Edge k runs from vertex k to vertex k+1 (1-based, the last edge closes the polygon).
fn self_crossing(polygon: &[ImagePoint]) -> Option<String> {
    let n = polygon.len();
    let edge = |i: usize| (polygon[i], polygon[(i + 1) % n]);
    for i in 0..n {
        // Adjacent edges share vertex i+1; they only overlap when collinear and reversing.
        let (a, b) = edge(i);
        let c = polygon[(i + 2) % n];
        let reverses = (b[0] - a[0]) * (c[0] - b[0]) + (b[1] - a[1]) * (c[1] - b[1]) < 0.0;
        if orient(a, b, c) == 0.0 && reverses {
            return Some(format!("it doubles back at vertex {}", (i + 1) % n + 1));
        }
        for j in i + 2..n {
            if i == 0 && j == n - 1 {
                continue; // the closing edge is adjacent to the first
            }
            let (c, d) = edge(j);
            if segments_meet(a, b, c, d) {
                return Some(format!("edges {} and {} meet", i + 1, j + 1));
            }
        }
    }
    None
}

/// Shoelace formula, square pixels.
fn signed_area(polygon: &[ImagePoint]) -> f64 {
    let n = polygon.len();
    (0..n)
        .map(|i| {
            let (a, b) = (polygon[i], polygon[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f64>()
        / 2.0
}

fn dist(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

/// Whether an image point lies inside a simple polygon or on its boundary. The boundary counts
/// as inside so that a ground point resting exactly on a shared edge belongs to both zones rather
/// than to neither; away from it, the even-odd ray test.
fn polygon_contains(polygon: &[ImagePoint], p: ImagePoint) -> bool {
    if !p.iter().all(|c| c.is_finite()) || polygon.len() < MIN_POLYGON_VERTICES {
        return false;
    }
    let n = polygon.len();
    let mut inside = false;
    for i in 0..n {
        let (a, b) = (polygon[i], polygon[(i + 1) % n]);
        if orient(a, b, p) == 0.0 && on_segment(a, b, p) {
            return true;
        }
        // Edges that straddle the horizontal through p, counted half-open so a vertex at p's
        // height is counted once.
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
    }
    inside
}

/// The bottom centre of a box, where the vehicle meets the road, in `f64` image pixels.
pub fn ground_point(bbox: &BBox) -> ImagePoint {
    let (x, y) = bbox.ground_point();
    [f64::from(x), f64::from(y)]
}

/// A validated geometry in the form the analytics query every frame.
#[derive(Debug, Clone)]
pub struct SceneGeometry {
    lines: Vec<LineSpec>,
    zones: Vec<CompiledZone>,
    exclusions: Vec<Vec<ImagePoint>>,
    min_object_size: Option<MinObjectSize>,
    homography: Option<Homography>,
}

impl SceneGeometry {
    /// Validates and compiles; the error lists every problem (see `Geometry::validate`).
    pub fn new(geometry: &Geometry) -> Result<SceneGeometry, Vec<String>> {
        let errors = geometry.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        let homography = match &geometry.calibration {
            Some(c) => Some(Homography::solve(&c.points).map_err(|e| vec![format!("calibration: {e}")])?),
            None => None,
        };
        let zones = geometry.zones.iter().map(|z| CompiledZone::new(z, homography.as_ref())).collect();
        Ok(SceneGeometry {
            lines: geometry.lines.clone(),
            zones,
            exclusions: geometry.exclusions.iter().map(|e| e.polygon.clone()).collect(),
            min_object_size: geometry.min_object_size,
            homography,
        })
    }

    /// Whether a detection goes on to tracking: not when its box centre is inside an exclusion
    /// (burnt-in text, a flag), nor when it is narrower or lower than the minimum size, nor when
    /// its coordinates are not finite (it could not be placed anywhere).
    pub fn keep_detection(&self, bbox: &BBox) -> bool {
        let [x1, y1, x2, y2] = [bbox.x1, bbox.y1, bbox.x2, bbox.y2].map(f64::from);
        if ![x1, y1, x2, y2].iter().all(|c| c.is_finite()) {
            return false;
        }
        let centre = [(x1 + x2) / 2.0, (y1 + y2) / 2.0];
        if self.exclusions.iter().any(|e| polygon_contains(e, centre)) {
            return false;
        }
        match &self.min_object_size {
            Some(min) => (x2 - x1).max(0.0) >= min.width && (y2 - y1).max(0.0) >= min.height,
            None => true,
        }
    }

    /// Whether a ground-plane calibration is set (speeds, densities and metres are reported).
    pub fn calibrated(&self) -> bool {
        self.homography.is_some()
    }

    /// Ground position (metres) of an image point; `None` without calibration or at or beyond
    /// the horizon.
    pub fn to_ground(&self, p: ImagePoint) -> Option<[f64; 2]> {
        self.homography.as_ref()?.to_ground(p)
    }

    pub fn homography(&self) -> Option<&Homography> {
        self.homography.as_ref()
    }

    pub fn zones(&self) -> &[CompiledZone] {
        &self.zones
    }

    pub fn lines(&self) -> &[LineSpec] {
        &self.lines
    }
}

/// A zone or lane ready for per-frame queries. Lane positions are metres on the ground plane
/// when the camera is calibrated and image pixels otherwise, never a mix.
#[derive(Debug, Clone)]
pub struct CompiledZone {
    id: String,
    name: String,
    polygon: Vec<ImagePoint>,
    axis: Option<LaneAxis>,
    is_lane: bool,
    extent: Option<(f64, f64)>,
    length_m: Option<f64>,
    stop_line_position: Option<f64>,
    /// The loop's lane positions `(start, end)`, metres; calibrated lanes with a loop only.
    loop_section: Option<(f64, f64)>,
    /// Share of a vehicle's length upstream of its ground point (see `upstream_share`).
    upstream_share: f64,
}

/// A lane's axis in the frame its positions are measured in.
#[derive(Debug, Clone)]
struct LaneAxis {
    /// Ground frame when set, image frame otherwise.
    homography: Option<Homography>,
    origin: [f64; 2],
    unit: [f64; 2],
}

impl LaneAxis {
    fn new(direction: &[ImagePoint; 2], homography: Option<&Homography>) -> Option<LaneAxis> {
        let (from, to) = match homography {
            Some(h) => (h.to_ground(direction[0])?, h.to_ground(direction[1])?),
            None => (direction[0], direction[1]),
        };
        let length = dist(from, to);
        if !length.is_finite() || length <= 0.0 {
            return None;
        }
        let unit = [(to[0] - from[0]) / length, (to[1] - from[1]) / length];
        Some(LaneAxis { homography: homography.cloned(), origin: from, unit })
    }

    fn position(&self, p: ImagePoint) -> Option<f64> {
        let q = match &self.homography {
            Some(h) => h.to_ground(p)?,
            None => p,
        };
        let s = (q[0] - self.origin[0]) * self.unit[0] + (q[1] - self.origin[1]) * self.unit[1];
        s.is_finite().then_some(s)
    }

    /// Lowest and highest positions of a polygon's vertices. The extreme positions of a polygon
    /// along a line are at its vertices, on the image and, since a homography maps the visible
    /// polygon to a polygon, on the ground too.
    fn extent(&self, polygon: &[ImagePoint]) -> Option<(f64, f64)> {
        let extent = polygon.iter().try_fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            let s = self.position(*v)?;
            Some((lo.min(s), hi.max(s)))
        });
        extent.filter(|(lo, hi)| lo <= hi)
    }
}

/// The share of a vehicle's length upstream of its ground point on a lane whose direction runs
/// `direction` on the image. The ground point (bottom centre of the box) is the vehicle's end
/// nearest the camera: its front on a lane running down the image (traffic approaching), its
/// rear on one running up it (receding), its middle across the image; in between, linear in the
/// direction's image y component.
fn upstream_share(direction: &[ImagePoint; 2]) -> f64 {
    let (dx, dy) = (direction[1][0] - direction[0][0], direction[1][1] - direction[0][1]);
    let length = dx.hypot(dy);
    if length.is_finite() && length > 0.0 {
        ((1.0 + dy / length) / 2.0).clamp(0.0, 1.0)
    } else {
        0.5
    }
}

impl CompiledZone {
    fn new(spec: &ZoneSpec, homography: Option<&Homography>) -> CompiledZone {
        let axis = spec.direction.as_ref().and_then(|d| LaneAxis::new(d, homography));
        let extent = axis.as_ref().and_then(|axis| axis.extent(&spec.polygon));
        let length_m = match (homography, spec.direction.is_some()) {
            (None, _) => None,
            (Some(_), true) => extent.map(|(lo, hi)| hi - lo),
            (Some(h), false) => {
                let ground: Option<Vec<[f64; 2]>> = spec.polygon.iter().map(|v| h.to_ground(*v)).collect();
                ground.map(|g| {
                    g.iter()
                        .enumerate()
                        .flat_map(|(i, a)| g[i + 1..].iter().map(move |b| dist(*a, *b)))
                        .fold(0.0, f64::max)
                })
            }
        };
        let stop_line_position = match (&axis, &spec.stop_line) {
            (Some(axis), Some(stop_line)) => axis.position(midpoint(stop_line)),
            _ => None,
        };
        // Loops are metres on the road: validation refuses one without a calibration.
        let loop_section = match (&axis, &spec.detection_loop, homography) {
            (Some(axis), Some(detection_loop), Some(_)) => {
                axis.position(midpoint(&detection_loop.at)).map(|start| (start, start + detection_loop.length_m))
            }
            _ => None,
        };
        CompiledZone {
            id: spec.id.clone(),
            name: spec.name.clone(),
            polygon: spec.polygon.clone(),
            axis,
            is_lane: spec.is_lane(),
            extent,
            length_m,
            stop_line_position,
            loop_section,
            upstream_share: spec.direction.as_ref().map_or(0.5, upstream_share),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn polygon(&self) -> &[ImagePoint] {
        &self.polygon
    }

    /// A zone with a travel direction.
    pub fn is_lane(&self) -> bool {
        self.is_lane
    }

    /// Whether an image point (a ground point of a box) is in the zone; the boundary counts as
    /// inside.
    pub fn contains(&self, p: ImagePoint) -> bool {
        polygon_contains(&self.polygon, p)
    }

    /// Length (metres) used for density: a lane's extent along its axis, a plain zone's largest
    /// distance between two ground vertices. `None` without calibration or when a vertex is at
    /// or beyond the horizon.
    pub fn length_m(&self) -> Option<f64> {
        self.length_m
    }

    /// Position of an image point along the lane axis, increasing downstream, measured from the
    /// direction's `from` point: metres on the ground when calibrated, pixels on the image
    /// otherwise. `None` for plain zones and for points at or beyond the horizon.
    pub fn lane_position(&self, p: ImagePoint) -> Option<f64> {
        self.axis.as_ref()?.position(p)
    }

    /// Unit vector of the lane axis in the frame of `lane_position` (ground metres or image
    /// pixels): a velocity dotted with it is the along-lane speed. `None` for plain zones.
    pub fn axis_unit(&self) -> Option<[f64; 2]> {
        self.axis.as_ref().map(|a| a.unit)
    }

    /// Lowest and highest lane positions of the polygon's vertices.
    pub fn extent(&self) -> Option<(f64, f64)> {
        self.extent
    }

    /// The lane's reference section for headways: the middle of its extent.
    pub fn reference_position(&self) -> Option<f64> {
        self.extent.map(|(lo, hi)| (lo + hi) / 2.0)
    }

    /// Lane position of the stop line's midpoint; `None` without a stop line.
    pub fn stop_line_position(&self) -> Option<f64> {
        self.stop_line_position
    }

    /// The loop's section `(start, end)` in lane positions (metres, `end - start` its length);
    /// `None` for zones and lanes without a loop.
    pub fn loop_section(&self) -> Option<(f64, f64)> {
        self.loop_section
    }

    /// The lane positions `(rear, front)` a vehicle `length` long covers when its ground point is
    /// at lane position `position`: the ground point is its end nearest the camera (front when
    /// the lane runs down the image, rear when up, in between when across).
    pub fn footprint(&self, position: f64, length: f64) -> (f64, f64) {
        let rear = position - self.upstream_share * length;
        (rear, rear + length)
    }

    /// Whether a vehicle `length` long with its ground point at lane position `position` covers
    /// the loop (its footprint overlaps the loop's section; touching is not covering).
    pub fn loop_covered_by(&self, position: f64, length: f64) -> bool {
        let Some((start, end)) = self.loop_section else { return false };
        let (rear, front) = self.footprint(position, length);
        rear < end && front > start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Matrix3, Vector3};

    const DOC_EXAMPLE: &str = r#"{
      "lines": [{"id": "stop-bar", "name": "", "a": [0, 150], "b": [320, 150]}],
      "zones": [
        {"id": "lane-1", "polygon": [[10, 60], [160, 60], [160, 239], [10, 239]],
         "direction": [[85, 60], [85, 239]], "stop_line": [[10, 230], [160, 230]],
         "loop": {"at": [[10, 150], [160, 150]], "length_m": 2.0}},
        {"id": "junction-box", "polygon": [[0, 0], [50, 0], [50, 50]]}
      ],
      "exclusions": [{"id": "clock-overlay", "polygon": [[0, 0], [320, 0], [320, 20], [0, 20]]}],
      "min_object_size": {"width": 6, "height": 6},
      "calibration": {"points": [
        {"image": [100, 60], "ground": [0, 60]}, {"image": [220, 60], "ground": [7.2, 60]},
        {"image": [20, 230], "ground": [0, 0]}, {"image": [300, 230], "ground": [7.2, 0]}
      ]}
    }"#;

    fn zone(id: &str, polygon: &[[f64; 2]]) -> ZoneSpec {
        ZoneSpec {
            id: id.into(),
            name: String::new(),
            polygon: polygon.to_vec(),
            direction: None,
            stop_line: None,
            detection_loop: None,
        }
    }

    fn square(x: f64, y: f64, side: f64) -> Vec<[f64; 2]> {
        vec![[x, y], [x + side, y], [x + side, y + side], [x, y + side]]
    }

    /// Ground metres -> image pixels of a camera 8 m up, looking along +y, tilted 25 degrees down.
    fn camera() -> Matrix3<f64> {
        let (f, cx, cy, h) = (800.0, 320.0, 240.0, 8.0);
        let (s, c) = 25f64.to_radians().sin_cos();
        Matrix3::new(f, cx * c, cx * h * s, 0.0, -f * s + cy * c, f * h * c + cy * h * s, 0.0, c, h * s)
    }

    fn image_of(g: [f64; 2]) -> [f64; 2] {
        let v = camera() * Vector3::new(g[0], g[1], 1.0);
        assert!(v[2] > 0.0);
        [v[0] / v[2], v[1] / v[2]]
    }

    fn calibration() -> Calibration {
        let ground = [[-5.0, 5.0], [10.0, 5.0], [-5.0, 90.0], [10.0, 90.0], [2.0, 40.0]];
        Calibration { points: ground.iter().map(|g| CalibrationPoint { image: image_of(*g), ground: *g }).collect() }
    }

    /// A 3.5 m x 60 m lane (x 0..3.5, y 10..70), travel towards +y, stop line at y = 65.
    fn calibrated_lane() -> Geometry {
        let lane = ZoneSpec {
            direction: Some([image_of([1.75, 10.0]), image_of([1.75, 70.0])]),
            stop_line: Some([image_of([0.0, 65.0]), image_of([3.5, 65.0])]),
            ..zone("lane-1", &[[0.0, 10.0], [3.5, 10.0], [3.5, 70.0], [0.0, 70.0]].map(image_of))
        };
        let plain = zone("box", &[[5.0, 20.0], [8.0, 20.0], [8.0, 24.0], [5.0, 24.0]].map(image_of));
        Geometry { zones: vec![lane, plain], calibration: Some(calibration()), ..Default::default() }
    }

    #[test]
    fn the_documented_example_is_valid() {
        let geometry: Geometry = serde_json::from_str(DOC_EXAMPLE).unwrap();
        assert_eq!(geometry.validate(), Vec::<String>::new());
        let scene = SceneGeometry::new(&geometry).unwrap();
        assert!(scene.calibrated());
        let lane = &scene.zones()[0];
        assert!(lane.is_lane() && !scene.zones()[1].is_lane());
        // From y = 60 (60 m) to y = 239 the lane runs towards the camera: ground y falls.
        let (near, far) = (lane.lane_position([85.0, 200.0]).unwrap(), lane.lane_position([85.0, 100.0]).unwrap());
        assert!(near > far);
        assert!(lane.stop_line_position().unwrap() > lane.reference_position().unwrap());
        let (start, end) = lane.loop_section().unwrap();
        assert!((end - start - 2.0).abs() < 1e-9 && start > far && start < near, "{start} {end}");
    }

    #[test]
    fn a_bow_tie_polygon_is_rejected() {
        let geometry = Geometry {
            zones: vec![zone("bow", &[[0.0, 0.0], [10.0, 10.0], [10.0, 0.0], [0.0, 10.0]])],
            ..Default::default()
        };
        let errors = geometry.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(r#"zone "bow": polygon crosses itself"#), "{errors:?}");
    }

    #[test]
    fn touching_and_doubling_back_polygons_are_not_simple() {
        let touching = [[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [10.0, 10.0], [0.0, 10.0], [5.0, 5.0]];
        let spike = [[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [5.0, 0.0], [5.0, 5.0]];
        let repeated = [[0.0, 0.0], [10.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        for (polygon, expected) in
            [(&touching[..], "crosses itself"), (&spike[..], "crosses itself"), (&repeated[..], "repeats consecutive")]
        {
            let errors = Geometry { zones: vec![zone("z", polygon)], ..Default::default() }.validate();
            assert!(errors.iter().any(|e| e.contains(expected)), "{polygon:?}: {errors:?}");
        }
        let thin = Geometry { zones: vec![zone("z", &[[0.0, 0.0], [10.0, 0.0], [0.0, 0.1]])], ..Default::default() };
        assert!(thin.validate()[0].contains("area 0.5 px² is below"), "{:?}", thin.validate());
    }

    #[test]
    fn ids_are_unique_across_lines_zones_and_exclusions() {
        let geometry = Geometry {
            lines: vec![LineSpec { id: "a".into(), name: String::new(), a: [0.0, 0.0], b: [10.0, 0.0] }],
            zones: vec![zone("a", &square(0.0, 0.0, 10.0))],
            exclusions: vec![
                ExclusionSpec { id: "a".into(), polygon: square(0.0, 0.0, 10.0) },
                ExclusionSpec { id: "e".into(), polygon: square(0.0, 0.0, 10.0) },
                ExclusionSpec { id: "e".into(), polygon: square(0.0, 0.0, 10.0) },
            ],
            ..Default::default()
        };
        let errors = geometry.validate();
        assert_eq!(
            errors,
            vec![
                r#"zone "a": id is already used by a line"#,
                r#"exclusion "a": id is already used by a line"#,
                r#"exclusion "e": id is already used by an exclusion"#,
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut bad_calibration = calibration();
        bad_calibration.points.truncate(3);
        bad_calibration.points[0].ground[0] = f64::NAN;
        let geometry = Geometry {
            lines: vec![LineSpec { id: "l 1".into(), name: String::new(), a: [0.0, 0.0], b: [0.0, 0.0] }],
            zones: vec![
                ZoneSpec { name: "a\nb".into(), ..zone("z1", &[[0.0, 0.0], [1.0, 1.0]]) },
                ZoneSpec { stop_line: Some([[0.0, 0.0], [5.0, 0.0]]), ..zone("z2", &square(0.0, 0.0, 10.0)) },
                ZoneSpec { direction: Some([[3.0, 3.0], [3.0, 3.5]]), ..zone("z1", &square(0.0, 0.0, 10.0)) },
            ],
            exclusions: vec![ExclusionSpec { id: String::new(), polygon: vec![[f64::INFINITY, 0.0]; 3] }],
            min_object_size: Some(MinObjectSize { width: -1.0, height: f64::NAN }),
            calibration: Some(bad_calibration),
            crop: Some(Crop::Rect(crate::analytics::framing::CropRect { x: 0.0, y: 0.0, width: 8.0, height: 64.0 })),
            normalise: false,
        };
        let errors = geometry.validate();
        let expected = [
            r#"line id "l 1" must be"#,
            r#"line "l 1": a and b must be at least one pixel apart"#,
            r#"zone "z1": name must not contain control characters"#,
            r#"zone "z1": polygon needs 3 to 64 vertices (got 2)"#,
            r#"zone "z2": stop_line needs a direction"#,
            r#"zone "z1": direction must be at least 1 px long"#,
            r#"exclusion id "" must be"#,
            r#"exclusion "": polygon coordinates must be finite"#,
            r#"zone "z1": id is already used by a zone"#,
            "min_object_size: width must be",
            "min_object_size: height must be",
            "calibration: at least 4 points are needed (got 3)",
            "calibration: point 1: ground coordinates must be finite",
            "crop: width must be",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, start) in errors.iter().zip(expected) {
            assert!(error.starts_with(start), "{error:?} should start with {start:?}");
        }
        assert_eq!(SceneGeometry::new(&geometry).unwrap_err(), errors);
    }

    #[test]
    fn a_stop_line_needs_a_direction() {
        let geometry = Geometry {
            zones: vec![ZoneSpec { stop_line: Some([[0.0, 5.0], [10.0, 5.0]]), ..zone("z", &square(0.0, 0.0, 10.0)) }],
            ..Default::default()
        };
        assert_eq!(
            geometry.validate(),
            vec![r#"zone "z": stop_line needs a direction (stop lines are for lanes only)"#]
        );
    }

    #[test]
    fn calibration_problems_are_prefixed() {
        let mut geometry = calibrated_lane();
        if let Some(c) = geometry.calibration.as_mut() {
            c.points[4].ground = [2.0, 45.0];
        }
        let errors = geometry.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("calibration: reprojection error"), "{errors:?}");
    }

    #[test]
    fn a_calibrated_lane_measures_in_metres() {
        let scene = SceneGeometry::new(&calibrated_lane()).unwrap();
        let lane = &scene.zones()[0];
        assert_eq!(lane.id(), "lane-1");
        let length = lane.length_m().unwrap();
        assert!((length - 60.0).abs() < 1e-6, "{length}");
        let (lo, hi) = lane.extent().unwrap();
        assert!(lo.abs() < 1e-6 && (hi - 60.0).abs() < 1e-6, "{lo} {hi}");
        assert!((lane.reference_position().unwrap() - 30.0).abs() < 1e-6);
        assert!((lane.stop_line_position().unwrap() - 55.0).abs() < 1e-6);
        let unit = lane.axis_unit().unwrap();
        assert!(unit[0].abs() < 1e-9 && (unit[1] - 1.0).abs() < 1e-9, "{unit:?}");
        let mut previous = f64::NEG_INFINITY;
        for y in [12.0, 20.0, 33.0, 50.0, 69.0] {
            let s = lane.lane_position(image_of([1.0, y])).unwrap();
            assert!((s - (y - 10.0)).abs() < 1e-6, "{y}: {s}");
            assert!(s > previous);
            previous = s;
        }
        let plain = &scene.zones()[1];
        assert!((plain.length_m().unwrap() - 5.0).abs() < 1e-6, "3 x 4 m: diagonal 5 m");
        assert_eq!(plain.lane_position(image_of([6.0, 22.0])), None);
        assert!(plain.contains(image_of([6.0, 22.0])) && !plain.contains(image_of([6.0, 30.0])));
        let g = scene.to_ground(image_of([3.0, 44.0])).unwrap();
        assert!((g[0] - 3.0).abs() < 1e-6 && (g[1] - 44.0).abs() < 1e-6);
    }

    /// The calibrated lane with a loop `length_m` long whose upstream edge crosses the lane at
    /// ground y = `at_y` (lane position `at_y - 10`).
    fn lane_with_loop(at_y: f64, length_m: f64) -> Geometry {
        let mut geometry = calibrated_lane();
        let at = [image_of([0.0, at_y]), image_of([3.5, at_y])];
        geometry.zones[0].detection_loop = Some(LoopSpec { at, length_m });
        geometry
    }

    #[test]
    fn a_loop_is_a_section_of_a_calibrated_lane() {
        let scene = SceneGeometry::new(&lane_with_loop(40.0, 2.0)).unwrap();
        let lane = &scene.zones()[0];
        let (start, end) = lane.loop_section().unwrap();
        assert!((start - 30.0).abs() < 1e-6 && (end - 32.0).abs() < 1e-6, "{start} {end}");
        assert_eq!(scene.zones()[1].loop_section(), None);
        // This lane runs up the image (away from the camera): the ground point is a vehicle's
        // rear, and the vehicle lies downstream of it.
        let (rear, front) = lane.footprint(25.0, 4.5);
        assert!((rear - 25.0).abs() < 0.05 && (front - rear - 4.5).abs() < 1e-9, "{rear} {front}");
        assert!(lane.loop_covered_by(26.0, 4.5) && lane.loop_covered_by(31.9, 4.5));
        assert!(!lane.loop_covered_by(25.4, 4.5) && !lane.loop_covered_by(32.1, 4.5));
        assert!(lane.loop_covered_by(21.0, 10.0), "a truck's front reaches it");
        // The ground point is the end nearest the camera: front when traffic comes down the
        // image, rear when it goes up, the middle when it crosses.
        assert_eq!(upstream_share(&[[0.0, 0.0], [0.0, 10.0]]), 1.0);
        assert_eq!(upstream_share(&[[0.0, 10.0], [0.0, 0.0]]), 0.0);
        assert_eq!(upstream_share(&[[0.0, 0.0], [10.0, 0.0]]), 0.5);
        assert!((upstream_share(&[[0.0, 0.0], [-10.0, 10.0]]) - 0.854).abs() < 1e-3);
    }

    #[test]
    fn a_loop_must_lie_on_a_calibrated_lane() {
        let message = |geometry: &Geometry| {
            let errors = geometry.validate();
            assert_eq!(errors.len(), 1, "{errors:?}");
            errors[0].clone()
        };
        let mut uncalibrated = lane_with_loop(40.0, 2.0);
        uncalibrated.calibration = None;
        assert_eq!(
            message(&uncalibrated),
            r#"zone "lane-1": loop needs a calibration (its length_m and the vehicles' lengths are metres on the road)"#
        );
        let mut on_a_zone = lane_with_loop(40.0, 2.0);
        on_a_zone.zones[1].detection_loop = on_a_zone.zones[0].detection_loop.take();
        assert_eq!(message(&on_a_zone), r#"zone "box": loop needs a direction (loops are for lanes only)"#);
        for bad in [0.0, -2.0, f64::NAN, 50.5] {
            let error = message(&lane_with_loop(40.0, bad));
            assert!(error.starts_with(r#"zone "lane-1": loop length_m must be a number of metres above 0"#), "{error}");
        }
        // 59 m + 2 m runs past the lane's downstream end (60 m); 8 m starts before it.
        let past = message(&lane_with_loop(69.0, 2.0));
        assert!(past.starts_with(r#"zone "lane-1": loop runs from 59.0 to 61.0 m along the lane, outside"#), "{past}");
        assert!(message(&lane_with_loop(8.0, 2.0)).contains("loop runs from -2.0 to 0.0 m"));
        let mut short = lane_with_loop(40.0, 2.0);
        if let Some(l) = short.zones[0].detection_loop.as_mut() {
            l.at = [[1.0, 1.0], [1.0, 1.5]];
        }
        assert_eq!(message(&short), r#"zone "lane-1": loop at must be at least 1 px long"#);
        let mut sky = lane_with_loop(40.0, 2.0);
        if let Some(l) = sky.zones[0].detection_loop.as_mut() {
            l.at = [[0.0, -300.0], [300.0, -300.0]];
        }
        assert!(message(&sky).contains("loop at reaches the calibration's horizon"));
        // The loop's JSON: `loop` with `at` and `length_m`, nothing else.
        let plain = r#"{"zones": [{"id": "z", "polygon": [[0,0],[10,0],[0,10]], "direction": [[0,0],[0,10]],
            "loop": {"at": [[0,5],[5,5]], "length_m": 2}}]}"#;
        let parsed: Geometry = serde_json::from_str(plain).unwrap();
        assert_eq!(parsed.zones[0].detection_loop, Some(LoopSpec { at: [[0.0, 5.0], [5.0, 5.0]], length_m: 2.0 }));
        let text = serde_json::to_string(&parsed).unwrap();
        assert!(text.contains(r#""loop":{"at":[[0.0,5.0],[5.0,5.0]],"length_m":2.0}"#), "{text}");
        assert_eq!(serde_json::from_str::<Geometry>(&text).unwrap(), parsed);
        let extra = r#"{"zones": [{"id": "z", "polygon": [[0,0],[1,0],[0,1]], "direction": [[0,0],[0,1]],
            "loop": {"at": [[0,0],[1,0]], "length_m": 2, "width_m": 2}}]}"#;
        assert!(serde_json::from_str::<Geometry>(extra).unwrap_err().to_string().contains("width_m"));
    }

    #[test]
    fn an_uncalibrated_lane_measures_in_pixels() {
        let mut geometry = calibrated_lane();
        geometry.calibration = None;
        let scene = SceneGeometry::new(&geometry).unwrap();
        let lane = &scene.zones()[0];
        assert!(!scene.calibrated() && scene.to_ground([10.0, 10.0]).is_none());
        assert_eq!(lane.length_m(), None);
        let direction = geometry.zones[0].direction.unwrap();
        let pixels = dist(direction[0], direction[1]);
        let s = lane.lane_position(direction[1]).unwrap();
        assert!((s - pixels).abs() < 1e-9, "{s} {pixels}");
        assert!(lane.extent().is_some() && lane.stop_line_position().is_some());
    }

    #[test]
    fn a_lane_direction_beyond_the_horizon_is_rejected() {
        let mut geometry = calibrated_lane();
        // The camera's horizon is at image y = cy - f tan(25 deg), about -133.
        geometry.zones[0].direction = Some([image_of([1.75, 10.0]), [300.0, -200.0]]);
        let errors = geometry.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains(r#"zone "lane-1": direction reaches the calibration's horizon"#), "{errors:?}");
    }

    #[test]
    fn a_calibrated_zone_must_stay_on_the_visible_road() {
        let mut geometry = calibrated_lane();
        let mut beyond = geometry.zones[0].clone();
        beyond.id = "sky".into();
        beyond.direction = None;
        beyond.stop_line = None;
        beyond.polygon = vec![[0.0, -300.0], [300.0, -300.0], [300.0, -250.0], [0.0, -250.0]];
        geometry.zones.push(beyond);
        let errors = geometry.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains(r#"zone "sky": polygon reaches the calibration's horizon"#), "{errors:?}");
    }

    #[test]
    fn keep_detection_applies_exclusions_and_the_minimum_size() {
        let geometry = Geometry {
            exclusions: vec![ExclusionSpec {
                id: "clock".into(),
                polygon: vec![[0.0, 0.0], [100.0, 0.0], [100.0, 20.0], [0.0, 20.0]],
            }],
            min_object_size: Some(MinObjectSize { width: 6.0, height: 8.0 }),
            ..Default::default()
        };
        let scene = SceneGeometry::new(&geometry).unwrap();
        assert!(scene.keep_detection(&BBox::new(200.0, 100.0, 230.0, 120.0)));
        assert!(!scene.keep_detection(&BBox::new(10.0, 2.0, 60.0, 30.0)), "centre (35, 16) is in the clock");
        assert!(scene.keep_detection(&BBox::new(10.0, 10.0, 60.0, 40.0)), "centre (35, 25) is below it");
        assert!(!scene.keep_detection(&BBox::new(200.0, 100.0, 205.0, 120.0)), "5 px wide");
        assert!(!scene.keep_detection(&BBox::new(200.0, 100.0, 230.0, 107.0)), "7 px high");
        assert!(scene.keep_detection(&BBox::new(200.0, 100.0, 206.0, 108.0)), "exactly the minimum");
        assert!(!scene.keep_detection(&BBox::new(f32::NAN, 100.0, 230.0, 120.0)));
        assert_eq!(ground_point(&BBox::new(10.0, 20.0, 30.0, 40.0)), [20.0, 40.0]);
    }

    #[test]
    fn contains_counts_the_boundary_as_inside() {
        let scene = SceneGeometry::new(&Geometry {
            zones: vec![zone("z", &[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [5.0, 5.0], [0.0, 10.0]])],
            ..Default::default()
        })
        .unwrap();
        let z = &scene.zones()[0];
        assert!(z.contains([2.0, 2.0]) && z.contains([10.0, 5.0]) && z.contains([0.0, 0.0]) && z.contains([5.0, 5.0]));
        assert!(!z.contains([5.0, 8.0]), "in the notch");
        assert!(!z.contains([11.0, 5.0]) && !z.contains([f64::NAN, 5.0]));
    }

    #[test]
    fn serde_rejects_unknown_keys_and_round_trips() {
        assert!(serde_json::from_str::<Geometry>(r#"{"zones": [], "lanes": []}"#).is_err());
        let nested = r#"{"zones": [{"id": "z", "polygon": [[0,0],[1,0],[0,1]], "colour": "red"}]}"#;
        assert!(serde_json::from_str::<Geometry>(nested).is_err());
        let geometry: Geometry = serde_json::from_str(DOC_EXAMPLE).unwrap();
        let text = serde_json::to_string(&geometry).unwrap();
        assert_eq!(serde_json::from_str::<Geometry>(&text).unwrap(), geometry);
        let empty: Geometry = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Geometry::default());
        assert_eq!(serde_json::to_string(&empty).unwrap(), r#"{"lines":[],"zones":[],"exclusions":[]}"#);
    }

    /// A small deterministic generator (xorshift) of awkward values: ordinary pixels mixed with
    /// huge, non-finite and repeated numbers.
    struct Awkward(u64);

    impl Awkward {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn value(&mut self) -> f64 {
            const SPECIALS: [f64; 10] =
                [0.0, 1.0, -1.0, 1e5, 1e6, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 5.0, 0.5];
            let r = self.next();
            if r.is_multiple_of(4) {
                SPECIALS[(r >> 8) as usize % SPECIALS.len()]
            } else {
                ((r >> 11) % 640) as f64
            }
        }

        fn points(&mut self, n: usize) -> Vec<[f64; 2]> {
            (0..n).map(|_| [self.value(), self.value()]).collect()
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = Awkward(0x2545_f491_4f6c_dd1d);
        let mut compiled = 0;
        for _ in 0..3_000 {
            let n = (rng.next() % 8) as usize;
            let polygon = rng.points(n);
            let direction = rng.points(2);
            let m = 4 + (rng.next() % 3) as usize;
            let calibration = rng.points(m).into_iter().map(|p| CalibrationPoint { image: p, ground: [p[1], p[0]] });
            let with_calibration = rng.next().is_multiple_of(2);
            let loop_length = rng.value() / 10.0;
            let geometry = Geometry {
                zones: vec![ZoneSpec {
                    direction: Some([direction[0], direction[1]]),
                    stop_line: Some([direction[1], direction[0]]),
                    detection_loop: polygon.first().map(|p| LoopSpec { at: [direction[1], *p], length_m: loop_length }),
                    ..zone("z", &polygon)
                }],
                exclusions: vec![ExclusionSpec { id: "e".into(), polygon: polygon.clone() }],
                calibration: with_calibration.then(|| Calibration { points: calibration.collect() }),
                ..Default::default()
            };
            if let Ok(scene) = SceneGeometry::new(&geometry) {
                compiled += 1;
                let z = &scene.zones()[0];
                let p = [rng.value(), rng.value()];
                let _ = (z.contains(p), z.lane_position(p), z.length_m(), z.extent(), scene.to_ground(p));
                let _ = (z.loop_section(), z.loop_covered_by(rng.value(), rng.value()));
                let _ = scene.keep_detection(&BBox::new(p[0] as f32, p[1] as f32, 1.0, 2.0));
            }
        }
        assert!(compiled > 0, "some generated geometries are valid");
    }
}
