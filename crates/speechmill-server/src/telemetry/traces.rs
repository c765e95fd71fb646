//! OpenTelemetry traces: the tracer provider (exporting over OTLP/HTTP protobuf when
//! configured, otherwise only giving spans their ids for log correlation), W3C `traceparent`
//! in and out, and the trace and span ids of the current span for log lines.

use std::collections::HashMap;

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::{OpenTelemetrySpanExt, get_otel_context};
use tracing_subscriber::registry::{LookupSpan, Scope};

/// Builds the tracer provider for `service_name`. With `export`, spans go to the OTLP/HTTP
/// endpoint the standard `OTEL_EXPORTER_OTLP_*` variables name (batched, on the SDK's own
/// thread); without, spans only carry ids.
pub fn provider(service_name: &str, service_version: &str, export: bool) -> Result<SdkTracerProvider, String> {
    let resource = Resource::builder()
        .with_service_name(service_name.to_string())
        .with_attribute(KeyValue::new("service.version", service_version.to_string()))
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if export {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|err| format!("cannot set up the OTLP trace exporter: {err}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The trace and span ids (lowercase hex) of the innermost span in `scope` that has them.
/// Call it holding no span's extensions.
pub fn ids_in_scope<'a, R: LookupSpan<'a>>(scope: Option<Scope<'a, R>>) -> Option<(String, String)> {
    let ids: Vec<tracing::span::Id> = scope?.map(|span| span.id()).collect();
    tracing::dispatcher::get_default(|dispatch| {
        ids.iter().find_map(|id| {
            let context = get_otel_context(id, dispatch)?;
            let span = context.span();
            let span_context = span.span_context();
            span_context.is_valid().then(|| (span_context.trace_id().to_string(), span_context.span_id().to_string()))
        })
    })
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// The remote parent a request names in its `traceparent` header (an empty context if none
/// or invalid).
pub fn parent_from_headers(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The context a stored `traceparent` value names.
pub fn context_from_traceparent(traceparent: &str) -> Context {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The `traceparent` of `span` (W3C trace context), if it has a valid context.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote context `parent` when that is valid.
pub fn set_remote_parent(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Renames a span that has already started.
pub fn rename(span: &tracing::Span, name: String) {
    span.context().span().update_name(name);
}

/// Links `span` to the span a stored `traceparent` names (a job to the request that queued it).
pub fn link_to(span: &tracing::Span, traceparent: &str) {
    let context = context_from_traceparent(traceparent);
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.add_link(span_context);
    }
}
