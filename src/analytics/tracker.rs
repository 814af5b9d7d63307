//! Multi-object tracking in the style of ByteTrack (Zhang et al. 2022).
//!
//! Each track carries a constant-velocity Kalman filter over (cx, cy, w/h, h) and their
//! velocities. Every frame the detections are split by score: confident ones are matched
//! first against all tracks that are still followed or were recently lost; the weak ones,
//! which a plain score cut would throw away, then get a chance to continue tracks that are
//! followed right now (an occluded or blurred vehicle often scores low for a few frames, and
//! losing it would split one vehicle into two ids at the counting line). A weak detection starts
//! a track only when it persists and is large: a vehicle the model never sees confidently (an
//! articulated lorry close to the camera scores 0.15 to 0.5) but finds frame after frame at
//! overlapping places for `weak_track_frames` frames is a vehicle; clutter rarely holds that long.
//! Small weak boxes never start one: they are far vehicles fading in and out of their tracks and
//! burnt-in captions, and as new tracks they would enter zones again and again.
//!
//! A track started after the first frame stays tentative until it is matched once more, so a
//! one-frame false positive is never reported. The counter downstream only sees confirmed
//! tracks matched in the current frame, with the detector's own box: its ground point is what
//! crosses the counting line, and the detector's box is less smoothed than the filter's.

use nalgebra::{SMatrix, SVector};
use pathfinding::prelude::{kuhn_munkres, Matrix};

use crate::objects::{BBox, Detection, ObjectClass, VehicleProbs};

/// Settings of the tracker; every field has a default so the config file may name only some.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// Detections scoring at least this take part in the first association and may start tracks.
    pub high_thresh: f32,
    /// Detections scoring below this are ignored altogether.
    pub low_thresh: f32,
    /// A confident detection left unmatched starts a track only when it scores at least this.
    pub new_track_thresh: f32,
    /// Largest IoU cost (1 - IoU) accepted in the first association.
    pub match_thresh: f32,
    /// How many frames a track may go unseen before it is dropped.
    pub max_lost_frames: u32,
    /// Large detections (`Detection::large`) under `new_track_thresh` that no track takes start a
    /// track after this many consecutive frames, each overlapping the previous one (0: never).
    pub weak_track_frames: u32,
    /// A detection at least this sure is one a healthy model gives a vehicle it sees: the share
    /// of tracked frames with such a detection is `ml_model_accuracy` (see `Continuity`).
    pub confident_score: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            high_thresh: 0.5,
            low_thresh: 0.1,
            new_track_thresh: 0.6,
            match_thresh: 0.8,
            max_lost_frames: 30,
            weak_track_frames: 5,
            confident_score: 0.3,
        }
    }
}

impl TrackerConfig {
    /// Every problem found, as human-readable messages naming the key; empty when the
    /// configuration is usable.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let unit_range = [
            ("high_thresh", self.high_thresh),
            ("low_thresh", self.low_thresh),
            ("new_track_thresh", self.new_track_thresh),
            ("match_thresh", self.match_thresh),
            ("confident_score", self.confident_score),
        ];
        for (key, value) in unit_range {
            if !(0.0..=1.0).contains(&value) {
                problems.push(format!("tracker.{key} must be in 0..=1 (got {value})"));
            }
        }
        if self.low_thresh > self.high_thresh {
            problems.push(format!(
                "tracker.low_thresh ({}) must not exceed tracker.high_thresh ({})",
                self.low_thresh, self.high_thresh
            ));
        }
        if self.weak_track_frames == 1 {
            problems.push("tracker.weak_track_frames must be 0 (off) or at least 2 (got 1)".into());
        }
        // Only confident detections can start a track at once, so a lower value would silently
        // act as high_thresh; better to say so than to let the setting mislead.
        if self.new_track_thresh < self.high_thresh {
            problems.push(format!(
                "tracker.new_track_thresh ({}) must be at least tracker.high_thresh ({})",
                self.new_track_thresh, self.high_thresh
            ));
        }
        problems
    }
}

/// One tracked object as seen in the current frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackedObject {
    pub track_id: u64,
    /// The detection's box in this frame, not the filter's estimate.
    pub bbox: BBox,
    /// The class voted by all detections of the track so far.
    pub class: ObjectClass,
    /// The detection's score in this frame.
    pub score: f32,
    /// The detector's motor-vehicle probabilities in this frame (`analytics::vehicle_class`).
    pub vehicle: VehicleProbs,
}

/// Weak detections are ambiguous, so they must overlap a followed track clearly.
const LOW_SCORE_MIN_IOU: f32 = 0.5;
/// How far from a prediction the centre of a confident detection of similar size that does not
/// overlap it enough may be and still be that object: a vehicle crossing the image at a low
/// frame rate moves more than its own length between frames. A followed track's prediction is
/// off by about what it moved in a frame: its reach is twice its speed (pixels a frame), at most
/// its box's larger side, so at a high frame rate (a few pixels a frame) it is a few pixels.
const FOLLOWED_REACH_SPEEDS: f32 = 2.0;
/// A track seen once (tentative, or confirmed on the first frame) has no velocity yet: its
/// prediction is where it was, so it reaches twice its box's larger side.
const TENTATIVE_REACH_SIZES: f32 = 2.0;
/// Matches by distance score at most this, below every match by overlap, which always wins.
const DISTANCE_SCORE: f32 = 0.1;
/// A tentative track has no velocity yet, so it is matched with a looser overlap than the
/// first association would demand of a predicted box.
const TENTATIVE_MIN_IOU: f32 = 0.3;

