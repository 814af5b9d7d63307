//! Delivers events to Redis (PUBLISH for live consumers, XADD for consumers that must not miss
//! anything) and PostgreSQL (idempotent on `event_id`), through the durable outbox; also the
//! per-minute aggregates (PostgreSQL) and each camera's latest state (a Redis hash).
//!
//! An event is serialised once, when the intake takes it: that JSON is what the outbox keeps, what
//! Redis publishes and what PostgreSQL stores (the other columns are read from the JSON's header).
//!
//! Four tasks:
//! - intake: commits each batch of events to the outbox (`outbox`, one fsync per batch) and hands
//!   the committed batch to the delivery in memory, with what only this process knows of each
//!   event (its capture instant and trace span); passes minute rows and states on, so an outage
//!   never holds up the commit of events;
//! - delivery: delivers the committed events in outbox order to Redis once and then to
//!   PostgreSQL once, each retried with backoff until it succeeds, and acknowledges them, which
//!   removes them from the outbox (while either store is down, events wait in the outbox for
//!   both). What memory does not hold it reads back from the outbox: what the last process left
//!   (delivered first) and batches committed while the hand-over was full;
//! - PostgreSQL rows: upserts minute rows (retried);
//! - Redis rows: caches states (best effort) and publishes system events (retried).
//!
//! Every queue is bounded (`[publisher]` settings) and refuses a new item when full
//! (`WhenFull::Reject`): a refused event or minute-row batch is counted in
//! `its_events_dropped_total`, a state is dropped silently (a newer one follows). A committed
//! batch the hand-over refuses is not lost: it is in the outbox.
//!
//! An event is "acknowledged" once the outbox has committed it: from then on a crash does not
//! lose it. The outbox's size limit and its policy when full are `[outbox]` settings; events it
//! refuses or drops are counted in `its_events_dropped_total`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use super::outbox::{Outbox, OutboxError};
use super::stores::{StoreError, Stores};
use super::EventSink;
use crate::analytics::{AggregateRow, StateSnapshot};
use crate::events::{Event, EventRecord};
use crate::ids::CameraId;
use crate::metrics::Metrics;
use crate::settings::PublisherSettings;
use crate::supervision::{Backoff, BreakerConfig, BreakerView, CircuitBreaker};

enum Outgoing {
    /// Boxed: an event is several times the size of the other items.
    Event(Box<Event>),
    Aggregates(Vec<AggregateRow>),
    State(StateSnapshot),
    /// The camera was removed: drop its cached state, after any state queued before.
    ForgetState(CameraId),
    System(serde_json::Value),
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
    /// Wakes `drain` whenever items are handled or events acknowledged (no polling).
    changed: Notify,
}

