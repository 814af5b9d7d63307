//! Model drift: what the detector sees on a camera, profiled over a set of frames, and how far a
//! recent window of frames has moved from a reference captured earlier on the same camera.
//!
//! A [`Profile`] counts four features of the detections of its frames:
//! - `class`: the mix of detection classes (one bin per [`ObjectClass`]);
//! - `confidence`: detection scores, [`CONFIDENCE_BINS`] equal bins over `[score_floor, 1]`
//!   (`score_floor` is `model.score_threshold`: nothing below it is ever detected);
//! - `box_size`: the box's `sqrt(area)` relative to the frame's `sqrt(width x height)`,
//!   one bin below 2^-7, then half-octave bins up to 1 ([`BOX_SIZE_BINS`]; a resolution change or
//!   a crop changes nothing by itself);
//! - `count`: detections per frame, bins `0, 1, ..., COUNT_BINS - 2` and `>= COUNT_BINS - 1`.
//!
//! Each feature is compared as KL(window || reference) in nats, each distribution smoothed by
//! adding [`ALPHA`] to every bin (additive smoothing, `p_i = (n_i + a) / (N + K a)`): a bin that
//! is empty in the reference and not in the window gives a large but finite value, and two
//! identical profiles give exactly 0.
//!
//! A [`DriftMonitor`] is the per-camera state machine: it captures a reference over the first
//! `reference_frames` frames of a model version on the camera (again whenever the version changes,
//! or on request), then keeps a sliding window of the last `window_frames` frames, as blocks of
//! `every_frames` frames, and compares it with the reference each time a block completes. Memory
//! per camera is `window_frames / every_frames + 2` small profiles, whatever the frame rate.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::objects::{Detection, ObjectClass};

/// The additive smoothing of every bin of both distributions before KL (Jeffreys' prior).
pub const ALPHA: f64 = 0.5;
pub const CONFIDENCE_BINS: usize = 10;
pub const BOX_SIZE_BINS: usize = 15;
/// Detections per frame: `0 ..= COUNT_BINS - 2` each, and `COUNT_BINS - 1` or more.
pub const COUNT_BINS: usize = 21;
/// log2 of the lower edge of the second box-size bin (the first holds everything smaller).
const BOX_SIZE_LOG2_MIN: f32 = -7.0;

/// The features, in the order of [`FeatureValues`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    Class,
    Confidence,
    BoxSize,
    Count,
}

impl Feature {
    pub const ALL: [Feature; 4] = [Feature::Class, Feature::Confidence, Feature::BoxSize, Feature::Count];

    /// The `feature` label of `ml_model_drift_kl`.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Class => "class",
            Feature::Confidence => "confidence",
            Feature::BoxSize => "box_size",
            Feature::Count => "count",
        }
    }
}

/// KL divergence of each feature, nats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FeatureValues {
    pub class: f64,
    pub confidence: f64,
    pub box_size: f64,
    pub count: f64,
}

impl FeatureValues {
    pub fn get(&self, feature: Feature) -> f64 {
        match feature {
            Feature::Class => self.class,
            Feature::Confidence => self.confidence,
            Feature::BoxSize => self.box_size,
            Feature::Count => self.count,
        }
    }

    /// The largest of the four.
    pub fn max(&self) -> f64 {
        Feature::ALL.iter().map(|&f| self.get(f)).fold(0.0, f64::max)
    }
}

/// `[model.drift]` in the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    /// Off: no profiles, no `ml_model_drift_kl`.
    pub enabled: bool,
    /// Frames of a model version on a camera that make its reference.
    pub reference_frames: u32,
    /// Frames of the sliding window compared with the reference; a multiple of `every_frames`.
    pub window_frames: u32,
    /// The window is compared with the reference every this many frames, once it is full.
    pub every_frames: u32,
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self { enabled: true, reference_frames: 9_000, window_frames: 4_500, every_frames: 150 }
    }
}

impl DriftSettings {
    /// Every problem, together.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !(1..=1_000_000).contains(&self.reference_frames) {
            errors.push("model.drift.reference_frames must be in 1..=1000000".into());
        }
        if !(1..=1_000_000).contains(&self.window_frames) {
            errors.push("model.drift.window_frames must be in 1..=1000000".into());
        }
        if !(1..=1_000_000).contains(&self.every_frames) {
            errors.push("model.drift.every_frames must be in 1..=1000000".into());
        } else if !self.window_frames.is_multiple_of(self.every_frames) {
            errors.push("model.drift.window_frames must be a multiple of model.drift.every_frames".into());
        } else if self.window_frames / self.every_frames > 1_000 {
            errors.push("model.drift.window_frames / model.drift.every_frames must be at most 1000".into());
        }
        errors
    }
}

