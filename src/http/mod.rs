//! The HTTP layer: one [`router`] serving the API over an [`AppState`].
//!
//! Owns the wiring of routes and tower layers (CORS, request id, tracing, metrics, head
//! limits, request timeout, panic catching, authentication, load shedding, the 404/405
//! problem answers, Swagger UI). HTTP semantics live in the route modules, error mapping in
//! [`error`], limits and engine dispatch in [`state`], the protections' logic in [`auth`] and
//! [`guard`]; no storage logic anywhere here.
//!
//! Layout: [`kv`] single keys, listing and blocking reads, [`watch`] the change feed, [`bulk`] batch and mget, [`admin`] jobs, stats,
//! probes and metrics, [`dto`] JSON answers, [`requests`] JSON request bodies and their
//! schemas, [`body`] limited bodies, [`extract`] the typed
//! extractors (key, query structs that also document themselves), [`keys`] byte keys from raw
//! paths, [`conditional`] ETag preconditions (and their extractors), [`metrics`] metric names
//! and recording, [`openapi`] the document, [`error`] the one `IntoResponse` for failures and
//! the one error-logging middleware, [`auth`] bearer tokens and roles, [`guard`] head limits,
//! request timeout and CORS, [`trace`] the request span (logs and OpenTelemetry).

pub mod admin;
pub mod auth;
pub mod body;
pub mod bulk;
pub mod conditional;
pub mod dto;
pub mod error;
pub mod extract;
pub mod guard;
pub mod keys;
pub mod kv;
pub mod metrics;
pub mod openapi;
pub mod requests;
pub mod state;
pub mod trace;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config, SwaggerUi};

#[cfg(test)]
mod router_tests;

pub use error::ApiError;
pub use guard::{HeadLimits, HttpOptions};
pub use state::{AppState, Exec, ExecMode, Limits};

/// The request id header, taken from the client when given, made otherwise.
const REQUEST_ID: &str = "x-request-id";

/// Builds the whole service over `state` with default options (no authentication, default
/// head limits, no request timeout, no CORS).
pub fn router(state: AppState) -> Router {
    router_with(state, &HttpOptions::default())
}

/// Builds the whole service over `state`: API routes, documentation, layers.
///
/// Also stores the finished OpenAPI document in `state` (served at `/openapi.json`).
pub fn router_with(state: AppState, opts: &HttpOptions) -> Router {
    let limits = *state.limits();
    // Data and admin routes shed load beyond `max_in_flight` (one semaphore shared by all of
    // them: a per-route limit would multiply it); probes and metrics never shed.
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            ApiError::Overloaded
        }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_in_flight.max(1),
        ));
    let api = OpenApiRouter::new()
        .routes(routes!(
            kv::put_key,
            kv::get_key,
            kv::head_key,
            kv::delete_key
        ))
        .routes(routes!(kv::list_keys))
        .routes(routes!(bulk::batch))
        .routes(routes!(bulk::mget))
        .routes(routes!(admin::start_merge, admin::merge_state))
        .routes(routes!(admin::start_snapshot, admin::snapshot_state))
        .routes(routes!(admin::stats))
        .route("/kv/", any(kv::empty_key))
        .layer(shed);
    // Watches are long-lived: capped by `watch_max_watchers`, not by the in-flight limit.
    let api = api.routes(routes!(watch::watch));
    let ops = OpenApiRouter::new()
        .routes(routes!(admin::healthz))
        .routes(routes!(admin::readyz))
        .routes(routes!(admin::prometheus))
        .route("/openapi.json", get(openapi_json));
    let (app, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api)
        .merge(ops)
        .split_for_parts();
    metrics::export_routes(doc.paths.paths.iter().flat_map(|(path, item)| {
        [
            ("get", item.get.is_some()),
            ("put", item.put.is_some()),
            ("post", item.post.is_some()),
            ("delete", item.delete.is_some()),
            ("head", item.head.is_some()),
        ]
        .into_iter()
        .filter(|(_, served)| *served)
        .map(move |(m, _)| (m, path.as_str()))
    }));
    let security = auth::SecurityDoc {
        enforced: opts.auth.is_some(),
        metrics_open: opts.metrics_open,
        docs_open: opts.docs_open,
    };
    let limits_doc = openapi::LimitsDoc(limits);
    let mut steps: Vec<&dyn utoipa::Modify> = vec![&openapi::PathTemplates, &limits_doc, &security];
    if opts.cluster_doc {
        steps.push(&crate::cluster::openapi::ClusterDoc);
    }
    let doc = openapi::finish(&doc, &steps);
    state.set_openapi_json(openapi::to_bytes(&doc));

    let docs = SwaggerUi::new("/docs").config(Config::from("/openapi.json"));
    let mut app = app
        .merge(docs)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    // Inside the route tag, so refusals are counted under their route; on routes only, so an
    // unknown path answers 404 without a token (it reveals nothing).
    if let Some(a) = &opts.auth {
        app = app.route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(a),
            auth::require,
        ));
    }
    let app = app
        .route_layer(axum::middleware::from_fn(metrics::tag_route))
        .route_layer(axum::middleware::from_fn(trace::record_route));
    let app = match opts.request_timeout {
        Some(t) => app.layer(axum::middleware::from_fn_with_state(t, guard::deadline)),
        None => app,
    };
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            opts.head,
            guard::limit_head,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    header::COOKIE,
                    header::PROXY_AUTHORIZATION,
                ]))
                .layer(SetRequestIdLayer::new(
                    header::HeaderName::from_static(REQUEST_ID),
                    SequentialRequestId::new(),
                ))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(trace::make_span)
                        .on_request(())
                        .on_response(trace::on_response)
                        .on_failure(DefaultOnFailure::new().level(Level::WARN)),
                )
                .layer(PropagateRequestIdLayer::new(
                    header::HeaderName::from_static(REQUEST_ID),
                ))
                .layer(axum::middleware::from_fn(metrics::track))
                .layer(axum::middleware::from_fn(error::log_errors))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal("a handler panicked".into()).into_response()
                })),
        );
    // Outermost: preflights are answered before anything else (and before authentication).
    let app = match guard::cors(&opts.cors_origins) {
        Ok(Some(cors)) => app.layer(cors),
        Ok(None) => app,
        Err(e) => {
            tracing::warn!(error = %e, "CORS left off");
            app
        }
    };
    app.with_state(state)
}

/// The OpenAPI document (the same bytes as `openapi/openapi.json`).
async fn openapi_json(State(state): State<AppState>) -> Response {
    match state.openapi_json() {
        Some(doc) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            doc.clone(),
        )
            .into_response(),
        None => ApiError::NotReady.into_response(),
    }
}

/// How often the metrics recorder is tidied (histogram buckets drained).
pub const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Request ids `<process prefix>-<counter>`: unique per process start, and unlike a UUID v4
/// they cost no `getrandom` system call per request (1.9 % of server CPU in a GET profile).
#[derive(Clone, Debug)]
struct SequentialRequestId {
    prefix: std::sync::Arc<str>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SequentialRequestId {
    fn new() -> Self {
        use std::hash::BuildHasher;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed =
            std::collections::hash_map::RandomState::new().hash_one((std::process::id(), nanos));
        SequentialRequestId {
            prefix: format!("{seed:016x}").into(),
            next: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for SequentialRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        header::HeaderValue::from_str(&format!("{}-{n:x}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}
