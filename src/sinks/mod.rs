//! Where events go. Connectors hand events to an `EventSink`, which must never block them; the
//! service's sink (`publisher`) commits them to the durable `outbox` before delivering them to the
//! `stores` (Redis and PostgreSQL). `backfill` puts events PostgreSQL lost back from the stream.

pub mod backfill;
pub mod outbox;
pub mod publisher;
pub mod stores;

use parking_lot::Mutex;

use crate::analytics::{AggregateRow, StateSnapshot};
use crate::events::Event;

/// Everything a connector emits. No method may block the caller.
pub trait EventSink: Send + Sync + 'static {
    fn submit(&self, event: Event);
    /// Closed per-minute measures of one camera.
    fn submit_aggregates(&self, rows: Vec<AggregateRow>);
    /// A camera's latest state; only the newest matters.
    fn submit_state(&self, state: StateSnapshot);
    /// A service event that belongs to no camera (a model transition), as JSON with a `type`.
    fn submit_system(&self, _event: serde_json::Value) {}
}

/// Keeps everything in memory: `analyze`, `evaluate` and `bench`, which need no Redis or
/// PostgreSQL.
#[derive(Default)]
pub struct MemorySink {
    events: Mutex<Vec<(Event, std::time::Instant)>>,
    aggregates: Mutex<Vec<AggregateRow>>,
}

impl MemorySink {
    /// Events with the instant each was submitted.
    pub fn take(&self) -> Vec<(Event, std::time::Instant)> {
        std::mem::take(&mut *self.events.lock())
    }

    pub fn take_aggregates(&self) -> Vec<AggregateRow> {
        std::mem::take(&mut *self.aggregates.lock())
    }
}

impl EventSink for MemorySink {
    fn submit(&self, event: Event) {
        self.events.lock().push((event, std::time::Instant::now()));
    }

    fn submit_aggregates(&self, rows: Vec<AggregateRow>) {
        self.aggregates.lock().extend(rows);
    }

    fn submit_state(&self, _state: StateSnapshot) {}
}
