//! Supervision: restart and reconnect policies as pure data, circuit breakers, and the clock
//! they run on (tests drive a `ManualClock` instead of sleeping).

pub mod backoff;
pub mod breaker;
pub mod clock;
pub mod policy;
pub mod shutdown;
pub mod supervisor;

pub use backoff::Backoff;
pub use breaker::{BreakerConfig, BreakerState, BreakerView, CircuitBreaker, Transition};
pub use clock::{Clock, SystemClock};
pub use policy::{ChildState, ChildView, Generation, RestartPolicy};
pub use shutdown::{finish_group, stop_signal, FinishToken, Finished, StopHandle, StopSignal};
pub use supervisor::{panic_message, Reporter, Supervisor};

#[cfg(test)]
pub use clock::ManualClock;
