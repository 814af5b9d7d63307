//! Delivers events to Redis (PUBLISH for live consumers, XADD for consumers that must not miss
//! anything) and PostgreSQL (idempotent on `event_id`), through the durable outbox; also the
//! per-minute aggregates (PostgreSQL) and each camera's latest state (a Redis hash).
//!
//! Four tasks:
//! - intake: commits each batch of events to the outbox (`outbox`, one fsync per batch) and passes
//!   minute rows and states on, so an outage never holds up the commit of events;
//! - delivery: takes what the outbox holds, oldest first (after a crash, what the last process left),
//!   delivers it to Redis once and then to PostgreSQL once, each retried with backoff until it
//!   succeeds, and acknowledges it, which removes it from the outbox (while either store is down,
//!   events wait in the outbox for both);
//! - PostgreSQL rows: upserts minute rows (retried);
//! - Redis rows: caches states (best effort) and publishes system events (retried).
//!
//! The two row queues are bounded (`capacity` each): when one is full a minute-row batch is dropped
//! and counted in `its_events_dropped_total`; a state is dropped silently, a newer one follows.
//!
//! An event is "acknowledged" once the outbox has committed it: from then on a crash does not
//! lose it. The outbox's size limit and its policy when full are `[outbox]` settings; events it
//! refuses or drops are counted in `its_events_dropped_total`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::outbox::{Entry, Outbox};
use super::EventSink;
use crate::analytics::{AggregateRow, StateSnapshot};
use crate::db::Db;
use crate::events::Event;
use crate::metrics::Metrics;
use crate::redis_keys::RedisKeys;
use crate::supervision::{Backoff, BreakerConfig, BreakerView, CircuitBreaker};

pub type RedisPool = bb8::Pool<bb8_redis::RedisConnectionManager>;

const BATCH: usize = 256;

