//! Prometheus metrics: names are constants here, labels are bounded (camera and device ids only,
//! never track or frame ids). Counters shown by the API are these same counters, read back.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::analytics::tracker::Continuity;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CameraLabels {
    pub camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    pub device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

/// A drift feature (`class`, `confidence`, `box_size`, `count`) of a model on a camera.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    pub camera: String,
    pub model: String,
    pub feature: String,
}

/// `ml_model_accuracy`: `evidence` says what it is judged against (`proxy`: track continuity, no
/// reference; `reference`: a reference model in shadow, `actors::gpu::candidate`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelAccuracyLabels {
    pub model: String,
    pub evidence: String,
}

/// `ml_model_agreement`: a candidate's agreement with its reference, per class (`all`: over all
/// classes) and score (`precision`, `recall`, `f1`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgreementLabels {
    pub model: String,
    pub version: String,
    pub class: String,
    pub score: String,
}

/// The exemplar of an observation made for a traced frame: its trace id, to jump from a latency
/// bucket to the trace in Jaeger.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub trace_id: String,
}

impl TraceLabels {
    /// The exemplar of `span`'s trace, when it is sampled.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        crate::telemetry::sampled_trace_id(span).map(|id| Self { trace_id: id.to_string() })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub kind: String,
}

/// A partitioned table (`events`, `analytics_1m`) and what happened to a partition of it
/// (`created`, `dropped`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub table: String,
    pub action: String,
}

/// Why a camera moved between nodes: `join`, `node_lost`, `drain`, `rebalance`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MoveLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub breaker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelTransitionLabels {
    pub model: String,
    pub transition: String,
}

/// A supervised child: `shard-0`, `infer-cpu`, ...
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChildLabels {
    pub child: String,
}

// Counter names get `_total` appended by the encoder.
pub const FRAMES_DECODED: &str = "its_frames_decoded";
pub const FRAMES_PROCESSED: &str = "its_frames_processed";
pub const FRAMES_DROPPED: &str = "its_frames_dropped";
pub const EVENTS: &str = "its_events";
pub const CAMERA_RECONNECTS: &str = "its_camera_reconnects";
pub const BATCH_SIZE: &str = "its_batch_size";
pub const INFERENCE_LATENCY: &str = "its_inference_latency_seconds";
pub const QUEUE_DEPTH: &str = "its_device_queue_depth";
/// The brief's name, unprefixed: dashboards and alert rules use it as is.
pub const ANALYTICS_LATENCY: &str = "analytics_latency_seconds";
pub const EVENTS_PUBLISHED: &str = "its_events_published";
pub const EVENTS_DROPPED: &str = "its_events_dropped";
pub const SINK_FAILURES: &str = "its_sink_failures";
pub const BREAKER_STATE: &str = "its_breaker_state";
pub const BREAKER_OPENS: &str = "its_breaker_opens";
pub const POOL_CONNECTIONS: &str = "its_pool_connections";
pub const POOL_EVENTS: &str = "its_pool_events";
pub const CAMERA_UP: &str = "its_camera_up";
pub const OUTBOX_BACKLOG: &str = "its_outbox_backlog";
pub const CHILD_RESTARTS: &str = "its_supervisor_restarts";
pub const CHILD_STATE: &str = "its_supervisor_child_state";
pub const OUT_OF_MEMORY: &str = "its_device_out_of_memory";
pub const BATCH_LIMIT: &str = "its_device_batch_limit";
pub const MODEL_VERSION: &str = "its_model_version";
pub const MODEL_TRANSITIONS: &str = "its_model_transitions";
pub const DEVICE_BUSY: &str = "its_device_busy_seconds";
pub const CLUSTER_NODES: &str = "its_cluster_nodes";
pub const NODE_CAMERAS: &str = "its_node_cameras";
pub const NODE_CAPACITY: &str = "its_node_capacity_fps";
pub const CAMERA_MOVES: &str = "its_camera_moves";
pub const POSTGRES_PARTITIONS: &str = "its_postgres_partitions";
pub const RETENTION_DELETED: &str = "its_retention_rows_deleted";
pub const PICTURE_VIEWERS: &str = "its_picture_viewers";
pub const PICTURE_VIEWERS_REFUSED: &str = "its_picture_viewers_refused";
pub const PICTURES_ENCODED: &str = "its_pictures_encoded";
pub const PICTURE_ENCODE_SECONDS: &str = "its_picture_encode_seconds";
pub const PICTURE_PARTS_SENT: &str = "its_picture_parts_sent";
/// Names the product brief uses.
pub const DEVICE_MEMORY: &str = "gpu_memory_utilization_percent";
pub const MODEL_ACCURACY: &str = "ml_model_accuracy";
pub const MODEL_DRIFT: &str = "ml_model_drift_kl";
pub const MODEL_AGREEMENT: &str = "ml_model_agreement";

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Bounds of `analytics_latency_seconds`, seconds: 0.1 is one, so the p99 alert at 100 ms
/// (`deploy/prometheus/alerts.yml`) is not an interpolation inside a wider bucket.
pub const ANALYTICS_LATENCY_BUCKETS: [f64; 13] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn batch_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
}

