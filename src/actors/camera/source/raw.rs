//! The decode thread of a raw-frame camera (`raw://`, `camera_spec::RawFrames`): packed BGR24
//! frames read from a file, nothing to decode, so it runs in a build without FFmpeg (the GPU
//! bundle's benchmarks). The file plays in a loop, paced in real time at its own rate like a live
//! camera (frames missed while the machine was late are counted as dropped), sampled down to the
//! camera's `fps`. Each camera starts at its own frame (a hash of its id), so many cameras on one
//! file do not show the same frame at the same time.
//!
//! Frames are read with `pread` for each kept frame (the page cache holds the file once for
//! every camera), scaled to the letterboxed size by `Resize` (bilinear, pixel centres aligned as
//! in OpenCV's `INTER_LINEAR`), and laid out as the model input by `Letterbox`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::{RunEnd, Sampler, Streamer};
use crate::actors::status::StreamState;
use crate::camera_spec::RawFrames;
use crate::detector::input::Region;

impl Streamer {
    pub(super) fn run_raw(&mut self, raw: RawFrames) -> Result<RunEnd, String> {
        let file = File::open(&raw.path).map_err(|e| format!("cannot open raw frames: {e}"))?;
        let len = file.metadata().map_err(|e| format!("cannot open raw frames: {e}"))?.len();
        let frame_len = raw.frame_len();
        let frames = len / frame_len;
        if frames == 0 || len % frame_len != 0 {
            return Err(format!(
                "raw frames: {len} bytes are not a whole number of {}x{} BGR24 frames",
                raw.width, raw.height
            ));
        }
        let letterbox = self.source.config.letterbox(raw.width, raw.height, Region::full(raw.width, raw.height));
        let (width, height) = letterbox.scaled_size();
        let resize = Resize::new((raw.width, raw.height), (width, height));
        let sampler = Sampler::new(raw.fps, self.source.config.fps);
        let first = start_frame(&self.source.config.camera_id, frames);
        let (mut source, mut scaled) = (vec![0u8; frame_len as usize], Vec::new());
        let started = self.source.clock.now();
        let frame_time = |index: u64| started + Duration::from_secs_f64(index as f64 / raw.fps);
        let mut next: u64 = 0;
        self.source.status.set_state(StreamState::Streaming, None);
        loop {
            self.sleep(frame_time(next).saturating_duration_since(self.source.clock.now()));
            if self.stopped() {
                return Ok(RunEnd::Stopped);
            }
            // Late by a frame or more: a live camera does not wait for its reader.
            let late = self.source.clock.now().saturating_duration_since(started).as_secs_f64();
            let latest = (late * raw.fps).floor() as u64;
            if latest > next {
                self.source.status.dropped.inc_by((next..latest).filter(|&i| sampler.keep(i)).count() as u64);
                self.source.status.decoded.inc_by(latest - next);
                next = latest;
            }
            let index = next;
            next += 1;
            self.source.status.decoded.inc();
            if !sampler.keep(index) {
                continue;
            }
            let span = self.frame_span();
            // The frame exists from its due time on: reading and scaling it count in its latency.
            let (captured, captured_at) = (Instant::now(), SystemTime::now());
            file.read_exact_at(&mut source, (first + index) % frames * frame_len)
                .map_err(|e| format!("raw frames: read failed: {e}"))?;
            resize.run(&source, &mut scaled);
            let mut pixels = Vec::new();
            letterbox.write_interleaved(&scaled, 3 * width as usize, &mut pixels);
            letterbox.fill_overview(&mut pixels);
            self.source.metrics.stages.decode.record(captured.elapsed());
            self.injected_fault();
            if let Some(end) = self.hand_on((Bytes::from(pixels), letterbox), captured, captured_at, span) {
                return Ok(end);
            }
        }
    }
}

/// The frame a camera starts at: FNV-1a of its id, modulo the frames of the file.
fn start_frame(camera_id: &str, frames: u64) -> u64 {
    let hash = camera_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    hash % frames.max(1)
}

