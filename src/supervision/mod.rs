//! Supervision: restart and reconnect policies as pure data, circuit breakers, and the clock
//! they run on (tests drive a `ManualClock` instead of sleeping).

pub mod backoff;
pub mod breaker;
pub mod clock;
pub mod policy;
pub mod shutdown;
pub mod supervisor;

pub use backoff::Backoff;
pub use breaker::{
    Admission, BreakerConfig, BreakerState, BreakerView, CircuitBreaker, Transition, TransitionObserver,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use policy::{ChildSlot, ChildState, ChildView, Decision, Generation, JitterSource, RestartPolicy, RestartTracker};
pub use shutdown::{finish_group, stop_signal, FinishToken, Finished, StopHandle, StopSignal};
pub use supervisor::{panic_message, Reporter, Supervisor};
