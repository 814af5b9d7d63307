//! Supervision: restart and reconnect policies as pure data, and the code that applies them.

pub mod backoff;

pub use backoff::Backoff;
