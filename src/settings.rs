//! Typed service settings: `configs/default.toml` < `--config FILE` < `ITS__SECTION__KEY` env vars.
//!
//! Every section denies unknown keys, and `validate` returns every problem at once so an operator
//! fixes a config in one round instead of one error per restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::access::{AuthConfig, RateLimitConfig};
use crate::analytics::config::AnalyticsConfig;
use crate::analytics::tracker::TrackerConfig;
use crate::camera_spec::{MediaDir, SourcePolicy};
pub use crate::detector::config::{DeviceKind, ModelFamily, ModelSettings};
pub use crate::detector::simulated::SimulatorSettings;
use crate::overflow::WhenFull;
use crate::telemetry::TracingConfig;

/// The defaults, compiled in so the binary runs without the configs folder.
pub const DEFAULT_TOML: &str = include_str!("../configs/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub redis: RedisSettings,
    pub postgres: PostgresSettings,
    /// How long events, minute rows and incidents are kept (partitions dropped past it).
    pub retention: RetentionSettings,
    pub model: ModelSettings,
    pub device: DeviceSettings,
    pub batching: BatchingSettings,
    pub cameras: CameraDefaults,
    pub connector: ConnectorSettings,
    pub tracker: TrackerConfig,
    /// Thresholds of the measures and incidents (`docs/ANALYTICS.md`).
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    pub breakers: BreakerSettings,
    /// Bearer tokens and roles of the control API.
    pub auth: AuthConfig,
    /// Requests per client of the control API.
    pub rate_limit: RateLimitConfig,
    /// OpenTelemetry trace export.
    pub tracing: TracingConfig,
    /// Restart policy of supervised children (connector shards, inference threads).
    pub supervisor: SupervisorSettings,
    /// The durable store every event passes through before delivery.
    pub outbox: OutboxSettings,
    /// The publisher's in-memory queues and batches around the outbox.
    pub publisher: PublisherSettings,
    /// This node's identity and capacity in the cluster.
    pub node: NodeSettings,
    /// Membership, leases and hand-over timing.
    pub cluster: ClusterSettings,
    /// Faults injected on purpose, for the fault tests; all off by default.
    #[serde(default)]
    pub faults: FaultSettings,
    /// Synthetic cameras and detector for load tests (`docs/PERFORMANCE.md`); off by default.
    #[serde(default)]
    pub simulator: SimulatorSettings,
    /// Snapshots and live views of cameras.
    pub pictures: PictureSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Stable id; empty: the host name up to its first dot (`NodeSettings::resolved_id`).
    pub id: String,
    /// Frames/s the node can analyse: its rendezvous weight and budget.
    pub capacity_fps: f64,
    /// The URL other nodes reach this node's API at; empty: `http://` + `http.bind`.
    pub advertise_url: String,
}

impl NodeSettings {
    /// The configured id, or the host name up to its first dot.
    pub fn resolved_id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        host.trim().split('.').next().unwrap_or_default().to_string()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    pub heartbeat_ms: u64,
    pub ttl_ms: u64,
    pub settle_ms: u64,
    pub drain_timeout_ms: u64,
}

impl ClusterSettings {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// How long after its last successful renewal a node stops its cameras: two heartbeats
    /// before its leases can expire.
    pub fn stop_after(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.saturating_sub(2 * self.heartbeat_ms))
    }

    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !(100..=60_000).contains(&self.heartbeat_ms) {
            errors.push("cluster.heartbeat_ms must be in 100..=60000".into());
        }
        if self.ttl_ms < 3 * self.heartbeat_ms || self.ttl_ms > 600_000 {
            errors.push(format!(
                "cluster.ttl_ms ({}) must be at least 3 heartbeats (3 x cluster.heartbeat_ms = {}) and at most 600000",
                self.ttl_ms,
                3 * self.heartbeat_ms
            ));
        }
        if self.settle_ms > 600_000 {
            errors.push("cluster.settle_ms must be at most 600000".into());
        }
        if !(1_000..=600_000).contains(&self.drain_timeout_ms) {
            errors.push("cluster.drain_timeout_ms must be in 1000..=600000".into());
        }
        errors
    }
}

/// How supervisors restart their children (`supervision::RestartPolicy`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSettings {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Progress this long without a failure resets the backoff.
    pub healthy_after_s: u64,
    /// At most this many restarts of one child within `within_s`; one more failure escalates:
    /// the process exits non-zero so its orchestrator restarts it.
    pub max_restarts: u32,
    pub within_s: u64,
    /// Fraction of each delay that is randomised.
    pub jitter: f64,
    /// A child that reports no progress for this long is frozen, and restarted.
    pub heartbeat_timeout_ms: u64,
}

