//! Events PostgreSQL lacks, put back from the Redis events stream. After a restore to an older
//! point (the WAL not yet archived is gone) or a failover to a standby that had not received the
//! last events, the stream still holds them, as far back as its cap (`redis.stream_max_len`)
//! reaches. Events are inserted by id, so running this twice, or over events PostgreSQL has,
//! adds nothing (`its-analytics backfill-events`, docs/OPERATIONS.md).

use serde::Serialize;

use crate::db::{Db, DbError};
use crate::events::EventRecord;
use crate::redis_conn::{RedisConnError, RedisPool};
use crate::redis_keys::RedisKeys;

/// Stream entries read and inserted per round trip.
const PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Redis(#[from] RedisConnError),
    #[error("redis: {0}")]
    Read(#[from] redis::RedisError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What a backfill did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct BackfillReport {
    /// Stream entries read.
    pub read: u64,
    /// Events PostgreSQL did not have, inserted.
    pub inserted: u64,
    /// Entries without a readable event (no `data` field, or JSON that is not an event), skipped.
    pub unreadable: u64,
    /// The first and last stream entry ids read (`ms-seq`: when Redis added them).
    pub first_entry: Option<String>,
    pub last_entry: Option<String>,
}

/// One stream entry as XRANGE returns it: its id and field-value pairs.
type Entry = (String, Vec<(String, Vec<u8>)>);

/// Inserts every event of the stream added at or after `since_ms` (ms since the Unix epoch, on
/// Redis' clock; `None`: the whole stream) that PostgreSQL does not have.
pub async fn events_from_stream(
    redis: &RedisPool,
    keys: &RedisKeys,
    db: &Db,
    since_ms: Option<u64>,
) -> Result<BackfillReport, BackfillError> {
    let stream = keys.events_stream();
    let mut report = BackfillReport::default();
    let mut start = since_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms}-0"));
    loop {
        let entries: Vec<Entry> = {
            let mut conn = redis.get().await?;
            redis::cmd("XRANGE").arg(&stream).arg(&start).arg("+").arg("COUNT").arg(PAGE).query_async(&mut conn).await?
        };
        let Some((last, _)) = entries.last() else { break };
        start = format!("({last}");
        report.first_entry.get_or_insert_with(|| entries[0].0.clone());
        report.last_entry = Some(last.clone());
        report.read += entries.len() as u64;
        let records: Vec<EventRecord<'_>> = entries
            .iter()
            .filter_map(|(_, fields)| {
                let data = fields.iter().find(|(name, _)| name == "data")?;
                EventRecord::parse(&data.1).ok()
            })
            .collect();
        report.unreadable += (entries.len() - records.len()) as u64;
        if !records.is_empty() {
            report.inserted += db.insert_events(&records).await?;
        }
        if entries.len() < PAGE {
            break;
        }
    }
    Ok(report)
}
