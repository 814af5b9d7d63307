//! The running service: settings, the pipeline, PostgreSQL and Redis, and the operations the
//! control API offers on them. HTTP handlers stay thin; the rules live here.

use std::sync::Arc;

use crate::actors::status::CameraStatus;
use crate::analytics::geometry::Geometry;
use crate::camera_spec::{CameraSpec, SourcePolicy};
use crate::db::{Db, DbError};
use crate::metrics::Metrics;
use crate::redis_keys::RedisKeys;
use crate::settings::Settings;
use crate::sinks::publisher::Publisher;
use crate::sinks::stores::{RedisPool, RedisPostgres, StreamOptions};
use crate::topology::{CameraMode, Pipeline, TopologyError};

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
}

pub struct Service {
    pub settings: Settings,
    pub pipeline: Pipeline,
    pub db: Db,
    pub redis: RedisPool,
    pub metrics: Arc<Metrics>,
    pub keys: RedisKeys,
    /// Which camera URLs registration accepts.
    pub sources: SourcePolicy,
    publisher: Arc<Publisher>,
    /// Signalled when a supervised child crash-loops: the process stops and exits non-zero.
    escalation: Arc<tokio::sync::Notify>,
}

/// How long shutdown waits for the publisher to deliver what the connectors emitted.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl Service {
    /// Connects to PostgreSQL (migrating) and Redis, loads the model, starts the pipeline and
    /// every camera stored in PostgreSQL. Must run inside an actix system.
    pub async fn start(settings: Settings) -> Result<Arc<Self>, anyhow::Error> {
        let sources =
            settings.cameras.source_policy().map_err(anyhow::Error::msg)?.with_simulator(settings.simulator.enabled);
        let metrics = Arc::new(Metrics::new());
        let db = Db::connect(
            &settings.postgres.url,
            settings.postgres.pool_size,
            std::time::Duration::from_millis(settings.postgres.connect_timeout_ms),
        )
        .await?;
        let manager = bb8_redis::RedisConnectionManager::new(settings.redis.url.as_str())?;
        let redis = crate::pools::builder(
            settings.redis.pool_size,
            std::time::Duration::from_millis(settings.redis.connect_timeout_ms),
        )
        .build(manager)
        .await?;
        let outbox = crate::sinks::outbox::Outbox::open(crate::sinks::outbox::OutboxConfig {
            path: settings.outbox.path.clone(),
            max_events: settings.outbox.max_events,
            when_full: settings.outbox.when_full,
        })?;
        let stores = RedisPostgres {
            redis: redis.clone(),
            keys: RedisKeys::new(&settings.redis.key_prefix),
            stream: StreamOptions { max_len: settings.redis.stream_max_len, dedup_ttl_s: settings.redis.dedup_ttl_s },
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
        let pipeline = Pipeline::start(settings.clone(), metrics.clone(), publisher.clone(), escalate)?;
        let keys = RedisKeys::new(&settings.redis.key_prefix);
        let service = Arc::new(Self { settings, pipeline, db, redis, metrics, keys, sources, publisher, escalation });
        // A stored camera that no longer reads or validates (a file that went away) is reported,
        // not fatal: the others still start.
        for stored in service.db.cameras().await? {
            let camera = match stored {
                Ok(camera) => camera,
                Err(error) => {
                    tracing::error!(%error, "stored camera not started");
                    continue;
                }
            };
            let id = camera.spec.id.clone();
            let errors = camera.spec.validate(&service.sources);
            if !errors.is_empty() {
                tracing::error!(camera = %id, errors = ?errors, "stored camera not started");
                // Down, for the CameraDown alert: it is registered and analyses nothing.
                service.metrics.camera_up.get_or_create(&service.metrics.camera(&id)).set(0);
                continue;
            }
            service
                .pipeline
                .start_camera(camera.spec, CameraMode::Live, camera.registered_ms, camera.geometry_version)
                .await?;
            tracing::info!(camera = %id, "camera restored");
        }
        Ok(service)
    }

    pub async fn register_camera(&self, spec: CameraSpec) -> Result<Arc<CameraStatus>, ServiceError> {
        let errors = spec.validate(&self.sources);
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        if self.pipeline.camera(&spec.id).is_some() {
            return Err(ServiceError::Duplicate(spec.id));
        }
        let Some((registered_ms, version)) = self.db.insert_camera(&spec).await? else {
            return Err(ServiceError::Duplicate(spec.id));
        };
        let url = crate::camera_spec::redact_url(&spec.url);
        tracing::info!(camera = %spec.id, %url, geometry_version = version, "camera registered");
        match self.pipeline.start_camera(spec.clone(), CameraMode::Live, registered_ms, version).await {
            Ok(status) => Ok(status),
            Err(e) => {
                // Keep PostgreSQL and the running set in agreement.
                let _ = self.db.delete_camera(&spec.id).await;
                Err(e.into())
            }
        }
    }

    /// Validates and stores a new geometry version and hands it to the running camera.
    pub async fn set_geometry(&self, id: &str, geometry: Geometry) -> Result<u32, ServiceError> {
        let errors = geometry.validate();
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        if self.pipeline.camera(id).is_none() {
            return Err(ServiceError::NotFound(id.to_string()));
        }
        let version =
            self.db.set_geometry(id, &geometry).await?.ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        self.pipeline.set_geometry(id, geometry, version).await?;
        tracing::info!(camera = %id, geometry_version = version, "geometry replaced");
        Ok(version)
    }

    /// The camera's latest state from the Redis cache; `None` before its first frame.
    pub async fn live_state(&self, id: &str) -> Result<Option<serde_json::Value>, ServiceError> {
        let mut conn = self.redis.get().await.map_err(|e| ServiceError::Redis(e.to_string()))?;
        let fields: std::collections::HashMap<String, String> = bb8_redis::redis::cmd("HGETALL")
            .arg(self.keys.camera_state(id))
            .query_async(&mut *conn)
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

    pub async fn remove_camera(&self, id: &str) -> Result<(), ServiceError> {
        let stopped = self.pipeline.stop_camera(id).await;
        let deleted = self.db.delete_camera(id).await?;
        // Queued behind the camera's final state, so nothing re-creates the entry.
        self.publisher.forget_state(id);
        if stopped || deleted {
            // A camera that never started (invalid when restored) has series too.
            self.metrics.remove_camera(id);
            tracing::info!(camera = %id, "camera removed");
            Ok(())
        } else {
            Err(ServiceError::NotFound(id.to_string()))
        }
    }

    /// Orderly stop: cameras and inference threads first (no new frames, no model call left
    /// running), then the events already emitted are delivered before the process exits.
    /// Cameras stay registered and resume at the next start.
    pub async fn shutdown(&self) {
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
    }

    /// Resolves when a supervised child crash-looped (the supervisor escalated).
    pub async fn escalated(&self) {
        self.escalation.notified().await;
    }

    /// Why the supervisor escalated, if it did.
    pub fn escalation(&self) -> Option<String> {
        self.pipeline.escalated()
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
        let redis = crate::pools::PoolView::new("redis", self.redis.config().max_size, self.redis.state());
        let pools = vec![redis, self.db.pool_view()];
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
            .query_async::<String>(&mut *conn)
            .await
            .map(|_| ())
            .map_err(|e| ServiceError::Redis(e.to_string()))
    }
}