impl SupervisorSettings {
    pub fn policy(&self) -> crate::supervision::RestartPolicy {
        crate::supervision::RestartPolicy {
            initial_backoff: Duration::from_millis(self.initial_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            healthy_after: Duration::from_secs(self.healthy_after_s),
            max_restarts: self.max_restarts,
            within: Duration::from_secs(self.within_s),
            jitter: self.jitter,
        }
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// The redb file; its directory is created. One process per file.
    pub path: PathBuf,
    /// Events kept undelivered at most.
    pub max_events: u64,
    /// When full: `reject` new events (counted in its_events_dropped_total) or `drop_oldest`
    /// undelivered ones (counted too).
    pub when_full: WhenFull,
}

/// The publisher's queues (`sinks::publisher`). Each refuses a new item when full
/// (`WhenFull::Reject`): `Wait` would hold up a connector or the commit of events behind an
/// outage, and an item already queued is not dropped for a newer one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherSettings {
    /// Items the connectors handed over (events, minute-row batches, camera states, system events)
    /// and the outbox has not committed yet. When full, an event or a minute-row batch is refused
    /// and counted in its_events_dropped_total, a state is refused silently (a newer one follows).
    /// Committed events wait for delivery in memory up to the same number; beyond it they are
    /// read back from the outbox (during an outage), losing only their latency sample and trace.
    pub intake_capacity: usize,
    /// Events committed to the outbox in one transaction (one fsync) and delivered to Redis and
    /// PostgreSQL in one call each.
    pub batch_size: usize,
    /// Items waiting for one store apart from the events, per store: minute-row batches for
    /// PostgreSQL; camera states and system events for Redis. When one is full, a minute-row
    /// batch is refused and counted in its_events_dropped_total, a state or system event is not
    /// counted (a newer state follows; a system event is also in the log and the metrics).
    pub row_queue_capacity: usize,
}

/// Faults made on purpose so the fault tests can prove recovery; each fires once unless said
/// otherwise. Never set in production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// A connector shard panics while handling the frame with this sequence number (0: never).
    #[serde(default)]
    pub shard_panic_at_frame: u64,
    /// The model call of this inference batch panics (0: never).
    #[serde(default)]
    pub inference_panic_at_batch: u64,
    /// Every model call from `inference_panic_at_batch` on panics (a crash loop).
    #[serde(default)]
    pub inference_panic_repeats: bool,
    /// A camera's decode thread panics before it hands on the frame with this sequence number (0:
    /// never), once per camera.
    #[serde(default)]
    pub decode_panic_at_frame: u64,
    /// Every frame from `decode_panic_at_frame` on panics (a crash loop: the camera fails).
    #[serde(default)]
    pub decode_panic_repeats: bool,
    /// From this inference batch on (0: never), model calls with more than one frame fail with
    /// a device out-of-memory error, `oom_times` times.
    #[serde(default)]
    pub oom_at_batch: u64,
    #[serde(default)]
    pub oom_times: u32,
}

/// The circuit breakers around Redis and PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failed calls that open a breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before it lets one trial through.
    pub open_for_ms: u64,
    /// Successful trials that close a half-open breaker.
    pub half_open_successes: u32,
}

impl BreakerSettings {
    pub fn config(&self) -> crate::supervision::BreakerConfig {
        crate::supervision::BreakerConfig {
            failure_threshold: self.failure_threshold,
            open_for: Duration::from_millis(self.open_for_ms),
            half_open_successes: self.half_open_successes,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address the control API, health and metrics listen on.
    pub bind: String,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// A request must be received and answered within this time (else 408; a streamed response
    /// only has to start in it), and idle keep-alive connections are closed after it.
    pub request_timeout_ms: u64,
    /// Frames of the live event stream (SSE) a client may fall behind. A frame that finds its
    /// buffer full is refused (`WhenFull::Reject`) and the client disconnected there, rather than
    /// sent a stream with a gap; it reconnects and catches up from `GET /api/v1/events`.
    pub sse_buffer: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `single`: one server at `url` (a bb8 pool); `cluster`: a Redis Cluster found from `nodes`.
    pub mode: RedisMode,
    /// The server in single mode (ignored in cluster mode).
    pub url: String,
    /// Seed nodes in cluster mode (`redis://host:port` or `rediss://`, all the same scheme and
    /// credentials); the client learns the rest of the cluster from them. Empty in single mode.
    pub nodes: Vec<String>,
    /// Replicas that must acknowledge each events batch (`WAIT`, in the script's pipeline) before
    /// it counts as delivered; fewer acks fail the call, which the publisher retries from its
    /// outbox. Unset: 0 in single mode, 1 in cluster mode.
    #[serde(default)]
    pub wait_replicas: Option<u32>,
    /// How long `WAIT` waits for those acknowledgements.
    pub wait_timeout_ms: u64,
    /// PEM file of the CA certificates that `rediss://` servers are verified against; empty:
    /// the platform's roots.
    pub ca_file: String,
    /// Prefix of every key and channel, so several deployments (or tests) share one Redis.
    pub key_prefix: String,
    /// Approximate cap on the events stream (XADD MAXLEN ~).
    pub stream_max_len: u64,
    /// How long an event id is remembered so it enters the stream once (retries, replays).
    pub dedup_ttl_s: u64,
    pub pool_size: u32,
    /// How long a call waits for a pooled connection before it fails (and is retried by its
    /// caller, through the circuit breaker).
    pub connect_timeout_ms: u64,
}

/// How the service reaches Redis (`redis.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server (`redis.url`).
    #[default]
    Single,
    /// A Redis Cluster (`redis.nodes` as seeds).
    Cluster,
}

impl RedisSettings {
    /// The servers named in the settings: `url` in single mode, the seeds in cluster mode.
    pub fn server_urls(&self) -> Vec<&str> {
        match self.mode {
            RedisMode::Single => vec![self.url.as_str()],
            RedisMode::Cluster => self.nodes.iter().map(String::as_str).collect(),
        }
    }

