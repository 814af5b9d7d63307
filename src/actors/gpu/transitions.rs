//! Where model transitions (activated, rejected, rolled back) are recorded: the history, the log,
//! the metrics and a system event. Shared by the registry and the devices, which roll back on
//! their own.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::{Metrics, ModelLabels, ModelTransitionLabels};
use crate::sinks::EventSink;

/// A change of the serving model, or a refused one.
#[derive(Debug, Clone, Serialize)]
pub struct ModelTransition {
    pub at: chrono::DateTime<chrono::Utc>,
    pub model: String,
    /// `activated`, `rejected` or `rolled_back`; a candidate's `shadow_started`, `canary_started`,
    /// `promoted`, `canary_rolled_back` and `shadow_stopped` (`candidate`).
    pub transition: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_version: Option<u32>,
    pub detail: String,
}

/// Where transitions are recorded: the history, the log and the metrics. Shared by the registry
/// and the devices (which roll back on their own).
pub struct ModelTransitions {
    model: String,
    metrics: Arc<Metrics>,
    /// Publishes each transition as a system event (`{prefix}:system` in Redis).
    sink: Arc<dyn EventSink>,
    history: Mutex<VecDeque<ModelTransition>>,
}

/// Transitions kept for `GET /api/v1/models`.
const HISTORY: usize = 100;

impl ModelTransitions {
    pub fn new(model: String, metrics: Arc<Metrics>, sink: Arc<dyn EventSink>) -> Arc<Self> {
        metrics.model_version.get_or_create(&ModelLabels { model: model.clone() }).set(1);
        Arc::new(Self { model, metrics, sink, history: Mutex::new(VecDeque::new()) })
    }

    pub fn history(&self) -> Vec<ModelTransition> {
        self.history.lock().iter().cloned().collect()
    }

    pub(super) fn record(
        &self,
        transition: &'static str,
        from_version: Option<u32>,
        to_version: Option<u32>,
        detail: String,
    ) {
        match transition {
            "activated" | "shadow_started" | "canary_started" | "promoted" => {
                tracing::info!(model = %self.model, ?from_version, ?to_version, %detail, "model version activated")
            }
            _ => {
                tracing::warn!(model = %self.model, transition, ?from_version, ?to_version, %detail, "model transition")
            }
        }
        let labels = ModelTransitionLabels { model: self.model.clone(), transition: transition.to_string() };
        self.metrics.model_transitions.get_or_create(&labels).inc();
        // Only these change what serves every camera; a candidate's stages do not.
        if let Some(version) = to_version.filter(|_| matches!(transition, "activated" | "rolled_back" | "fallback")) {
            self.metrics.model_version.get_or_create(&ModelLabels { model: self.model.clone() }).set(version as i64);
        }
        let mut history = self.history.lock();
        if history.len() == HISTORY {
            history.pop_front();
        }
        let model = self.model.clone();
        let record = ModelTransition { at: chrono::Utc::now(), model, transition, from_version, to_version, detail };
        let mut event = serde_json::to_value(&record).unwrap_or_default();
        if let Some(map) = event.as_object_mut() {
            map.insert("type".into(), "model_transition".into());
        }
        self.sink.submit_system(event);
        history.push_back(record);
    }

    /// A device went back to the previous version.
    pub fn rolled_back(&self, device: &str, from: u32, to: u32, failures: usize, window: usize) {
        self.record(
            "rolled_back",
            Some(from),
            Some(to),
            format!("{device}: {failures} of the last {window} batches failed"),
        );
    }
}
