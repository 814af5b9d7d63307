//! The camera's decode thread: open the stream, decode, sample to the camera's rate, letterbox
//! straight into the model layout and hand frames to the device; reconnect with capped backoff.
//! A simulated camera (`sim://`) runs the same thread without a stream (`synthetic`), and a
//! raw-frame camera (`raw://`) without a decoder (`raw`). Without the `ffmpeg` feature only these two run.
//!
//! Timestamps from the container are not trusted (some files carry broken ones, e.g. a frame rate
//! of 214748359/3579125): sampling counts frames against the stream's nominal rate, pacing of
//! replayed files follows the same count. A frame's time is the wall clock at decode for live
//! streams, and the media clock (epoch plus frame index / rate) for files.
// What only FFmpeg's streams use is left unused in a build without it.
#![cfg_attr(not(feature = "ffmpeg"), allow(unused_imports, dead_code))]

#[cfg(feature = "ffmpeg")]
pub mod decoder;
mod raw;
mod synthetic;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
#[cfg(feature = "ffmpeg")]
use ffmpeg::{format::Pixel, software::scaling};
#[cfg(feature = "ffmpeg")]
use ffmpeg_next as ffmpeg;

use crate::actors::gpu::batch::{FrameSink, PushOutcome, Queued};
use crate::actors::messages::Frame;
use crate::actors::status::{CameraStatus, StreamState};
use crate::analytics::framing::FramePlan;
use crate::camera_spec::{RawFrames, RtspTransport};
#[cfg(feature = "ffmpeg")]
use crate::camera_spec::{FILE_FORMATS, FILE_PROTOCOLS, NETWORK_PROTOCOLS};
use crate::detector::input::Region;
use crate::detector::simulated::SimulatedCamera;
use crate::detector::Letterbox;
use crate::ids::CameraId;
use crate::metrics::Metrics;
use crate::picture::LatestFrame;
use crate::supervision::{panic_message, Backoff, Clock, Reporter, StopSignal};

/// Rate assumed for a stream whose container rate is missing or implausible.
pub const FALLBACK_SOURCE_FPS: f64 = 30.0;

#[derive(Clone)]
pub struct SourceConfig {
    pub camera_id: CameraId,
    /// May carry credentials: never log it, use `redact_url`.
    pub url: String,
    pub is_file: bool,
    pub fps: f64,
    pub looping: bool,
    /// Pace file sources at their own rate.
    pub realtime: bool,
    pub rtsp_transport: RtspTransport,
    pub input_size: u32,
    /// `model.overview`: a third-scale copy of the frame as a second model input.
    pub overview: bool,
    pub read_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// Give up after a failure once this many retries failed (`analyze`: 0); `None` retries for ever.
    pub max_retries: Option<u32>,
    /// Files: the frame time of the first frame (the camera's epoch); see `MediaClock`.
    pub clock_origin: SystemTime,
    /// `faults.decode_panic_at_frame` (0: never) and `decode_panic_repeats`.
    pub panic_at_frame: u64,
    pub panic_repeats: bool,
    /// `cameras.decode_threads` (0: FFmpeg's choice) and `cameras.hwaccel`.
    pub decode_threads: u32,
    pub hwaccel: crate::settings::Hwaccel,
    /// Files: frames skipped before the first one analysed, on the first opening only
    /// (`ReplayOptions::start_frame`).
    pub start_frame: u64,
}

impl SourceConfig {
    /// How `region` of a `width` x `height` frame is placed in the model input: letterboxed to
    /// `input_size`, with the overview when `overview` is on.
    pub fn letterbox(&self, width: u32, height: u32, region: Region) -> Letterbox {
        let letterbox = Letterbox::cropped(width, height, region, self.input_size);
        if self.overview {
            letterbox.with_overview()
        } else {
            letterbox
        }
    }

    /// A live stream with the defaults a test or tool starts from: TCP, 5 s read timeout, quick
    /// reconnects (10 to 50 ms) for ever, software decoding on one thread, no injected fault.
    pub fn live(camera_id: &str, url: &str, fps: f64, input_size: u32) -> Self {
        Self {
            camera_id: camera_id.into(),
            url: url.into(),
            is_file: false,
            fps,
            looping: false,
            realtime: true,
            rtsp_transport: RtspTransport::Tcp,
            input_size,
            overview: false,
            read_timeout: Duration::from_secs(5),
            reconnect_initial: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(50),
            max_retries: None,
            clock_origin: UNIX_EPOCH,
            panic_at_frame: 0,
            panic_repeats: false,
            decode_threads: 1,
            hwaccel: crate::settings::Hwaccel::None,
            start_frame: 0,
        }
    }
}

