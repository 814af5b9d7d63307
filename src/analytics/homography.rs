//! Image -> road-plane homography from point correspondences.
//!
//! Solved by the normalised direct linear transform (Hartley & Zisserman, "Multiple View Geometry",
//! algorithm 4.2): both point sets are translated and scaled so that their centroid is the origin
//! and their mean distance from it is sqrt(2), the 2n x 9 DLT system is solved by SVD in those
//! coordinates, and the result is mapped back. Without the normalisation the system mixes pixel
//! values in the thousands with ones and the SVD answer depends on where the origin happens to be.

use nalgebra::{DMatrix, Matrix3};
use serde::{Deserialize, Serialize};

/// One calibration correspondence: a point on the image and where it lies on the road.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationPoint {
    /// Source-frame pixels.
    pub image: [f64; 2],
    /// Metres on the road plane (any origin and orientation).
    pub ground: [f64; 2],
}

/// Fewer correspondences cannot fix the 8 degrees of freedom of a homography.
pub const MIN_POINTS: usize = 4;
/// Enough for any hand-made calibration; bounds the work one API request can ask for.
pub const MAX_POINTS: usize = 64;
/// Image coordinates beyond this are not pixels of any real frame (same bound as the drawings).
pub const MAX_IMAGE_COORD: f64 = 100_000.0;
/// Ground coordinates beyond this (1,000 km) are a unit mistake, not a road seen by one camera.
pub const MAX_GROUND_COORD_M: f64 = 1_000_000.0;
/// Largest accepted distance between a calibration point's ground position and where the solved
/// map sends its image position. Larger means the points are inconsistent (a typo, a point on a
/// kerb or a bridge rather than the road plane), and every speed would inherit the error.
pub const MAX_REPROJECTION_ERROR_M: f64 = 0.5;

/// Three points are collinear when the third lies closer to the line through the other two than
/// this fraction of the longest side of their triangle. A click is good to about a pixel on a
/// span of hundreds, so anything flatter than 1/1000 carries no usable information about the
/// perspective and would make the map hinge on clicking noise.
const COLLINEAR_TOLERANCE: f64 = 1e-3;
/// Two points coincide when closer than this fraction of the spread of their point set.
const COINCIDENT_TOLERANCE: f64 = 1e-6;
/// The DLT solution is the right singular vector of the smallest singular value; it is unique
/// (up to scale) only when the second-smallest singular value is clearly non-zero. Relative to
/// the largest one, so the test does not depend on the number of points.
const NULL_SPACE_TOLERANCE: f64 = 1e-6;
/// Condition number (largest / smallest singular value) of the normalised 3x3 map above which
/// the map is nearly singular: it squeezes the plane towards a line and small pixel errors
/// become large ground errors. A sound perspective view of a road stays many orders below this.
const MAX_CONDITION: f64 = 1e8;
/// A point maps to the ground only when its homogeneous w is above this fraction of the sum of
/// the magnitudes of the terms that make up w; anything smaller is at the horizon, where the
/// ground position is infinite or dominated by rounding.
const HORIZON_TOLERANCE: f64 = 1e-9;
/// Iteration cap for the SVDs, so no input can make them loop forever (they converge in tens).
const SVD_MAX_ITERATIONS: usize = 10_000;

/// A 3x3 projective map from image pixels to ground metres.
#[derive(Debug, Clone, PartialEq)]
pub struct Homography {
    pub(crate) m: nalgebra::Matrix3<f64>,
}

impl Homography {
    /// Solves the map from image -> ground correspondences, or says why the points cannot give a
    /// trustworthy one: too few or too many, not finite, coincident or collinear points, a
    /// solution that is not unique or is near-singular, a horizon that passes through the
    /// calibration points (the map folds), or a reprojection error above 0.5 m.
    pub fn solve(points: &[CalibrationPoint]) -> Result<Homography, String> {
        let problems = Self::input_problems(points);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }

