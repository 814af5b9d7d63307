//! The running service: settings, the pipeline, PostgreSQL and Redis, and the operations the
//! control API offers on them. HTTP handlers stay thin; the rules live here.

use std::sync::Arc;

use crate::actors::gpu::registry::StartPlan;
use crate::actors::status::CameraStatus;
use crate::analytics::geometry::Geometry;
use crate::camera_spec::{CameraSpec, SourcePolicy};
use crate::cluster::{Cluster, ClusterError};
use crate::db::{Db, DbError};
use crate::metrics::Metrics;
use crate::picture::PictureHub;
use crate::redis_keys::RedisKeys;
use crate::settings::Settings;
use crate::sinks::publisher::Publisher;
use crate::sinks::stores::{RedisPool, RedisPostgres, StreamOptions};
use crate::topology::{Pipeline, TopologyError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Every problem with a request, each a sentence naming what it is about.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("camera {0} already exists")]
    Duplicate(String),
    #[error("camera {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("redis: {0}")]
    Redis(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Where a registered camera runs, as seen from the node asked.
pub enum CameraRuntime {
    /// On this node.
    Local(Arc<CameraStatus>),
    /// On another node (`None` while it moves or before its owner has started it).
    Remote { owner: Option<String> },
}

pub struct Service {
    pub settings: Settings,
    pub pipeline: Arc<Pipeline>,
    pub cluster: Arc<Cluster>,
    /// Forwards a camera's status request to the node that analyses it.
    pub peers: reqwest::Client,
    pub db: Db,
    pub redis: RedisPool,
    pub metrics: Arc<Metrics>,
    pub keys: RedisKeys,
    /// Which camera URLs registration accepts.
    pub sources: SourcePolicy,
    /// Snapshots and live views: the encoders all viewers share.
    pub pictures: PictureHub,
    publisher: Arc<Publisher>,
    /// Signalled when a supervised child crash-loops: the process stops and exits non-zero.
    escalation: Arc<tokio::sync::Notify>,
}

/// How long shutdown waits for the publisher to deliver what the connectors emitted.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl Service {
    /// Connects to PostgreSQL (migrating) and Redis, loads the model version the registry says
    /// serves (or falls back: `registry`), starts the pipeline and joins the cluster, which
    /// starts this node's share of the stored cameras. Must run inside an actix system.
    pub async fn start(settings: Settings) -> Result<Arc<Self>, anyhow::Error> {
        let sources =
            settings.cameras.source_policy().map_err(anyhow::Error::msg)?.with_simulator(settings.simulator.enabled);
        let metrics = Arc::new(Metrics::new());
        let db = Db::open(&crate::db::DbOptions::from_settings(&settings.postgres)).await?;
        tokio::spawn(crate::db::partitions::maintenance_loop(db.clone(), settings.retention.clone(), metrics.clone()));
        let redis = RedisPool::connect(&settings.redis).await?;
        let outbox = crate::sinks::outbox::Outbox::open(crate::sinks::outbox::OutboxConfig {
            path: settings.outbox.path.clone(),
            max_events: settings.outbox.max_events,
            when_full: settings.outbox.when_full,
        })?;
        let stores = RedisPostgres {
            redis: redis.clone(),
            keys: RedisKeys::new(&settings.redis.key_prefix),
            stream: StreamOptions::from_settings(&settings.redis),
            db: db.clone(),
        };
        let publisher = Arc::new(Publisher::spawn(
            stores,
            &settings.publisher,
            settings.breakers.config(),
            metrics.clone(),
            Arc::new(outbox),
        ));
        let escalation = Arc::new(tokio::sync::Notify::new());
        let escalate = {
            let escalation = escalation.clone();
            Box::new(move |child: &str, error: &str| {
                tracing::error!(
                    child,
                    error,
                    "a supervised child crash-loops; stopping the process so its orchestrator restarts it"
                );
                escalation.notify_one();
            })
        };
        // The registry in PostgreSQL says which model version serves (and which to fall back on).
        let pipeline = if settings.simulator.enabled {
            Pipeline::start(settings.clone(), metrics.clone(), publisher.clone(), escalate)?
        } else {
            let node = settings.node.resolved_id();
            let plan = StartPlan::from_registry(&db, &node, &settings.model).await?;
            Pipeline::start_from(settings.clone(), metrics.clone(), publisher.clone(), escalate, plan)?
        };
        let pipeline = Arc::new(pipeline);
        pipeline.models().record_start().await?;
        let cluster = Cluster::join(
            &settings,
            db.clone(),
            pipeline.clone(),
            sources.clone(),
            metrics.clone(),
            publisher.clone(),
            redis.clone(),
        )
        .await?;
        let keys = RedisKeys::new(&settings.redis.key_prefix);
        let peers = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(settings.http.request_timeout_ms / 2))
            .build()?;
        let pictures = PictureHub::new(settings.pictures.clone(), metrics.clone());
        Ok(Arc::new(Self {
            pictures,
            settings,
            pipeline,
            cluster,
            peers,
            db,
            redis,
            metrics,
            keys,
            sources,
            publisher,
            escalation,
        }))
    }

    /// Where a camera runs now: here, or which node holds its lease.
    pub async fn runtime(&self, id: &str) -> Result<CameraRuntime, ServiceError> {
        if let Some((_, status)) = self.pipeline.camera(id) {
            return Ok(CameraRuntime::Local(status));
        }
        Ok(CameraRuntime::Remote { owner: self.cluster.owner_of(id).await? })
    }

    /// Stores a camera; its owner (this node or another, told through PostgreSQL) starts it.
    pub async fn register_camera(&self, spec: CameraSpec) -> Result<CameraRuntime, ServiceError> {
        let errors = spec.validate(&self.sources);
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let Some((_, version)) = self.db.insert_camera(&spec).await? else {
            return Err(ServiceError::Duplicate(spec.id));
        };
        let url = crate::camera_spec::redact_url(&spec.url);
        tracing::info!(camera = %spec.id, %url, geometry_version = version, "camera registered");
        // This node may be the owner: start it before answering.
        self.apply_now().await;
        Ok(self.runtime(&spec.id).await.unwrap_or(CameraRuntime::Remote { owner: None }))
    }

    /// Applies a change just stored, when this node owns what it changed. The change is durable
    /// already: if the round fails, the owner applies it at its next heartbeat.
    async fn apply_now(&self) {
        if let Err(error) = self.cluster.reconcile().await {
            tracing::warn!(%error, "change stored; its owner applies it at its next heartbeat");
        }
    }

    /// Validates and stores a new geometry version; the camera's owner applies it.
    pub async fn set_geometry(&self, id: &str, geometry: Geometry) -> Result<u32, ServiceError> {
        let errors = geometry.validate();
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let version =
            self.db.set_geometry(id, &geometry).await?.ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        self.apply_now().await;
        tracing::info!(camera = %id, geometry_version = version, "geometry replaced");
        Ok(version)
    }

    /// The camera's latest state from the Redis cache; `None` before its first frame.
    pub async fn live_state(&self, id: &str) -> Result<Option<serde_json::Value>, ServiceError> {
        let mut conn = self.redis.get().await.map_err(|e| ServiceError::Redis(e.to_string()))?;
        let fields: std::collections::HashMap<String, String> = bb8_redis::redis::cmd("HGETALL")
            .arg(self.keys.camera_state(id))
            .query_async(&mut conn)
            .await
            .map_err(|e| ServiceError::Redis(e.to_string()))?;
        let Some(state) = fields.get("state") else { return Ok(None) };
        let mut state: serde_json::Value =
            serde_json::from_str(state).map_err(|e| ServiceError::Redis(format!("cached state unreadable: {e}")))?;
        if let (Some(map), Some(at)) = (state.as_object_mut(), fields.get("updated_at")) {
            map.insert("cached_at".into(), at.clone().into());
        }
        Ok(Some(state))
    }

    /// Removes a camera; its owner stops it (at once when that is this node).
    pub async fn remove_camera(&self, id: &str) -> Result<(), ServiceError> {
        if !self.db.delete_camera(id).await? {
            return Err(ServiceError::NotFound(id.to_string()));
        }
        self.apply_now().await;
        // A camera that never started (invalid when restored) has series too.
        self.metrics.remove_camera(id);
        tracing::info!(camera = %id, "camera removed");
        Ok(())
    }

    /// Orderly stop: the cameras are handed to other nodes (or, alone, stopped), then the
    /// inference threads end (no model call left running), then the events already emitted are
    /// delivered before the process leaves the cluster and exits. Cameras stay registered.
    pub async fn shutdown(&self) {
        self.cluster.drain().await;
        self.pipeline.shutdown().await;
        let (accepted, delivered, left) = self.publisher.drain(DRAIN_TIMEOUT).await;
        if left > 0 {
            tracing::warn!(
                accepted,
                delivered,
                left,
                "shutdown: events left in the outbox are delivered at the next start"
            );
        } else {
            tracing::info!(accepted, delivered, "shutdown: every event delivered");
        }
        self.cluster.leave().await;
    }

    /// Resolves when a supervised child crash-looped (the supervisor escalated) or another
    /// process claimed this node's id.
    pub async fn escalated(&self) {
        tokio::select! {
            _ = self.escalation.notified() => {}
            _ = self.cluster.superseded() => {}
        }
    }

    /// Why the process stops on its own, if it does.
    pub fn escalation(&self) -> Option<String> {
        self.pipeline.escalated().or_else(|| self.cluster.superseded_reason())
    }

    /// What `/api/v1/system` says about event delivery.
    pub fn delivery(&self) -> serde_json::Value {
        let (accepted, delivered) = self.publisher.counts();
        serde_json::json!({
            "accepted": accepted,
            "delivered": delivered,
            "outbox_backlog": self.publisher.backlog(),
            "replayed_from_outbox": self.publisher.replayed(),
            "outbox_max_events": self.settings.outbox.max_events,
        })
    }

    /// Both connection pools, their statistics also copied into the metrics.
    pub fn pools(&self) -> Vec<crate::pools::PoolView> {
        // Redis Cluster: no pool (one multiplexed connection per cluster node), so no view.
        let pools: Vec<_> = [self.redis.pool_view(), Some(self.db.pool_view()), self.db.read_pool_view()]
            .into_iter()
            .flatten()
            .collect();
        for pool in &pools {
            pool.export(&self.metrics);
        }
        pools
    }

    /// Refreshes the series that are read rather than counted: pool statistics, the outbox
    /// backlog and device memory. Called at each scrape of `/metrics`.
    pub fn refresh_scraped_metrics(&self) {
        self.pools();
        self.metrics.outbox_backlog.set(self.publisher.backlog() as i64);
        self.metrics.refresh_model_accuracy();
        for device in self.pipeline.device_names() {
            if let Some(used) = crate::device_memory::utilization_percent(device) {
                self.metrics
                    .device_memory
                    .get_or_create(&crate::metrics::DeviceLabels { device: device.to_string() })
                    .set(used);
            }
        }
    }

    /// Events accepted from the connectors and delivered to both stores so far.
    pub fn publisher_counts(&self) -> (u64, u64) {
        self.publisher.counts()
    }

    /// The circuit breakers around Redis and PostgreSQL.
    pub fn breakers(&self) -> Vec<crate::supervision::BreakerView> {
        self.publisher.breakers()
    }

    pub async fn redis_ping(&self) -> Result<(), ServiceError> {
        let mut conn = self.redis.get().await.map_err(|e| ServiceError::Redis(e.to_string()))?;
        bb8_redis::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| ServiceError::Redis(e.to_string()))
    }
}
