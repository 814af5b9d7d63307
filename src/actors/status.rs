//! A camera's live status, shared by its decode thread, its device, its connector and the API.

use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::watch;

use crate::analytics::framing::FramePlan;
use crate::analytics::lines::LineCount;
use crate::ids::CameraId;
use crate::metrics::Metrics;
use crate::picture::CameraPictures;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    Connecting,
    Streaming,
    BackingOff,
    /// A file source reached its end (not looped); its analytics are final.
    Ended,
    /// The source gave up (analyze of an unreadable file).
    Failed,
    Stopped,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub struct CameraStatus {
    pub id: CameraId,
    /// Part of every event id (see `Pipeline::start_camera`), in milliseconds since the Unix epoch.
    pub epoch_ms: u64,
    /// The geometry version the camera's connector analyses with.
    pub geometry_version: std::sync::atomic::AtomicU32,
    state: Mutex<(StreamState, Option<String>)>,
    pub decoded: Counter,
    pub processed: Counter,
    pub dropped: Counter,
    pub reconnects: Counter,
    pub events: Counter,
    /// `its_camera_up`: 1 while the stream delivers frames (or a file ended normally), else 0.
    up: Gauge,
    counts: Mutex<Vec<LineCount>>,
    /// Becomes true once everything the source produced went through its connector.
    finished: watch::Sender<bool>,
    /// Around the stream: opens after `breakers.failure_threshold` failed attempts in a row;
    /// while open no attempt is made until `breakers.open_for_ms` has passed.
    pub breaker: std::sync::Arc<crate::supervision::CircuitBreaker>,
    /// The latest decoded frame and tracked boxes, for snapshots and live views.
    pub pictures: std::sync::Arc<CameraPictures>,
    /// How the decode thread prepares frames for the model (crop, levels), from the geometry.
    pub frame_plan: FramePlanCell,
    /// What the model sees against the camera's reference (`detector::drift`), fed by the connector.
    pub drift: crate::detector::drift::DriftCell,
}

/// A camera's frame plan as its decode thread reads it: set from the geometry when the camera
/// starts and at each geometry change; the decode thread compares `version` at every frame (one
/// atomic load) and rebuilds its converter when it moved, so a change applies from the next frame.
#[derive(Debug, Default)]
pub struct FramePlanCell {
    version: std::sync::atomic::AtomicU64,
    plan: Mutex<FramePlan>,
}

impl FramePlanCell {
    pub fn set(&self, plan: FramePlan) {
        let mut slot = self.plan.lock();
        *slot = plan;
        self.version.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Changes with every `set`.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The plan with its version.
    pub fn get(&self) -> (u64, FramePlan) {
        let plan = self.plan.lock();
        (self.version(), *plan)
    }
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub state: StreamState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub frames_decoded: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
    pub reconnects: u64,
    pub events: u64,
    pub geometry_version: u32,
    pub breaker: crate::supervision::BreakerState,
}

impl CameraStatus {
    pub fn new(
        id: CameraId,
        epoch_ms: u64,
        geometry_version: u32,
        metrics: &Metrics,
        breaker: &crate::supervision::BreakerConfig,
    ) -> Self {
        let labels = metrics.camera(&id);
        Self {
            breaker: metrics.breaker(&crate::metrics::camera_breaker(&id), breaker),
            epoch_ms,
            geometry_version: geometry_version.into(),
            state: Mutex::new((StreamState::Connecting, None)),
            decoded: metrics.frames_decoded.get_or_create(&labels).clone(),
            processed: metrics.frames_processed.get_or_create(&labels).clone(),
            dropped: metrics.frames_dropped.get_or_create(&labels).clone(),
            reconnects: metrics.camera_reconnects.get_or_create(&labels).clone(),
            events: metrics.events.get_or_create(&labels).clone(),
            up: metrics.camera_up.get_or_create(&labels).clone(),
            counts: Mutex::new(Vec::new()),
            finished: watch::Sender::new(false),
            pictures: std::sync::Arc::new(CameraPictures::new(&id, metrics)),
            frame_plan: FramePlanCell::default(),
            drift: Default::default(),
            id,
        }
    }

    /// Sets the stream state; `error` is shown to operators, so it must not hold credentials.
    pub fn set_state(&self, state: StreamState, error: Option<String>) {
        let mut guard = self.state.lock();
        // A final state is not overwritten by a late report from a stopping thread.
        if matches!(guard.0, StreamState::Ended | StreamState::Failed) && state == StreamState::Stopped {
            return;
        }
        guard.0 = state;
        // Connecting keeps the last value: a camera is not down for the moment of a reconnect,
        // and a camera that never came up stays down.
        let up = match state {
            StreamState::Streaming | StreamState::Ended => Some(1),
            StreamState::BackingOff | StreamState::Failed | StreamState::Stopped => Some(0),
            StreamState::Connecting => None,
        };
        if let Some(up) = up {
            self.up.set(up);
        }
        if error.is_some() {
            guard.1 = error;
        }
    }

    pub fn state(&self) -> StreamState {
        self.state.lock().0
    }

    pub fn last_error(&self) -> Option<String> {
        self.state.lock().1.clone()
    }

    pub fn view(&self) -> StatusView {
        let (state, last_error) = self.state.lock().clone();
        StatusView {
            state,
            last_error,
            frames_decoded: self.decoded.get(),
            frames_processed: self.processed.get(),
            frames_dropped: self.dropped.get(),
            reconnects: self.reconnects.get(),
            events: self.events.get(),
            geometry_version: self.geometry_version.load(std::sync::atomic::Ordering::SeqCst),
            breaker: self.breaker.state(),
        }
    }

    pub fn set_counts(&self, counts: &[LineCount]) {
        *self.counts.lock() = counts.to_vec();
    }

    pub fn counts(&self) -> Vec<LineCount> {
        self.counts.lock().clone()
    }

    pub fn mark_finished(&self) {
        self.finished.send_replace(true);
    }

    /// Resolves once the camera's stream ended and all its frames were analysed.
    pub async fn wait_finished(&self) {
        let mut rx = self.finished.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }
}