/// Bilinear scaling of packed BGR24 images of one size to another, in 8-bit fixed point, with
/// pixel centres aligned (source coordinate `(d + 0.5) * scale - 0.5`, clamped at the edges), as
/// OpenCV's `INTER_LINEAR` and FFmpeg's bilinear scaler do for upscaling.
pub(super) struct Resize {
    /// Per destination column: the byte offsets of the two source pixels and the weight of the
    /// second (0..=256).
    columns: Vec<(usize, usize, u32)>,
    /// Per destination row: the two source rows and the weight of the second.
    rows: Vec<(usize, usize, u32)>,
    source_stride: usize,
}

impl Resize {
    pub(super) fn new((source_width, source_height): (u32, u32), (width, height): (u32, u32)) -> Self {
        let columns = taps(source_width, width).into_iter().map(|(a, b, w)| (3 * a, 3 * b, w)).collect();
        Self { columns, rows: taps(source_height, height), source_stride: 3 * source_width as usize }
    }

    /// Scales `source` into `out` (packed rows of the destination width, no padding).
    pub(super) fn run(&self, source: &[u8], out: &mut Vec<u8>) {
        let stride = 3 * self.columns.len();
        out.clear();
        out.resize(stride * self.rows.len(), 0);
        for (&(y0, y1, wy), row) in self.rows.iter().zip(out.chunks_exact_mut(stride)) {
            let top = &source[y0 * self.source_stride..][..self.source_stride];
            let bottom = &source[y1 * self.source_stride..][..self.source_stride];
            for (&(x0, x1, wx), px) in self.columns.iter().zip(row.chunks_exact_mut(3)) {
                for (c, value) in px.iter_mut().enumerate() {
                    let mix = |line: &[u8]| line[x0 + c] as u32 * (256 - wx) + line[x1 + c] as u32 * wx;
                    *value = ((mix(top) * (256 - wy) + mix(bottom) * wy + (1 << 15)) >> 16) as u8;
                }
            }
        }
    }
}