/// Everything a camera's decode thread is started from. The thread is a supervised child of the
/// camera supervisor: a panic ends it and the supervisor's factory starts the next one from the
/// same parts, continuing the stream where the last one stopped (`Position`).
#[derive(Clone)]
pub struct Source {
    config: SourceConfig,
    status: Arc<CameraStatus>,
    sink: Arc<dyn FrameSink>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// Fired when the camera stops (its actor drops the handle).
    stop: StopSignal,
    position: Arc<parking_lot::Mutex<Position>>,
    /// The injected decode panic fired (once per camera unless it repeats).
    panicked: Arc<std::sync::atomic::AtomicBool>,
}

/// Where a camera's stream is, handed from one decode thread to the next.
struct Position {
    /// The next sampled-frame number, continuing across reconnects, loops and restarts.
    seq: u64,
    /// Files: the frame clock.
    media: MediaClock,
}

impl Source {
    pub fn new(
        config: SourceConfig,
        status: Arc<CameraStatus>,
        sink: Arc<dyn FrameSink>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        stop: StopSignal,
    ) -> Self {
        let position = Position { seq: 0, media: MediaClock::new(config.clock_origin) };
        let position = Arc::new(parking_lot::Mutex::new(position));
        Self { config, status, sink, metrics, clock, stop, position, panicked: Arc::default() }
    }

    pub fn camera_id(&self) -> &str {
        &self.config.camera_id
    }

    pub fn status(&self) -> &Arc<CameraStatus> {
        &self.status
    }

    /// Starts a decode thread of `reporter`'s generation.
    pub fn start(&self, reporter: Reporter) -> Result<(), String> {
        let source = self.clone();
        std::thread::Builder::new()
            .name(format!("decode-{}", self.config.camera_id))
            .spawn(move || {
                let position = std::mem::replace(&mut *source.position.lock(), Position::taken());
                Streamer { source, reporter, position }.run()
            })
            .map(drop)
            .map_err(|e| format!("cannot start a decode thread: {e}"))
    }
}

impl Position {
    /// What the slot holds while a thread runs (it writes the real one back when it ends).
    fn taken() -> Self {
        Self { seq: 0, media: MediaClock::new(SystemTime::UNIX_EPOCH) }
    }
}

enum RunEnd {
    /// End of a file.
    EndOfFile,
    /// Asked to stop, or the device no longer takes this camera.
    Stopped,
}

struct Streamer {
    source: Source,
    reporter: Reporter,
    /// Taken from the camera's slot at start, written back when the thread ends.
    position: Position,
}

/// However the thread ends, the next one continues from here.
impl Drop for Streamer {
    fn drop(&mut self) {
        *self.source.position.lock() = std::mem::replace(&mut self.position, Position::taken());
    }
}

/// The frame clock of a file: the camera's epoch plus media time (frame index / stream rate),
/// continuing across loops and reopenings, so a replay after a restart gives the same frame
/// times (and the same minute rows and incident ids) however fast it is read.
struct MediaClock {
    origin: SystemTime,
    /// Media seconds at the start of the current opening of the file.
    base: f64,
    /// Media seconds just after the last frame decoded: where a reopening continues.
    next: f64,
}

impl MediaClock {
    fn new(origin: SystemTime) -> Self {
        Self { origin, base: 0.0, next: 0.0 }
    }

    /// Called at each opening of the file (after the end of a loop or an error).
    fn reopen(&mut self) {
        self.base = self.next;
    }

    /// The time of decoded frame `index` of this opening.
    fn at(&mut self, index: u64, source_fps: f64) -> SystemTime {
        let t = self.base + index as f64 / source_fps;
        self.next = self.next.max(t + 1.0 / source_fps);
        self.origin + Duration::from_secs_f64(t)
    }

    /// The file ended after `frames` decoded frames: the next loop starts after the last.
    fn ended(&mut self, frames: u64, source_fps: f64) {
        self.next = self.next.max(self.base + frames as f64 / source_fps);
    }
}

