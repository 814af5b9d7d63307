//! Delivers events to Redis (PUBLISH for live consumers, XADD for consumers that must not miss
//! anything) and PostgreSQL (idempotent on `event_id`), in batches, from one task.
//!
//! Each batch is delivered to Redis once and to PostgreSQL once, each retried with backoff until it
//! succeeds, so a PostgreSQL hiccup never writes the Redis stream twice. The intake is bounded:
//! when it is full the event is dropped and counted (the durable outbox replaces this policy).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::EventSink;
use crate::actors::messages::Event;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::redis_keys::RedisKeys;
use crate::supervision::Backoff;

pub type RedisPool = bb8::Pool<bb8_redis::RedisConnectionManager>;

const BATCH: usize = 256;

pub struct Publisher {
    tx: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    /// Events accepted by `submit`, and events delivered to both stores: equal when drained.
    accepted: AtomicU64,
    delivered: Arc<AtomicU64>,
}

impl EventSink for Publisher {
    fn submit(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.metrics.events_dropped.inc();
            tracing::error!("event sink queue full; event dropped");
        } else {
            self.accepted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Publisher {
    /// Starts the delivery task on the current runtime.
    pub fn spawn(redis: RedisPool, keys: RedisKeys, stream_max_len: u64, db: Db, metrics: Arc<Metrics>, capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Event>(capacity);
        let task_metrics = metrics.clone();
        let delivered = Arc::new(AtomicU64::new(0));
        let task_delivered = delivered.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                deliver(&batch, &redis, &keys, stream_max_len, &db, &task_metrics).await;
                task_delivered.fetch_add(batch.len() as u64, Ordering::SeqCst);
                batch.clear();
            }
        });
        Self { tx, metrics, accepted: AtomicU64::new(0), delivered }
    }

    /// Waits until every accepted event is delivered, or `timeout`; returns (accepted, delivered).
    /// For shutdown: the cameras are stopped first, so nothing new arrives meanwhile.
    pub async fn drain(&self, timeout: Duration) -> (u64, u64) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (accepted, delivered) = (self.accepted.load(Ordering::SeqCst), self.delivered.load(Ordering::SeqCst));
            if delivered >= accepted || tokio::time::Instant::now() >= deadline {
                return (accepted, delivered);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn deliver(batch: &[Event], redis: &RedisPool, keys: &RedisKeys, max_len: u64, db: &Db, metrics: &Metrics) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while let Err(error) = publish_redis(batch, redis, keys, max_len).await {
        metrics.sink_failures.inc();
        tracing::warn!(%error, events = batch.len(), "redis publish failed; retrying");
        tokio::time::sleep(backoff.next_delay()).await;
    }
    for event in batch {
        if let Some(captured) = event.captured {
            metrics.analytics_latency.observe(captured.elapsed().as_secs_f64());
        }
    }
    backoff.reset();
    while let Err(error) = db.insert_events(batch).await {
        metrics.sink_failures.inc();
        tracing::warn!(%error, events = batch.len(), "postgres insert failed; retrying");
        tokio::time::sleep(backoff.next_delay()).await;
    }
    metrics.events_published.inc_by(batch.len() as u64);
}

async fn publish_redis(batch: &[Event], redis: &RedisPool, keys: &RedisKeys, max_len: u64) -> Result<(), String> {
    let mut conn = redis.get().await.map_err(|e| e.to_string())?;
    // MULTI/EXEC: a batch lands in Redis whole or not at all. A reply lost after EXEC still makes
    // the retry publish it again, so Redis delivery is at least once (consumers key on event_id);
    // PostgreSQL is exactly once.
    let mut pipe = bb8_redis::redis::pipe();
    pipe.atomic();
    for event in batch {
        let json = serde_json::to_string(event).map_err(|e| e.to_string())?;
        pipe.cmd("PUBLISH").arg(keys.camera_channel(&event.camera_id)).arg(&json).ignore();
        pipe.cmd("XADD")
            .arg(keys.events_stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(max_len)
            .arg("*")
            .arg("event_id")
            .arg(&event.event_id)
            .arg("camera_id")
            .arg(&*event.camera_id)
            .arg("type")
            .arg(event.kind)
            .arg("data")
            .arg(&json)
            .ignore();
    }
    pipe.query_async::<()>(&mut *conn).await.map_err(|e| e.to_string())
}
