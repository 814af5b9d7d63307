//! PostgreSQL: the pools, numbered migrations applied at start-up, cameras and events.
//!
//! Migrations are a short list run under an advisory lock, written here rather than pulled from a
//! migration crate so the project keeps a single tokio-postgres (the one bb8-postgres uses).
//!
//! Two pools: the primary's, for everything, and an optional read replica's (`postgres.read_url`)
//! for the HTTP API's history reads (`events`, `aggregates`); without a replica both are one pool.
//! `events` and `analytics_1m` are partitioned by day (`partitions`); `tls` connects; `models` is the
//! model registry's versions and transitions.

pub mod models;
pub mod partitions;
pub mod tls;

use std::path::Path;
use std::time::Duration;

use bb8_postgres::tokio_postgres;
use bb8_postgres::PostgresConnectionManager;
use chrono::{DateTime, Utc};

use crate::analytics::geometry::Geometry;
use crate::analytics::rollup::StoredAggregate;
use crate::analytics::AggregateRow;
use crate::camera_spec::CameraSpec;
use crate::events::EventRecord;

pub use tls::PgTarget;

pub type PgPool = bb8::Pool<PostgresConnectionManager<tls::PgTls>>;

const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("db/0001_init.sql")),
    (2, include_str!("db/0002_analytics.sql")),
    (3, include_str!("db/0003_cluster.sql")),
    (4, include_str!("db/0004_partitions.sql")),
    (5, include_str!("db/0005_models.sql")),
];

/// The page of events the API lists (`GET /api/v1/events`): $1 camera, $2 type, $3 from, $4 to,
/// $5/$6 the cursor's (ts, event_id), $7 the limit. Public so the scale test EXPLAINs this text.
pub const EVENTS_PAGE_SQL: &str = "SELECT ts, event_id, payload FROM events
     WHERE ($1::text IS NULL OR camera_id = $1)
       AND ($2::text IS NULL OR type = $2)
       AND ($3::timestamptz IS NULL OR ts >= $3)
       AND ($4::timestamptz IS NULL OR ts < $4)
       AND ($5::timestamptz IS NULL OR (ts, event_id) > ($5, $6::text))
     ORDER BY ts, event_id
     LIMIT $7";

/// A camera's minute rows in [$2, $3) (`GET /api/v1/cameras/{id}/analytics`, counts history).
pub const AGGREGATES_SQL: &str =
    "SELECT interval_start, geometry_version, element_id, element_kind, measures FROM analytics_1m
     WHERE camera_id = $1 AND interval_start >= $2 AND interval_start < $3
     ORDER BY interval_start, geometry_version, element_id";
/// The channel every change to the set of cameras is announced on (`NOTIFY`), so owners act at
/// once; a lost notification heals at the next heartbeat, which compares `cluster_revision`.
pub const CHANGES_CHANNEL: &str = "its_cluster_changes";
/// Serialises migrations across processes starting together.
const MIGRATION_LOCK: i64 = 0x17_5a_11_7c;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("stored camera {id} is unreadable: {message}")]
    Corrupt { id: String, message: String },
    /// A setting that cannot be used (the message never holds a credential).
    #[error("postgres: {0}")]
    Config(String),
    #[error("postgres TLS: {0}")]
    Tls(String),
}

impl DbError {
    /// Whether trying again may succeed: connection trouble, the server shutting down or short
    /// of resources, a serialization failure or deadlock, or a server that is read-only for now
    /// (a standby not yet promoted, a primary being demoted: a failover in progress). A rejected
    /// statement is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Pool(_) => true,
            DbError::Corrupt { .. } | DbError::Config(_) | DbError::Tls(_) => false,
            DbError::Postgres(e) => match e.code() {
                None => true,
                Some(code) if *code == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION => true,
                Some(code) => ["08", "40", "53", "57"].iter().any(|class| code.code().starts_with(class)),
            },
        }
    }
}

impl From<bb8::RunError<tokio_postgres::Error>> for DbError {
    fn from(e: bb8::RunError<tokio_postgres::Error>) -> Self {
        match e {
            bb8::RunError::User(e) => DbError::Postgres(e),
            bb8::RunError::TimedOut => DbError::Pool("timed out waiting for a connection".into()),
        }
    }
}