impl Streamer {
    fn run(mut self) {
        let mut backoff = Backoff::new(self.source.config.reconnect_initial, self.source.config.reconnect_max);
        while !self.stopped() {
            // An open breaker lets no attempt through until its open period is over.
            while !self.source.status.breaker.allow() {
                if self.stopped() {
                    return;
                }
                self.sleep(Duration::from_millis(200));
            }
            self.source.status.set_state(StreamState::Connecting, None);
            let seq_before = self.position.seq;
            // A panic in FFmpeg glue or in our code ends this thread; the supervisor starts the
            // next one after its backoff, from where this one stopped.
            let result = match std::panic::catch_unwind(AssertUnwindSafe(|| self.run_once())) {
                Ok(result) => result,
                Err(panic) => {
                    let error =
                        sanitize(&format!("decode panicked: {}", panic_message(&*panic)), &self.source.config.url);
                    self.source.status.breaker.record_failure();
                    self.source.status.set_state(StreamState::BackingOff, Some(error.clone()));
                    self.reporter.failed(error);
                    return;
                }
            };
            if self.position.seq > seq_before {
                backoff.reset();
                self.source.status.breaker.record_success();
            }
            match result {
                Ok(RunEnd::Stopped) => return,
                Ok(RunEnd::EndOfFile) if self.source.config.looping && self.position.seq > seq_before => continue,
                Ok(RunEnd::EndOfFile) if self.source.config.is_file => {
                    // The connector marks the camera ended once the last frame went through.
                    self.source.sink.push(Queued::End, &|| self.stopped());
                    return;
                }
                // A live stream has no end: the camera or the network dropped it.
                Ok(RunEnd::EndOfFile) => {
                    if self.give_up_after("stream ended".into(), &mut backoff) {
                        return;
                    }
                }
                Err(error) => {
                    if self.give_up_after(error, &mut backoff) {
                        return;
                    }
                }
            }
        }
    }

    /// Records a failed attempt and waits out the backoff; `true` when out of retries (the
    /// stream is then marked failed and ended).
    fn give_up_after(&self, error: String, backoff: &mut Backoff) -> bool {
        self.source.status.breaker.record_failure();
        let error = sanitize(&error, &self.source.config.url);
        tracing::warn!(camera = %self.source.config.camera_id, %error, "stream failed");
        if self.source.config.max_retries.is_some_and(|max| backoff.failures() >= max) {
            self.source.status.set_state(StreamState::Failed, Some(error));
            self.source.sink.push(Queued::End, &|| self.stopped());
            return true;
        }
        self.source.status.set_state(StreamState::BackingOff, Some(error));
        self.source.status.reconnects.inc();
        self.sleep(backoff.next_delay());
        false
    }

    fn stopped(&self) -> bool {
        self.source.stop.is_stopped()
    }

    /// `faults.decode_panic_at_frame`: panics before the frame of that number is handed on.
    fn injected_fault(&self) {
        let (at, repeats) = (self.source.config.panic_at_frame, self.source.config.panic_repeats);
        if at > 0 && self.position.seq >= at && (repeats || !self.source.panicked.swap(true, Ordering::SeqCst)) {
            panic!("injected fault: decode panic at frame {}", self.position.seq);
        }
    }

    /// Waits on the camera's clock; a stop ends the wait at once.
    fn sleep(&self, duration: Duration) {
        self.source.clock.wait(&self.source.stop, duration);
    }

    /// Numbers the next frame and hands it to the device; `Some` when the device no longer takes
    /// this camera.
    fn hand_on(
        &mut self,
        (pixels, letterbox): (Bytes, Letterbox),
        captured: Instant,
        captured_at: SystemTime,
        span: tracing::Span,
    ) -> Option<RunEnd> {
        let camera_id = self.source.config.camera_id.clone();
        // The snapshot's frame: a reference to the same bytes, encoded only when asked for.
        let latest = LatestFrame { seq: self.position.seq, captured_at, pixels: pixels.clone(), letterbox };
        self.source.status.pictures.set_frame(latest);
        let frame = Frame { camera_id, seq: self.position.seq, captured_at, captured, pixels, letterbox, span };
        self.position.seq += 1;
        match self.source.sink.push(Queued::Frame(frame), &|| self.stopped()) {
            PushOutcome::Queued | PushOutcome::Full => None,
            PushOutcome::DroppedOldest | PushOutcome::Rejected => {
                self.source.status.dropped.inc();
                None
            }
            PushOutcome::Detached => Some(RunEnd::Stopped),
        }
    }

