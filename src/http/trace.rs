//! The `request` span of every HTTP request, and what it records for traces.
//!
//! Owns [`make_span`] (the span the trace layer opens per request: request id, method and path
//! for the logs; the OpenTelemetry attributes declared empty and filled only when export is on,
//! see [`crate::telemetry`]), [`on_response`] (status), [`record_route`] (the matched route,
//! also the span's name) and [`record_key_len`]. With export off, nothing is recorded beyond
//! what the logs always had.

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::trace::{DefaultOnResponse, OnResponse};
use tracing::field::Empty;
use tracing::{Level, Span};

use crate::telemetry;

/// The request span: `id`, `method`, `path` always; OpenTelemetry attributes when exporting.
pub fn make_span<B>(req: &axum::http::Request<B>) -> Span {
    let id = req
        .headers()
        .get(super::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let span = tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path(),
        otel.name = Empty, otel.kind = Empty, otel.status_code = Empty,
        http.request.method = Empty, http.route = Empty, http.response.status_code = Empty,
        network.protocol.version = Empty, hh.key_len = Empty);
    if telemetry::enabled() && !span.is_disabled() {
        span.record("otel.kind", "server");
        span.record("otel.name", req.method().as_str());
        span.record("http.request.method", req.method().as_str());
        span.record("network.protocol.version", version(req.version()));
        telemetry::adopt_parent(&span, req.headers());
    }
    span
}

fn version(v: axum::http::Version) -> &'static str {
    use axum::http::Version;
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "unknown",
    }
}

/// Logs the answer at DEBUG (as before) and records its status on the span.
pub fn on_response<B>(res: &axum::http::Response<B>, latency: Duration, span: &Span) {
    if telemetry::enabled() {
        span.record("http.response.status_code", res.status().as_u16());
        if res.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
    DefaultOnResponse::new()
        .level(Level::DEBUG)
        .on_response(res, latency, span);
}

/// Route middleware: the matched route becomes `http.route` and the span's name.
pub async fn record_route(req: Request, next: Next) -> Response {
    if telemetry::enabled()
        && let Some(route) = req.extensions().get::<MatchedPath>()
    {
        let span = Span::current();
        span.record("http.route", route.as_str());
        telemetry::rename(&span, format!("{} {}", req.method(), route.as_str()));
    }
    next.run(req).await
}

/// Records the length of the request's key (single-key routes).
pub fn record_key_len(len: usize) {
    if telemetry::enabled() {
        Span::current().record("hh.key_len", len);
    }
}
