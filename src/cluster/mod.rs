//! Many nodes share the cameras. Each node heartbeats into PostgreSQL; every heartbeat it works
//! out, by weighted rendezvous hashing over the live nodes, which cameras are its own, takes
//! their leases (each with a fencing token), starts them, renews what it holds, and gives up
//! what is no longer its own. Coordination lives in the PostgreSQL the service already uses: no
//! consensus or gossip of our own.
//!
//! Safety: a node stops its cameras `cluster.stop_after()` (two heartbeats before the TTL) after
//! its last successful renewal, and no other node can take a lease before it expires, so a
//! partitioned node has stopped before anyone else starts; a node renews only the tokens it holds,
//! so a lease once taken over is never renewed by the old holder.

pub mod rendezvous;
pub mod store;
pub mod witness;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::camera_spec::SourcePolicy;
use crate::db::{Db, DbError, DbOptions, StoredCamera};
use crate::metrics::{Metrics, MoveLabels};
use crate::redis_keys::RedisKeys;
use crate::settings::{ClusterSettings, Settings};
use crate::sinks::publisher::Publisher;
use crate::sinks::stores::RedisPool;
use crate::topology::{CameraMode, Pipeline};
use rendezvous::{Candidate, Demand};
use store::{Claim, ClusterStore, NodeRow};
use witness::Witness;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "node id {0:?} is in use by a live node (its heartbeat moves): give this process another node.id \
         (ITS__NODE__ID)"
    )]
    IdTaken(String),
    #[error("node id {0:?} was claimed by another process: this one stops")]
    Superseded(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the coordination store did not answer within {0:?}")]
    Timeout(Duration),
}

/// A camera this node runs, with the lease it runs under.
struct Held {
    token: i64,
    registered_ms: u64,
    geometry_version: u32,
}

/// What the heartbeat loop keeps between rounds.
#[derive(Default)]
struct Round {
    held: HashMap<String, Held>,
    /// `cluster_revision.cameras` the camera list below was read at.
    revision: Option<i64>,
    cameras: HashMap<String, StoredCamera>,
    /// Registrations that do not validate here (registration time, geometry version).
    rejected: HashMap<String, (u64, u32)>,
    /// The newest `updated_at` among the cameras read.
    newest_change: Option<chrono::DateTime<chrono::Utc>>,
}

/// What `/api/v1/cluster` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub node: String,
    pub nodes: Vec<NodeView>,
    /// Cameras whose owner this node does not see as live (briefly, during a move).
    pub unowned_cameras: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub row: NodeRow,
    /// The cameras whose lease it holds.
    pub camera_ids: Vec<String>,
}

pub struct Cluster {
    id: String,
    incarnation: String,
    capacity_fps: f64,
    advertise_url: String,
    settings: ClusterSettings,
    default_fps: f64,
    store: ClusterStore,
    db: Db,
    pipeline: Arc<Pipeline>,
    sources: SourcePolicy,
    metrics: Arc<Metrics>,
    /// Forgets a removed camera's cached state.
    publisher: Arc<Publisher>,
    /// Tells a PostgreSQL outage of every node from this node being cut off.
    witness: Witness,
    /// Since when every round has reached PostgreSQL (`None` after a failed one).
    in_contact_since: parking_lot::Mutex<Option<Instant>>,
    /// The current outage of every node's PostgreSQL has been logged.
    outage_logged: AtomicBool,
    round: tokio::sync::Mutex<Round>,
    /// Rounds begun so far (under the `round` lock).
    rounds_started: std::sync::atomic::AtomicU64,
    /// When the last successful renewal started.
    renewed_at: parking_lot::Mutex<Option<Instant>>,
    draining: AtomicBool,
    wake: tokio::sync::Notify,
    /// Set when the node must stop (its id was taken over).
    superseded: tokio::sync::Notify,
    is_superseded: AtomicBool,
}

