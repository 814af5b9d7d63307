//! The one policy every bounded queue of the service follows when it is full: frame queues on a
//! device, the event intake, the outbox, the row and state queues of the sinks, a live viewer's
//! buffer. Each queue's capacity and policy come from the settings.

use serde::Deserialize;

/// What a full bounded queue does with a new item. Every drop is counted by the queue's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Make room by dropping the oldest item: the freshest data matters most (live cameras).
    DropOldest,
    /// Refuse the new item; what is queued is kept.
    Reject,
    /// Make the producer wait for room: every item matters (replays). Never on a live path.
    Wait,
}

impl WhenFull {
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::DropOldest => "drop_oldest",
            WhenFull::Reject => "reject",
            WhenFull::Wait => "wait",
        }
    }
}
