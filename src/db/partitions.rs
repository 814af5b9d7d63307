//! Daily partitions of `events` and `analytics_1m` and retention (`[retention]`).
//!
//! A maintenance round (at start, then hourly) creates each table's partitions for today and
//! `AHEAD_DAYS` days ahead, drops whole partitions older than their retention (never row by row),
//! keeps incident events past `events_days` when `incidents_days` says so (they move to the default
//! partition), and deletes incident events older than `incidents_days` in batches. One node of a
//! cluster runs a round at a time (advisory lock; the others skip it). Days are UTC days of the
//! server's clock (`now()`), so nodes' clocks never matter.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, NaiveDate, NaiveTime};

use bb8_postgres::tokio_postgres;

use super::{Db, DbError};
use crate::metrics::{Metrics, PartitionLabels};
use crate::settings::RetentionSettings;

/// The partitioned tables and their partition key.
pub const PARTITIONED: [(&str, &str); 2] = [("events", "ts"), ("analytics_1m", "interval_start")];
/// Partitions exist this many days ahead of today, so a round missed for days costs nothing.
pub const AHEAD_DAYS: u64 = 7;
/// How often a round runs.
pub const INTERVAL: Duration = Duration::from_secs(3600);
/// The event types of incidents, which `incidents_days` governs.
pub const INCIDENT_TYPES: [&str; 3] = ["incident_opened", "incident_updated", "incident_closed"];
/// Serialises rounds across the nodes of a cluster.
const MAINTENANCE_LOCK: i64 = 0x17_5a_11_7d;
/// Incident rows deleted per statement.
const DELETE_BATCH: i64 = 5_000;

/// What a round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
    /// Incident events of dropped partitions kept (in the default partition).
    pub incidents_kept: u64,
    /// Incident events deleted as older than `incidents_days`.
    pub incidents_deleted: u64,
    /// Rows of the default partitions deleted as older than their table's retention.
    pub default_rows_deleted: u64,
}

impl Db {
    /// One maintenance round; `None` when another process holds the round's lock (it is doing it).
    pub async fn maintain(&self, retention: &RetentionSettings) -> Result<Option<Maintenance>, DbError> {
        let mut conn = self.pool.get().await?;
        let locked: bool = conn.query_one("SELECT pg_try_advisory_lock($1)", &[&MAINTENANCE_LOCK]).await?.get(0);
        if !locked {
            return Ok(None);
        }
        // The session lock lives on this connection: the round runs on it and releases it there
        // (should the connection break, the lock goes with it).
        let result = maintain_locked(&mut conn, retention).await;
        conn.execute("SELECT pg_advisory_unlock($1)", &[&MAINTENANCE_LOCK]).await?;
        result.map(Some)
    }
}

async fn maintain_locked(
    conn: &mut tokio_postgres::Client,
    retention: &RetentionSettings,
) -> Result<Maintenance, DbError> {
    let mut done = Maintenance::default();
    let today: NaiveDate = conn.query_one("SELECT (now() AT TIME ZONE 'UTC')::date", &[]).await?.get(0);
    for (table, key) in PARTITIONED {
        for ahead in 0..=AHEAD_DAYS {
            let day = today + Days::new(ahead);
            let created: bool =
                conn.query_one("SELECT its_ensure_day_partition($1, $2, $3)", &[&table, &key, &day]).await?.get(0);
            if created {
                done.created.push(partition_name(table, day));
            }
        }
    }
    let incidents_from =
        (retention.incidents_days > 0).then(|| midnight(today - Days::new(retention.incidents_days.into())));
    let retained = [(PARTITIONED[0], retention.events_days), (PARTITIONED[1], retention.minute_rows_days)];
    for ((table, key), days) in retained {
        if days == 0 {
            continue;
        }
        let keep_from = today - Days::new(days.into());
        for (name, day) in partitions(conn, table).await? {
            if day >= keep_from {
                continue;
            }
            let tx = conn.transaction().await?;
            tx.batch_execute(&format!("ALTER TABLE {table} DETACH PARTITION {name}")).await?;
            if table == "events" && incidents_from.is_none_or(|from| midnight(day + Days::new(1)) > from) {
                // Back into `events`: its range has no partition any more, so into the default.
                done.incidents_kept += tx
                    .execute(
                        &format!(
                            "INSERT INTO events SELECT * FROM {name}
                                 WHERE type = ANY($1) AND ($2::timestamptz IS NULL OR ts >= $2)"
                        ),
                        &[&&INCIDENT_TYPES[..], &incidents_from],
                    )
                    .await?;
            }
            tx.batch_execute(&format!("DROP TABLE {name}")).await?;
            tx.commit().await?;
            done.dropped.push(name);
        }
        // Rows of days without a partition (a replay older than the retention) sit in the default
        // partition: those past the retention go too, incidents excepted.
        let not_incident = if table == "events" { "AND type <> ALL($3)" } else { "AND $3::text[] IS NOT NULL" };
        loop {
            let n = conn
                .execute(
                    &format!(
                        "DELETE FROM {table}_default WHERE ctid IN
                             (SELECT ctid FROM {table}_default WHERE {key} < $1 {not_incident} LIMIT $2)"
                    ),
                    &[&midnight(keep_from), &DELETE_BATCH, &&INCIDENT_TYPES[..]],
                )
                .await?;
            done.default_rows_deleted += n;
            if (n as i64) < DELETE_BATCH {
                break;
            }
        }
    }
    if let Some(from) = incidents_from {
        loop {
            let n = conn
                .execute(
                    "DELETE FROM events WHERE (event_id, ts) IN
                             (SELECT event_id, ts FROM events WHERE type = ANY($1) AND ts < $2 LIMIT $3)",
                    &[&&INCIDENT_TYPES[..], &from, &DELETE_BATCH],
                )
                .await?;
            done.incidents_deleted += n;
            if (n as i64) < DELETE_BATCH {
                break;
            }
        }
    }
    Ok(done)
}

