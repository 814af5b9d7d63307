//! `its-analytics evaluate MANIFEST`: recorded clips with ground-truth vehicle counts, scored
//! per clip and together in the style of the AI City Challenge vehicle-counting track (Track 1,
//! 2020 and 2021).
//!
//! This module is the pure part: the manifest (parsing and validation), the metric and the report.
//! Running the clips is the caller's: for each [`ClipSpec`] it runs the analysis on
//! [`ClipSpec::video_path`] with the clip's geometry and `fps`, turns every `line_crossing` event
//! into an [`ObservedCrossing`], and calls [`score_clip`] (or [`score_failed`] when the run failed);
//! [`aggregate`] then gives the [`EvaluateReport`] (JSON via `Serialize`, text via
//! [`EvaluateReport::table`]).
//!
//! # Manifest (TOML)
//!
//! ```toml
//! segments = 10                          # k, optional, default 10
//!
//! [[clip]]
//! name = "overpass_video03"              # unique
//! video = "video/overpass_video03.avi"   # relative to the assets directory given on the command line
//! fps = 10                               # optional: frames analysed per second (absent: every frame)
//! source_fps = 30                        # optional: the clip's true frame rate, when its container's is wrong
//! geometry.lines = [                     # the geometry JSON of docs/ANALYTICS.md, as TOML
//!     { id = "y150", a = [0, 150], b = [320, 150] },
//! ]
//!
//! [[clip.truth]]
//! line = "y150"                          # a line id of this clip's geometry
//! direction = "in"                       # "in" or "out"
//! class = "car"                          # optional; absent: every vehicle class together
//! count = 27                             # true total over the whole clip
//! cumulative = [2, 5, 7, 9, 12, 15, 18, 21, 24, 27]  # optional: k cumulative counts
//!
//! [[clip.variant]]                       # optional: the clip again, scored on the same truth
//! name = "night"                         # unique in the clip; reported as "overpass_video03/night"
//! fps = 5                                # optional: another sampling rate
//! filter = "lutyuv=y=val*0.35"           # optional: an FFmpeg filter graph (ffmpeg -vf)
//! ```
//!
//! A variant with a `filter` is analysed from a copy the `ffmpeg` command makes once (every frame,
//! lossless) and keeps in `ITS_EVALUATE_CACHE` (default: `its-analytics-variants` in the system's
//! temporary directory); see [`variant_file`].
//!
//! Unknown keys are errors (`deny_unknown_fields`; the TOML parser names the key and its line).
//! Everything else is checked together and every problem is reported at once: missing fields,
//! truth lines missing from the clip's geometry, negative counts, duplicate clip names or truth
//! rows, `cumulative` lists of the wrong length, decreasing, or not ending at `count`.
//!
//! `geometry` is kept as a [`serde_json::Value`] so this module does not depend on the analysis
//! types; only its `lines` (each with a string `id`) are checked here. The caller converts it with
//! `serde_json::from_value::<Geometry>(clip.geometry.clone())` and validates it, for every clip
//! before running the first one, so a typo fails fast.
//!
//! Classes: a truth row with `class` counts crossings of that class only (`car`, `van`,
//! `motorcycle`, `bus`, `truck`, `bicycle`, `person`); without `class` it counts every vehicle
//! class ([`VEHICLE_CLASSES`]: car, van, motorcycle, bus, truck; not bicycles or persons). The rows
//! of one line and direction that name a class give the clip's class accuracy
//! ([`ClipResult::class_accuracy`]).
//!
//! # Metric
//!
//! Effectiveness, per truth row (the challenge's "movement and vehicle type"): the clip's processed
//! frames are split into k equal segments (frame `s`, counted from 0, is in segment
//! `floor(s * k / frames)`), and the predicted and true *cumulative* counts at the end of each
//! segment are compared with a weighted RMSE that weighs later segments more, so a crossing
//! counted a few frames either side of a segment boundary costs little:
//!
//! ```text
//! wRMSE = sqrt( sum_{i=1..k} w_i (p_i - t_i)^2 ),   w_i = i / sum_{j=1..k} j = 2i / (k (k + 1))
//! nwRMSE = wRMSE / max(truth, 1)
//! effectiveness = max(0, 1 - nwRMSE)
//! ```
//!
//! - Only a row whose truth has `cumulative` uses k segments. Without it only the total is known
//!   and the row is scored on one segment (`segments_used = 1` in the report), where
//!   `wRMSE = |predicted - truth|` and `nwRMSE = |error| / truth`.
//! - **Truth 0.** The challenge normalises by the true count, which is undefined at 0 (its rows
//!   with no vehicles carry no weight in its vehicle-weighted average). Here a truth of 0 is
//!   normalised by 1, as if it were one vehicle: no false crossing scores 1, one false crossing
//!   over the whole clip scores 0 (on one segment). This keeps "nothing should cross here" rows
//!   (e.g. the wrong direction) meaningful.
//!
//! Efficiency (challenge: `max(0, 1 - time x base_factor / (1.1 x video time))`): processing time
//! over the clips' playing time, with a 10 % margin, so a system that runs exactly in real time
//! scores 1 - 1/1.1 = 0.09 and one twice as fast as real time 0.55. **Simplification:** the
//! challenge's `base_factor` rescales each team's time to its reference machine; here it is 1
//! ([`BASE_FACTOR`]), so the figure depends on the machine it ran on and compares runs on one
//! machine only.
//!
//! Score (challenge: `S1 = 0.3 x efficiency + 0.7 x effectiveness`):
//! `score = 0.7 x effectiveness + 0.3 x efficiency`. **Difference:** the challenge averages
//! effectiveness over rows weighted by their true counts; the headline `effectiveness` here is the
//! plain mean over truth rows (a small lane or a zero row counts as much as a busy one), and the
//! challenge's weighting is reported alongside as `effectiveness_count_weighted`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default number of segments (k) of the effectiveness metric, as in the challenge.
pub const DEFAULT_SEGMENTS: usize = 10;
/// Largest `segments` the manifest accepts.
pub const MAX_SEGMENTS: usize = 1000;
/// Classes counted by a truth row without `class`.
pub const VEHICLE_CLASSES: [&str; 5] = ["car", "van", "motorcycle", "bus", "truck"];
/// Classes a truth row may name.
pub const CLASSES: [&str; 7] = ["car", "van", "motorcycle", "bus", "truck", "bicycle", "person"];
/// Weight of effectiveness in the score (challenge: beta = 0.7).
pub const EFFECTIVENESS_WEIGHT: f64 = 0.7;
/// Weight of efficiency in the score (challenge: alpha = 0.3).
pub const EFFICIENCY_WEIGHT: f64 = 0.3;
/// Processing time is compared with this multiple of the video time (challenge: 1.1).
pub const EFFICIENCY_TIME_MARGIN: f64 = 1.1;
/// The challenge's per-machine time factor; 1 here (no reference machine), see the module docs.
pub const BASE_FACTOR: f64 = 1.0;

// ---------------------------------------------------------------------------------------------
// Manifest

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// k: segments of the effectiveness metric.
    pub segments: usize,
    pub clips: Vec<ClipSpec>,
}

/// One clip to run and score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipSpec {
    /// Unique within the manifest; a variant's is `clip/variant`.
    pub name: String,
    /// Relative to the assets directory; see [`ClipSpec::video_path`].
    pub video: PathBuf,
    /// A variant's FFmpeg filter graph (`ffmpeg -vf`): the clip is analysed as this filter makes it
    /// (darkened, noisy, upscaled); see [`variant_file`].
    pub filter: Option<String>,
    /// Frames analysed per second, for the analysis run's `fps` (None: every frame).
    pub fps: Option<f64>,
    /// The clip's true frame rate when its container's is wrong; see [`ClipSpec::video_seconds`].
    pub source_fps: Option<f64>,
    /// The geometry JSON (docs/ANALYTICS.md) as written; at least `lines`, each with an `id`.
    pub geometry: serde_json::Value,
    pub truths: Vec<TruthSpec>,
    /// k, copied from the manifest so [`score_clip`] needs only the clip.
    pub segments: usize,
}

