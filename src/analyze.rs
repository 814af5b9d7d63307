//! Offline runs of the live code path: `analyze` counts a recorded clip, `bench` measures it.
//!
//! Both start the same pipeline as `serve` (device actor and inference thread, connector shard,
//! camera actor with its decode thread) with the camera in offline mode: frames are never dropped,
//! so a run is repeatable, and events go to memory instead of Redis and PostgreSQL.
//! `bench --cameras` (`cameras`) runs many live cameras at once, `bench --decode` (`decode`)
//! measures decoding alone, `bench --viewers` (`viewers`) what live viewers cost.

pub mod cameras;
#[cfg(feature = "ffmpeg")]
pub mod decode;
pub mod viewers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::actors::status::StreamState;
use crate::analytics::framing::{AutoCrop, Crop, CropRect};
use crate::analytics::geometry::Geometry;
use crate::analytics::lines::{LineCount, LineSpec};
use crate::analytics::measures::{IntervalMeasures, MeasuresView};
use crate::analytics::rollup::{roll_up, ElementSeries, Interval};
use crate::analytics::{AggregateRow, ElementKind};
use crate::camera_spec::{CameraSpec, ReplayOptions};
use crate::detector::config::ModelSettings;
use crate::detector::{Detector, Letterbox};
use crate::events::{Event, EventDetail};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::sinks::MemorySink;
use crate::topology::{CameraMode, Pipeline};

/// Parses `x1,y1,x2,y2` into a line named `line-{n}`.
pub fn parse_line(n: usize, text: &str) -> Result<LineSpec, String> {
    let values: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--line {text:?}: expected four numbers x1,y1,x2,y2"))?;
    let [x1, y1, x2, y2] = values[..] else {
        return Err(format!("--line {text:?}: expected four numbers x1,y1,x2,y2"));
    };
    let line = LineSpec { id: format!("line-{n}"), name: String::new(), a: [x1, y1], b: [x2, y2] };
    match line.validate().first() {
        Some(error) => Err(format!("--line {text:?}: {error}")),
        None => Ok(line),
    }
}

/// Parses `--crop`: `auto`, or `x,y,width,height` in source pixels (the geometry's `crop`).
pub fn parse_crop(text: &str) -> Result<Crop, String> {
    if text.trim() == "auto" {
        return Ok(Crop::Auto(AutoCrop::Auto));
    }
    let values: Result<Vec<f64>, _> = text.split(',').map(|v| v.trim().parse::<f64>()).collect();
    match values.as_deref() {
        Ok(&[x, y, width, height]) => Ok(Crop::Rect(CropRect { x, y, width, height })),
        _ => Err(format!("--crop {text:?}: expected auto or four numbers x,y,width,height")),
    }
}

/// Reads a geometry JSON file (the body of `PUT /api/v1/cameras/{id}/geometry`) and validates it.
pub fn read_geometry(path: &Path) -> anyhow::Result<Geometry> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let geometry: Geometry = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let errors = geometry.validate();
    anyhow::ensure!(errors.is_empty(), "{}: {}", path.display(), errors.join("; "));
    Ok(geometry)
}

#[derive(Debug, Serialize)]
pub struct AnalyzeReport {
    pub video: String,
    /// Frames processed (analysed), and decoded (all frames of the clip).
    pub frames: u64,
    pub frames_decoded: u64,
    /// Frame time the clip covers, in seconds (from the frame clock, not the container).
    pub media_seconds: f64,
    pub frames_dropped: u64,
    pub seconds: f64,
    pub fps: f64,
    pub lines: Vec<LineCount>,
    /// Every line, zone and lane: its measures over the whole clip and per minute of frame time.
    pub elements: Vec<ElementReport>,
    /// Incident events in order (opened, updated, closed).
    pub incidents: Vec<Event>,
}

#[derive(Debug, Serialize)]
pub struct ElementReport {
    pub id: String,
    pub kind: String,
    pub total: MeasuresView,
    pub minutes: Vec<crate::analytics::rollup::IntervalValue>,
}