        let image: Vec<[f64; 2]> = points.iter().map(|p| p.image).collect();
        let ground: Vec<[f64; 2]> = points.iter().map(|p| p.ground).collect();
        let (t_image, image_n) = normalise(&image).ok_or("image points coincide")?;
        let (t_ground, ground_n) = normalise(&ground).ok_or("ground points coincide")?;

        // Two rows per correspondence, from u = (h0 x + h1 y + h2) / w, v = (h3 x + h4 y + h5) / w,
        // w = h6 x + h7 y + h8. Padded with zero rows to at least 9 so that the thin SVD still
        // returns all 9 right singular vectors (4 points give only 8 equations).
        let rows = (2 * points.len()).max(9);
        let mut a = DMatrix::<f64>::zeros(rows, 9);
        for (i, (p, q)) in image_n.iter().zip(&ground_n).enumerate() {
            let [x, y] = *p;
            let [u, v] = *q;
            let r = 2 * i;
            let first = [-x, -y, -1.0, 0.0, 0.0, 0.0, u * x, u * y, u];
            let second = [0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v];
            for c in 0..9 {
                a[(r, c)] = first[c];
                a[(r + 1, c)] = second[c];
            }
        }
        let svd = a
            .try_svd_unordered(false, true, f64::EPSILON, SVD_MAX_ITERATIONS)
            .ok_or("the calibration system did not converge (SVD)")?;
        let v_t = svd.v_t.as_ref().ok_or("the calibration system did not converge (SVD)")?;
        let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
        order.sort_by(|&i, &j| svd.singular_values[j].total_cmp(&svd.singular_values[i]));
        let (Some(&largest), Some(&smallest), Some(&second)) =
            (order.first(), order.last(), order.len().checked_sub(2).and_then(|i| order.get(i)))
        else {
            return Err("the calibration system is too small".into());
        };
        let sigma_max = svd.singular_values[largest];
        let sigma_second = svd.singular_values[second];
        let finite = sigma_max.is_finite() && sigma_second.is_finite();
        if !finite || sigma_max <= 0.0 || sigma_second <= NULL_SPACE_TOLERANCE * sigma_max {
            return Err(format!(
                "the points do not determine a unique map (degenerate configuration, e.g. too many of them on \
                 one line: relative second-smallest singular value {:.2e} of the normalised system)",
                sigma_second / sigma_max
            ));
        }
        let h = v_t.row(smallest);
        let h_n = Matrix3::new(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]);

        let condition = condition_number(&h_n).ok_or("the solved map is singular")?;
        if condition > MAX_CONDITION {
            return Err(format!(
                "the solved map is ill-conditioned (condition number {condition:.2e} above {MAX_CONDITION:.0e}): \
                 the points are nearly degenerate"
            ));
        }

        let t_ground_inv = t_ground.try_inverse().ok_or("ground points coincide")?;
        let mut m = t_ground_inv * h_n * t_image;
        let norm = m.norm();
        if !norm.is_finite() || norm == 0.0 {
            return Err("the solved map is singular".into());
        }
        m /= norm;

        // The overall sign of a homography is free; choose the one that puts the calibration
        // points in front (w > 0). If they do not all share one sign of w, the horizon runs
        // between them and the map folds the road over itself.
        let ws: Vec<f64> = image.iter().map(|p| w_of(&m, *p)).collect();
        let negatives = ws.iter().filter(|w| **w < 0.0).count();
        if negatives * 2 > ws.len() {
            m = -m;
        }
        let homography = Homography { m };
        let beyond: Vec<String> = image
            .iter()
            .enumerate()
            .filter(|(_, p)| homography.to_ground(**p).is_none())
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        if !beyond.is_empty() {
            return Err(format!(
                "the map folds: the horizon passes through the calibration points ({} {} at or beyond it); \
                 check that the ground points are listed in the same order as the image points",
                if beyond.len() == 1 { "point" } else { "points" },
                beyond.join(", ")
            ));
        }

        let (error, worst) = homography.worst_reprojection(points);
        if error.is_nan() || error > MAX_REPROJECTION_ERROR_M {
            return Err(format!(
                "reprojection error {error:.3} m (point {}) is above {MAX_REPROJECTION_ERROR_M} m: \
                 the points are not consistent with one road plane",
                worst + 1
            ));
        }
        Ok(homography)
    }

    /// Problems with the correspondences themselves (count, values, coincident or collinear
    /// points), each in its own message, before any solving. `solve` reports these joined.
    pub fn input_problems(points: &[CalibrationPoint]) -> Vec<String> {
        let mut problems = Vec::new();
        if points.len() < MIN_POINTS {
            problems.push(format!("at least {MIN_POINTS} points are needed (got {})", points.len()));
        }
        if points.len() > MAX_POINTS {
            problems.push(format!("at most {MAX_POINTS} points are allowed (got {})", points.len()));
            // The per-point and per-triple checks would flood the answer (and the triples are
            // cubic work); the count has to be fixed first anyway.
            return problems;
        }
        let mut values_ok = true;
        for (i, p) in points.iter().enumerate() {
            if p.image.iter().any(|c| !c.is_finite() || c.abs() > MAX_IMAGE_COORD) {
                problems.push(format!(
                    "point {}: image coordinates must be finite pixel positions (|c| <= {MAX_IMAGE_COORD})",
                    i + 1
                ));
                values_ok = false;
            }
            if p.ground.iter().any(|c| !c.is_finite() || c.abs() > MAX_GROUND_COORD_M) {
                problems.push(format!(
                    "point {}: ground coordinates must be finite metres (|c| <= {MAX_GROUND_COORD_M})",
                    i + 1
                ));
                values_ok = false;
            }
        }
        if !values_ok || points.len() < MIN_POINTS {
            return problems;
        }
        let image: Vec<[f64; 2]> = points.iter().map(|p| p.image).collect();
        let ground: Vec<[f64; 2]> = points.iter().map(|p| p.ground).collect();
        problems.extend(configuration_problems("image", &image));
        problems.extend(configuration_problems("ground", &ground));
        problems
    }

    /// The ground position (metres) of an image point (pixels); `None` at or beyond the horizon,
    /// where the road plane is not visible and the map would fold back or run to infinity.
    pub fn to_ground(&self, p: [f64; 2]) -> Option<[f64; 2]> {
        let [x, y] = p;
        if !x.is_finite() || !y.is_finite() {
            return None;
        }
        let m = &self.m;
        let w = w_of(m, p);
        let w_scale = (m[(2, 0)] * x).abs() + (m[(2, 1)] * y).abs() + m[(2, 2)].abs();
        if w.is_nan() || w <= 0.0 || w <= HORIZON_TOLERANCE * w_scale {
            return None;
        }
        let gx = (m[(0, 0)] * x + m[(0, 1)] * y + m[(0, 2)]) / w;
        let gy = (m[(1, 0)] * x + m[(1, 1)] * y + m[(1, 2)]) / w;
        (gx.is_finite() && gy.is_finite()).then_some([gx, gy])
    }

    /// The largest distance (metres) between a point's ground position and where this map sends
    /// its image position; infinite when one of them does not map.
    pub fn reprojection_error_m(&self, points: &[CalibrationPoint]) -> f64 {
        self.worst_reprojection(points).0
    }

    /// The 3x3 matrix (image pixels -> homogeneous ground metres, unit Frobenius norm, w > 0 on
    /// the visible road).
    pub fn matrix(&self) -> &Matrix3<f64> {
        &self.m
    }

    /// Largest reprojection error and the index of the point that has it.
    fn worst_reprojection(&self, points: &[CalibrationPoint]) -> (f64, usize) {
        let mut worst = (0.0, 0);
        for (i, p) in points.iter().enumerate() {
            let error = match self.to_ground(p.image) {
                Some(g) => (g[0] - p.ground[0]).hypot(g[1] - p.ground[1]),
                None => f64::INFINITY,
            };
            // NaN (a non-finite ground point) counts as the worst possible.
            if error.is_nan() || error > worst.0 {
                worst = (if error.is_nan() { f64::INFINITY } else { error }, i);
            }
        }
        worst
    }
}