/// Matches, frame after frame, detections to the objects they belong to.
pub struct Tracker {
    config: TrackerConfig,
    /// Weak detections that no track took, followed until `weak_track_frames` (`WeakRun`).
    weak_runs: Vec<WeakRun>,
    /// Detection continuity of the tracks that ended since the last `take_continuity`.
    continuity: Continuity,
    /// Live tracks in order of creation, hence of id.
    tracks: Vec<Track>,
    /// Frames seen so far; the first frame is 1.
    frame: u64,
    next_id: u64,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            weak_runs: Vec::new(),
            continuity: Continuity::default(),
            tracks: Vec::new(),
            frame: 0,
            next_id: 1,
        }
    }

    /// Advances one frame. Frames must be given in order; an empty slice is a frame with
    /// nothing detected.
    pub fn update(&mut self, detections: &[Detection]) -> Vec<TrackedObject> {
        self.frame += 1;
        let frame = self.frame;
        let config = self.config;

        let (high, low): (Vec<Detection>, Vec<Detection>) = detections
            .iter()
            .copied()
            .filter(|d| is_usable(d) && d.score >= config.low_thresh)
            .partition(|d| d.score >= config.high_thresh);

        for track in &mut self.tracks {
            track.matched = None;
            if track.state == TrackState::Lost {
                // Unobserved, a shrinking or growing box would keep changing size until it
                // could match nothing; keep its size and let only its position coast.
                track.kalman.mean[7] = 0.0;
            }
            track.kalman.predict();
        }
        let predicted: Vec<BBox> = self.tracks.iter().map(|t| t.kalman.bbox()).collect();
        let reach: Vec<f32> = self
            .tracks
            .iter()
            .zip(&predicted)
            .map(|(t, b)| match t.hits {
                1 => TENTATIVE_REACH_SIZES * b.larger_side(),
                _ => (FOLLOWED_REACH_SPEEDS * t.kalman.speed()).min(b.larger_side()),
            })
            .collect();

        // First association: confident detections against followed and lost tracks.
        let mut pool: Vec<usize> =
            (0..self.tracks.len()).filter(|&t| self.tracks[t].state != TrackState::Tentative).collect();
        let mut high_left: Vec<usize> = (0..high.len()).collect();
        let first = associate(&mut pool, &mut high_left, |t, d| {
            match_score(&predicted[t], &high[d].bbox, 1.0 - config.match_thresh, reach[t])
        });
        for (t, d) in first {
            self.tracks[t].observe(&high[d], frame, config.confident_score);
            self.tracks[t].state = TrackState::Confirmed;
        }

        // Second association: weak detections continue followed tracks only. A lost track
        // has drifted on prediction alone, and reviving it from a weak detection is how
        // clutter steals ids.
        pool.retain(|&t| self.tracks[t].state == TrackState::Confirmed);
        let mut low_left: Vec<usize> = (0..low.len()).collect();
        let second = associate(&mut pool, &mut low_left, |t, d| {
            match_score(&predicted[t], &low[d].bbox, LOW_SCORE_MIN_IOU, 0.0)
        });
        for (t, d) in second {
            self.tracks[t].observe(&low[d], frame, config.confident_score);
        }
        for t in pool {
            self.tracks[t].state = TrackState::Lost;
        }

        // Third association: tentative tracks get their one chance to be confirmed.
        let mut tentative: Vec<usize> =
            (0..self.tracks.len()).filter(|&t| self.tracks[t].state == TrackState::Tentative).collect();
        let third = associate(&mut tentative, &mut high_left, |t, d| {
            match_score(
                &predicted[t],
                &high[d].bbox,
                TENTATIVE_MIN_IOU,
                TENTATIVE_REACH_SIZES * predicted[t].larger_side(),
            )
        });
        for (t, d) in third {
            self.tracks[t].observe(&high[d], frame, config.confident_score);
            self.tracks[t].state = TrackState::Confirmed;
        }

        let mut remove = vec![false; self.tracks.len()];
        for t in tentative {
            remove[t] = true;
        }
        for (t, track) in self.tracks.iter().enumerate() {
            let unseen = frame - track.last_seen;
            if track.state == TrackState::Lost && unseen > u64::from(config.max_lost_frames) {
                remove[t] = true;
                if track.hits >= CONTINUITY_MIN_HITS {
                    // A vehicle parked in view for an hour counts as much as a long pass, no more.
                    let spanned = track.last_seen - track.first_seen + 1;
                    let counted = spanned.min(CONTINUITY_MAX_FRAMES);
                    self.continuity.detected += u64::from(track.confident_hits) * counted / spanned;
                    self.continuity.spanned += counted;
                }
            }
        }
        let mut index = 0;
        self.tracks.retain(|_| {
            let keep = !remove[index];
            index += 1;
            keep
        });

        // Weak tracks off, nothing is gathered for them; on, only large boxes.
        let weak_tracks = config.weak_track_frames > 0;
        let mut weak: Vec<Detection> =
            if weak_tracks { low_left.iter().map(|&d| low[d]).filter(|d| d.large).collect() } else { Vec::new() };
        for d in high_left {
            let detection = &high[d];
            if detection.score < config.new_track_thresh {
                if weak_tracks && detection.large {
                    weak.push(*detection);
                }
                continue;
            }
            // Nothing precedes the first frame to confirm against, and waiting a frame there
            // would only delay every object already in view.
            let state = if frame == 1 { TrackState::Confirmed } else { TrackState::Tentative };
            self.start_track(detection, state);
        }
        self.follow_weak_runs(weak);

        self.tracks
            .iter()
            .filter(|t| t.state == TrackState::Confirmed)
            .filter_map(|t| {
                t.matched.map(|d| TrackedObject {
                    track_id: t.id,
                    bbox: d.bbox,
                    class: t.class,
                    score: d.score,
                    vehicle: d.vehicle,
                })
            })
            .collect()
    }

    fn start_track(&mut self, detection: &Detection, state: TrackState) -> &mut Track {
        let id = self.next_id;
        self.next_id += 1;
        self.tracks.push(Track::new(id, detection, state, self.frame, self.config.confident_score));
        self.tracks.last_mut().expect("just pushed")
    }

    /// Extends each weak run with the weak detection left over this frame that overlaps it best,
    /// ends runs that found nothing and begins a run at every other weak detection. A run that
    /// reached `weak_track_frames` revives the lost track it lies on, or else starts a confirmed
    /// one. A weak box on an object tracked in this frame (a part of it, or it and a neighbour) is
    /// that object's, not another: it takes no part.
    fn follow_weak_runs(&mut self, mut weak: Vec<Detection>) {
        let needed = self.config.weak_track_frames;
        if needed == 0 {
            return;
        }
        let tracked: Vec<BBox> = self.tracks.iter().filter_map(|t| t.matched.map(|d| d.bbox)).collect();
        weak.retain(|d| tracked.iter().all(|b| b.iou(&d.bbox) < TENTATIVE_MIN_IOU));
        let before = std::mem::take(&mut self.weak_runs);
        let mut runs: Vec<usize> = (0..before.len()).collect();
        let mut left: Vec<usize> = (0..weak.len()).collect();
        let extended = associate(&mut runs, &mut left, |r, d| {
            match_score(&before[r].latest.bbox, &weak[d].bbox, TENTATIVE_MIN_IOU, 0.0)
        });
        let mut ready = Vec::new();
        for (r, d) in extended {
            let run = WeakRun { first: before[r].first, latest: weak[d], frames: before[r].frames + 1 };
            if run.frames >= needed {
                ready.push(run);
            } else {
                self.weak_runs.push(run);
            }
        }
        self.weak_runs.extend(left.into_iter().map(|d| WeakRun { first: weak[d].bbox, latest: weak[d], frames: 1 }));

        // A run where a lost track was heading is that vehicle found again, not a new one.
        let mut lost: Vec<usize> =
            (0..self.tracks.len()).filter(|&t| self.tracks[t].state == TrackState::Lost).collect();
        let mut unclaimed: Vec<usize> = (0..ready.len()).collect();
        let found = associate(&mut lost, &mut unclaimed, |t, r| {
            let predicted = self.tracks[t].kalman.bbox();
            match_score(&predicted, &ready[r].latest.bbox, TENTATIVE_MIN_IOU, predicted.larger_side())
        });
        for (t, r) in found {
            self.tracks[t].observe(&ready[r].latest, self.frame, self.config.confident_score);
            self.tracks[t].state = TrackState::Confirmed;
        }
        for r in unclaimed {
            self.start_track(&ready[r].latest, TrackState::Confirmed).follow_run(&ready[r]);
        }
    }

    /// The detection continuity of the tracks that ended since the last call.
    pub fn take_continuity(&mut self) -> Continuity {
        std::mem::take(&mut self.continuity)
    }

    /// Number of live tracks (tentative, confirmed and lost) — for metrics.
    pub fn live_tracks(&self) -> usize {
        self.tracks.len()
    }
}

