//! Object detection: the model's input layout, the TorchScript model, and the output decoders.

pub mod input;
pub mod model;
pub mod nms;
pub mod registry;
mod types;
pub mod yolox;

pub use input::Letterbox;
pub use model::{Detector, DetectorError};
pub use types::{BBox, Detection, ObjectClass};
