//! Log lines: one JSON object per line with Elastic Common Schema field names (`@timestamp`,
//! `log.level`, `message`, `service.name`, `trace.id`, ...), secrets masked, and repeated
//! warnings and errors rate-limited per call site.
//!
//! Fields recorded on spans (`job.id`, `batch.id`, `http.request.id`, ...) are carried into
//! every line logged inside them; a field named `error` becomes `error.message`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use metrics::counter;
use regex::Regex;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

/// The ECS version the field names follow.
pub const ECS_VERSION: &str = "8.11";

/// Replaces secrets in log text: bearer tokens, speechmill API keys, and configured patterns.
#[derive(Debug, Clone)]
pub struct Masker {
    /// (pattern, replacement) in order.
    rules: Vec<(Regex, String)>,
}

impl Masker {
    /// The built-in rules plus `extra` patterns (whose matches become `[REDACTED]`).
    pub fn new(extra: &[String]) -> Result<Masker, regex::Error> {
        let mut rules = vec![
            (
                Regex::new(
                    r"(?i)(authorization|api[_-]?key|password|secret)(\s*[=:]\s*)(?:(?:bearer|basic)\s+)?[^\s,;]+",
                )?,
                "${1}${2}[REDACTED]".to_string(),
            ),
            (Regex::new(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")?, "Bearer [REDACTED]".to_string()),
            (Regex::new(r"\bsmk_([A-Za-z0-9]+)_[A-Za-z0-9]+")?, "smk_${1}_[REDACTED]".to_string()),
            (Regex::new(r"(?i)(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@")?, "${1}[REDACTED]@".to_string()),
        ];
        for pattern in extra {
            rules.push((Regex::new(pattern)?, "[REDACTED]".to_string()));
        }
        Ok(Masker { rules })
    }

    /// `text` with every secret replaced.
    pub fn mask(&self, text: &str) -> String {
        let mut masked = std::borrow::Cow::Borrowed(text);
        for (pattern, replacement) in &self.rules {
            if pattern.is_match(&masked) {
                masked = std::borrow::Cow::Owned(pattern.replace_all(&masked, replacement.as_str()).into_owned());
            }
        }
        masked.into_owned()
    }
}

/// Lets at most `burst` warnings or errors from one call site through per `window`; the rest
/// are counted (`speechmill_log_events_suppressed_total`) and reported on the next line that
/// call site logs.
#[derive(Debug)]
pub struct RateLimiter {
    burst: u32,
    window: Duration,
    /// Per call site: (window start, events let through in it, events suppressed since the last
    /// line); written by every warning or error.
    sites: Mutex<HashMap<usize, (Instant, u32, u64)>>,
}

impl RateLimiter {
    /// A limiter letting `burst` lines per call site through per `window`.
    pub fn new(burst: u32, window: Duration) -> Arc<RateLimiter> {
        Arc::new(RateLimiter { burst, window, sites: Mutex::new(HashMap::new()) })
    }

    fn site(metadata: &'static Metadata<'static>) -> usize {
        std::ptr::from_ref(metadata) as usize
    }

    /// Whether this event may be logged.
    fn allow(&self, metadata: &'static Metadata<'static>) -> bool {
        self.allow_at(Self::site(metadata), *metadata.level(), Instant::now())
    }

    /// Whether an event of `level` from call site `site` may be logged at `now`.
    fn allow_at(&self, site: usize, level: Level, now: Instant) -> bool {
        if level > Level::WARN {
            return true;
        }
        let mut sites = self.sites.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = sites.entry(site).or_insert((now, 0, 0));
        if now.duration_since(entry.0) >= self.window {
            entry.0 = now;
            entry.1 = 0;
        }
        if entry.1 < self.burst {
            entry.1 += 1;
            return true;
        }
        entry.2 += 1;
        let level = if level == Level::ERROR { "error" } else { "warn" };
        counter!(super::metrics::LOG_SUPPRESSED, "level" => level).increment(1);
        false
    }

    /// Lines of this call site suppressed since it last logged; resets the count.
    fn take_suppressed(&self, metadata: &'static Metadata<'static>) -> u64 {
        self.take_suppressed_at(Self::site(metadata))
    }

    fn take_suppressed_at(&self, site: usize) -> u64 {
        let mut sites = self.sites.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sites.get_mut(&site).map_or(0, |entry| std::mem::take(&mut entry.2))
    }
}

/// The per-layer filter side of a [`RateLimiter`].
#[derive(Debug, Clone)]
pub struct RateLimit(pub Arc<RateLimiter>);

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, _metadata: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        self.0.allow(event.metadata())
    }
}