fn w_of(m: &Matrix3<f64>, [x, y]: [f64; 2]) -> f64 {
    m[(2, 0)] * x + m[(2, 1)] * y + m[(2, 2)]
}

/// Coincident and collinear points of one plane (`which` is "image" or "ground"), 1-based in the
/// messages. With exactly four points every triple must be in general position, or the map is not
/// determined; with more, only a set that does not span the plane at all (all on one line) is
/// rejected here, and subtler degeneracies are left to the singular-value test of the solve.
fn configuration_problems(which: &str, pts: &[[f64; 2]]) -> Vec<String> {
    let mut problems = Vec::new();
    let spread =
        pts.iter().enumerate().flat_map(|(i, a)| pts[i + 1..].iter().map(move |b| dist(*a, *b))).fold(0.0, f64::max);
    if spread.is_nan() || spread <= 0.0 {
        problems.push(format!("all {which} points coincide"));
        return problems;
    }
    let coincident = |a: [f64; 2], b: [f64; 2]| dist(a, b) <= COINCIDENT_TOLERANCE * spread;
    for i in 0..pts.len() {
        for j in i + 1..pts.len() {
            if coincident(pts[i], pts[j]) {
                problems.push(format!("{which} points {} and {} coincide", i + 1, j + 1));
            }
        }
    }
    if pts.len() == MIN_POINTS {
        for i in 0..pts.len() {
            for j in i + 1..pts.len() {
                for k in j + 1..pts.len() {
                    let (a, b, c) = (pts[i], pts[j], pts[k]);
                    // A coincident pair is already reported; every triple holding it is trivially
                    // collinear and would only repeat the message.
                    if coincident(a, b) || coincident(a, c) || coincident(b, c) {
                        continue;
                    }
                    if collinear(a, b, c) {
                        problems.push(format!(
                            "{which} points {}, {} and {} are collinear (no three of four points may lie on one line)",
                            i + 1,
                            j + 1,
                            k + 1
                        ));
                    }
                }
            }
        }
    } else if spans_a_line_only(pts) {
        problems.push(format!("all {which} points are collinear: they must span the plane, not one line"));
    }
    problems
}

