//! Request-level protections that sit in front of every route.
//!
//! Owns [`HttpOptions`] (what the router needs beyond [`super::AppState`]: authentication,
//! head limits, the request timeout, CORS), the [`limit_head`] middleware (414 for a long
//! request target, 431 for oversized header fields, as problem+json), the [`deadline`]
//! middleware (408 when a request takes longer than the request timeout) and [`cors`].
//! Connection-level protections (header-read timeout against slowloris, the hard cap on the
//! request head, TLS) are in [`crate::transport`]; the concurrency limit with load shedding is
//! in [`super::router`]; body limits are enforced while streaming in [`super::body`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::auth::Auth;
use super::error::ApiError;

/// Limits on the request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request target (path and query) in bytes.
    pub max_uri_bytes: usize,
    /// Most bytes of header fields (names, values, and 4 bytes of framing per field).
    pub max_header_bytes: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Everything the router needs besides the shared state.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// Bearer-token authentication; `None` = every route is open.
    pub auth: Option<Arc<Auth>>,
    /// `/metrics` is public even with authentication on (also shown in the OpenAPI document).
    pub metrics_open: bool,
    /// `/openapi.json` and `/docs` are public even with authentication on.
    pub docs_open: bool,
    /// Limits on the request head.
    pub head: HeadLimits,
    /// Longest time to answer a request (body read included); `None` = no limit.
    pub request_timeout: Option<Duration>,
    /// Origins allowed by CORS; empty = CORS off (no CORS headers at all). `*` = any origin.
    pub cors_origins: Vec<String>,
    /// A Raft cluster node: the OpenAPI document gains the `/cluster` routes and the read
    /// consistency parameter (`crate::cluster::openapi::ClusterDoc`).
    pub cluster_doc: bool,
}

/// Middleware: refuses a request target or header block over the limits.
pub async fn limit_head(State(limits): State<HeadLimits>, req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return ApiError::UriTooLong {
            len: uri_len,
            max: limits.max_uri_bytes,
        }
        .into_response();
    }
    let header_len: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_len > limits.max_header_bytes {
        return ApiError::HeadersTooLarge {
            len: header_len,
            max: limits.max_header_bytes,
        }
        .into_response();
    }
    next.run(req).await
}

/// True for requests the timeout does not cover: starting an admin job, which may wait for it
/// (`?wait=true`) for as long as a merge or snapshot takes.
fn exempt(req: &Request) -> bool {
    (req.method() == Method::POST && req.uri().path().starts_with("/admin/"))
        || super::watch::is_long_poll(req.method(), req.uri())
}

/// Middleware: 408 when the request is not answered in time.
///
/// The handler's future is dropped at the deadline. A write already handed to the engine
/// may still complete; as after any lost response, the client cannot know, and should read
/// back or use a conditional request.
pub async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    if exempt(&req) {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
}

/// The CORS layer for the configured origins, or `None` when CORS is off.
///
/// Preflights are answered before authentication (browsers send them without credentials);
/// the actual request still needs its token.
///
/// # Errors
/// An origin that is not a valid header value.
pub fn cors(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).map_err(|_| format!("bad CORS origin `{o}`")))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::DELETE,
                Method::POST,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
            ])
            .expose_headers([
                header::ETAG,
                header::RETRY_AFTER,
                super::kv::X_TTL,
                header::HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}