    /// The `frame` root span of the next frame when it is sampled for tracing.
    fn frame_span(&self) -> tracing::Span {
        if crate::telemetry::sample_frame() {
            // Only the camera id: the URL (with its credentials) never goes into a trace.
            let camera_id = &self.source.config.camera_id;
            tracing::info_span!(parent: None, "frame", camera_id = %camera_id, frame_seq = self.position.seq)
        } else {
            tracing::Span::none()
        }
    }

    fn run_once(&mut self) -> Result<RunEnd, String> {
        if let Some(camera) = SimulatedCamera::from_url(&self.source.config.url) {
            return self.run_simulated(camera?);
        }
        if let Some(frames) = RawFrames::from_url(&self.source.config.url) {
            return self.run_raw(frames?);
        }
        self.run_decoded()
    }

    #[cfg(not(feature = "ffmpeg"))]
    fn run_decoded(&mut self) -> Result<RunEnd, String> {
        Err(crate::camera_spec::NO_FFMPEG.into())
    }

    /// A stream or file through FFmpeg.
    #[cfg(feature = "ffmpeg")]
    fn run_decoded(&mut self) -> Result<RunEnd, String> {
        let opened = Instant::now();
        self.position.media.reopen();
        let last_activity = Arc::new(AtomicU64::new(0));
        let interrupt = {
            let stop = self.source.stop.clone();
            let last_activity = last_activity.clone();
            let timeout_ms = self.source.config.read_timeout.as_millis() as u64;
            move || {
                let idle = (opened.elapsed().as_millis() as u64).saturating_sub(last_activity.load(Ordering::Relaxed));
                stop.is_stopped() || idle > timeout_ms
            }
        };
        let mut options = ffmpeg::Dictionary::new();
        // Whatever the URL leads to (a playlist, a redirect), FFmpeg may not leave these protocols.
        options.set("protocol_whitelist", if self.source.config.is_file { FILE_PROTOCOLS } else { NETWORK_PROTOCOLS });
        if self.source.config.is_file {
            // Video containers only: a playlist or concat script in the media directory could
            // name files outside it.
            options.set("format_whitelist", FILE_FORMATS);
        }
        if !self.source.config.is_file && self.source.config.url.starts_with("rtsp") {
            let transport = match self.source.config.rtsp_transport {
                RtspTransport::Tcp => "tcp",
                RtspTransport::Udp => "udp",
            };
            options.set("rtsp_transport", transport);
        }
        let mut input =
            ffmpeg::format::input_with_interrupt_and_dictionary(&self.source.config.url, interrupt, options)
                .map_err(|e| format!("cannot open stream: {e}"))?;
        let stream = input.streams().best(ffmpeg::media::Type::Video).ok_or("no video stream")?;
        let stream_index = stream.index();
        let source_fps = plausible_rate(stream.avg_frame_rate())
            .or_else(|| plausible_rate(stream.rate()))
            .unwrap_or(FALLBACK_SOURCE_FPS);
        let decoding =
            decoder::open(stream.parameters(), self.source.config.decode_threads, self.source.config.hwaccel)?;
        if let Some(reason) = &decoding.fallback {
            let camera = &self.source.config.camera_id;
            let reason = sanitize(reason, &self.source.config.url);
            tracing::warn!(%camera, hwaccel = self.source.config.hwaccel.as_str(), %reason, "decoding in software");
        }
        let (mut decoder, hardware) = (decoding.decoder, decoding.backend != decoder::Backend::Software);
        let mut downloaded = ffmpeg::frame::Video::empty();
        // A replay's start point applies to its first opening only (loops start at the beginning).
        let skip =
            if self.position.seq == 0 && self.source.config.is_file { self.source.config.start_frame } else { 0 };

        let sampler = Sampler::new(source_fps, self.source.config.fps);
        let pace = (self.source.config.is_file && self.source.config.realtime).then(|| self.source.clock.now());
        let mut converter: Option<Converter> = None;
        let mut decoded = ffmpeg::frame::Video::empty();
        let mut packet = ffmpeg::Packet::empty();
        let mut frame_index: u64 = 0;
        let mut at_eof = false;
        // A network stream whose packets keep coming but decode to no frame (a camera sending
        // only audio, or garbage) is as dead as a silent one. The limit is the read timeout, or
        // three frame intervals of a slow camera, and three times that before the first frame
        // (an RTSP camera may send its first key frame only seconds after connecting).
        let stall_limit =
            self.source.config.read_timeout.max(Duration::from_secs_f64(3.0 / self.source.config.fps.max(0.001)));
        let mut last_frame: Option<Instant> = None;
        // Decoder time since the last kept frame: sampled-out frames cost the next kept one.
        let mut decode_time = Duration::ZERO;
        loop {
            if self.stopped() {
                return Ok(RunEnd::Stopped);
            }
            if !self.source.config.is_file {
                let (since, limit) = match last_frame {
                    Some(at) => (at, stall_limit),
                    None => (opened, stall_limit * 3),
                };
                if since.elapsed() > limit {
                    return Err(format!("stalled: no frame for {} ms", limit.as_millis()));
                }
            }
            if !at_eof {
                last_activity.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
                match packet.read(&mut input) {
                    Ok(()) if packet.stream() != stream_index => continue,
                    Ok(()) => {
                        let started = Instant::now();
                        // A corrupt packet is skipped; the decoder resyncs at the next key frame.
                        let _ = decoder.send_packet(&packet);
                        decode_time += started.elapsed();
                    }
                    Err(ffmpeg::Error::Eof) => {
                        at_eof = true;
                        let _ = decoder.send_eof();
                    }
                    Err(ffmpeg::Error::InvalidData) => continue,
                    Err(_) if self.stopped() => return Ok(RunEnd::Stopped),
                    Err(e) => return Err(format!("read failed: {e}")),
                }
            }
            let mut got_frame = false;
            loop {
                let started = Instant::now();
                if decoder.receive_frame(&mut decoded).is_err() {
                    break;
                }
                if hardware {
                    decoder::download(&mut decoded, &mut downloaded)?;
                }
                decode_time += started.elapsed();
                got_frame = true;
                last_frame = Some(Instant::now());
                self.source.status.decoded.inc();
                if self.source.status.state() != StreamState::Streaming {
                    self.source.status.set_state(StreamState::Streaming, None);
                }
                let index = frame_index;
                frame_index += 1;
                if index < skip {
                    decode_time = Duration::ZERO;
                    continue;
                }
                if !sampler.keep(index - skip) {
                    continue;
                }
                if let Some(start) = pace {
                    let due = start + Duration::from_secs_f64((index - skip) as f64 / source_fps);
                    self.sleep(due.saturating_duration_since(self.source.clock.now()));
                }
                let captured = Instant::now();
                let captured_at = if self.source.config.is_file {
                    self.position.media.at(index, source_fps)
                } else {
                    SystemTime::now()
                };
                let span = self.frame_span();
                let convert_started = Instant::now();
                let decode_span =
                    crate::child_span!(&span, "decode", width = decoded.width(), height = decoded.height());
                let plan_version = self.source.status.frame_plan.version();
                let conv = match &mut converter {
                    Some(c) if c.fits(&decoded, plan_version) => c,
                    slot => slot.insert(self.converter_for(&decoded)?),
                };
                let (pixels, letterbox) = decode_span.in_scope(|| conv.convert(&mut decoded))?;
                drop(decode_span);
                self.source.metrics.stages.decode.record(std::mem::take(&mut decode_time) + convert_started.elapsed());
                self.injected_fault();
                if let Some(end) = self.hand_on((pixels, letterbox), captured, captured_at, span) {
                    return Ok(end);
                }
            }
            if at_eof && !got_frame {
                self.position.media.ended(frame_index, source_fps);
                return Ok(RunEnd::EndOfFile);
            }
        }
    }
}