/// Runs a round at once and then every `INTERVAL`, logging and counting what each did. Failures
/// are logged and tried again at the next round (the default partitions take rows meanwhile).
pub async fn maintenance_loop(db: Db, retention: RetentionSettings, metrics: Arc<Metrics>) {
    loop {
        match db.maintain(&retention).await {
            Ok(Some(done)) => record(&done, &metrics),
            Ok(None) => tracing::debug!("partition maintenance runs on another node"),
            Err(error) => tracing::warn!(%error, "partition maintenance failed; retried in an hour"),
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

fn record(done: &Maintenance, metrics: &Metrics) {
    for (action, names) in [("created", &done.created), ("dropped", &done.dropped)] {
        for name in names {
            let table = PARTITIONED.iter().map(|(t, _)| *t).find(|t| partition_day(name, t).is_some()).unwrap_or("");
            tracing::info!(partition = %name, table, action, "partition {action}");
            metrics
                .partitions
                .get_or_create(&PartitionLabels { table: table.to_string(), action: action.to_string() })
                .inc();
        }
    }
    if done.incidents_kept + done.incidents_deleted + done.default_rows_deleted > 0 {
        tracing::info!(
            incidents_kept = done.incidents_kept,
            incidents_deleted = done.incidents_deleted,
            default_partition_rows_deleted = done.default_rows_deleted,
            "retention deleted rows"
        );
    }
    metrics.retention_deleted.inc_by(done.incidents_deleted + done.default_rows_deleted);
}

/// The daily partitions of `table` and their days, oldest first.
async fn partitions(conn: &tokio_postgres::Client, table: &str) -> Result<Vec<(String, NaiveDate)>, DbError> {
    let rows = conn
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::text::regclass ORDER BY 1",
            &[&table],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            partition_day(&name, table).map(|day| (name, day))
        })
        .collect())
}

/// The day of a partition `<table>_pYYYYMMDD`; none for other names (the default partition).
pub fn partition_day(name: &str, table: &str) -> Option<NaiveDate> {
    let day = name.strip_prefix(table)?.strip_prefix("_p")?;
    NaiveDate::parse_from_str(day, "%Y%m%d").ok().filter(|_| day.len() == 8)
}

pub fn partition_name(table: &str, day: NaiveDate) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

fn midnight(day: NaiveDate) -> chrono::DateTime<chrono::Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_carry_their_day() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
        assert_eq!(partition_name("events", day), "events_p20260309");
        assert_eq!(partition_day("events_p20260309", "events"), Some(day));
        assert_eq!(partition_day("analytics_1m_p20260309", "analytics_1m"), Some(day));
        assert_eq!(partition_day("events_default", "events"), None);
        assert_eq!(partition_day("analytics_1m_p20260309", "events"), None);
        assert_eq!(partition_day("events_p2026030", "events"), None);
    }
}