/// A true count: one line, one direction, one class or all vehicle classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TruthSpec {
    pub line: String,
    /// "in" or "out".
    pub direction: String,
    /// None: every class of [`VEHICLE_CLASSES`].
    pub class: Option<String>,
    /// Total over the clip.
    pub count: u64,
    /// Cumulative counts at the end of each of the k equal frame segments, when known (the last
    /// equals `count`).
    pub cumulative: Option<Vec<u64>>,
}

impl ClipSpec {
    /// The video file: `assets` joined with the manifest's relative path.
    pub fn video_path(&self, assets: &Path) -> PathBuf {
        assets.join(&self.video)
    }

    /// The ids of the geometry's lines, in order.
    pub fn line_ids(&self) -> Vec<String> {
        line_ids(&self.geometry).unwrap_or_default().into_iter().map(|(id, _)| id).collect()
    }

    /// Seconds of video the clip holds, for the efficiency and the realtime factor:
    /// `source_frames / source_fps` when the manifest gives `source_fps` (a container with a broken
    /// frame rate), else `container_seconds` (what the decoder reports).
    pub fn video_seconds(&self, source_frames: u64, container_seconds: f64) -> f64 {
        match self.source_fps {
            Some(fps) => source_frames as f64 / fps,
            None => container_seconds,
        }
    }
}

impl TruthSpec {
    /// Whether an observed crossing counts towards this row.
    pub fn matches(&self, crossing: &ObservedCrossing) -> bool {
        crossing.line_id == self.line
            && crossing.direction == self.direction
            && match &self.class {
                Some(class) => crossing.class == *class,
                None => VEHICLE_CLASSES.contains(&crossing.class.as_str()),
            }
    }

    fn class_label(&self) -> &str {
        self.class.as_deref().unwrap_or("vehicles")
    }
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Not TOML, a wrong type, or an unknown key (the message says where).
    #[error("{0}")]
    Parse(String),
    /// Every problem found, one per entry.
    #[error("{} problem(s) in the manifest:\n  {}", .0.len(), .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// Reads and validates a manifest file.
pub fn load_manifest(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.into(), source })?;
    parse_manifest(&text).map_err(|e| match e {
        ManifestError::Parse(message) => ManifestError::Parse(format!("{}: {message}", path.display())),
        other => other,
    })
}

/// Parses and validates a manifest.
pub fn parse_manifest(text: &str) -> Result<Manifest, ManifestError> {
    let raw: RawManifest =
        toml::from_str(text).map_err(|e| ManifestError::Parse(e.to_string().trim_end().to_owned()))?;
    raw.validate().map_err(ManifestError::Invalid)
}

// The manifest as written: fields that may be missing are options, counts are signed, so that
// validation sees everything and reports it together.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    segments: Option<i64>,
    #[serde(default)]
    clip: Vec<RawClip>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClip {
    name: Option<String>,
    video: Option<String>,
    fps: Option<f64>,
    source_fps: Option<f64>,
    geometry: Option<serde_json::Value>,
    #[serde(default)]
    truth: Vec<RawTruth>,
    #[serde(default)]
    variant: Vec<RawVariant>,
}

/// The clip again, sampled at another rate or through an FFmpeg filter, scored on the same truth.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: Option<String>,
    fps: Option<f64>,
    filter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTruth {
    line: Option<String>,
    direction: Option<String>,
    class: Option<String>,
    count: Option<i64>,
    cumulative: Option<Vec<i64>>,
}

/// The `(id, index)` of each line of a geometry value, or why they cannot be read.
fn line_ids(geometry: &serde_json::Value) -> Result<Vec<(String, usize)>, Vec<String>> {
    let Some(object) = geometry.as_object() else {
        return Err(vec!["geometry must be a table".into()]);
    };
    let Some(lines) = object.get("lines") else {
        return Err(vec!["geometry has no lines".into()]);
    };
    let Some(lines) = lines.as_array() else {
        return Err(vec!["geometry.lines must be an array of tables".into()]);
    };
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        match line.get("id").and_then(|id| id.as_str()) {
            Some(id) => ids.push((id.to_owned(), n)),
            None => errors.push(format!("geometry.lines[{n}] has no string id")),
        }
    }
    if errors.is_empty() {
        Ok(ids)
    } else {
        Err(errors)
    }
}

