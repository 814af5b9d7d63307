//! The cluster's state in PostgreSQL: members with their heartbeats, camera leases with fencing
//! tokens and their log. Every time is PostgreSQL's `now()`, so no two nodes' clocks are ever
//! compared.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::db::{DbError, PgPool};

/// A member as the store sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeRow {
    pub id: String,
    /// `live`, `draining`, `left` as written by the node; `dead` when its heartbeat is older than
    /// the TTL.
    pub state: String,
    pub capacity_fps: f64,
    pub load_fps: f64,
    pub cameras: i32,
    pub advertise_url: String,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: i64,
    /// Milliseconds it has been live without a gap.
    pub live_for_ms: i64,
}

impl NodeRow {
    pub fn is_live(&self) -> bool {
        self.state == "live" || self.state == "draining"
    }
}

/// A lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub token: i64,
}

/// A lease acquired, and whether it was taken over from a node that did not hand it over (its
/// lease had expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    pub camera_id: String,
    pub token: i64,
    pub from_lost_node: bool,
}

#[derive(Clone)]
pub struct ClusterStore {
    pool: PgPool,
    ttl_ms: i64,
}

/// How a node's claim on its id went at start.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    /// Another process heartbeats under this id: it is live.
    Taken,
}

impl ClusterStore {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self { pool, ttl_ms: ttl.as_millis() as i64 }
    }

    /// The heartbeat of the row with this id, and its incarnation, if any.
    async fn heartbeat_of(&self, id: &str) -> Result<Option<(i64, String, String)>, DbError> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT (extract(epoch FROM heartbeat_at) * 1000000)::int8, incarnation, state
                 FROM cluster_nodes WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    /// Claims `id` for this process. A row whose heartbeat is within the TTL belongs to a live
    /// process unless it stops moving: its heartbeat is watched for `watch` (a few heartbeats);
    /// if it moves, the id is taken. A dead predecessor (a killed pod restarting under its name)
    /// is replaced.
    pub async fn claim(
        &self,
        id: &str,
        incarnation: &str,
        capacity_fps: f64,
        advertise_url: &str,
        watch: Duration,
    ) -> Result<Claim, DbError> {
        if let Some((first, _, state)) = self.heartbeat_of(id).await? {
            let fresh: bool = self
                .pool
                .get()
                .await?
                .query_one(
                    "SELECT heartbeat_at > now() - $2 * interval '1 millisecond' FROM cluster_nodes WHERE id = $1",
                    &[&id, &(self.ttl_ms as f64)],
                )
                .await?
                .get(0);
            if fresh && state != "left" {
                tokio::time::sleep(watch).await;
                if let Some((later, _, _)) = self.heartbeat_of(id).await? {
                    if later != first {
                        return Ok(Claim::Taken);
                    }
                }
            }
        }
        self.pool
            .get()
            .await?
            .execute(
                "INSERT INTO cluster_nodes (id, incarnation, state, capacity_fps, advertise_url)
                 VALUES ($1, $2, 'live', $3, $4)
                 ON CONFLICT (id) DO UPDATE SET incarnation = $2, state = 'live', capacity_fps = $3,
                     advertise_url = $4, started_at = now(), live_since = now(), heartbeat_at = now(),
                     cameras = 0, load_fps = 0",
                &[&id, &incarnation, &capacity_fps, &advertise_url],
            )
            .await?;
        Ok(Claim::Claimed)
    }

    /// Writes this node's heartbeat with its load and returns the state stored (`draining` when
    /// `its-analytics drain` asked for it); `None` when another incarnation has taken the id
    /// since (this process must stop). A node's own `draining` is kept; `live` never overrides
    /// `draining` or `left`.
    pub async fn heartbeat(
        &self,
        id: &str,
        incarnation: &str,
        state: &str,
        load_fps: f64,
        cameras: i32,
    ) -> Result<Option<String>, DbError> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt(
                "UPDATE cluster_nodes SET
                     live_since = CASE WHEN heartbeat_at < now() - $5 * interval '1 millisecond'
                                       THEN now() ELSE live_since END,
                     heartbeat_at = now(), state = CASE WHEN state = 'live' THEN $3 ELSE state END,
                     load_fps = $4, cameras = $6
                 WHERE id = $1 AND incarnation = $2
                 RETURNING state",
                &[&id, &incarnation, &state, &load_fps, &(self.ttl_ms as f64), &cameras],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Marks a node as draining (from `its-analytics drain`, another process than the node's).
    pub async fn set_draining(&self, id: &str) -> Result<bool, DbError> {
        let n = self
            .pool
            .get()
            .await?
            .execute("UPDATE cluster_nodes SET state = 'draining' WHERE id = $1 AND state = 'live'", &[&id])
            .await?;
        Ok(n == 1)
    }

    /// Every member, the dead ones shown as `dead`.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, DbError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT id,
                        CASE WHEN state <> 'left' AND heartbeat_at < now() - $1 * interval '1 millisecond'
                             THEN 'dead' ELSE state END,
                        capacity_fps, load_fps, cameras, advertise_url,
                        (extract(epoch FROM now() - heartbeat_at) * 1000)::int8,
                        (extract(epoch FROM now() - live_since) * 1000)::int8
                 FROM cluster_nodes ORDER BY id",
                &[&(self.ttl_ms as f64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| NodeRow {
                id: r.get(0),
                state: r.get(1),
                capacity_fps: r.get(2),
                load_fps: r.get(3),
                cameras: r.get(4),
                advertise_url: r.get(5),
                heartbeat_age_ms: r.get(6),
                live_for_ms: r.get(7),
            })
            .collect())
    }

    /// Renews every lease `node` holds; returns the ones still its own. A lease taken over by
    /// another node (after it expired) is not among them.
    pub async fn renew(&self, node: &str) -> Result<HashMap<String, Lease>, DbError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "UPDATE camera_leases SET expires_at = now() + $2 * interval '1 millisecond'
                 WHERE node_id = $1 RETURNING camera_id, token",
                &[&node, &(self.ttl_ms as f64)],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), Lease { token: r.get(1) })).collect())
    }

    /// Takes the leases of `cameras` that are free, already `node`'s (a restart under the same
    /// id), or, with `take_expired`, expired, each with a new fencing token, and logs each
    /// acquisition.
    pub async fn acquire(&self, node: &str, cameras: &[String], take_expired: bool) -> Result<Vec<Acquired>, DbError> {
        if cameras.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "WITH previous AS (
                     SELECT camera_id, node_id, expires_at < now() AS expired FROM camera_leases
                     WHERE camera_id = ANY($2)
                 ), taken AS (
                     INSERT INTO camera_leases AS l (camera_id, node_id, token, acquired_at, expires_at)
                     SELECT c, $1, nextval('camera_lease_tokens'), now(), now() + $3 * interval '1 millisecond'
                     FROM unnest($2::text[]) AS c
                     ON CONFLICT (camera_id) DO UPDATE
                         SET node_id = EXCLUDED.node_id, token = EXCLUDED.token,
                             acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at
                         WHERE (l.expires_at < now() AND $4) OR l.node_id = EXCLUDED.node_id
                     RETURNING camera_id, token
                 ), closed AS (
                     UPDATE camera_lease_log SET released_at = now()
                     WHERE camera_id IN (SELECT camera_id FROM taken) AND released_at IS NULL
                 ), logged AS (
                     INSERT INTO camera_lease_log (token, camera_id, node_id, reason, acquired_at)
                     SELECT t.token, t.camera_id, $1,
                            CASE WHEN p.expired AND p.node_id <> $1 THEN 'node_lost' ELSE 'assigned' END, now()
                     FROM taken t LEFT JOIN previous p USING (camera_id)
                 )
                 SELECT t.camera_id, t.token, COALESCE(p.expired AND p.node_id <> $1, false)
                 FROM taken t LEFT JOIN previous p USING (camera_id)",
                &[&node, &cameras, &(self.ttl_ms as f64), &take_expired],
            )
            .await?;
        Ok(rows.iter().map(|r| Acquired { camera_id: r.get(0), token: r.get(1), from_lost_node: r.get(2) }).collect())
    }

    /// Gives leases up (their cameras are stopped): the next owner takes them at once.
    pub async fn release(&self, node: &str, tokens: &[i64]) -> Result<(), DbError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        tx.execute("DELETE FROM camera_leases WHERE node_id = $1 AND token = ANY($2)", &[&node, &tokens]).await?;
        tx.execute(
            "UPDATE camera_lease_log SET released_at = now() WHERE token = ANY($1) AND released_at IS NULL",
            &[&tokens],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The holder of each camera's lease that has not expired.
    pub async fn owners(&self) -> Result<HashMap<String, String>, DbError> {
        let rows = self
            .pool
            .get()
            .await?
            .query("SELECT camera_id, node_id FROM camera_leases WHERE expires_at >= now()", &[])
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The holder of one camera's lease, if it has not expired.
    pub async fn owner_of(&self, camera_id: &str) -> Result<Option<String>, DbError> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt("SELECT node_id FROM camera_leases WHERE camera_id = $1 AND expires_at >= now()", &[&camera_id])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Leases `node` still holds (valid or not).
    pub async fn held_by(&self, node: &str) -> Result<i64, DbError> {
        Ok(self
            .pool
            .get()
            .await?
            .query_one("SELECT count(*) FROM camera_leases WHERE node_id = $1", &[&node])
            .await?
            .get(0))
    }

    /// A node leaving for good: its row says `left`, so a restart under its id is not delayed.
    pub async fn leave(&self, id: &str, incarnation: &str) -> Result<(), DbError> {
        self.pool
            .get()
            .await?
            .execute("UPDATE cluster_nodes SET state = 'left' WHERE id = $1 AND incarnation = $2", &[&id, &incarnation])
            .await?;
        Ok(())
    }
}