impl Cluster {
    /// Claims this node's id (refused when a live process holds it) and joins: the first round
    /// runs before this returns, so the node's cameras are started.
    pub async fn join(
        settings: &Settings,
        db: Db,
        pipeline: Arc<Pipeline>,
        sources: SourcePolicy,
        metrics: Arc<Metrics>,
        publisher: Arc<Publisher>,
        redis: RedisPool,
    ) -> Result<Arc<Self>, ClusterError> {
        let id = settings.node.resolved_id();
        let advertise_url = match settings.node.advertise_url.as_str() {
            "" => format!("http://{}", settings.http.bind),
            url => url.trim_end_matches('/').to_string(),
        };
        let store = ClusterStore::new(db.pool().clone(), settings.cluster.ttl());
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let incarnation = format!("{}-{}", std::process::id(), since_epoch.as_nanos());
        let watch = settings.cluster.heartbeat() * 2 + Duration::from_millis(200);
        if store.claim(&id, &incarnation, settings.node.capacity_fps, &advertise_url, watch).await? == Claim::Taken {
            return Err(ClusterError::IdTaken(id));
        }
        metrics.node_capacity.set(settings.node.capacity_fps);
        let witness = Witness::new(redis, &RedisKeys::new(&settings.redis.key_prefix), &id, settings.cluster.ttl());
        let cluster = Arc::new(Self {
            id,
            incarnation,
            capacity_fps: settings.node.capacity_fps,
            advertise_url,
            settings: settings.cluster.clone(),
            default_fps: settings.cameras.default_fps,
            store,
            db,
            pipeline,
            sources,
            metrics,
            publisher,
            witness,
            in_contact_since: parking_lot::Mutex::new(None),
            outage_logged: AtomicBool::new(false),
            round: tokio::sync::Mutex::new(Round::default()),
            rounds_started: Default::default(),
            renewed_at: parking_lot::Mutex::new(None),
            draining: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            superseded: tokio::sync::Notify::new(),
            is_superseded: AtomicBool::new(false),
        });
        tracing::info!(node = %cluster.id, capacity_fps = cluster.capacity_fps, url = %cluster.advertise_url,
            "joined the cluster");
        cluster.reconcile().await?;
        actix::spawn(heartbeat_loop(cluster.clone()));
        actix::spawn(lease_watchdog(cluster.clone()));
        actix::spawn(listen_for_changes(cluster.clone()));
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.id
    }

    /// Resolves when another process has claimed this node's id: this one must stop.
    pub async fn superseded(&self) {
        self.superseded.notified().await
    }

    /// Why this node must stop, once another process has claimed its id.
    pub fn superseded_reason(&self) -> Option<String> {
        self.is_superseded.load(Ordering::SeqCst).then(|| format!("node id {:?} claimed by another process", self.id))
    }

    /// A round that starts after this call, waiting for the one in progress: the caller's
    /// change (committed before the call) is then applied. Callers waiting together share one
    /// round (many registrations at once cost a few rounds, not one each).
    pub async fn reconcile(&self) -> Result<(), ClusterError> {
        let called_at = self.rounds_started.load(Ordering::SeqCst);
        let mut round = self.round.lock().await;
        if self.rounds_started.load(Ordering::SeqCst) > called_at {
            // A round started after this call began (another caller's) and, as this caller now
            // holds the lock, has finished.
            return Ok(());
        }
        self.rounds_started.fetch_add(1, Ordering::SeqCst);
        let limit = self.settings.ttl();
        match tokio::time::timeout(limit, self.run_round(&mut round)).await {
            Ok(result) => result,
            Err(_) => Err(ClusterError::Timeout(limit)),
        }
    }

