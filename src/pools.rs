//! The connection pools (bb8): how both are built (`builder`), and their statistics for
//! `/api/v1/system` and `/metrics`.
//!
//! Both pools are sized from config (`pool_size`), fail a call after `connect_timeout_ms`,
//! validate a connection on check-out and recycle connections (30 minutes of life, 10 minutes
//! idle).

use serde::Serialize;

use crate::metrics::{Metrics, PoolLabels};

/// One pool's state and its counters since start.
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    pub name: &'static str,
    pub max_size: u32,
    pub connections: u32,
    pub idle: u32,
    pub in_use: u32,
    /// Calls in progress: waiting for a connection or having it validated on check-out.
    pub gets_in_progress: u64,
    pub gets_direct: u64,
    pub gets_waited: u64,
    /// Calls that got no connection within `connect_timeout_ms`: the pool was exhausted or the
    /// server could not be reached (bb8 does not tell them apart).
    pub gets_timed_out: u64,
    pub wait_ms_total: u64,
    pub connections_created: u64,
    pub closed_broken: u64,
    pub closed_invalid: u64,
    pub closed_recycled: u64,
}

impl PoolView {
    pub fn new(name: &'static str, max_size: u32, state: bb8::State) -> Self {
        // `get_started` counts calls in progress too: the difference is the queue.
        let s = state.statistics;
        Self {
            name,
            max_size,
            connections: state.connections,
            idle: state.idle_connections,
            in_use: state.connections.saturating_sub(state.idle_connections),
            gets_in_progress: s.get_started.saturating_sub(s.get_direct + s.get_waited + s.get_timed_out),
            gets_direct: s.get_direct,
            gets_waited: s.get_waited,
            gets_timed_out: s.get_timed_out,
            wait_ms_total: s.get_wait_time.as_millis() as u64,
            connections_created: s.connections_created,
            closed_broken: s.connections_closed_broken,
            closed_invalid: s.connections_closed_invalid,
            closed_recycled: s.connections_closed_max_lifetime + s.connections_closed_idle_timeout,
        }
    }

    /// Copies the view into the pool metrics (gauges for now, counters set to bb8's totals).
    pub fn export(&self, metrics: &Metrics) {
        let gauge = |state: &str, value: u32| {
            let labels = PoolLabels { pool: self.name.to_string(), kind: state.to_string() };
            metrics.pool_connections.get_or_create(&labels).set(i64::from(value));
        };
        gauge("idle", self.idle);
        gauge("in_use", self.in_use);
        let counter = |kind: &str, value: u64| {
            let labels = PoolLabels { pool: self.name.to_string(), kind: kind.to_string() };
            metrics.pool_events.get_or_create(&labels).inner().store(value, std::sync::atomic::Ordering::Relaxed);
        };
        counter("get_direct", self.gets_direct);
        counter("get_waited", self.gets_waited);
        counter("get_timed_out", self.gets_timed_out);
        counter("created", self.connections_created);
        counter("closed_broken", self.closed_broken);
        counter("closed_invalid", self.closed_invalid);
    }
}

/// How both connection pools are built: sized from config; a call that gets no connection fails
/// after `connect_timeout` (no retry loop inside the pool: the caller's backoff and circuit
/// breaker decide what happens next, and bb8 counts it as timed out); every connection is
/// checked before it is handed out; connections are recycled after 30 minutes, idle ones after 10.
pub fn builder<M: bb8::ManageConnection>(max_size: u32, connect_timeout: std::time::Duration) -> bb8::Builder<M> {
    bb8::Pool::builder()
        .max_size(max_size)
        .connection_timeout(connect_timeout)
        .retry_connection(false)
        .test_on_check_out(true)
        .max_lifetime(Some(std::time::Duration::from_secs(30 * 60)))
        .idle_timeout(Some(std::time::Duration::from_secs(10 * 60)))
}
