//! Logging and OpenTelemetry trace export for `tracing` spans.
//!
//! `init` installs the process-wide subscriber: the fmt layer (stderr) filtered by `EnvFilter`
//! (RUST_LOG) + (when `otlp_endpoint` is set) a `tracing-opentelemetry` layer with its own INFO
//! filter that feeds an SDK tracer provider with a batch span processor. The batch processor runs
//! on its own std thread ("OpenTelemetry.Traces.BatchProcessor") and exports OTLP http/protobuf
//! with a blocking reqwest client that lives on that thread, so it needs no tokio runtime and
//! never runs on an actix worker. (OTLP/gRPC is not built in: Jaeger, the OpenTelemetry
//! Collector and Tempo all accept http/protobuf on port 4318.)
//!
//! Per-frame sampling: decide at the root with [`sample_frame`]; create the
//! `frame` span only for sampled frames and carry `Span::none()` otherwise; create children
//! with [`child_span!`](crate::child_span), which stays `Span::none()` under a disabled parent.
//! The OTel sampler keeps `frame` roots (already decided by us) and applies the TraceIdRatio to
//! every other root span, parent-based for children.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::{Link, SpanKind, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample};
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use tracing::Subscriber;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

pub const PROTOCOL_HTTP_PROTOBUF: &str = "http/protobuf";
/// Path the OTLP/HTTP exporter posts to when the endpoint has no path of its own.
pub const OTLP_HTTP_TRACES_PATH: &str = "/v1/traces";
/// Root span names whose sampling the pipeline decides itself (before creating the span); the
/// OTel sampler always keeps these roots. Create such spans only behind [`sample_frame`].
pub const PRESAMPLED_ROOTS: &[&str] = &["frame"];

/// Most verbose level the OTel layer takes: pipeline spans are `info_span!`.
pub const OTEL_MAX_LEVEL: tracing::Level = tracing::Level::INFO;

const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// `[tracing]` section of the settings file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP collector base URL, e.g. `http://jaeger:4318`. Empty: no trace export. An endpoint
    /// without a path gets `/v1/traces`; one with a path is used as is.
    pub otlp_endpoint: String,
    /// `http/protobuf`, the one protocol built in.
    pub protocol: String,
    /// Fraction of frames (and of other root spans) traced, 0..=1.
    pub sampling_ratio: f64,
    /// Resource attribute `service.name`.
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            protocol: PROTOCOL_HTTP_PROTOBUF.to_string(),
            sampling_ratio: 0.05,
            service_name: "its-analytics".to_string(),
        }
    }
}

