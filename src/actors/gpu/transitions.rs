//! Where model transitions (activated, rejected, rolled back, fallback) are recorded: the log, the
//! metrics, a system event and, when the registry has a store, a row of `model_transitions` in
//! PostgreSQL (from which `GET /api/v1/models` reads the history, and the other nodes of the
//! cluster learn activations and rollbacks). Shared by the registry and the devices, which roll
//! back on their own from their inference threads: those rows go through a bounded queue to one
//! writer task, so the thread never waits on PostgreSQL and rows keep their order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::db::models::{NewTransition, TransitionRow};
use crate::db::{Db, DbError};
use crate::metrics::{Metrics, ModelLabels, ModelTransitionLabels};
use crate::sinks::EventSink;

/// A change of the serving model, or a refused one.
#[derive(Debug, Clone, Serialize)]
pub struct ModelTransition {
    /// Its number in the registry (`model_transitions.seq`); absent without a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub at: chrono::DateTime<chrono::Utc>,
    pub model: String,
    /// `activated`, `rejected`, `rolled_back` or `fallback`; a candidate's `shadow_started`,
    /// `canary_started`, `promoted`, `canary_rolled_back` and `shadow_stopped` (`candidate`).
    pub transition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_version: Option<u32>,
    pub detail: String,
    /// The node that made it; absent without a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl From<TransitionRow> for ModelTransition {
    fn from(r: TransitionRow) -> Self {
        Self {
            seq: Some(r.seq),
            at: r.at,
            model: r.model,
            transition: r.transition,
            from_version: r.from_version,
            to_version: r.to_version,
            detail: r.detail,
            node: Some(r.node),
        }
    }
}

/// Where transitions are stored, and as which node.
#[derive(Clone)]
pub struct TransitionStore {
    pub db: Db,
    pub node: String,
}

/// A row for the writer task, and who waits for its number.
struct Pending {
    row: NewTransition,
    stored: Option<oneshot::Sender<Result<i64, DbError>>>,
}

/// Rows queued for PostgreSQL at most; a device's rollback finding it full is logged, not stored.
const QUEUE: usize = 256;
/// Tries of one row while PostgreSQL is unreachable, a second apart.
const TRIES: u32 = 5;

/// Where transitions are recorded. Shared by the registry and the devices (which roll back on
/// their own).
pub struct ModelTransitions {
    model: String,
    metrics: Arc<Metrics>,
    /// Publishes each transition as a system event (`{prefix}:system` in Redis).
    sink: Arc<dyn EventSink>,
    /// Kept in memory (the history without a store).
    history: Mutex<VecDeque<ModelTransition>>,
    writer: Option<mpsc::Sender<Pending>>,
    node: Option<String>,
}

/// Transitions kept for `GET /api/v1/models`.
pub const HISTORY: usize = 100;

