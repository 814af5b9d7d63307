//! `bench --viewers 0,1,5`: what live viewers cost the pipeline. For each number of viewers, the
//! clip runs offline (every frame, as fast as the device takes them) in a fresh pipeline while
//! that many viewers pull the overlay view through a `PictureHub` at `pictures.live_fps`, as the
//! live view does; after a warm-up, one window is measured: frames analysed per second, pictures
//! encoded, parts the viewers got. Then one overlay snapshot of the last frame is timed alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::actors::status::{CameraStatus, StreamState};
use crate::analytics::geometry::Geometry;
use crate::analytics::lines::LineCount;
use crate::camera_spec::{CameraSpec, SourcePolicy};
use crate::picture::{hub, PictureError, PictureHub, Wait};
use crate::settings::Settings;
use crate::topology::CameraMode;

/// Overlay snapshots timed alone for `encode_ms`.
const TIMED_ENCODES: u32 = 20;

#[derive(Debug, Serialize)]
pub struct ViewersReport {
    pub video: String,
    pub live_fps: u32,
    pub warm_up_s: f64,
    pub window_s: f64,
    pub runs: Vec<ViewersRun>,
    /// Mean milliseconds to draw and encode one overlay snapshot of the clip's last frame
    /// analysed (no pipeline running).
    pub overlay_encode_ms: f64,
    /// Its size in bytes.
    pub overlay_jpeg_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct ViewersRun {
    pub viewers: usize,
    pub frames: u64,
    pub seconds: f64,
    pub frames_per_s: f64,
    /// Pictures encoded in the window (shared by the viewers).
    pub encoded: u64,
    /// Parts all viewers received in the window, per second.
    pub parts_per_s: f64,
    /// frames/s against the run with no viewer, percent (negative: slower); absent without one.
    pub change_percent: Option<f64>,
}

pub async fn run(
    settings: &Settings,
    video: &std::path::Path,
    geometry: Geometry,
    viewers: &[usize],
    warm_up: Duration,
    window: Duration,
) -> anyhow::Result<ViewersReport> {
    anyhow::ensure!(!viewers.is_empty(), "--viewers: give at least one number");
    anyhow::ensure!(viewers.iter().all(|&n| n <= 64), "--viewers: at most 64 viewers");
    let video = std::fs::canonicalize(video).map_err(|e| anyhow::anyhow!("{}: {e}", video.display()))?;
    let url = url::Url::from_file_path(&video).map_err(|_| anyhow::anyhow!("{}: not a file path", video.display()))?;
    let spec = CameraSpec {
        id: "clip".into(),
        name: video.display().to_string(),
        url: url.to_string(),
        fps: Some(120.0),
        geometry,
        rtsp_transport: None,
        replay: None,
    };
    let errors = spec.validate(&SourcePolicy::any_local_file());
    anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));

    let mut runs: Vec<ViewersRun> = Vec::new();
    let mut last: Option<Arc<CameraStatus>> = None;
    for &n in viewers {
        let (run, status) = trial(settings, &spec, n, warm_up, window).await?;
        runs.push(run);
        last = Some(status);
    }
    if let Some(base) = runs.iter().find(|r| r.viewers == 0).map(|r| r.frames_per_s) {
        for run in &mut runs {
            run.change_percent = Some((run.frames_per_s / base - 1.0) * 100.0);
        }
    }
    let status = last.ok_or_else(|| anyhow::anyhow!("no run"))?;
    let (overlay_encode_ms, overlay_jpeg_bytes) = time_overlay(settings, &status)?;
    Ok(ViewersReport {
        video: video.display().to_string(),
        live_fps: settings.pictures.live_fps,
        warm_up_s: warm_up.as_secs_f64(),
        window_s: window.as_secs_f64(),
        runs,
        overlay_encode_ms,
        overlay_jpeg_bytes,
    })
}

