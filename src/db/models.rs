//! The model registry in PostgreSQL (`model_versions`, `model_transitions`, migration 5): versions
//! numbered once for the whole cluster, and every transition with the node that made it.

use bb8_postgres::tokio_postgres;
use chrono::{DateTime, Utc};

use super::{Db, DbError, CHANGES_CHANNEL};

/// Transitions that decide which version serves: the newest of them names it.
pub const SERVING_TRANSITIONS: [&str; 2] = ["activated", "rolled_back"];

/// One registered version of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRow {
    pub version: u32,
    /// Relative to the model directory.
    pub file: String,
    pub sha256: String,
    pub input_size: u32,
    pub precision: String,
    pub created_at: DateTime<Utc>,
}

/// One stored transition.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionRow {
    pub seq: i64,
    pub model: String,
    pub transition: String,
    pub from_version: Option<u32>,
    pub to_version: Option<u32>,
    pub detail: String,
    pub node: String,
    pub at: DateTime<Utc>,
}

/// A transition to store.
#[derive(Debug, Clone)]
pub struct NewTransition {
    pub model: String,
    pub transition: String,
    pub from_version: Option<u32>,
    pub to_version: Option<u32>,
    pub detail: String,
    pub node: String,
}

/// What a node starting needs: the newest transition's number (it applies only later ones) and
/// the version serving as of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Serving {
    pub last_seq: i64,
    pub version: Option<VersionRow>,
}

const VERSION_COLUMNS: &str = "version, file, sha256, input_size, precision, created_at";
const TRANSITION_COLUMNS: &str = "seq, model, transition, from_version, to_version, detail, node, at";

fn version_row(r: &tokio_postgres::Row) -> VersionRow {
    VersionRow {
        version: r.get::<_, i32>(0) as u32,
        file: r.get(1),
        sha256: r.get(2),
        input_size: r.get::<_, i32>(3) as u32,
        precision: r.get(4),
        created_at: r.get(5),
    }
}

fn transition_row(r: &tokio_postgres::Row) -> TransitionRow {
    TransitionRow {
        seq: r.get(0),
        model: r.get(1),
        transition: r.get(2),
        from_version: r.get::<_, Option<i32>>(3).map(|v| v as u32),
        to_version: r.get::<_, Option<i32>>(4).map(|v| v as u32),
        detail: r.get(5),
        node: r.get(6),
        at: r.get(7),
    }
}