impl RawManifest {
    fn validate(self) -> Result<Manifest, Vec<String>> {
        let mut errors = Vec::new();
        let segments = match self.segments {
            None => DEFAULT_SEGMENTS,
            Some(k) if (1..=MAX_SEGMENTS as i64).contains(&k) => k as usize,
            Some(k) => {
                errors.push(format!("segments = {k}: must be 1 to {MAX_SEGMENTS}"));
                DEFAULT_SEGMENTS
            }
        };
        if self.clip.is_empty() {
            errors.push("no [[clip]]".into());
        }
        let mut names = HashSet::new();
        let mut clips = Vec::new();
        for (c, raw) in self.clip.into_iter().enumerate() {
            let at = match &raw.name {
                Some(name) => format!("clip {} ({name:?})", c + 1),
                None => format!("clip {}", c + 1),
            };
            let mut problem = |text: String| errors.push(format!("{at}: {text}"));
            match &raw.name {
                None => problem("missing name".into()),
                Some(name) if name.trim().is_empty() => problem("empty name".into()),
                Some(name) if !names.insert(name.clone()) => problem("duplicate clip name".into()),
                Some(_) => {}
            }
            match &raw.video {
                None => problem("missing video".into()),
                Some(v) if v.trim().is_empty() => problem("empty video".into()),
                Some(v) if Path::new(v).is_absolute() => {
                    problem(format!("video {v:?} must be relative to the assets directory"))
                }
                Some(_) => {}
            }
            for (key, value) in [("fps", raw.fps), ("source_fps", raw.source_fps)] {
                if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
                    problem(format!("{key} = {v}: must be a positive number"));
                }
            }
            let ids = match &raw.geometry {
                None => {
                    problem("missing geometry".into());
                    None
                }
                Some(geometry) => match line_ids(geometry) {
                    Ok(ids) => {
                        let mut seen = HashSet::new();
                        for (id, n) in &ids {
                            if !seen.insert(id) {
                                problem(format!("geometry.lines[{n}]: duplicate line id {id:?}"));
                            }
                        }
                        Some(ids.into_iter().map(|(id, _)| id).collect::<Vec<_>>())
                    }
                    Err(messages) => {
                        messages.into_iter().for_each(&mut problem);
                        None
                    }
                },
            };
            if raw.truth.is_empty() {
                problem("no [[clip.truth]]".into());
            }
            let mut rows = HashSet::new();
            let mut truths = Vec::new();
            for (t, truth) in raw.truth.into_iter().enumerate() {
                let mut problem = |text: String| problem(format!("truth {}: {text}", t + 1));
                match (&truth.line, &ids) {
                    (None, _) => problem("missing line".into()),
                    (Some(line), Some(ids)) if !ids.contains(line) => problem(format!(
                        "line {line:?} is not in the clip's geometry (lines: {})",
                        if ids.is_empty() { "none".into() } else { ids.join(", ") }
                    )),
                    _ => {}
                }
                match truth.direction.as_deref() {
                    None => problem("missing direction".into()),
                    Some("in" | "out") => {}
                    Some(d) => problem(format!("direction {d:?}: must be \"in\" or \"out\"")),
                }
                if let Some(class) = &truth.class {
                    if !CLASSES.contains(&class.as_str()) {
                        problem(format!("class {class:?}: must be one of {}", CLASSES.join(", ")));
                    }
                }
                match truth.count {
                    None => problem("missing count".into()),
                    Some(n) if n < 0 => problem(format!("count = {n}: must not be negative")),
                    Some(_) => {}
                }
                if let Some(cumulative) = &truth.cumulative {
                    if cumulative.len() != segments {
                        problem(format!(
                            "cumulative has {} values, expected {segments} (one per segment)",
                            cumulative.len()
                        ));
                    }
                    if let Some(v) = cumulative.iter().find(|v| **v < 0) {
                        problem(format!("cumulative has a negative value ({v})"));
                    }
                    if let Some(i) = cumulative.windows(2).position(|w| w[1] < w[0]) {
                        problem(format!(
                            "cumulative decreases from segment {} to {} ({} -> {}): counts are cumulative",
                            i + 1,
                            i + 2,
                            cumulative[i],
                            cumulative[i + 1]
                        ));
                    }
                    if let (Some(last), Some(count)) = (cumulative.last(), truth.count) {
                        if *last != count {
                            problem(format!("cumulative ends at {last}, count is {count}: they must agree"));
                        }
                    }
                }
                let key = (truth.line.clone(), truth.direction.clone(), truth.class.clone());
                if truth.line.is_some() && truth.direction.is_some() && !rows.insert(key) {
                    problem("duplicate row (same line, direction and class)".into());
                }
                if let (Some(line), Some(direction), Some(count)) = (truth.line, truth.direction, truth.count) {
                    truths.push(TruthSpec {
                        line,
                        direction,
                        class: truth.class,
                        count: count.max(0) as u64,
                        cumulative: truth.cumulative.map(|c| c.into_iter().map(|v| v.max(0) as u64).collect()),
                    });
                }
            }
            let mut variant_names = HashSet::new();
            let mut variants = Vec::new();
            for (v, variant) in raw.variant.into_iter().enumerate() {
                let mut problem = |text: String| problem(format!("variant {}: {text}", v + 1));
                match &variant.name {
                    None => problem("missing name".into()),
                    Some(name) if name.trim().is_empty() || name.contains('/') => {
                        problem(format!("name {name:?}: must be non-empty, without '/'"))
                    }
                    Some(name) if !variant_names.insert(name.clone()) => problem(format!("duplicate variant {name:?}")),
                    Some(_) => {}
                }
                if let Some(fps) = variant.fps.filter(|v| !(v.is_finite() && *v > 0.0)) {
                    problem(format!("fps = {fps}: must be a positive number"));
                }
                match &variant.filter {
                    Some(f) if f.trim().is_empty() || f.chars().any(char::is_control) => {
                        problem("filter must be a non-empty FFmpeg filter graph on one line".into())
                    }
                    None if variant.fps.is_none() => problem("a variant needs fps, filter or both".into()),
                    _ => {}
                }
                if let Some(name) = variant.name {
                    variants.push((name, variant.fps, variant.filter));
                }
            }
            if let (Some(name), Some(video), Some(geometry)) = (raw.name, raw.video, raw.geometry) {
                let base = ClipSpec {
                    name,
                    video: video.into(),
                    filter: None,
                    fps: raw.fps,
                    source_fps: raw.source_fps,
                    geometry,
                    truths,
                    segments,
                };
                let variants: Vec<ClipSpec> = variants
                    .into_iter()
                    .map(|(variant, fps, filter)| ClipSpec {
                        name: format!("{}/{variant}", base.name),
                        fps: fps.or(base.fps),
                        filter,
                        ..base.clone()
                    })
                    .collect();
                clips.push(base);
                clips.extend(variants);
            }
        }
        if errors.is_empty() {
            Ok(Manifest { segments, clips })
        } else {
            Err(errors)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metric

/// One counted crossing, as the analysis run reported it (a `line_crossing` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedCrossing {
    /// Position of the frame among the run's processed frames, from 0 (the event's `frame_seq`).
    pub frame_seq: u64,
    pub line_id: String,
    /// "in" | "out".
    pub direction: String,
    /// "car", "truck", ...
    pub class: String,
}

/// The 0-based segment of frame `frame_seq` when `frames` frames are split into `k` equal
/// segments: `floor(frame_seq * k / frames)`. Frames at or past the end fall in the last segment.
pub fn segment_of(frame_seq: u64, frames: u64, k: usize) -> usize {
    if k <= 1 || frames == 0 {
        return k.saturating_sub(1);
    }
    let segment = (frame_seq as u128 * k as u128 / frames as u128) as usize;
    segment.min(k - 1)
}

/// The challenge's segment weights `w_i = i / sum_{j=1..k} j`, i = 1..k (they sum to 1).
pub fn segment_weights(k: usize) -> Vec<f64> {
    let total = (k * (k + 1) / 2) as f64;
    (1..=k).map(|i| i as f64 / total).collect()
}

/// Weighted RMSE between true and predicted cumulative counts (same length k).
pub fn wrmse(truth_cumulative: &[u64], predicted_cumulative: &[u64]) -> f64 {
    assert_eq!(truth_cumulative.len(), predicted_cumulative.len(), "cumulative counts of different lengths");
    let weights = segment_weights(truth_cumulative.len());
    let sum: f64 = weights
        .iter()
        .zip(truth_cumulative.iter().zip(predicted_cumulative))
        .map(|(w, (t, p))| w * (*p as f64 - *t as f64).powi(2))
        .sum();
    sum.sqrt()
}

/// `(nwRMSE, effectiveness)` of a row: `nwRMSE = wRMSE / max(truth, 1)` (a truth of 0 is
/// normalised by 1, see the module docs) and `effectiveness = max(0, 1 - nwRMSE)`.
pub fn normalise(wrmse: f64, truth: u64) -> (f64, f64) {
    let nwrmse = wrmse / truth.max(1) as f64;
    (nwrmse, (1.0 - nwrmse).max(0.0))
}

/// Efficiency `max(0, 1 - seconds_processed x BASE_FACTOR / (1.1 x video_seconds))`; 0 without
/// video time.
pub fn efficiency(seconds_processed: f64, video_seconds: f64) -> f64 {
    if video_seconds.is_nan() || video_seconds <= 0.0 || !seconds_processed.is_finite() {
        return 0.0;
    }
    (1.0 - seconds_processed.max(0.0) * BASE_FACTOR / (EFFICIENCY_TIME_MARGIN * video_seconds)).max(0.0)
}

/// `0.7 x effectiveness + 0.3 x efficiency`.
pub fn combined_score(effectiveness: f64, efficiency: f64) -> f64 {
    EFFECTIVENESS_WEIGHT * effectiveness + EFFICIENCY_WEIGHT * efficiency
}

/// A truth row scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TruthResult {
    pub line: String,
    pub direction: String,
    /// None: every vehicle class.
    pub class: Option<String>,
    pub truth: u64,
    pub predicted: u64,
    /// predicted - truth.
    pub error: i64,
    pub abs_error: u64,
    /// k when the truth has `cumulative`, else 1 (only the total is known).
    pub segments_used: usize,
    /// Per segment, `segments_used` values (the last is the total).
    pub truth_cumulative: Vec<u64>,
    pub predicted_cumulative: Vec<u64>,
    pub wrmse: f64,
    /// wRMSE / max(truth, 1).
    pub nwrmse: f64,
    /// max(0, 1 - nwRMSE).
    pub effectiveness: f64,
}

/// A clip scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipResult {
    pub name: String,
    pub video: String,
    /// Why the clip could not be run; its rows then score 0 and it has no timing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// k of the manifest.
    pub segments: usize,
    /// Frames processed.
    pub frames: u64,
    /// Crossings observed on any line (matched by a truth row or not).
    pub crossings: u64,
    pub seconds_processed: f64,
    pub video_seconds: f64,
    /// frames / seconds_processed.
    pub processing_fps: f64,
    /// video_seconds / seconds_processed: above 1 is faster than real time.
    pub realtime_factor: f64,
    /// This clip's own efficiency (see [`efficiency`]).
    pub efficiency: f64,
    /// Mean effectiveness of the clip's truth rows.
    pub effectiveness: f64,
    /// Share of the vehicles of the rows that name a class that were counted in their class: per
    /// line and direction, `sum over classes of min(predicted, truth)`, over the sum of the truths
    /// (None: no row names a class).
    pub class_accuracy: Option<f64>,
    pub truths: Vec<TruthResult>,
}

