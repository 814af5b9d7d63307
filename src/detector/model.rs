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
use super::input::{Overview, PAD_VALUE};
use super::onnx::OnnxModel;
use super::torchscript::TorchScript;
use super::yolox::Decoded;
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

/// The model's output for a batch: `[N, rows, row_len]` values, for inputs of `input` pixels.
pub struct RawOutput {
    pub values: Vec<f32>,
    pub row_len: usize,
    pub input: (u32, u32),
}

pub struct Detector {
    runner: Runner,
    device: Device,
    family: ModelFamily,
    input_size: u32,
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
            score_threshold: settings.score_threshold,
            nms_iou: settings.nms_iou,
        };
        let side = settings.input_size;
        let grey = vec![PAD_VALUE; 3 * (side * side) as usize];
        detector.forward(&[(grey.as_slice(), (side, side))])?;
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

    /// Runs the model on images in the model layout, each `(pixels, (width, height))`, as one
    /// batch of the largest width and height (smaller images padded grey), and returns the raw
    /// output `[N, rows, row_len]` on the CPU, shape-checked, with its row length and the batch's
    /// input size: what `bench` measures as "model-only".
    pub fn forward(&self, images: &[(&[u8], (u32, u32))]) -> Result<RawOutput, DetectorError> {
        let (bytes, input) = stack(images)?;
        let shape = [images.len() as i64, input.1 as i64, input.0 as i64, 3];
        let (values, size) = match &self.runner {
            Runner::Onnx(model) => model.forward(&bytes, shape)?,
            Runner::Torch(model) => model.forward(&bytes, shape)?,
        };
        let rows = yolox::rows_for(input);
        if size.len() != 3 || size[0] != images.len() as i64 || size[1] != rows as i64 || size[2] < 6 {
            return Err(DetectorError::Shape { got: size, rows });
        }
        Ok(RawOutput { values, row_len: size[2] as usize, input })
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

    /// Detections per frame, in source-frame pixels, after NMS: the main pictures in one batch,
    /// then the overviews of the frames that have one in another.
    pub fn detect(&self, frames: &[(&[u8], Letterbox)]) -> Result<Vec<Vec<Detection>>, DetectorError> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let mut pictures = Vec::with_capacity(frames.len());
        let mut overviews = Vec::new();
        for (index, (pixels, letterbox)) in frames.iter().enumerate() {
            if pixels.len() != letterbox.input_len() {
                return Err(DetectorError::Input { index, got: pixels.len(), expected: letterbox.input_len() });
            }
            let (picture, overview) = pixels.split_at(letterbox.main_len());
            pictures.push((picture, letterbox.input));
            if let Some(o) = &letterbox.overview {
                overviews.push((index, overview, o));
            }
        }
        let mut decoded: Vec<Decoded> = self
            .decode(&pictures, frames.iter().map(|(_, letterbox)| (letterbox, None)))?
            .into_iter()
            .map(|main| Decoded { main, overview: Vec::new() })
            .collect();
        if !overviews.is_empty() {
            let images: Vec<_> = overviews.iter().map(|(_, pixels, o)| (*pixels, o.input)).collect();
            let views = overviews.iter().map(|&(index, _, o)| (&frames[index].1, Some(o)));
            for ((index, ..), found) in overviews.iter().zip(self.decode(&images, views)?) {
                decoded[*index].overview = found;
            }
        }
        Ok(decoded.into_iter().map(|d| nms::suppress_views(d, self.nms_iou)).collect())
    }

    /// One batch of images through the model, each decoded as the view of its letterbox given
    /// with it.
    fn decode<'a>(
        &self,
        images: &[(&[u8], (u32, u32))],
        views: impl Iterator<Item = (&'a Letterbox, Option<&'a Overview>)>,
    ) -> Result<Vec<Vec<Detection>>, DetectorError> {
        let RawOutput { values, row_len, input } = self.forward(images)?;
        let per_image = yolox::rows_for(input) * row_len;
        Ok(values
            .chunks_exact(per_image)
            .zip(views)
            .map(|(rows, (letterbox, overview))| match self.family {
                ModelFamily::Yolox => yolox::decode(rows, row_len, input, letterbox, overview, self.score_threshold),
            })
            .collect())
    }
}

/// Images of `(width, height)` pixels (interleaved BGR) as one batch of the largest width and
/// height, each at the top left of its slot, padded grey.
fn stack(images: &[(&[u8], (u32, u32))]) -> Result<(Vec<u8>, (u32, u32)), DetectorError> {
    let width = images.iter().map(|(_, size)| size.0).max().unwrap_or(0) as usize;
    let height = images.iter().map(|(_, size)| size.1).max().unwrap_or(0) as usize;
    let slot = 3 * width * height;
    let mut bytes = Vec::with_capacity(slot * images.len());
    for (index, (pixels, (w, h))) in images.iter().enumerate() {
        let (row, expected) = (3 * *w as usize, 3 * (*w * *h) as usize);
        if pixels.len() != expected || expected == 0 {
            return Err(DetectorError::Input { index, got: pixels.len(), expected });
        }
        let start = bytes.len();
        if *w as usize == width {
            bytes.extend_from_slice(pixels);
        } else {
            for line in pixels.chunks_exact(row) {
                bytes.extend_from_slice(line);
                bytes.resize(bytes.len() + 3 * width - row, PAD_VALUE);
            }
        }
        bytes.resize(start + slot, PAD_VALUE);
    }
    Ok((bytes, (width as u32, height as u32)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_as_large_as_its_largest_image_and_pads_the_others_grey() {
        let wide = vec![1u8; 3 * 64 * 32]; // 64x32
        let tall = vec![2u8; 3 * 32 * 64]; // 32x64
        let (bytes, input) = stack(&[(&wide, (64, 32)), (&tall, (32, 64))]).unwrap();
        assert_eq!(input, (64, 64));
        let (first, second) = bytes.split_at(3 * 64 * 64);
        let row = 3 * 64;
        assert!(first[..32 * row].iter().all(|&b| b == 1) && first[32 * row..].iter().all(|&b| b == PAD_VALUE));
        for line in second.chunks_exact(row) {
            assert!(line[..row / 2].iter().all(|&b| b == 2) && line[row / 2..].iter().all(|&b| b == PAD_VALUE));
        }
        let short = vec![0u8; 5];
        let Err(DetectorError::Input { index, got, expected }) = stack(&[(&wide, (64, 32)), (&short, (32, 32))]) else {
            panic!("a short image was stacked")
        };
        assert_eq!((index, got, expected), (1, 5, 3 * 32 * 32));
    }
}