/// Per-element totals and minutes from the minute rows of one run.
fn element_reports(rows: Vec<AggregateRow>) -> Vec<ElementReport> {
    let mut totals: Vec<(String, ElementKind, IntervalMeasures)> = Vec::new();
    for row in &rows {
        match totals.iter_mut().find(|(id, _, _)| *id == row.element_id) {
            Some((_, _, m)) => m.merge(&row.measures),
            None => totals.push((row.element_id.clone(), row.element_kind, row.measures.clone())),
        }
    }
    let stored = rows
        .into_iter()
        .map(|r| crate::analytics::rollup::StoredAggregate {
            interval_start: r.interval_start,
            geometry_version: r.geometry_version,
            element_id: r.element_id,
            element_kind: r.element_kind.as_str().to_string(),
            measures: r.measures,
        })
        .collect();
    let mut minutes: Vec<ElementSeries> = roll_up(stored, Interval::Minute);
    totals
        .into_iter()
        .map(|(id, kind, measures)| {
            let series =
                minutes.iter_mut().find(|s| s.id == id).map(|s| std::mem::take(&mut s.intervals)).unwrap_or_default();
            ElementReport { total: measures.view_kind(kind), id, kind: kind.as_str().to_string(), minutes: series }
        })
        .collect()
}

/// The pipeline of an offline run: events go to memory, and a supervisor that gives up
/// (escalation) ends the run through `escalation` instead of the process.
struct MemoryPipeline {
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    sink: Arc<MemorySink>,
    escalation: Arc<tokio::sync::Notify>,
}

impl MemoryPipeline {
    fn start(settings: &Settings) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let sink = Arc::new(MemorySink::default());
        let escalation = Arc::new(tokio::sync::Notify::new());
        let escalate = {
            let escalation = escalation.clone();
            Box::new(move |_: &str, _: &str| escalation.notify_one())
        };
        let pipeline = Pipeline::start(settings.clone(), metrics.clone(), sink.clone(), escalate)?;
        Ok(Self { pipeline, metrics, sink, escalation })
    }
}

pub struct AnalyzeRun {
    pub report: AnalyzeReport,
    /// Events with the instant each reached the sink.
    pub events: Vec<(Event, Instant)>,
    pub metrics: Arc<Metrics>,
    /// The camera's drift monitor at the end (`model.drift`; `None` when off).
    pub drift: Option<crate::detector::drift::DriftView>,
}

/// Analyses every frame of a clip (or `fps` of them per second) and returns the counts. In
/// `CameraMode::Live` the clip plays at its own rate like a live camera (frames may be dropped).
pub async fn analyze(
    settings: &Settings,
    video: &Path,
    geometry: Geometry,
    fps: Option<f64>,
    mode: CameraMode,
) -> anyhow::Result<AnalyzeRun> {
    let video: PathBuf = std::fs::canonicalize(video).map_err(|e| anyhow::anyhow!("{}: {e}", video.display()))?;
    let url = url::Url::from_file_path(&video).map_err(|_| anyhow::anyhow!("{}: not a file path", video.display()))?;
    let spec = CameraSpec {
        id: "clip".into(),
        name: video.display().to_string(),
        url: url.to_string(),
        // Without --fps every frame is analysed.
        fps: Some(fps.unwrap_or(120.0)),
        geometry,
        rtsp_transport: None,
        replay: (mode == CameraMode::Live).then_some(ReplayOptions { looping: false, ..ReplayOptions::default() }),
    };
    let errors = spec.validate(&crate::camera_spec::SourcePolicy::any_local_file());
    anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));

    let MemoryPipeline { pipeline, metrics, sink, escalation } = MemoryPipeline::start(settings)?;
    let started = Instant::now();
    // Frame times start at a whole minute, so the clip's minutes are its own.
    let epoch_ms = crate::actors::status::now_ms() / 60_000 * 60_000;
    let status = pipeline.start_camera(spec, mode, epoch_ms, 1).await?;
    tokio::select! {
        _ = status.wait_finished() => {}
        _ = escalation.notified() => {
            pipeline.shutdown().await;
            anyhow::bail!("{}: analysis stopped: {}", video.display(), pipeline.escalated().unwrap_or_default());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if status.state() == StreamState::Failed {
        anyhow::bail!("{}: {}", video.display(), status.last_error().unwrap_or_else(|| "cannot read".into()));
    }
    let view = status.view();
    let events = sink.take();
    let incidents = events
        .iter()
        .filter(|(e, _)| !matches!(e.detail, EventDetail::LineCrossing(_)))
        .map(|(e, _)| e.clone())
        .collect();
    let aggregates = sink.take_aggregates();
    // Every element sees every frame, so any one element's rows cover the clip.
    let media_seconds = aggregates
        .iter()
        .filter(|r| Some(&r.element_id) == aggregates.first().map(|f| &f.element_id))
        .map(|r| r.measures.seconds)
        .sum();
    let report = AnalyzeReport {
        video: video.display().to_string(),
        frames: view.frames_processed,
        frames_decoded: view.frames_decoded,
        media_seconds,
        frames_dropped: view.frames_dropped,
        seconds,
        fps: view.frames_processed as f64 / seconds.max(1e-9),
        lines: status.counts(),
        elements: element_reports(aggregates),
        incidents,
    };
    let drift = status.drift.view();
    pipeline.shutdown().await;
    Ok(AnalyzeRun { report, events, metrics, drift })
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub video: String,
    /// The model file and the backend that ran it.
    pub model: String,
    pub backend: String,
    pub device: String,
    pub threads: usize,
    /// Largest batch the pipeline can form for one offline camera (and the model-only batch).
    pub batch_size: usize,
    /// Frames per model call the pipeline actually made.
    pub mean_batch: f64,
    pub frames: u64,
    /// Offline run: every frame, as fast as the device takes them.
    pub pipeline_fps: f64,
    /// Mean of the two model-only measurements, before and after the pipeline run.
    pub model_only_fps: f64,
    pub model_only_fps_before: f64,
    pub model_only_fps_after: f64,
    /// pipeline / model-only: 1.0 means the pipeline costs nothing beyond the model.
    pub ratio: f64,
    /// The model as served before the ONNX Runtime backend, timed alike in the same run.
    pub reference: Option<ReferenceRun>,
    /// Mean milliseconds per kept frame (decode), per batch (inference), per frame (tracking).
    pub stage_ms: StageTimes,
    /// Offline latencies include the wait in the full queue (backpressure by design).
    pub offline_latency: Latency,
    /// The clip played at its own rate as a live camera: the latency an operator sees.
    pub live: LiveRun,
}

#[derive(Debug, Serialize)]
pub struct ReferenceRun {
    pub model: String,
    pub model_only_fps: f64,
    /// model_only_fps of the configured model / this one.
    pub speedup: f64,
}

#[derive(Debug, Serialize)]
pub struct StageTimes {
    pub decode_per_frame: f64,
    pub inference_per_batch: f64,
    pub inference_per_frame: f64,
    pub tracking_per_frame: f64,
}

/// Milliseconds from frame capture to the frame tracked and counted, and to each event emitted.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub frame_ms_p50: f64,
    pub frame_ms_p99: f64,
    pub events: usize,
    pub event_ms_p50: f64,
    pub event_ms_p99: f64,
}