    /// `wait_replicas`, or its default for the mode.
    pub fn replicas_to_wait_for(&self) -> u32 {
        self.wait_replicas.unwrap_or(match self.mode {
            RedisMode::Single => 0,
            RedisMode::Cluster => 1,
        })
    }

    fn validate(&self, errors: &mut Vec<String>) {
        match self.mode {
            RedisMode::Single => {
                check_url(errors, "redis.url", &self.url, &["redis", "rediss"]);
                if !self.nodes.is_empty() {
                    errors.push("redis.nodes is for redis.mode = \"cluster\"; single mode uses redis.url".into());
                }
            }
            RedisMode::Cluster => {
                if self.nodes.is_empty() {
                    errors.push("redis.nodes must name at least one seed node in redis.mode = \"cluster\"".into());
                }
                for (i, node) in self.nodes.iter().enumerate() {
                    check_url(errors, &format!("redis.nodes[{i}]"), node, &["redis", "rediss"]);
                }
                let schemes: std::collections::BTreeSet<_> =
                    self.nodes.iter().filter_map(|n| url::Url::parse(n).ok()).map(|u| u.scheme().to_string()).collect();
                if schemes.len() > 1 {
                    errors.push("redis.nodes must all have the same scheme (all redis:// or all rediss://)".into());
                }
            }
        }
        if self.key_prefix.contains(['{', '}']) {
            errors.push("redis.key_prefix must not contain { or } (the keys' cluster hash tags use them)".into());
        }
        if self.wait_replicas.is_some_and(|n| n > 16) {
            errors.push("redis.wait_replicas must be in 0..=16".into());
        }
        if !(10..=60_000).contains(&self.wait_timeout_ms) {
            errors.push("redis.wait_timeout_ms must be in 10..=60000".into());
        }
        if !self.ca_file.is_empty() {
            if !Path::new(&self.ca_file).is_file() {
                errors.push(format!("redis.ca_file {:?} is not a readable file", self.ca_file));
            }
            let tls = self.server_urls().iter().all(|u| url::Url::parse(u).is_ok_and(|u| u.scheme() == "rediss"));
            if !tls {
                errors.push("redis.ca_file is set but the Redis URLs are not rediss:// (TLS)".into());
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// The primary; `sslmode=verify-full` in its query turns on verified TLS (`split_sslmode`).
    pub url: String,
    /// A read replica for the HTTP API's history reads; empty: none (reads go to `url`).
    pub read_url: String,
    /// PEM trust roots for TLS to PostgreSQL; empty: the platform's store.
    pub ca_file: String,
    pub pool_size: u32,
    /// How long a call waits for a pooled connection before it fails (and is retried by its
    /// caller, through the circuit breaker).
    pub connect_timeout_ms: u64,
}

impl PostgresSettings {
    /// The read replica's URL, when one is set.
    pub fn read_url(&self) -> Option<&str> {
        Some(self.read_url.as_str()).filter(|u| !u.is_empty())
    }

    /// The CA file, when one is set.
    pub fn ca_file(&self) -> Option<&Path> {
        (!self.ca_file.is_empty()).then(|| Path::new(&self.ca_file))
    }
}

/// What a PostgreSQL URL's `sslmode` asks for: plain TCP, or TLS with the server's chain and name
/// verified. Nothing in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTlsMode {
    Disable,
    VerifyFull,
}

/// Splits `sslmode` off a PostgreSQL URL (tokio-postgres knows disable/prefer/require only): the
/// URL without it, and the mode (absent: `Disable`, today's plain TCP). Modes that may fall back to
/// plain text or do not verify the server are refused. Messages never echo the URL (it may hold a
/// password).
pub fn split_sslmode(key: &str, url: &str) -> Result<(String, PgTlsMode), String> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), PgTlsMode::Disable)) };
    let mut mode = PgTlsMode::Disable;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("sslmode=") else {
            rest.push(pair);
            continue;
        };
        mode = match value {
            "disable" => PgTlsMode::Disable,
            "verify-full" => PgTlsMode::VerifyFull,
            "prefer" | "allow" | "require" | "verify-ca" => {
                return Err(format!(
                    "{key} has sslmode={value}, which may fall back to plain text or does not check the server's \
                     name: use sslmode=verify-full (or disable)"
                ))
            }
            _ => return Err(format!("{key} has an unknown sslmode: use sslmode=verify-full (or disable)")),
        };
    }
    let rest = rest.join("&");
    Ok((if rest.is_empty() { base.to_string() } else { format!("{base}?{rest}") }, mode))
}

/// The certificates of a PEM file (at least one), for the trust roots of TLS connections.
pub fn read_pem_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// How long history is kept in PostgreSQL, in days; 0 keeps it for ever (the default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Events (line crossings and all): whole daily partitions of `events` older than this go.
    pub events_days: u32,
    /// Per-minute aggregate rows: whole daily partitions of `analytics_1m` older than this go.
    pub minute_rows_days: u32,
    /// Incident events: kept this long, also past `events_days` (then in the default partition).
    pub incidents_days: u32,
}

