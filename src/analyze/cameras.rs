//! `bench --cameras N --fps F`: N live cameras in one pipeline with the real model, and the search
//! for the most cameras a node analyses at a rate without dropping a frame and with capture to
//! event p99 under 100 ms.
//!
//! Each camera replays the clip in real time and looping, from its own start frame (camera i of N
//! starts i/N of the way into the clip), so the cameras do not decode the same frames in step.
//! After a warm-up (left out), one window of `duration` is measured: frames analysed, frames
//! dropped (queue overflow and frames past `batching.frame_deadline_ms`), latency from capture
//! to frame tracked and to each event, the process' CPU time (`/proc/self/stat`) and resident
//! memory (`/proc/self/status`, after the cameras minus before them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{percentile, Latency};
use crate::actors::status::{CameraStatus, StreamState};
use crate::analytics::geometry::Geometry;
use crate::camera_spec::{CameraSpec, ReplayOptions, SourcePolicy};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::sinks::MemorySink;
use crate::topology::CameraMode;

/// The latency a trial must stay under, milliseconds (capture to event, p99).
pub const LATENCY_LIMIT_MS: f64 = 100.0;
/// Fewer events than this in a window make their p99 one outlier: the frames' p99 decides alone.
pub const MIN_EVENTS_FOR_P99: usize = 20;
/// A trial that analyses less than this share of N x F frames/s fell behind (its decoders or
/// pacing could not keep up), even without a frame dropped.
pub const KEEP_UP_SHARE: f64 = 0.95;
/// The largest N the search tries.
pub const MAX_CAMERAS: usize = 256;

