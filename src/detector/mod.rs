//! Object detection: the model's input layout, the model and its two backends (ONNX Runtime for
//! the CPU, libtorch for CUDA), the output decoders, the simulator's synthetic detector, and the
//! drift profiles of what the model sees (`drift`).

pub mod agreement;
pub mod config;
pub mod drift;
pub mod error;
pub mod input;
pub mod levels;
pub mod model;
pub mod nms;
pub mod onnx;
pub mod simulated;
pub mod torchscript;
pub mod yolox;

pub use input::Letterbox;
pub use model::{Detector, DetectorError, Model, ModelLoader};
