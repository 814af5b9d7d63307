//! its-analytics: real-time traffic-camera analytics as an actor system.
//!
//! Cameras (decode threads) -> devices (batched inference) -> connector shards (tracking and
//! counting) -> sinks (Redis, PostgreSQL). See `docs/ARCHITECTURE.md`.

pub mod access;
pub mod actors;
pub mod analytics;
pub mod analyze;
pub mod camera_spec;
pub mod cluster;
pub mod db;
pub mod detector;
pub mod device_memory;
pub mod evaluate;
pub mod events;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod objects;
pub mod overflow;
pub mod picture;
pub mod pools;
pub mod redis_conn;
pub mod redis_keys;
pub mod service;
pub mod settings;
pub mod sinks;
pub mod supervision;
pub mod telemetry;
pub mod tls;
pub mod topology;
