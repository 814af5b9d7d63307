//! `bench --decode`: what decoding costs per frame, by resolution, FFmpeg decode threads and
//! hardware decoding. The clip is re-encoded once to H.264 720p and 1080p with the `ffmpeg`
//! command (libx264, into `target/bench-media/`, kept for the next run); each stream is decoded
//! with the camera's own decoder opening (`actors::camera::source::decoder`) and scaled to the
//! model's letterboxed input size in BGR, as a camera does (the copy into the model layout is
//! left out: `bench` times the whole decode stage).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use serde::Serialize;

use crate::actors::camera::source::decoder::{self, Backend};
use crate::detector::Letterbox;
use crate::settings::{Hwaccel, Settings};

/// The H.264 copies made of the clip: name, width, height.
pub const SIZES: [(&str, u32, u32); 2] = [("720p", 1280, 720), ("1080p", 1920, 1080)];
/// Decode threads measured (0: FFmpeg's choice, one per core).
pub const THREADS: [u32; 3] = [1, 2, 0];

#[derive(Debug, Serialize)]
pub struct DecodeReport {
    pub cores: usize,
    pub input_size: u32,
    /// Frames decoded per measurement (the start of each stream).
    pub frames_per_run: usize,
    pub rows: Vec<DecodeRow>,
    /// `hwaccel = "auto"` on each stream: the backend it found, or why it decodes in software.
    pub hardware: Vec<DecodeRow>,
}

#[derive(Debug, Serialize)]
pub struct DecodeRow {
    pub stream: String,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// FFmpeg decode threads (0: FFmpeg's choice).
    pub threads: u32,
    pub hwaccel: Hwaccel,
    pub backend: Backend,
    /// Why hardware was not used, when it was asked for.
    pub fallback: Option<String>,
    pub frames: u64,
    /// Milliseconds per frame: decoding (and copying a hardware frame back), scaling to the model
    /// input, both; and the frames/s that makes for one camera.
    pub decode_ms: f64,
    pub scale_ms: f64,
    pub total_ms: f64,
    pub frames_per_s: f64,
    /// Process CPU milliseconds per frame (every decode thread's work, which `total_ms`, a wall
    /// time, hides when several threads decode).
    pub cpu_ms: f64,
}

/// Makes the H.264 copies if missing, then measures every stream with every thread count, and
/// each stream with `hwaccel = "auto"`.
pub fn run(settings: &Settings, clip: &Path, media_dir: &Path, frames: usize) -> anyhow::Result<DecodeReport> {
    let mut streams = vec![("native".to_string(), clip.to_path_buf())];
    for (name, width, height) in SIZES {
        streams.push((name.to_string(), h264_copy(clip, media_dir, name, width, height)?));
    }
    let input_size = settings.model.input_size;
    let mut rows = Vec::new();
    for (name, path) in &streams {
        for threads in THREADS {
            rows.push(measure(name, path, threads, Hwaccel::None, input_size, frames)?);
        }
    }
    let mut hardware = Vec::new();
    for (name, path) in &streams {
        hardware.push(measure(name, path, 1, Hwaccel::Auto, input_size, frames)?);
    }
    Ok(DecodeReport {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        input_size,
        frames_per_run: frames,
        rows,
        hardware,
    })
}

/// `media_dir/NAME.mp4`: the clip scaled to WIDTHxHEIGHT in H.264 (libx264), made once.
pub fn h264_copy(clip: &Path, media_dir: &Path, name: &str, width: u32, height: u32) -> anyhow::Result<PathBuf> {
    let stem = clip.file_stem().and_then(|s| s.to_str()).unwrap_or("clip");
    let out = media_dir.join(format!("{stem}_{name}_h264.mp4"));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(media_dir).map_err(|e| anyhow::anyhow!("{}: {e}", media_dir.display()))?;
    let partial = media_dir.join(format!(".{stem}_{name}_h264.partial.mp4"));
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-y", "-v", "error", "-i"])
        .arg(clip)
        .args(["-vf", &format!("scale={width}:{height}"), "-c:v", "libx264", "-preset", "medium", "-crf", "23"])
        .args(["-pix_fmt", "yuv420p", "-an"])
        .arg(&partial)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run ffmpeg (the FFmpeg command line tools make the H.264 copies): {e}"))?;
    anyhow::ensure!(status.success(), "ffmpeg could not make {}: {status}", out.display());
    std::fs::rename(&partial, &out)?;
    Ok(out)
}

