//! Pictures of a camera: its latest decoded frame, as the model sees it, as a JPEG, with or
//! without an overlay of what is tracked and the camera's geometry.
//!
//! The decode thread leaves a reference to its latest frame (the frame's shared bytes, no copy)
//! in the camera's `CameraPictures`, and the connector the latest tracked boxes; nothing is
//! encoded there. A picture is encoded when someone asks for it, on a bounded pool shared by
//! every viewer of every camera (`PictureHub`), and the last JPEG of each camera (per overlay or
//! not) is kept, so any number of viewers of one frame cost one encode.

pub mod canvas;
pub mod font;
pub mod hub;
pub mod jpeg;
pub mod overlay;
pub mod slots;

pub use hub::{PictureError, PictureHub, Wait};
pub use slots::{CameraPictures, LatestFrame, LatestTracks, ViewerPass};

pub use crate::settings::PictureSettings;
