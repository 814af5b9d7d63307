//! PostgreSQL: the pool, numbered migrations applied at start-up, cameras and events.
//!
//! Migrations are a short list run under an advisory lock, written here rather than pulled from a
//! migration crate so the project keeps a single tokio-postgres (the one bb8-postgres uses).

use bb8_postgres::tokio_postgres::{self, NoTls};
use bb8_postgres::PostgresConnectionManager;
use chrono::{DateTime, Utc};

use crate::actors::camera::CameraSpec;
use crate::actors::messages::Event;

pub type PgPool = bb8::Pool<PostgresConnectionManager<NoTls>>;

const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("db/0001_init.sql"))];
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
}

impl From<bb8::RunError<tokio_postgres::Error>> for DbError {
    fn from(e: bb8::RunError<tokio_postgres::Error>) -> Self {
        match e {
            bb8::RunError::User(e) => DbError::Postgres(e),
            bb8::RunError::TimedOut => DbError::Pool("timed out waiting for a connection".into()),
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    /// Connects (creating the database when the server has none of that name) and migrates.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, DbError> {
        let config: tokio_postgres::Config = url.parse()?;
        if let Err(e) = config.connect(NoTls).await {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_DATABASE) {
                create_database(&config).await?;
            } else {
                return Err(e.into());
            }
        }
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = bb8::Pool::builder()
            .max_size(pool_size)
            .connection_timeout(std::time::Duration::from_secs(5))
            .build(manager)
            .await?;
        let db = Db { pool };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let mut conn = self.pool.get().await?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
        let result = async {
            conn.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
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

    pub async fn ping(&self) -> Result<(), DbError> {
        self.pool.get().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Inserts a camera and returns when it was registered (ms since the Unix epoch); `None`
    /// when the id is taken.
    pub async fn insert_camera(&self, spec: &CameraSpec) -> Result<Option<u64>, DbError> {
        let json = serde_json::to_value(spec).expect("a camera spec serialises");
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                "INSERT INTO cameras (id, spec) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING
                 RETURNING (extract(epoch FROM created_at) * 1000)::int8",
                &[&spec.id, &json],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    pub async fn delete_camera(&self, id: &str) -> Result<bool, DbError> {
        Ok(self.pool.get().await?.execute("DELETE FROM cameras WHERE id = $1", &[&id]).await? == 1)
    }

    /// The stored cameras with when each was registered (ms since the Unix epoch). A row that no
    /// longer reads as a camera comes back as its error, so one bad row cannot stop the others.
    pub async fn cameras(&self) -> Result<Vec<Result<(CameraSpec, u64), DbError>>, DbError> {
        let rows = self
            .pool
            .get()
            .await?
            .query("SELECT id, spec, (extract(epoch FROM created_at) * 1000)::int8 FROM cameras ORDER BY created_at, id", &[])
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let id: String = row.get(0);
                let registered_ms = row.get::<_, i64>(2) as u64;
                serde_json::from_value(row.get(1))
                    .map(|spec| (spec, registered_ms))
                    .map_err(|e| DbError::Corrupt { id, message: e.to_string() })
            })
            .collect())
    }

    /// Inserts events; ids already present are skipped, so a replay writes nothing twice.
    pub async fn insert_events(&self, events: &[Event]) -> Result<u64, DbError> {
        let mut ids = Vec::with_capacity(events.len());
        let mut cameras = Vec::with_capacity(events.len());
        let mut types = Vec::with_capacity(events.len());
        let mut ts: Vec<DateTime<Utc>> = Vec::with_capacity(events.len());
        let mut seqs = Vec::with_capacity(events.len());
        let mut tracks = Vec::with_capacity(events.len());
        let mut classes = Vec::with_capacity(events.len());
        let mut lines = Vec::with_capacity(events.len());
        let mut directions = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        for e in events {
            ids.push(e.event_id.clone());
            cameras.push(e.camera_id.to_string());
            types.push(e.kind.to_string());
            ts.push(e.ts);
            seqs.push(e.frame_seq as i64);
            tracks.push(e.track_id as i64);
            classes.push(e.class.as_str().to_string());
            lines.push(e.line_id.clone());
            directions.push(e.direction.as_str().to_string());
            payloads.push(serde_json::to_value(e).expect("an event serialises"));
        }
        let n = self
            .pool
            .get()
            .await?
            .execute(
                "INSERT INTO events (event_id, camera_id, type, ts, frame_seq, track_id, class, line_id, direction, payload)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[], $6::int8[],
                                      $7::text[], $8::text[], $9::text[], $10::jsonb[])
                 ON CONFLICT (event_id) DO NOTHING",
                &[&ids, &cameras, &types, &ts, &seqs, &tracks, &classes, &lines, &directions, &payloads],
            )
            .await?;
        Ok(n)
    }
}

async fn create_database(config: &tokio_postgres::Config) -> Result<(), DbError> {
    let name = config.get_dbname().unwrap_or("postgres").to_string();
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin.connect(NoTls).await?;
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
