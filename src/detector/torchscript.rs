//! The libtorch backend: a TorchScript file (`scripts/convert_model.py`) on the CPU or a CUDA
//! device. It serves CUDA devices; on the CPU ONNX Runtime is faster (docs/PERFORMANCE.md).

use tch::{CModule, Device, Kind, Tensor};

use super::error::DetectorError;

pub struct TorchScript {
    module: CModule,
    device: Device,
}

impl TorchScript {
    pub fn load(path: &std::path::Path, device: Device) -> Result<Self, DetectorError> {
        // The profiling graph executor re-specialises the frozen graph and ran YOLOX-Nano at
        // 32 frames/s on 2 CPU threads where the plain executor runs it at 40 (Python: 42);
        // a frozen convolutional graph gains nothing from profiling. Process-wide, set once.
        static EXECUTOR: std::sync::Once = std::sync::Once::new();
        EXECUTOR.call_once(|| tch::jit::set_profiling_mode(false));
        let module = CModule::load_on_device(path, device)
            .map_err(|e| DetectorError::Load { path: path.display().to_string(), message: e.to_string() })?;
        Ok(Self { module, device })
    }

    /// `[N, S, S, 3]` bytes in (they cross to the device as `u8`, a quarter of the traffic, and
    /// the module widens them there); the output on the CPU as `f32` with its shape.
    pub fn forward(&self, bytes: &[u8], shape: [i64; 4]) -> Result<(Vec<f32>, Vec<i64>), DetectorError> {
        let input = Tensor::from_slice(bytes).view(shape).to_device(self.device);
        let output = tch::no_grad(|| self.module.forward_ts(&[input]))?;
        let size = output.size();
        let flat = output.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view(-1);
        Ok((Vec::<f32>::try_from(&flat)?, size))
    }
}
