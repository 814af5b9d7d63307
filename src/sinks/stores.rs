//! What the publisher asks of Redis and PostgreSQL, one call per request, no retries: those, the
//! circuit breakers and the order of things are the publisher's. `Stores` is the seam between the
//! two, so the publisher's tests can make a store fail on demand around the real one.

use std::future::Future;

use crate::analytics::{AggregateRow, StateSnapshot};
use crate::db::Db;
use crate::events::EventRecord;
use crate::redis_keys::RedisKeys;

pub use crate::redis_conn::RedisPool;

/// Why a store call failed, which decides whether it is tried again.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is unreachable or failed for now (connection trouble, the server shutting down):
    /// the call may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// The store answered and refused the request: sending it again cannot help.
    #[error("{0}")]
    Rejected(String),
}

/// Redis and PostgreSQL as the publisher uses them. Each call is one request; a call that fails
/// may be made again with the same arguments, so each must be idempotent.
pub trait Stores: Send + Sync + 'static {
    /// Adds each event to the events stream and publishes it on its camera's channel, unless it
    /// was added before (within `redis.dedup_ttl_s`).
    fn publish_events(&self, events: &[EventRecord<'_>]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Inserts each event into PostgreSQL unless its id is there already.
    fn insert_events(&self, events: &[EventRecord<'_>]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Writes minute rows; a row written again replaces itself.
    fn upsert_aggregates(&self, rows: &[AggregateRow]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Caches a camera's latest state, or removes it (`None`).
    fn write_state(
        &self,
        camera_id: &str,
        state: Option<&StateSnapshot>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Adds a service event (JSON) to the system stream and channel.
    fn publish_system(&self, json: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How the events stream is kept: its approximate length cap, how long an event id is
/// remembered against duplicates, and how many replicas must acknowledge a batch (`WAIT`, within
/// `wait_timeout_ms`) before it counts as delivered (0: none asked).
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    pub max_len: u64,
    pub dedup_ttl_s: u64,
    pub wait_replicas: u32,
    pub wait_timeout_ms: u64,
}

impl StreamOptions {
    pub fn from_settings(settings: &crate::settings::RedisSettings) -> Self {
        Self {
            max_len: settings.stream_max_len,
            dedup_ttl_s: settings.dedup_ttl_s,
            wait_replicas: settings.replicas_to_wait_for(),
            wait_timeout_ms: settings.wait_timeout_ms,
        }
    }
}

/// The service's stores.
pub struct RedisPostgres {
    pub redis: RedisPool,
    pub keys: RedisKeys,
    pub stream: StreamOptions,
    pub db: Db,
}

/// Adds each event of a batch to the stream and its camera's channel unless its marker
/// (`RedisKeys::event_seen`) says it was added within the marker's lifetime, atomically: a
/// batch retried after a lost reply, or an event emitted again by a replay, lands once.
/// KEYS[1]: the stream, then the marker of each event (all in the stream's hash slot, so the
/// script runs on a Redis Cluster). ARGV: stream length cap, marker lifetime (s), then per event
/// its id, camera id, type, channel and JSON.
const PUBLISH_ONCE: &str = r#"
local added = 0
local k = 1
for i = 3, #ARGV, 5 do
  k = k + 1
  if redis.call('SET', KEYS[k], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
      'event_id', ARGV[i], 'camera_id', ARGV[i + 1], 'type', ARGV[i + 2], 'data', ARGV[i + 4])
    redis.call('PUBLISH', ARGV[i + 3], ARGV[i + 4])
    added = added + 1
  end
end
return added
"#;

/// Redis errors are all taken as passing: the publisher's breaker and backoff judge whether Redis
/// is down.
fn redis_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn db_error(error: crate::db::DbError) -> StoreError {
    if error.is_transient() {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Rejected(error.to_string())
    }
}

impl Stores for RedisPostgres {
    /// The script, and `WAIT` for `wait_replicas` in the same pipeline (so on the same
    /// connection, to the same node: the stream slot's primary). By hash (EVALSHA); by body
    /// (EVAL, which caches it) when the server does not know it yet, as after a failover.
    async fn publish_events(&self, events: &[EventRecord<'_>]) -> Result<(), StoreError> {
        use bb8_redis::redis::{ErrorKind, ServerErrorKind};
        static HASH: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| bb8_redis::redis::Script::new(PUBLISH_ONCE).get_hash().to_string());
        let pipeline = |verb: &str, script: &str| {
            let mut call = bb8_redis::redis::cmd(verb);
            call.arg(script).arg(events.len() + 1).arg(self.keys.events_stream());
            for event in events {
                call.arg(self.keys.event_seen(&event.header.event_id));
            }
            call.arg(self.stream.max_len).arg(self.stream.dedup_ttl_s);
            for event in events {
                let header = &event.header;
                call.arg(&*header.event_id)
                    .arg(&*header.camera_id)
                    .arg(&*header.kind)
                    .arg(self.keys.camera_channel(&header.camera_id))
                    .arg(event.json);
            }
            let mut pipe = bb8_redis::redis::pipe();
            pipe.add_command(call);
            if self.stream.wait_replicas > 0 {
                pipe.cmd("WAIT").arg(self.stream.wait_replicas).arg(self.stream.wait_timeout_ms);
            }
            pipe
        };
        let mut conn = self.redis.get().await.map_err(redis_error)?;
        let replies = match pipeline("EVALSHA", &HASH).query_async::<Vec<u64>>(&mut conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                pipeline("EVAL", PUBLISH_ONCE).query_async::<Vec<u64>>(&mut conn).await
            }
            other => other,
        }
        .map_err(redis_error)?;
        match replies.get(1) {
            Some(&acked) if acked < u64::from(self.stream.wait_replicas) => Err(StoreError::Unavailable(format!(
                "only {acked} of {} Redis replicas acknowledged the events within {} ms (redis.wait_replicas)",
                self.stream.wait_replicas, self.stream.wait_timeout_ms
            ))),
            _ => Ok(()),
        }
    }

    async fn insert_events(&self, events: &[EventRecord<'_>]) -> Result<(), StoreError> {
        self.db.insert_events(events).await.map(|_| ()).map_err(db_error)
    }

    async fn upsert_aggregates(&self, rows: &[AggregateRow]) -> Result<(), StoreError> {
        self.db.upsert_aggregates(rows).await.map_err(db_error)
    }

    async fn write_state(&self, camera_id: &str, state: Option<&StateSnapshot>) -> Result<(), StoreError> {
        let mut conn = self.redis.get().await.map_err(redis_error)?;
        let key = self.keys.camera_state(camera_id);
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
        command.query_async::<()>(&mut conn).await.map_err(redis_error)
    }

    /// The system stream is capped at 10,000 entries.
    async fn publish_system(&self, json: &str) -> Result<(), StoreError> {
        let key = self.keys.system_stream();
        let mut conn = self.redis.get().await.map_err(redis_error)?;
        let mut pipe = bb8_redis::redis::pipe();
        pipe.cmd("XADD").arg(&key).arg("MAXLEN").arg("~").arg(10_000).arg("*").arg("data").arg(json).ignore();
        pipe.cmd("PUBLISH").arg(&key).arg(json).ignore();
        pipe.query_async::<()>(&mut conn).await.map_err(redis_error)
    }
}