/// Where the pools connect and how large they are (`[postgres]` settings).
pub struct DbOptions<'a> {
    pub url: &'a str,
    /// A read replica for the API's history reads.
    pub read_url: Option<&'a str>,
    /// PEM trust roots for `sslmode=verify-full`; `None`: the platform's.
    pub ca_file: Option<&'a Path>,
    pub pool_size: u32,
    pub connect_timeout: Duration,
}

impl<'a> DbOptions<'a> {
    pub fn from_settings(postgres: &'a crate::settings::PostgresSettings) -> Self {
        Self {
            url: &postgres.url,
            read_url: postgres.read_url(),
            ca_file: postgres.ca_file(),
            pool_size: postgres.pool_size,
            connect_timeout: Duration::from_millis(postgres.connect_timeout_ms),
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    /// The replica's pool, or the primary's again.
    read: PgPool,
    has_replica: bool,
    target: PgTarget,
}

impl Db {
    /// Connects to a plain URL (no replica, platform roots for TLS), creating the database when the
    /// server has none of that name, and migrates.
    pub async fn connect(url: &str, pool_size: u32, connect_timeout: Duration) -> Result<Self, DbError> {
        Self::open(&DbOptions { url, read_url: None, ca_file: None, pool_size, connect_timeout }).await
    }

    /// Connects as the settings say: the primary (creating the database, migrating) and the read
    /// replica if any. A server that cannot be reached, or whose certificate does not verify,
    /// fails here, naming PostgreSQL and the reason.
    pub async fn open(options: &DbOptions<'_>) -> Result<Self, DbError> {
        let target = PgTarget::new("postgres.url", options.url, options.ca_file)?;
        if let Err(e) = target.connect().await {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_DATABASE) {
                create_database(&target).await?;
            } else {
                return Err(e.into());
            }
        }
        let pool = build_pool(&target, options).await?;
        let (read, has_replica) = match options.read_url {
            Some(url) => {
                let replica = PgTarget::new("postgres.read_url", url, options.ca_file)?;
                wait_for_replica(&replica).await?;
                (build_pool(&replica, options).await?, true)
            }
            None => (pool.clone(), false),
        };
        let db = Db { pool, read, has_replica, target };
        db.migrate().await?;
        Ok(db)
    }

    /// The primary's address and connector, for connections outside the pool (LISTEN).
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let mut conn = self.pool.get().await?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
        let result = async {
            conn.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations
                     (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await?;
            for (version, sql) in MIGRATIONS {
                let done = conn.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version]).await?;
                if done.is_none() {
                    let tx = conn.transaction().await?;
                    tx.batch_execute(sql).await?;
                    tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await?;
                    tx.commit().await?;
                    tracing::info!(version, "applied migration");
                }
            }
            Ok::<_, DbError>(())
        }
        .await;
        conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
        result
    }

    /// The pool, for the cluster's membership and lease statements.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn pool_view(&self) -> crate::pools::PoolView {
        crate::pools::PoolView::new("postgres", self.pool.config().max_size, self.pool.state())
    }

    /// The read replica's pool, when there is one.
    pub fn read_pool_view(&self) -> Option<crate::pools::PoolView> {
        self.has_replica
            .then(|| crate::pools::PoolView::new("postgres_read", self.read.config().max_size, self.read.state()))
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        self.pool.get().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Inserts a camera with its geometry as a new geometry version; returns when it was
    /// registered (ms since the Unix epoch) and the version, or `None` when the id is taken.
    pub async fn insert_camera(&self, spec: &CameraSpec) -> Result<Option<(u64, u32)>, DbError> {
        let json = serde_json::to_value(spec).expect("a camera spec serialises");
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_opt(
                "INSERT INTO cameras (id, spec) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING
                 RETURNING (extract(epoch FROM created_at) * 1000)::int8",
                &[&spec.id, &json],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let version = add_geometry_version(&tx, &spec.id, &spec.geometry).await?;
        tx.commit().await?;
        Ok(Some((row.get::<_, i64>(0) as u64, version)))
    }

    /// Stores `geometry` as the camera's next version and makes it current; `None` when there
    /// is no such camera.
    pub async fn set_geometry(&self, id: &str, geometry: &Geometry) -> Result<Option<u32>, DbError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        if tx.query_opt("SELECT 1 FROM cameras WHERE id = $1 FOR UPDATE", &[&id]).await?.is_none() {
            return Ok(None);
        }
        let version = add_geometry_version(&tx, id, geometry).await?;
        tx.commit().await?;
        Ok(Some(version))
    }

    /// A stored geometry version of a camera, with when it was created.
    pub async fn geometry(&self, id: &str, version: u32) -> Result<Option<(Geometry, DateTime<Utc>)>, DbError> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT geometry, created_at FROM camera_geometries WHERE camera_id = $1 AND version = $2",
                &[&id, &(version as i32)],
            )
            .await?;
        row.map(|r| {
            serde_json::from_value(r.get(0))
                .map(|g| (g, r.get(1)))
                .map_err(|e| DbError::Corrupt { id: id.to_string(), message: format!("geometry {version}: {e}") })
        })
        .transpose()
    }

    pub async fn delete_camera(&self, id: &str) -> Result<bool, DbError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let deleted = tx.execute("DELETE FROM cameras WHERE id = $1", &[&id]).await? == 1;
        if deleted {
            announce_change(&tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Bumps the revision of the set of cameras and notifies the nodes (at commit).
    pub async fn announce_change(&self) -> Result<(), DbError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        announce_change(&tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The revision of the set of cameras: it moves with every registration, removal and
    /// geometry change.
    pub async fn cameras_revision(&self) -> Result<i64, DbError> {
        Ok(self.pool.get().await?.query_one("SELECT cameras FROM cluster_revision", &[]).await?.get(0))
    }

    /// The stored cameras with when each was registered (ms since the Unix epoch) and their
    /// current geometry version. A row that no longer reads as a camera comes back as its error,
    /// so one bad row cannot stop the others.
    pub async fn cameras(&self) -> Result<Vec<Result<StoredCamera, DbError>>, DbError> {
        self.select_cameras(None).await
    }

    /// As `cameras`, only those of these ids (the ones still registered).
    pub async fn cameras_by_id(&self, ids: &[String]) -> Result<Vec<Result<StoredCamera, DbError>>, DbError> {
        self.select_cameras(Some(ids)).await
    }

    /// One stored camera, if registered.
    pub async fn camera(&self, id: &str) -> Result<Option<StoredCamera>, DbError> {
        self.select_cameras(Some(&[id.to_string()])).await?.into_iter().next().transpose()
    }

    async fn select_cameras(&self, ids: Option<&[String]>) -> Result<Vec<Result<StoredCamera, DbError>>, DbError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT id, spec, (extract(epoch FROM created_at) * 1000)::int8, geometry_version FROM cameras
                 WHERE $1::text[] IS NULL OR id = ANY($1) ORDER BY created_at, id",
                &[&ids],
            )
            .await?;
        Ok(rows.iter().map(stored_camera).collect())
    }

    /// How many cameras are registered, and the newest change to one.
    pub async fn cameras_summary(&self) -> Result<(i64, Option<DateTime<Utc>>), DbError> {
        let row = self.pool.get().await?.query_one("SELECT count(*), max(updated_at) FROM cameras", &[]).await?;
        Ok((row.get(0), row.get(1)))
    }

    /// The id, registration time (ms) and geometry version of every camera changed after
    /// `since` (all with `None`): what tells a node which registrations it must (re-)read.
    pub async fn camera_versions(&self, since: Option<DateTime<Utc>>) -> Result<Vec<(String, u64, u32)>, DbError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT id, (extract(epoch FROM created_at) * 1000)::int8, geometry_version FROM cameras
                 WHERE $1::timestamptz IS NULL OR updated_at > $1",
                &[&since],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get::<_, i32>(2) as u32)).collect())
    }

    /// Inserts events from their JSON (the `payload` column is that JSON, the other columns come
    /// from its header); ids already present are skipped, so a replay writes nothing twice.
    pub async fn insert_events(&self, events: &[EventRecord<'_>]) -> Result<u64, DbError> {
        let mut rows = EventColumns::default();
        for e in events {
            rows.push(e);
        }
        let EventColumns {
            ids,
            cameras,
            types,
            ts,
            seqs,
            versions,
            tracks,
            classes,
            lines,
            directions,
            zones,
            incidents,
            payloads,
        } = &rows;
        let n = self
            .pool
            .get()
            .await?
            .execute(
                "INSERT INTO events (event_id, camera_id, type, ts, frame_seq, geometry_version, track_id, class,
                                     line_id, direction, zone_id, incident_id, payload)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[], $6::int4[],
                                      $7::int8[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                                      $13::text[]::jsonb[])
                 ON CONFLICT (event_id, ts) DO NOTHING",
                &[
                    ids, cameras, types, ts, seqs, versions, tracks, classes, lines, directions, zones, incidents,
                    payloads,
                ],
            )
            .await?;
        Ok(n)
    }

    /// Writes per-minute aggregate rows; a row written again replaces itself (idempotent). Rows
    /// with one key in one call are reduced to the last (PostgreSQL refuses to update a row twice
    /// in one statement).
    pub async fn upsert_aggregates(&self, rows: &[AggregateRow]) -> Result<(), DbError> {
        let mut last_by_key = std::collections::HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let key = (&row.camera_id, row.interval_start, row.geometry_version, &row.element_id, row.stream_epoch_ms);
            last_by_key.insert(key, i);
        }
        let mut keep: Vec<usize> = last_by_key.into_values().collect();
        keep.sort_unstable();
        let mut cameras = Vec::with_capacity(keep.len());
        let mut starts: Vec<DateTime<Utc>> = Vec::with_capacity(keep.len());
        let mut versions = Vec::with_capacity(keep.len());
        let mut elements = Vec::with_capacity(keep.len());
        let mut epochs = Vec::with_capacity(keep.len());
        let mut kinds = Vec::with_capacity(keep.len());
        let mut measures = Vec::with_capacity(keep.len());
        for row in keep.into_iter().map(|i| &rows[i]) {
            cameras.push(row.camera_id.to_string());
            starts.push(row.interval_start);
            versions.push(row.geometry_version as i32);
            elements.push(row.element_id.clone());
            epochs.push(row.stream_epoch_ms as i64);
            kinds.push(row.element_kind.as_str().to_string());
            measures.push(serde_json::to_value(&row.measures).expect("measures serialise"));
        }
        self.pool
            .get()
            .await?
            .execute(
                "INSERT INTO analytics_1m (camera_id, interval_start, geometry_version, element_id, stream_epoch_ms,
                                           element_kind, measures)
                 SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::int4[], $4::text[], $5::int8[], $6::text[],
                                      $7::jsonb[])
                 ON CONFLICT (camera_id, interval_start, geometry_version, element_id, stream_epoch_ms)
                 DO UPDATE SET element_kind = EXCLUDED.element_kind, measures = EXCLUDED.measures",
                &[&cameras, &starts, &versions, &elements, &epochs, &kinds, &measures],
            )
            .await?;
        Ok(())
    }

    /// Minute rows of a camera with `from <= interval_start < to`, in time order.
    pub async fn aggregates(
        &self,
        camera_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredAggregate>, DbError> {
        let rows = self.read.get().await?.query(AGGREGATES_SQL, &[&camera_id, &from, &to]).await?;
        rows.iter()
            .map(|r| {
                Ok(StoredAggregate {
                    interval_start: r.get(0),
                    geometry_version: r.get::<_, i32>(1) as u32,
                    element_id: r.get(2),
                    element_kind: r.get(3),
                    measures: serde_json::from_value(r.get(4)).map_err(|e| DbError::Corrupt {
                        id: camera_id.to_string(),
                        message: format!("aggregate row: {e}"),
                    })?,
                })
            })
            .collect()
    }

    /// One page of events matching `filter`, oldest first, after the cursor position.
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, DbError> {
        let (after_ts, after_id) = match &filter.after {
            Some((ts, id)) => (Some(*ts), Some(id.clone())),
            None => (None, None),
        };
        let rows = self
            .read
            .get()
            .await?
            .query(
                EVENTS_PAGE_SQL,
                &[
                    &filter.camera_id,
                    &filter.kind,
                    &filter.from,
                    &filter.to,
                    &after_ts,
                    &after_id,
                    &(filter.limit as i64),
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| StoredEvent { ts: r.get(0), event_id: r.get(1), payload: r.get(2) }).collect())
    }
}

