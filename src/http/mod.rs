//! The HTTP layer: one [`router`] serving the API over an [`AppState`].
//!
//! Owns the wiring of routes and tower layers (request id, tracing, metrics, load shedding,
//! panic catching, the 404/405 problem answers, Swagger UI). HTTP semantics live in the route
//! modules, error mapping in [`error`], limits and engine dispatch in [`state`]; no storage
//! logic anywhere here.
//!
//! Layout: [`kv`] single keys and listing, [`bulk`] batch and mget, [`admin`] jobs, stats,
//! probes and metrics, [`dto`] JSON shapes, [`body`] limited bodies, [`keys`] byte keys from
//! raw paths, [`conditional`] ETag preconditions, [`metrics`] metric names and recording,
//! [`openapi`] the document, [`error`] the one `IntoResponse` for failures.

pub mod admin;
pub mod body;
pub mod bulk;
pub mod conditional;
pub mod dto;
pub mod error;
pub mod keys;
pub mod kv;
pub mod metrics;
pub mod openapi;
pub mod state;

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
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config, SwaggerUi};

#[cfg(test)]
mod router_tests;

pub use error::ApiError;
pub use state::{AppState, Exec, ExecMode, Limits};

/// The request id header, taken from the client when given, made otherwise.
const REQUEST_ID: &str = "x-request-id";

/// Builds the whole service over `state`: API routes, documentation, layers.
///
/// Also stores the finished OpenAPI document in `state` (served at `/openapi.json`).
pub fn router(state: AppState) -> Router {
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
    let ops = OpenApiRouter::new()
        .routes(routes!(admin::healthz))
        .routes(routes!(admin::readyz))
        .routes(routes!(admin::prometheus))
        .route("/openapi.json", get(openapi_json));
    let (app, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api)
        .merge(ops)
        .split_for_parts();
    state.set_openapi_json(openapi::to_bytes(&openapi::finish(&doc, &limits)));

    let docs = SwaggerUi::new("/docs").config(Config::from("/openapi.json"));
    app.merge(docs)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .route_layer(axum::middleware::from_fn(metrics::tag_route))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(
                    header::HeaderName::from_static(REQUEST_ID),
                    MakeRequestUuid,
                ))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request<_>| {
                            let id = req
                                .headers()
                                .get(REQUEST_ID)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-");
                            tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
                        })
                        .on_request(())
                        .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                        .on_failure(DefaultOnFailure::new().level(Level::WARN)),
                )
                .layer(PropagateRequestIdLayer::new(header::HeaderName::from_static(
                    REQUEST_ID,
                )))
                .layer(axum::middleware::from_fn(metrics::track))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal("a handler panicked".into()).into_response()
                })),
        )
        .with_state(state)
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
