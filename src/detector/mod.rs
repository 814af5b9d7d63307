//! Object detection: the model's input layout, the TorchScript model, and the output decoders.

pub mod config;
pub mod input;
pub mod model;
pub mod nms;
pub mod yolox;

pub use input::Letterbox;
pub use model::{Detector, DetectorError, Model, ModelLoader};