#[derive(Debug, Clone)]
pub struct TrialOptions {
    pub cameras: usize,
    /// Frames per second analysed per camera.
    pub fps: f64,
    /// Measured window, after the warm-up.
    pub duration: Duration,
    pub warm_up: Duration,
    /// A clip's path, or a camera URL (`file://`, `rtsp://`, ...); files loop from their own
    /// start frame per camera.
    pub source: String,
    pub geometry: Geometry,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrialReport {
    pub cameras: usize,
    /// Requested frames/s per camera.
    pub fps: f64,
    pub seconds: f64,
    /// Frames analysed in the window, in all and per second (in all and per camera).
    pub frames: u64,
    pub frames_per_s: f64,
    pub frames_per_s_per_camera: f64,
    pub frames_dropped: u64,
    /// Capture to frame tracked, and capture to event (line crossings and incidents).
    pub latency: Latency,
    /// Process CPU seconds per second of the window, in all (cores busy) and per camera.
    pub cpu_cores: f64,
    pub cpu_per_camera: f64,
    /// Resident memory before the cameras (pipeline and model loaded) and at the end, MiB.
    pub rss_mib_before: f64,
    pub rss_mib_after: f64,
    pub rss_mib_per_camera: f64,
    /// Cameras that failed or ended in the window (their last error).
    pub camera_errors: Vec<String>,
    /// Why the trial fails the limits; empty when it passes.
    pub failures: Vec<String>,
    /// Which latency judged the trial: `event` (capture to event p99, with enough events) or
    /// `frame` (capture to frame tracked p99, too few events).
    pub judged_on: &'static str,
}

impl TrialReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Why a trial fails: drops, failed cameras, falling behind, or a p99 at or over the limit (the
/// frames' p99 always; the events' p99 too once there are `MIN_EVENTS_FOR_P99` of them).
/// Returns the reasons and the latency that judged it.
pub fn judge(report: &TrialReport) -> (Vec<String>, &'static str) {
    let mut failures = Vec::new();
    if report.frames_dropped > 0 {
        failures.push(format!("{} frames dropped", report.frames_dropped));
    }
    if !report.camera_errors.is_empty() {
        failures.push(format!("{} cameras failed", report.camera_errors.len()));
    }
    let expected = report.cameras as f64 * report.fps;
    if report.frames_per_s < KEEP_UP_SHARE * expected {
        failures.push(format!("{:.1} of {expected:.1} frames/s analysed", report.frames_per_s));
    }
    let l = &report.latency;
    if l.frame_ms_p99 >= LATENCY_LIMIT_MS {
        failures.push(format!("capture to frame tracked p99 {:.1} ms", l.frame_ms_p99));
    }
    let judged_on = if l.events >= MIN_EVENTS_FOR_P99 { "event" } else { "frame" };
    if judged_on == "event" && l.event_ms_p99 >= LATENCY_LIMIT_MS {
        failures.push(format!("capture to event p99 {:.1} ms", l.event_ms_p99));
    }
    (failures, judged_on)
}

/// The search for the largest passing N: 1, then doubling while trials pass (up to `cap`), then
/// bisecting between the largest pass and the smallest failure. Pure: feed it each outcome.
#[derive(Debug, Clone)]
pub struct MaxSearch {
    cap: usize,
    best: usize,
    failed_at: Option<usize>,
    next: Option<usize>,
}

impl MaxSearch {
    pub fn new(cap: usize) -> Self {
        Self { cap: cap.max(1), best: 0, failed_at: None, next: Some(1) }
    }

    /// The next N to try; `None` when the search is over.
    pub fn next(&self) -> Option<usize> {
        self.next
    }

    /// Records the outcome of the trial with `n` cameras (the one `next` gave).
    pub fn record(&mut self, n: usize, passed: bool) {
        if passed {
            self.best = self.best.max(n);
        } else {
            self.failed_at = Some(self.failed_at.map_or(n, |f| f.min(n)));
        }
        self.next = match self.failed_at {
            None if self.best >= self.cap => None,
            None => Some((self.best * 2).min(self.cap)),
            Some(failed) => Some((self.best + failed) / 2).filter(|&mid| mid > self.best),
        };
    }

    /// The largest N that passed (0: not even one camera).
    pub fn result(&self) -> usize {
        self.best
    }
}

/// Runs one trial: `options.cameras` live cameras in one pipeline.
pub async fn trial(settings: &Settings, options: &TrialOptions) -> anyhow::Result<TrialReport> {
    anyhow::ensure!((1..=MAX_CAMERAS).contains(&options.cameras), "--cameras must be in 1..={MAX_CAMERAS}");
    anyhow::ensure!(options.fps > 0.0 && options.fps <= 120.0, "--fps must be in (0, 120]");
    anyhow::ensure!(options.duration >= Duration::from_secs(1), "--duration-s must be at least 1");
    let url = source_url(&options.source)?;
    let spec = |i: usize, start_frame: u64, is_file: bool| CameraSpec {
        id: format!("bench-{i:03}"),
        name: String::new(),
        url: url.clone(),
        fps: Some(options.fps),
        geometry: options.geometry.clone(),
        rtsp_transport: None,
        replay: is_file.then_some(ReplayOptions { looping: true, realtime: true, start_frame }),
    };
    let is_file = url.starts_with("file://");
    // Decoded frames of the clip, to spread the start frames (a file's packet count is close to
    // its frame count; nine tenths of it stay clear of its end).
    let clip_frames = if is_file { video_packets(&options.source).unwrap_or(0) * 9 / 10 } else { 0 };
    let policy = SourcePolicy::any_local_file();
    let specs: Vec<CameraSpec> =
        (0..options.cameras).map(|i| spec(i, (i as u64 * clip_frames) / options.cameras as u64, is_file)).collect();
    for s in &specs {
        let errors = s.validate(&policy);
        anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
    }

    let super::MemoryPipeline { pipeline, metrics, sink, escalation } = super::MemoryPipeline::start(settings)?;
    let rss_before = rss_mib();
    let epoch_ms = crate::actors::status::now_ms() / 60_000 * 60_000;
    let mut statuses = Vec::with_capacity(specs.len());
    for s in specs {
        match pipeline.start_camera(s, CameraMode::Live, epoch_ms, 1).await {
            Ok(status) => statuses.push(status),
            Err(e) => {
                pipeline.shutdown().await;
                anyhow::bail!("cannot start a camera: {e}");
            }
        }
    }
    let measured = tokio::select! {
        m = measure(&statuses, &metrics, &sink, options) => Ok(m),
        _ = escalation.notified() => Err(pipeline.escalated().unwrap_or_default()),
    };
    let rss_after = rss_mib();
    pipeline.shutdown().await;
    let window = measured.map_err(|e| anyhow::anyhow!("the pipeline stopped: {e}"))?;

    let n = options.cameras as f64;
    let mut report = TrialReport {
        cameras: options.cameras,
        fps: options.fps,
        seconds: window.seconds,
        frames: window.frames,
        frames_per_s: window.frames as f64 / window.seconds,
        frames_per_s_per_camera: window.frames as f64 / window.seconds / n,
        frames_dropped: window.dropped,
        latency: window.latency,
        cpu_cores: window.cpu_seconds / window.seconds,
        cpu_per_camera: window.cpu_seconds / window.seconds / n,
        rss_mib_before: rss_before,
        rss_mib_after: rss_after,
        rss_mib_per_camera: (rss_after - rss_before).max(0.0) / n,
        camera_errors: window.errors,
        failures: Vec::new(),
        judged_on: "frame",
    };
    (report.failures, report.judged_on) = judge(&report);
    Ok(report)
}

struct Window {
    seconds: f64,
    frames: u64,
    dropped: u64,
    latency: Latency,
    cpu_seconds: f64,
    errors: Vec<String>,
}

/// Waits out the warm-up, then measures one window.
async fn measure(
    statuses: &[Arc<CameraStatus>],
    metrics: &Metrics,
    sink: &MemorySink,
    options: &TrialOptions,
) -> Window {
    let counts = |statuses: &[Arc<CameraStatus>]| {
        statuses.iter().map(|s| s.view()).fold((0, 0), |(f, d), v| (f + v.frames_processed, d + v.frames_dropped))
    };
    tokio::time::sleep(options.warm_up).await;
    // Everything before this point is warm-up.
    let _ = metrics.stages.frame_latency.take_sorted();
    let _ = sink.take();
    let (frames_0, dropped_0) = counts(statuses);
    let (cpu_0, started) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(options.duration).await;
    let (frames_1, dropped_1) = counts(statuses);
    let (cpu_1, seconds) = (cpu_seconds(), started.elapsed().as_secs_f64());
    let frames_ms = metrics.stages.frame_latency.take_sorted();
    let mut events: Vec<f64> =
        sink.take().iter().filter_map(|(e, at)| e.captured.map(|c| at.duration_since(c).as_secs_f64() * 1e3)).collect();
    events.sort_by(f64::total_cmp);
    let errors = statuses
        .iter()
        .map(|s| s.view())
        .filter(|v| matches!(v.state, StreamState::Failed | StreamState::Ended | StreamState::BackingOff))
        .map(|v| v.last_error.unwrap_or_else(|| format!("{:?}", v.state)))
        .collect();
    Window {
        seconds,
        frames: frames_1 - frames_0,
        dropped: dropped_1 - dropped_0,
        latency: Latency {
            frame_ms_p50: percentile(&frames_ms, 0.50),
            frame_ms_p99: percentile(&frames_ms, 0.99),
            events: events.len(),
            event_ms_p50: percentile(&events, 0.50),
            event_ms_p99: percentile(&events, 0.99),
        },
        cpu_seconds: cpu_1 - cpu_0,
        errors,
    }
}

/// The rates of `bench --cameras max` and, per rate, the largest N and its trial.
#[derive(Debug, Serialize)]
pub struct MaxReport {
    pub source: String,
    pub device: String,
    pub latency_limit_ms: f64,
    pub trial_seconds: f64,
    pub rates: Vec<RateResult>,
}

#[derive(Debug, Serialize)]
pub struct RateResult {
    pub fps: f64,
    pub max_cameras: usize,
    /// The trial at `max_cameras` (none when even one camera failed).
    pub at_max: Option<TrialReport>,
    /// Every trial of the search: cameras and what failed.
    pub trials: Vec<(usize, Vec<String>)>,
}

/// For each rate, the largest N whose trial passes (`MaxSearch`), with progress on stderr.
pub async fn max_cameras(
    settings: &Settings,
    rates: &[f64],
    base: &TrialOptions,
    cap: usize,
) -> anyhow::Result<MaxReport> {
    let mut results = Vec::new();
    for &fps in rates {
        let mut search = MaxSearch::new(cap.min(MAX_CAMERAS));
        let (mut at_max, mut trials) = (None, Vec::new());
        while let Some(n) = search.next() {
            let options = TrialOptions { cameras: n, fps, ..base.clone() };
            let report = trial(settings, &options).await?;
            eprintln!(
                "{fps} frames/s x {n} cameras: {} ({:.1} frames/s, {} dropped, frame p99 {:.1} ms, event p99 {:.1} ms \
                 over {} events, {:.2} cores)",
                if report.passed() { "pass".to_string() } else { format!("FAIL: {}", report.failures.join(", ")) },
                report.frames_per_s,
                report.frames_dropped,
                report.latency.frame_ms_p99,
                report.latency.event_ms_p99,
                report.latency.events,
                report.cpu_cores,
            );
            search.record(n, report.passed());
            trials.push((n, report.failures.clone()));
            if report.passed() && n == search.result() {
                at_max = Some(report);
            }
        }
        results.push(RateResult { fps, max_cameras: search.result(), at_max, trials });
    }
    Ok(MaxReport {
        source: base.source.clone(),
        device: devices_text(settings),
        latency_limit_ms: LATENCY_LIMIT_MS,
        trial_seconds: base.duration.as_secs_f64(),
        rates: results,
    })
}

/// A path becomes a `file://` URL of its real path; a URL stays as it is.
pub fn source_url(source: &str) -> anyhow::Result<String> {
    if source.contains("://") {
        return Ok(source.to_string());
    }
    let path = std::fs::canonicalize(source).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let url = url::Url::from_file_path(&path).map_err(|_| anyhow::anyhow!("{source}: not a file path"))?;
    Ok(url.to_string())
}

/// Packets of a file's video stream (read, not decoded).
#[cfg(feature = "ffmpeg")]
fn video_packets(source: &str) -> Option<u64> {
    let path = url::Url::parse(source).ok().and_then(|u| u.to_file_path().ok());
    let path = path.unwrap_or_else(|| std::path::PathBuf::from(source));
    let mut input = ffmpeg_next::format::input(&path).ok()?;
    let index = input.streams().best(ffmpeg_next::media::Type::Video)?.index();
    Some(input.packets().filter(|(stream, _)| stream.index() == index).count() as u64)
}

/// A build without FFmpeg plays no files.
#[cfg(not(feature = "ffmpeg"))]
fn video_packets(_: &str) -> Option<u64> {
    None
}

/// User plus system CPU seconds of this process (`/proc/self/stat`, in USER_HZ = 100 ticks).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of this process, MiB (`VmRSS` of `/proc/self/status`).
pub fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The inference devices, their backend and threads, e.g. `cpu:0,cpu:1 (onnxruntime, 1 thread each)`.
fn devices_text(settings: &Settings) -> String {
    let (device, model) = (&settings.device, &settings.model);
    let names = crate::detector::model::inference_devices(device.kind, model.backend(), device.cpu_workers)
        .map(|d| d.into_iter().map(|(_, name)| name).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    format!("{names} ({}, {} threads each)", model.backend().as_str(), device.cpu_threads_per_worker())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a node that passes up to `limit` cameras; the Ns tried.
    fn search(cap: usize, limit: usize) -> (usize, Vec<usize>) {
        let mut s = MaxSearch::new(cap);
        let mut tried = Vec::new();
        while let Some(n) = s.next() {
            assert!(tried.len() < 40, "the search ends");
            tried.push(n);
            s.record(n, n <= limit);
        }
        (s.result(), tried)
    }

    #[test]
    fn the_search_doubles_then_bisects() {
        assert_eq!(search(256, 13), (13, vec![1, 2, 4, 8, 16, 12, 14, 13]));
        assert_eq!(search(256, 16), (16, vec![1, 2, 4, 8, 16, 32, 24, 20, 18, 17]));
        assert_eq!(search(256, 1), (1, vec![1, 2]));
        assert_eq!(search(256, 0), (0, vec![1]));
        assert_eq!(search(256, 1000), (256, vec![1, 2, 4, 8, 16, 32, 64, 128, 256]));
        assert_eq!(search(100, 1000), (100, vec![1, 2, 4, 8, 16, 32, 64, 100]));
        assert_eq!(search(100, 70), (70, vec![1, 2, 4, 8, 16, 32, 64, 100, 82, 73, 68, 70, 71]));
        for limit in 0..=70 {
            assert_eq!(search(64, limit).0, limit.min(64), "limit {limit}");
        }
    }

    fn report(dropped: u64, fps: f64, frame_p99: f64, events: usize, event_p99: f64) -> TrialReport {
        TrialReport {
            cameras: 4,
            fps: 10.0,
            seconds: 20.0,
            frames: (fps * 20.0) as u64,
            frames_per_s: fps,
            frames_per_s_per_camera: fps / 4.0,
            frames_dropped: dropped,
            latency: Latency {
                frame_ms_p50: 10.0,
                frame_ms_p99: frame_p99,
                events,
                event_ms_p50: 10.0,
                event_ms_p99: event_p99,
            },
            cpu_cores: 1.0,
            cpu_per_camera: 0.25,
            rss_mib_before: 300.0,
            rss_mib_after: 320.0,
            rss_mib_per_camera: 5.0,
            camera_errors: Vec::new(),
            failures: Vec::new(),
            judged_on: "frame",
        }
    }

    #[test]
    fn trials_are_judged_on_drops_pace_and_p99() {
        assert_eq!(judge(&report(0, 40.0, 50.0, 30, 60.0)), (vec![], "event"));
        assert_eq!(judge(&report(0, 40.0, 50.0, 5, 400.0)), (vec![], "frame"), "five events: no p99 of them");
        let (why, on) = judge(&report(0, 40.0, 50.0, 30, 100.0));
        assert_eq!((why, on), (vec!["capture to event p99 100.0 ms".to_string()], "event"));
        let (why, _) = judge(&report(3, 37.0, 120.0, 0, 0.0));
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(why[0].contains("3 frames dropped") && why[1].contains("37.0 of 40.0") && why[2].contains("120.0"));
        let mut failed = report(0, 40.0, 50.0, 30, 60.0);
        failed.camera_errors.push("cannot open stream".into());
        assert_eq!(judge(&failed).0, vec!["1 cameras failed".to_string()]);
    }

    #[test]
    fn cpu_and_memory_of_this_process_are_read() {
        let before = cpu_seconds();
        let mut x = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1 && cpu_seconds() > before, "busy CPU time is counted");
        assert!(rss_mib() > 1.0);
    }
}
