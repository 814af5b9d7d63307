//! Delivers events to Redis (PUBLISH for live consumers, XADD for consumers that must not miss
//! anything) and PostgreSQL (idempotent on `event_id`), in batches, from one task; also the
//! per-minute aggregates (PostgreSQL) and each camera's latest state (a Redis hash).
//!
//! Each batch is delivered to Redis once and to PostgreSQL once, each retried with backoff until it
//! succeeds, so a PostgreSQL hiccup never writes the Redis stream twice. The intake is bounded:
//! when it is full the event is dropped and counted (the durable outbox replaces this policy).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::EventSink;
use crate::actors::messages::Event;
use crate::analytics::{AggregateRow, StateSnapshot};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::redis_keys::RedisKeys;
use crate::supervision::{Backoff, BreakerConfig, BreakerView, CircuitBreaker, SystemClock, Transition};

pub type RedisPool = bb8::Pool<bb8_redis::RedisConnectionManager>;

const BATCH: usize = 256;

enum Outgoing {
    /// Boxed: an event is several times the size of the other items.
    Event(Box<Event>),
    Aggregates(Vec<AggregateRow>),
    State(StateSnapshot),
    /// The camera was removed: drop its cached state, after any state queued before.
    ForgetState(crate::actors::messages::CameraId),
}

/// The dependencies the publisher writes to, each behind a circuit breaker: while one is open
/// nothing is tried against it and what is waiting for it stays queued, in order.
struct Sinks {
    redis: RedisPool,
    keys: RedisKeys,
    stream: StreamOptions,
    db: Db,
    metrics: Arc<Metrics>,
    redis_breaker: Arc<CircuitBreaker>,
    postgres_breaker: Arc<CircuitBreaker>,
}

pub struct Publisher {
    tx: mpsc::Sender<Outgoing>,
    breakers: [Arc<CircuitBreaker>; 2],
    metrics: Arc<Metrics>,
    /// Events accepted by `submit`, and events delivered to both stores: equal when drained.
    accepted: AtomicU64,
    delivered: Arc<AtomicU64>,
    /// Everything accepted (events, aggregate batches, states) and everything handled.
    items_accepted: AtomicU64,
    items_done: Arc<AtomicU64>,
}

impl Publisher {
    fn enqueue(&self, item: Outgoing) -> bool {
        let ok = self.tx.try_send(item).is_ok();
        if ok {
            self.items_accepted.fetch_add(1, Ordering::SeqCst);
        }
        ok
    }
}

impl EventSink for Publisher {
    fn submit(&self, event: Event) {
        // Count first: the delivery task may finish the event before `enqueue` returns.
        self.accepted.fetch_add(1, Ordering::SeqCst);
        if !self.enqueue(Outgoing::Event(Box::new(event))) {
            self.accepted.fetch_sub(1, Ordering::SeqCst);
            self.metrics.events_dropped.inc();
            tracing::error!("event sink queue full; event dropped");
        }
    }

    fn submit_aggregates(&self, rows: Vec<AggregateRow>) {
        if !self.enqueue(Outgoing::Aggregates(rows)) {
            self.metrics.events_dropped.inc();
            tracing::error!("event sink queue full; aggregate rows dropped");
        }
    }

    fn submit_state(&self, state: StateSnapshot) {
        // A newer snapshot follows; losing one to a full queue costs nothing lasting.
        let _ = self.enqueue(Outgoing::State(state));
    }
}

