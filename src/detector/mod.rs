//! Object detection: the model's input layout, the TorchScript model, the output decoders, and the
//! simulator's synthetic detector.

pub mod config;
pub mod input;
pub mod model;
pub mod nms;
pub mod simulated;
pub mod yolox;

pub use input::Letterbox;
pub use model::{Detector, DetectorError, Model, ModelLoader};
