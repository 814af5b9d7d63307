//! What can go wrong loading or running a model, whatever the backend.

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