impl TracingConfig {
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }

    /// Every problem at once (empty: valid).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let endpoint = self.otlp_endpoint.trim();
        if !endpoint.is_empty() {
            match url::Url::parse(endpoint) {
                Err(e) => problems.push(format!("tracing.otlp_endpoint: not a URL ({e})")),
                Ok(url) => {
                    match url.scheme() {
                        "http" => {}
                        "https" => problems.push(
                            "tracing.otlp_endpoint: https is not supported (this build has no TLS); \
                             export to a local collector over http://"
                                .to_string(),
                        ),
                        other => problems.push(format!("tracing.otlp_endpoint: scheme must be http, not {other:?}")),
                    }
                    if url.host_str().is_none_or(str::is_empty) {
                        problems.push("tracing.otlp_endpoint: missing host".to_string());
                    }
                    if !url.username().is_empty() || url.password().is_some() {
                        problems.push("tracing.otlp_endpoint: must not contain credentials".to_string());
                    }
                    if url.query().is_some() || url.fragment().is_some() {
                        problems.push("tracing.otlp_endpoint: must not have a query or fragment".to_string());
                    }
                }
            }
        }
        match self.protocol.as_str() {
            PROTOCOL_HTTP_PROTOBUF => {}
            other => problems.push(format!(
                "tracing.protocol: {other:?} is not supported; use \"http/protobuf\" (OTLP/gRPC is not built in)"
            )),
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            problems.push(format!("tracing.sampling_ratio: {} is outside 0..=1", self.sampling_ratio));
        }
        if self.service_name.trim().is_empty() {
            problems.push("tracing.service_name: must not be empty".to_string());
        }
        problems
    }

    /// The URL the exporter sends to.
    pub fn export_url(&self) -> String {
        let endpoint = self.otlp_endpoint.trim();
        match url::Url::parse(endpoint) {
            Ok(mut url) if url.path() == "/" || url.path().is_empty() => {
                url.set_path(OTLP_HTTP_TRACES_PATH);
                url.to_string()
            }
            _ => endpoint.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid tracing settings: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("installing the tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
    #[error("trace provider: {0}")]
    Sdk(#[from] opentelemetry_sdk::error::OTelSdkError),
}

/// Owns the trace provider. Dropping it, or [`shutdown`], exports
/// what is queued (bounded by a 5 s timeout) and stops the batch thread. Keep it alive in
/// `main` until after the actix System has returned.
///
/// [`shutdown`]: TelemetryGuard::shutdown
#[must_use = "dropping the guard shuts trace export down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard").field("exporting", &self.provider.is_some()).finish()
    }
}

impl TelemetryGuard {
    /// Validates `config` and builds the exporter and provider (nothing global is installed).
    /// With an empty endpoint the guard is inert and [`layer`](Self::layer) is `None`.
    pub fn new(config: &TracingConfig) -> Result<Self, TelemetryError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(TelemetryError::Invalid(problems));
        }
        let mut guard = Self { provider: None };
        if !config.enabled() {
            return Ok(guard);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.export_url())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(RootSampler { ratio: config.sampling_ratio })))
            .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
            .build();
        guard.provider = Some(provider);
        Ok(guard)
    }

    /// The OpenTelemetry layer for this provider (`None` when export is off), for
    /// `registry().with(..)`. It has its own filter, independent of `RUST_LOG`: spans and events
    /// at INFO and above ([`OTEL_MAX_LEVEL`]), except from the exporter's own dependencies
    /// (hyper, reqwest, ...), so that exporting never produces spans to export.
    pub fn layer<S>(&self) -> Option<impl Layer<S> + Send + Sync + 'static>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let provider = self.provider.as_ref()?;
        let tracer = provider.tracer("its-analytics");
        let filter = FilterFn::new(|meta| *meta.level() <= OTEL_MAX_LEVEL && !is_exporter_internal(meta.target()))
            .with_max_level_hint(OTEL_MAX_LEVEL);
        Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter))
    }

    /// Exports what is queued and stops the exporter; blocks the caller up to 5 s (the export
    /// runs on the batch thread, so this is safe inside an actix/tokio context, at exit).
    fn shutdown_inner(&mut self) -> Result<(), TelemetryError> {
        match self.provider.take() {
            Some(p) => p.shutdown_with_timeout(SHUTDOWN_TIMEOUT).map_err(TelemetryError::from),
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown_inner() {
            eprintln!("trace export shutdown: {e}");
        }
    }
}

fn is_exporter_internal(target: &str) -> bool {
    const INTERNAL: &[&str] = &["hyper", "h2", "tonic", "tower", "reqwest", "opentelemetry"];
    INTERNAL.iter().any(|prefix| {
        target.starts_with(prefix) && matches!(target.as_bytes().get(prefix.len()), None | Some(b':' | b'_' | b'-'))
    })
}

/// The fmt layer `main` used before telemetry: stderr, ANSI only on a terminal.
pub fn fmt_layer<S>() -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

/// The PostgreSQL driver logs each statement's parameters at `debug`, camera URLs with their
/// passwords among them: below `info` its events never reach the log, whatever RUST_LOG says.
fn keeps_statement_parameters_out(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.target().starts_with("tokio_postgres") && *meta.level() > tracing::Level::INFO)
}

/// Installs the global subscriber: the fmt layer filtered by `env_filter` (RUST_LOG), plus the
/// OTel layer when enabled (with its own INFO filter, so turning logs down does not turn traces
/// off), and sets the ratio used by [`sample_frame`]. Keep the guard until exit.
pub fn init(config: &TracingConfig, env_filter: EnvFilter) -> Result<TelemetryGuard, TelemetryError> {
    let guard = TelemetryGuard::new(config)?;
    tracing_subscriber::registry()
        .with(fmt_layer().with_filter(env_filter).with_filter(FilterFn::new(keeps_statement_parameters_out)))
        .with(guard.layer())
        .try_init()?;
    set_frame_sampling_ratio(if config.enabled() { config.sampling_ratio } else { 0.0 });
    Ok(guard)
}

/// The OTel trace id of `span` when it is sampled (will be exported): for metric exemplars and
/// log correlation. `None` for `Span::none()`, unsampled spans, or when export is off. Starts
/// the OTel span if it was not started yet (cheap; the sampling decision is made then).
pub fn sampled_trace_id(span: &tracing::Span) -> Option<TraceId> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id())
}