/// How detections fall into bins: scores from `score_floor` up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Binning {
    pub score_floor: f32,
}

impl Binning {
    fn confidence(&self, score: f32) -> usize {
        let span = (1.0 - self.score_floor).max(f32::EPSILON);
        let bin = ((score - self.score_floor) / span * CONFIDENCE_BINS as f32).floor();
        (bin.max(0.0) as usize).min(CONFIDENCE_BINS - 1)
    }

    /// `relative`: `sqrt(area)` over `sqrt(frame area)`.
    fn box_size(relative: f32) -> usize {
        if relative.is_nan() || relative <= 0.0 {
            return 0;
        }
        let bin = ((relative.log2() - BOX_SIZE_LOG2_MIN) * 2.0).floor() + 1.0;
        (bin.max(0.0) as usize).min(BOX_SIZE_BINS - 1)
    }
}

/// Bin counts of the four features over a set of frames.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    class: [u64; ObjectClass::ALL.len()],
    confidence: [u64; CONFIDENCE_BINS],
    box_size: [u64; BOX_SIZE_BINS],
    count: [u64; COUNT_BINS],
    frames: u64,
}

impl Profile {
    /// Adds one frame's detections; `frame_size` is the frame's `(width, height)` in the
    /// detections' pixels (`None`: unknown, the boxes' sizes are left out).
    pub fn add_frame(&mut self, binning: &Binning, detections: &[Detection], frame_size: Option<(u32, u32)>) {
        let side = frame_size.map(|(w, h)| ((w as f32) * (h as f32)).sqrt()).filter(|s| *s > 0.0);
        for d in detections {
            if let Some(i) = ObjectClass::ALL.iter().position(|c| *c == d.class) {
                self.class[i] += 1;
            }
            self.confidence[binning.confidence(d.score)] += 1;
            if let Some(side) = side {
                self.box_size[Binning::box_size(d.bbox.area().sqrt() / side)] += 1;
            }
        }
        self.count[detections.len().min(COUNT_BINS - 1)] += 1;
        self.frames += 1;
    }

    pub fn merge(&mut self, other: &Profile) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        add(&mut self.class, &other.class);
        add(&mut self.confidence, &other.confidence);
        add(&mut self.box_size, &other.box_size);
        add(&mut self.count, &other.count);
        self.frames += other.frames;
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// KL(self || reference) of each feature, smoothed with [`ALPHA`].
    pub fn kl_from(&self, reference: &Profile) -> FeatureValues {
        FeatureValues {
            class: kl_smoothed(&self.class, &reference.class, ALPHA),
            confidence: kl_smoothed(&self.confidence, &reference.confidence, ALPHA),
            box_size: kl_smoothed(&self.box_size, &reference.box_size, ALPHA),
            count: kl_smoothed(&self.count, &reference.count, ALPHA),
        }
    }
}

/// KL(p || q) in nats of two histograms over the same bins, each smoothed by adding `alpha` to
/// every bin. 0 for identical histograms (and for two empty ones); finite for any `alpha > 0`.
pub fn kl_smoothed(p: &[u64], q: &[u64], alpha: f64) -> f64 {
    debug_assert_eq!(p.len(), q.len());
    let k = p.len() as f64;
    let p_total = p.iter().sum::<u64>() as f64 + k * alpha;
    let q_total = q.iter().sum::<u64>() as f64 + k * alpha;
    let kl: f64 = p
        .iter()
        .zip(q)
        .map(|(&pi, &qi)| {
            let pi = (pi as f64 + alpha) / p_total;
            let qi = (qi as f64 + alpha) / q_total;
            pi * (pi / qi).ln()
        })
        .sum();
    // Rounding can leave a tiny negative for identical distributions.
    kl.max(0.0)
}

/// Where a camera's monitor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    /// Building the reference of the current model version.
    Capturing,
    /// Comparing the sliding window with the reference (`kl` once the window is full).
    Comparing,
}

/// What the API shows of a camera's monitor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftView {
    pub state: DriftState,
    /// The registry version of the model whose detections are profiled; `None` before the
    /// first frame.
    pub model_version: Option<u32>,
    /// Frames in the reference, of `reference_target`.
    pub reference_frames: u64,
    pub reference_target: u64,
    /// Frames in the sliding window, of `window_target`.
    pub window_frames: u64,
    pub window_target: u64,
    /// KL(window || reference) per feature at the last comparison; `None` until the window is full.
    pub kl: Option<FeatureValues>,
    /// Comparisons made against the current reference.
    pub comparisons: u64,
    /// References started on this camera (the first, model changes, re-captures).
    pub captures: u64,
}