/// Scores one clip's run: its crossings against each truth row, and its timing.
///
/// `frames` is the number of frames the run processed (`frame_seq` runs from 0 to `frames - 1`;
/// with `fps` sampling the segments are still equal shares of the clip), `seconds_processed` the
/// run's wall time and `video_seconds` the clip's playing time ([`ClipSpec::video_seconds`]).
pub fn score_clip(
    clip: &ClipSpec,
    crossings: &[ObservedCrossing],
    frames: u64,
    seconds_processed: f64,
    video_seconds: f64,
) -> ClipResult {
    let k = clip.segments.max(1);
    let truths: Vec<TruthResult> = clip
        .truths
        .iter()
        .map(|truth| {
            let matched = crossings.iter().filter(|c| truth.matches(c));
            let (truth_cumulative, predicted_cumulative) = match &truth.cumulative {
                Some(cumulative) if cumulative.len() == k => {
                    let mut per_segment = vec![0u64; k];
                    for c in matched {
                        per_segment[segment_of(c.frame_seq, frames, k)] += 1;
                    }
                    let predicted: Vec<u64> = per_segment
                        .iter()
                        .scan(0u64, |sum, n| {
                            *sum += n;
                            Some(*sum)
                        })
                        .collect();
                    (cumulative.clone(), predicted)
                }
                // Only the total is known (a list of another length cannot pass validation).
                _ => (vec![truth.count], vec![matched.count() as u64]),
            };
            row(truth, truth_cumulative, predicted_cumulative)
        })
        .collect();
    let seconds = seconds_processed.max(0.0);
    ClipResult {
        name: clip.name.clone(),
        video: clip.video.display().to_string(),
        error: None,
        segments: k,
        frames,
        crossings: crossings.len() as u64,
        seconds_processed: seconds,
        video_seconds,
        processing_fps: if seconds > 0.0 { frames as f64 / seconds } else { 0.0 },
        realtime_factor: if seconds > 0.0 { video_seconds / seconds } else { 0.0 },
        efficiency: efficiency(seconds, video_seconds),
        effectiveness: mean_effectiveness(&truths),
        class_accuracy: class_accuracy(&truths),
        truths,
    }
}

/// See [`ClipResult::class_accuracy`]: rows of one line and direction that name a class split
/// the same vehicles, so each class is right for at most its true count.
pub fn class_accuracy(rows: &[TruthResult]) -> Option<f64> {
    let classed: Vec<&TruthResult> = rows.iter().filter(|r| r.class.is_some()).collect();
    let truth: u64 = classed.iter().map(|r| r.truth).sum();
    let right: u64 = classed.iter().map(|r| r.truth.min(r.predicted)).sum();
    (!classed.is_empty()).then(|| if truth == 0 { 1.0 } else { right as f64 / truth as f64 })
}

/// A clip that could not be run: every row predicted 0 and scored 0 (also rows with truth 0: a
/// failed run proves nothing), no timing; [`aggregate`] leaves it out of the efficiency.
pub fn score_failed(clip: &ClipSpec, error: impl Into<String>) -> ClipResult {
    let truths: Vec<TruthResult> = clip
        .truths
        .iter()
        .map(|truth| {
            let mut r = row(truth, vec![truth.count], vec![0]);
            r.effectiveness = 0.0;
            r
        })
        .collect();
    ClipResult {
        name: clip.name.clone(),
        video: clip.video.display().to_string(),
        error: Some(error.into()),
        segments: clip.segments.max(1),
        frames: 0,
        crossings: 0,
        seconds_processed: 0.0,
        video_seconds: 0.0,
        processing_fps: 0.0,
        realtime_factor: 0.0,
        efficiency: 0.0,
        effectiveness: 0.0,
        class_accuracy: class_accuracy(&truths),
        truths,
    }
}

fn row(truth: &TruthSpec, truth_cumulative: Vec<u64>, predicted_cumulative: Vec<u64>) -> TruthResult {
    let predicted = *predicted_cumulative.last().unwrap_or(&0);
    let wrmse = wrmse(&truth_cumulative, &predicted_cumulative);
    let (nwrmse, effectiveness) = normalise(wrmse, truth.count);
    let error = predicted as i64 - truth.count as i64;
    TruthResult {
        line: truth.line.clone(),
        direction: truth.direction.clone(),
        class: truth.class.clone(),
        truth: truth.count,
        predicted,
        error,
        abs_error: error.unsigned_abs(),
        segments_used: truth_cumulative.len(),
        truth_cumulative,
        predicted_cumulative,
        wrmse,
        nwrmse,
        effectiveness,
    }
}

fn mean_effectiveness(rows: &[TruthResult]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    rows.iter().map(|r| r.effectiveness).sum::<f64>() / rows.len() as f64
}

/// Everything together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aggregate {
    pub clips: usize,
    pub clips_failed: usize,
    pub truth_rows: usize,
    /// Mean effectiveness over all truth rows of all clips (the headline; 0 without rows).
    pub effectiveness: f64,
    /// The challenge's weighting: rows weighted by their true count (rows with truth 0 carry no
    /// weight; the plain mean when every truth is 0).
    pub effectiveness_count_weighted: f64,
    /// Mean |predicted - truth| over all truth rows.
    pub mean_abs_error: f64,
    /// Sums over truth rows (rows may overlap, e.g. a full-width line and its lanes).
    pub total_truth: u64,
    pub total_predicted: u64,
    /// Over the clips that ran.
    pub frames: u64,
    pub seconds_processed: f64,
    pub video_seconds: f64,
    pub processing_fps: f64,
    pub realtime_factor: f64,
    /// `max(0, 1 - total processing time x base_factor / (1.1 x total video time))`, clips that ran.
    pub efficiency: f64,
    /// Always [`BASE_FACTOR`] (1): no rescaling to a reference machine.
    pub base_factor: f64,
    /// `0.7 x effectiveness + 0.3 x efficiency`, as the challenge's S1.
    pub score: f64,
}

/// The report `evaluate` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluateReport {
    pub clips: Vec<ClipResult>,
    pub aggregate: Aggregate,
}

/// Combines the clips' results.
pub fn aggregate(results: &[ClipResult]) -> EvaluateReport {
    let rows: Vec<&TruthResult> = results.iter().flat_map(|c| &c.truths).collect();
    let n = rows.len();
    let effectiveness = if n == 0 { 0.0 } else { rows.iter().map(|r| r.effectiveness).sum::<f64>() / n as f64 };
    let total_truth: u64 = rows.iter().map(|r| r.truth).sum();
    let effectiveness_count_weighted = if total_truth == 0 {
        effectiveness
    } else {
        rows.iter().map(|r| r.truth as f64 * r.effectiveness).sum::<f64>() / total_truth as f64
    };
    let ran: Vec<&ClipResult> = results.iter().filter(|c| c.error.is_none()).collect();
    let frames: u64 = ran.iter().map(|c| c.frames).sum();
    let seconds: f64 = ran.iter().map(|c| c.seconds_processed).sum();
    let video_seconds: f64 = ran.iter().map(|c| c.video_seconds).sum();
    let efficiency = efficiency(seconds, video_seconds);
    EvaluateReport {
        clips: results.to_vec(),
        aggregate: Aggregate {
            clips: results.len(),
            clips_failed: results.len() - ran.len(),
            truth_rows: n,
            effectiveness,
            effectiveness_count_weighted,
            mean_abs_error: if n == 0 { 0.0 } else { rows.iter().map(|r| r.abs_error as f64).sum::<f64>() / n as f64 },
            total_truth,
            total_predicted: rows.iter().map(|r| r.predicted).sum(),
            frames,
            seconds_processed: seconds,
            video_seconds,
            processing_fps: if seconds > 0.0 { frames as f64 / seconds } else { 0.0 },
            realtime_factor: if seconds > 0.0 { video_seconds / seconds } else { 0.0 },
            efficiency,
            base_factor: BASE_FACTOR,
            score: combined_score(effectiveness, efficiency),
        },
    }
}