impl RetentionSettings {
    /// A hundred years: anything longer is a typo.
    pub const MAX_DAYS: u32 = 36_500;

    fn validate(&self) -> Vec<String> {
        [("events_days", self.events_days), ("minute_rows_days", self.minute_rows_days)]
            .into_iter()
            .chain([("incidents_days", self.incidents_days)])
            .filter(|(_, days)| *days > Self::MAX_DAYS)
            .map(|(key, _)| format!("retention.{key} must be in 0..={} (0 keeps for ever)", Self::MAX_DAYS))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSettings {
    pub kind: DeviceKind,
    /// Intra-op threads of each CPU inference worker (ONNX Runtime or libtorch); 0 = number of cores.
    pub cpu_threads: usize,
    /// Inference workers on the CPU, each a device of its own (`cpu:0`, `cpu:1`, ...) with its
    /// thread, queue and batches; cameras are spread over them. Workers x threads should not pass
    /// the cores.
    pub cpu_workers: usize,
    /// The CPU device's memory budget in MiB (the process' resident memory counts against it);
    /// the batch is sized to what is left. 0 = no budget. CUDA devices use their free memory.
    pub cpu_memory_budget_mb: u64,
}

impl DeviceSettings {
    /// Threads of one CPU inference worker: as configured, else the cores shared by the workers.
    pub fn cpu_threads_per_worker(&self) -> usize {
        if self.cpu_threads > 0 {
            self.cpu_threads
        } else {
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            (cores / self.cpu_workers.max(1)).max(1)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSettings {
    /// Largest batch sent to the model on a CUDA device.
    pub max_batch: usize,
    /// Largest batch on a CPU inference worker: a CPU runs a batch frame after frame, so a large
    /// one adds latency and no throughput.
    pub cpu_max_batch: usize,
    /// How long the first frame of a batch may wait for others.
    pub max_wait_ms: u64,
    /// Frames queued per camera before the oldest is dropped (live cameras).
    pub queue_per_camera: usize,
    /// A frame older than this when its batch forms is skipped; 0 = never skip.
    pub frame_deadline_ms: u64,
    /// Device memory one frame of a batch needs (input plus activations), MiB: the batch is
    /// capped at free memory / this.
    pub frame_memory_mb: u64,
    /// After an out-of-memory halving, this many good batches in a row before the batch doubles
    /// again (if memory allows).
    pub grow_after_batches: u32,
}

impl BatchingSettings {
    /// The batch limit of a device of this kind.
    pub fn max_batch_on(&self, device: tch::Device) -> usize {
        if device == tch::Device::Cpu {
            self.cpu_max_batch
        } else {
            self.max_batch
        }
    }
}

impl BatchingSettings {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    pub fn frame_deadline(&self) -> Option<Duration> {
        (self.frame_deadline_ms > 0).then(|| Duration::from_millis(self.frame_deadline_ms))
    }
}

/// `[pictures]`: the snapshot and live view of cameras (`crate::picture`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PictureSettings {
    /// Most parts per second of a live view (a client may ask for fewer).
    pub live_fps: u32,
    /// Concurrent live viewers of one camera; one more is answered 429.
    pub max_viewers_per_camera: usize,
    /// Pictures encoded at once, for all cameras and viewers together.
    pub encode_threads: usize,
    /// JPEG quality, 1 (smallest) to 100 (best).
    pub jpeg_quality: u8,
}

impl Default for PictureSettings {
    fn default() -> Self {
        Self { live_fps: 5, max_viewers_per_camera: 5, encode_threads: 1, jpeg_quality: 80 }
    }
}

impl PictureSettings {
    /// Most frames per second a live view may ask for.
    pub const MAX_LIVE_FPS: u32 = 30;
    pub const MAX_ENCODE_THREADS: usize = 16;

    /// Every problem with these settings, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !(1..=Self::MAX_LIVE_FPS).contains(&self.live_fps) {
            errors.push(format!("pictures.live_fps must be in 1..={}", Self::MAX_LIVE_FPS));
        }
        if self.max_viewers_per_camera == 0 {
            errors.push("pictures.max_viewers_per_camera must be at least 1".into());
        }
        if !(1..=Self::MAX_ENCODE_THREADS).contains(&self.encode_threads) {
            errors.push(format!("pictures.encode_threads must be in 1..={}", Self::MAX_ENCODE_THREADS));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            errors.push("pictures.jpeg_quality must be in 1..=100".into());
        }
        errors
    }
}

/// Most FFmpeg decode threads one camera may use (`cameras.decode_threads`).
pub const MAX_DECODE_THREADS: u32 = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraDefaults {
    /// Sampling rate of a camera registered without `fps`.
    pub default_fps: f64,
    /// First reconnect delay; doubles up to `reconnect_max_ms`.
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// Network read timeout of a stream, after which it counts as failed and reconnects.
    pub read_timeout_ms: u64,
    /// Network schemes a camera URL may use: any of rtsp, rtsps, http, https.
    pub allowed_schemes: Vec<String>,
    /// File cameras (`file://`) only under this directory; empty refuses every local file.
    pub media_dir: String,
    /// FFmpeg's decode threads per camera: 1 (one core per camera, the default), up to 16, or 0
    /// for FFmpeg's own choice (one per core).
    pub decode_threads: u32,
    /// Hardware decoding through FFmpeg's hwaccel: `none`, `auto` (VAAPI, then CUDA/NVDEC, else
    /// software), `vaapi` or `cuda` (software when the device cannot be opened).
    pub hwaccel: Hwaccel,
}

/// FFmpeg hardware decoding (`cameras.hwaccel`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Hwaccel {
    /// Software decoding only.
    #[default]
    None,
    /// The first hardware decoder that opens (VAAPI, then CUDA), else software.
    Auto,
    /// VAAPI on `/dev/dri/renderD128`; software when it cannot be opened.
    Vaapi,
    /// NVDEC through FFmpeg's CUDA hwaccel; software when it cannot be opened.
    Cuda,
}

impl Hwaccel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Auto => "auto",
            Self::Vaapi => "vaapi",
            Self::Cuda => "cuda",
        }
    }
}