/// Consecutive frames of weak detections at overlapping places that no track took.
#[derive(Debug, Clone, Copy)]
struct WeakRun {
    /// The first detection's box and the latest detection.
    first: BBox,
    latest: Detection,
    frames: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackState {
    /// Seen once, after the first frame; not reported until seen again.
    Tentative,
    /// Seen in the latest frame (or recovered from a loss).
    Confirmed,
    /// Confirmed once, but missed in the latest frame(s).
    Lost,
}

/// How surely the detector found the objects it was following: over ended tracks, the frames
/// with a confident detection (at least `confident_score`) against the frames from a track's
/// first to its last detection. A label-free proxy of the model's recall (`ml_model_accuracy`): a
/// degraded model leaves gaps in tracks, or keeps them only through weak detections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Continuity {
    pub detected: u64,
    pub spanned: u64,
}

/// Tracks shorter than this say little about recall and are left out of the continuity.
const CONTINUITY_MIN_HITS: u32 = 5;
/// The most frames one track contributes to the continuity.
const CONTINUITY_MAX_FRAMES: u64 = 300;

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    kalman: KalmanBox,
    state: TrackState,
    /// Frames of the first and the latest matched detection, how many frames had one, and how
    /// many of those a confident one (at least `confident_score`).
    first_seen: u64,
    last_seen: u64,
    hits: u32,
    confident_hits: u32,
    /// Accumulated detection score per class.
    class_votes: Vec<(ObjectClass, f32)>,
    class: ObjectClass,
    /// The detection matched in the current frame, if any.
    matched: Option<Detection>,
}

impl Track {
    fn new(id: u64, detection: &Detection, state: TrackState, frame: u64, confident_score: f32) -> Self {
        Self {
            id,
            kalman: KalmanBox::new(&measurement(&detection.bbox)),
            state,
            first_seen: frame,
            last_seen: frame,
            hits: 1,
            confident_hits: u32::from(detection.score >= confident_score),
            class_votes: vec![(detection.class, detection.score)],
            class: detection.class,
            matched: Some(*detection),
        }
    }

    /// A track started from a weak run has been seen `run.frames` times, moving as the run did:
    /// it is matched like a followed track, not like one seen once (whose reach is wide).
    fn follow_run(&mut self, run: &WeakRun) {
        let steps = f64::from(run.frames - 1).max(1.0);
        let (first, last) = (measurement(&run.first), measurement(&run.latest.bbox));
        self.kalman.mean[4] = (last[0] - first[0]) / steps;
        self.kalman.mean[5] = (last[1] - first[1]) / steps;
        self.hits = run.frames;
    }

