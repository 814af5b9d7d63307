//! The detection model: a model file on one device, run by the backend its file calls for, plus
//! the output decoder.
//!
//! A `Detector` is owned by one inference thread (libtorch modules are not `Sync`); it turns a
//! batch of frames in the model layout into detections per frame. `.onnx` files run on ONNX
//! Runtime (CPU devices), other files are TorchScript and run on libtorch (CPU or CUDA).

use std::path::Path;

use tch::Device;

use super::config::{Backend, DeviceKind, ModelFamily, ModelSettings};
pub use super::error::DetectorError;
use super::onnx::OnnxModel;
use super::torchscript::TorchScript;
use super::{nms, yolox, Letterbox};
use crate::objects::Detection;

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

/// The loader of model files (either backend).
pub fn file_loader() -> ModelLoader {
    std::sync::Arc::new(|settings, device| Ok(Box::new(Detector::load(settings, device)?)))
}

enum Runner {
    Onnx(OnnxModel),
    Torch(TorchScript),
}

impl Model for Detector {
    fn detect(&self, frames: &[(&[u8], Letterbox)]) -> Result<Vec<Vec<Detection>>, DetectorError> {
        Detector::detect(self, frames)
    }
}

pub struct Detector {
    runner: Runner,
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
    /// On the CPU, ONNX Runtime gets `threads` intra-op threads (libtorch's count is set per
    /// thread by the caller, `set_up_thread`).
    pub fn load(settings: &ModelSettings, device: Device) -> Result<Self, DetectorError> {
        let runner = match (Backend::of(&settings.path), device) {
            (Backend::OnnxRuntime, Device::Cpu) => {
                let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
                Runner::Onnx(OnnxModel::load(&settings.path, &settings.onnxruntime_library(), threads)?)
            }
            (Backend::OnnxRuntime, _) => {
                return Err(DetectorError::Load {
                    path: settings.path.display().to_string(),
                    message: format!(
                        "ONNX models run on the CPU only; {} needs a TorchScript file",
                        device_name(device)
                    ),
                })
            }
            (Backend::TorchScript, _) => Runner::Torch(TorchScript::load(&settings.path, device)?),
        };
        let detector = Detector {
            runner,
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

    pub fn backend(&self) -> Backend {
        match self.runner {
            Runner::Onnx(_) => Backend::OnnxRuntime,
            Runner::Torch(_) => Backend::TorchScript,
        }
    }

    pub fn input_size(&self) -> u32 {
        self.input_size
    }

    /// Runs the model on frames in the model layout and returns the raw output `[N, rows, row_len]`
    /// on the CPU, shape-checked: what `bench` measures as "model-only".
    pub fn forward(&self, frames: &[&[u8]]) -> Result<(Vec<f32>, usize), DetectorError> {
        let side = self.input_size as usize;
        let expected = 3 * side * side;
        let mut bytes = Vec::with_capacity(expected * frames.len());
        for (index, frame) in frames.iter().enumerate() {
            if frame.len() != expected {
                return Err(DetectorError::Input { index, got: frame.len(), expected });
            }
            bytes.extend_from_slice(frame);
        }
        let shape = [frames.len() as i64, side as i64, side as i64, 3];
        let (values, size) = match &self.runner {
            Runner::Onnx(model) => model.forward(&bytes, shape)?,
            Runner::Torch(model) => model.forward(&bytes, shape)?,
        };
        if size.len() != 3 || size[0] != frames.len() as i64 || size[1] != self.rows as i64 || size[2] < 6 {
            return Err(DetectorError::Shape { got: size, rows: self.rows });
        }
        Ok((values, size[2] as usize))
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
                nms::suppress_views(yolox::decode(rows, row_len, letterbox, self.score_threshold), self.nms_iou)
            }
        }
    }
}

/// The inference devices for a device setting: each CUDA device libtorch sees, else the CPU. An
/// ONNX model runs on the CPU, so with it "auto" means the CPU.
pub fn select_devices(kind: DeviceKind, backend: Backend) -> Result<Vec<Device>, String> {
    let cuda = tch::Cuda::device_count() as usize;
    match (kind, backend) {
        (DeviceKind::Cpu, _) | (DeviceKind::Auto, Backend::OnnxRuntime) => Ok(vec![Device::Cpu]),
        (DeviceKind::Cuda, Backend::OnnxRuntime) => {
            Err("device.kind = \"cuda\" needs a TorchScript model.path: ONNX models run on the CPU".into())
        }
        (DeviceKind::Cuda, _) if cuda == 0 => Err("device.kind = \"cuda\" but libtorch sees no CUDA device".into()),
        (DeviceKind::Cuda | DeviceKind::Auto, _) if cuda > 0 => Ok((0..cuda).map(Device::Cuda).collect()),
        (DeviceKind::Auto | DeviceKind::Cuda, _) => Ok(vec![Device::Cpu]),
    }
}

/// The inference devices with their names: the CPU as `workers` devices of its own (`cpu` for
/// one, `cpu:0`, `cpu:1`, ... for more), each with its inference thread, batches and queue.
pub fn inference_devices(kind: DeviceKind, backend: Backend, workers: usize) -> Result<Vec<(Device, String)>, String> {
    let mut named = Vec::new();
    for device in select_devices(kind, backend)? {
        match device {
            Device::Cpu if workers > 1 => named.extend((0..workers).map(|i| (device, format!("cpu:{i}")))),
            _ => named.push((device, device_name(device))),
        }
    }
    Ok(named)
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
