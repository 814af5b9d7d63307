//! Per-track kinematics: a least-squares straight-line fit of position against frame time over
//! a sliding window, giving a velocity, a speed and the speed's standard error.
//!
//! Units are whatever the caller pushes: metres on the road plane when the camera is calibrated,
//! image pixels otherwise; velocities come out in those units per second.

use std::collections::VecDeque;

/// Most samples kept per window, whatever the frame rate (a 60 s window at 60 fps fits).
const MAX_SAMPLES: usize = 4096;
/// Fewest samples a fit needs.
pub const MIN_FIT_SAMPLES: usize = 5;

/// Metres per second to km/h.
pub fn kmh(metres_per_s: f64) -> f64 {
    metres_per_s * 3.6
}

/// A track's latest positions within `window_ms` of its newest one.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionWindow {
    window_ms: i64,
    samples: VecDeque<(i64, [f64; 2])>,
}

/// The straight-line fit of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionFit {
    /// Fitted velocity, position units per second.
    pub velocity: [f64; 2],
    /// Length of `velocity`.
    pub speed: f64,
    /// One-sigma standard error of `speed` from the fit residuals, same units as `speed`.
    pub speed_sigma: f64,
    /// Samples in the fit.
    pub samples: usize,
}

impl MotionFit {
    /// The velocity's component along `axis` (any length; need not be normalised), e.g. the
    /// lane direction: positive downstream. `None` for a zero or non-finite axis.
    pub fn along(&self, axis: [f64; 2]) -> Option<f64> {
        let norm = axis[0].hypot(axis[1]);
        if !(norm.is_finite() && norm > 0.0) {
            return None;
        }
        Some((self.velocity[0] * axis[0] + self.velocity[1] * axis[1]) / norm)
    }
}