    fn observe(&mut self, detection: &Detection, frame: u64, confident_score: f32) {
        let z = measurement(&detection.bbox);
        if self.hits == 1 {
            // The second sighting gives the velocity the filter would otherwise take many frames
            // to learn from its wide prior: at a low frame rate there are few frames to learn in.
            let frames = (frame - self.last_seen).max(1) as f64;
            let first = self.kalman.mean;
            self.kalman.update(&z);
            self.kalman.mean[4] = (z[0] - first[0]) / frames;
            self.kalman.mean[5] = (z[1] - first[1]) / frames;
        } else {
            self.kalman.update(&z);
        }
        self.last_seen = frame;
        self.hits += 1;
        self.confident_hits += u32::from(detection.score >= confident_score);
        self.matched = Some(*detection);

        match self.class_votes.iter_mut().find(|(c, _)| *c == detection.class) {
            Some((_, votes)) => *votes += detection.score,
            None => self.class_votes.push((detection.class, detection.score)),
        }
        // Ties keep the current class, so the label does not flicker between equals.
        let mut best = self.class_votes.iter().find(|(c, _)| *c == self.class).map_or(f32::NEG_INFINITY, |(_, v)| *v);
        for &(class, votes) in &self.class_votes {
            if votes > best {
                best = votes;
                self.class = class;
            }
        }
    }
}

/// Boxes the filter can take: finite, with a positive size and a finite score. The detector
/// should never produce anything else, but a NaN here would poison a track for good.
fn is_usable(detection: &Detection) -> bool {
    let b = &detection.bbox;
    detection.score.is_finite() && [b.x1, b.y1, b.x2, b.y2].iter().all(|v| v.is_finite()) && b.x2 > b.x1 && b.y2 > b.y1
}

/// How well a track's predicted box and a detection match, `None` when they cannot be the same
/// object: their IoU when it reaches `min_iou`; otherwise, for boxes of similar area (within a
/// factor of 2) whose centres are less than `reach` pixels apart, a score falling from
/// `DISTANCE_SCORE` with the distance (`reach` 0: overlap only).
fn match_score(predicted: &BBox, detection: &BBox, min_iou: f32, reach: f32) -> Option<f32> {
    let iou = predicted.iou(detection);
    if iou >= min_iou && iou > 0.0 {
        return Some(iou);
    }
    let (a, b) = (predicted.area(), detection.area());
    if reach.is_nan() || reach <= 0.0 || a.min(b) < 0.5 * a.max(b) {
        return None;
    }
    let dx = (predicted.x1 + predicted.x2 - detection.x1 - detection.x2) / 2.0;
    let dy = (predicted.y1 + predicted.y2 - detection.y1 - detection.y2) / 2.0;
    let distance = dx.hypot(dy);
    (distance < reach).then(|| DISTANCE_SCORE * (1.0 - distance / reach))
}

/// Optimal one-to-one matching of `tracks` to `detections` maximising the summed score, keeping
/// only pairs `score` accepts (`Some`, positive and finite). The matched indices are removed
/// from both lists, so they are left holding the unmatched ones.
fn associate(
    tracks: &mut Vec<usize>,
    detections: &mut Vec<usize>,
    score: impl Fn(usize, usize) -> Option<f32>,
) -> Vec<(usize, usize)> {
    if tracks.is_empty() || detections.is_empty() {
        return Vec::new();
    }
    let acceptable = |t: usize, d: usize| score(tracks[t], detections[d]).filter(|v| *v > 0.0 && v.is_finite());
    // The solver works on integers (floats could make it loop forever); rejected pairs weigh
    // nothing, so they never displace an acceptable one, and acceptable ones weigh at least 1
    // so that even a tiny accepted overlap beats nothing.
    const SCALE: f32 = 1_000_000.0;
    let weight = |t: usize, d: usize| match acceptable(t, d) {
        Some(v) => 1 + (v.min(1.0) * SCALE) as i64,
        None => 0,
    };

    let (rows, columns) = (tracks.len(), detections.len());
    // The solver assigns every row, so rows must be the smaller side.
    let pairs: Vec<(usize, usize)> = if rows <= columns {
        let weights = Matrix::from_fn(rows, columns, |(t, d)| weight(t, d));
        let (_, assignment) = kuhn_munkres(&weights);
        assignment.into_iter().enumerate().collect()
    } else {
        let weights = Matrix::from_fn(columns, rows, |(d, t)| weight(t, d));
        let (_, assignment) = kuhn_munkres(&weights);
        assignment.into_iter().enumerate().map(|(d, t)| (t, d)).collect()
    };

    let mut matched_tracks = vec![false; rows];
    let mut matched_detections = vec![false; columns];
    let mut matches = Vec::new();
    for (t, d) in pairs {
        if acceptable(t, d).is_some() {
            matched_tracks[t] = true;
            matched_detections[d] = true;
            matches.push((tracks[t], detections[d]));
        }
    }
    let mut index = 0;
    tracks.retain(|_| {
        index += 1;
        !matched_tracks[index - 1]
    });
    let mut index = 0;
    detections.retain(|_| {
        index += 1;
        !matched_detections[index - 1]
    });
    matches
}

type State = SVector<f64, 8>;
type StateCovariance = SMatrix<f64, 8, 8>;
type Measurement = SVector<f64, 4>;

/// Noise is proportional to the box height, so big (near) objects may move more pixels.
const STD_WEIGHT_POSITION: f64 = 1.0 / 20.0;
const STD_WEIGHT_VELOCITY: f64 = 1.0 / 160.0;

/// (cx, cy, w/h, h) of a box; the aspect ratio varies far less than width does.
fn measurement(b: &BBox) -> Measurement {
    let (x1, y1, x2, y2) = (b.x1 as f64, b.y1 as f64, b.x2 as f64, b.y2 as f64);
    let h = y2 - y1;
    Measurement::new((x1 + x2) / 2.0, (y1 + y2) / 2.0, (x2 - x1) / h, h)
}

/// The height that scales the noise. Kept at least a pixel (and finite) so the covariance
/// can never collapse to zero and leave the innovation matrix singular.
fn noise_scale(h: f64) -> f64 {
    if h.is_finite() {
        h.max(1.0)
    } else {
        1.0
    }
}

fn diagonal<const N: usize>(std: [f64; N]) -> SMatrix<f64, N, N> {
    SMatrix::<f64, N, N>::from_diagonal(&SVector::<f64, N>::from_fn(|i, _| std[i] * std[i]))
}