fn dist(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

/// Whether the triangle is flat: its height on the longest side, relative to that side, is within
/// the tolerance.
fn collinear(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> bool {
    let longest = dist(a, b).max(dist(a, c)).max(dist(b, c));
    if longest.is_nan() || longest <= 0.0 {
        return true;
    }
    let twice_area = ((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])).abs();
    // Height over the longest side = twice the area / longest^2 (height on the longest side).
    twice_area / (longest * longest) <= COLLINEAR_TOLERANCE
}

/// True when the points' scatter has no width across its main direction: the ratio of the small
/// to the large principal standard deviation is within the collinearity tolerance.
fn spans_a_line_only(pts: &[[f64; 2]]) -> bool {
    let n = pts.len() as f64;
    let cx = pts.iter().map(|p| p[0]).sum::<f64>() / n;
    let cy = pts.iter().map(|p| p[1]).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for p in pts {
        let (dx, dy) = (p[0] - cx, p[1] - cy);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    // Eigenvalues of the 2x2 scatter matrix, in closed form.
    let mean = (sxx + syy) / 2.0;
    let radius = (((sxx - syy) / 2.0).powi(2) + sxy * sxy).sqrt();
    let large = mean + radius;
    let small = (mean - radius).max(0.0);
    large.is_nan() || large <= 0.0 || (small / large).sqrt() <= COLLINEAR_TOLERANCE
}

/// Hartley normalisation: the similarity that moves the centroid to the origin and scales the
/// mean distance from it to sqrt(2), and the points so transformed. `None` when all coincide.
fn normalise(pts: &[[f64; 2]]) -> Option<(Matrix3<f64>, Vec<[f64; 2]>)> {
    let n = pts.len() as f64;
    let cx = pts.iter().map(|p| p[0]).sum::<f64>() / n;
    let cy = pts.iter().map(|p| p[1]).sum::<f64>() / n;
    let mean_dist = pts.iter().map(|p| (p[0] - cx).hypot(p[1] - cy)).sum::<f64>() / n;
    if !mean_dist.is_finite() || mean_dist <= 0.0 {
        return None;
    }
    let s = std::f64::consts::SQRT_2 / mean_dist;
    let t = Matrix3::new(s, 0.0, -s * cx, 0.0, s, -s * cy, 0.0, 0.0, 1.0);
    let moved = pts.iter().map(|p| [s * (p[0] - cx), s * (p[1] - cy)]).collect();
    Some((t, moved))
}

/// Largest over smallest singular value; `None` when the matrix is singular or the SVD fails.
fn condition_number(m: &Matrix3<f64>) -> Option<f64> {
    let svd = m.try_svd_unordered(false, false, f64::EPSILON, SVD_MAX_ITERATIONS)?;
    let s = svd.singular_values;
    let max = s.iter().copied().fold(0.0, f64::max);
    let min = s.iter().copied().fold(f64::INFINITY, f64::min);
    (min > 0.0 && max.is_finite()).then(|| max / min)
}

/// Maps a ground point through an image -> ground matrix's inverse; for tests that need image
/// positions of known ground points.
#[cfg(test)]
fn apply(m: &Matrix3<f64>, p: [f64; 2]) -> Option<[f64; 2]> {
    let v = m * nalgebra::Vector3::new(p[0], p[1], 1.0);
    (v[2] > 0.0).then(|| [v[0] / v[2], v[1] / v[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A road seen in perspective: ground metres (x across, y along the road) -> image pixels of
    /// a pinhole camera 8 m up, looking along +y and tilted 25 degrees down; its horizon is a
    /// little above the top of a 640x480 image.
    fn camera() -> Matrix3<f64> {
        let (f, cx, cy, h) = (800.0, 320.0, 240.0, 8.0);
        let (s, c) = 25f64.to_radians().sin_cos();
        Matrix3::new(f, cx * c, cx * h * s, 0.0, -f * s + cy * c, f * h * c + cy * h * s, 0.0, c, h * s)
    }

    fn correspondences(ground: &[[f64; 2]]) -> Vec<CalibrationPoint> {
        let g2i = camera();
        ground
            .iter()
            .map(|g| CalibrationPoint { image: apply(&g2i, *g).expect("in front of the camera"), ground: *g })
            .collect()
    }

    #[test]
    fn recovers_a_known_perspective_map() {
        let points = correspondences(&[[-3.0, 5.0], [4.0, 5.0], [-3.0, 60.0], [4.0, 60.0], [0.5, 30.0]]);
        let h = Homography::solve(&points).expect("solves");
        assert!(h.reprojection_error_m(&points) < 1e-6, "{}", h.reprojection_error_m(&points));
        let fresh = [1.7, 42.0];
        let image = apply(&camera(), fresh).unwrap();
        let back = h.to_ground(image).unwrap();
        assert!(dist(back, fresh) < 1e-6, "{back:?}");
        // Four points suffice and fit exactly.
        let h4 = Homography::solve(&points[..4]).expect("solves");
        assert!(dist(h4.to_ground(image).unwrap(), fresh) < 1e-6);
    }

    #[test]
    fn three_collinear_of_four_is_rejected() {
        let mut points = correspondences(&[[-3.0, 5.0], [4.0, 5.0], [-3.0, 60.0], [4.0, 60.0]]);
        points[3].image =
            [(points[0].image[0] + points[1].image[0]) / 2.0, (points[0].image[1] + points[1].image[1]) / 2.0 + 0.01];
        let err = Homography::solve(&points).unwrap_err();
        assert!(err.contains("collinear") && err.contains("image points 1, 2 and 4"), "{err}");

        let mut ground_line = correspondences(&[[-3.0, 5.0], [4.0, 5.0], [-3.0, 60.0], [4.0, 60.0]]);
        ground_line[2].ground = [0.5, 5.0];
        let err = Homography::solve(&ground_line).unwrap_err();
        assert!(err.contains("ground points 1, 2 and 3 are collinear"), "{err}");
    }

    #[test]
    fn points_all_on_one_line_are_rejected() {
        let points: Vec<CalibrationPoint> = (0..6)
            .map(|i| CalibrationPoint { image: [10.0 * i as f64, 5.0 * i as f64], ground: [i as f64, (i * i) as f64] })
            .collect();
        let err = Homography::solve(&points).unwrap_err();
        assert!(err.contains("all image points are collinear"), "{err}");
    }

    #[test]
    fn four_collinear_of_five_are_not_unique() {
        // No triple test for five points; the null space of the system catches it.
        let mut points = correspondences(&[[-3.0, 5.0], [4.0, 5.0], [0.0, 5.0], [2.0, 5.0], [0.0, 30.0]]);
        points.truncate(5);
        let err = Homography::solve(&points).unwrap_err();
        assert!(err.contains("unique"), "{err}");
    }

    #[test]
    fn a_point_beyond_the_horizon_does_not_map() {
        let points = correspondences(&[[-3.0, 5.0], [4.0, 5.0], [-3.0, 60.0], [4.0, 60.0]]);
        let h = Homography::solve(&points).unwrap();
        // The horizon is where the solved map's w vanishes.
        let m = h.matrix();
        let x = 320.0;
        let y_horizon = -(m[(2, 0)] * x + m[(2, 2)]) / m[(2, 1)];
        let above = if m[(2, 1)] > 0.0 { y_horizon - 50.0 } else { y_horizon + 50.0 };
        assert_eq!(h.to_ground([x, above]), None);
        assert_eq!(h.to_ground([x, y_horizon]), None);
        assert_eq!(h.to_ground([f64::NAN, 10.0]), None);
        let below = if m[(2, 1)] > 0.0 { y_horizon + 50.0 } else { y_horizon - 50.0 };
        assert!(h.to_ground([x, below]).is_some());
    }

    #[test]
    fn inconsistent_points_are_rejected_with_the_reprojection_error() {
        let mut points =
            correspondences(&[[-3.0, 5.0], [4.0, 5.0], [-3.0, 60.0], [4.0, 60.0], [0.5, 30.0], [2.0, 15.0]]);
        points[4].ground = [0.5, 36.0];
        points[5].ground = [-1.0, 15.0];
        let err = Homography::solve(&points).unwrap_err();
        assert!(err.contains("reprojection error"), "{err}");
        assert!(err.contains(" m "), "{err}");
    }

    #[test]
    fn crossed_correspondences_fold_the_map() {
        let mut points = correspondences(&[[-3.0, 5.0], [4.0, 5.0], [-3.0, 60.0], [4.0, 60.0]]);
        // The far corners' ground positions swapped: the image quadrilateral maps to a bow tie.
        let (g2, g3) = (points[2].ground, points[3].ground);
        points[2].ground = g3;
        points[3].ground = g2;
        let err = Homography::solve(&points).unwrap_err();
        assert!(err.contains("folds"), "{err}");
    }

    #[test]
    fn counts_and_values_are_checked_without_panicking() {
        assert!(Homography::solve(&[]).unwrap_err().contains("at least 4"));
        let p = CalibrationPoint { image: [0.0, 0.0], ground: [0.0, 0.0] };
        assert!(Homography::solve(&vec![p; 65]).unwrap_err().contains("at most 64"));
        let mut points = correspondences(&[[-3.0, 5.0], [4.0, 5.0], [-3.0, 60.0], [4.0, 60.0]]);
        points[1].image[0] = f64::INFINITY;
        points[2].ground[1] = f64::NAN;
        let problems = Homography::input_problems(&points);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(Homography::solve(&[p; 4]).unwrap_err().contains("coincide"));
        let mut dup = correspondences(&[[-3.0, 5.0], [4.0, 5.0], [-3.0, 60.0], [4.0, 60.0], [0.5, 30.0]]);
        dup[4].image = dup[0].image;
        assert!(Homography::solve(&dup).unwrap_err().contains("image points 1 and 5 coincide"));
    }
}