/// Collects fields into a JSON map, masking strings.
struct JsonVisitor<'a> {
    fields: &'a mut Map<String, Value>,
    masker: &'a Masker,
}

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "error" => "error.message",
            "message" => "message",
            other => other,
        };
        self.fields.insert(name.to_string(), value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = self.masker.mask(&format!("{value:?}"));
        self.put(field, Value::String(text));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let text = self.masker.mask(value);
        self.put(field, Value::String(text));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let text = self.masker.mask(&value.to_string());
        self.put(field, Value::String(text));
    }
}

/// The fields recorded on a span, kept in its extensions for the lines logged inside it.
struct SpanFields(Map<String, Value>);

/// Writes every event as one ECS JSON line to standard error.
pub struct EcsLayer {
    service_name: String,
    service_version: String,
    masker: Masker,
    limiter: Arc<RateLimiter>,
}

impl EcsLayer {
    /// A layer naming the service `service_name` at `service_version`.
    pub fn new(service_name: &str, service_version: &str, masker: Masker, limiter: Arc<RateLimiter>) -> Self {
        EcsLayer { service_name: service_name.into(), service_version: service_version.into(), masker, limiter }
    }
}

/// Span fields whose names are not ECS fields by themselves are written as they are (they use
/// dotted ECS-style names already: `job.id`, `http.request.id`); these are left out of lines
/// because they describe the span for tracing backends, not the event.
fn span_only(name: &str) -> bool {
    name.starts_with("otel.") || name.starts_with("messaging.")
}

impl<S> Layer<S> for EcsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor { fields: &mut fields, masker: &self.masker });
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor { fields, masker: &self.masker });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "@timestamp".into(),
            Value::String(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
        );
        line.insert("log.level".into(), Value::String(metadata.level().as_str().to_ascii_lowercase()));
        line.insert("message".into(), Value::String(String::new()));
        line.insert("ecs.version".into(), Value::String(ECS_VERSION.into()));
        line.insert("service.name".into(), Value::String(self.service_name.clone()));
        line.insert("service.version".into(), Value::String(self.service_version.clone()));
        line.insert("log.logger".into(), Value::String(metadata.target().into()));
        if let Some(scope) = ctx.event_scope(event) {
            // Outermost first, so an inner span's field wins.
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(SpanFields(fields)) = extensions.get::<SpanFields>() {
                    for (key, value) in fields {
                        if !span_only(key) && key != "message" {
                            line.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
            if let Some((trace_id, span_id)) = super::traces::ids_in_scope(ctx.event_scope(event)) {
                line.insert("trace.id".into(), Value::String(trace_id));
                line.insert("span.id".into(), Value::String(span_id));
            }
        }
        event.record(&mut JsonVisitor { fields: &mut line, masker: &self.masker });
        if line.contains_key("error.message") && !line.contains_key("error.type") {
            line.insert("error.type".into(), Value::String(metadata.target().replace("::", ".")));
        }
        let suppressed = self.limiter.take_suppressed(metadata);
        if suppressed > 0 {
            line.insert("event.suppressed_before".into(), Value::from(suppressed));
        }
        let mut text = serde_json::to_string(&Value::Object(line)).unwrap_or_default();
        text.push('\n');
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_site_logs_its_burst_per_window_and_reports_what_it_dropped() {
        let limiter = RateLimiter::new(3, Duration::from_secs(10));
        let start = Instant::now();
        let allowed = (0..10).filter(|_| limiter.allow_at(1, Level::ERROR, start)).count();
        assert_eq!(allowed, 3);
        assert!(limiter.allow_at(2, Level::WARN, start), "another call site has its own budget");
        assert!(limiter.allow_at(1, Level::INFO, start), "info and below are never limited");
        assert_eq!(limiter.take_suppressed_at(1), 7);
        assert_eq!(limiter.take_suppressed_at(1), 0, "the count resets once reported");
        assert!(!limiter.allow_at(1, Level::ERROR, start + Duration::from_secs(9)));
        assert!(limiter.allow_at(1, Level::ERROR, start + Duration::from_secs(10)), "a new window");
    }

    #[test]
    fn masks_bearer_tokens_api_keys_and_configured_patterns() {
        let masker = Masker::new(&["secret-[0-9]+".to_string()]).unwrap();
        assert_eq!(masker.mask("Authorization: Bearer abc.def"), "Authorization: [REDACTED]");
        assert_eq!(masker.mask("sent bearer abc.def"), "sent Bearer [REDACTED]");
        assert_eq!(masker.mask("key smk_0190ab_ffee00 used"), "key smk_0190ab_[REDACTED] used");
        assert_eq!(masker.mask("token secret-1234 end"), "token [REDACTED] end");
        assert_eq!(
            masker.mask("postgres://speechmill:hunter2@db/speechmill"),
            "postgres://speechmill:[REDACTED]@db/speechmill"
        );
        assert_eq!(masker.mask("nothing to hide"), "nothing to hide");
    }
}