/// Constant-velocity Kalman filter over (cx, cy, a, h, vcx, vcy, va, vh), one step per frame.
#[derive(Debug, Clone)]
struct KalmanBox {
    mean: State,
    covariance: StateCovariance,
}

impl KalmanBox {
    fn new(z: &Measurement) -> Self {
        let h = noise_scale(z[3]);
        let p = 2.0 * STD_WEIGHT_POSITION * h;
        let v = 10.0 * STD_WEIGHT_VELOCITY * h;
        let mut mean = State::zeros();
        mean.fixed_rows_mut::<4>(0).copy_from(z);
        Self {
            mean,
            // Velocity is unknown at birth, hence the wide velocity prior.
            covariance: diagonal([p, p, 1e-2, p, v, v, 1e-5, v]),
        }
    }

    fn transition() -> StateCovariance {
        let mut f = StateCovariance::identity();
        for i in 0..4 {
            f[(i, i + 4)] = 1.0;
        }
        f
    }

    fn predict(&mut self) {
        let h = noise_scale(self.mean[3]);
        let p = STD_WEIGHT_POSITION * h;
        let v = STD_WEIGHT_VELOCITY * h;
        let f = Self::transition();
        self.mean = f * self.mean;
        self.covariance = f * self.covariance * f.transpose() + diagonal([p, p, 1e-2, p, v, v, 1e-5, v]);
    }

    fn update(&mut self, z: &Measurement) {
        let h = noise_scale(self.mean[3]);
        let p = STD_WEIGHT_POSITION * h;
        let observation = SMatrix::<f64, 4, 8>::identity();
        let innovation_cov = observation * self.covariance * observation.transpose() + diagonal([p, p, 1e-1, p]);
        // A filter that can no longer be inverted or has gone non-finite (absurd input
        // coordinates) is worth less than the fresh measurement: restart from it.
        let Some(cholesky) = innovation_cov.cholesky() else {
            *self = Self::new(z);
            return;
        };
        let gain = cholesky.solve(&(observation * self.covariance)).transpose();
        self.mean += gain * (z - observation * self.mean);
        self.covariance -= gain * innovation_cov * gain.transpose();
        // Rounding slowly breaks symmetry, and with it the next Cholesky factorisation.
        self.covariance = (self.covariance + self.covariance.transpose()) * 0.5;
        if !self.mean.iter().chain(self.covariance.iter()).all(|v| v.is_finite()) {
            *self = Self::new(z);
        }
    }

    /// Pixels a frame the centre moves.
    fn speed(&self) -> f32 {
        self.mean[4].hypot(self.mean[5]) as f32
    }

    fn bbox(&self) -> BBox {
        let (cx, cy, a, h) = (self.mean[0], self.mean[1], self.mean[2], self.mean[3]);
        let w = a * h;
        BBox::new((cx - w / 2.0) as f32, (cy - h / 2.0) as f32, (cx + w / 2.0) as f32, (cy + h / 2.0) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(cx: f32, cy: f32, w: f32, h: f32, score: f32, class: ObjectClass) -> Detection {
        Detection::new(BBox::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0), score, class)
    }

    fn car(cx: f32, cy: f32, score: f32) -> Detection {
        det(cx, cy, 40.0, 30.0, score, ObjectClass::Car)
    }

    /// A car the detector calls large (close to the camera): only such boxes start weak runs.
    fn large_car(cx: f32, cy: f32, score: f32) -> Detection {
        Detection { large: true, ..car(cx, cy, score) }
    }

    fn ids(out: &[TrackedObject]) -> Vec<u64> {
        out.iter().map(|o| o.track_id).collect()
    }

    #[test]
    fn default_config_is_valid() {
        assert!(TrackerConfig::default().validate().is_empty());
    }

    #[test]
    fn invalid_config_reports_every_problem() {
        let config = TrackerConfig {
            high_thresh: 0.3,
            low_thresh: 0.4,
            new_track_thresh: 0.2,
            match_thresh: f32::NAN,
            max_lost_frames: 30,
            weak_track_frames: 1,
            confident_score: 1.5,
        };
        let problems = config.validate();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("tracker.weak_track_frames")));
        assert!(problems.iter().any(|p| p.contains("tracker.match_thresh")));
        assert!(problems.iter().any(|p| p.contains("tracker.confident_score")));
        assert!(problems.iter().any(|p| p.contains("tracker.low_thresh")));
        assert!(problems.iter().any(|p| p.contains("tracker.new_track_thresh")));