/// For each of `to` destination positions: the two source positions around its centre and the
/// weight of the second, in 1/256.
fn taps(from: u32, to: u32) -> Vec<(usize, usize, u32)> {
    let scale = from as f64 / to.max(1) as f64;
    let last = from.max(1) as usize - 1;
    (0..to)
        .map(|d| {
            let centre = ((d as f64 + 0.5) * scale - 0.5).clamp(0.0, last as f64);
            let first = centre.floor() as usize;
            let weight = ((centre - first as f64) * 256.0).round() as u32;
            (first, (first + 1).min(last), weight.min(256))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::super::testing::run_stream;
    use super::super::SourceConfig;
    use super::*;
    use crate::actors::gpu::batch::{FrameSink, PushOutcome, Queued};
    use crate::actors::messages::Frame;
    use crate::actors::status::CameraStatus;
    use crate::detector::input::PAD_VALUE;
    use crate::supervision::ManualClock;

    #[test]
    fn same_size_is_a_copy_and_flat_stays_flat() {
        let image: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        Resize::new((5, 3), (5, 3)).run(&image, &mut out);
        assert_eq!(out, image);
        Resize::new((5, 3), (13, 7)).run(&[90; 45], &mut out);
        assert_eq!(out.len(), 13 * 7 * 3);
        assert!(out.iter().all(|&v| v == 90));
    }

    #[test]
    fn halving_averages_pairs_and_doubling_interpolates() {
        // One row of four pixels, each channel the same: 0, 100, 200, 250.
        let row: Vec<u8> = [0u8, 100, 200, 250].iter().flat_map(|&v| [v; 3]).collect();
        let mut out = Vec::new();
        Resize::new((4, 1), (2, 1)).run(&row, &mut out);
        assert_eq!(out, vec![50, 50, 50, 225, 225, 225]);
        // Two pixels 0 and 200 doubled: centres at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        Resize::new((2, 1), (4, 1)).run(&[0, 0, 0, 200, 200, 200], &mut out);
        assert_eq!(out.iter().step_by(3).copied().collect::<Vec<_>>(), vec![0, 50, 150, 200]);
        // Channels stay apart.
        Resize::new((1, 1), (2, 2)).run(&[1, 2, 3], &mut out);
        assert_eq!(out, [1, 2, 3].repeat(4));
    }

    #[test]
    fn cameras_start_at_their_own_frame() {
        let starts: Vec<u64> = (0..8).map(|i| start_frame(&format!("bench-{i}"), 900)).collect();
        assert!(starts.iter().all(|&s| s < 900));
        let mut distinct = starts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 7, "{starts:?}");
        assert_eq!(start_frame("bench-0", 900), starts[0], "the same id, the same start");
    }

    /// Keeps `limit` frames, then says the camera was detached.
    struct Recorder {
        frames: Mutex<Vec<Frame>>,
        limit: usize,
    }

    impl FrameSink for Recorder {
        fn push(&self, item: Queued, _cancelled: &dyn Fn() -> bool) -> PushOutcome {
            // The end marker of a failed stream.
            let Queued::Frame(frame) = item else { return PushOutcome::Queued };
            let mut frames = self.frames.lock();
            frames.push(frame);
            if frames.len() >= self.limit {
                PushOutcome::Detached
            } else {
                PushOutcome::Queued
            }
        }
    }

    /// Runs camera `id` on `url` at `fps` on a manual clock until `limit` frames went out.
    fn stream(id: &str, url: &str, fps: f64, limit: usize) -> (Vec<Frame>, Arc<CameraStatus>) {
        let recorder = Arc::new(Recorder { frames: Mutex::default(), limit });
        let config = SourceConfig { max_retries: Some(0), overview: true, ..SourceConfig::live(id, url, fps, 8) };
        let status = run_stream(config, recorder.clone(), Arc::new(ManualClock::new()));
        let frames = std::mem::take(&mut *recorder.frames.lock());
        (frames, status)
    }

    #[test]
    fn frames_loop_from_the_file_letterboxed_and_sampled() {
        // Five 4x2 frames, frame k all of value 10 * (k + 1); scaled 2x into the 8x8 input.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames.bgr");
        std::fs::write(&path, (0..5u8).flat_map(|k| [10 * (k + 1); 24]).collect::<Vec<u8>>()).unwrap();
        let url = format!("raw://{}?width=4&height=2&fps=10", path.display());
        // Sampled at 5 of the source's 10 frames/s: every other frame, looping over the file.
        let (frames, status) = stream("cam-a", &url, 5.0, 6);
        let first = start_frame("cam-a", 5);
        let values: Vec<u8> = frames.iter().map(|f| f.pixels[0]).collect();
        let expected: Vec<u8> = (0..6).map(|i| 10 * (((first + 2 * i) % 5) as u8 + 1)).collect();
        assert_eq!(values, expected);
        assert_eq!(status.dropped.get(), 0);
        assert_eq!(frames.iter().map(|f| f.seq).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
        let frame = &frames[0];
        assert_eq!(frame.letterbox.scaled_size(), (8, 4));
        assert_eq!(frame.pixels.len(), frame.letterbox.input_len());
        let value = frame.pixels[0];
        // The main input is one cell (32x32): the image top left, padding beside and below it.
        // Then the overview's input, also one cell: the image shrunk by 3 (2x1 pixels) top left.
        assert_eq!(frame.letterbox.input, (32, 32));
        let (main, overview) = frame.pixels.split_at(frame.letterbox.main_len());
        for (y, line) in main.chunks_exact(frame.letterbox.row_bytes()).enumerate() {
            let picture = if y < 4 { 8 * 3 } else { 0 };
            assert!(line[..picture].iter().all(|&v| v == value), "the scaled image, row {y}");
            assert!(line[picture..].iter().all(|&v| v == PAD_VALUE), "padding, row {y}");
        }
        assert_eq!(overview.len(), 32 * 32 * 3);
        assert!(overview[..2 * 3].iter().all(|&v| v == value), "the overview");
        assert!(overview[2 * 3..].iter().all(|&v| v == PAD_VALUE), "padding around it");
    }

    #[test]
    fn a_file_that_is_not_whole_frames_fails_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames.bgr");
        std::fs::write(&path, [0u8; 25]).unwrap();
        let (frames, status) = stream("cam-b", &format!("raw://{}?width=4&height=2", path.display()), 5.0, 1);
        assert!(frames.is_empty());
        assert_eq!(status.state(), StreamState::Failed);
        assert!(status.last_error().unwrap().contains("not a whole number"), "{:?}", status.last_error());
    }
}