#[derive(Debug, Serialize)]
pub struct LiveRun {
    pub source_fps: f64,
    pub frames: u64,
    pub frames_dropped: u64,
    pub latency: Latency,
}

impl Latency {
    fn of(run: &AnalyzeRun) -> Self {
        let frames = run.metrics.stages.frame_latency.sorted();
        let mut events: Vec<f64> = run
            .events
            .iter()
            .filter_map(|(e, at)| e.captured.map(|c| at.duration_since(c).as_secs_f64() * 1e3))
            .collect();
        events.sort_by(f64::total_cmp);
        Self {
            frame_ms_p50: percentile(&frames, 0.50),
            frame_ms_p99: percentile(&frames, 0.99),
            events: events.len(),
            event_ms_p50: percentile(&events, 0.50),
            event_ms_p99: percentile(&events, 0.99),
        }
    }
}

/// Runs the whole pipeline on a clip offline (throughput) and live at the clip's own rate
/// (latency), and in the same process the model alone with the same batch size and threads, and
/// the `reference` model alone (same input, same device, same threads) when one is given.
pub async fn bench(
    settings: &Settings,
    video: &Path,
    geometry: Geometry,
    reference: Option<&Path>,
) -> anyhow::Result<BenchReport> {
    let devices = crate::detector::model::select_devices(settings.device.kind, settings.model.backend());
    let first = *devices.map_err(anyhow::Error::msg)?.first().unwrap_or(&tch::Device::Cpu);
    let batch_size = settings.batching.max_batch_on(first).min(settings.batching.queue_per_camera).max(1);
    let reference_model = reference.map(|path| ModelSettings { path: path.to_path_buf(), ..settings.model.clone() });
    let letterbox = clip_letterbox(&settings.model, video);
    // This machine's speed drifts between runs; each model alone is measured before and after the
    // pipeline and averaged, so a drift does not land on one side of a ratio only.
    let reference_before = match &reference_model {
        Some(model) => Some(model_only_on_thread(settings, model, &letterbox, batch_size)?.0),
        None => None,
    };
    let (before, device) = model_only_on_thread(settings, &settings.model, &letterbox, batch_size)?;
    // `analyze` returns once its inference thread has ended, so it cannot slow the next timing.
    let run = analyze(settings, video, geometry.clone(), None, CameraMode::Offline).await?;
    let (after, _) = model_only_on_thread(settings, &settings.model, &letterbox, batch_size)?;
    let model_only_fps = (before + after) / 2.0;
    let reference = match (&reference_model, reference_before) {
        (Some(model), Some(first)) => {
            let fps = (first + model_only_on_thread(settings, model, &letterbox, batch_size)?.0) / 2.0;
            let model = model.path.display().to_string();
            Some(ReferenceRun { model, model_only_fps: fps, speedup: model_only_fps / fps })
        }
        _ => None,
    };
    let live = analyze(settings, video, geometry, None, CameraMode::Live).await?;

    let stages = &run.metrics.stages;
    let (decode_ms, _) = stages.decode.mean_ms();
    let (inference_ms, batches) = stages.inference.mean_ms();
    let (tracking_ms, _) = stages.tracking.mean_ms();
    let frames = run.report.frames;
    let mean_batch = frames as f64 / batches.max(1) as f64;
    Ok(BenchReport {
        video: run.report.video.clone(),
        model: settings.model.path.display().to_string(),
        backend: settings.model.backend().as_str().to_string(),
        device,
        threads: settings.device.cpu_threads_per_worker(),
        batch_size,
        mean_batch,
        frames,
        pipeline_fps: run.report.fps,
        model_only_fps,
        model_only_fps_before: before,
        model_only_fps_after: after,
        ratio: run.report.fps / model_only_fps,
        reference,
        stage_ms: StageTimes {
            decode_per_frame: decode_ms,
            inference_per_batch: inference_ms,
            inference_per_frame: inference_ms / mean_batch.max(1.0),
            tracking_per_frame: tracking_ms,
        },
        offline_latency: Latency::of(&run),
        live: LiveRun {
            source_fps: live.report.fps,
            frames: live.report.frames,
            frames_dropped: live.report.frames_dropped,
            latency: Latency::of(&live),
        },
    })
}