/// Root sampler: `PRESAMPLED_ROOTS` were decided by the pipeline, the rest by trace-id ratio.
#[derive(Debug, Clone)]
struct RootSampler {
    ratio: f64,
}

impl ShouldSample for RootSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if PRESAMPLED_ROOTS.contains(&name) {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        Sampler::TraceIdRatioBased(self.ratio).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}

/// Head sampling for per-frame traces: a thread-local xorshift draw against a threshold
/// (about 1-2 ns, no locks, no allocation).
static FRAME_THRESHOLD: AtomicU64 = AtomicU64::new(0);

/// Sets the process-wide ratio behind [`sample_frame`] (`init` does this; 0 when export is off).
pub fn set_frame_sampling_ratio(ratio: f64) {
    FRAME_THRESHOLD.store(ratio_to_threshold(ratio), Ordering::Relaxed);
}

/// Whether to trace this frame: create the `frame` root span only when this is true.
#[inline]
pub fn sample_frame() -> bool {
    draw(FRAME_THRESHOLD.load(Ordering::Relaxed))
}

fn ratio_to_threshold(ratio: f64) -> u64 {
    if ratio.is_nan() || ratio <= 0.0 {
        0
    } else if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio * u64::MAX as f64) as u64
    }
}

#[inline]
fn draw(threshold: u64) -> bool {
    match threshold {
        0 => false,
        u64::MAX => true,
        t => next_random() < t,
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

#[inline]
fn next_random() -> u64 {
    RNG.with(|state| {
        // xorshift64*
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// `info_span!(parent: $parent, ...)`, or `Span::none()` when the parent is disabled (an
/// unsampled frame). A plain `info_span!(parent: &Span::none(), ..)` would NOT be disabled: it
/// creates a new root span (and, with OTel, a new one-span trace if the root sampler keeps it).
#[macro_export]
macro_rules! child_span {
    ($parent:expr, $($rest:tt)+) => {{
        let parent: &::tracing::Span = $parent;
        if parent.is_disabled() {
            ::tracing::Span::none()
        } else {
            ::tracing::info_span!(parent: parent, $($rest)+)
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c: TracingConfig = toml::from_str("").unwrap();
        assert_eq!(c, TracingConfig::default());
        assert!(c.validate().is_empty());
        assert!(!c.enabled());

        let bad = TracingConfig {
            otlp_endpoint: "ftp://user:pw@collector:4318?x=1".into(),
            protocol: "http/json".into(),
            sampling_ratio: 1.5,
            service_name: " ".into(),
        };
        let problems = bad.validate();
        assert_eq!(problems.len(), 6, "{problems:#?}");

        let nan = TracingConfig { sampling_ratio: f64::NAN, ..Default::default() };
        assert_eq!(nan.validate().len(), 1);
        let https = TracingConfig { otlp_endpoint: "https://c:4318".into(), ..Default::default() };
        assert_eq!(https.validate().len(), 1);
        let not_url = TracingConfig { otlp_endpoint: "collector:4318".into(), ..Default::default() };
        assert_eq!(not_url.validate().len(), 2, "{:?}", not_url.validate());

        let unknown = toml::from_str::<TracingConfig>("otlp_endpiont = \"http://x:4318\"");
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn export_url_appends_traces_path_only_without_a_path() {
        let mut c = TracingConfig { otlp_endpoint: "http://c:4318".into(), ..Default::default() };
        assert_eq!(c.export_url(), "http://c:4318/v1/traces");
        c.otlp_endpoint = "http://c:4318/".into();
        assert_eq!(c.export_url(), "http://c:4318/v1/traces");
        c.otlp_endpoint = "http://c:4318/custom/v1/traces".into();
        assert_eq!(c.export_url(), "http://c:4318/custom/v1/traces");
    }

    #[test]
    fn frames_are_drawn_at_the_ratio() {
        assert!(!draw(ratio_to_threshold(0.0)));
        assert!(draw(ratio_to_threshold(1.0)));
        let threshold = ratio_to_threshold(0.05);
        let hits = (0..200_000).filter(|_| draw(threshold)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
    }

    #[test]
    fn internal_targets() {
        assert!(is_exporter_internal("hyper_util::client::legacy"));
        assert!(is_exporter_internal("h2::codec"));
        assert!(is_exporter_internal("opentelemetry_sdk"));
        assert!(!is_exporter_internal("its_analytics::actors"));
        assert!(!is_exporter_internal("h264"));
        assert!(is_exporter_internal("opentelemetry-otlp"));
    }
}