impl Db {
    /// Registers `file` with `sha256` as a version of `model`: the existing version when that
    /// file with that content is known, else the model's next number (serialised per model, so
    /// nodes registering at once agree). Returns the version and whether it is new.
    pub async fn register_model_version(
        &self,
        model: &str,
        file: &str,
        sha256: &str,
        input_size: u32,
        precision: &str,
    ) -> Result<(VersionRow, bool), DbError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('model_versions:' || $1))", &[&model]).await?;
        let known = tx
            .query_opt(
                &format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = $1 AND file = $2 AND sha256 = $3"),
                &[&model, &file, &sha256],
            )
            .await?;
        if let Some(row) = known {
            return Ok((version_row(&row), false));
        }
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO model_versions (model, version, file, sha256, input_size, precision)
                     SELECT $1, COALESCE(max(version), 0) + 1, $2, $3, $4, $5 FROM model_versions WHERE model = $1
                     RETURNING {VERSION_COLUMNS}"
                ),
                &[&model, &file, &sha256, &(input_size as i32), &precision],
            )
            .await?;
        tx.commit().await?;
        Ok((version_row(&row), true))
    }

    /// Every version of `model`, oldest first.
    pub async fn model_versions(&self, model: &str) -> Result<Vec<VersionRow>, DbError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                &format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = $1 ORDER BY version"),
                &[&model],
            )
            .await?;
        Ok(rows.iter().map(version_row).collect())
    }

    pub async fn model_version(&self, model: &str, version: u32) -> Result<Option<VersionRow>, DbError> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                &format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = $1 AND version = $2"),
                &[&model, &(version as i32)],
            )
            .await?;
        Ok(row.as_ref().map(version_row))
    }

    /// Stores a transition; one that changes the serving version is announced (`NOTIFY`), so
    /// the other nodes apply it now rather than at their next heartbeat. Returns its number.
    pub async fn record_model_transition(&self, t: &NewTransition) -> Result<i64, DbError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let seq: i64 = tx
            .query_one(
                "INSERT INTO model_transitions (model, transition, from_version, to_version, detail, node)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
                &[
                    &t.model,
                    &t.transition,
                    &t.from_version.map(|v| v as i32),
                    &t.to_version.map(|v| v as i32),
                    &t.detail,
                    &t.node,
                ],
            )
            .await?
            .get(0);
        if SERVING_TRANSITIONS.contains(&t.transition.as_str()) {
            tx.execute("SELECT pg_notify($1, 'models')", &[&CHANGES_CHANNEL]).await?;
        }
        tx.commit().await?;
        Ok(seq)
    }

    /// Transitions of `model` after `after`, oldest first.
    pub async fn model_transitions_after(&self, model: &str, after: i64) -> Result<Vec<TransitionRow>, DbError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                &format!(
                    "SELECT {TRANSITION_COLUMNS} FROM model_transitions WHERE model = $1 AND seq > $2 ORDER BY seq"
                ),
                &[&model, &after],
            )
            .await?;
        Ok(rows.iter().map(transition_row).collect())
    }

    /// The newest `limit` transitions of `model`, oldest first.
    pub async fn model_history(&self, model: &str, limit: i64) -> Result<Vec<TransitionRow>, DbError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                &format!(
                    "SELECT * FROM (SELECT {TRANSITION_COLUMNS} FROM model_transitions WHERE model = $1
                     ORDER BY seq DESC LIMIT $2) newest ORDER BY seq"
                ),
                &[&model, &limit],
            )
            .await?;
        Ok(rows.iter().map(transition_row).collect())
    }

    /// The newest transition number (of any model) and the version of `model` serving as of it.
    pub async fn model_serving(&self, model: &str) -> Result<Serving, DbError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.build_transaction().read_only(true).start().await?;
        let last_seq: i64 = tx.query_one("SELECT COALESCE(max(seq), 0) FROM model_transitions", &[]).await?.get(0);
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = $1 AND version = (
                         SELECT to_version FROM model_transitions
                         WHERE model = $1 AND seq <= $2 AND transition = ANY($3) AND to_version IS NOT NULL
                         ORDER BY seq DESC LIMIT 1)"
                ),
                &[&model, &last_seq, &&SERVING_TRANSITIONS[..]],
            )
            .await?;
        tx.commit().await?;
        Ok(Serving { last_seq, version: row.as_ref().map(version_row) })
    }

    /// The good versions of `model`, the most recently serving first: each was activated (or
    /// rolled back to) at some point, was never refused by a node (`rejected`) and never rolled
    /// back from.
    pub async fn good_model_versions(&self, model: &str) -> Result<Vec<VersionRow>, DbError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN (
                         SELECT to_version, max(seq) AS last FROM model_transitions
                         WHERE model = $1 AND transition = ANY($2) AND to_version IS NOT NULL GROUP BY to_version
                     ) served ON served.to_version = v.version
                     WHERE v.model = $1 AND NOT EXISTS (
                         SELECT 1 FROM model_transitions t WHERE t.model = $1 AND (
                             (t.transition = 'rejected' AND t.to_version = v.version)
                             OR (t.transition = 'rolled_back' AND t.from_version = v.version)))
                     ORDER BY served.last DESC"
                ),
                &[&model, &&SERVING_TRANSITIONS[..]],
            )
            .await?;
        Ok(rows.iter().map(version_row).collect())
    }
}