    /// Hands every camera over: the node says it is draining, stops its cameras and gives their
    /// leases up, then waits (at most `cluster.drain_timeout_ms`) until other live nodes hold them.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let handed: Vec<String> = self.round.lock().await.held.keys().cloned().collect();
        if let Err(error) = self.reconcile().await {
            tracing::warn!(%error, "drain: the hand-over round failed; stopping the cameras here");
            let mut round = self.round.lock().await;
            let tokens: Vec<i64> = round.held.values().map(|h| h.token).collect();
            for id in round.held.keys() {
                self.pipeline.stop_camera(id).await;
            }
            round.held.clear();
            let _ = self.store.release(&self.id, &tokens).await;
        }
        let deadline = Instant::now() + Duration::from_millis(self.settings.drain_timeout_ms);
        let others_live = |nodes: &[NodeRow]| nodes.iter().any(|n| n.id != self.id && n.state == "live");
        loop {
            let (Ok(owners), Ok(nodes)) = (self.store.owners().await, self.store.nodes().await) else { break };
            let waiting = handed.iter().filter(|c| !owners.contains_key(*c)).count();
            if waiting == 0 || !others_live(&nodes) {
                tracing::info!(cameras = handed.len(), not_taken = waiting, "drain: cameras handed over");
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!(not_taken = waiting, "drain: timed out waiting for other nodes to take cameras");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node leaves for good (after its outbox is delivered): a restart under its id starts
    /// at once.
    pub async fn leave(&self) {
        self.witness.forget().await;
        if let Err(error) = self.store.leave(&self.id, &self.incarnation).await {
            tracing::warn!(%error, "could not record leaving the cluster");
        }
    }

    /// Every node with its cameras, as PostgreSQL has them.
    pub async fn view(&self) -> Result<ClusterView, ClusterError> {
        let nodes = self.store.nodes().await?;
        let owners = self.store.owners().await?;
        let mut per_node: HashMap<&str, Vec<String>> = HashMap::new();
        let mut unowned = 0;
        for (camera, node) in &owners {
            if nodes.iter().any(|n| &n.id == node && n.is_live()) {
                per_node.entry(node.as_str()).or_default().push(camera.clone());
            } else {
                unowned += 1;
            }
        }
        let nodes = nodes
            .into_iter()
            .map(|row| {
                let mut camera_ids = per_node.remove(row.id.as_str()).unwrap_or_default();
                camera_ids.sort();
                NodeView { row, camera_ids }
            })
            .collect();
        Ok(ClusterView { node: self.id.clone(), nodes, unowned_cameras: unowned })
    }

    /// The node that holds a camera's lease now.
    pub async fn owner_of(&self, camera_id: &str) -> Result<Option<String>, ClusterError> {
        Ok(self.store.owner_of(camera_id).await?)
    }

    /// Every camera's current lease holder.
    pub async fn owners(&self) -> Result<HashMap<String, String>, ClusterError> {
        Ok(self.store.owners().await?)
    }

    /// The URL a node's API answers at, if it is a member.
    pub async fn url_of(&self, node: &str) -> Result<Option<String>, ClusterError> {
        Ok(self.store.nodes().await?.into_iter().find(|n| n.id == node).map(|n| n.advertise_url))
    }

    /// One heartbeat: membership, leases, assignment, hand-overs, geometry and model changes.
    async fn run_round(&self, round: &mut Round) -> Result<(), ClusterError> {
        let started = Instant::now();
        let draining = self.draining.load(Ordering::SeqCst);
        let load: f64 = round
            .held
            .keys()
            .filter_map(|id| round.cameras.get(id))
            .map(|c| c.spec.fps.unwrap_or(self.default_fps))
            .sum();
        let state = if draining { "draining" } else { "live" };
        let written = self.store.heartbeat(&self.id, &self.incarnation, state, load, round.held.len() as i32).await?;
        match written {
            Some(stored_state) if stored_state == "draining" && !draining => {
                // `its-analytics drain` (the preStop hook) marked this node.
                tracing::info!("drain requested through the store: handing the cameras over");
                self.draining.store(true, Ordering::SeqCst);
            }
            Some(_) => {}
            None => {
                self.stop_all("node id claimed by another process").await;
                round.held.clear();
                self.is_superseded.store(true, Ordering::SeqCst);
                self.superseded.notify_one();
                return Err(ClusterError::Superseded(self.id.clone()));
            }
        }
        let draining = self.draining.load(Ordering::SeqCst);
        let leases = self.store.renew(&self.id).await?;
        *self.renewed_at.lock() = Some(started);
        let in_contact_for = self.in_contact_since.lock().get_or_insert(started).elapsed();
        let witness = self.witness.clone();
        actix::spawn(async move {
            let _ = witness.reached_postgres().await;
        });
        // A camera the watchdog stopped, or whose lease is gone: no longer held.
        let mut lost = Vec::new();
        round.held.retain(|id, held| {
            let running = self.pipeline.camera(id).is_some();
            let ours = leases.get(id).map(|l| l.token) == Some(held.token);
            if running && !ours {
                lost.push(id.clone());
            }
            running && ours
        });
        for id in lost {
            tracing::warn!(camera = %id, "lease lost to another node: camera stopped");
            self.pipeline.stop_camera(&id).await;
            self.count_move("lease_lost");
        }
        let revision = self.db.cameras_revision().await?;
        if round.revision != Some(revision) {
            self.load_cameras(round).await?;
            round.revision = Some(revision);
        }
        let nodes = self.store.nodes().await?;
        let live: Vec<&NodeRow> = nodes.iter().filter(|n| n.state == "live").collect();
        self.metrics.cluster_nodes.set(nodes.iter().filter(|n| n.is_live()).count() as i64);
        let settled: Vec<&NodeRow> =
            live.iter().copied().filter(|n| n.live_for_ms >= self.settings.settle_ms as i64).collect();
        let eligible = if settled.is_empty() { live } else { settled };
        let candidates: Vec<Candidate> =
            eligible.iter().map(|n| Candidate { id: n.id.clone(), capacity_fps: n.capacity_fps }).collect();
        let demands: Vec<Demand> = round
            .cameras
            .values()
            .map(|c| Demand { id: c.spec.id.clone(), fps: c.spec.fps.unwrap_or(self.default_fps) })
            .collect();
        let owners = rendezvous::assign(&demands, &candidates);
        let mine = |id: &str| !draining && owners.get(id).map(String::as_str) == Some(self.id.as_str());

        // Give up what is no longer ours (moved, removed, re-registered, or draining).
        let mut released = Vec::new();
        let ids: Vec<String> = round.held.keys().cloned().collect();
        for id in ids {
            let stored = round.cameras.get(&id);
            let reregistered = stored.is_some_and(|c| c.registered_ms != round.held[&id].registered_ms);
            if mine(&id) && !reregistered {
                continue;
            }
            let held = round.held.remove(&id).expect("listed above");
            self.pipeline.stop_camera(&id).await;
            released.push(held.token);
            match stored {
                None => {
                    // Queued behind the camera's final state, so nothing re-creates the entry.
                    self.publisher.forget_state(&id);
                    tracing::info!(camera = %id, "camera removed: stopped");
                }
                Some(_) if reregistered => tracing::info!(camera = %id, "camera registered again: restarting"),
                Some(_) => {
                    let reason = if draining { "drain" } else { "rebalance" };
                    tracing::info!(camera = %id, to = ?owners.get(&id), reason, "camera handed over: stopped");
                    self.count_move(reason);
                }
            }
        }
        // Leases ours in the store that run nowhere here and are not ours to run.
        released
            .extend(leases.iter().filter(|(id, _)| !round.held.contains_key(*id) && !mine(id)).map(|(_, l)| l.token));
        if !released.is_empty() {
            self.store.release(&self.id, &released).await?;
            // Announce it, so the next owner takes them now rather than at its next heartbeat.
            self.db.announce_change().await?;
        }

        // Take what is ours and not running.
        let wanted: Vec<String> =
            round.cameras.keys().filter(|id| mine(id) && !round.held.contains_key(*id)).cloned().collect();
        // Another node's expired leases are taken only after a TTL in contact with PostgreSQL:
        // after an outage of every node, their owners renew them first.
        let take_expired = in_contact_for >= self.settings.ttl();
        for acquired in self.store.acquire(&self.id, &wanted, take_expired).await? {
            let Some(camera) = round.cameras.get(&acquired.camera_id) else { continue };
            let spec = camera.spec.clone();
            match self
                .pipeline
                .start_camera(spec, CameraMode::Live, camera.registered_ms, camera.geometry_version)
                .await
            {
                Ok(_) => {
                    if acquired.from_lost_node {
                        self.count_move("node_lost");
                    }
                    tracing::info!(camera = %acquired.camera_id, token = acquired.token,
                        taken_over = acquired.from_lost_node, "camera lease acquired: started");
                    round.held.insert(
                        acquired.camera_id.clone(),
                        Held {
                            token: acquired.token,
                            registered_ms: camera.registered_ms,
                            geometry_version: camera.geometry_version,
                        },
                    );
                }
                Err(error) => {
                    tracing::error!(camera = %acquired.camera_id, %error, "camera not started; lease given up");
                    self.store.release(&self.id, &[acquired.token]).await?;
                }
            }
        }

        // Geometry changed through any node.
        for (id, held) in round.held.iter_mut() {
            let Some(camera) = round.cameras.get(id) else { continue };
            if camera.geometry_version > held.geometry_version {
                if let Err(error) =
                    self.pipeline.set_geometry(id, camera.spec.geometry.clone(), camera.geometry_version).await
                {
                    tracing::warn!(camera = %id, %error, "geometry change not applied");
                } else {
                    held.geometry_version = camera.geometry_version;
                }
            }
        }
        // Model versions activated or rolled back to on other nodes (the registry's transitions).
        if let Err(error) = self.pipeline.models().apply_cluster().await {
            tracing::warn!(%error, "model transitions of the cluster not applied; next heartbeat");
        }
        self.metrics.node_cameras.set(round.held.len() as i64);
        Ok(())
    }

    /// Brings `round.cameras` up to date: drops what was removed, reads what is new or changed
    /// (only those), keeps the ones that validate. The others are reported once per change and
    /// left down.
    async fn load_cameras(&self, round: &mut Round) -> Result<(), ClusterError> {
        // Only rows changed since the last read (with a margin for transactions that committed
        // late); all of them when some were removed (the count tells) or on the first read.
        let (count, newest) = self.db.cameras_summary().await?;
        let since = round.newest_change.map(|t| t - chrono::Duration::seconds(5));
        let changed = self.db.camera_versions(since).await?;
        self.read_changed(round, &changed).await?;
        if (round.cameras.len() + round.rejected.len()) as i64 != count {
            let all = self.db.camera_versions(None).await?;
            let present: HashMap<&String, (u64, u32)> = all.iter().map(|(id, at, v)| (id, (*at, *v))).collect();
            round.cameras.retain(|id, c| present.get(id) == Some(&(c.registered_ms, c.geometry_version)));
            round.rejected.retain(|id, seen| present.get(id) == Some(seen));
            self.read_changed(round, &all).await?;
        }
        round.newest_change = newest;
        Ok(())
    }

    /// Reads the registrations among `versions` (id, registration ms, geometry version) that
    /// are new or changed; keeps the ones that validate, reports the others once per change.
    async fn read_changed(&self, round: &mut Round, versions: &[(String, u64, u32)]) -> Result<(), ClusterError> {
        let stale: Vec<String> = versions
            .iter()
            .filter(|(id, at, version)| {
                let known = round.cameras.get(id).map(|c| (c.registered_ms, c.geometry_version));
                known.or_else(|| round.rejected.get(id).copied()) != Some((*at, *version))
            })
            .map(|(id, _, _)| id.clone())
            .collect();
        for ids in stale.chunks(1_000) {
            for id in ids {
                round.cameras.remove(id);
                round.rejected.remove(id);
            }
            for stored in self.db.cameras_by_id(ids).await? {
                let camera = match stored {
                    Ok(camera) => camera,
                    Err(error) => {
                        tracing::error!(%error, "stored camera not started");
                        continue;
                    }
                };
                let id = camera.spec.id.clone();
                let errors = camera.spec.validate(&self.sources);
                if errors.is_empty() {
                    round.cameras.insert(id, camera);
                    continue;
                }
                tracing::error!(camera = %id, errors = ?errors, "stored camera not started");
                // Down, for the CameraDown alert: it is registered and analyses nothing.
                self.metrics.camera_up.get_or_create(&self.metrics.camera(&id)).set(0);
                round.rejected.insert(id, (camera.registered_ms, camera.geometry_version));
            }
        }
        Ok(())
    }

    async fn stop_all(&self, why: &str) {
        for (spec, _) in self.pipeline.cameras() {
            self.pipeline.stop_camera(&spec.id).await;
            tracing::warn!(camera = %spec.id, why, "camera stopped");
        }
    }

    fn count_move(&self, reason: &str) {
        self.metrics.camera_moves.get_or_create(&MoveLabels { reason: reason.to_string() }).inc();
    }
}

/// `its-analytics drain`: marks the node `node.id` as draining (its own process sees it at its
/// next heartbeat, stops its cameras and gives their leases up) and waits until it holds no lease,
/// at most `cluster.drain_timeout_ms`. Never fails a pod's termination over a node already gone.
pub async fn drain_node(settings: &Settings) -> Result<(), ClusterError> {
    let db =
        Db::open(&DbOptions { pool_size: 1, read_url: None, ..DbOptions::from_settings(&settings.postgres) }).await?;
    let store = ClusterStore::new(db.pool().clone(), settings.cluster.ttl());
    let id = settings.node.resolved_id();
    if !store.set_draining(&id).await? {
        tracing::info!(node = %id, "node is not live (or drains already)");
    }
    db.announce_change().await?;
    let deadline = Instant::now() + Duration::from_millis(settings.cluster.drain_timeout_ms);
    loop {
        let held = store.held_by(&id).await?;
        if held == 0 {
            tracing::info!(node = %id, "drained: no camera lease left");
            return Ok(());
        }
        if Instant::now() > deadline {
            tracing::warn!(node = %id, leases = held, "drain timed out; the leases expire after the TTL");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A round every heartbeat, or at once when a change is announced.
async fn heartbeat_loop(cluster: Arc<Cluster>) {
    let mut failing_since: Option<Instant> = None;
    // Announcements come in bursts (a thousand registrations): at most one round per quarter
    // heartbeat, each seeing all that changed meanwhile.
    let min_gap = cluster.settings.heartbeat() / 4;
    let mut last_round = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cluster.settings.heartbeat()) => {}
            _ = cluster.wake.notified() => {}
        }
        if let Some(wait) = min_gap.checked_sub(last_round.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        last_round = Instant::now();
        match cluster.reconcile().await {
            Ok(()) => {
                cluster.outage_logged.store(false, Ordering::SeqCst);
                if let Some(since) = failing_since.take() {
                    tracing::info!(after_ms = since.elapsed().as_millis() as u64, "coordination store reachable again");
                }
            }
            Err(ClusterError::Superseded(id)) => {
                tracing::error!(node = %id, "another process claimed this node id: stopping");
                return;
            }
            Err(error) => {
                *cluster.in_contact_since.lock() = None;
                if failing_since.is_none() {
                    tracing::warn!(%error, "heartbeat failed; cameras stop if it keeps failing");
                    failing_since = Some(Instant::now());
                }
            }
        }
    }
}

/// Stops every camera once the leases may be about to expire, `cluster.stop_after()` after the
/// last renewal that succeeded, unless the witness in Redis says no other node reaches
/// PostgreSQL either (then nobody can take a lease over, and the cameras run through the outage).
/// Runs apart from the heartbeat, which may hang on an unreachable store.
async fn lease_watchdog(cluster: Arc<Cluster>) {
    let period = (cluster.settings.heartbeat() / 4).max(Duration::from_millis(25));
    loop {
        tokio::time::sleep(period).await;
        let Some(renewed) = *cluster.renewed_at.lock() else { continue };
        if renewed.elapsed() <= cluster.settings.stop_after() || cluster.pipeline.cameras().is_empty() {
            continue;
        }
        let asked = tokio::time::timeout(cluster.settings.heartbeat(), cluster.witness.others_with_postgres()).await;
        match asked {
            Ok(Ok(0)) => {
                if !cluster.outage_logged.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        "PostgreSQL unreachable from every node (Redis witness): cameras keep running, no lease can \
                         move until it is back"
                    );
                }
            }
            Ok(Ok(_)) => {
                cluster.stop_all("leases could not be renewed in time (another node reaches PostgreSQL)").await;
            }
            Ok(Err(_)) | Err(_) => {
                cluster.stop_all("leases could not be renewed in time (coordination store unreachable)").await;
            }
        }
    }
}

/// Wakes the heartbeat loop on `NOTIFY` of a change (a camera registered, removed or changed on
/// any node, a lease given up, a model version activated or rolled back to). Reconnects after a
/// failure; a notification lost meanwhile heals at the next heartbeat, which compares the revision
/// (and reads the model transitions after the last one applied).
async fn listen_for_changes(cluster: Arc<Cluster>) {
    use bb8_postgres::tokio_postgres::AsyncMessage;
    use futures::StreamExt;
    loop {
        if let Ok((client, mut connection)) = cluster.db.target().connect().await {
            let woken = cluster.clone();
            // The connection delivers notifications only while it is polled.
            let poller = tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(_) = message {
                        woken.wake.notify_one();
                    }
                }
            });
            if client.batch_execute(&format!("LISTEN {}", crate::db::CHANGES_CHANNEL)).await.is_ok() {
                let _ = poller.await;
            } else {
                poller.abort();
            }
        }
        tokio::time::sleep(cluster.settings.heartbeat()).await;
    }
}