impl Streamer {
    /// A converter for frames like `frame` under the camera's current plan; says so when the
    /// plan's crop is not inside the frame (it is clamped, or the whole frame is used).
    #[cfg(feature = "ffmpeg")]
    fn converter_for(&self, frame: &ffmpeg::frame::Video) -> Result<Converter, String> {
        let plan = self.source.status.frame_plan.get();
        let converter = Converter::new(frame, &self.source.config, plan)?;
        let (camera, region) = (&self.source.config.camera_id, converter.letterbox.region);
        if let Some(crop) = plan.1.crop {
            let (width, height) = (frame.width(), frame.height());
            if !converter.letterbox.is_cropped() {
                let why = "crop covers the whole frame or none of it: not cropping";
                tracing::warn!(%camera, ?crop, width, height, "{why}");
            } else {
                tracing::info!(%camera, ?region, width, height, ratio = converter.letterbox.ratio, "cropping");
            }
        }
        Ok(converter)
    }
}

/// A container frame rate we believe: a whole number, or an NTSC-style n/1001, in 1..=240 fps.
#[cfg(feature = "ffmpeg")]
fn plausible_rate(rate: ffmpeg::Rational) -> Option<f64> {
    let (num, den) = (rate.numerator(), rate.denominator());
    if num <= 0 || !(den == 1 || den == 1001) {
        return None;
    }
    let fps = num as f64 / den as f64;
    (1.0..=240.0).contains(&fps).then_some(fps)
}