enum Phase {
    Capturing(Box<Profile>),
    Comparing(Box<Comparing>),
}

struct Comparing {
    reference: Profile,
    /// Completed blocks of `every_frames`, oldest first, at most `window_frames / every_frames`.
    blocks: VecDeque<Profile>,
    current: Profile,
    last: Option<FeatureValues>,
    comparisons: u64,
}

/// What one frame did to the monitor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observed {
    /// The reference is being captured (it may just have started again).
    Capturing,
    /// The window is filling, or between two comparisons.
    Waiting,
    /// A comparison was made with this frame.
    Compared(FeatureValues),
}

/// One camera's drift state machine (see the module docs).
pub struct DriftMonitor {
    settings: DriftSettings,
    binning: Binning,
    model_version: Option<u32>,
    phase: Phase,
    captures: u64,
}

impl DriftMonitor {
    pub fn new(settings: DriftSettings, binning: Binning) -> Self {
        Self { settings, binning, model_version: None, phase: Phase::Capturing(Box::default()), captures: 0 }
    }

    /// Starts a new reference from the next frame (the camera was moved or re-aimed).
    pub fn recapture(&mut self) {
        self.phase = Phase::Capturing(Box::default());
        self.captures += 1;
    }

    /// Adds one analysed frame of `model_version`; a new version starts a new reference with it.
    pub fn observe(
        &mut self,
        model_version: u32,
        detections: &[Detection],
        frame_size: Option<(u32, u32)>,
    ) -> Observed {
        if self.model_version != Some(model_version) {
            self.model_version = Some(model_version);
            self.recapture();
        }
        let (binning, settings) = (self.binning, self.settings);
        match &mut self.phase {
            Phase::Capturing(profile) => {
                profile.add_frame(&binning, detections, frame_size);
                if profile.frames >= settings.reference_frames as u64 {
                    let reference = std::mem::take(&mut **profile);
                    self.phase = Phase::Comparing(Box::new(Comparing {
                        reference,
                        blocks: VecDeque::new(),
                        current: Profile::default(),
                        last: None,
                        comparisons: 0,
                    }));
                    return Observed::Waiting;
                }
                Observed::Capturing
            }
            Phase::Comparing(comparing) => {
                let Comparing { reference, blocks, current, last, comparisons } = &mut **comparing;
                current.add_frame(&binning, detections, frame_size);
                if current.frames < settings.every_frames as u64 {
                    return Observed::Waiting;
                }
                blocks.push_back(std::mem::take(current));
                let full = (settings.window_frames / settings.every_frames) as usize;
                while blocks.len() > full {
                    blocks.pop_front();
                }
                if blocks.len() < full {
                    return Observed::Waiting;
                }
                let mut window = Profile::default();
                blocks.iter().for_each(|b| window.merge(b));
                let kl = window.kl_from(reference);
                *last = Some(kl);
                *comparisons += 1;
                Observed::Compared(kl)
            }
        }
    }

    pub fn view(&self) -> DriftView {
        let (state, reference_frames, window_frames, kl, comparisons) = match &self.phase {
            Phase::Capturing(profile) => (DriftState::Capturing, profile.frames, 0, None, 0),
            Phase::Comparing(comparing) => {
                let Comparing { reference, blocks, current, last, comparisons } = &**comparing;
                let window = blocks.iter().map(|b| b.frames).sum::<u64>() + current.frames;
                let window = window.min(self.settings.window_frames as u64);
                (DriftState::Comparing, reference.frames, window, *last, *comparisons)
            }
        };
        DriftView {
            state,
            model_version: self.model_version,
            reference_frames,
            reference_target: self.settings.reference_frames as u64,
            window_frames,
            window_target: self.settings.window_frames as u64,
            kl,
            comparisons,
            captures: self.captures,
        }
    }
}

/// `[model.drift]` as a connector shard runs it: the settings and how scores are binned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftConfig {
    pub settings: DriftSettings,
    pub binning: Binning,
}

impl DriftConfig {
    /// From `model.drift` and `model.score_threshold`; `None` when drift detection is off.
    pub fn of(settings: DriftSettings, score_threshold: f32) -> Option<Self> {
        settings.enabled.then_some(Self { settings, binning: Binning { score_floor: score_threshold } })
    }
}

/// A camera's monitor, shared by its connector shard (which feeds it every analysed frame) and the
/// API (which reads it and asks for a new reference). It lives with the camera's status, so a
/// restarted shard keeps the reference. Empty while drift detection is off.
#[derive(Default)]
pub struct DriftCell {
    monitor: parking_lot::Mutex<Option<DriftMonitor>>,
}