/// A camera as stored: the registration (current geometry included) and its bookkeeping.
pub struct StoredCamera {
    pub spec: CameraSpec,
    pub registered_ms: u64,
    pub geometry_version: u32,
}

/// Which events to list. `after` is the (ts, event_id) of the last event of the previous page.
#[derive(Debug, Default)]
pub struct EventFilter {
    pub camera_id: Option<String>,
    pub kind: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, String)>,
    pub limit: u32,
}

pub struct StoredEvent {
    pub ts: DateTime<Utc>,
    pub event_id: String,
    pub payload: serde_json::Value,
}

/// Events as the columns of one UNNEST insert, borrowed from their JSON.
#[derive(Default)]
struct EventColumns<'a> {
    ids: Vec<&'a str>,
    cameras: Vec<&'a str>,
    types: Vec<&'a str>,
    ts: Vec<DateTime<Utc>>,
    seqs: Vec<i64>,
    versions: Vec<i32>,
    tracks: Vec<Option<i64>>,
    classes: Vec<Option<&'static str>>,
    lines: Vec<Option<&'a str>>,
    directions: Vec<Option<&'static str>>,
    zones: Vec<Option<&'a str>>,
    incidents: Vec<Option<&'a str>>,
    /// The JSON as text; PostgreSQL parses it into `jsonb`.
    payloads: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    fn push(&mut self, e: &'a EventRecord<'_>) {
        let h = &e.header;
        self.ids.push(&h.event_id);
        self.cameras.push(&h.camera_id);
        self.types.push(&h.kind);
        self.ts.push(h.ts);
        self.seqs.push(h.frame_seq as i64);
        self.versions.push(h.geometry_version as i32);
        self.tracks.push(h.track_id.map(|t| t as i64));
        self.classes.push(h.class.map(|c| c.as_str()));
        self.lines.push(h.line_id.as_deref());
        self.directions.push(h.direction.map(|d| d.as_str()));
        self.zones.push(h.zone_id.as_deref());
        self.incidents.push(h.incident_id.as_deref());
        self.payloads.push(e.json);
    }
}