/// The model-only run on a thread of its own, set up like an inference thread (libtorch's
/// thread count is per thread).
fn model_only_on_thread(
    settings: &Settings,
    model: &ModelSettings,
    letterbox: &Letterbox,
    batch_size: usize,
) -> anyhow::Result<(f64, String)> {
    let (settings, model, letterbox) = (settings.clone(), model.clone(), *letterbox);
    std::thread::spawn(move || model_only(&settings, &model, &letterbox, batch_size, MODEL_ONLY_FRAMES))
        .join()
        .map_err(|_| anyhow::anyhow!("model-only run panicked"))?
}

/// Frames the model alone is timed on, per measurement.
const MODEL_ONLY_FRAMES: usize = 600;

/// Frames per second of the model alone: one batch of frames in the model layout prepared once,
/// then model calls only (input in, raw output back on the CPU, which also waits for a CUDA
/// device), no decode, no NMS.
fn model_only(
    settings: &Settings,
    model: &ModelSettings,
    letterbox: &Letterbox,
    batch_size: usize,
    frames: usize,
) -> anyhow::Result<(f64, String)> {
    let (detector, name) = load_for_timing(settings, model)?;
    Ok((time_batches(&detector, letterbox, batch_size, frames)?.0, name))
}

/// How the pipeline places `video`'s frames in the model input (the whole frame), so that the
/// model alone is timed on inputs of the same shape: the first video stream's size, a square
/// where it cannot be read.
fn clip_letterbox(model: &ModelSettings, video: &Path) -> Letterbox {
    let side = model.input_size;
    let (width, height) = video_size(video).unwrap_or((side, side));
    placement(model, width, height)
}

/// How the model places a whole `width` x `height` frame: with its overview when that is on.
fn placement(model: &ModelSettings, width: u32, height: u32) -> Letterbox {
    let letterbox = Letterbox::new(width, height, model.input_size);
    if model.overview {
        letterbox.with_overview()
    } else {
        letterbox
    }
}

#[cfg(feature = "ffmpeg")]
fn video_size(video: &Path) -> Option<(u32, u32)> {
    let input = ffmpeg_next::format::input(&video).ok()?;
    let stream = input.streams().best(ffmpeg_next::media::Type::Video)?;
    let context = ffmpeg_next::codec::context::Context::from_parameters(stream.parameters()).ok()?;
    let decoder = context.decoder().video().ok()?;
    Some((decoder.width(), decoder.height())).filter(|&(w, h)| w > 0 && h > 0)
}

#[cfg(not(feature = "ffmpeg"))]
fn video_size(_: &Path) -> Option<(u32, u32)> {
    None
}