/// Keeps frames so that `target` of every `source` per second pass, evenly spread.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    ratio: f64,
}

impl Sampler {
    pub fn new(source_fps: f64, target_fps: f64) -> Self {
        Self { ratio: (target_fps / source_fps).min(1.0) }
    }

    pub fn keep(&self, index: u64) -> bool {
        let slot = |i: u64| (i as f64 * self.ratio).floor() as u64;
        index == 0 || slot(index) > slot(index - 1)
    }
}

/// Scales decoded frames (the plan's crop of them) to the letterboxed size in BGR, lays them out
/// as model input and, when the plan says so, stretches their levels.
#[cfg(feature = "ffmpeg")]
struct Converter {
    scaler: scaling::Context,
    letterbox: Letterbox,
    format: Pixel,
    /// The `FramePlanCell` version this converter was built for.
    plan_version: u64,
    normalise: bool,
    bgr: ffmpeg::frame::Video,
    pixels: Vec<u8>,
}

#[cfg(feature = "ffmpeg")]
impl Converter {
    fn new(
        frame: &ffmpeg::frame::Video,
        config: &SourceConfig,
        (plan_version, plan): (u64, FramePlan),
    ) -> Result<Self, String> {
        let region = plan.region(frame.width(), frame.height());
        let letterbox = config.letterbox(frame.width(), frame.height(), region);
        let (w, h) = letterbox.scaled_size();
        let r = letterbox.region;
        let scaler =
            scaling::Context::get(frame.format(), r.width, r.height, Pixel::BGR24, w, h, scaling::Flags::BILINEAR)
                .map_err(|e| format!("cannot scale {}x{} {:?}: {e}", r.width, r.height, frame.format()))?;
        Ok(Self {
            scaler,
            letterbox,
            format: frame.format(),
            plan_version,
            normalise: plan.normalise,
            bgr: ffmpeg::frame::Video::empty(),
            pixels: Vec::new(),
        })
    }

    /// Whether `frame` is of the size and format this converter was built for, under the plan of
    /// version `plan_version`.
    fn fits(&self, frame: &ffmpeg::frame::Video, plan_version: u64) -> bool {
        frame.width() == self.letterbox.src_width
            && frame.height() == self.letterbox.src_height
            && frame.format() == self.format
            && plan_version == self.plan_version
    }

    /// Converts `frame`, which it crops in place (only its plane pointers and size change: no copy).
    fn convert(&mut self, frame: &mut ffmpeg::frame::Video) -> Result<(Bytes, Letterbox), String> {
        if self.letterbox.is_cropped() {
            crop_in_place(frame, &self.letterbox)?;
        }
        self.scaler.run(frame, &mut self.bgr).map_err(|e| format!("scaling failed: {e}"))?;
        self.letterbox.write_interleaved(self.bgr.data(0), self.bgr.stride(0), &mut self.pixels);
        if self.normalise {
            crate::detector::levels::normalise(&self.letterbox, &mut self.pixels);
        }
        self.letterbox.fill_overview(&mut self.pixels);
        Ok((Bytes::from(std::mem::take(&mut self.pixels)), self.letterbox))
    }
}