pub struct Metrics {
    registry: Registry,
    pub frames_decoded: Family<CameraLabels, Counter>,
    pub frames_processed: Family<CameraLabels, Counter>,
    pub frames_dropped: Family<CameraLabels, Counter>,
    pub events: Family<CameraLabels, Counter>,
    pub camera_reconnects: Family<CameraLabels, Counter>,
    pub batch_size: HistogramFamily<DeviceLabels>,
    pub inference_latency: HistogramFamily<DeviceLabels>,
    pub queue_depth: Family<DeviceLabels, Gauge>,
    /// Capture of the frame to the event published on Redis; traced frames leave their trace id
    /// as the bucket's exemplar.
    pub analytics_latency: HistogramWithExemplars<TraceLabels>,
    pub events_published: Counter,
    pub events_dropped: Counter,
    /// 0 closed, 1 half-open, 2 open, per breaker (`redis`, `postgres`).
    pub breaker_state: Family<BreakerLabels, Gauge>,
    pub breaker_opens: Family<BreakerLabels, Counter>,
    /// Connections per pool (`redis`, `postgres`) and kind (`idle`, `in_use`).
    pub pool_connections: Family<PoolLabels, Gauge>,
    /// Pool calls and connection life cycle per kind (`get_direct`, `get_waited`,
    /// `get_timed_out`, `created`, `closed_broken`, `closed_invalid`), refreshed at each scrape.
    pub pool_events: Family<PoolLabels, Counter>,
    pub sink_failures: Counter,
    /// 1 while a camera's stream delivers frames, 0 while it is down.
    pub camera_up: Family<CameraLabels, Gauge>,
    /// Events in the durable outbox, not yet delivered to both sinks, set at each scrape.
    pub outbox_backlog: Gauge,
    /// Used share of each inference device's memory, percent, set at each scrape.
    pub device_memory: Family<DeviceLabels, Gauge<f64, AtomicU64>>,
    /// Label-free recall proxy of the live model (`ModelContinuity`), and the accuracy judged
    /// against a reference model where one runs in shadow.
    pub model_accuracy: Family<ModelAccuracyLabels, Gauge<f64, AtomicU64>>,
    pub model_continuity: ModelContinuity,
    /// KL(window || reference) of each drift feature, per camera and model (`detector::drift`).
    pub model_drift: Family<DriftLabels, Gauge<f64, AtomicU64>>,
    /// Set by the candidates (`actors::gpu::candidate`), copied into `model_accuracy` at each scrape.
    pub model_accuracy_reference: parking_lot::Mutex<Option<(String, f64)>>,
    /// The active candidate's agreement with its reference.
    pub model_agreement: Family<AgreementLabels, Gauge<f64, AtomicU64>>,
    /// Restarts of each supervised child.
    pub child_restarts: Family<ChildLabels, Counter>,
    /// 0 running, 1 backing off, 2 failed, 3 escalated.
    pub child_state: Family<ChildLabels, Gauge>,
    pub out_of_memory: Family<DeviceLabels, Counter>,
    /// The batch limit learnt from out-of-memory errors.
    pub batch_limit: Family<DeviceLabels, Gauge>,
    /// The version of the model serving.
    pub model_version: Family<ModelLabels, Gauge>,
    pub model_transitions: Family<ModelTransitionLabels, Counter>,
    /// Seconds each device spent in model calls: its rate is the device's busy share (0..1), what
    /// the HorizontalPodAutoscaler scales on.
    pub device_busy: Family<DeviceLabels, Counter<f64, AtomicU64>>,
    /// Live nodes of the cluster as this node sees them.
    pub cluster_nodes: Gauge,
    /// Cameras this node analyses (holds the lease of).
    pub node_cameras: Gauge,
    /// Frames/s this node advertises it can analyse (its rendezvous weight).
    pub node_capacity: Gauge<f64, AtomicU64>,
    /// Cameras this node started or stopped because ownership moved, per reason.
    pub camera_moves: Family<MoveLabels, Counter>,
    /// Daily partitions created and dropped by this node's maintenance, per table and action.
    pub partitions: Family<PartitionLabels, Counter>,
    /// Rows deleted by retention one by one (incidents past `retention.incidents_days`, default partitions).
    pub retention_deleted: Counter,
    /// Live viewers (`live.mjpeg`) of each camera.
    pub picture_viewers: Family<CameraLabels, Gauge>,
    /// Live viewers refused because a camera had `pictures.max_viewers_per_camera` already.
    pub picture_viewers_refused: Family<CameraLabels, Counter>,
    /// Pictures encoded (snapshots and live-view parts; a picture shared by viewers counts once).
    pub pictures_encoded: Counter,
    /// Time to draw and encode one picture, seconds, including the wait for a blocking thread.
    pub picture_encode_seconds: Histogram,
    /// Parts sent to live viewers, per camera.
    pub picture_parts_sent: Family<CameraLabels, Counter>,
    pub stages: Stages,
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            frames_decoded: Family::default(),
            frames_processed: Family::default(),
            frames_dropped: Family::default(),
            events: Family::default(),
            camera_reconnects: Family::default(),
            batch_size: Family::new_with_constructor(batch_histogram),
            inference_latency: Family::new_with_constructor(latency_histogram),
            queue_depth: Family::default(),
            analytics_latency: HistogramWithExemplars::new(ANALYTICS_LATENCY_BUCKETS.into_iter()),
            events_published: Counter::default(),
            events_dropped: Counter::default(),
            breaker_state: Family::default(),
            breaker_opens: Family::default(),
            pool_connections: Family::default(),
            pool_events: Family::default(),
            sink_failures: Counter::default(),
            camera_up: Family::default(),
            outbox_backlog: Gauge::default(),
            device_memory: Family::default(),
            model_accuracy: Family::default(),
            model_continuity: ModelContinuity::default(),
            model_drift: Family::default(),
            model_accuracy_reference: Default::default(),
            model_agreement: Family::default(),
            child_restarts: Family::default(),
            child_state: Family::default(),
            out_of_memory: Family::default(),
            batch_limit: Family::default(),
            model_version: Family::default(),
            model_transitions: Family::default(),
            device_busy: Family::default(),
            cluster_nodes: Gauge::default(),
            node_cameras: Gauge::default(),
            node_capacity: Gauge::default(),
            camera_moves: Family::default(),
            partitions: Family::default(),
            retention_deleted: Counter::default(),
            picture_viewers: Family::default(),
            picture_viewers_refused: Family::default(),
            pictures_encoded: Counter::default(),
            // 0.5 ms .. ~1 s
            picture_encode_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
            picture_parts_sent: Family::default(),
            stages: Stages::default(),
        };
        let r = &mut m.registry;
        r.register(
            FRAMES_DECODED,
            "Frames decoded from the stream (before sampling to the camera's fps), per camera",
            m.frames_decoded.clone(),
        );
        r.register(FRAMES_PROCESSED, "Frames through detection and tracking, per camera", m.frames_processed.clone());
        r.register(
            FRAMES_DROPPED,
            "Frames dropped (device saturated or frame past its deadline), per camera",
            m.frames_dropped.clone(),
        );
        r.register(EVENTS, "Events emitted, per camera", m.events.clone());
        r.register(
            CAMERA_RECONNECTS,
            "Stream reconnection attempts after a failure, per camera",
            m.camera_reconnects.clone(),
        );
        r.register(BATCH_SIZE, "Frames per model call, per device", m.batch_size.clone());
        r.register(INFERENCE_LATENCY, "Model call duration in seconds, per device", m.inference_latency.clone());
        r.register(QUEUE_DEPTH, "Frames waiting for a device", m.queue_depth.clone());
        r.register(
            ANALYTICS_LATENCY,
            "Frame capture to event published on Redis, seconds",
            m.analytics_latency.clone(),
        );
        r.register(EVENTS_PUBLISHED, "Events delivered to Redis and PostgreSQL", m.events_published.clone());
        r.register(EVENTS_DROPPED, "Events dropped because the sink queue was full", m.events_dropped.clone());
        r.register(SINK_FAILURES, "Failed event delivery attempts (retried)", m.sink_failures.clone());
        r.register(BREAKER_STATE, "Circuit breaker state: 0 closed, 1 half-open, 2 open", m.breaker_state.clone());
        r.register(BREAKER_OPENS, "Times a circuit breaker opened", m.breaker_opens.clone());
        r.register(
            POOL_CONNECTIONS,
            "Pooled connections, per pool and kind (idle, in_use)",
            m.pool_connections.clone(),
        );
        r.register(
            POOL_EVENTS,
            "Pool calls and connection events since start, per pool and kind",
            m.pool_events.clone(),
        );
        r.register(CAMERA_UP, "1 while the camera's stream delivers frames, 0 while it is down", m.camera_up.clone());
        r.register(
            OUTBOX_BACKLOG,
            "Events committed to the durable outbox and not yet delivered to both Redis and PostgreSQL",
            m.outbox_backlog.clone(),
        );
        r.register(
            CHILD_RESTARTS,
            "Restarts of a supervised child (connector shard, inference thread)",
            m.child_restarts.clone(),
        );
        r.register(
            CHILD_STATE,
            "Supervised child state: 0 running, 1 backing off, 2 failed, 3 escalated",
            m.child_state.clone(),
        );
        r.register(
            OUT_OF_MEMORY,
            "Model calls that ran out of device memory (the batch was halved and retried)",
            m.out_of_memory.clone(),
        );
        r.register(
            BATCH_LIMIT,
            "Largest batch the device runs now, learnt from out-of-memory errors",
            m.batch_limit.clone(),
        );
        r.register(
            MODEL_VERSION,
            "Version of the model serving (registry order; 1 is the configured file)",
            m.model_version.clone(),
        );
        r.register(
            MODEL_TRANSITIONS,
            "Model registry transitions: activated, rejected, rolled_back",
            m.model_transitions.clone(),
        );
        r.register(
            DEVICE_BUSY,
            "Seconds the device spent in model calls; its rate is the busy share (0..1)",
            m.device_busy.clone(),
        );
        r.register(CLUSTER_NODES, "Live nodes of the cluster, as this node sees them", m.cluster_nodes.clone());
        r.register(NODE_CAMERAS, "Cameras this node analyses (holds the lease of)", m.node_cameras.clone());
        r.register(NODE_CAPACITY, "Frames/s this node advertises (its rendezvous weight)", m.node_capacity.clone());
        r.register(
            CAMERA_MOVES,
            "Cameras this node started or stopped because ownership moved, per reason (join, node_lost, drain, \
             rebalance)",
            m.camera_moves.clone(),
        );
        r.register(
            POSTGRES_PARTITIONS,
            "Daily partitions of events and analytics_1m created and dropped by this node, per table and action",
            m.partitions.clone(),
        );
        r.register(
            RETENTION_DELETED,
            "Rows deleted one by one by retention: incident events past retention.incidents_days, old rows of \
             default partitions",
            m.retention_deleted.clone(),
        );
        r.register(PICTURE_VIEWERS, "Live viewers of the camera (live.mjpeg)", m.picture_viewers.clone());
        r.register(
            PICTURE_VIEWERS_REFUSED,
            "Live viewers refused: the camera had pictures.max_viewers_per_camera already",
            m.picture_viewers_refused.clone(),
        );
        r.register(
            PICTURES_ENCODED,
            "Pictures drawn and encoded (snapshots and live-view parts; one shared by viewers counts once)",
            m.pictures_encoded.clone(),
        );
        r.register(
            PICTURE_ENCODE_SECONDS,
            "Time to draw and encode one picture, seconds",
            m.picture_encode_seconds.clone(),
        );
        r.register(PICTURE_PARTS_SENT, "Live-view parts sent to viewers, per camera", m.picture_parts_sent.clone());
        r.register(
            DEVICE_MEMORY,
            "Used share of the inference device's memory, percent (host memory for the CPU)",
            m.device_memory.clone(),
        );
        r.register(
            MODEL_ACCURACY,
            "Accuracy of the live model (0..1). evidence=\"proxy\": label-free recall proxy, over the tracks ended \
             in the last 5 minutes the share of frames with a detection of at least tracker.confident_score (absent \
             while too few tracks ended); evidence=\"reference\": agreement F1 of a canary with the version it would \
             replace, run in shadow on the same frames",
            m.model_accuracy.clone(),
        );
        r.register(
            MODEL_DRIFT,
            "Drift of what the model sees on a camera: KL divergence (nats) of the last model.drift.window_frames \
             frames from the camera's reference, per feature (class, confidence, box_size, count); absent while \
             the reference or the first window is captured",
            m.model_drift.clone(),
        );
        r.register(
            MODEL_AGREEMENT,
            "Agreement of the candidate model with its reference on the same frames (detections matched at IoU >= \
             0.5): precision, recall and F1 per class",
            m.model_agreement.clone(),
        );
        m
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn camera(&self, camera: &str) -> CameraLabels {
        CameraLabels { camera: camera.to_string() }
    }

    /// Forgets a removed camera's series so labels stay bounded by the live cameras.
    pub fn remove_camera(&self, camera: &str) {
        let labels = self.camera(camera);
        for family in [
            &self.frames_decoded,
            &self.frames_processed,
            &self.frames_dropped,
            &self.events,
            &self.camera_reconnects,
            &self.picture_viewers_refused,
            &self.picture_parts_sent,
        ] {
            family.remove(&labels);
        }
        self.camera_up.remove(&labels);
        self.picture_viewers.remove(&labels);
        let breaker = BreakerLabels { breaker: camera_breaker(camera) };
        self.breaker_state.remove(&breaker);
        self.breaker_opens.remove(&breaker);
    }

    /// Sets `ml_model_drift_kl` of a camera's four features.
    pub fn set_drift(&self, camera: &str, model: &str, kl: &crate::detector::drift::FeatureValues) {
        for feature in crate::detector::drift::Feature::ALL {
            self.model_drift.get_or_create(&drift_labels(camera, model, feature)).set(kl.get(feature));
        }
    }

    /// Removes `ml_model_drift_kl` of a camera: it was removed, or its reference is captured again.
    pub fn remove_drift(&self, camera: &str, model: &str) {
        for feature in crate::detector::drift::Feature::ALL {
            self.model_drift.remove(&drift_labels(camera, model, feature));
        }
    }

    /// A circuit breaker whose every transition is a log line and a metric (`breaker` label = `name`).
    pub fn breaker(
        &self,
        name: &str,
        config: &crate::supervision::BreakerConfig,
    ) -> std::sync::Arc<crate::supervision::CircuitBreaker> {
        use crate::supervision::{BreakerState, CircuitBreaker, SystemClock, Transition};
        let labels = BreakerLabels { breaker: name.to_string() };
        let state = self.breaker_state.get_or_create(&labels).clone();
        let opens = self.breaker_opens.get_or_create(&labels).clone();
        state.set(0);
        let observer = move |name: &str, transition: Transition| {
            state.set(transition.to.as_metric());
            if transition.to == BreakerState::Open {
                opens.inc();
                tracing::warn!(breaker = name, %transition, "circuit breaker opened");
            } else {
                tracing::info!(breaker = name, %transition, "circuit breaker changed state");
            }
        };
        std::sync::Arc::new(
            CircuitBreaker::new(name, config.clone(), std::sync::Arc::new(SystemClock))
                .with_observer(std::sync::Arc::new(observer)),
        )
    }

    /// Records a supervised child's state (`its_supervisor_child_state`, `its_supervisor_restarts`).
    pub fn observe_child(&self, view: &crate::supervision::ChildView) {
        let labels = ChildLabels { child: view.name.clone() };
        let state = match view.state {
            crate::supervision::ChildState::Running => 0,
            crate::supervision::ChildState::BackingOff => 1,
            crate::supervision::ChildState::Failed => 2,
            crate::supervision::ChildState::Escalated => 3,
        };
        self.child_state.get_or_create(&labels).set(state);
        let restarts = self.child_restarts.get_or_create(&labels);
        restarts.inc_by(view.restarts.saturating_sub(restarts.get()));
    }

    /// Adds the continuity of tracks that just ended (`ml_model_accuracy` follows at the next scrape).
    pub fn record_continuity(&self, model: &str, version: u32, continuity: Continuity) {
        self.model_continuity.record(model, version, continuity, Instant::now());
    }

    /// The continuity proxy of one version's tracks, when enough ended in the window.
    pub fn version_accuracy_proxy(&self, version: u32) -> Option<f64> {
        self.model_continuity.version_ratio(version, Instant::now())
    }

    /// Sets `ml_model_accuracy` from the tracks of the last window, or removes it when too few
    /// ended then (idle roads, cameras down): a stale value would neither fire nor clear an alert.
    pub fn refresh_model_accuracy(&self) {
        self.model_accuracy.clear();
        if let Some((model, ratio)) = self.model_continuity.ratio(Instant::now()) {
            let labels = ModelAccuracyLabels { model, evidence: "proxy".into() };
            self.model_accuracy.get_or_create(&labels).set(ratio);
        }
        if let Some((model, f1)) = self.model_accuracy_reference.lock().clone() {
            self.model_accuracy.get_or_create(&ModelAccuracyLabels { model, evidence: "reference".into() }).set(f1);
        }
    }
}