/// The model on the first device its backend runs on, on a thread set up as an inference thread.
fn load_for_timing(settings: &Settings, model: &ModelSettings) -> anyhow::Result<(Detector, String)> {
    let devices = crate::detector::model::select_devices(settings.device.kind, model.backend());
    let device = devices.map_err(anyhow::Error::msg)?[0];
    crate::actors::gpu::worker::set_up_thread(device, settings.device.cpu_threads_per_worker());
    Ok((Detector::load(model, device)?, crate::detector::model::device_name(device)))
}

/// (frames/s, ms per batch) of `frames` frames in batches of `batch_size` grey frames placed by
/// `letterbox` (its main input, and its overview's when it has one), after one warm-up batch. The
/// decoder runs too, on output that holds nothing.
fn time_batches(
    detector: &Detector,
    letterbox: &Letterbox,
    batch_size: usize,
    frames: usize,
) -> anyhow::Result<(f64, f64)> {
    let grey = vec![crate::detector::input::PAD_VALUE; letterbox.input_len()];
    let batch = vec![(grey.as_slice(), *letterbox); batch_size];
    detector.detect(&batch)?; // warm-up, and the allocator's growth for this size
    let calls = frames.div_ceil(batch_size).max(1);
    let started = Instant::now();
    for _ in 0..calls {
        detector.detect(&batch)?;
    }
    let seconds = started.elapsed().max(Duration::from_nanos(1)).as_secs_f64();
    Ok(((calls * batch_size) as f64 / seconds, seconds * 1e3 / calls as f64))
}

/// `model-bench`: the model alone per batch size.
#[derive(Debug, Serialize)]
pub struct ModelBenchReport {
    pub device: String,
    pub model: String,
    pub batches: Vec<ModelBatchRun>,
}

#[derive(Debug, Serialize)]
pub struct ModelBatchRun {
    pub batch: usize,
    pub frames_per_s: f64,
    pub ms_per_batch: f64,
    /// Device memory NVML sees taken between a one-frame call and this batch's (libtorch's
    /// allocator keeps what it took, so sizes are measured in increasing order); `None` where NVML
    /// cannot be read (the CPU, no driver).
    pub memory_mib: Option<f64>,
    pub memory_per_frame_mib: Option<f64>,
}

/// The model alone on the first device for each batch size, in increasing order. No decoding: it
/// runs in a build without FFmpeg (the GPU check).
pub fn model_bench(settings: &Settings, batches: &[usize], frames: usize) -> anyhow::Result<ModelBenchReport> {
    const MIB: f64 = (1u64 << 20) as f64;
    let (detector, device) = load_for_timing(settings, &settings.model)?;
    let free = || crate::device_memory::free_bytes(&device, None);
    let side = settings.model.input_size;
    let letterbox = placement(&settings.model, side, side);
    time_batches(&detector, &letterbox, 1, 1)?;
    let base = free();
    let mut sizes: Vec<usize> = batches.iter().copied().filter(|&b| b > 0).collect();
    sizes.sort_unstable();
    let mut runs = Vec::new();
    for batch in sizes {
        let (frames_per_s, ms_per_batch) = time_batches(&detector, &letterbox, batch, frames)?;
        let memory_mib = base.zip(free()).map(|(base, now)| base.saturating_sub(now) as f64 / MIB);
        let memory_per_frame_mib = memory_mib.map(|m| m / batch as f64);
        runs.push(ModelBatchRun { batch, frames_per_s, ms_per_batch, memory_mib, memory_per_frame_mib });
    }
    Ok(ModelBenchReport { device, model: settings.model.path.display().to_string(), batches: runs })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_parse() {
        assert_eq!(parse_crop("auto"), Ok(Crop::Auto(AutoCrop::Auto)));
        let rect = CropRect { x: 10.0, y: 20.0, width: 640.0, height: 360.0 };
        assert_eq!(parse_crop("10, 20,640,360"), Ok(Crop::Rect(rect)));
        for bad in ["", "full", "1,2,3", "1,2,3,x"] {
            assert!(parse_crop(bad).unwrap_err().contains("expected auto or four numbers"), "{bad}");
        }
    }

    #[test]
    fn lines_parse_and_validate() {
        let l = parse_line(1, "0,150,320,150").unwrap();
        assert_eq!((l.id.as_str(), l.a, l.b), ("line-1", [0.0, 150.0], [320.0, 150.0]));
        assert!(parse_line(1, "0,150,320").is_err());
        assert!(parse_line(1, "a,b,c,d").is_err());
        assert!(parse_line(1, "5,5,5,5").unwrap_err().contains("zero-length"));
    }

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