/// A row of (id, spec, registered ms, geometry version) as a camera, or why it is none.
fn stored_camera(row: &tokio_postgres::Row) -> Result<StoredCamera, DbError> {
    let id: String = row.get(0);
    let registered_ms = row.get::<_, i64>(2) as u64;
    let geometry_version = row.get::<_, i32>(3) as u32;
    serde_json::from_value(row.get(1))
        .map(|spec| StoredCamera { spec, registered_ms, geometry_version })
        .map_err(|e| DbError::Corrupt { id, message: e.to_string() })
}

/// Appends `geometry` as the camera's next version (numbering continues across re-registration)
/// and makes it the current one.
async fn add_geometry_version(
    tx: &tokio_postgres::Transaction<'_>,
    id: &str,
    geometry: &Geometry,
) -> Result<u32, DbError> {
    let json = serde_json::to_value(geometry).expect("a geometry serialises");
    let version: i32 = tx
        .query_one(
            "INSERT INTO camera_geometries (camera_id, version, geometry)
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2 FROM camera_geometries WHERE camera_id = $1
             RETURNING version",
            &[&id, &json],
        )
        .await?
        .get(0);
    tx.execute(
        "UPDATE cameras SET geometry_version = $2, spec = jsonb_set(spec, '{geometry}', $3), updated_at = now()
         WHERE id = $1",
        &[&id, &version, &json],
    )
    .await?;
    announce_change(tx).await?;
    Ok(version as u32)
}