impl ModelTransitions {
    /// With a store, rows are written by a task of the current runtime (call inside one).
    pub fn new(
        model: String,
        metrics: Arc<Metrics>,
        sink: Arc<dyn EventSink>,
        store: Option<TransitionStore>,
    ) -> Arc<Self> {
        metrics.model_version.get_or_create(&ModelLabels { model: model.clone() }).set(1);
        let node = store.as_ref().map(|s| s.node.clone());
        let writer = store.map(|store| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write_rows(store.db, rx));
            tx
        });
        Arc::new(Self { model, metrics, sink, history: Mutex::new(VecDeque::new()), writer, node })
    }

    /// The transitions recorded by this process, oldest first.
    pub fn history(&self) -> Vec<ModelTransition> {
        self.history.lock().iter().cloned().collect()
    }

    /// Records a transition: log, metrics, system event, and a row queued for the store. Never
    /// waits (a device's inference thread calls it).
    pub(super) fn record(&self, transition: &str, from_version: Option<u32>, to_version: Option<u32>, detail: String) {
        let row = self.row(transition, from_version, to_version, &detail);
        self.announce(transition, from_version, to_version, detail);
        if let (Some(row), Some(writer)) = (row, &self.writer) {
            if let Err(error) = writer.try_send(Pending { row, stored: None }) {
                tracing::error!(model = %self.model, %error, "model transition not stored: the writer is behind");
            }
        }
    }

    /// Stores a transition (when there is a store) and only then records it as `record` does;
    /// its number. The registry's own transitions, which must be durable before it answers: a
    /// store that fails records nothing.
    pub(super) async fn record_stored(
        &self,
        transition: &str,
        from_version: Option<u32>,
        to_version: Option<u32>,
        detail: String,
    ) -> Result<Option<i64>, DbError> {
        let mut seq = None;
        if let (Some(row), Some(writer)) = (self.row(transition, from_version, to_version, &detail), &self.writer) {
            let stopped = || DbError::Pool("the model transition writer stopped".into());
            let (stored, number) = oneshot::channel();
            writer.send(Pending { row, stored: Some(stored) }).await.map_err(|_| stopped())?;
            seq = Some(number.await.map_err(|_| stopped())??);
        }
        self.announce(transition, from_version, to_version, detail);
        Ok(seq)
    }

    /// The version serving at start (the gauge).
    pub(super) fn serving(&self, version: u32) {
        self.metrics.model_version.get_or_create(&ModelLabels { model: self.model.clone() }).set(version as i64);
    }

    /// A version applied here that another node activated (or rolled back to): log and gauge
    /// only, as the transition is stored and published already.
    pub(super) fn applied(&self, seq: i64, by: &str, transition: &str, from: Option<u32>, to: u32) {
        tracing::info!(model = %self.model, seq, node = by, transition, from_version = ?from, to_version = to,
            "model version applied from the cluster");
        self.metrics.model_version.get_or_create(&ModelLabels { model: self.model.clone() }).set(to as i64);
    }

    /// The row to store, when there is a store.
    fn row(
        &self,
        transition: &str,
        from_version: Option<u32>,
        to_version: Option<u32>,
        detail: &str,
    ) -> Option<NewTransition> {
        self.node.as_ref().map(|node| NewTransition {
            model: self.model.clone(),
            transition: transition.to_string(),
            from_version,
            to_version,
            detail: detail.to_string(),
            node: node.clone(),
        })
    }

    /// Log, metrics, system event and the in-memory history.
    fn announce(&self, transition: &str, from_version: Option<u32>, to_version: Option<u32>, detail: String) {
        match transition {
            "activated" | "shadow_started" | "canary_started" | "promoted" => {
                tracing::info!(model = %self.model, ?from_version, ?to_version, %detail, "model version activated")
            }
            "fallback" => {
                tracing::error!(model = %self.model, transition, ?from_version, ?to_version, %detail,
                    "model transition")
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
        let record = ModelTransition {
            seq: None,
            at: chrono::Utc::now(),
            model: self.model.clone(),
            transition: transition.to_string(),
            from_version,
            to_version,
            detail,
            node: self.node.clone(),
        };
        let mut event = serde_json::to_value(&record).unwrap_or_default();
        if let Some(map) = event.as_object_mut() {
            map.insert("type".into(), "model_transition".into());
        }
        self.sink.submit_system(event);
        let mut history = self.history.lock();
        if history.len() == HISTORY {
            history.pop_front();
        }
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

/// Writes the queued rows in order; a row PostgreSQL does not take after a few tries is logged
/// and its waiter told.
async fn write_rows(db: Db, mut rows: mpsc::Receiver<Pending>) {
    while let Some(Pending { row, stored }) = rows.recv().await {
        let mut tries = 0;
        let result = loop {
            tries += 1;
            match db.record_model_transition(&row).await {
                Err(error) if error.is_transient() && tries < TRIES => tokio::time::sleep(Duration::from_secs(1)).await,
                result => break result,
            }
        };
        if let Err(error) = &result {
            tracing::error!(model = %row.model, transition = %row.transition, %error, "model transition not stored");
        }
        if let Some(stored) = stored {
            let _ = stored.send(result);
        }
    }
}