/// Narrows a decoded software frame to the letterbox's region with FFmpeg's crop fields: its
/// plane pointers move to the region's corner (even, so the chroma planes stay in step) and its
/// size shrinks. The buffers are the decoder's, untouched; the next `receive_frame` resets all.
#[cfg(feature = "ffmpeg")]
fn crop_in_place(frame: &mut ffmpeg::frame::Video, letterbox: &Letterbox) -> Result<(), String> {
    let r = letterbox.region;
    // SAFETY: `frame` is a valid decoded frame of `src_width` x `src_height` (checked by `fits`)
    // and the region lies inside it (`Letterbox::cropped`).
    let code = unsafe {
        let raw = frame.as_mut_ptr();
        (*raw).crop_left = r.x as usize;
        (*raw).crop_top = r.y as usize;
        (*raw).crop_right = (letterbox.src_width - r.x - r.width) as usize;
        (*raw).crop_bottom = (letterbox.src_height - r.y - r.height) as usize;
        // AV_FRAME_CROP_UNALIGNED: exactly the region, even where the pointers lose alignment.
        ffmpeg::ffi::av_frame_apply_cropping(raw, 1)
    };
    if code < 0 {
        return Err(format!("cannot crop the frame to {r:?}: {}", ffmpeg::Error::from(code)));
    }
    Ok(())
}

/// Error text with the camera URL and every secret in it removed.
fn sanitize(error: &str, url: &str) -> String {
    let mut out = error.replace(url, "<camera url>");
    for secret in crate::camera_spec::url_secrets(url) {
        out = out.replace(&secret, "***");
    }
    out
}

/// The decode loop of one camera, run on the calling thread in a unit test.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Position, Source, SourceConfig, Streamer};
    use crate::actors::gpu::batch::FrameSink;
    use crate::actors::status::CameraStatus;
    use crate::metrics::Metrics;
    use crate::supervision::{stop_signal, BreakerConfig, ChildView, ManualClock, RestartPolicy, Supervisor};

    /// Runs `config`'s stream into `sink` on `clock` until it ends (the sink ends it by
    /// detaching, or the stream fails), under a supervisor that never restarts it.
    pub fn run_stream(config: SourceConfig, sink: Arc<dyn FrameSink>, clock: Arc<ManualClock>) -> Arc<CameraStatus> {
        let metrics = Arc::new(Metrics::new());
        let breaker = BreakerConfig { failure_threshold: 5, open_for: Duration::from_secs(10), half_open_successes: 1 };
        let status = Arc::new(CameraStatus::new(config.camera_id.clone(), 0, 1, &metrics, &breaker));
        let (_stop, signal) = stop_signal();
        let source = Source::new(config, status.clone(), sink, metrics, clock, signal);
        let policy = RestartPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
            healthy_after: Duration::from_secs(60),
            max_restarts: 1,
            within: Duration::from_secs(60),
            jitter: 0.0,
        };
        let supervisor =
            Supervisor::spawn("test", policy, Box::new(|_: &str, _: &str| {}), Box::new(|_: &ChildView| {}), || {});
        let reporter = supervisor.add("decode", None, |_, _| Ok(()));
        let position = std::mem::replace(&mut *source.position.lock(), Position::taken());
        Streamer { source, reporter, position }.run();
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(source: f64, target: f64, n: u64) -> Vec<u64> {
        let s = Sampler::new(source, target);
        (0..n).filter(|&i| s.keep(i)).collect()
    }

    #[test]
    fn sampling_spreads_frames_evenly() {
        assert_eq!(kept(30.0, 15.0, 8), vec![0, 2, 4, 6]);
        assert_eq!(kept(30.0, 10.0, 7), vec![0, 3, 6]);
        assert_eq!(kept(30.0, 30.0, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(kept(25.0, 60.0, 3), vec![0, 1, 2], "never more than the source");
        assert_eq!(kept(30.0, 10.0, 30).len(), 10);
    }

    #[test]
    #[cfg(feature = "ffmpeg")]
    fn implausible_container_rates_are_ignored() {
        assert_eq!(plausible_rate(ffmpeg::Rational::new(25, 1)), Some(25.0));
        assert!((plausible_rate(ffmpeg::Rational::new(30000, 1001)).unwrap() - 29.97).abs() < 0.01);
        assert_eq!(plausible_rate(ffmpeg::Rational::new(214748359, 3579125)), None);
        assert_eq!(plausible_rate(ffmpeg::Rational::new(0, 1)), None);
        assert_eq!(plausible_rate(ffmpeg::Rational::new(90000, 1)), None);
    }

    #[test]
    fn errors_lose_the_url_and_password() {
        let url = "rtsp://admin:s3cret@cam/live?token=t0k";
        let e = sanitize("cannot open rtsp://admin:s3cret@cam/live: refused (s3cret, t0k)", url);
        assert!(!e.contains("s3cret") && !e.contains("t0k"), "{e}");
    }
}