async fn announce_change(tx: &tokio_postgres::Transaction<'_>) -> Result<(), DbError> {
    tx.execute("UPDATE cluster_revision SET cameras = cameras + 1", &[]).await?;
    tx.execute("SELECT pg_notify($1, 'cameras')", &[&CHANGES_CHANNEL]).await?;
    Ok(())
}

async fn build_pool(target: &PgTarget, options: &DbOptions<'_>) -> Result<PgPool, DbError> {
    let manager = PostgresConnectionManager::new(target.config.clone(), target.tls.clone());
    Ok(crate::pools::builder(options.pool_size, options.connect_timeout).build(manager).await?)
}

/// Checks that the replica answers. A database the primary created a moment ago may not have
/// reached it yet: that is waited for (10 s at most); any other failure is returned at once.
async fn wait_for_replica(replica: &PgTarget) -> Result<(), DbError> {
    let mut tries = 0;
    loop {
        match replica.connect().await {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_DATABASE) && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(DbError::Config(format!("read replica (postgres.read_url): {e}"))),
        }
    }
}

async fn create_database(target: &PgTarget) -> Result<(), DbError> {
    let name = target.config.get_dbname().unwrap_or("postgres").to_string();
    let mut admin = target.clone();
    admin.config.dbname("postgres");
    let (client, connection) = admin.connect().await?;
    tokio::spawn(connection);
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&format!("CREATE DATABASE {quoted}")).await {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        // Another process created it meanwhile.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
