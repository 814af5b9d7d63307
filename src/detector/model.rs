//! The detection model: a TorchScript module on one device, plus its output decoder.
//!
//! A `Detector` is owned by one inference thread (libtorch modules are not `Sync`); it turns a
//! batch of frames in the model layout into detections per frame.

use std::path::Path;

use tch::{CModule, Device, Kind, Tensor};

use super::config::{DeviceKind, ModelFamily, ModelSettings};
use super::{nms, yolox, Letterbox};
use crate::objects::Detection;

#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error("cannot load model {path}: {message}")]
    Load { path: String, message: String },
    #[error("model output has shape {got:?}, expected [N, {rows}, >= 6]")]
    Shape { got: Vec<i64>, rows: usize },
    #[error("frame {index} has {got} bytes, expected {expected}")]
    Input { index: usize, got: usize, expected: usize },
    #[error("inference failed: {0}")]
    Inference(String),
    /// The device ran out of memory for this batch; a smaller one may fit.
    #[error("device out of memory: {0}")]
    OutOfMemory(String),
}

impl DetectorError {
    /// Whether a libtorch message reports exhausted device memory (CUDA's "out of memory", the
    /// CPU allocator's "DefaultCPUAllocator: can't allocate memory").
    pub fn is_out_of_memory(message: &str) -> bool {
        let lower = message.to_ascii_lowercase();
        lower.contains("out of memory") || lower.contains("can't allocate memory")
    }
}

impl From<tch::TchError> for DetectorError {
    fn from(e: tch::TchError) -> Self {
        let message = e.to_string();
        if DetectorError::is_out_of_memory(&message) {
            DetectorError::OutOfMemory(message)
        } else {
            DetectorError::Inference(message)
        }
    }
}

/// What an inference thread runs: a batch of frames in the model layout in, detections per frame
/// out. The TorchScript [`Detector`] in the service; a scripted stand-in in the concurrency tests,
/// which need no model file.
pub trait Model: Send + Sync {
    fn detect(&self, frames: &[(&[u8], Letterbox)]) -> Result<Vec<Vec<Detection>>, DetectorError>;
}

/// Loads a model onto a device: at start, and again when a supervised inference thread is
/// restarted (a failed call may have left the loaded one unusable).
pub type ModelLoader =
    std::sync::Arc<dyn Fn(&ModelSettings, Device) -> Result<Box<dyn Model>, DetectorError> + Send + Sync>;

/// The loader of TorchScript files.
pub fn torchscript_loader() -> ModelLoader {
    std::sync::Arc::new(|settings, device| Ok(Box::new(Detector::load(settings, device)?)))
}

impl Model for Detector {
    fn detect(&self, frames: &[(&[u8], Letterbox)]) -> Result<Vec<Vec<Detection>>, DetectorError> {
        Detector::detect(self, frames)
    }
}

pub struct Detector {
    module: CModule,
    device: Device,
    family: ModelFamily,
    input_size: u32,
    rows: usize,
    score_threshold: f32,
    nms_iou: f32,
}