impl Publisher {
    /// Starts the delivery task on the current runtime.
    pub fn spawn(
        redis: RedisPool,
        keys: RedisKeys,
        stream: StreamOptions,
        db: Db,
        metrics: Arc<Metrics>,
        capacity: usize,
        breaker: BreakerConfig,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(capacity);
        let delivered = Arc::new(AtomicU64::new(0));
        let items_done = Arc::new(AtomicU64::new(0));
        let (task_delivered, task_done) = (delivered.clone(), items_done.clone());
        let redis_breaker = breaker_for("redis", &breaker, &metrics);
        let postgres_breaker = breaker_for("postgres", &breaker, &metrics);
        let breakers = [redis_breaker.clone(), postgres_breaker.clone()];
        let sinks = Sinks { redis, keys, stream, db, metrics: metrics.clone(), redis_breaker, postgres_breaker };
        tokio::spawn(async move {
            let mut received = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut received, BATCH).await > 0 {
                let items = received.len() as u64;
                let mut events = Vec::new();
                let mut aggregates = Vec::new();
                // Per camera, the newest state to cache (`None`: remove it), in arrival order.
                let mut states = HashMap::new();
                for item in received.drain(..) {
                    match item {
                        Outgoing::Event(e) => events.push(*e),
                        Outgoing::Aggregates(rows) => aggregates.extend(rows),
                        Outgoing::State(s) => {
                            states.insert(s.camera_id.clone(), Some(s));
                        }
                        Outgoing::ForgetState(camera_id) => {
                            states.insert(camera_id, None);
                        }
                    }
                }
                if !events.is_empty() {
                    // A traced event's `publish` span lasts until both stores have it.
                    let publishing: Vec<_> =
                        events.iter().map(|e| crate::child_span!(&e.span, "publish", batch = events.len())).collect();
                    sinks.deliver(&events).await;
                    drop(publishing);
                    task_delivered.fetch_add(events.len() as u64, Ordering::SeqCst);
                }
                if !aggregates.is_empty() {
                    sinks.store_aggregates(&aggregates).await;
                }
                for (camera_id, state) in states {
                    sinks.cache_state(&camera_id, state.as_ref()).await;
                }
                task_done.fetch_add(items, Ordering::SeqCst);
            }
        });
        Self {
            tx,
            breakers,
            metrics,
            accepted: AtomicU64::new(0),
            delivered,
            items_accepted: AtomicU64::new(0),
            items_done,
        }
    }

    /// Events accepted and delivered so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.accepted.load(Ordering::SeqCst), self.delivered.load(Ordering::SeqCst))
    }

    /// The breakers' states, for readiness and `/api/v1/system`.
    pub fn breakers(&self) -> Vec<BreakerView> {
        self.breakers.iter().map(|b| b.view()).collect()
    }

    /// Removes a camera's cached state once everything queued before has been handled.
    pub fn forget_state(&self, camera_id: &str) {
        if !self.enqueue(Outgoing::ForgetState(camera_id.into())) {
            tracing::warn!(camera = %camera_id, "sink queue full; cached state of a removed camera left in Redis");
        }
    }

    /// Waits until everything accepted is handled, or `timeout`; returns the events accepted and
    /// delivered. For shutdown: the cameras are stopped first, so nothing new arrives meanwhile.
    pub async fn drain(&self, timeout: Duration) -> (u64, u64) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done = self.items_done.load(Ordering::SeqCst) >= self.items_accepted.load(Ordering::SeqCst);
            if done || tokio::time::Instant::now() >= deadline {
                return (self.accepted.load(Ordering::SeqCst), self.delivered.load(Ordering::SeqCst));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A breaker whose every transition is a log line and a metric.
fn breaker_for(name: &'static str, config: &BreakerConfig, metrics: &Arc<Metrics>) -> Arc<CircuitBreaker> {
    let labels = crate::metrics::BreakerLabels { breaker: name.to_string() };
    let state = metrics.breaker_state.get_or_create(&labels).clone();
    let opens = metrics.breaker_opens.get_or_create(&labels).clone();
    state.set(0);
    let observer = move |name: &str, transition: Transition| {
        state.set(transition.to.as_metric());
        if transition.to == crate::supervision::BreakerState::Open {
            opens.inc();
            tracing::warn!(breaker = name, %transition, "circuit breaker opened");
        } else {
            tracing::info!(breaker = name, %transition, "circuit breaker changed state");
        }
    };
    Arc::new(CircuitBreaker::new(name, config.clone(), Arc::new(SystemClock)).with_observer(Arc::new(observer)))
}

/// How often a call held back by an open breaker looks again.
const BREAKER_POLL: Duration = Duration::from_millis(200);

impl Sinks {
    /// Runs `call` until it succeeds: through `breaker` (never while it is open), with backoff
    /// between failures. `Err(false)` from `call` is a permanent failure: given up.
    async fn until_done<F, Fut>(&self, breaker: &CircuitBreaker, what: &str, mut call: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), (String, bool)>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            if !breaker.allow() {
                tokio::time::sleep(BREAKER_POLL).await;
                continue;
            }
            match call().await {
                Ok(()) => {
                    breaker.record_success();
                    return;
                }
                Err((error, false)) => {
                    // The server answered: it is up, only this call was refused.
                    breaker.record_success();
                    self.metrics.sink_failures.inc();
                    tracing::error!(%error, "{what} rejected; dropped");
                    return;
                }
                Err((error, true)) => {
                    breaker.record_failure();
                    self.metrics.sink_failures.inc();
                    tracing::warn!(%error, "{what} failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn deliver(&self, batch: &[Event]) {
        self.until_done(&self.redis_breaker, "redis publish", || async {
            publish_redis(batch, &self.redis, &self.keys, self.stream).await.map_err(|e| (e, true))
        })
        .await;
        for event in batch {
            if let Some(captured) = event.captured {
                let exemplar = crate::metrics::TraceLabels::of(&event.span);
                self.metrics.analytics_latency.observe(captured.elapsed().as_secs_f64(), exemplar, None);
            }
        }
        // Events are retried whatever PostgreSQL says: the durable outbox (next) will park
        // rejected ones instead.
        self.until_done(&self.postgres_breaker, "postgres event insert", || async {
            self.db.insert_events(batch).await.map(|_| ()).map_err(|e| (e.to_string(), true))
        })
        .await;
        self.metrics.events_published.inc_by(batch.len() as u64);
    }

    /// Retries while PostgreSQL is unreachable; rows the server rejects are logged and dropped,
    /// so one bad row cannot stop the delivery of everything behind it.
    async fn store_aggregates(&self, rows: &[AggregateRow]) {
        self.until_done(&self.postgres_breaker, "storing aggregate rows", || async {
            self.db.upsert_aggregates(rows).await.map_err(|e| {
                let transient = e.is_transient();
                (e.to_string(), transient)
            })
        })
        .await;
    }

    /// Caches a camera's state in its hash (best effort: one try, none while Redis's breaker is
    /// open; the next state replaces it), or removes the hash of a removed camera (`None`:
    /// retried until done, since nothing would replace it).
    async fn cache_state(&self, camera_id: &str, state: Option<&StateSnapshot>) {
        if state.is_none() {
            self.until_done(&self.redis_breaker, "removing a camera's cached state", || async {
                write_state(camera_id, None, &self.redis, &self.keys).await.map_err(|e| (e, true))
            })
            .await;
            return;
        }
        if !self.redis_breaker.allow() {
            return;
        }
        match write_state(camera_id, state, &self.redis, &self.keys).await {
            Ok(()) => {
                self.redis_breaker.record_success();
            }
            Err(error) => {
                self.redis_breaker.record_failure();
                self.metrics.sink_failures.inc();
                tracing::warn!(%error, camera = %camera_id, "caching camera state failed; the next one replaces it");
            }
        }
    }
}

/// Writes a camera's state into its hash, or removes the hash (`None`).
async fn write_state(camera_id: &str, state: Option<&StateSnapshot>, redis: &RedisPool, keys: &RedisKeys) -> Result<(), String> {
    let mut conn = redis.get().await.map_err(|e| e.to_string())?;
    let key = keys.camera_state(camera_id);
    let command = match state {
        Some(state) => {
            let mut hset = bb8_redis::redis::cmd("HSET");
            hset.arg(key).arg("state").arg(state.state.to_string()).arg("updated_at").arg(chrono::Utc::now().to_rfc3339());
            hset
        }
        None => {
            let mut del = bb8_redis::redis::cmd("DEL");
            del.arg(key);
            del
        }
    };
    command.query_async::<()>(&mut *conn).await.map_err(|e| e.to_string())
}

/// Adds each event of a batch to the stream and its camera's channel unless its marker
/// (`{prefix}:seen:{event_id}`) says it was added within the marker's lifetime, atomically: a
/// batch retried after a lost reply, or an event emitted again by a replay, lands once.
/// KEYS[1]: the stream. ARGV: stream length cap, marker lifetime (s), marker prefix, then per
/// event its id, camera id, type, channel and JSON.
const PUBLISH_ONCE: &str = r#"
local added = 0
for i = 4, #ARGV, 5 do
  if redis.call('SET', ARGV[3] .. ARGV[i], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
      'event_id', ARGV[i], 'camera_id', ARGV[i + 1], 'type', ARGV[i + 2], 'data', ARGV[i + 4])
    redis.call('PUBLISH', ARGV[i + 3], ARGV[i + 4])
    added = added + 1
  end
end
return added
"#;

/// How the events stream is kept: its approximate length cap and how long an event id is
/// remembered against duplicates.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    pub max_len: u64,
    pub dedup_ttl_s: u64,
}

async fn publish_redis(batch: &[Event], redis: &RedisPool, keys: &RedisKeys, stream: StreamOptions) -> Result<(), String> {
    let mut conn = redis.get().await.map_err(|e| e.to_string())?;
    // Hashed once (for EVALSHA), not per batch.
    static SCRIPT: std::sync::LazyLock<bb8_redis::redis::Script> =
        std::sync::LazyLock::new(|| bb8_redis::redis::Script::new(PUBLISH_ONCE));
    let mut call = SCRIPT.key(keys.events_stream());
    call.arg(stream.max_len).arg(stream.dedup_ttl_s).arg(keys.event_seen_prefix());
    for event in batch {
        let json = serde_json::to_string(event).map_err(|e| e.to_string())?;
        call.arg(&event.event_id).arg(&*event.camera_id).arg(event.kind()).arg(keys.camera_channel(&event.camera_id)).arg(json);
    }
    call.invoke_async::<u64>(&mut *conn).await.map(|_| ()).map_err(|e| e.to_string())
}
