//! Where events go. Connectors hand events to an `EventSink`, which must never block them; the
//! durable outbox of a later stage slots in behind this same trait.

pub mod publisher;

use parking_lot::Mutex;

use crate::actors::messages::Event;

pub trait EventSink: Send + Sync + 'static {
    /// Accepts an event without blocking the caller.
    fn submit(&self, event: Event);
}

/// Keeps events in memory: `analyze` and `bench`, which need no Redis or PostgreSQL.
#[derive(Default)]
pub struct MemorySink {
    events: Mutex<Vec<(Event, std::time::Instant)>>,
}

impl MemorySink {
    /// Events with the instant each was submitted.
    pub fn take(&self) -> Vec<(Event, std::time::Instant)> {
        std::mem::take(&mut *self.events.lock())
    }
}

impl EventSink for MemorySink {
    fn submit(&self, event: Event) {
        self.events.lock().push((event, std::time::Instant::now()));
    }
}