impl TryFrom<String> for Hwaccel {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse().map_err(|e| format!("cameras.{e}"))
    }
}

impl std::str::FromStr for Hwaccel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "auto" => Ok(Self::Auto),
            "vaapi" => Ok(Self::Vaapi),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!("hwaccel {other:?} is not one of none, auto, vaapi, cuda")),
        }
    }
}

impl CameraDefaults {
    /// The URL policy of camera registration. Fails when the media directory does not exist.
    pub fn source_policy(&self) -> Result<SourcePolicy, String> {
        let media_dir = match self.media_dir.as_str() {
            "" => None,
            dir => Some(MediaDir::new(Path::new(dir)).map_err(|e| format!("cameras.media_dir {dir:?}: {e}"))?),
        };
        Ok(SourcePolicy { network_schemes: self.allowed_schemes.clone(), media_dir, simulated: false })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSettings {
    /// Number of ConnectorActor shards; each camera is pinned to one by rendezvous hashing.
    pub shards: usize,
    /// Mailbox capacity of one shard.
    pub mailbox: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Settings {
    /// Defaults, then the optional file, then `ITS__SECTION__KEY` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_with_env(file, None)
    }

    /// As `load`, with the variables taken from `env` instead of the process environment.
    pub fn load_with_env(file: Option<&Path>, env: Option<HashMap<String, String>>) -> Result<Self, SettingsError> {
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("ITS")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("cameras.allowed_schemes")
                    .with_list_parse_key("redis.nodes")
                    .source(env),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every problem with the settings, reported together.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let mut errors = Vec::new();
        if self.http.bind.parse::<SocketAddr>().is_err() {
            errors.push(format!("http.bind {:?} is not an address like 127.0.0.1:8080", self.http.bind));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            errors.push("http.max_body_bytes must be in 1024..=67108864".into());
        }
        if !(100..=600_000).contains(&self.http.request_timeout_ms) {
            errors.push("http.request_timeout_ms must be in 100..=600000".into());
        }
        if !(1..=1_048_576).contains(&self.http.sse_buffer) {
            errors.push("http.sse_buffer must be in 1..=1048576".into());
        }
        self.redis.validate(&mut errors);
        let mut verified_tls = false;
        for (key, url) in
            [("postgres.url", Some(self.postgres.url.as_str())), ("postgres.read_url", self.postgres.read_url())]
        {
            let Some(url) = url else { continue };
            check_url(&mut errors, key, url, &["postgres", "postgresql"]);
            match split_sslmode(key, url) {
                Ok((_, mode)) => verified_tls |= mode == PgTlsMode::VerifyFull,
                Err(e) => errors.push(e),
            }
        }
        if let Some(ca_file) = self.postgres.ca_file() {
            if let Err(e) = read_pem_certs(ca_file) {
                errors.push(format!("postgres.ca_file {e}"));
            } else if !verified_tls {
                errors.push(
                    "postgres.ca_file is set but neither postgres.url nor postgres.read_url has sslmode=verify-full"
                        .into(),
                );
            }
        }
        errors.extend(self.retention.validate());
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(char::is_whitespace) {
            errors.push("redis.key_prefix must be non-empty without spaces".into());
        }
        if !(60..=30 * 86_400).contains(&self.redis.dedup_ttl_s) {
            errors.push("redis.dedup_ttl_s must be in 60..=2592000".into());
        }
        if self.redis.pool_size == 0 {
            errors.push("redis.pool_size must be at least 1".into());
        }
        if self.postgres.pool_size == 0 {
            errors.push("postgres.pool_size must be at least 1".into());
        }
        if !(100..=60_000).contains(&self.redis.connect_timeout_ms)
            || !(100..=60_000).contains(&self.postgres.connect_timeout_ms)
        {
            errors.push("redis.connect_timeout_ms and postgres.connect_timeout_ms must be in 100..=60000".into());
        }
        if !(32..=2048).contains(&self.model.input_size) || !self.model.input_size.is_multiple_of(32) {
            errors.push("model.input_size must be a multiple of 32 in 32..=2048".into());
        }
        if !(0.0..=1.0).contains(&self.model.score_threshold) {
            errors.push("model.score_threshold must be in 0..=1".into());
        }
        if !(0.0..=1.0).contains(&self.model.nms_iou) {
            errors.push("model.nms_iou must be in 0..=1".into());
        }
        if !(1..=256).contains(&self.batching.max_batch) {
            errors.push("batching.max_batch must be in 1..=256".into());
        }
        if !(1..=256).contains(&self.batching.cpu_max_batch) {
            errors.push("batching.cpu_max_batch must be in 1..=256".into());
        }
        if self.batching.max_wait_ms > 10_000 {
            errors.push("batching.max_wait_ms must be at most 10000".into());
        }
        if self.batching.queue_per_camera == 0 {
            errors.push("batching.queue_per_camera must be at least 1".into());
        }
        if !(self.cameras.default_fps > 0.0 && self.cameras.default_fps <= 120.0) {
            errors.push("cameras.default_fps must be in (0, 120]".into());
        }
        if self.cameras.reconnect_initial_ms == 0 || self.cameras.reconnect_max_ms < self.cameras.reconnect_initial_ms {
            errors.push("cameras.reconnect_initial_ms must be > 0 and <= cameras.reconnect_max_ms".into());
        }
        if self.cameras.read_timeout_ms < 100 {
            errors.push("cameras.read_timeout_ms must be at least 100".into());
        }
        if self.cameras.decode_threads > MAX_DECODE_THREADS {
            errors.push(format!(
                "cameras.decode_threads must be in 0..={MAX_DECODE_THREADS} (0: FFmpeg picks, one per core)"
            ));
        }
        for scheme in &self.cameras.allowed_schemes {
            if !SourcePolicy::NETWORK_SCHEMES.contains(&scheme.as_str()) {
                errors.push(format!(
                    "cameras.allowed_schemes: {scheme:?} is not one of {:?} (local files go through cameras.media_dir)",
                    SourcePolicy::NETWORK_SCHEMES
                ));
            }
        }
        if !(1..=256).contains(&self.connector.shards) {
            errors.push("connector.shards must be in 1..=256".into());
        }
        if self.connector.mailbox < 16 {
            errors.push("connector.mailbox must be at least 16".into());
        }
        errors.extend(self.tracker.validate());
        errors.extend(self.simulator.validate(self.tracker.new_track_thresh));
        errors.extend(self.analytics.validate());
        errors.extend(self.auth.validate());
        errors.extend(self.rate_limit.validate());
        errors.extend(self.tracing.validate());
        errors.extend(self.supervisor.policy().validate().into_iter().map(|e| format!("supervisor: {e}")));
        // Shards report progress every second: anything shorter would find them all frozen.
        if !(3_000..=600_000).contains(&self.supervisor.heartbeat_timeout_ms) {
            errors.push("supervisor.heartbeat_timeout_ms must be in 3000..=600000".into());
        }
        if self.outbox.max_events == 0 {
            errors.push("outbox.max_events must be at least 1".into());
        }
        if self.outbox.when_full == WhenFull::Wait {
            errors.push("outbox.when_full must be reject or drop_oldest: the intake never waits".into());
        }
        if self.outbox.path.as_os_str().is_empty() {
            errors.push("outbox.path must name a file".into());
        }
        if !(1..=16_777_216).contains(&self.publisher.intake_capacity) {
            errors.push("publisher.intake_capacity must be in 1..=16777216".into());
        }
        if !(1..=4096).contains(&self.publisher.batch_size) {
            errors.push("publisher.batch_size must be in 1..=4096".into());
        }
        if !(1..=16_777_216).contains(&self.publisher.row_queue_capacity) {
            errors.push("publisher.row_queue_capacity must be in 1..=16777216".into());
        }
        if self.batching.frame_memory_mb == 0 || self.batching.grow_after_batches == 0 {
            errors.push("batching.frame_memory_mb and batching.grow_after_batches must be at least 1".into());
        }
        if !(self.model.rollback_failure_rate > 0.0 && self.model.rollback_failure_rate <= 1.0) {
            errors.push("model.rollback_failure_rate must be in (0, 1]".into());
        }
        if !(1..=64).contains(&self.device.cpu_workers) {
            errors.push("device.cpu_workers must be in 1..=64".into());
        }
        if self.model.backend() == crate::detector::config::Backend::OnnxRuntime
            && self.device.kind == DeviceKind::Cuda
            && !self.simulator.enabled
        {
            errors
                .push("device.kind = \"cuda\" needs a TorchScript model.path (.pt): ONNX models run on the CPU".into());
        }
        if !(1..=10_000).contains(&self.model.rollback_window) {
            errors.push("model.rollback_window must be in 1..=10000".into());
        }
        errors.extend(self.model.drift.validate());
        errors.extend(self.model.lifecycle.validate());
        if self.breakers.failure_threshold == 0 || self.breakers.half_open_successes == 0 {
            errors.push("breakers.failure_threshold and breakers.half_open_successes must be at least 1".into());
        }
        if !(100..=3_600_000).contains(&self.breakers.open_for_ms) {
            errors.push("breakers.open_for_ms must be in 100..=3600000".into());
        }
        let node_id = self.node.resolved_id();
        if !crate::ids::is_valid_id(&node_id) {
            errors.push(format!("node.id {node_id:?} (or the host name) must be 1-64 characters of A-Z a-z 0-9 _ -"));
        }
        if !(self.node.capacity_fps > 0.0 && self.node.capacity_fps <= 1_000_000.0) {
            errors.push("node.capacity_fps must be in (0, 1000000]: a node that can analyse nothing is no node".into());
        }
        if !self.node.advertise_url.is_empty() {
            check_url(&mut errors, "node.advertise_url", &self.node.advertise_url, &["http", "https"]);
        }
        errors.extend(self.cluster.validate());
        errors.extend(self.pictures.validate());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(errors))
        }
    }
}

