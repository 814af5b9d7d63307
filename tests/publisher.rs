//! The publisher (`sinks::publisher`) run inside the test process against the real Redis and
//! PostgreSQL, each behind a wrapper that can make it fail on demand (`TestStores`) and that
//! checks every event handed to a store is in the outbox at that moment. No binary, no model:
//! events are made here.
//!
//! Waits poll a condition with a deadline, so a regression fails instead of hanging.

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bb8_postgres::tokio_postgres;
use bb8_redis::redis;
use common::TestEnv;
use its_analytics::analytics::{AggregateRow, ElementKind, StateSnapshot};
use its_analytics::db::Db;
use its_analytics::events::{Direction, Event, EventDetail, EventRecord, IncidentEvent, LineCrossing};
use its_analytics::metrics::Metrics;
use its_analytics::objects::ObjectClass;
use its_analytics::overflow::WhenFull;
use its_analytics::redis_keys::RedisKeys;
use its_analytics::settings::PublisherSettings;
use its_analytics::sinks::outbox::{Outbox, OutboxConfig};
use its_analytics::sinks::publisher::Publisher;
use its_analytics::sinks::stores::{RedisPostgres, StoreError, Stores, StreamOptions};
use its_analytics::sinks::EventSink;
use its_analytics::supervision::{BreakerConfig, BreakerState};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// A fault injected into one store.
#[derive(Default)]
struct Fault {
    /// Every call fails without reaching the store...
    down: AtomicBool,
    /// ...except this many, which pass.
    passes: AtomicU32,
    /// The next call that succeeds reports a failure (its reply is lost), and the store goes down.
    lose_reply: AtomicBool,
    /// Calls that failed because of this fault.
    failures: AtomicU32,
}

impl Fault {
    async fn around(&self, call: impl Future<Output = Result<(), StoreError>>) -> Result<(), StoreError> {
        let passes = || self.passes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if self.down.load(Ordering::SeqCst) && !passes() {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("injected: store down".into()));
        }
        call.await?;
        if self.lose_reply.swap(false, Ordering::SeqCst) {
            self.down.store(true, Ordering::SeqCst);
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("injected: reply lost".into()));
        }
        Ok(())
    }

    fn failures(&self) -> u32 {
        self.failures.load(Ordering::SeqCst)
    }
}

/// The real stores, with a fault each, counting events handed to a store that the outbox did not
/// hold at that moment (delivered before their commit, or after their acknowledgement).
#[derive(Clone)]
struct TestStores(Arc<Shared>);

struct Shared {
    real: RedisPostgres,
    outbox: Arc<Outbox>,
    redis: Fault,
    postgres: Fault,
    not_in_outbox: AtomicUsize,
}

