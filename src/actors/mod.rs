//! The actors of the pipeline and the messages between them.

pub mod camera;
pub mod connector;
pub mod gpu;
pub mod messages;
pub mod status;
