//! The decode thread of a simulated camera (`sim://`, `detector::simulated`): nothing to open or
//! decode; at each tick of the camera's frame clock a frame header goes to the device, paced in
//! real time like a live camera, through the same clock, stop signal, fault injection and
//! hand-over as a real stream. It never ends.
//!
//! Frame `n` of a camera sampled at `fps` is at `n / fps` seconds since the epoch: every process
//! that runs the camera samples the same instants of the same scene, so moving a camera to
//! another node does not change what is counted.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{RunEnd, Streamer};
use crate::actors::status::StreamState;
use crate::detector::simulated::SimulatedCamera;

impl Streamer {
    pub(super) fn run_simulated(&mut self, camera: SimulatedCamera) -> Result<RunEnd, String> {
        let fps = self.source.config.fps;
        let letterbox = SimulatedCamera::letterbox(self.source.config.input_size);
        // The wall clock is read once; from then on time is the camera's clock (a test's
        // `ManualClock` runs the stream without sleeping).
        let (started, started_us) = (self.source.clock.now(), now_us());
        let wall_us = |at: Instant| started_us + at.saturating_duration_since(started).as_micros() as i64;
        let mut next = frame_at_or_before(started_us - 1, fps) + 1;
        self.source.status.set_state(StreamState::Streaming, None);
        loop {
            let due_us = frame_time_us(next, fps);
            let wait = due_us.saturating_sub(wall_us(self.source.clock.now())).max(0);
            self.sleep(Duration::from_micros(wait as u64));
            if self.stopped() {
                return Ok(RunEnd::Stopped);
            }
            // Late by a frame or more (an overloaded machine): a live camera does not wait for
            // its reader. The frames missed are counted as dropped.
            let latest = frame_at_or_before(wall_us(self.source.clock.now()), fps);
            if latest > next {
                self.source.status.dropped.inc_by((latest - next) as u64);
                next = latest;
            }
            let due_us = frame_time_us(next, fps);
            let span = self.frame_span();
            let built = Instant::now();
            let pixels = camera.frame(fps, due_us);
            self.source.metrics.stages.decode.record(built.elapsed());
            self.source.status.decoded.inc();
            self.injected_fault();
            next += 1;
            let captured_at = UNIX_EPOCH + Duration::from_micros(due_us.max(0) as u64);
            if let Some(end) = self.hand_on((pixels, letterbox), Instant::now(), captured_at, span) {
                return Ok(end);
            }
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// The time of frame `n` at `fps`, microseconds since the epoch.
fn frame_time_us(n: i64, fps: f64) -> i64 {
    (n as f64 * 1e6 / fps).round() as i64
}

/// The last frame at or before `t_us`.
fn frame_at_or_before(t_us: i64, fps: f64) -> i64 {
    let mut n = (t_us as f64 * fps / 1e6).floor() as i64;
    // The float estimate may be one off either way at a frame's exact time.
    while frame_time_us(n, fps) > t_us {
        n -= 1;
    }
    while frame_time_us(n + 1, fps) <= t_us {
        n += 1;
    }
    n
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
    use crate::detector::simulated::{Scene, SimulatedDetector};
    use crate::detector::Model;
    use crate::supervision::ManualClock;

    /// Keeps `limit` frames, then says the camera was detached; each push takes `push_takes` of
    /// the camera's clock (a slow device).
    struct Recorder {
        frames: Mutex<Vec<Frame>>,
        limit: usize,
        clock: Arc<ManualClock>,
        push_takes: Duration,
    }

    impl FrameSink for Recorder {
        fn push(&self, item: Queued, _cancelled: &dyn Fn() -> bool) -> PushOutcome {
            let Queued::Frame(frame) = item else { panic!("a simulated stream never ends") };
            self.clock.advance(self.push_takes);
            let mut frames = self.frames.lock();
            frames.push(frame);
            if frames.len() >= self.limit {
                PushOutcome::Detached
            } else {
                PushOutcome::Queued
            }
        }
    }

    /// Runs `url` at `fps` on a manual clock until `limit` frames went out.
    fn stream(url: &str, fps: f64, limit: usize, push_takes: Duration) -> (Vec<Frame>, Arc<CameraStatus>) {
        let clock = Arc::new(ManualClock::new());
        let recorder = Arc::new(Recorder { frames: Mutex::default(), limit, clock: clock.clone(), push_takes });
        let status = run_stream(SourceConfig::live("sim", url, fps, 64), recorder.clone(), clock);
        let frames = std::mem::take(&mut *recorder.frames.lock());
        (frames, status)
    }

    fn time_us(frame: &Frame) -> i64 {
        frame.captured_at.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
    }

    #[test]
    fn frames_tick_on_the_camera_clock_and_show_its_scene() {
        let (frames, status) = stream("sim://gate?crossings_per_min=60", 4.0, 40, Duration::ZERO);
        assert_eq!(frames.len(), 40);
        assert_eq!(status.dropped.get(), 0);
        for (i, pair) in frames.windows(2).enumerate() {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
            assert_eq!(time_us(&pair[1]) - time_us(&pair[0]), 250_000, "frame {i}");
        }
        assert_eq!(time_us(&frames[0]) % 250_000, 0, "on the grid of n / fps seconds");
        let camera = SimulatedCamera::from_url("sim://gate?crossings_per_min=60").unwrap().unwrap();
        let scene = Scene::new(camera.seed, 60.0, 4.0);
        for frame in &frames {
            let got = SimulatedDetector.detect(&[(&frame.pixels, frame.letterbox)]).unwrap().remove(0);
            assert_eq!(got, scene.detections_at(time_us(frame) as f64 / 1e6));
        }
    }

    #[test]
    fn a_late_stream_skips_to_now_and_counts_what_it_missed() {
        // Every push takes 0.6 s of a 0.5 s frame interval: one frame in six is missed.
        let (frames, status) = stream("sim://gate", 2.0, 10, Duration::from_millis(600));
        let span = time_us(&frames[9]) - time_us(&frames[0]);
        let missed = span / 500_000 - 9;
        assert!(missed >= 1, "{span}");
        assert_eq!(status.dropped.get(), missed as u64);
        assert!(frames.windows(2).all(|p| p[1].seq == p[0].seq + 1), "sequence numbers have no gaps");
    }

    #[test]
    fn frame_times_are_exact_on_the_grid() {
        for fps in [1.0, 3.0, 7.5, 30.0, 0.3] {
            let start = 1_750_000_000_123_457;
            let n = frame_at_or_before(start, fps);
            assert!(frame_time_us(n, fps) <= start && frame_time_us(n + 1, fps) > start, "{fps}");
            assert_eq!(frame_at_or_before(frame_time_us(n + 1, fps), fps), n + 1);
        }
    }
}
