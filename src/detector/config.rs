//! The detector's section of the settings (`[model]`, `device.kind`): which model file, how its
//! output is read, and on which devices it runs.

use std::path::PathBuf;

use serde::Deserialize;

use super::drift::DriftSettings;

/// The ONNX Runtime library found at build time (`build.rs`): the `onnxruntime` wheel's.
pub const DEFAULT_ONNXRUNTIME_LIBRARY: &str = env!("ITS_ONNXRUNTIME_LIB");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFamily {
    /// YOLOX raw head output `[N, anchors, 5 + classes]`, objectness and classes already sigmoid.
    Yolox,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Model file made by `scripts/convert_model.py`; relative paths are from the working directory.
    /// Its extension picks the backend: `.onnx` runs on ONNX Runtime (CPU devices), others are
    /// TorchScript and run on libtorch (CPU or CUDA).
    pub path: PathBuf,
    pub family: ModelFamily,
    /// The network input's longest side in pixels: a frame is scaled to fit a square of it, and
    /// the input is the scaled frame rounded up to whole cells of 32 (`detector::input`).
    pub input_size: u32,
    /// A third-scale copy of the frame as a second, small model input, for vehicles too large
    /// for the main view (`detector::input`).
    pub overview: bool,
    /// Minimum objectness x class score kept.
    pub score_threshold: f32,
    /// IoU above which the weaker of two boxes of one class group is suppressed.
    pub nms_iou: f32,
    /// A model reloaded through the API rolls back to the previous version when at least this
    /// share of its batches fail, judged over `rollback_window` batches.
    pub rollback_failure_rate: f64,
    pub rollback_window: u32,
    /// The ONNX Runtime shared library; empty: the one found at build time.
    pub onnxruntime_library: PathBuf,
    /// `[model.drift]`: per camera, what the model sees against a reference (`drift`).
    pub drift: DriftSettings,
    /// How candidate versions are tried and promoted (`actors::gpu::candidate`).
    pub lifecycle: LifecycleSettings,
}

/// `[model.lifecycle]`: shadow, canary and the bars a candidate must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSettings {
    /// Share of a shadowed camera's frames the candidate also runs on, when the request names none.
    pub shadow_share: f64,
    /// Frames each device's shadow lane queues; when full the oldest is dropped.
    pub shadow_queue: usize,
    /// Share of the cameras a canary serves when promoted automatically.
    pub canary_share: f64,
    /// Frames compared before a stage is judged.
    pub min_frames: u64,
    /// Bars: agreement F1 with the reference, accuracy proxy, and (canary) model-call failure rate.
    pub min_agreement_f1: f64,
    pub min_accuracy: f64,
    pub max_failure_rate: f64,
    /// Seconds the bars must hold before an automatic promotion.
    pub hold_s: u64,
    /// Promote by itself (shadow to canary to all) once the bars held for `hold_s`; a failing
    /// canary is rolled back whatever this says.
    pub auto_promote: bool,
    /// How often the active candidate is judged, milliseconds.
    pub check_interval_ms: u64,
}

impl LifecycleSettings {
    pub fn hold(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.hold_s)
    }

    pub fn check_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.check_interval_ms)
    }

    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let shares = [("shadow_share", self.shadow_share), ("canary_share", self.canary_share)];
        for (name, share) in shares {
            if !(share > 0.0 && share <= 1.0) {
                errors.push(format!("model.lifecycle.{name} must be in (0, 1]"));
            }
        }
        let bars = [
            ("min_agreement_f1", self.min_agreement_f1),
            ("min_accuracy", self.min_accuracy),
            ("max_failure_rate", self.max_failure_rate),
        ];
        for (name, bar) in bars {
            if !(0.0..=1.0).contains(&bar) {
                errors.push(format!("model.lifecycle.{name} must be in 0..=1"));
            }
        }
        if !(1..=1024).contains(&self.shadow_queue) {
            errors.push("model.lifecycle.shadow_queue must be in 1..=1024".into());
        }
        if !(100..=60_000).contains(&self.check_interval_ms) {
            errors.push("model.lifecycle.check_interval_ms must be in 100..=60000".into());
        }
        errors
    }
}

impl ModelSettings {
    /// The ONNX Runtime library to load: the configured one, else the one found at build time.
    pub fn onnxruntime_library(&self) -> PathBuf {
        if self.onnxruntime_library.as_os_str().is_empty() {
            PathBuf::from(DEFAULT_ONNXRUNTIME_LIBRARY)
        } else {
            self.onnxruntime_library.clone()
        }
    }

    pub fn backend(&self) -> Backend {
        Backend::of(&self.path)
    }

    /// The model's name in metrics and the API: its file name without extensions.
    pub fn name(&self) -> String {
        let file = self.path.file_name().and_then(|f| f.to_str()).unwrap_or("model");
        file.split('.').next().filter(|n| !n.is_empty()).unwrap_or("model").to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Every CUDA device libtorch sees, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

/// What runs a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    OnnxRuntime,
    TorchScript,
}

impl Backend {
    /// `.onnx` files run on ONNX Runtime, everything else on libtorch.
    pub fn of(path: &std::path::Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("onnx") => Backend::OnnxRuntime,
            _ => Backend::TorchScript,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::OnnxRuntime => "onnxruntime",
            Backend::TorchScript => "torchscript",
        }
    }
}