impl EvaluateReport {
    /// A plain-text table: per clip its timing and one line per truth row, then the aggregate.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for clip in &self.clips {
            let _ = write!(out, "{} ({})", clip.name, clip.video);
            match &clip.error {
                Some(error) => {
                    let _ = writeln!(out, ": FAILED: {error}");
                }
                None => {
                    let _ = writeln!(
                        out,
                        ": {} frames in {:.1} s, {:.1} frames/s, {:.2}x realtime, efficiency {:.3}",
                        clip.frames, clip.seconds_processed, clip.processing_fps, clip.realtime_factor, clip.efficiency
                    );
                }
            }
            let width = clip.truths.iter().map(|r| r.line.len()).max().unwrap_or(0).max(4);
            let _ = writeln!(
                out,
                "  {:<width$}  {:<3}  {:<10}  {:>6}  {:>6}  {:>5}  {:>5}  {:>4}  {:>7}  {:>7}",
                "line", "dir", "class", "truth", "pred", "err", "|err|", "segs", "nwRMSE", "effect."
            );
            for r in &clip.truths {
                let class = r.class.as_deref().unwrap_or("vehicles");
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:<3}  {:<10}  {:>6}  {:>6}  {:>+5}  {:>5}  {:>4}  {:>7.3}  {:>7.3}",
                    r.line,
                    r.direction,
                    class,
                    r.truth,
                    r.predicted,
                    r.error,
                    r.abs_error,
                    r.segments_used,
                    r.nwrmse,
                    r.effectiveness
                );
            }
            let _ = write!(out, "  clip effectiveness {:.3}", clip.effectiveness);
            if let Some(accuracy) = clip.class_accuracy {
                let _ = write!(out, ", class accuracy {:.1} %", accuracy * 100.0);
            }
            out.push('\n');
            out.push('\n');
        }
        let a = &self.aggregate;
        let _ = writeln!(
            out,
            "aggregate over {} clip(s) ({} failed), {} truth row(s):",
            a.clips, a.clips_failed, a.truth_rows
        );
        let _ = writeln!(
            out,
            "  effectiveness {:.3} (mean over rows; count-weighted as in AI City: {:.3})",
            a.effectiveness, a.effectiveness_count_weighted
        );
        let _ = writeln!(
            out,
            "  mean |error| {:.2}; truth {} vs predicted {} (sums over rows)",
            a.mean_abs_error, a.total_truth, a.total_predicted
        );
        let _ = writeln!(
            out,
            "  {} frames in {:.1} s ({:.1} frames/s) for {:.1} s of video: {:.2}x realtime",
            a.frames, a.seconds_processed, a.processing_fps, a.video_seconds, a.realtime_factor
        );
        let _ = writeln!(
            out,
            "  efficiency {:.3} (1 - time x {} / (1.1 x video time); base factor not calibrated: this machine only)",
            a.efficiency, a.base_factor
        );
        let _ = writeln!(out, "  score S = 0.7 x {:.3} + 0.3 x {:.3} = {:.3}", a.effectiveness, a.efficiency, a.score);
        out
    }
}

/// A short label of a truth row, for messages: `y150 in (vehicles)`.
pub fn truth_label(truth: &TruthSpec) -> String {
    format!("{} {} ({})", truth.line, truth.direction, truth.class_label())
}

/// The file a variant is analysed from: `video` through `filter`, made once with the `ffmpeg`
/// command (every frame kept as it is timed, lossless FFV1 in Matroska) and kept in `cache` under
/// a name that hashes the source's path, size and modification time and the filter, so a changed
/// source or filter makes a new file. Written under a temporary name and renamed, so concurrent
/// runs never read half a file.
pub fn variant_file(video: &Path, filter: &str, cache: &Path) -> anyhow::Result<PathBuf> {
    use std::hash::{Hash, Hasher};

    let meta = std::fs::metadata(video).map_err(|e| anyhow::anyhow!("{}: {e}", video.display()))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (video.canonicalize().unwrap_or_else(|_| video.to_path_buf()), meta.len(), meta.modified().ok(), filter)
        .hash(&mut hasher);
    let stem = video.file_stem().and_then(|s| s.to_str()).unwrap_or("clip");
    let target = cache.join(format!("{stem}-{:016x}.mkv", hasher.finish()));
    if target.is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(cache).map_err(|e| anyhow::anyhow!("{}: {e}", cache.display()))?;
    let partial = cache.join(format!(".{stem}-{}-{:?}.partial.mkv", std::process::id(), std::thread::current().id()));
    let output = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(video)
        .args(["-vf", filter, "-fps_mode", "passthrough", "-an", "-c:v", "ffv1"])
        .arg(&partial)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run ffmpeg to make the variant {filter:?}: {e} (install FFmpeg)"))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        anyhow::bail!("ffmpeg -vf {filter:?} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    std::fs::rename(&partial, &target).map_err(|e| anyhow::anyhow!("{}: {e}", target.display()))?;
    Ok(target)
}

