//! What the publisher asks of Redis and PostgreSQL, one call per request, no retries: those, the
//! circuit breakers and the order of things are the publisher's. `Stores` is the seam between the
//! two, so the publisher's tests can make a store fail on demand around the real one.

use std::future::Future;

use crate::analytics::{AggregateRow, StateSnapshot};
use crate::db::Db;
use crate::events::EventRecord;
use crate::redis_keys::RedisKeys;

pub type RedisPool = bb8::Pool<bb8_redis::RedisConnectionManager>;

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

/// How the events stream is kept: its approximate length cap and how long an event id is
/// remembered against duplicates.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    pub max_len: u64,
    pub dedup_ttl_s: u64,
}

/// The service's stores.
pub struct RedisPostgres {
    pub redis: RedisPool,
    pub keys: RedisKeys,
    pub stream: StreamOptions,
    pub db: Db,
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
    async fn publish_events(&self, events: &[EventRecord<'_>]) -> Result<(), StoreError> {
        let mut conn = self.redis.get().await.map_err(redis_error)?;
        // Hashed once (for EVALSHA), not per batch.
        static SCRIPT: std::sync::LazyLock<bb8_redis::redis::Script> =
            std::sync::LazyLock::new(|| bb8_redis::redis::Script::new(PUBLISH_ONCE));
        let mut call = SCRIPT.key(self.keys.events_stream());
        call.arg(self.stream.max_len).arg(self.stream.dedup_ttl_s).arg(self.keys.event_seen_prefix());
        for event in events {
            let header = &event.header;
            call.arg(&*header.event_id)
                .arg(&*header.camera_id)
                .arg(&*header.kind)
                .arg(self.keys.camera_channel(&header.camera_id))
                .arg(event.json);
        }
        call.invoke_async::<u64>(&mut *conn).await.map(|_| ()).map_err(redis_error)
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
        command.query_async::<()>(&mut *conn).await.map_err(redis_error)
    }

    /// The system stream is capped at 10,000 entries.
    async fn publish_system(&self, json: &str) -> Result<(), StoreError> {
        let key = self.keys.system_stream();
        let mut conn = self.redis.get().await.map_err(redis_error)?;
        let mut pipe = bb8_redis::redis::pipe();
        pipe.cmd("XADD").arg(&key).arg("MAXLEN").arg("~").arg(10_000).arg("*").arg("data").arg(json).ignore();
        pipe.cmd("PUBLISH").arg(&key).arg(json).ignore();
        pipe.query_async::<()>(&mut *conn).await.map_err(redis_error)
    }
}
