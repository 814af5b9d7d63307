//! `bench --viewers 0,1,5`: what live viewers cost the pipeline. For each number of viewers, the
//! clip runs offline (every frame, as fast as the device takes them) in a fresh pipeline while
//! that many viewers pull the overlay view through a `PictureHub` at `pictures.live_fps`, as the
//! live view does; after a warm-up, one window is measured: frames analysed per second, pictures
//! encoded, parts the viewers got, and the process' CPU time per frame (less sensitive than
//! frames/s to other processes on the machine). A number given twice is run twice and averaged:
//! `0,1,5,5,1,0` spreads a drift of the machine's speed over every number. Then one overlay
//! snapshot of the last frame is timed alone.

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
    pub summary: Vec<ViewersSummary>,
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
    /// CPU time of the whole process per frame analysed, milliseconds.
    pub cpu_ms_per_frame: f64,
}

/// The runs of one number of viewers, averaged.
#[derive(Debug, Serialize)]
pub struct ViewersSummary {
    pub viewers: usize,
    pub runs: usize,
    pub frames_per_s: f64,
    pub cpu_ms_per_frame: f64,
    /// Against no viewer, percent (frames/s: negative is slower; CPU: positive costs more);
    /// absent without a run with no viewer.
    pub frames_per_s_change_percent: Option<f64>,
    pub cpu_per_frame_change_percent: Option<f64>,
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
    let summary = summarise(&runs);
    let status = last.ok_or_else(|| anyhow::anyhow!("no run"))?;
    let (overlay_encode_ms, overlay_jpeg_bytes) = time_overlay(settings, &status)?;
    Ok(ViewersReport {
        video: video.display().to_string(),
        live_fps: settings.pictures.live_fps,
        warm_up_s: warm_up.as_secs_f64(),
        window_s: window.as_secs_f64(),
        runs,
        summary,
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
        let (frames_0, encoded_0) = (status.processed.get(), metrics.pictures_encoded.get());
        let (cpu_0, started) = (super::cameras::cpu_seconds(), Instant::now());
        counting.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(window).await;
        counting.store(false, std::sync::atomic::Ordering::SeqCst);
        let (cpu, seconds) = (super::cameras::cpu_seconds() - cpu_0, started.elapsed().as_secs_f64());
        (status.processed.get() - frames_0, metrics.pictures_encoded.get() - encoded_0, seconds, cpu)
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
    let (frames, encoded, seconds, cpu) = outcome?;
    anyhow::ensure!(!ended, "the clip ended inside the window: use a shorter --viewer-window-s");
    let run = ViewersRun {
        viewers,
        frames,
        seconds,
        frames_per_s: frames as f64 / seconds,
        encoded,
        parts_per_s: parts.into_inner() as f64 / seconds,
        cpu_ms_per_frame: cpu * 1e3 / frames.max(1) as f64,
    };
    Ok((run, status))
}

/// The mean of each number's runs, in the order the numbers first appear.
fn summarise(runs: &[ViewersRun]) -> Vec<ViewersSummary> {
    let mut numbers: Vec<usize> = Vec::new();
    for run in runs {
        if !numbers.contains(&run.viewers) {
            numbers.push(run.viewers);
        }
    }
    let mean = |n: usize, value: fn(&ViewersRun) -> f64| {
        let values: Vec<f64> = runs.iter().filter(|r| r.viewers == n).map(value).collect();
        values.iter().sum::<f64>() / values.len().max(1) as f64
    };
    let base = numbers.contains(&0).then(|| (mean(0, |r| r.frames_per_s), mean(0, |r| r.cpu_ms_per_frame)));
    numbers
        .into_iter()
        .map(|n| {
            let (fps, cpu) = (mean(n, |r| r.frames_per_s), mean(n, |r| r.cpu_ms_per_frame));
            ViewersSummary {
                viewers: n,
                runs: runs.iter().filter(|r| r.viewers == n).count(),
                frames_per_s: fps,
                cpu_ms_per_frame: cpu,
                frames_per_s_change_percent: base.map(|(b, _)| (fps / b - 1.0) * 100.0),
                cpu_per_frame_change_percent: base.map(|(_, b)| (cpu / b - 1.0) * 100.0),
            }
        })
        .collect()
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
        out.push_str("viewers  frames/s  encoded  parts/s  CPU ms/frame\n");
        for r in &self.runs {
            out.push_str(&format!(
                "{:>7}  {:>8.1}  {:>7}  {:>7.1}  {:>12.2}\n",
                r.viewers, r.frames_per_s, r.encoded, r.parts_per_s, r.cpu_ms_per_frame
            ));
        }
        out.push_str("mean: viewers  runs  frames/s  change   CPU ms/frame  change\n");
        let percent = |p: Option<f64>| p.map(|c| format!("{c:+.1} %")).unwrap_or_else(|| "-".into());
        for s in &self.summary {
            out.push_str(&format!(
                "{:>13}  {:>4}  {:>8.1}  {:>7}  {:>12.2}  {}\n",
                s.viewers,
                s.runs,
                s.frames_per_s,
                percent(s.frames_per_s_change_percent),
                s.cpu_ms_per_frame,
                percent(s.cpu_per_frame_change_percent)
            ));
        }
        out.push_str(&format!(
            "overlay snapshot: {:.2} ms to draw and encode, {} bytes\n",
            self.overlay_encode_ms, self.overlay_jpeg_bytes
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(viewers: usize, frames_per_s: f64, cpu_ms_per_frame: f64) -> ViewersRun {
        ViewersRun { viewers, frames: 0, seconds: 1.0, frames_per_s, encoded: 0, parts_per_s: 0.0, cpu_ms_per_frame }
    }

    #[test]
    fn repeated_numbers_are_averaged_against_no_viewer() {
        let runs = [run(0, 40.0, 50.0), run(1, 39.0, 51.0), run(1, 37.0, 51.0), run(0, 42.0, 50.0)];
        let summary = summarise(&runs);
        assert_eq!(summary.iter().map(|s| (s.viewers, s.runs)).collect::<Vec<_>>(), vec![(0, 2), (1, 2)]);
        assert_eq!(summary[0].frames_per_s_change_percent, Some(0.0));
        assert!((summary[1].frames_per_s - 38.0).abs() < 1e-9);
        assert!((summary[1].frames_per_s_change_percent.unwrap() + 7.317).abs() < 0.01);
        assert!((summary[1].cpu_per_frame_change_percent.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(summarise(&[run(1, 1.0, 1.0)])[0].frames_per_s_change_percent, None);
    }
}