/// Decodes the first `limit` frames of `path` and scales each to the model input size.
pub fn measure(
    name: &str,
    path: &Path,
    threads: u32,
    hwaccel: Hwaccel,
    input_size: u32,
    limit: usize,
) -> anyhow::Result<DecodeRow> {
    let mut input = ffmpeg::format::input(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let stream = input.streams().best(ffmpeg::media::Type::Video).ok_or_else(|| anyhow::anyhow!("no video"))?;
    let index = stream.index();
    let codec = format!("{:?}", stream.parameters().id()).to_lowercase();
    let opened = decoder::open(stream.parameters(), threads, hwaccel).map_err(anyhow::Error::msg)?;
    let mut decoder = opened.decoder;
    let (mut decoded, mut scratch, mut bgr) =
        (ffmpeg::frame::Video::empty(), ffmpeg::frame::Video::empty(), ffmpeg::frame::Video::empty());
    let mut scaler: Option<(scaling::Context, Pixel)> = None;
    let (mut decode_time, mut scale_time, mut frames) = (Duration::ZERO, Duration::ZERO, 0u64);
    let (mut width, mut height) = (0, 0);
    let mut packets = input.packets().filter(|(s, _)| s.index() == index).map(|(_, p)| p);
    let mut at_eof = false;
    let cpu_before = super::cameras::cpu_seconds();
    while (frames as usize) < limit {
        let started = Instant::now();
        if !at_eof {
            match packets.next() {
                Some(packet) => {
                    let _ = decoder.send_packet(&packet);
                }
                None => {
                    at_eof = true;
                    let _ = decoder.send_eof();
                }
            }
        }
        decode_time += started.elapsed();
        let mut got = false;
        while (frames as usize) < limit {
            let started = Instant::now();
            let received = decoder.receive_frame(&mut decoded).is_ok();
            if received {
                decoder::download(&mut decoded, &mut scratch).map_err(anyhow::Error::msg)?;
            }
            decode_time += started.elapsed();
            if !received {
                break;
            }
            got = true;
            let scaling = Instant::now();
            (width, height) = (decoded.width(), decoded.height());
            if !scaler.as_ref().is_some_and(|(_, format)| *format == decoded.format()) {
                let (w, h) = Letterbox::new(width, height, input_size).scaled_size();
                let flags = scaling::Flags::BILINEAR;
                let context = scaling::Context::get(decoded.format(), width, height, Pixel::BGR24, w, h, flags)?;
                scaler = Some((context, decoded.format()));
            }
            if let Some((context, _)) = &mut scaler {
                context.run(&decoded, &mut bgr)?;
            }
            scale_time += scaling.elapsed();
            frames += 1;
        }
        if !got && at_eof {
            break;
        }
    }
    let cpu_ms = (super::cameras::cpu_seconds() - cpu_before) * 1e3 / frames.max(1) as f64;
    anyhow::ensure!(frames > 0, "{}: no frame decoded", path.display());
    let per_frame = |d: Duration| d.as_secs_f64() * 1e3 / frames as f64;
    let (decode_ms, scale_ms) = (per_frame(decode_time), per_frame(scale_time));
    Ok(DecodeRow {
        stream: name.to_string(),
        codec,
        width,
        height,
        threads,
        hwaccel,
        backend: opened.backend,
        fallback: opened.fallback,
        frames,
        decode_ms,
        scale_ms,
        total_ms: decode_ms + scale_ms,
        frames_per_s: 1e3 / (decode_ms + scale_ms).max(1e-9),
        cpu_ms,
    })
}

impl DecodeReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "decode + scale to {0}x{0} BGR, first {1} frames per stream, {2} cores\n\
             stream  size       codec  threads  backend        decode ms  scale ms  total ms  frames/s  CPU ms\n",
            self.input_size, self.frames_per_run, self.cores
        );
        let threads = |t: u32| if t == 0 { "auto".to_string() } else { t.to_string() };
        for r in self.rows.iter().chain(&self.hardware) {
            out += &format!(
                "{:<7} {:<10} {:<6} {:<8} {:<14} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>7.2}\n",
                r.stream,
                format!("{}x{}", r.width, r.height),
                r.codec,
                threads(r.threads),
                if r.hwaccel == Hwaccel::None {
                    r.backend.as_str().to_string()
                } else {
                    format!("auto:{}", r.backend.as_str())
                },
                r.decode_ms,
                r.scale_ms,
                r.total_ms,
                r.frames_per_s,
                r.cpu_ms
            );
        }
        let fallbacks: Vec<&DecodeRow> = self.hardware.iter().filter(|r| r.backend == Backend::Software).collect();
        if let Some(r) = fallbacks.first() {
            out += &format!(
                "hardware decoding: not available here, software used ({})\n",
                r.fallback.as_deref().unwrap_or("no device")
            );
        }
        out
    }
}