/// One pipeline, one offline camera, `viewers` viewers.
async fn trial(
    settings: &Settings,
    spec: &CameraSpec,
    viewers: usize,
    warm_up: Duration,
    window: Duration,
) -> anyhow::Result<(ViewersRun, Arc<CameraStatus>)> {
    let super::MemoryPipeline { pipeline, metrics, sink: _sink, escalation } = super::MemoryPipeline::start(settings)?;
    let hub = PictureHub::new(settings.pictures.clone(), metrics.clone());
    let epoch_ms = crate::actors::status::now_ms() / 60_000 * 60_000;
    let status = pipeline.start_camera(spec.clone(), CameraMode::Offline, epoch_ms, 1).await?;
    let end = Instant::now() + warm_up + window;
    let parts = std::sync::atomic::AtomicU64::new(0);
    let counting = std::sync::atomic::AtomicBool::new(false);
    let viewer = || async {
        let counts = || status.counts();
        let counts: &(dyn Fn() -> Vec<LineCount> + Sync) = &counts;
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / settings.pictures.live_fps as f64));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_seq = None;
        while Instant::now() < end {
            ticker.tick().await;
            match hub.picture(&status.pictures, Some(counts), Wait::Skip).await {
                Ok(p) if Some(p.frame_seq) != last_seq => {
                    last_seq = Some(p.frame_seq);
                    if counting.load(std::sync::atomic::Ordering::SeqCst) {
                        parts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                Ok(_) | Err(PictureError::NoFrame | PictureError::Busy) => {}
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            }
        }
        Ok(())
    };
    let measure = async {
        tokio::time::sleep(warm_up).await;
        let (frames_0, encoded_0, started) = (status.processed.get(), metrics.pictures_encoded.get(), Instant::now());
        counting.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(window).await;
        counting.store(false, std::sync::atomic::Ordering::SeqCst);
        let seconds = started.elapsed().as_secs_f64();
        (status.processed.get() - frames_0, metrics.pictures_encoded.get() - encoded_0, seconds)
    };
    let viewing = futures::future::try_join_all((0..viewers).map(|_| viewer()));
    let outcome = tokio::select! {
        (measured, viewed) = async { tokio::join!(measure, viewing) } => viewed.map(|_| measured),
        _ = escalation.notified() => {
            Err(anyhow::anyhow!("the pipeline stopped: {}", pipeline.escalated().unwrap_or_default()))
        }
    };
    let ended = matches!(status.state(), StreamState::Ended | StreamState::Failed);
    pipeline.shutdown().await;
    let (frames, encoded, seconds) = outcome?;
    anyhow::ensure!(!ended, "the clip ended inside the window: use a shorter --viewer-window-s");
    let run = ViewersRun {
        viewers,
        frames,
        seconds,
        frames_per_s: frames as f64 / seconds,
        encoded,
        parts_per_s: parts.into_inner() as f64 / seconds,
        change_percent: None,
    };
    Ok((run, status))
}

/// Mean milliseconds and bytes of one overlay snapshot of the camera's last frame.
fn time_overlay(settings: &Settings, status: &CameraStatus) -> anyhow::Result<(f64, usize)> {
    let frame = status.pictures.frame().ok_or_else(|| anyhow::anyhow!("no frame decoded"))?;
    let tracks = status.pictures.tracks();
    let counts = status.counts();
    let quality = settings.pictures.jpeg_quality;
    let render = || hub::render(&frame, Some((tracks.as_deref(), &counts)), quality).map_err(anyhow::Error::msg);
    let bytes = render()?.jpeg.len(); // warm-up
    let started = Instant::now();
    for _ in 0..TIMED_ENCODES {
        render()?;
    }
    Ok((started.elapsed().as_secs_f64() * 1e3 / TIMED_ENCODES as f64, bytes))
}

impl ViewersReport {
    pub fn table(&self) -> String {
        let mut out = format!(
            "clip {}\nviewers pull the overlay view at {} frames/s; warm-up {:.0} s, window {:.0} s\n",
            self.video, self.live_fps, self.warm_up_s, self.window_s
        );
        out.push_str("viewers  frames/s  encoded  parts/s  change\n");
        for r in &self.runs {
            let change = r.change_percent.map(|c| format!("{c:+.1} %")).unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:>7}  {:>8.1}  {:>7}  {:>7.1}  {change}\n",
                r.viewers, r.frames_per_s, r.encoded, r.parts_per_s
            ));
        }
        out.push_str(&format!(
            "overlay snapshot: {:.2} ms to draw and encode, {} bytes\n",
            self.overlay_encode_ms, self.overlay_jpeg_bytes
        ));
        out
    }
}