fn drift_labels(camera: &str, model: &str, feature: crate::detector::drift::Feature) -> DriftLabels {
    DriftLabels { camera: camera.to_string(), model: model.to_string(), feature: feature.as_str().to_string() }
}

/// The breaker name of a camera's stream.
pub fn camera_breaker(camera: &str) -> String {
    format!("camera:{camera}")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The detection continuity (`tracker::Continuity`) of the tracks of all cameras that ended in
/// the last `WINDOW`, kept as running sums, so the gauge follows the model's recent behaviour.
#[derive(Debug, Default)]
pub struct ModelContinuity {
    window: parking_lot::Mutex<ContinuityWindow>,
    /// The same, per model version (a canary's tracks apart from the rest).
    by_version: parking_lot::Mutex<std::collections::HashMap<u32, ContinuityWindow>>,
}

#[derive(Debug, Default)]
struct ContinuityWindow {
    model: String,
    ended: VecDeque<(Instant, Continuity)>,
    sum: Continuity,
}

impl ContinuityWindow {
    fn add(&mut self, continuity: Continuity, now: Instant) {
        self.forget_before(now.checked_sub(ModelContinuity::WINDOW).unwrap_or(now));
        self.ended.push_back((now, continuity));
        self.sum.detected += continuity.detected;
        self.sum.spanned += continuity.spanned;
    }

    fn forget_before(&mut self, cutoff: Instant) {
        while let Some((at, c)) = self.ended.front().copied() {
            if at >= cutoff {
                break;
            }
            self.ended.pop_front();
            self.sum.detected -= c.detected;
            self.sum.spanned -= c.spanned;
        }
    }
}

impl ModelContinuity {
    pub const WINDOW: Duration = Duration::from_secs(300);
    /// Tracked frames the window must hold for a ratio at all.
    pub const MIN_FRAMES: u64 = 200;

    pub fn record(&self, model: &str, version: u32, continuity: Continuity, now: Instant) {
        if continuity.spanned == 0 {
            return;
        }
        let mut window = self.window.lock();
        if window.model != model {
            window.model = model.to_string();
        }
        window.add(continuity, now);
        self.by_version.lock().entry(version).or_default().add(continuity, now);
    }

    /// One version's ratio over the window ending `now`, once it holds `MIN_FRAMES`.
    pub fn version_ratio(&self, version: u32, now: Instant) -> Option<f64> {
        let mut versions = self.by_version.lock();
        let window = versions.get_mut(&version)?;
        window.forget_before(now.checked_sub(Self::WINDOW).unwrap_or(now));
        let sum = window.sum;
        (sum.spanned >= Self::MIN_FRAMES).then(|| sum.detected as f64 / sum.spanned as f64)
    }

    /// The model and its ratio over the window ending `now`, once it holds `MIN_FRAMES`.
    pub fn ratio(&self, now: Instant) -> Option<(String, f64)> {
        let mut window = self.window.lock();
        window.forget_before(now.checked_sub(Self::WINDOW).unwrap_or(now));
        let sum = window.sum;
        (sum.spanned >= Self::MIN_FRAMES).then(|| (window.model.clone(), sum.detected as f64 / sum.spanned as f64))
    }
}

/// Total time and count of one pipeline stage, for `bench`'s per-stage breakdown.
#[derive(Debug, Default)]
pub struct StageClock {
    nanos: std::sync::atomic::AtomicU64,
    count: std::sync::atomic::AtomicU64,
}

impl StageClock {
    pub fn record(&self, elapsed: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.nanos.fetch_add(elapsed.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Mean milliseconds per record, and the number of records.
    pub fn mean_ms(&self) -> (f64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let count = self.count.load(Relaxed);
        let mean = if count == 0 { 0.0 } else { self.nanos.load(Relaxed) as f64 / count as f64 / 1e6 };
        (mean, count)
    }
}

/// Per-stage clocks: decode (decode + sample + letterbox, per kept frame), inference (per batch:
/// model + output decode + NMS), tracking (per frame: tracker + lines + events), and each frame's
/// latency from capture to tracked.
#[derive(Debug, Default)]
pub struct Stages {
    pub decode: StageClock,
    pub inference: StageClock,
    pub tracking: StageClock,
    pub frame_latency: LatencySamples,
}

/// Latency samples in milliseconds for `bench`'s percentiles; keeps the first `CAP` only, so a
/// long-running service holds a bounded amount.
#[derive(Debug, Default)]
pub struct LatencySamples {
    samples: parking_lot::Mutex<Vec<f32>>,
}

impl LatencySamples {
    const CAP: usize = 100_000;

    pub fn record(&self, elapsed: std::time::Duration) {
        let mut samples = self.samples.lock();
        if samples.len() < Self::CAP {
            samples.push(elapsed.as_secs_f32() * 1e3);
        }
    }

    /// The samples so far, milliseconds, sorted; the store starts empty again (`bench --cameras`
    /// leaves its warm-up out this way).
    pub fn take_sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = std::mem::take(&mut *self.samples.lock()).into_iter().map(f64::from).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Sorted samples, milliseconds.
    pub fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.samples.lock().iter().map(|&x| x as f64).collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

#[cfg(test)]
mod model_continuity_tests {
    use super::*;

    fn ended(detected: u64, spanned: u64) -> Continuity {
        Continuity { detected, spanned }
    }

    #[test]
    fn the_ratio_covers_the_last_window_and_needs_enough_frames() {
        let window = ModelContinuity::default();
        let t0 = Instant::now();
        assert_eq!(window.ratio(t0), None);
        window.record("yolox_nano", 1, ended(90, 100), t0);
        assert_eq!(window.ratio(t0), None, "100 frames are too few");
        window.record("yolox_nano", 1, ended(60, 100), t0 + Duration::from_secs(10));
        assert_eq!(window.ratio(t0 + Duration::from_secs(10)), Some(("yolox_nano".to_string(), 0.75)));
        assert_eq!(window.version_ratio(1, t0 + Duration::from_secs(10)), Some(0.75));
        assert_eq!(window.version_ratio(2, t0 + Duration::from_secs(10)), None, "no track of version 2 ended");
        // The first tracks leave the window; the rest alone are too few again.
        let later = t0 + ModelContinuity::WINDOW + Duration::from_secs(5);
        assert_eq!(window.ratio(later), None);
        window.record("yolox_nano", 1, ended(200, 200), later);
        assert_eq!(window.ratio(later), Some(("yolox_nano".to_string(), 260.0 / 300.0)));
        // Nothing ends for a whole window: no value rather than a stale one.
        assert_eq!(window.ratio(later + ModelContinuity::WINDOW + Duration::from_secs(1)), None);
    }

    #[test]
    fn the_gauge_is_removed_when_the_window_empties() {
        let metrics = Metrics::new();
        metrics.record_continuity("m", 1, ended(190, 200));
        metrics.refresh_model_accuracy();
        let text = metrics.encode();
        assert!(text.contains("ml_model_accuracy{model=\"m\",evidence=\"proxy\"} 0.95"), "{text}");
        *metrics.model_continuity.window.lock() = ContinuityWindow::default();
        metrics.refresh_model_accuracy();
        assert!(!metrics.encode().contains("ml_model_accuracy{"));
    }
}
