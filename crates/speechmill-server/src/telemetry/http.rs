//! The API's observation middleware: a request id (taken from `X-Request-Id` or made), a
//! server span per request (a child of the caller's W3C `traceparent`, if any), the RED
//! metrics by route template, and `X-Request-Id` plus `traceparent` on every response.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram};
use tracing::Instrument;
use tracing::field::Empty;

use super::metrics::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS};
use super::traces;

/// `X-Request-Id`.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Longest request id accepted from a client; longer or non-printable ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// A request's id, in the request's extensions for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn client_request_id(request: &Request) -> Option<String> {
    let value = request.headers().get(&REQUEST_ID)?.to_str().ok()?;
    let valid = !value.is_empty() && value.len() <= MAX_REQUEST_ID && value.bytes().all(|byte| byte.is_ascii_graphic());
    valid.then(|| value.to_string())
}

/// The method as a metric label: the standard ones by name, anything else as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Copies the matched route template into the response, where [`observe`] (which runs before
/// routing) can read it. Add with `Router::route_layer`.
pub async fn remember_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(matched);
    }
    response
}

/// Observes one request. Add with `Router::layer`, outside [`remember_route`].
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = client_request_id(&request).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = method_label(request.method());
    let span = tracing::info_span!(
        target: "speechmill_server::http",
        "HTTP request",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = Empty,
        url.path = request.uri().path(),
        http.response.status_code = Empty,
        http.request.id = %request_id,
    );
    traces::set_remote_parent(&span, traces::parent_from_headers(request.headers()));
    request.extensions_mut().insert(RequestId(request_id.clone()));

    gauge!(HTTP_IN_FLIGHT).increment(1.0);
    let mut response = next.run(request).instrument(span.clone()).await;
    gauge!(HTTP_IN_FLIGHT).decrement(1.0);

    let route = response.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_string();
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    // The span started before routing; name it after its route now (semantic conventions:
    // "{method} {route}").
    traces::rename(&span, format!("{method} {route}"));
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let class = status_class(status);
    counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status_class" => class).increment(1);
    histogram!(HTTP_DURATION, "route" => route, "method" => method, "status_class" => class)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        let duration_ns = elapsed.as_nanos() as u64;
        tracing::debug!(
            target: "speechmill_server::http",
            { event.duration = duration_ns, http.response.status_code = status },
            "request finished"
        );
    });

    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID.clone(), value);
    }
    if let Some(traceparent) = traces::traceparent_of(&span)
        && let Ok(value) = HeaderValue::from_str(&traceparent)
    {
        headers.insert(TRACEPARENT.clone(), value);
    }
    response
}