impl Detector {
    /// Loads the module onto `device` and validates it with a smoke inference: a model whose
    /// output does not have the family's layout is rejected here, not at the first real frame.
    pub fn load(settings: &ModelSettings, device: Device) -> Result<Self, DetectorError> {
        // The profiling graph executor re-specialises the frozen graph and ran YOLOX-Nano at
        // 32 frames/s on 2 CPU threads where the plain executor runs it at 40 (Python: 42);
        // a frozen convolutional graph gains nothing from profiling. Process-wide, set once.
        static EXECUTOR: std::sync::Once = std::sync::Once::new();
        EXECUTOR.call_once(|| tch::jit::set_profiling_mode(false));
        let module = CModule::load_on_device(&settings.path, device)
            .map_err(|e| DetectorError::Load { path: settings.path.display().to_string(), message: e.to_string() })?;
        let detector = Detector {
            module,
            device,
            family: settings.family,
            input_size: settings.input_size,
            rows: yolox::rows_for(settings.input_size),
            score_threshold: settings.score_threshold,
            nms_iou: settings.nms_iou,
        };
        let grey = vec![crate::detector::input::PAD_VALUE; 3 * (settings.input_size as usize).pow(2)];
        detector.forward(&[grey.as_slice()])?;
        Ok(detector)
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn input_size(&self) -> u32 {
        self.input_size
    }

    /// Runs the model on frames in the model layout and returns the raw output `[N, rows, row_len]`
    /// on the CPU, shape-checked.
    pub fn forward(&self, frames: &[&[u8]]) -> Result<(Vec<f32>, usize), DetectorError> {
        let input = self.input_tensor(frames)?;
        let output = self.forward_tensor(&input)?;
        let size = output.size();
        if size.len() != 3 || size[0] != frames.len() as i64 || size[1] != self.rows as i64 || size[2] < 6 {
            return Err(DetectorError::Shape { got: size, rows: self.rows });
        }
        let row_len = size[2] as usize;
        let flat = output.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view(-1);
        let values = Vec::<f32>::try_from(&flat)?;
        Ok((values, row_len))
    }

    /// The frames as one `[N, 3, S, S]` float tensor on the device (bytes cross to the device as
    /// `u8`, a quarter of the traffic, and are widened there).
    pub fn input_tensor(&self, frames: &[&[u8]]) -> Result<Tensor, DetectorError> {
        let side = self.input_size as usize;
        let expected = 3 * side * side;
        let mut bytes = Vec::with_capacity(expected * frames.len());
        for (index, frame) in frames.iter().enumerate() {
            if frame.len() != expected {
                return Err(DetectorError::Input { index, got: frame.len(), expected });
            }
            bytes.extend_from_slice(frame);
        }
        let side = side as i64;
        Ok(Tensor::from_slice(&bytes)
            .view([frames.len() as i64, 3, side, side])
            .to_device(self.device)
            .to_kind(Kind::Float))
    }

    /// The model alone, without autograd: what `bench` measures as "model-only".
    pub fn forward_tensor(&self, input: &Tensor) -> Result<Tensor, DetectorError> {
        let output = tch::no_grad(|| self.module.forward_ts(&[input]))?;
        Ok(output)
    }

    /// Detections of one real frame, as a reloaded model's smoke test: it must run and give
    /// finite boxes.
    pub fn smoke_test(&self, pixels: &[u8], letterbox: Letterbox) -> Result<usize, DetectorError> {
        let detections = self.detect(&[(pixels, letterbox)])?.pop().unwrap_or_default();
        if let Some(bad) =
            detections.iter().find(|d| !(d.score.is_finite() && d.bbox.x1.is_finite() && d.bbox.y2.is_finite()))
        {
            return Err(DetectorError::Inference(format!("non-finite detection {bad:?}")));
        }
        Ok(detections.len())
    }

    /// Detections per frame, in source-frame pixels, after NMS.
    pub fn detect(&self, frames: &[(&[u8], Letterbox)]) -> Result<Vec<Vec<Detection>>, DetectorError> {
        let pixels: Vec<&[u8]> = frames.iter().map(|(p, _)| *p).collect();
        let (values, row_len) = self.forward(&pixels)?;
        let per_frame = self.rows * row_len;
        Ok(frames
            .iter()
            .enumerate()
            .map(|(i, (_, letterbox))| self.decode(&values[i * per_frame..(i + 1) * per_frame], row_len, letterbox))
            .collect())
    }

    fn decode(&self, rows: &[f32], row_len: usize, letterbox: &Letterbox) -> Vec<Detection> {
        match self.family {
            ModelFamily::Yolox => {
                nms::suppress(yolox::decode(rows, row_len, letterbox, self.score_threshold), self.nms_iou)
            }
        }
    }
}

/// The inference devices for a device setting: each CUDA device libtorch sees, else the CPU.
pub fn select_devices(kind: DeviceKind) -> Result<Vec<Device>, String> {
    let cuda = tch::Cuda::device_count() as usize;
    match kind {
        DeviceKind::Cpu => Ok(vec![Device::Cpu]),
        DeviceKind::Cuda if cuda == 0 => Err("device.kind = \"cuda\" but libtorch sees no CUDA device".into()),
        DeviceKind::Cuda | DeviceKind::Auto if cuda > 0 => Ok((0..cuda).map(Device::Cuda).collect()),
        DeviceKind::Auto | DeviceKind::Cuda => Ok(vec![Device::Cpu]),
    }
}

/// Whether a model file exists where the settings say; a clear hint beats libtorch's message.
pub fn check_model_file(path: &Path) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!("model file {} not found; run scripts/setup.sh to convert it", path.display()))
    }
}

pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
