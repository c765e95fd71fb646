//! Observability set-up shared by `serve`, `worker` and `process`: log lines (ECS JSON or
//! text), OpenTelemetry traces, Prometheus metrics, and the layer that times pipeline stages.
//!
//! The pipeline itself knows nothing of these backends: it opens `tracing` spans named after
//! its stages (target [`STAGE_TARGET`]); here they become trace spans and the
//! `speechmill_stage_duration_seconds` histogram.

pub mod http;
pub mod logs;
pub mod metrics;
pub mod traces;

use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The `tracing` target of the pipeline's stage spans.
pub const STAGE_TARGET: &str = "speechmill_pipeline::stage";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// Human text.
    Text,
    /// One ECS JSON object per line.
    Json,
}

/// Everything the telemetry set-up needs; the binary builds it from configuration and the
/// environment.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `service.name` in logs and traces.
    pub service_name: String,
    /// A `tracing` filter directive (`info`, `warn,speechmill=info`).
    pub log_filter: String,
    /// Line format.
    pub log_style: LogStyle,
    /// Extra regular expressions whose matches are masked in log lines.
    pub mask_patterns: Vec<String>,
    /// Warnings or errors one call site may log per `log_rate_window` before the rest are
    /// dropped and counted.
    pub log_burst: u32,
    /// The rate limiter's window.
    pub log_rate_window: Duration,
    /// Export spans over OTLP (the `OTEL_EXPORTER_OTLP_*` variables say where).
    pub export_traces: bool,
    /// Time pipeline stages into `speechmill_stage_duration_seconds`.
    pub stage_metrics: bool,
}

impl TelemetrySettings {
    /// Text logs at `warn`, no export, no stage metrics.
    pub fn new(service_name: &str) -> Self {
        TelemetrySettings {
            service_name: service_name.into(),
            log_filter: "warn".into(),
            log_style: LogStyle::Text,
            mask_patterns: Vec::new(),
            log_burst: 20,
            log_rate_window: Duration::from_secs(10),
            export_traces: false,
            stage_metrics: false,
        }
    }
}

/// Keeps telemetry running; dropping it flushes and stops the trace exporter.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Sends the spans still buffered.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A log filter directive or mask pattern is invalid.
    #[error("invalid log setting: {0}")]
    Invalid(String),
    /// The trace exporter could not be built.
    #[error("{0}")]
    Traces(String),
}

/// Installs the process's `tracing` subscriber: log lines, trace spans, stage timing.
/// Returns an error if a subscriber is already installed.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    let version = env!("CARGO_PKG_VERSION");
    let filter = || EnvFilter::try_new(&settings.log_filter).map_err(|err| TelemetryError::Invalid(err.to_string()));
    let masker = logs::Masker::new(&settings.mask_patterns).map_err(|err| TelemetryError::Invalid(err.to_string()))?;
    let limiter = logs::RateLimiter::new(settings.log_burst, settings.log_rate_window);
    let rate = logs::RateLimit(limiter.clone());

    let log_layer: Box<dyn Layer<Registry> + Send + Sync> = match settings.log_style {
        LogStyle::Json => logs::EcsLayer::new(&settings.service_name, version, masker, limiter)
            .with_filter(filter()?.and(rate))
            .boxed(),
        LogStyle::Text => {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter()?.and(rate)).boxed()
        }
    };

    let provider =
        traces::provider(&settings.service_name, version, settings.export_traces).map_err(TelemetryError::Traces)?;
    opentelemetry::global::set_tracer_provider(provider.clone());
    // Spans of speechmill's own code become trace spans; warnings and errors become span events.
    let trace_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("speechmill"))
        .with_filter(filter_fn(|metadata| {
            metadata.target().starts_with("speechmill")
                && (metadata.is_span() || *metadata.level() <= tracing::Level::WARN)
        }))
        .boxed();

    let stage_layer = settings
        .stage_metrics
        .then(|| StageTimer.with_filter(filter_fn(|metadata| metadata.target() == STAGE_TARGET)).boxed());

    tracing_subscriber::registry()
        .with(log_layer)
        .with(trace_layer)
        .with(stage_layer)
        .try_init()
        .map_err(|err| TelemetryError::Invalid(format!("logging is already set up: {err}")))?;
    Ok(TelemetryGuard { provider })
}

/// Busy time of one stage span, summed over its enters.
struct StageClock {
    entered: Option<Instant>,
    busy: Duration,
}

/// Records the busy time of every pipeline stage span when it closes.
struct StageTimer;

impl<S> Layer<S> for StageTimer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(StageClock { entered: None, busy: Duration::ZERO });
        }
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(clock) = span.extensions_mut().get_mut::<StageClock>()
        {
            clock.entered = Some(Instant::now());
        }
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(clock) = span.extensions_mut().get_mut::<StageClock>()
            && let Some(entered) = clock.entered.take()
        {
            clock.busy += entered.elapsed();
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(clock) = span.extensions().get::<StageClock>()
        {
            metrics::record_stage(span.name(), clock.busy);
        }
    }
}
