//! The simulator's camera and detector (`[simulator]`): no video, no model file, no libtorch.
//!
//! A simulated camera is `sim://NAME?crossings_per_min=R`. Its decode thread does not decode:
//! it writes a small header (the camera's seed, rate and frame rate, and the frame's time) as the
//! frame's pixels, at the camera's frame rate in real time, and hands it to its device like any
//! frame. The device batches it with the others and calls its model, the `SimulatedDetector`,
//! which reads the header back and answers with the vehicles of the `scene` at that time. From
//! there on everything is the real pipeline: the connector shards, tracker, line counting,
//! analytics, outbox, Redis and PostgreSQL. So thousands of cameras can run on one machine to
//! measure the control plane and the sinks.
//!
//! A simulated frame is the header alone (40 bytes), not a letterboxed image of
//! `model.input_size`: nothing between the decode thread and the model reads the pixels, and
//! 1,000 cameras at 1 fps would otherwise allocate and fill half a gigabyte a second.

pub mod scene;

use bytes::Bytes;
use serde::Deserialize;

use super::{DetectorError, Letterbox, Model, ModelLoader};
use crate::objects::Detection;
pub use scene::{Scene, FRAME_HEIGHT, FRAME_WIDTH, LINE_Y};

/// The URL scheme of a simulated camera.
pub const SCHEME: &str = "sim";
/// Crossings per minute of a `sim://` URL that names none.
pub const DEFAULT_CROSSINGS_PER_MIN: f64 = 30.0;
pub const MAX_CROSSINGS_PER_MIN: f64 = 600.0;
/// The model name the simulator reports (metrics, breakers, events).
pub const MODEL_NAME: &str = "simulated";

/// The `[simulator]` section of the settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorSettings {
    /// Every device runs the synthetic detector (no model file is read) and cameras are
    /// `sim://NAME?crossings_per_min=R`. For load tests only.
    pub enabled: bool,
}

impl SimulatorSettings {
    /// Problems with the section given the tracker's `new_track_thresh`.
    pub fn validate(&self, new_track_thresh: f32) -> Vec<String> {
        if self.enabled && new_track_thresh > scene::SCORE {
            return vec![format!(
                "simulator.enabled: synthetic detections score {}, below tracker.new_track_thresh \
                 ({new_track_thresh}), so no track would start",
                scene::SCORE
            )];
        }
        Vec::new()
    }
}

/// A `sim://NAME?crossings_per_min=R` URL, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedCamera {
    /// What the vehicles' schedule derives from: the same name gives the same crossings.
    pub seed: u64,
    pub crossings_per_min: f64,
}

impl SimulatedCamera {
    /// `None` for a URL of another scheme; otherwise the camera or what is wrong with the URL
    /// (never quoting it).
    pub fn from_url(raw: &str) -> Option<Result<Self, String>> {
        let url = url::Url::parse(raw).ok().filter(|u| u.scheme() == SCHEME)?;
        Some(Self::parse(&url))
    }

    fn parse(url: &url::Url) -> Result<Self, String> {
        let name = url.host_str().filter(|h| !h.is_empty()).ok_or("url: a sim:// URL needs a name (sim://NAME)")?;
        if !matches!(url.path(), "" | "/") || url.port().is_some() || !url.username().is_empty() {
            return Err("url: a sim:// URL is sim://NAME?crossings_per_min=R, nothing more".into());
        }
        let mut crossings_per_min = DEFAULT_CROSSINGS_PER_MIN;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "crossings_per_min" => {
                    crossings_per_min = value
                        .parse::<f64>()
                        .ok()
                        .filter(|r| *r > 0.0 && *r <= MAX_CROSSINGS_PER_MIN)
                        .ok_or("url: crossings_per_min must be a number in (0, 600]")?;
                }
                _ => return Err("url: a sim:// URL takes only crossings_per_min".into()),
            }
        }
        Ok(Self { seed: seed_of(name), crossings_per_min })
    }

    /// The frame of this camera at `time_us` (microseconds since the epoch) sampled at `fps`.
    pub fn frame(&self, fps: f64, time_us: i64) -> Bytes {
        FrameHeader { seed: self.seed, crossings_per_min: self.crossings_per_min, fps, time_us }.encode()
    }

    /// Where a frame of this camera sits in the model input (nothing reads it: the detector
    /// answers in source pixels).
    pub fn letterbox(input_size: u32) -> Letterbox {
        Letterbox::new(FRAME_WIDTH, FRAME_HEIGHT, input_size)
    }
}

/// The seed of a camera name: the first 8 bytes of its SHA-256, the same on every machine.
fn seed_of(name: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// What a simulated frame carries instead of pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FrameHeader {
    seed: u64,
    crossings_per_min: f64,
    fps: f64,
    time_us: i64,
}

const MAGIC: &[u8; 8] = b"ITS-SIM1";
const HEADER_LEN: usize = 40;