impl TestStores {
    async fn check_in_outbox(&self, events: &[EventRecord<'_>]) {
        let outbox = self.0.outbox.clone();
        let pending = tokio::task::spawn_blocking(move || outbox.pending(0, usize::MAX).unwrap()).await.unwrap();
        let pending: HashSet<String> = pending.into_iter().map(|entry| entry.key).collect();
        let missing = events.iter().filter(|event| !pending.contains(&*event.header.event_id)).count();
        self.0.not_in_outbox.fetch_add(missing, Ordering::SeqCst);
    }
}

impl Stores for TestStores {
    async fn publish_events(&self, events: &[EventRecord<'_>]) -> Result<(), StoreError> {
        self.check_in_outbox(events).await;
        self.0.redis.around(self.0.real.publish_events(events)).await
    }

    async fn insert_events(&self, events: &[EventRecord<'_>]) -> Result<(), StoreError> {
        self.check_in_outbox(events).await;
        self.0.postgres.around(self.0.real.insert_events(events)).await
    }

    async fn upsert_aggregates(&self, rows: &[AggregateRow]) -> Result<(), StoreError> {
        self.0.postgres.around(self.0.real.upsert_aggregates(rows)).await
    }

    async fn write_state(&self, camera_id: &str, state: Option<&StateSnapshot>) -> Result<(), StoreError> {
        self.0.redis.around(self.0.real.write_state(camera_id, state)).await
    }

    async fn publish_system(&self, json: &str) -> Result<(), StoreError> {
        self.0.redis.around(self.0.real.publish_system(json)).await
    }
}

/// A publisher on a test database, key prefix and outbox file of its own.
struct Harness {
    publisher: Publisher,
    stores: TestStores,
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
    db: tokio_postgres::Client,
    redis: redis::aio::MultiplexedConnection,
    _outbox_dir: tempfile::TempDir,
    env: TestEnv,
}

struct Options {
    settings: PublisherSettings,
    max_events: u64,
    when_full: WhenFull,
}

impl Default for Options {
    fn default() -> Self {
        let settings = PublisherSettings { intake_capacity: 1024, batch_size: 8, row_queue_capacity: 64 };
        Self { settings, max_events: 100_000, when_full: WhenFull::Reject }
    }
}

async fn real_stores(env: &TestEnv) -> RedisPostgres {
    let db = Db::connect(&env.postgres_url, 4, Duration::from_secs(2)).await.expect("test database");
    let mut settings = its_analytics::settings::Settings::load(None).unwrap().redis;
    (settings.url, settings.pool_size, settings.connect_timeout_ms) = (common::redis_url(), 4, 500);
    let redis = its_analytics::redis_conn::RedisPool::connect(&settings).await.unwrap();
    let stream = StreamOptions::from_settings(&settings);
    RedisPostgres { redis, keys: RedisKeys::new(env.key_prefix()), stream, db }
}

fn open_outbox(dir: &tempfile::TempDir, options: &Options) -> Arc<Outbox> {
    let path = dir.path().join("outbox.redb");
    Arc::new(Outbox::open(OutboxConfig { path, max_events: options.max_events, when_full: options.when_full }).unwrap())
}

impl Harness {
    async fn start(options: Options) -> Self {
        let env = TestEnv::new().await;
        let dir = tempfile::tempdir().unwrap();
        Self::start_on(env, dir, options).await
    }

    /// Starts on `dir`, whose outbox a test may have filled (a previous run's leftovers).
    async fn start_on(env: TestEnv, dir: tempfile::TempDir, options: Options) -> Self {
        let outbox = open_outbox(&dir, &options);
        let stores = TestStores(Arc::new(Shared {
            real: real_stores(&env).await,
            outbox: outbox.clone(),
            redis: Fault::default(),
            postgres: Fault::default(),
            not_in_outbox: AtomicUsize::new(0),
        }));
        let metrics = Arc::new(Metrics::new());
        // Quick to open and to try again, so an outage and its end take a fraction of a second.
        let breaker =
            BreakerConfig { failure_threshold: 3, open_for: Duration::from_millis(200), half_open_successes: 1 };
        let publisher = Publisher::spawn(stores.clone(), &options.settings, breaker, metrics.clone(), outbox.clone());
        Self { publisher, stores, metrics, outbox, db: env.db().await, redis: env.redis().await, _outbox_dir: dir, env }
    }

    fn redis_fault(&self) -> &Fault {
        &self.stores.0.redis
    }

    fn postgres_fault(&self) -> &Fault {
        &self.stores.0.postgres
    }

    fn delivered(&self) -> u64 {
        self.publisher.counts().1
    }

    /// Submits events a batch at a time, each committed before the next is submitted (so the
    /// intake never fills and the hand-over sees one batch per commit). Only while nothing is
    /// being acknowledged: it watches the outbox grow.
    async fn submit_committed(&self, events: &[(Event, String)]) {
        for chunk in events.chunks(8) {
            let target = self.outbox.backlog() + chunk.len() as u64;
            for (event, _) in chunk {
                self.publisher.submit(event.clone());
            }
            until("the batch committed", || self.outbox.backlog() >= target).await;
        }
    }

    /// `(event_id, data)` of every entry of the events stream, in stream order.
    async fn stream(&mut self) -> Vec<(String, String)> {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(format!("{}:events", self.env.key_prefix()))
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis)
            .await
            .unwrap();
        entries
            .into_iter()
            .map(|(_, fields)| {
                let fields: HashMap<_, _> = fields.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect();
                (fields["event_id"].clone(), fields["data"].clone())
            })
            .collect()
    }

    async fn stream_ids(&mut self) -> Vec<String> {
        self.stream().await.into_iter().map(|(id, _)| id).collect()
    }

    /// Event ids in PostgreSQL, sorted.
    async fn stored_ids(&self) -> Vec<String> {
        let rows = self.db.query("SELECT event_id FROM events ORDER BY event_id", &[]).await.unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    }

    fn breaker(&self, name: &str) -> BreakerState {
        self.publisher.breakers().into_iter().find(|b| b.name == name).unwrap().state
    }

    fn latency_observations(&self) -> f64 {
        common::metric(&self.metrics.encode(), "analytics_latency_seconds_count").unwrap_or(0.0)
    }

    fn not_in_outbox(&self) -> usize {
        self.stores.0.not_in_outbox.load(Ordering::SeqCst)
    }
}

/// Polls `ready` until it holds, failing the test after `WAIT`.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Event `n` of a test with its JSON as the service serialises it: line crossings, and every
/// fifth an incident, so both kinds of columns are written.
fn event(n: u64) -> (Event, String) {
    let ts = chrono::DateTime::from_timestamp_millis(1_767_000_000_000 + n as i64 * 40).unwrap();
    let detail = if n % 5 == 4 {
        EventDetail::IncidentOpened(IncidentEvent {
            incident_id: format!("inc-{n}"),
            incident_type: "stopped_vehicle".into(),
            zone_id: "lane-1".into(),
            track_id: n.is_multiple_of(2).then_some(n),
            class: Some(ObjectClass::Truck),
            started_at: ts,
            duration_s: 15.5,
            speed_kmh: None,
            density_per_km: Some(31.25),
        })
    } else {
        EventDetail::LineCrossing(LineCrossing {
            track_id: n,
            class: ObjectClass::Car,
            line_id: "north".into(),
            direction: if n.is_multiple_of(2) { Direction::In } else { Direction::Out },
            speed_kmh: Some(n as f64 / 3.0),
            speed_uncertainty_kmh: Some(1.5),
        })
    };
    let event = Event {
        event_id: format!("ev-{n:06}"),
        camera_id: "cam-a".into(),
        ts,
        frame_seq: n,
        geometry_version: 1,
        detail,
        captured: Some(Instant::now()),
        span: tracing::Span::none(),
    };
    let json = serde_json::to_string(&event).unwrap();
    (event, json)
}

fn events(range: std::ops::Range<u64>) -> Vec<(Event, String)> {
    range.map(event).collect()
}

fn ids(events: &[(Event, String)]) -> Vec<String> {
    events.iter().map(|(event, _)| event.event_id.clone()).collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// The columns the service has always written for an event, from the typed event.
fn expected_columns(event: &Event) -> Value {
    let (track, class, line, direction, zone, incident) = match &event.detail {
        EventDetail::LineCrossing(c) => (
            Some(c.track_id as i64),
            Some(c.class.as_str()),
            Some(c.line_id.as_str()),
            Some(c.direction.as_str()),
            None,
            None,
        ),
        EventDetail::IncidentOpened(i) | EventDetail::IncidentUpdated(i) | EventDetail::IncidentClosed(i) => (
            i.track_id.map(|t| t as i64),
            i.class.map(|c| c.as_str()),
            None,
            None,
            Some(i.zone_id.as_str()),
            Some(i.incident_id.as_str()),
        ),
    };
    serde_json::json!([
        event.camera_id.to_string(),
        event.kind(),
        event.ts,
        event.frame_seq as i64,
        event.geometry_version as i32,
        track,
        class,
        line,
        direction,
        zone,
        incident
    ])
}

#[tokio::test]
async fn events_reach_both_stores_once_in_order_after_their_commit() {
    let mut h = Harness::start(Options::default()).await;
    let sent = events(0..100);
    for (event, _) in &sent {
        h.publisher.submit(event.clone());
    }
    assert_eq!(h.publisher.drain(WAIT).await, (100, 100, 0));

    assert_eq!(h.not_in_outbox(), 0, "an event reached a store before its commit or after its acknowledgement");
    let stream = h.stream().await;
    let expected: Vec<(String, String)> =
        sent.iter().map(|(event, json)| (event.event_id.clone(), json.clone())).collect();
    assert_eq!(stream, expected, "the stream holds each event once, in order, as the JSON it was serialised to");

    let rows =
        h.db.query(
            "SELECT event_id, camera_id, type, ts, frame_seq, geometry_version, track_id, class, line_id, direction,
                    zone_id, incident_id, payload FROM events ORDER BY event_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 100);
    for (row, (event, json)) in rows.iter().zip(&sent) {
        assert_eq!(row.get::<_, String>(0), event.event_id);
        let columns = serde_json::json!([
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, chrono::DateTime<chrono::Utc>>(3),
            row.get::<_, i64>(4),
            row.get::<_, i32>(5),
            row.get::<_, Option<i64>>(6),
            row.get::<_, Option<String>>(7),
            row.get::<_, Option<String>>(8),
            row.get::<_, Option<String>>(9),
            row.get::<_, Option<String>>(10),
            row.get::<_, Option<String>>(11),
        ]);
        assert_eq!(columns, expected_columns(event), "{}", event.event_id);
        assert_eq!(row.get::<_, Value>(12), serde_json::from_str::<Value>(json).unwrap(), "{}", event.event_id);
    }
    assert_eq!(h.latency_observations(), 100.0, "analytics_latency_seconds is observed once per event");
    assert_eq!(h.metrics.events_published.get(), 100);
}

#[tokio::test]
async fn a_redis_outage_keeps_events_in_the_outbox_and_they_arrive_once_in_order() {
    // The hand-over holds 4 batches of 8: most of the outage's events are read back from the outbox.
    let settings = PublisherSettings { intake_capacity: 32, batch_size: 8, row_queue_capacity: 64 };
    let mut h = Harness::start(Options { settings, ..Options::default() }).await;
    let sent = events(0..88);

    // Redis takes the first batch, its reply is lost, then it is down.
    h.redis_fault().lose_reply.store(true, Ordering::SeqCst);
    h.submit_committed(&sent[..8]).await;
    until("the redis breaker open", || h.breaker("redis") == BreakerState::Open).await;
    h.submit_committed(&sent[8..80]).await;
    assert_eq!((h.delivered(), h.publisher.backlog()), (0, 80), "every event waits in the outbox");
    assert_eq!(h.stream_ids().await, ids(&sent[..8]), "only the batch whose reply was lost");
    assert!(h.stored_ids().await.is_empty(), "PostgreSQL waits for Redis");

    // One call gets through: the first batch again (a retry, not added twice), then into
    // PostgreSQL. A batch submitted now finds room in memory while older ones are only on disk.
    h.redis_fault().passes.store(1, Ordering::SeqCst);
    until("the first batch delivered and acknowledged", || h.delivered() == 8 && h.publisher.backlog() == 72).await;
    h.submit_committed(&sent[80..]).await;
    h.redis_fault().down.store(false, Ordering::SeqCst);
    assert_eq!(h.publisher.drain(WAIT).await, (88, 88, 0));

    assert_eq!(h.stream_ids().await, ids(&sent), "each event once, in the order submitted");
    assert_eq!(h.stored_ids().await, sorted(ids(&sent)));
    assert_eq!(h.not_in_outbox(), 0);
    assert!(h.latency_observations() < 88.0, "the hand-over never filled: nothing was read back from the outbox");
}

#[tokio::test]
async fn a_postgres_outage_keeps_events_in_the_outbox_and_they_arrive_once_in_order() {
    let settings = PublisherSettings { intake_capacity: 32, batch_size: 8, row_queue_capacity: 64 };
    let mut h = Harness::start(Options { settings, ..Options::default() }).await;
    let sent = events(0..80);

    // PostgreSQL takes the first batch, its reply is lost, then it is down.
    h.postgres_fault().lose_reply.store(true, Ordering::SeqCst);
    h.submit_committed(&sent[..8]).await;
    until("the postgres breaker open", || h.breaker("postgres") == BreakerState::Open).await;
    h.submit_committed(&sent[8..]).await;
    assert_eq!((h.delivered(), h.publisher.backlog()), (0, 80), "every event waits in the outbox");
    assert_eq!(h.stream_ids().await, ids(&sent[..8]), "the live stream waits for PostgreSQL");
    assert_eq!(h.stored_ids().await, ids(&sent[..8]), "only the batch whose reply was lost");

    // Nothing is submitted after the outage: the last batches are only in the outbox.
    h.postgres_fault().down.store(false, Ordering::SeqCst);
    assert_eq!(h.publisher.drain(WAIT).await, (80, 80, 0));

    assert_eq!(h.stream_ids().await, ids(&sent), "each event once, in the order submitted");
    assert_eq!(h.stored_ids().await, sorted(ids(&sent)));
    assert_eq!(h.not_in_outbox(), 0);
    assert!(h.latency_observations() < 80.0, "the hand-over never filled: nothing was read back from the outbox");
}

#[tokio::test]
async fn what_the_outbox_held_at_start_is_delivered_first_and_once() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let leftovers = events(0..20);
    let new = events(20..30);
    {
        // A previous run committed 20 events and delivered the first 5 to both stores, but died
        // before acknowledging them.
        let outbox = open_outbox(&dir, &Options::default());
        let entries: Vec<_> =
            leftovers.iter().map(|(event, json)| (event.event_id.clone(), json.clone().into_bytes())).collect();
        outbox.append(&entries).unwrap();
        let stores = real_stores(&env).await;
        let delivered: Vec<_> =
            leftovers[..5].iter().map(|(_, json)| EventRecord::parse(json.as_bytes()).unwrap()).collect();
        stores.publish_events(&delivered).await.unwrap();
        stores.insert_events(&delivered).await.unwrap();
    }
    let mut h = Harness::start_on(env, dir, Options::default()).await;
    assert_eq!(h.publisher.replayed(), 20);
    for (event, _) in &new {
        h.publisher.submit(event.clone());
    }
    assert_eq!(h.publisher.drain(WAIT).await, (10, 30, 0), "10 accepted, 20 replayed");

    let all: Vec<_> = leftovers.iter().chain(&new).cloned().collect();
    assert_eq!(h.stream_ids().await, ids(&all), "the leftovers first, in order, each once");
    assert_eq!(h.stored_ids().await, sorted(ids(&all)));
    assert_eq!(h.not_in_outbox(), 0);
}

#[tokio::test]
async fn drain_waits_for_everything_accepted() {
    let mut h = Harness::start(Options::default()).await;
    let sent = events(0..50);
    for (event, _) in &sent {
        h.publisher.submit(event.clone());
    }
    h.publisher.submit_state(StateSnapshot { camera_id: "cam-a".into(), state: serde_json::json!({ "count": 50 }) });
    let row = AggregateRow {
        camera_id: "cam-a".into(),
        interval_start: chrono::DateTime::from_timestamp(1_767_000_000, 0).unwrap(),
        geometry_version: 1,
        element_id: "north".into(),
        stream_epoch_ms: 1,
        element_kind: ElementKind::Line,
        measures: Default::default(),
    };
    h.publisher.submit_aggregates(vec![row]);
    assert_eq!(h.publisher.drain(WAIT).await, (50, 50, 0));
    assert_eq!(h.stream_ids().await, ids(&sent));
    assert_eq!(h.stored_ids().await.len(), 50);
    let state: Option<String> = redis::cmd("HGET")
        .arg(format!("{}:state:cam-a", h.env.key_prefix()))
        .arg("state")
        .query_async(&mut h.redis)
        .await
        .unwrap();
    assert_eq!(state.as_deref(), Some(r#"{"count":50}"#));
    let rows: i64 = h.db.query_one("SELECT count(*) FROM analytics_1m", &[]).await.unwrap().get(0);
    assert_eq!(rows, 1);

    // With Redis down it gives up at its deadline and says what stays in the outbox.
    h.redis_fault().down.store(true, Ordering::SeqCst);
    for (event, _) in events(50..60) {
        h.publisher.submit(event);
    }
    let started = Instant::now();
    assert_eq!(h.publisher.drain(Duration::from_millis(500)).await, (60, 50, 10));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_full_intake_refuses_events_and_counts_them() {
    let settings = PublisherSettings { intake_capacity: 8, batch_size: 8, row_queue_capacity: 64 };
    let mut h = Harness::start(Options { settings, ..Options::default() }).await;
    let sent = events(0..12);
    // This test's runtime has one thread and nothing here awaits: the intake task cannot take
    // anything before the last submit.
    for (event, _) in &sent {
        h.publisher.submit(event.clone());
    }
    assert_eq!(h.publisher.counts().0, 8, "accepted");
    assert_eq!(h.metrics.events_dropped.get(), 4, "refused and counted in its_events_dropped_total");
    assert_eq!(h.publisher.drain(WAIT).await, (8, 8, 0));
    assert_eq!(h.stream_ids().await, ids(&sent[..8]));
}

#[tokio::test]
async fn events_the_outbox_dropped_for_room_are_not_delivered_from_memory() {
    let settings = PublisherSettings { intake_capacity: 32, batch_size: 8, row_queue_capacity: 64 };
    let options = Options { settings, max_events: 16, when_full: WhenFull::DropOldest };
    let mut h = Harness::start(options).await;
    let sent = events(0..40);
    h.redis_fault().down.store(true, Ordering::SeqCst);
    for (event, _) in &sent[..8] {
        h.publisher.submit(event.clone());
    }
    until("the first batch tried", || h.redis_fault().failures() >= 1).await;
    // Batches 2 to 5 wait in memory; the outbox keeps the newest 16 events (batches 4 and 5).
    for (k, chunk) in sent.chunks(8).enumerate().skip(1) {
        for (event, _) in chunk {
            h.publisher.submit(event.clone());
        }
        // Nothing is acknowledged meanwhile: what was committed is kept or dropped.
        let committed = 8 * (k as u64 + 1);
        until("the batch committed", || h.outbox.backlog() + h.metrics.events_dropped.get() == committed).await;
    }
    assert_eq!((h.outbox.backlog(), h.metrics.events_dropped.get()), (16, 24));
    h.redis_fault().down.store(false, Ordering::SeqCst);
    assert_eq!(h.publisher.drain(WAIT).await, (40, 24, 0));

    // The first batch was already being delivered when it was dropped from the outbox.
    let expected: Vec<_> = sent[..8].iter().chain(&sent[24..]).cloned().collect();
    assert_eq!(h.stream_ids().await, ids(&expected));
    assert_eq!(h.stored_ids().await, sorted(ids(&expected)));
}