impl DriftCell {
    /// Starts the monitor unless it runs already (a shard rebuilding the camera).
    pub fn start(&self, config: DriftConfig) {
        self.monitor.lock().get_or_insert_with(|| DriftMonitor::new(config.settings, config.binning));
    }

    /// See [`DriftMonitor::observe`]; `None` while no monitor runs.
    pub fn observe(
        &self,
        model_version: u32,
        detections: &[Detection],
        frame_size: Option<(u32, u32)>,
    ) -> Option<Observed> {
        self.monitor.lock().as_mut().map(|m| m.observe(model_version, detections, frame_size))
    }

    pub fn view(&self) -> Option<DriftView> {
        self.monitor.lock().as_ref().map(DriftMonitor::view)
    }

    /// Starts a new reference; the monitor's view after it (`None`: no monitor runs).
    pub fn recapture(&self) -> Option<DriftView> {
        let mut monitor = self.monitor.lock();
        let monitor = monitor.as_mut()?;
        monitor.recapture();
        Some(monitor.view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::BBox;

    const BINNING: Binning = Binning { score_floor: 0.1 };
    const FRAME: Option<(u32, u32)> = Some((320, 240));

    fn detection(class: ObjectClass, score: f32, side: f32) -> Detection {
        Detection::new(BBox::new(10.0, 10.0, 10.0 + side, 10.0 + side), score, class)
    }

    /// A street: per frame, `n` cars of size `side` at `score`, and a truck every other frame.
    fn profile(frames: usize, n: usize, score: f32, side: f32) -> Profile {
        let mut p = Profile::default();
        for i in 0..frames {
            let mut seen: Vec<Detection> = (0..n).map(|_| detection(ObjectClass::Car, score, side)).collect();
            if i % 2 == 0 {
                seen.push(detection(ObjectClass::Truck, score, side * 2.0));
            }
            p.add_frame(&BINNING, &seen, FRAME);
        }
        p
    }

    #[test]
    fn a_profile_against_itself_is_zero_and_a_shifted_one_is_larger() {
        let base = profile(100, 4, 0.8, 30.0);
        assert_eq!(base.kl_from(&base).max(), 0.0);
        assert_eq!(profile(100, 4, 0.8, 30.0).kl_from(&base), base.kl_from(&base));
        // Half the frames of the same scene: near 0, not 0, as the smoothing weighs the empty bins
        // of the smaller profile more (windows and references of equal size do not see this).
        assert!(profile(50, 4, 0.8, 30.0).kl_from(&base).max() < 0.05);

        let darker = profile(100, 2, 0.4, 30.0).kl_from(&base);
        assert!(darker.confidence > 1.0 && darker.count > 1.0, "{darker:?}");
        assert!(darker.box_size < 0.05, "the sizes did not change: {darker:?}");
        let zoomed = profile(100, 4, 0.8, 90.0).kl_from(&base);
        assert!(zoomed.box_size > 1.0 && zoomed.confidence < 1e-9, "{zoomed:?}");
        // More of a shift is more divergence.
        let slightly = profile(100, 3, 0.8, 30.0).kl_from(&base);
        let more = profile(100, 1, 0.8, 30.0).kl_from(&base);
        assert!(0.0 < slightly.count && slightly.count < more.count, "{slightly:?} {more:?}");
        assert!(more.class > slightly.class, "fewer cars per truck: {slightly:?} {more:?}");
    }

    #[test]
    fn smoothing_keeps_empty_bins_finite() {
        // The window has all its mass where the reference has none, and the reverse.
        let window = [0, 0, 100];
        let reference = [100, 0, 0];
        let kl = kl_smoothed(&window, &reference, ALPHA);
        assert!(kl.is_finite() && kl > 3.0, "{kl}");
        assert!(kl_smoothed(&reference, &window, ALPHA).is_finite());
        assert_eq!(kl_smoothed(&[0, 0], &[0, 0], ALPHA), 0.0);
        // An empty window against a reference: finite too.
        let empty = Profile::default().kl_from(&profile(10, 2, 0.5, 20.0));
        assert!(Feature::ALL.iter().all(|&f| empty.get(f).is_finite()), "{empty:?}");
    }

    #[test]
    fn bins_cover_their_ranges() {
        assert_eq!(BINNING.confidence(0.1), 0);
        assert_eq!(BINNING.confidence(0.05), 0);
        assert_eq!(BINNING.confidence(0.999), CONFIDENCE_BINS - 1);
        assert_eq!(BINNING.confidence(1.0), CONFIDENCE_BINS - 1);
        assert_eq!(BINNING.confidence(0.55), 5);
        assert_eq!(Binning::box_size(0.0), 0);
        assert_eq!(Binning::box_size(1.0 / 256.0), 0);
        assert_eq!(Binning::box_size(1.0 / 128.0), 1);
        assert_eq!(Binning::box_size(0.999), BOX_SIZE_BINS - 1);
        assert_eq!(Binning::box_size(4.0), BOX_SIZE_BINS - 1);
        let mut p = Profile::default();
        let many: Vec<Detection> = (0..40).map(|_| detection(ObjectClass::Person, 0.5, 5.0)).collect();
        p.add_frame(&BINNING, &many, None);
        assert_eq!(p.count[COUNT_BINS - 1], 1);
        assert_eq!(p.box_size.iter().sum::<u64>(), 0, "no frame size, no box sizes");
        assert_eq!(p.class[ObjectClass::ALL.iter().position(|c| *c == ObjectClass::Person).unwrap()], 40);
    }

    fn settings(reference: u32, window: u32, every: u32) -> DriftSettings {
        DriftSettings { enabled: true, reference_frames: reference, window_frames: window, every_frames: every }
    }

    fn cars(n: usize, score: f32) -> Vec<Detection> {
        (0..n).map(|_| detection(ObjectClass::Car, score, 30.0)).collect()
    }

    #[test]
    fn the_monitor_captures_then_compares_a_sliding_window_every_block() {
        let mut monitor = DriftMonitor::new(settings(4, 4, 2), BINNING);
        assert_eq!(monitor.view().state, DriftState::Capturing);
        assert_eq!(monitor.view().model_version, None);
        for _ in 0..3 {
            assert_eq!(monitor.observe(1, &cars(3, 0.8), FRAME), Observed::Capturing);
        }
        assert_eq!(monitor.observe(1, &cars(3, 0.8), FRAME), Observed::Waiting);
        let view = monitor.view();
        assert_eq!(
            (view.state, view.reference_frames, view.window_frames, view.kl),
            (DriftState::Comparing, 4, 0, None)
        );
        // Two blocks of two frames fill the window: the first comparison at its fourth frame.
        for _ in 0..3 {
            assert_eq!(monitor.observe(1, &cars(3, 0.8), FRAME), Observed::Waiting);
        }
        let Observed::Compared(same) = monitor.observe(1, &cars(3, 0.8), FRAME) else { panic!("a comparison") };
        assert_eq!(same.max(), 0.0);
        // A different scene slides in, one block at a time.
        assert_eq!(monitor.observe(1, &cars(1, 0.3), FRAME), Observed::Waiting);
        let Observed::Compared(half) = monitor.observe(1, &cars(1, 0.3), FRAME) else { panic!("a comparison") };
        monitor.observe(1, &cars(1, 0.3), FRAME);
        let Observed::Compared(all) = monitor.observe(1, &cars(1, 0.3), FRAME) else { panic!("a comparison") };
        assert!(0.0 < half.max() && half.max() < all.max(), "{half:?} {all:?}");
        let view = monitor.view();
        assert_eq!((view.window_frames, view.comparisons, view.kl), (4, 3, Some(all)));
    }

    #[test]
    fn a_new_model_version_or_a_recapture_starts_a_new_reference() {
        let mut monitor = DriftMonitor::new(settings(2, 2, 2), BINNING);
        for _ in 0..4 {
            monitor.observe(1, &cars(2, 0.8), FRAME);
        }
        assert!(monitor.view().kl.is_some());
        assert_eq!(monitor.view().captures, 1);
        assert_eq!(monitor.observe(2, &cars(2, 0.8), FRAME), Observed::Capturing);
        let view = monitor.view();
        assert_eq!(
            (view.state, view.model_version, view.reference_frames, view.kl, view.captures),
            (DriftState::Capturing, Some(2), 1, None, 2)
        );
        monitor.observe(2, &cars(2, 0.8), FRAME);
        assert_eq!(monitor.view().state, DriftState::Comparing);
        monitor.recapture();
        let view = monitor.view();
        assert_eq!((view.state, view.reference_frames, view.captures), (DriftState::Capturing, 0, 3));
    }

    #[test]
    fn settings_are_validated_together() {
        assert!(DriftSettings::default().validate().is_empty());
        let errors = settings(0, 100, 30).validate();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[1].contains("multiple"), "{errors:?}");
        assert!(settings(10, 10, 0).validate()[0].contains("every_frames"));
        assert!(settings(10, 5000, 1).validate()[0].contains("at most 1000"));
    }
}