        let out_of_range = TrackerConfig { low_thresh: -0.1, ..TrackerConfig::default() };
        assert_eq!(out_of_range.validate(), vec!["tracker.low_thresh must be in 0..=1 (got -0.1)".to_string()]);
    }

    #[test]
    fn config_deserializes_with_defaults_and_rejects_unknown_keys() {
        let config: TrackerConfig = serde_json::from_str(r#"{"max_lost_frames": 10}"#).unwrap();
        assert_eq!(config, TrackerConfig { max_lost_frames: 10, ..TrackerConfig::default() });
        assert!(serde_json::from_str::<TrackerConfig>(r#"{"max_lost": 10}"#).is_err());
    }

    #[test]
    fn association_is_optimal_gated_and_rectangular() {
        // Greedy would give track 0 its best detection (0) and leave track 1 with nothing.
        let table = [[0.6, 0.5], [0.55, 0.0]];
        let mut tracks = vec![0, 1];
        let mut detections = vec![0, 1];
        let gate = |v: f32| (v >= 0.2).then_some(v);
        let mut matches = associate(&mut tracks, &mut detections, |t, d| gate(table[t][d]));
        matches.sort();
        assert_eq!(matches, vec![(0, 1), (1, 0)]);
        assert!(tracks.is_empty() && detections.is_empty());

        // More tracks than detections, the indices are not positions, and the gate holds.
        let table = [[0.0; 12], [0.0; 12], [0.0; 12]];
        let mut table = table.map(|row| row.to_vec());
        table[0][11] = 0.4;
        table[2][11] = 0.9;
        table[1][5] = 0.1;
        let mut tracks = vec![0, 1, 2];
        let mut detections = vec![11, 5];
        let matches = associate(&mut tracks, &mut detections, |t, d| gate(table[t][d]));
        assert_eq!(matches, vec![(2, 11)]);
        assert_eq!(tracks, vec![0, 1]);
        assert_eq!(detections, vec![5]);

        // NaN overlaps are rejected, never matched.
        let mut tracks = vec![0];
        let mut detections = vec![0];
        assert!(associate(&mut tracks, &mut detections, |_, _| Some(f32::NAN)).is_empty());
        assert_eq!((tracks, detections), (vec![0], vec![0]));
    }

    #[test]
    fn constant_velocity_object_keeps_one_id() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        for i in 0..50 {
            let d = car(100.0 + 5.0 * i as f32, 200.0 + 2.0 * i as f32, 0.9);
            let out = tracker.update(&[d]);
            assert_eq!(ids(&out), vec![1], "frame {i}");
            assert_eq!(out[0].bbox, d.bbox, "the detection's box is reported");
            assert_eq!(out[0].class, ObjectClass::Car);
            assert_eq!(out[0].score, 0.9);
        }
        assert_eq!(tracker.live_tracks(), 1);
    }

    /// At a low frame rate a vehicle crossing the image moves more than its own width between
    /// frames, so its boxes never overlap: it keeps one id, from its first frame or a later one.
    #[test]
    fn objects_moving_one_and_a_half_widths_a_frame_sideways_keep_their_ids() {
        for born in [1, 3] {
            let mut tracker = Tracker::new(TrackerConfig::default());
            for _ in 1..born {
                tracker.update(&[]);
            }
            let mut seen = Vec::new();
            for step in 0..8 {
                // 40 px wide, 60 px a frame; a second car in the next lane the other way.
                let x = 30.0 + 60.0 * step as f32;
                let out =
                    tracker.update(&[car(x, 100.0, 0.9), det(510.0 - x, 160.0, 40.0, 20.0, 0.9, ObjectClass::Car)]);
                for o in &out {
                    let lane = (o.bbox.y1 > 130.0) as usize;
                    seen.push((lane, o.track_id));
                }
            }
            let lanes: Vec<Vec<u64>> =
                (0..2).map(|l| seen.iter().filter(|(lane, _)| *lane == l).map(|(_, id)| *id).collect()).collect();
            for ids in &lanes {
                assert!(ids.len() >= 7, "born at frame {born}: reported on too few frames: {seen:?}");
                assert!(ids.windows(2).all(|w| w[0] == w[1]), "born at frame {born}: id changed: {seen:?}");
            }
            assert_ne!(lanes[0][0], lanes[1][0]);
        }
    }

    #[test]
    fn crossing_objects_keep_their_ids() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let mut id_a = None;
        let mut id_b = None;
        for i in 0..50 {
            let a = det(0.0 + 8.0 * i as f32, 100.0, 40.0, 40.0, 0.9, ObjectClass::Car);
            let b = det(404.0 - 8.0 * i as f32, 110.0, 40.0, 40.0, 0.85, ObjectClass::Truck);
            // Reversed input order on odd frames: the result must not depend on it.
            let input = if i % 2 == 0 { vec![a, b] } else { vec![b, a] };
            let out = tracker.update(&input);
            assert_eq!(out.len(), 2, "frame {i}");
            let found_a = out.iter().find(|o| o.bbox == a.bbox).unwrap().track_id;
            let found_b = out.iter().find(|o| o.bbox == b.bbox).unwrap().track_id;
            assert_eq!(*id_a.get_or_insert(found_a), found_a, "frame {i}");
            assert_eq!(*id_b.get_or_insert(found_b), found_b, "frame {i}");
        }
        assert_ne!(id_a, id_b);
    }

    #[test]
    fn short_gap_on_predicted_path_keeps_id() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let at = |i: usize| car(100.0 + 6.0 * i as f32, 300.0 - 3.0 * i as f32, 0.9);
        for i in 0..20 {
            assert_eq!(ids(&tracker.update(&[at(i)])), vec![1]);
        }
        for _ in 20..30 {
            assert!(tracker.update(&[]).is_empty(), "a lost track is not reported");
            assert_eq!(tracker.live_tracks(), 1);
        }
        for i in 30..40 {
            assert_eq!(ids(&tracker.update(&[at(i)])), vec![1], "frame {i}");
        }
        assert_eq!(tracker.take_continuity(), Continuity::default(), "the track has not ended");
        for _ in 0..=TrackerConfig::default().max_lost_frames {
            tracker.update(&[]);
        }
        // Detected in 30 of the 40 frames from its first to its last detection.
        assert_eq!(tracker.take_continuity(), Continuity { detected: 30, spanned: 40 });
        assert_eq!(tracker.take_continuity(), Continuity::default(), "taken once");
    }

    #[test]
    fn frames_held_only_by_unsure_detections_count_against_continuity() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        for i in 0..20 {
            let score = if i < 10 { 0.9 } else { 0.2 };
            assert_eq!(ids(&tracker.update(&[car(100.0 + 2.0 * i as f32, 200.0, score)])), vec![1], "frame {i}");
        }
        for _ in 0..=TrackerConfig::default().max_lost_frames {
            tracker.update(&[]);
        }
        assert_eq!(tracker.take_continuity(), Continuity { detected: 10, spanned: 20 });
    }

    #[test]
    fn gap_of_exactly_max_lost_frames_keeps_id() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let d = car(200.0, 200.0, 0.9);
        for _ in 0..5 {
            tracker.update(&[d]);
        }
        for _ in 0..30 {
            tracker.update(&[]);
        }
        assert_eq!(ids(&tracker.update(&[d])), vec![1]);
    }

    #[test]
    fn gap_longer_than_max_lost_frames_gets_new_id() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let d = car(200.0, 200.0, 0.9);
        for _ in 0..5 {
            assert_eq!(ids(&tracker.update(&[d])), vec![1]);
        }
        for _ in 0..31 {
            tracker.update(&[]);
        }
        assert_eq!(tracker.live_tracks(), 0);
        // Tentative again: reported from its second frame on, under a fresh id.
        assert!(tracker.update(&[d]).is_empty());
        assert_eq!(ids(&tracker.update(&[d])), vec![2]);
        assert_eq!(ids(&tracker.update(&[d])), vec![2]);
    }

    #[test]
    fn low_score_detection_continues_but_starts_a_track_only_when_it_persists() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let at = |i: usize, score: f32| large_car(100.0 + 4.0 * i as f32, 100.0, score);
        for i in 0..5 {
            assert_eq!(ids(&tracker.update(&[at(i, 0.9)])), vec![1]);
        }
        for i in 5..15 {
            let out = tracker.update(&[at(i, 0.3)]);
            assert_eq!(ids(&out), vec![1], "frame {i}");
            assert_eq!(out[0].score, 0.3);
        }

        // Without weak tracks, neither on the first frame nor later does a weak detection start
        // anything, nor a confident one under new_track_thresh.
        let mut fresh = Tracker::new(TrackerConfig { weak_track_frames: 0, ..TrackerConfig::default() });
        for i in 0..10 {
            assert!(fresh.update(&[at(i, 0.3)]).is_empty());
            assert_eq!(fresh.live_tracks(), 0);
        }
        assert!(fresh.update(&[at(10, 0.55)]).is_empty());
        assert_eq!(fresh.live_tracks(), 0);

        // With them (the default, 5 frames), weak and under-threshold detections at overlapping
        // places, frame after frame, are a vehicle from the fifth frame on, kept by the weak ones.
        let mut tracker = Tracker::new(TrackerConfig::default());
        for i in 0..4 {
            assert!(tracker.update(&[at(i, if i == 2 { 0.55 } else { 0.2 })]).is_empty(), "frame {i}");
            assert_eq!(tracker.live_tracks(), 0);
        }
        for i in 4..12 {
            assert_eq!(ids(&tracker.update(&[at(i, 0.2)])), vec![1], "frame {i}");
        }

        // The same run of small boxes (a far vehicle fading, a caption) starts nothing.
        let mut tracker = Tracker::new(TrackerConfig::default());
        for i in 0..12 {
            assert!(tracker.update(&[car(100.0 + 4.0 * i as f32, 100.0, 0.2)]).is_empty(), "frame {i}");
            assert_eq!(tracker.live_tracks(), 0);
        }
    }

    #[test]
    fn a_weak_run_revives_the_lost_track_it_lies_on_and_moves_as_the_run_did() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let at = |i: usize, score: f32| large_car(100.0 + 4.0 * i as f32, 100.0, score);
        for i in 0..5 {
            assert_eq!(ids(&tracker.update(&[at(i, 0.9)])), vec![1]);
        }
        // Faded below low_thresh for a while, then back weakly: after five weak frames it is
        // car 1 again, not a second car.
        for i in 5..9 {
            assert!(tracker.update(&[at(i, 0.05)]).is_empty());
        }
        for i in 9..13 {
            assert!(tracker.update(&[at(i, 0.3)]).is_empty(), "frame {i}");
        }
        assert_eq!(ids(&tracker.update(&[at(13, 0.3)])), vec![1]);
        assert_eq!(tracker.live_tracks(), 1);

        // A track started from a weak run is matched like a followed one: a confident car of the
        // same size 70 px away is another car, not this one jumping.
        let mut tracker = Tracker::new(TrackerConfig::default());
        for _ in 0..5 {
            tracker.update(&[large_car(300.0, 300.0, 0.3)]);
        }
        let out = tracker.update(&[large_car(300.0, 300.0, 0.3), car(370.0, 300.0, 0.9)]);
        assert_eq!(ids(&out), vec![1], "the far car waits for its second frame");
        assert_eq!(tracker.live_tracks(), 2);
    }

    #[test]
    fn weak_detections_that_do_not_persist_or_belong_to_a_track_start_nothing() {
        let config = TrackerConfig::default();
        // Clutter that comes and goes, or jumps about, never holds for five frames in a row.
        let mut tracker = Tracker::new(config);
        for i in 0..40 {
            let flicker = if i % 4 == 3 { vec![] } else { vec![large_car(300.0, 50.0, 0.3)] };
            let jumping = large_car(50.0 + 60.0 * (i % 2) as f32, 300.0, 0.3);
            tracker.update(&[flicker, vec![jumping]].concat());
            assert_eq!(tracker.live_tracks(), 0, "frame {i}");
        }
        // A weak box on a tracked car (its front half) is that car's, for as long as it lasts.
        let mut tracker = Tracker::new(config);
        for i in 0..20 {
            let x = 100.0 + 3.0 * i as f32;
            let half = Detection { large: true, ..det(x + 10.0, 100.0, 20.0, 30.0, 0.3, ObjectClass::Car) };
            let out = tracker.update(&[car(x, 100.0, 0.9), half]);
            assert_eq!(ids(&out), vec![1], "frame {i}");
        }
        assert_eq!(tracker.live_tracks(), 1);
    }

    #[test]
    fn low_score_detection_does_not_revive_a_lost_track() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let d = car(200.0, 200.0, 0.9);
        for _ in 0..5 {
            tracker.update(&[d]);
        }
        tracker.update(&[]);
        assert!(tracker.update(&[car(200.0, 200.0, 0.3)]).is_empty());
        assert_eq!(ids(&tracker.update(&[d])), vec![1]);
    }

    #[test]
    fn one_frame_false_positive_is_never_reported() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let real = |i: usize| car(100.0 + 5.0 * i as f32, 100.0, 0.9);
        assert_eq!(ids(&tracker.update(&[real(0)])), vec![1]);
        let ghost = car(600.0, 400.0, 0.95);
        assert_eq!(ids(&tracker.update(&[real(1), ghost])), vec![1]);
        assert_eq!(tracker.live_tracks(), 2);
        for i in 2..10 {
            assert_eq!(ids(&tracker.update(&[real(i)])), vec![1]);
            assert_eq!(tracker.live_tracks(), 1);
        }
    }

    #[test]
    fn object_appearing_later_is_confirmed_on_its_second_frame() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let a = car(100.0, 100.0, 0.9);
        let b = |i: usize| car(500.0, 100.0 + 5.0 * i as f32, 0.8);
        tracker.update(&[a]);
        assert_eq!(ids(&tracker.update(&[a, b(0)])), vec![1]);
        for i in 1..10 {
            assert_eq!(ids(&tracker.update(&[a, b(i)])), vec![1, 2]);
        }
    }

    #[test]
    fn class_is_voted_by_accumulated_score() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        for i in 0..10 {
            let class = if i == 4 { ObjectClass::Truck } else { ObjectClass::Car };
            let score = if i == 4 { 0.9 } else { 0.8 };
            let out = tracker.update(&[det(100.0 + 3.0 * i as f32, 100.0, 60.0, 40.0, score, class)]);
            assert_eq!(ids(&out), vec![1]);
            assert_eq!(out[0].class, ObjectClass::Car, "frame {i}");
        }

        // The vote follows the evidence once it really changes.
        let mut tracker = Tracker::new(TrackerConfig::default());
        let d = |class| det(100.0, 100.0, 60.0, 40.0, 0.8, class);
        assert_eq!(tracker.update(&[d(ObjectClass::Car)])[0].class, ObjectClass::Car);
        assert_eq!(tracker.update(&[d(ObjectClass::Bus)])[0].class, ObjectClass::Car);
        assert_eq!(tracker.update(&[d(ObjectClass::Bus)])[0].class, ObjectClass::Bus);
    }

    #[test]
    fn nan_and_degenerate_input_is_ignored() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let nan = f32::NAN;
        let inf = f32::INFINITY;
        let junk = [
            Detection::new(BBox::new(nan, 0.0, 10.0, 10.0), 0.9, ObjectClass::Car),
            Detection::new(BBox::new(0.0, 0.0, inf, 10.0), 0.9, ObjectClass::Car),
            Detection::new(BBox::new(0.0, 0.0, 10.0, 10.0), nan, ObjectClass::Car),
            Detection::new(BBox::new(0.0, 0.0, 10.0, 10.0), inf, ObjectClass::Car),
            Detection::new(BBox::new(5.0, 5.0, 5.0, 20.0), 0.9, ObjectClass::Car),
            Detection::new(BBox::new(5.0, 5.0, 20.0, 5.0), 0.9, ObjectClass::Car),
            Detection::new(BBox::new(20.0, 20.0, 5.0, 5.0), 0.9, ObjectClass::Car),
        ];
        for i in 0..20 {
            let real = car(300.0 + 5.0 * i as f32, 300.0, 0.9);
            let mut input = junk.to_vec();
            input.push(real);
            let out = tracker.update(&input);
            assert_eq!(ids(&out), vec![1], "frame {i}");
            assert_eq!(out[0].bbox, real.bbox);
        }
        assert_eq!(tracker.live_tracks(), 1);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A tiny deterministic generator: no dependency, and failures are reproducible.
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as u32
        };
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -f32::MAX, 0.0, 1e30, -1e-30];
        let configs = [
            TrackerConfig::default(),
            TrackerConfig {
                high_thresh: 0.0,
                low_thresh: 0.0,
                new_track_thresh: 0.0,
                match_thresh: 1.0,
                max_lost_frames: 0,
                weak_track_frames: 2,
                confident_score: 0.0,
            },
            // Invalid on purpose: the tracker must still not panic.
            TrackerConfig {
                high_thresh: f32::NAN,
                low_thresh: -1.0,
                new_track_thresh: 2.0,
                match_thresh: -3.0,
                max_lost_frames: u32::MAX,
                weak_track_frames: u32::MAX,
                confident_score: f32::NAN,
            },
        ];
        for config in configs {
            let mut tracker = Tracker::new(config);
            for _ in 0..150 {
                let count = next() % 12;
                let detections: Vec<Detection> = (0..count)
                    .map(|_| {
                        let mut value = |scale: f32| {
                            let r = next();
                            if r % 17 == 0 {
                                specials[(r / 17) as usize % specials.len()]
                            } else {
                                (r % 10_000) as f32 / 10_000.0 * scale
                            }
                        };
                        let x = value(640.0);
                        let y = value(480.0);
                        let w = value(120.0);
                        let h = value(120.0);
                        let score = value(1.0);
                        let class = ObjectClass::ALL[next() as usize % ObjectClass::ALL.len()];
                        let detection = Detection::new(BBox::new(x, y, x + w, y + h), score, class);
                        Detection { large: next() % 2 == 0, ..detection }
                    })
                    .collect();
                let out = tracker.update(&detections);
                assert!(out.len() <= detections.len());
                let mut seen = ids(&out);
                seen.dedup();
                assert_eq!(seen.len(), out.len(), "an id is reported once per frame");
            }
        }
    }

    #[test]
    fn ids_are_never_reused() {
        let mut tracker = Tracker::new(TrackerConfig { max_lost_frames: 1, ..TrackerConfig::default() });
        let d = car(100.0, 100.0, 0.9);
        let mut last = 0;
        for round in 0..5 {
            tracker.update(&[d]);
            let out = tracker.update(&[d]);
            let id = out[0].track_id;
            assert!(id > last, "round {round}: {id} after {last}");
            last = id;
            tracker.update(&[]);
            tracker.update(&[]);
            assert_eq!(tracker.live_tracks(), 0);
        }
    }
}