enum Outgoing {
    /// Boxed: an event is several times the size of the other items.
    Event(Box<Event>),
    Aggregates(Vec<AggregateRow>),
    State(StateSnapshot),
    /// The camera was removed: drop its cached state, after any state queued before.
    ForgetState(crate::ids::CameraId),
    System(serde_json::Value),
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

/// Counts shared by the publisher and its tasks.
#[derive(Default)]
struct Progress {
    /// Events accepted by `submit`, and events delivered to both stores (replayed ones too).
    accepted: AtomicU64,
    delivered: AtomicU64,
    /// Everything accepted (events, aggregate batches, states) and everything handled (an event
    /// once committed to the outbox).
    items_accepted: AtomicU64,
    items_done: AtomicU64,
}

pub struct Publisher {
    tx: mpsc::Sender<Outgoing>,
    breakers: [Arc<CircuitBreaker>; 2],
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
    progress: Arc<Progress>,
    /// Events found in the outbox at start, left by the previous process.
    replayed: u64,
}

impl Publisher {
    fn enqueue(&self, item: Outgoing) -> bool {
        let ok = self.tx.try_send(item).is_ok();
        if ok {
            self.progress.items_accepted.fetch_add(1, Ordering::SeqCst);
        }
        ok
    }
}

impl EventSink for Publisher {
    fn submit(&self, event: Event) {
        // Count first: the delivery task may finish the event before `enqueue` returns.
        self.progress.accepted.fetch_add(1, Ordering::SeqCst);
        if !self.enqueue(Outgoing::Event(Box::new(event))) {
            self.progress.accepted.fetch_sub(1, Ordering::SeqCst);
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

    fn submit_system(&self, event: serde_json::Value) {
        if !self.enqueue(Outgoing::System(event)) {
            tracing::warn!("event sink queue full; system event not published (it is in the log and the metrics)");
        }
    }
}

/// Rows and states on their way to the rows task, with how many accepted items each stands for.
enum RowItem {
    Aggregates(Vec<AggregateRow>),
    /// The newest state of a camera (`None`: remove it), standing for `superseding` items.
    State {
        camera_id: crate::ids::CameraId,
        state: Option<StateSnapshot>,
        superseding: u64,
    },
    System(serde_json::Value),
}

/// The bounded queues of the two row tasks, one per store, so an outage of one holds up nothing
/// of the other.
struct RowQueues {
    postgres: mpsc::Sender<RowItem>,
    redis: mpsc::Sender<RowItem>,
}

impl RowQueues {
    /// Queues an item for its store; when that queue is full the item is dropped, counted as
    /// handled (and, for minute rows, as dropped).
    fn send(&self, item: RowItem, metrics: &Metrics, progress: &Progress) {
        let queue = match item {
            RowItem::Aggregates(_) => &self.postgres,
            RowItem::State { .. } | RowItem::System(_) => &self.redis,
        };
        let Err(mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item)) = queue.try_send(item)
        else {
            return;
        };
        let items = match item {
            RowItem::Aggregates(_) => {
                metrics.events_dropped.inc();
                tracing::error!("minute-row queue full; aggregate rows dropped");
                1
            }
            RowItem::State { superseding, .. } => superseding,
            RowItem::System(_) => {
                tracing::warn!("redis queue full; system event not published (it is in the log and the metrics)");
                1
            }
        };
        progress.items_done.fetch_add(items, Ordering::SeqCst);
    }
}

/// What only this process knows of the events it accepted (the outbox keeps their JSON): the
/// capture instant for `analytics_latency_seconds` and the trace span, by event id.
type LiveEvents = Arc<parking_lot::Mutex<HashMap<String, (Option<std::time::Instant>, tracing::Span)>>>;

/// Events whose capture instant and span are kept at most.
const LIVE_EVENTS_LIMIT: usize = 100_000;

impl Publisher {
    /// Starts the intake, delivery and rows tasks on the current runtime. Events the outbox
    /// holds from an earlier run are delivered first.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        redis: RedisPool,
        keys: RedisKeys,
        stream: StreamOptions,
        db: Db,
        metrics: Arc<Metrics>,
        capacity: usize,
        breaker: BreakerConfig,
        outbox: Arc<Outbox>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Outgoing>(capacity);
        let (postgres_tx, postgres_rx) = mpsc::channel::<RowItem>(capacity);
        let (redis_tx, redis_rx) = mpsc::channel::<RowItem>(capacity);
        let rows = RowQueues { postgres: postgres_tx, redis: redis_tx };
        let progress = Arc::new(Progress::default());
        let redis_breaker = metrics.breaker("redis", &breaker);
        let postgres_breaker = metrics.breaker("postgres", &breaker);
        let breakers = [redis_breaker.clone(), postgres_breaker.clone()];
        let sinks =
            Arc::new(Sinks { redis, keys, stream, db, metrics: metrics.clone(), redis_breaker, postgres_breaker });
        let committed = Arc::new(Notify::new());
        let left = outbox.backlog();
        if left > 0 {
            tracing::warn!(
                events = left,
                "the outbox holds events the last run did not deliver; delivering them first"
            );
        }
        let live = LiveEvents::default();
        tokio::spawn(intake(
            rx,
            rows,
            outbox.clone(),
            committed.clone(),
            live.clone(),
            metrics.clone(),
            progress.clone(),
        ));
        tokio::spawn(deliver_from_outbox(sinks.clone(), outbox.clone(), committed, live, progress.clone()));
        tokio::spawn(write_rows(sinks.clone(), postgres_rx, progress.clone()));
        tokio::spawn(write_rows(sinks, redis_rx, progress.clone()));
        Self { tx, breakers, metrics, outbox, progress, replayed: left }
    }

    /// Events accepted and delivered so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.progress.accepted.load(Ordering::SeqCst), self.progress.delivered.load(Ordering::SeqCst))
    }

    /// Events committed to the outbox and not yet delivered to both stores.
    pub fn backlog(&self) -> u64 {
        self.outbox.backlog()
    }