impl MotionWindow {
    /// A window of `window_ms` milliseconds (at least 1).
    pub fn new(window_ms: u64) -> Self {
        Self { window_ms: window_ms.clamp(1, 1 << 40) as i64, samples: VecDeque::new() }
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms as u64
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The newest sample.
    pub fn last(&self) -> Option<(i64, [f64; 2])> {
        self.samples.back().copied()
    }

    /// Adds a position at frame time `ts_ms` and drops samples older than the window. A
    /// non-finite position or a timestamp not after the newest one is ignored.
    pub fn push(&mut self, ts_ms: i64, p: [f64; 2]) {
        if !(p[0].is_finite() && p[1].is_finite()) {
            return;
        }
        if let Some((last, _)) = self.samples.back() {
            if ts_ms <= *last {
                return;
            }
        }
        self.samples.push_back((ts_ms, p));
        let oldest = ts_ms.saturating_sub(self.window_ms);
        // A camera analysed at a low rate has fewer than MIN_FIT_SAMPLES frames in a window: the
        // fit then spans the last MIN_FIT_SAMPLES observations instead of giving no speed at all,
        // as long as they are not older than ten windows.
        let expired = ts_ms.saturating_sub(self.window_ms.saturating_mul(10));
        while let Some((ts, _)) = self.samples.front() {
            let stale = *ts < oldest && (self.samples.len() > MIN_FIT_SAMPLES || *ts < expired);
            if stale || self.samples.len() > MAX_SAMPLES {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Least-squares fit of x(t) and y(t); `None` with fewer than 5 samples, with samples
    /// spanning less than half the window, or when the numbers are not finite.
    ///
    /// `speed_sigma`: the residual variance of each axis (n - 2 degrees of freedom) and their
    /// covariance give the covariance matrix `C` of the fitted velocity `v`. The delta method
    /// gives `var(|v|) = vᵀCv / |v|²`, which is undefined at `v = 0` and understates the
    /// spread when `|v|` is within the noise (the speed is then the length of a noise vector).
    /// So the variance used is a blend: `w · vᵀCv/|v|² + (1 - w) · tr(C)/2` with
    /// `w = |v|² / (|v|² + tr(C))`: the delta method for clearly moving tracks, the mean
    /// per-axis variance for stopped ones, continuous in between.
    pub fn fit(&self) -> Option<MotionFit> {
        let n = self.samples.len();
        if n < MIN_FIT_SAMPLES {
            return None;
        }
        let (t0, _) = *self.samples.front()?;
        let (t1, _) = *self.samples.back()?;
        let span = t1.saturating_sub(t0);
        if span.saturating_mul(2) < self.window_ms || span <= 0 {
            return None;
        }
        let nf = n as f64;
        // Times in seconds relative to the first sample, positions relative to the first one,
        // so large timestamps and coordinates lose no precision.
        let (_, p0) = *self.samples.front()?;
        let rel = |ts: i64, p: [f64; 2]| ((ts - t0) as f64 / 1000.0, p[0] - p0[0], p[1] - p0[1]);
        let (mut st, mut sx, mut sy) = (0.0, 0.0, 0.0);
        for &(ts, p) in &self.samples {
            let (t, x, y) = rel(ts, p);
            st += t;
            sx += x;
            sy += y;
        }
        let (tm, xm, ym) = (st / nf, sx / nf, sy / nf);
        let (mut stt, mut stx, mut sty) = (0.0, 0.0, 0.0);
        for &(ts, p) in &self.samples {
            let (t, x, y) = rel(ts, p);
            let dt = t - tm;
            stt += dt * dt;
            stx += dt * (x - xm);
            sty += dt * (y - ym);
        }
        if !(stt.is_finite() && stt > 0.0) {
            return None;
        }
        let vx = stx / stt;
        let vy = sty / stt;
        let (mut rxx, mut ryy, mut rxy) = (0.0, 0.0, 0.0);
        for &(ts, p) in &self.samples {
            let (t, x, y) = rel(ts, p);
            let dt = t - tm;
            let rx = x - xm - vx * dt;
            let ry = y - ym - vy * dt;
            rxx += rx * rx;
            ryy += ry * ry;
            rxy += rx * ry;
        }
        let dof = nf - 2.0;
        let (cxx, cyy, cxy) = (rxx / dof / stt, ryy / dof / stt, rxy / dof / stt);
        let speed = vx.hypot(vy);
        let v2 = speed * speed;
        let trace = cxx + cyy;
        let var = if v2 > 0.0 {
            let directional = (vx * vx * cxx + vy * vy * cyy + 2.0 * vx * vy * cxy) / v2;
            let w = if v2 + trace > 0.0 { v2 / (v2 + trace) } else { 1.0 };
            w * directional + (1.0 - w) * trace / 2.0
        } else {
            trace / 2.0
        };
        let speed_sigma = var.max(0.0).sqrt();
        if !(vx.is_finite() && vy.is_finite() && speed.is_finite() && speed_sigma.is_finite()) {
            return None;
        }
        Some(MotionFit { velocity: [vx, vy], speed, speed_sigma, samples: n })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic noise in [-amplitude, amplitude] (xorshift64).
    pub(crate) struct Noise(u64);

    impl Noise {
        pub(crate) fn new(seed: u64) -> Self {
            Self(seed.max(1))
        }
        pub(crate) fn next(&mut self, amplitude: f64) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
            (unit * 2.0 - 1.0) * amplitude
        }
    }

    #[test]
    fn a_camera_at_two_frames_per_second_still_gets_a_speed() {
        // 36 km/h = 10 m/s, sampled every 500 ms: only two samples fit in the 1 s window.
        let mut window = MotionWindow::new(1_000);
        for i in 0..8 {
            window.push(i * 500, [0.0, 5.0 * i as f64]);
        }
        let fit = window.fit().expect("a fit over the last five observations");
        assert!((kmh(fit.speed) - 36.0).abs() < 0.01, "{fit:?}");
        assert_eq!(fit.samples, MIN_FIT_SAMPLES);
    }

    #[test]
    fn known_ground_speed_with_noise() {
        // 72 km/h = 20 m/s along a diagonal, 25 fps, ±0.2 m noise on each axis.
        let mut w = MotionWindow::new(1000);
        let mut noise = Noise::new(42);
        let dir = [0.6, 0.8];
        let t_base = 1_700_000_000_000i64;
        let mut fits = 0;
        for i in 0..500 {
            let ts = t_base + i * 40;
            let s = 20.0 * (i as f64 * 0.04);
            w.push(ts, [1000.0 + s * dir[0] + noise.next(0.2), -50.0 + s * dir[1] + noise.next(0.2)]);
            if let Some(f) = w.fit() {
                fits += 1;
                let k = kmh(f.speed);
                assert!((k - 72.0).abs() < 72.0 * 0.02, "speed {k}");
                let sigma = kmh(f.speed_sigma);
                assert!(sigma > 0.0 && sigma < 1.0, "sigma {sigma}");
                assert!((14..=26).contains(&f.samples), "{}", f.samples);
                let along = f.along([3.0, 4.0]).unwrap();
                assert!((kmh(along) - 72.0).abs() < 1.5);
                assert!(f.along([-3.0, -4.0]).unwrap() < 0.0);
            }
        }
        assert!(fits > 480, "{fits}");
    }

    #[test]
    fn stopped_track_has_speed_near_zero_and_honest_sigma() {
        let mut w = MotionWindow::new(1000);
        let mut noise = Noise::new(7);
        for i in 0..200 {
            w.push(i * 40, [5.0 + noise.next(0.2), 9.0 + noise.next(0.2)]);
            if let Some(f) = w.fit() {
                assert!(kmh(f.speed) < 2.0, "{}", kmh(f.speed));
                assert!(f.speed_sigma > 0.0 && kmh(f.speed_sigma) < 2.0);
            }
        }
        // A perfectly still track: zero speed, zero sigma, no NaN.
        let mut still = MotionWindow::new(1000);
        for i in 0..30 {
            still.push(i * 40, [1.0, 2.0]);
        }
        let f = still.fit().unwrap();
        assert_eq!(f.speed, 0.0);
        assert_eq!(f.speed_sigma, 0.0);
    }

    #[test]
    fn needs_five_samples_over_half_the_window() {
        let mut w = MotionWindow::new(1000);
        for i in 0..4 {
            w.push(i * 200, [i as f64, 0.0]);
        }
        assert!(w.fit().is_none(), "4 samples");
        w.push(800, [4.0, 0.0]);
        assert!(w.fit().is_some(), "5 samples over 800 ms");
        let mut short = MotionWindow::new(1000);
        for i in 0..10 {
            short.push(i * 40, [i as f64, 0.0]);
        }
        assert!(short.fit().is_none(), "10 samples over 360 ms");
        short.push(500, [12.0, 0.0]);
        assert!(short.fit().is_some(), "span 500 ms = half the window");
    }

    #[test]
    fn drops_old_samples_and_ignores_bad_input() {
        let mut w = MotionWindow::new(1000);
        for i in 0..100 {
            w.push(i * 40, [i as f64, 0.0]);
        }
        assert_eq!(w.len(), 26);
        let before = w.clone();
        w.push(3960, [0.0, 0.0]); // same timestamp as the newest
        w.push(100, [0.0, 0.0]); // out of order
        w.push(5000, [f64::NAN, 0.0]);
        w.push(5000, [0.0, f64::INFINITY]);
        assert_eq!(w, before);
        // A gap longer than ten windows leaves only the new sample.
        w.push(100_000, [1.0, 1.0]);
        assert_eq!(w.len(), 1);
        assert!(w.fit().is_none());
        assert_eq!(w.last(), Some((100_000, [1.0, 1.0])));
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let mut w = MotionWindow::new(0);
        for ts in [i64::MIN, i64::MIN + 1, 0, 1, 2, 3, 4, i64::MAX - 1, i64::MAX] {
            w.push(ts, [1e308, -1e308]);
            let _ = w.fit();
        }
        let mut big = MotionWindow::new(u64::MAX);
        for i in 0..10 {
            big.push(i, [f64::MAX / (i as f64 + 1.0), f64::MIN_POSITIVE]);
        }
        let _ = big.fit();
        assert!(MotionFit { velocity: [1.0, 0.0], speed: 1.0, speed_sigma: 0.0, samples: 5 }
            .along([0.0, 0.0])
            .is_none());
    }
}