impl FrameHeader {
    fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.seed.to_le_bytes());
        out.extend_from_slice(&self.crossings_per_min.to_le_bytes());
        out.extend_from_slice(&self.fps.to_le_bytes());
        out.extend_from_slice(&self.time_us.to_le_bytes());
        Bytes::from(out)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != HEADER_LEN || &bytes[..8] != MAGIC {
            return None;
        }
        let word = |i: usize| -> [u8; 8] { bytes[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes") };
        let header = Self {
            seed: u64::from_le_bytes(word(0)),
            crossings_per_min: f64::from_le_bytes(word(1)),
            fps: f64::from_le_bytes(word(2)),
            time_us: i64::from_le_bytes(word(3)),
        };
        let valid = |v: f64| v.is_finite() && v > 0.0;
        (valid(header.crossings_per_min) && valid(header.fps)).then_some(header)
    }
}

/// The model of every device while the simulator is on: reads each frame's header and answers
/// with the vehicles of its camera's scene at the frame's time.
#[derive(Debug, Default)]
pub struct SimulatedDetector;

impl Model for SimulatedDetector {
    fn detect(&self, frames: &[(&[u8], Letterbox)]) -> Result<Vec<Vec<Detection>>, DetectorError> {
        frames
            .iter()
            .enumerate()
            .map(|(index, (pixels, _))| {
                let header = FrameHeader::decode(pixels).ok_or(DetectorError::Input {
                    index,
                    got: pixels.len(),
                    expected: HEADER_LEN,
                })?;
                let scene = Scene::new(header.seed, header.crossings_per_min, header.fps);
                Ok(scene.detections_at(header.time_us as f64 / 1e6))
            })
            .collect()
    }
}

/// The loader of every device while the simulator is on: reads no file.
pub fn loader() -> ModelLoader {
    std::sync::Arc::new(|_, _| Ok(Box::new(SimulatedDetector)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(url: &str) -> Result<SimulatedCamera, String> {
        SimulatedCamera::from_url(url).expect("a sim:// URL")
    }

    #[test]
    fn urls_name_the_camera_and_its_rate() {
        let cam = camera("sim://gate-1?crossings_per_min=60").unwrap();
        assert_eq!(cam.crossings_per_min, 60.0);
        assert_eq!(cam.seed, camera("sim://gate-1?crossings_per_min=5").unwrap().seed, "the seed is the name's");
        assert_ne!(cam.seed, camera("sim://gate-2").unwrap().seed);
        assert_eq!(camera("sim://gate-1").unwrap().crossings_per_min, DEFAULT_CROSSINGS_PER_MIN);
        assert_eq!(camera("sim://gate-1/").unwrap().crossings_per_min, DEFAULT_CROSSINGS_PER_MIN);
        assert!(SimulatedCamera::from_url("rtsp://cam/live").is_none());
        for bad in [
            "sim://?crossings_per_min=5",
            "sim://a?crossings_per_min=0",
            "sim://a?crossings_per_min=601",
            "sim://a?crossings_per_min=NaN",
            "sim://a?crossings_per_min=fast",
            "sim://a?rate=5",
            "sim://a/path",
            "sim://a:99",
        ] {
            assert!(camera(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_frame_decodes_back_to_its_scene() {
        let cam = camera("sim://gate-1?crossings_per_min=120").unwrap();
        let time_us = 1_750_000_123_500_000;
        let frame = cam.frame(2.0, time_us);
        assert_eq!(frame.len(), HEADER_LEN);
        let letterbox = SimulatedCamera::letterbox(416);
        let other = cam.frame(2.0, time_us + 500_000);
        let got = SimulatedDetector.detect(&[(&frame, letterbox), (&other, letterbox)]).unwrap();
        let scene = Scene::new(cam.seed, 120.0, 2.0);
        assert_eq!(got[0], scene.detections_at(1_750_000_123.5));
        assert_eq!(got[1], scene.detections_at(1_750_000_124.0));
        assert!(!got[0].is_empty());
        assert_ne!(got[0], got[1], "vehicles move");
    }

    #[test]
    fn a_frame_without_a_header_is_refused() {
        let letterbox = SimulatedCamera::letterbox(64);
        let grey = vec![114u8; letterbox.input_len()];
        let err = SimulatedDetector.detect(&[(&grey, letterbox)]).unwrap_err();
        assert!(matches!(err, DetectorError::Input { index: 0, .. }), "{err}");
        let mut forged = camera("sim://a").unwrap().frame(1.0, 0).to_vec();
        forged[24..32].copy_from_slice(&0f64.to_le_bytes()); // fps 0
        assert!(SimulatedDetector.detect(&[(&forged, letterbox)]).is_err());
    }

    #[test]
    fn the_environment_turns_it_on() {
        use crate::settings::Settings;
        let env = [("ITS__SIMULATOR__ENABLED".to_string(), "true".to_string())].into();
        assert!(Settings::load_with_env(None, Some(env)).unwrap().simulator.enabled);
        assert!(!Settings::load_with_env(None, Some(Default::default())).unwrap().simulator.enabled, "off by default");
    }

    #[test]
    fn the_section_is_checked_against_the_tracker() {
        let on = SimulatorSettings { enabled: true };
        assert!(on.validate(0.6).is_empty());
        assert_eq!(on.validate(0.95).len(), 1);
        assert!(SimulatorSettings::default().validate(0.95).is_empty(), "off: nothing to check");
    }
}