impl Progress {
    fn handled(&self, items: u64) {
        self.items_done.fetch_add(items, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
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
        camera_id: CameraId,
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
        progress.handled(items);
    }
}

/// An event committed to the outbox, on its way to the stores.
struct Committed {
    seq: u64,
    /// The event's JSON as the intake serialised it.
    json: Vec<u8>,
    /// `None` when read back from the outbox: only the process that accepted it knows these.
    live: Option<Live>,
}

/// What the outbox does not keep of an event: the capture instant of its frame, for
/// `analytics_latency_seconds`, and its trace span, the parent of its `publish` span.
struct Live {
    captured: Option<Instant>,
    span: tracing::Span,
}

/// Committed batches on their way from the intake to the delivery, in outbox order. Bounded: a
/// batch that finds it full stays in the outbox only, and the delivery, told so, reads it back.
struct HandOver {
    batches: mpsc::Sender<Vec<Committed>>,
    refused: Arc<Notify>,
}

impl HandOver {
    fn send(&self, batch: Vec<Committed>) {
        if !batch.is_empty() && self.batches.try_send(batch).is_err() {
            self.refused.notify_one();
        }
    }
}

impl Publisher {
    /// Starts the intake, delivery and rows tasks on the current runtime. Events the outbox
    /// holds from an earlier run are delivered first.
    pub fn spawn(
        stores: impl Stores,
        settings: &PublisherSettings,
        breaker: BreakerConfig,
        metrics: Arc<Metrics>,
        outbox: Arc<Outbox>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Outgoing>(settings.intake_capacity);
        let (postgres_tx, postgres_rx) = mpsc::channel::<RowItem>(settings.row_queue_capacity);
        let (redis_tx, redis_rx) = mpsc::channel::<RowItem>(settings.row_queue_capacity);
        let rows = RowQueues { postgres: postgres_tx, redis: redis_tx };
        // Memory for as many committed events as the intake holds.
        let (batches_tx, batches_rx) = mpsc::channel(settings.intake_capacity.div_ceil(settings.batch_size));
        let refused = Arc::new(Notify::new());
        let hand_over = HandOver { batches: batches_tx, refused: refused.clone() };
        let progress = Arc::new(Progress::default());
        let redis_breaker = metrics.breaker("redis", &breaker);
        let postgres_breaker = metrics.breaker("postgres", &breaker);
        let breakers = [redis_breaker.clone(), postgres_breaker.clone()];
        let sinks = Arc::new(Sinks { stores, metrics: metrics.clone(), redis_breaker, postgres_breaker });
        let left = outbox.backlog();
        if left > 0 {
            tracing::warn!(
                events = left,
                "the outbox holds events the last run did not deliver; delivering them first"
            );
        }
        tokio::spawn(intake(
            rx,
            rows,
            outbox.clone(),
            hand_over,
            settings.batch_size,
            metrics.clone(),
            progress.clone(),
        ));
        let delivery = Delivery {
            sinks: sinks.clone(),
            outbox: outbox.clone(),
            batches: batches_rx,
            refused,
            batch_size: settings.batch_size,
            progress: progress.clone(),
            delivered_through: 0,
            held: None,
            behind: true,
        };
        tokio::spawn(delivery.run());
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
            // Registered before the check, so a change between the check and the wait wakes it.
            let changed = p.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let handled = p.items_done.load(Ordering::SeqCst) >= p.items_accepted.load(Ordering::SeqCst);
            let backlog = self.outbox.backlog();
            if (handled && backlog == 0) || tokio::time::Instant::now() >= deadline {
                let (accepted, delivered) = self.counts();
                return (accepted, delivered, backlog);
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }
}

/// Commits events to the outbox, a batch per transaction, hands them to the delivery, and passes
/// rows and states on.
async fn intake(
    mut rx: mpsc::Receiver<Outgoing>,
    rows: RowQueues,
    outbox: Arc<Outbox>,
    hand_over: HandOver,
    batch_size: usize,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
) {
    let mut received = Vec::with_capacity(batch_size);
    while rx.recv_many(&mut received, batch_size).await > 0 {
        let mut entries = Vec::new();
        let mut lives = Vec::new();
        let mut events = 0u64;
        // Per camera, the newest state to cache and how many it supersedes.
        let mut states: HashMap<_, (Option<StateSnapshot>, u64)> = HashMap::new();
        for item in received.drain(..) {
            match item {
                Outgoing::Event(event) => {
                    events += 1;
                    match serde_json::to_vec(&*event) {
                        Ok(json) => {
                            let Event { event_id, captured, span, .. } = *event;
                            entries.push((event_id, json));
                            lives.push(Live { captured, span });
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
            hand_over.send(commit(&outbox, entries, lives, &metrics).await);
        }
        progress.handled(events);
    }
}

/// Appends `(event id, JSON)` entries to the outbox (a disk error is retried: the events are
/// still in memory), counts what a full outbox refused or dropped, and returns what it committed.
async fn commit(
    outbox: &Arc<Outbox>,
    entries: Vec<(String, Vec<u8>)>,
    lives: Vec<Live>,
    metrics: &Metrics,
) -> Vec<Committed> {
    let entries = Arc::new(entries);
    let appending = entries.clone();
    let outcome = until_outbox(outbox, "append", move |store| store.append(&appending)).await;
    let lost = outcome.rejected + outcome.dropped_oldest;
    if lost > 0 {
        metrics.events_dropped.inc_by(lost as u64);
        tracing::error!(
            rejected = outcome.rejected,
            dropped_oldest = outcome.dropped_oldest,
            "outbox full; events lost"
        );
    }
    let entries = Arc::try_unwrap(entries).unwrap_or_else(|shared| (*shared).clone());
    let appended = entries.into_iter().zip(lives).zip(outcome.seqs);
    appended.filter_map(|(((_, json), live), seq)| Some(Committed { seq: seq?, json, live: Some(live) })).collect()
}

/// Runs an outbox call until it succeeds, with backoff: the outbox is local, so an error is a
/// disk in trouble, and giving up would lose events.
async fn until_outbox<T: Send + 'static>(
    outbox: &Arc<Outbox>,
    what: &str,
    call: impl Fn(&Outbox) -> Result<T, OutboxError> + Clone + Send + 'static,
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
    call: impl FnOnce(&Outbox) -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, String> {
    let store = outbox.clone();
    match tokio::task::spawn_blocking(move || call(&store)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("outbox call crashed: {e}")),
    }
}

/// The delivery task: takes committed events in outbox order, delivers them and acknowledges
/// them.
struct Delivery<S> {
    sinks: Arc<Sinks<S>>,
    outbox: Arc<Outbox>,
    batches: mpsc::Receiver<Vec<Committed>>,
    /// Signalled when the hand-over refused a batch.
    refused: Arc<Notify>,
    batch_size: usize,
    progress: Arc<Progress>,
    /// Every entry up to this sequence number is delivered, or no longer in the outbox.
    delivered_through: u64,
    /// A batch from memory that waits for older entries only the outbox has.
    held: Option<Vec<Committed>>,
    /// The outbox may hold entries memory does not: what the last process left, or batches the
    /// hand-over refused. Cleared once a read of the outbox finds nothing more.
    behind: bool,
}

impl<S: Stores> Delivery<S> {
    async fn run(mut self) {
        while let Some(batch) = self.next_batch().await {
            self.deliver(batch).await;
        }
    }

    /// The next committed events in outbox order: from memory when nothing older is waiting in
    /// the outbox, else from the outbox. `None` once the intake has stopped.
    async fn next_batch(&mut self) -> Option<Vec<Committed>> {
        loop {
            self.delivered_through = self.delivered_through.max(self.outbox.dropped_through());
            let through = self.delivered_through;
            // Sequence numbers have no gaps: a batch that starts right after what was delivered
            // has nothing older waiting.
            let in_memory = self
                .held
                .take()
                .or_else(|| self.batches.try_recv().ok())
                .map(|mut batch| {
                    batch.retain(|committed| committed.seq > through);
                    batch
                })
                .filter(|batch| !batch.is_empty());
            match in_memory {
                Some(batch) if batch[0].seq == through + 1 => return Some(batch),
                None if !self.behind => {
                    tokio::select! {
                        batch = self.batches.recv() => self.held = Some(batch?),
                        () = self.refused.notified() => self.behind = true,
                    }
                }
                in_memory => {
                    let before = in_memory.as_ref().map_or(u64::MAX, |batch| batch[0].seq);
                    let older = self.read_outbox(before).await;
                    if !older.is_empty() {
                        self.held = in_memory;
                        return Some(older);
                    }
                    match in_memory {
                        Some(batch) => return Some(batch),
                        None => self.behind = false,
                    }
                }
            }
        }
    }

    /// Up to a batch of what the outbox holds after what was delivered and before `before`.
    async fn read_outbox(&self, before: u64) -> Vec<Committed> {
        let (after, limit) = (self.delivered_through, self.batch_size);
        let entries = until_outbox(&self.outbox, "read", move |store| store.pending(after, limit)).await;
        let older = entries.into_iter().take_while(|entry| entry.seq < before);
        older.map(|entry| Committed { seq: entry.seq, json: entry.payload, live: None }).collect()
    }

    /// Delivers a batch to Redis once and then to PostgreSQL once, and acknowledges it. An entry
    /// that does not read as an event is logged and acknowledged, so it cannot block the ones
    /// behind it.
    async fn deliver(&mut self, batch: Vec<Committed>) {
        let records: Vec<EventRecord> = batch
            .iter()
            .filter_map(|committed| match EventRecord::parse(&committed.json) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::error!(%error, seq = committed.seq, "outbox entry unreadable; skipped");
                    None
                }
            })
            .collect();
        if !records.is_empty() {
            let lives = || batch.iter().filter_map(|committed| committed.live.as_ref());
            // A traced event's `publish` span lasts until both stores have it.
            let publishing: Vec<_> =
                lives().map(|live| crate::child_span!(&live.span, "publish", batch = records.len())).collect();
            self.sinks.publish_events(&records).await;
            for live in lives() {
                if let Some(captured) = live.captured {
                    let exemplar = crate::metrics::TraceLabels::of(&live.span);
                    self.sinks.metrics.analytics_latency.observe(captured.elapsed().as_secs_f64(), exemplar, None);
                }
            }
            self.sinks.insert_events(&records).await;
            drop(publishing);
        }
        // Counted before the acknowledgement empties the outbox, which `drain` waits for.
        self.progress.delivered.fetch_add(records.len() as u64, Ordering::SeqCst);
        // Should acknowledging fail for a while, the events stay and are delivered again later,
        // harmlessly: both stores take an event once.
        let seqs: Arc<Vec<u64>> = Arc::new(batch.iter().map(|committed| committed.seq).collect());
        self.delivered_through = self.delivered_through.max(*seqs.last().unwrap_or(&0));
        until_outbox(&self.outbox, "acknowledgement", move |store| store.ack(&seqs)).await;
        self.progress.changed.notify_waiters();
    }
}

/// Upserts minute rows and caches states, in order.
async fn write_rows<S: Stores>(sinks: Arc<Sinks<S>>, mut rx: mpsc::Receiver<RowItem>, progress: Arc<Progress>) {
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
        progress.handled(items);
    }
}

/// How often a call held back by an open breaker looks again.
const BREAKER_POLL: Duration = Duration::from_millis(200);

/// The stores, each behind a circuit breaker: while one is open nothing is tried against it and
/// what is waiting for it stays queued, in order.
struct Sinks<S> {
    stores: S,
    metrics: Arc<Metrics>,
    redis_breaker: Arc<CircuitBreaker>,
    postgres_breaker: Arc<CircuitBreaker>,
}

impl<S: Stores> Sinks<S> {
    /// Runs `call` until it succeeds: through `breaker` (never while it is open), with backoff
    /// between failures. A request the store rejects is given up.
    async fn until_done<F, Fut>(&self, breaker: &CircuitBreaker, what: &str, mut call: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
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
                Err(StoreError::Rejected(error)) => {
                    // The server answered: it is up, only this call was refused.
                    breaker.record_success();
                    self.metrics.sink_failures.inc();
                    tracing::error!(%error, "{what} rejected; dropped");
                    return;
                }
                Err(StoreError::Unavailable(error)) => {
                    breaker.record_failure();
                    self.metrics.sink_failures.inc();
                    tracing::warn!(%error, "{what} failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn publish_events(&self, events: &[EventRecord<'_>]) {
        self.until_done(&self.redis_breaker, "redis publish", || self.stores.publish_events(events)).await;
    }

    /// Connection trouble is retried; a batch the server refuses (a defect) is logged and
    /// dropped, so it cannot hold up every event behind it.
    async fn insert_events(&self, events: &[EventRecord<'_>]) {
        self.until_done(&self.postgres_breaker, "postgres event insert", || self.stores.insert_events(events)).await;
        self.metrics.events_published.inc_by(events.len() as u64);
    }

    /// Retries while PostgreSQL is unreachable; rows the server rejects are logged and dropped,
    /// so one bad row cannot stop the delivery of everything behind it.
    async fn store_aggregates(&self, rows: &[AggregateRow]) {
        self.until_done(&self.postgres_breaker, "storing aggregate rows", || self.stores.upsert_aggregates(rows)).await;
    }

    /// Caches a camera's state in its hash (best effort: one try, none while Redis's breaker is
    /// open; the next state replaces it), or removes the hash of a removed camera (`None`:
    /// retried until done, since nothing would replace it).
    async fn cache_state(&self, camera_id: &str, state: Option<&StateSnapshot>) {
        if state.is_none() {
            self.until_done(&self.redis_breaker, "removing a camera's cached state", || {
                self.stores.write_state(camera_id, None)
            })
            .await;
            return;
        }
        if !self.redis_breaker.allow() {
            return;
        }
        match self.stores.write_state(camera_id, state).await {
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

    /// Adds a system event to `{prefix}:system` (stream and channel), retried through the Redis
    /// breaker: rare, and an operator's record of what changed.
    async fn publish_system(&self, event: &serde_json::Value) {
        let json = event.to_string();
        self.until_done(&self.redis_breaker, "publishing a system event", || self.stores.publish_system(&json)).await;
    }
}