/// Where `evaluate` keeps the variants it made: `ITS_EVALUATE_CACHE`, else a directory in the
/// system's temporary directory.
pub fn variant_cache() -> PathBuf {
    std::env::var_os("ITS_EVALUATE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("its-analytics-variants"))
}

/// Runs every clip of the manifest through the offline analysis (the live code path) and scores
/// it. Every clip's geometry is checked before the first runs, so a typo fails fast; a clip
/// whose run fails scores zero and the others still run.
pub async fn run(
    settings: &crate::settings::Settings,
    manifest: &Path,
    assets: &Path,
) -> anyhow::Result<EvaluateReport> {
    use crate::analytics::geometry::Geometry;
    use crate::events::EventDetail;

    let manifest = load_manifest(manifest)?;
    let mut geometries = Vec::new();
    let mut problems = Vec::new();
    for clip in &manifest.clips {
        match serde_json::from_value::<Geometry>(clip.geometry.clone()) {
            Ok(geometry) => {
                problems
                    .extend(geometry.validate().into_iter().map(|e| format!("clip {:?}: geometry: {e}", clip.name)));
                geometries.push(geometry);
            }
            Err(e) => problems.push(format!("clip {:?}: geometry: {e}", clip.name)),
        }
        if !clip.video_path(assets).is_file() {
            problems.push(format!("clip {:?}: {} not found", clip.name, clip.video_path(assets).display()));
        }
    }
    anyhow::ensure!(problems.is_empty(), "invalid manifest:\n  - {}", problems.join("\n  - "));

    let mut results = Vec::new();
    for (clip, geometry) in manifest.clips.iter().zip(geometries) {
        let mode = crate::topology::CameraMode::Offline;
        let video = match &clip.filter {
            None => Ok(clip.video_path(assets)),
            Some(filter) => {
                let (source, filter, cache) = (clip.video_path(assets), filter.clone(), variant_cache());
                tokio::task::spawn_blocking(move || variant_file(&source, &filter, &cache))
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("variant maker panicked: {e}")))
            }
        };
        let run = match video {
            Ok(video) => crate::analyze::analyze(settings, &video, geometry, clip.fps, mode).await,
            Err(error) => Err(error),
        };
        match run {
            Ok(run) => {
                let crossings: Vec<ObservedCrossing> = run
                    .events
                    .iter()
                    .filter_map(|(event, _)| match &event.detail {
                        EventDetail::LineCrossing(c) => Some(ObservedCrossing {
                            frame_seq: event.frame_seq,
                            line_id: c.line_id.clone(),
                            direction: c.direction.as_str().to_string(),
                            class: c.class.as_str().to_string(),
                        }),
                        _ => None,
                    })
                    .collect();
                let r = &run.report;
                let video_seconds = clip.video_seconds(r.frames_decoded, r.media_seconds);
                results.push(score_clip(clip, &crossings, r.frames, r.seconds, video_seconds));
            }
            Err(error) => {
                tracing::error!(clip = %clip.name, %error, "clip failed");
                results.push(score_failed(clip, format!("{error:#}")));
            }
        }
    }
    Ok(aggregate(&results))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const EPS: f64 = 1e-12;

    fn crossing(frame_seq: u64, line: &str, direction: &str, class: &str) -> ObservedCrossing {
        ObservedCrossing { frame_seq, line_id: line.into(), direction: direction.into(), class: class.into() }
    }

    fn clip_with(truths: Vec<TruthSpec>, segments: usize) -> ClipSpec {
        ClipSpec {
            name: "c".into(),
            video: "video/c.avi".into(),
            filter: None,
            fps: None,
            source_fps: None,
            geometry: serde_json::json!({"lines": [{"id": "l", "a": [0, 10], "b": [100, 10]}]}),
            truths,
            segments,
        }
    }

    fn truth(count: u64, cumulative: Option<Vec<u64>>) -> TruthSpec {
        TruthSpec { line: "l".into(), direction: "in".into(), class: None, count, cumulative }
    }

    /// One crossing in each of 10 segments of 1000 frames (frames 50, 150, ..., 950).
    fn one_per_segment() -> Vec<ObservedCrossing> {
        (0..10).map(|i| crossing(i * 100 + 50, "l", "in", "car")).collect()
    }

    #[test]
    fn weights_are_the_challenges() {
        let w = segment_weights(10);
        // sum_{j=1..10} j = 55
        assert!((w[0] - 1.0 / 55.0).abs() < EPS);
        assert!((w[9] - 10.0 / 55.0).abs() < EPS);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < EPS);
        assert_eq!(segment_weights(1), vec![1.0]);
    }

    #[test]
    fn segments_split_frames_equally() {
        assert_eq!(segment_of(0, 1000, 10), 0);
        assert_eq!(segment_of(99, 1000, 10), 0);
        assert_eq!(segment_of(100, 1000, 10), 1);
        assert_eq!(segment_of(999, 1000, 10), 9);
        assert_eq!(segment_of(5000, 1000, 10), 9, "past the end: last segment");
        assert_eq!(segment_of(7, 0, 10), 9);
        assert_eq!(segment_of(7, 1000, 1), 0);
        // 1700 frames: segments of 170
        assert_eq!(segment_of(169, 1700, 10), 0);
        assert_eq!(segment_of(170, 1700, 10), 1);
    }

    #[test]
    fn perfect_prediction_scores_one() {
        let clip = clip_with(vec![truth(10, Some((1..=10).collect()))], 10);
        let r = score_clip(&clip, &one_per_segment(), 1000, 10.0, 40.0);
        let row = &r.truths[0];
        assert_eq!((row.truth, row.predicted, row.error, row.segments_used), (10, 10, 0, 10));
        assert_eq!(row.predicted_cumulative, (1..=10).collect::<Vec<u64>>());
        assert_eq!((row.wrmse, row.nwrmse, row.effectiveness), (0.0, 0.0, 1.0));
        assert_eq!(r.effectiveness, 1.0);
    }

    #[test]
    fn off_by_two_from_the_start() {
        // Two extra crossings in segment 1: every cumulative count is 2 too high.
        // wRMSE = sqrt(sum_i w_i * 2^2) = sqrt(4 * 1) = 2; nwRMSE = 2 / 10 = 0.2; effectiveness 0.8.
        let clip = clip_with(vec![truth(10, Some((1..=10).collect()))], 10);
        let mut crossings = one_per_segment();
        crossings.push(crossing(10, "l", "in", "truck"));
        crossings.push(crossing(20, "l", "in", "bus"));
        let row = &score_clip(&clip, &crossings, 1000, 1.0, 1.0).truths[0];
        assert_eq!((row.predicted, row.error, row.abs_error), (12, 2, 2));
        assert!((row.wrmse - 2.0).abs() < EPS);
        assert!((row.nwrmse - 0.2).abs() < EPS);
        assert!((row.effectiveness - 0.8).abs() < EPS);
    }

    #[test]
    fn off_by_two_from_segment_six() {
        // Truth: 2 per segment, 20 in all. Prediction misses both vehicles of segment 6, so the
        // cumulative counts are right in segments 1-5 and 2 short in segments 6-10.
        // wRMSE = sqrt((6 + 7 + 8 + 9 + 10) / 55 * 2^2) = sqrt(160 / 55) = sqrt(32 / 11)
        //       = 1.705605730844...; nwRMSE = that / 20 = 0.085280286542...;
        // effectiveness = 0.914719713457...
        let cumulative: Vec<u64> = (1..=10).map(|i| 2 * i).collect();
        let clip = clip_with(vec![truth(20, Some(cumulative))], 10);
        let crossings: Vec<ObservedCrossing> = (0..10u64)
            .filter(|i| *i != 5)
            .flat_map(|i| [crossing(i * 100 + 10, "l", "in", "car"), crossing(i * 100 + 90, "l", "in", "car")])
            .collect();
        let row = &score_clip(&clip, &crossings, 1000, 1.0, 1.0).truths[0];
        assert_eq!(row.predicted_cumulative, vec![2, 4, 6, 8, 10, 10, 12, 14, 16, 18]);
        assert_eq!(row.error, -2);
        let expected = (32.0f64 / 11.0).sqrt();
        assert!((row.wrmse - expected).abs() < EPS);
        assert!((row.wrmse - 1.705_605_730_844_8).abs() < 1e-12);
        assert!((row.nwrmse - 0.085_280_286_542_24).abs() < 1e-12);
        assert!((row.effectiveness - 0.914_719_713_457_76).abs() < 1e-12);
        // The same total error in segment 1 only would cost more: every segment is off.
        let early: Vec<ObservedCrossing> = crossings.iter().skip(2).cloned().collect();
        let early_row =
            &score_clip(&clip, &[early, vec![crossing(550, "l", "in", "car"); 2]].concat(), 1000, 1.0, 1.0).truths[0];
        assert_eq!(early_row.predicted_cumulative, vec![0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
        assert!(early_row.wrmse > row.wrmse);
    }

    #[test]
    fn single_segment_is_abs_error_over_truth() {
        let clip = clip_with(vec![truth(27, None)], 10);
        let crossings: Vec<ObservedCrossing> = (0..24).map(|i| crossing(i * 50, "l", "in", "car")).collect();
        let r = score_clip(&clip, &crossings, 1700, 1.0, 1.0);
        let row = &r.truths[0];
        assert_eq!(row.segments_used, 1);
        assert_eq!((row.truth_cumulative.clone(), row.predicted_cumulative.clone()), (vec![27], vec![24]));
        assert_eq!((row.error, row.abs_error), (-3, 3));
        assert!((row.wrmse - 3.0).abs() < EPS);
        assert!((row.nwrmse - 3.0 / 27.0).abs() < EPS);
        assert!((row.effectiveness - (1.0 - 3.0 / 27.0)).abs() < EPS);
    }

    #[test]
    fn effectiveness_is_clipped_at_zero() {
        let clip = clip_with(vec![truth(2, None)], 10);
        let crossings: Vec<ObservedCrossing> = (0..7).map(|i| crossing(i, "l", "in", "car")).collect();
        let row = &score_clip(&clip, &crossings, 100, 1.0, 1.0).truths[0];
        assert!((row.nwrmse - 2.5).abs() < EPS);
        assert_eq!(row.effectiveness, 0.0);
    }

    #[test]
    fn truth_zero_is_normalised_by_one() {
        let clip = clip_with(vec![truth(0, None)], 10);
        let none = score_clip(&clip, &[], 100, 1.0, 1.0);
        assert_eq!((none.truths[0].nwrmse, none.truths[0].effectiveness), (0.0, 1.0));
        let one = score_clip(&clip, &[crossing(5, "l", "in", "car")], 100, 1.0, 1.0);
        assert_eq!((one.truths[0].nwrmse, one.truths[0].effectiveness), (1.0, 0.0));
        // Over 10 segments, one false crossing in the last segment costs sqrt(10/55) = 0.4264...
        let mut zero10 = truth(0, Some(vec![0; 10]));
        zero10.line = "l".into();
        let clip10 = clip_with(vec![zero10], 10);
        let late = score_clip(&clip10, &[crossing(95, "l", "in", "car")], 100, 1.0, 1.0);
        assert!((late.truths[0].nwrmse - (10.0f64 / 55.0).sqrt()).abs() < EPS);
        assert!((late.truths[0].effectiveness - (1.0 - (10.0f64 / 55.0).sqrt())).abs() < EPS);
        // The challenge weighting gives a truth-0 row no weight.
        let report = aggregate(&[score_clip(&clip_with(vec![truth(0, None), truth(4, None)], 10), &[], 1, 1.0, 1.0)]);
        assert_eq!(report.aggregate.effectiveness, 0.5); // (1 + 0) / 2
        assert_eq!(report.aggregate.effectiveness_count_weighted, 0.0);
    }

    #[test]
    fn rows_match_line_direction_and_class() {
        let mut cars = truth(1, None);
        cars.class = Some("car".into());
        let mut out = truth(0, None);
        out.direction = "out".into();
        let clip = clip_with(vec![truth(3, None), cars, out], 10);
        let crossings = [
            crossing(1, "l", "in", "car"),
            crossing(2, "l", "in", "truck"),
            crossing(3, "l", "in", "person"),  // not a vehicle
            crossing(4, "l", "in", "bicycle"), // not a vehicle
            crossing(5, "other", "in", "car"), // another line
            crossing(6, "l", "out", "bus"),
        ];
        let r = score_clip(&clip, &crossings, 10, 1.0, 1.0);
        let predicted: Vec<u64> = r.truths.iter().map(|t| t.predicted).collect();
        assert_eq!(predicted, vec![2, 1, 1]);
        assert_eq!(r.crossings, 6);
    }

    #[test]
    fn timing_efficiency_and_score() {
        // 1700 frames in 10 s of a 56.67 s clip.
        let clip = clip_with(vec![truth(0, None)], 10);
        let r = score_clip(&clip, &[], 1700, 10.0, 1700.0 / 30.0);
        assert!((r.processing_fps - 170.0).abs() < EPS);
        assert!((r.realtime_factor - 1700.0 / 300.0).abs() < EPS);
        // 1 - 10 / (1.1 * 56.666...) = 1 - 10 / 62.333... = 0.839572192513...
        assert!((r.efficiency - (1.0 - 10.0 / (1.1 * 1700.0 / 30.0))).abs() < EPS);
        assert_eq!(efficiency(11.0, 10.0), 0.0); // 1 - 11/11
        assert_eq!(efficiency(30.0, 10.0), 0.0); // clipped
        assert_eq!(efficiency(1.0, 0.0), 0.0);
        let report = aggregate(&[r.clone(), score_failed(&clip, "cannot open")]);
        let a = &report.aggregate;
        assert_eq!((a.clips, a.clips_failed, a.truth_rows), (2, 1, 2));
        assert_eq!(a.effectiveness, 0.5); // 1 (ran, nothing crossed) and 0 (failed)
        assert!((a.efficiency - r.efficiency).abs() < EPS, "failed clips carry no timing");
        assert!((a.score - (0.7 * 0.5 + 0.3 * r.efficiency)).abs() < EPS);
        let table = report.table();
        assert!(table.contains("FAILED: cannot open"), "{table}");
        assert!(table.contains("score S = 0.7 x 0.500"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["aggregate"]["base_factor"], 1.0);
        assert!(json["clips"][0].get("error").is_none());
    }

    #[test]
    fn aggregate_over_rows() {
        let clip = clip_with(vec![truth(10, None), truth(30, None)], 10);
        let clip = ClipSpec {
            truths: vec![clip.truths[0].clone(), TruthSpec { direction: "out".into(), ..clip.truths[1].clone() }],
            ..clip
        };
        let crossings: Vec<ObservedCrossing> = (0..8)
            .map(|i| crossing(i, "l", "in", "car"))
            .chain((0..30).map(|i| crossing(i, "l", "out", "car")))
            .collect();
        let report = aggregate(&[score_clip(&clip, &crossings, 100, 1.0, 1.0)]);
        let a = &report.aggregate;
        // rows: 8 of 10 (effectiveness 0.8), 30 of 30 (1.0)
        assert!((a.effectiveness - 0.9).abs() < EPS);
        assert!((a.effectiveness_count_weighted - (10.0 * 0.8 + 30.0) / 40.0).abs() < EPS);
        assert_eq!((a.total_truth, a.total_predicted), (40, 38));
        assert!((a.mean_abs_error - 1.0).abs() < EPS);
    }

    const GOOD: &str = r#"
segments = 4

[[clip]]
name = "a"
video = "video/a.avi"
fps = 10
geometry = { lines = [{ id = "l1", a = [0, 10], b = [100, 10] }, { id = "l2", a = [0, 20], b = [100, 20] }] }

[[clip.truth]]
line = "l1"
direction = "in"
count = 4
cumulative = [1, 2, 3, 4]

[[clip.truth]]
line = "l2"
direction = "out"
class = "truck"
count = 0
"#;

    #[test]
    fn manifest_parses() {
        let m = parse_manifest(GOOD).unwrap();
        assert_eq!(m.segments, 4);
        let clip = &m.clips[0];
        assert_eq!((clip.name.as_str(), clip.fps, clip.segments), ("a", Some(10.0), 4));
        assert_eq!(clip.video_path(Path::new("/assets")), Path::new("/assets/video/a.avi"));
        assert_eq!(clip.line_ids(), vec!["l1", "l2"]);
        assert_eq!(clip.geometry["lines"][1]["b"], serde_json::json!([100, 20]));
        assert_eq!(
            clip.truths[0],
            TruthSpec {
                line: "l1".into(),
                direction: "in".into(),
                class: None,
                count: 4,
                cumulative: Some(vec![1, 2, 3, 4]),
            }
        );
        assert_eq!(clip.truths[1].class.as_deref(), Some("truck"));
        assert_eq!(truth_label(&clip.truths[1]), "l2 out (truck)");
        // segments defaults to 10
        let m = parse_manifest(&GOOD.replace("segments = 4", "").replace("cumulative = [1, 2, 3, 4]", "")).unwrap();
        assert_eq!((m.segments, m.clips[0].segments), (10, 10));
    }

    #[test]
    fn variants_are_the_clip_again_on_the_same_truth() {
        let text = format!(
            "{GOOD}\n[[clip.variant]]\nname = \"5fps\"\nfps = 5\n\n\
             [[clip.variant]]\nname = \"dark\"\nfilter = \"eq=gamma=0.5\"\n"
        );
        let m = parse_manifest(&text).unwrap();
        let names: Vec<&str> = m.clips.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "a/5fps", "a/dark"]);
        assert_eq!((m.clips[1].fps, m.clips[1].filter.as_deref()), (Some(5.0), None));
        assert_eq!((m.clips[2].fps, m.clips[2].filter.as_deref()), (Some(10.0), Some("eq=gamma=0.5")), "fps inherited");
        assert_eq!(m.clips[2].truths, m.clips[0].truths);

        let bad = format!(
            "{GOOD}\n[[clip.variant]]\nname = \"a/b\"\nfps = -1\n\n[[clip.variant]]\nname = \"x\"\n\n\
             [[clip.variant]]\nname = \"x\"\nfilter = \"\"\n"
        );
        let Err(ManifestError::Invalid(errors)) = parse_manifest(&bad) else { panic!("expected invalid") };
        assert_eq!(
            errors,
            [
                r#"clip 1 ("a"): variant 1: name "a/b": must be non-empty, without '/'"#,
                r#"clip 1 ("a"): variant 1: fps = -1: must be a positive number"#,
                r#"clip 1 ("a"): variant 2: a variant needs fps, filter or both"#,
                r#"clip 1 ("a"): variant 3: duplicate variant "x""#,
                r#"clip 1 ("a"): variant 3: filter must be a non-empty FFmpeg filter graph on one line"#,
            ]
        );
    }

    #[test]
    fn class_accuracy_counts_each_class_right_up_to_its_truth() {
        let class_row = |direction: &str, class: &str, count| TruthSpec {
            line: "l".into(),
            direction: direction.into(),
            class: Some(class.into()),
            count,
            cumulative: None,
        };
        let clip = clip_with(
            vec![truth(10, None), class_row("in", "car", 7), class_row("in", "van", 2), class_row("in", "truck", 1)],
            10,
        );
        // 10 vehicles: 8 called car (one van among them), 1 van, 1 bus (the truck).
        let crossings: Vec<ObservedCrossing> = (0..8)
            .map(|i| crossing(i, "l", "in", "car"))
            .chain([crossing(8, "l", "in", "van"), crossing(9, "l", "in", "bus")])
            .collect();
        let r = score_clip(&clip, &crossings, 10, 1.0, 1.0);
        // car min(8, 7) + van min(1, 2) + truck min(0, 1) = 8 of 10.
        assert_eq!(r.class_accuracy, Some(0.8));
        assert_eq!(r.truths[0].predicted, 10, "vans and buses are vehicles");
        let unclassed = score_clip(&clip_with(vec![truth(1, None)], 10), &[], 1, 1.0, 1.0);
        assert_eq!(unclassed.class_accuracy, None, "no row names a class");
        assert!(aggregate(&[r]).table().contains("class accuracy 80.0 %"));
    }

    #[test]
    fn manifest_reports_every_problem_at_once() {
        let text = r#"
segments = 3

[[clip]]
name = "a"
video = "video/a.avi"
geometry = { lines = [{ id = "l1", a = [0, 10], b = [100, 10] }] }

[[clip.truth]]
line = "nope"
direction = "in"
count = -2

[[clip.truth]]
line = "l1"
direction = "up"
count = 5
cumulative = [1, 2, 3, 5]

[[clip.truth]]
direction = "in"
cumulative = [3, 2, 9]
count = 8

[[clip]]
name = "a"
fps = 0
geometry = { lines = [{ id = "x", a = [0, 0], b = [1, 1] }, { id = "x", a = [0, 1], b = [1, 2] }] }

[[clip.truth]]
line = "x"
direction = "in"
class = "tractor"
count = 1
"#;
        let Err(ManifestError::Invalid(errors)) = parse_manifest(text) else { panic!("expected invalid") };
        let all = errors.join("\n");
        let expected = [
            r#"clip 1 ("a"): truth 1: line "nope" is not in the clip's geometry (lines: l1)"#,
            r#"clip 1 ("a"): truth 1: count = -2: must not be negative"#,
            r#"clip 1 ("a"): truth 2: direction "up": must be "in" or "out""#,
            r#"clip 1 ("a"): truth 2: cumulative has 4 values, expected 3 (one per segment)"#,
            r#"clip 1 ("a"): truth 3: missing line"#,
            r#"clip 1 ("a"): truth 3: cumulative decreases from segment 1 to 2 (3 -> 2): counts are cumulative"#,
            r#"clip 1 ("a"): truth 3: cumulative ends at 9, count is 8: they must agree"#,
            r#"clip 2 ("a"): duplicate clip name"#,
            r#"clip 2 ("a"): missing video"#,
            r#"clip 2 ("a"): fps = 0: must be a positive number"#,
            r#"clip 2 ("a"): geometry.lines[1]: duplicate line id "x""#,
            concat!(
                r#"clip 2 ("a"): truth 1: class "tractor": "#,
                "must be one of car, van, motorcycle, bus, truck, bicycle, person"
            ),
        ];
        for e in expected {
            assert!(errors.iter().any(|x| x == e), "missing {e:?} in\n{all}");
        }
        assert_eq!(errors.len(), expected.len(), "{all}");
        let message = ManifestError::Invalid(errors).to_string();
        assert!(message.starts_with("12 problem(s) in the manifest:\n  clip 1"), "{message}");
    }

    #[test]
    fn manifest_missing_fields_and_structure() {
        let text = r#"
segments = 0
[[clip]]
geometry = { zones = [] }
[[clip.truth]]
line = "l"
"#;
        let Err(ManifestError::Invalid(errors)) = parse_manifest(text) else { panic!("expected invalid") };
        assert_eq!(
            errors,
            vec![
                "segments = 0: must be 1 to 1000",
                "clip 1: missing name",
                "clip 1: missing video",
                "clip 1: geometry has no lines",
                "clip 1: truth 1: missing direction",
                "clip 1: truth 1: missing count",
            ]
        );
        let Err(ManifestError::Invalid(errors)) = parse_manifest("segments = 5") else { panic!() };
        assert_eq!(errors, vec!["no [[clip]]"]);
        let Err(ManifestError::Invalid(errors)) =
            parse_manifest("[[clip]]\nname = \"a\"\nvideo = \"/abs.avi\"\ngeometry = { lines = [{ a = [0, 0] }] }")
        else {
            panic!()
        };
        assert_eq!(
            errors,
            vec![
                r#"clip 1 ("a"): video "/abs.avi" must be relative to the assets directory"#,
                r#"clip 1 ("a"): geometry.lines[0] has no string id"#,
                r#"clip 1 ("a"): no [[clip.truth]]"#,
            ]
        );
    }

    #[test]
    fn manifest_rejects_unknown_keys_and_bad_toml() {
        let Err(ManifestError::Parse(message)) =
            parse_manifest(&GOOD.replace("fps = 10", "fps = 10\nmax_class_count = 1"))
        else {
            panic!("expected a parse error")
        };
        assert!(message.contains("max_class_count"), "{message}");
        let Err(ManifestError::Parse(message)) = parse_manifest(&GOOD.replace("count = 4", "count = 4\ncnt = 4"))
        else {
            panic!("expected a parse error")
        };
        assert!(message.contains("cnt"), "{message}");
        assert!(matches!(parse_manifest("segments = ["), Err(ManifestError::Parse(_))));
        assert!(matches!(parse_manifest("segments = \"ten\""), Err(ManifestError::Parse(_))));
        let missing = load_manifest(Path::new("/nonexistent/manifest.toml")).unwrap_err();
        assert!(matches!(missing, ManifestError::Read { .. }), "{missing}");
    }

    /// The shape of a counting line in the geometry JSON (docs/ANALYTICS.md), mirrored here so
    /// this test does not depend on the analysis types.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct LineShape {
        id: String,
        #[serde(default)]
        name: String,
        a: [f64; 2],
        b: [f64; 2],
    }

    #[test]
    fn shipped_manifest_parses_and_its_truths_name_its_lines() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/evaluate/assets.toml");
        let manifest = load_manifest(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(manifest.segments, 10);
        assert!(!manifest.clips.is_empty());
        for clip in &manifest.clips {
            let ids = clip.line_ids();
            for t in &clip.truths {
                assert!(ids.contains(&t.line), "{}: {} not in {ids:?}", clip.name, truth_label(t));
            }
            let lines: Vec<LineShape> = serde_json::from_value(clip.geometry["lines"].clone())
                .unwrap_or_else(|e| panic!("{}: lines: {e}", clip.name));
            assert_eq!(lines.len(), ids.len());
            assert!(clip.video.is_relative());
        }
        let overpass = manifest.clips.iter().find(|c| c.name == "overpass_video03").expect("overpass clip");
        assert_eq!(overpass.video, Path::new("video/overpass_video03.avi"));
        assert_eq!(overpass.source_fps, Some(30.0));
        assert!((overpass.video_seconds(1700, 28.3) - 1700.0 / 30.0).abs() < EPS);
        let counts: BTreeMap<(String, String), u64> =
            overpass.truths.iter().map(|t| ((t.line.clone(), t.direction.clone()), t.count)).collect();
        let expected: BTreeMap<(String, String), u64> = [
            ("y150", "in", 27),
            ("y150", "out", 0),
            ("y200", "in", 27),
            ("y150-left", "in", 17),
            ("y150-right", "in", 10),
        ]
        .into_iter()
        .map(|(l, d, n)| ((l.to_owned(), d.to_owned()), n))
        .collect();
        assert_eq!(counts, expected);
        // The two lanes add up to the full line.
        assert_eq!(counts[&("y150-left".into(), "in".into())] + counts[&("y150-right".into(), "in".into())], 27);
        // A perfect run of that clip scores effectiveness 1.
        let crossings: Vec<ObservedCrossing> = (0..27u64)
            .flat_map(|i| {
                let lane = if i < 17 { "y150-left" } else { "y150-right" };
                [
                    crossing(i * 60, "y150", "in", "car"),
                    crossing(i * 60, lane, "in", "car"),
                    crossing(i * 60 + 20, "y200", "in", "car"),
                ]
            })
            .collect();
        let report = aggregate(&[score_clip(overpass, &crossings, 1700, 10.0, overpass.video_seconds(1700, 0.0))]);
        assert_eq!(report.aggregate.effectiveness, 1.0);
        assert!(report.table().contains("y150-right"));
    }
}