fn check_url(errors: &mut Vec<String>, key: &str, value: &str, schemes: &[&str]) {
    match url::Url::parse(value) {
        Ok(url) if schemes.contains(&url.scheme()) => {}
        Ok(url) => errors.push(format!("{key} has scheme {:?}; expected one of {schemes:?}", url.scheme())),
        // The parser's message never echoes the URL, so a password in it cannot leak here.
        Err(e) => errors.push(format!("{key} is not a valid URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let settings = Settings::load(None).expect("defaults load");
        assert_eq!(settings.http.bind, "127.0.0.1:8080");
        assert_eq!(settings.model.input_size, 416);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let mut settings = Settings::load(None).unwrap();
        settings.http.bind = "nowhere".into();
        settings.batching.max_batch = 0;
        settings.redis.url = "http://x".into();
        settings.outbox.when_full = WhenFull::Wait;
        settings.publisher.intake_capacity = 0;
        settings.publisher.batch_size = 5000;
        settings.publisher.row_queue_capacity = 0;
        settings.http.sse_buffer = 0;
        settings.model.drift.every_frames = 7;
        let Err(SettingsError::Invalid(errors)) = settings.validate() else { panic!("expected errors") };
        assert_eq!(errors.len(), 9, "{errors:?}");
        for key in
            ["intake_capacity", "batch_size", "row_queue_capacity", "http.sse_buffer", "model.drift.window_frames"]
        {
            assert!(errors.iter().any(|e| e.contains(key)), "{key}: {errors:?}");
        }
        assert!(errors.iter().any(|e| e.contains("outbox.when_full")));
        assert!(errors.iter().any(|e| e.contains("http.bind")));
        assert!(errors.iter().any(|e| e.contains("batching.max_batch")));
        assert!(errors.iter().any(|e| e.contains("redis.url")));
    }

    #[test]
    fn redis_cluster_and_tls_settings_are_checked() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let cluster = Settings::load_with_env(
            None,
            Some(env(&[("ITS__REDIS__MODE", "cluster"), ("ITS__REDIS__NODES", "redis://a:7000,redis://b:7001")])),
        )
        .unwrap();
        assert_eq!(cluster.redis.server_urls(), ["redis://a:7000", "redis://b:7001"]);
        assert_eq!(cluster.redis.replicas_to_wait_for(), 1);
        let single = Settings::load(None).unwrap();
        assert_eq!(single.redis.server_urls(), ["redis://127.0.0.1:6379"]);
        assert_eq!(single.redis.replicas_to_wait_for(), 0, "a single node's behaviour is unchanged");

        let mut settings = Settings::load(None).unwrap();
        settings.redis.mode = RedisMode::Cluster;
        settings.redis.key_prefix = "its{x}".into();
        settings.redis.wait_timeout_ms = 0;
        settings.redis.ca_file = "/no/such/ca.pem".into();
        let Err(SettingsError::Invalid(errors)) = settings.validate() else { panic!("invalid") };
        for expected in ["redis.nodes must name", "{ or }", "redis.wait_timeout_ms", "redis.ca_file \"/no/such"] {
            assert!(errors.iter().any(|e| e.contains(expected)), "{expected}: {errors:?}");
        }
        settings.redis.nodes = vec!["redis://a:7000".into(), "rediss://b:7001".into()];
        let Err(SettingsError::Invalid(errors)) = settings.validate() else { panic!("invalid") };
        assert!(errors.iter().any(|e| e.contains("same scheme")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("not rediss://")), "{errors:?}");

        let mut settings = Settings::load(None).unwrap();
        settings.redis.nodes = vec!["redis://a:7000".into()];
        let Err(SettingsError::Invalid(errors)) = settings.validate() else { panic!("invalid") };
        assert!(errors.iter().any(|e| e.contains("redis.nodes is for")), "{errors:?}");
    }

    #[test]
    fn cluster_mistakes_are_reported_together() {
        let mut settings = Settings::load(None).unwrap();
        settings.node.id = "node.one".into();
        settings.node.capacity_fps = 0.0;
        settings.cluster.heartbeat_ms = 2_000;
        settings.cluster.ttl_ms = 1_000;
        let Err(SettingsError::Invalid(errors)) = settings.validate() else { panic!("expected errors") };
        assert_eq!(errors.len(), 3, "{errors:?}");
        for key in ["node.id", "node.capacity_fps", "cluster.ttl_ms"] {
            assert!(errors.iter().any(|e| e.contains(key)), "{key}: {errors:?}");
        }
    }

    #[test]
    fn picture_settings_are_checked_with_the_others() {
        let defaults = Settings::load(None).unwrap();
        let p = &defaults.pictures;
        assert_eq!((p.live_fps, p.max_viewers_per_camera, p.encode_threads, p.jpeg_quality), (5, 5, 1, 80));
        let mut settings = defaults.clone();
        settings.pictures =
            PictureSettings { live_fps: 31, max_viewers_per_camera: 0, encode_threads: 17, jpeg_quality: 0 };
        settings.http.sse_buffer = 0;
        let Err(SettingsError::Invalid(errors)) = settings.validate() else { panic!("expected errors") };
        assert_eq!(errors.len(), 5, "{errors:?}");
        for key in ["live_fps", "max_viewers_per_camera", "encode_threads", "jpeg_quality", "sse_buffer"] {
            assert!(errors.iter().any(|e| e.contains(key)), "{key}: {errors:?}");
        }
    }

    #[test]
    fn sslmode_is_verify_full_or_plain() {
        let split = |url: &str| split_sslmode("postgres.url", url);
        assert_eq!(split("postgres://u:p@h/db"), Ok(("postgres://u:p@h/db".into(), PgTlsMode::Disable)));
        assert_eq!(split("postgres://h/db?sslmode=disable"), Ok(("postgres://h/db".into(), PgTlsMode::Disable)));
        assert_eq!(
            split("postgres://h/db?application_name=its&sslmode=verify-full&connect_timeout=3"),
            Ok(("postgres://h/db?application_name=its&connect_timeout=3".into(), PgTlsMode::VerifyFull))
        );
        for mode in ["prefer", "allow", "require", "verify-ca"] {
            let err = split(&format!("postgres://u:secret@h/db?sslmode={mode}")).unwrap_err();
            assert!(err.contains("verify-full") && err.contains(mode) && !err.contains("secret"), "{err}");
        }
        assert!(split("postgres://u:secret@h/db?sslmode=bogus").unwrap_err().contains("unknown sslmode"));

        let mut settings = Settings::load(None).unwrap();
        assert_eq!((settings.postgres.read_url(), settings.postgres.ca_file()), (None, None));
        settings.postgres.url = "postgres://u:secret@h/db?sslmode=require".into();
        settings.postgres.read_url = "postgres://h/db?sslmode=prefer".into();
        settings.postgres.ca_file = "/nonexistent/ca.pem".into();
        settings.retention.events_days = 40_000;
        settings.retention.incidents_days = 36_500;
        let Err(SettingsError::Invalid(errors)) = settings.validate() else { panic!("expected errors") };
        assert_eq!(errors.len(), 4, "{errors:?}");
        for key in ["postgres.url", "postgres.read_url", "postgres.ca_file", "retention.events_days"] {
            assert!(errors.iter().any(|e| e.starts_with(key)), "{key}: {errors:?}");
        }
        assert!(!errors.iter().any(|e| e.contains("secret")), "{errors:?}");

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(read_pem_certs(&empty).unwrap_err().contains("no certificate"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[http]\nbind = \"127.0.0.1:9\"\nbnid = 1\n").unwrap();
        let err = Settings::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("bnid"), "{err}");
    }

    #[test]
    fn decoder_settings_are_checked() {
        let defaults = Settings::load(None).unwrap();
        assert_eq!((defaults.cameras.decode_threads, defaults.cameras.hwaccel), (1, Hwaccel::None));
        let env = |k: &str, v: &str| Some(HashMap::from([(k.to_string(), v.to_string())]));
        let err = Settings::load_with_env(None, env("ITS__CAMERAS__HWACCEL", "nvenc")).unwrap_err().to_string();
        assert!(err.contains("nvenc") && err.contains("vaapi"), "{err}");
        let err = Settings::load_with_env(None, env("ITS__CAMERAS__DECODE_THREADS", "17")).unwrap_err().to_string();
        assert!(err.contains("cameras.decode_threads must be in 0..=16"), "{err}");
        let auto = Settings::load_with_env(None, env("ITS__CAMERAS__HWACCEL", "auto")).unwrap();
        assert_eq!(auto.cameras.hwaccel, Hwaccel::Auto);
        let threads = Settings::load_with_env(None, env("ITS__CAMERAS__DECODE_THREADS", "0")).unwrap();
        assert_eq!(threads.cameras.decode_threads, 0);
        assert_eq!("cuda".parse::<Hwaccel>(), Ok(Hwaccel::Cuda));
        assert!("CUDA ".parse::<Hwaccel>().unwrap_err().contains("none, auto, vaapi, cuda"));
    }

    #[test]
    fn file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("over.toml");
        std::fs::write(&path, "[batching]\nmax_batch = 2\n").unwrap();
        let settings = Settings::load(Some(&path)).unwrap();
        assert_eq!(settings.batching.max_batch, 2);
        assert_eq!(settings.batching.max_wait_ms, Settings::load(None).unwrap().batching.max_wait_ms);
    }
}
