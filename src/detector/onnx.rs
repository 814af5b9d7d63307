//! The ONNX Runtime backend, for CPU devices: about three times libtorch's frames/s on the same
//! model with equal detections (docs/PERFORMANCE.md, "Choosing the CPU backend").
//!
//! The runtime is a shared library loaded once per process at the first ONNX model: by default
//! the one the `onnxruntime` wheel installed into the project's venv (found at build time), else
//! `model.onnxruntime_library`.

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use parking_lot::Mutex;

use super::error::DetectorError;

pub struct OnnxModel {
    /// `Session::run` takes `&mut`; one inference thread owns the model, so this never waits.
    session: Mutex<Session>,
}

/// The process' one ONNX Runtime environment: the library is loaded at the first call; later
/// calls return the first outcome, whatever library they name.
fn runtime(library: &Path) -> Result<&'static Environment, String> {
    static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let fail = |e: &dyn std::fmt::Display| format!("cannot load ONNX Runtime from {}: {e}", library.display());
            let builder = ort::init_from(library).map_err(|e| fail(&e))?;
            builder.with_name("its-analytics").build().map_err(|e| fail(&e))
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl OnnxModel {
    /// A session on `threads` intra-op threads, every graph optimisation on, and threads that do
    /// not spin between operators. Spinning (ONNX Runtime's default) made the model alone faster
    /// here (110-114 frames/s against 77-100 on 2 threads) but takes the cores the decode threads
    /// need: 8 live cameras at 10 frames/s ran 80 frames/s with p99 76 ms without it, and 65
    /// frames/s, 310 dropped, with it (docs/PERFORMANCE.md).
    pub fn load(path: &Path, library: &Path, threads: usize) -> Result<Self, DetectorError> {
        let load_error = |message: String| DetectorError::Load { path: path.display().to_string(), message };
        let environment = runtime(library).map_err(load_error)?;
        let session = Session::builder(environment)
            .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::All)?))
            .and_then(|b| Ok(b.with_intra_threads(threads)?))
            .and_then(|b| Ok(b.with_inter_threads(1)?))
            .and_then(|b| Ok(b.with_intra_op_spinning(false)?))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| load_error(e.to_string()))?;
        Ok(Self { session: Mutex::new(session) })
    }

    /// `[N, S, S, 3]` bytes in; the first output as `f32` with its shape.
    pub fn forward(&self, bytes: &[u8], shape: [i64; 4]) -> Result<(Vec<f32>, Vec<i64>), DetectorError> {
        let inference = |e: ort::Error| DetectorError::Inference(e.to_string());
        let input = TensorRef::from_array_view((shape, bytes)).map_err(inference)?;
        let mut session = self.session.lock();
        let outputs = session.run(ort::inputs![input]).map_err(inference)?;
        let (out_shape, values) = outputs[0].try_extract_tensor::<f32>().map_err(inference)?;
        Ok((values.to_vec(), out_shape.iter().copied().collect()))
    }
}