    /// Events the outbox held at start, left by the previous process.
    pub fn replayed(&self) -> u64 {
        self.replayed
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

    /// Waits until everything accepted is handled and the outbox is empty, or `timeout`; returns
    /// the events accepted and delivered and what stays in the outbox (delivered at the next
    /// start). For shutdown: the cameras are stopped first, so nothing new arrives meanwhile.
    pub async fn drain(&self, timeout: Duration) -> (u64, u64, u64) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let p = &self.progress;
            let handled = p.items_done.load(Ordering::SeqCst) >= p.items_accepted.load(Ordering::SeqCst);
            let backlog = self.outbox.backlog();
            if (handled && backlog == 0) || tokio::time::Instant::now() >= deadline {
                let (accepted, delivered) = self.counts();
                return (accepted, delivered, backlog);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Commits events to the outbox, a batch per transaction, and passes rows and states on.
async fn intake(
    mut rx: mpsc::Receiver<Outgoing>,
    rows: RowQueues,
    outbox: Arc<Outbox>,
    committed: Arc<Notify>,
    live: LiveEvents,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
) {
    let mut received = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut received, BATCH).await > 0 {
        let mut entries = Vec::new();
        let mut events = 0u64;
        // Per camera, the newest state to cache and how many it supersedes.
        let mut states: HashMap<_, (Option<StateSnapshot>, u64)> = HashMap::new();
        for item in received.drain(..) {
            match item {
                Outgoing::Event(event) => {
                    events += 1;
                    match serde_json::to_vec(&*event) {
                        Ok(json) => {
                            let mut live = live.lock();
                            // Bounded: past it (a long outage, events refused by a full outbox),
                            // the oldest ones just lose their latency sample and trace.
                            if live.len() >= LIVE_EVENTS_LIMIT {
                                live.clear();
                            }
                            live.insert(event.event_id.clone(), (event.captured, event.span.clone()));
                            drop(live);
                            entries.push((event.event_id.clone(), json));
                        }
                        Err(error) => tracing::error!(%error, "event not serialisable; dropped"),
                    }
                }
                Outgoing::Aggregates(batch) => rows.send(RowItem::Aggregates(batch), &metrics, &progress),
                Outgoing::System(event) => rows.send(RowItem::System(event), &metrics, &progress),
                Outgoing::State(s) => {
                    let entry = states.entry(s.camera_id.clone()).or_default();
                    *entry = (Some(s), entry.1 + 1);
                }
                Outgoing::ForgetState(camera_id) => {
                    let entry = states.entry(camera_id).or_default();
                    *entry = (None, entry.1 + 1);
                }
            }
        }
        for (camera_id, (state, superseding)) in states {
            rows.send(RowItem::State { camera_id, state, superseding }, &metrics, &progress);
        }
        if !entries.is_empty() {
            append(&outbox, entries, &metrics).await;
            committed.notify_one();
        }
        progress.items_done.fetch_add(events, Ordering::SeqCst);
    }
}

/// Appends to the outbox (a disk error is retried: the events are still in memory) and counts
/// what a full outbox refused or dropped.
async fn append(outbox: &Arc<Outbox>, entries: Vec<(String, Vec<u8>)>, metrics: &Metrics) {
    let entries = Arc::new(entries);
    let outcome = until_outbox(outbox, "append", move |store| store.append(&entries)).await;
    let lost = outcome.rejected + outcome.dropped_oldest;
    if lost > 0 {
        metrics.events_dropped.inc_by(lost as u64);
        tracing::error!(
            rejected = outcome.rejected,
            dropped_oldest = outcome.dropped_oldest,
            "outbox full; events lost"
        );
    }
}

/// Runs an outbox call until it succeeds, with backoff: the outbox is local, so an error is a
/// disk in trouble, and giving up would lose events.
async fn until_outbox<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    what: &str,
    call: impl Fn(&Outbox) -> Result<T, super::outbox::OutboxError> + Clone + Send + 'static,
) -> T {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match on_outbox(outbox, call.clone()).await {
            Ok(value) => return value,
            Err(error) => tracing::error!(%error, "outbox {what} failed; retrying"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Runs an outbox call (it may wait for an fsync) on the blocking pool.
async fn on_outbox<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    call: impl FnOnce(&Outbox) -> Result<T, super::outbox::OutboxError> + Send + 'static,
) -> Result<T, String> {
    let store = outbox.clone();
    match tokio::task::spawn_blocking(move || call(&store)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("outbox call crashed: {e}")),
    }
}

/// Delivers what the outbox holds, oldest first, and acknowledges it.
async fn deliver_from_outbox(
    sinks: Arc<Sinks>,
    outbox: Arc<Outbox>,
    committed: Arc<Notify>,
    live: LiveEvents,
    progress: Arc<Progress>,
) {
    loop {
        let pending = until_outbox(&outbox, "read", |store| store.pending(0, BATCH)).await;
        if pending.is_empty() {
            committed.notified().await;
            continue;
        }
        let (seqs, mut events) = decode(pending);
        {
            let mut live = live.lock();
            for event in &mut events {
                if let Some((captured, span)) = live.remove(&event.event_id) {
                    (event.captured, event.span) = (captured, span);
                }
            }
        }
        if !events.is_empty() {
            // A traced event's `publish` span lasts until both stores have it.
            let publishing: Vec<_> =
                events.iter().map(|e| crate::child_span!(&e.span, "publish", batch = events.len())).collect();
            sinks.deliver(&events).await;
            drop(publishing);
        }
        // Should acknowledging fail for a while, the events stay and are delivered again later,
        // harmlessly: both stores take an event once.
        let seqs = Arc::new(seqs);
        until_outbox(&outbox, "acknowledgement", move |store| store.ack(&seqs)).await;
        progress.delivered.fetch_add(events.len() as u64, Ordering::SeqCst);
    }
}

/// The events of outbox entries, with every entry's sequence number (an unreadable entry is
/// acknowledged and logged, so it cannot block the ones behind it).
fn decode(entries: Vec<Entry>) -> (Vec<u64>, Vec<Event>) {
    let mut seqs = Vec::with_capacity(entries.len());
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        seqs.push(entry.seq);
        match serde_json::from_slice::<Event>(&entry.payload) {
            Ok(event) => events.push(event),
            Err(error) => tracing::error!(%error, event_id = %entry.key, "outbox entry unreadable; skipped"),
        }
    }
    (seqs, events)
}

/// Upserts minute rows and caches states, in order.
async fn write_rows(sinks: Arc<Sinks>, mut rx: mpsc::Receiver<RowItem>, progress: Arc<Progress>) {
    while let Some(item) = rx.recv().await {
        let items = match item {
            RowItem::Aggregates(rows) => {
                sinks.store_aggregates(&rows).await;
                1
            }
            RowItem::State { camera_id, state, superseding } => {
                sinks.cache_state(&camera_id, state.as_ref()).await;
                superseding
            }
            RowItem::System(event) => {
                sinks.publish_system(&event).await;
                1
            }
        };
        progress.items_done.fetch_add(items, Ordering::SeqCst);
    }
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
        // Connection trouble is retried; a batch the server refuses (a defect) is logged and
        // dropped, so it cannot hold up every event behind it.
        self.until_done(&self.postgres_breaker, "postgres event insert", || async {
            self.db.insert_events(batch).await.map(|_| ()).map_err(|e| {
                let transient = e.is_transient();
                (e.to_string(), transient)
            })
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

impl Sinks {
    /// Adds a system event to `{prefix}:system` (stream, capped at 10,000, and channel), retried
    /// through the Redis breaker: rare, and an operator's record of what changed.
    async fn publish_system(&self, event: &serde_json::Value) {
        let key = self.keys.system_stream();
        let json = event.to_string();
        self.until_done(&self.redis_breaker, "publishing a system event", || async {
            let mut conn = self.redis.get().await.map_err(|e| (e.to_string(), true))?;
            let mut pipe = bb8_redis::redis::pipe();
            pipe.cmd("XADD").arg(&key).arg("MAXLEN").arg("~").arg(10_000).arg("*").arg("data").arg(&json).ignore();
            pipe.cmd("PUBLISH").arg(&key).arg(&json).ignore();
            pipe.query_async::<()>(&mut *conn).await.map_err(|e| (e.to_string(), true))
        })
        .await;
    }
}

/// Writes a camera's state into its hash, or removes the hash (`None`).
async fn write_state(
    camera_id: &str,
    state: Option<&StateSnapshot>,
    redis: &RedisPool,
    keys: &RedisKeys,
) -> Result<(), String> {
    let mut conn = redis.get().await.map_err(|e| e.to_string())?;
    let key = keys.camera_state(camera_id);
    let command = match state {
        Some(state) => {
            let mut hset = bb8_redis::redis::cmd("HSET");
            hset.arg(key)
                .arg("state")
                .arg(state.state.to_string())
                .arg("updated_at")
                .arg(chrono::Utc::now().to_rfc3339());
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

async fn publish_redis(
    batch: &[Event],
    redis: &RedisPool,
    keys: &RedisKeys,
    stream: StreamOptions,
) -> Result<(), String> {
    let mut conn = redis.get().await.map_err(|e| e.to_string())?;
    // Hashed once (for EVALSHA), not per batch.
    static SCRIPT: std::sync::LazyLock<bb8_redis::redis::Script> =
        std::sync::LazyLock::new(|| bb8_redis::redis::Script::new(PUBLISH_ONCE));
    let mut call = SCRIPT.key(keys.events_stream());
    call.arg(stream.max_len).arg(stream.dedup_ttl_s).arg(keys.event_seen_prefix());
    for event in batch {
        let json = serde_json::to_string(event).map_err(|e| e.to_string())?;
        call.arg(&event.event_id)
            .arg(&*event.camera_id)
            .arg(event.kind())
            .arg(keys.camera_channel(&event.camera_id))
            .arg(json);
    }
    call.invoke_async::<u64>(&mut *conn).await.map(|_| ()).map_err(|e| e.to_string())
}
