//! The peer listener's routes, `/raft/*`: Raft RPCs from other nodes and the calls followers
//! make to the leader (forwarded writes, read index, membership changes, join).
//!
//! Owns the router served on `--peer-listen`. Bodies are postcard (see [`super::network`]).
//! When a cluster secret is configured every call must carry it as `Authorization: Bearer`;
//! a call without it, or with another, gets 401 and reaches no Raft code.

// axum `Response` is the early return of these helpers: boxing it would only move the allocation.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::node::{AdminOp, Node};
use super::types::Command;

fn ok<T: Serialize>(v: &T) -> Response {
    match postcard::to_allocvec(v) {
        Ok(b) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            b,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    postcard::from_bytes(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("undecodable body: {e}")).into_response())
}

async fn secret_guard(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    if let Some(secret) = &node.secret {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                "the cluster secret is missing or wrong",
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn append(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => ok(&node.raft.append_entries(req).await),
        Err(r) => r,
    }
}

async fn vote(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => ok(&node.raft.vote(req).await),
        Err(r) => r,
    }
}

async fn snapshot(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => ok(&node.raft.install_snapshot(req).await),
        Err(r) => r,
    }
}

async fn forward(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match decode::<Command>(&body) {
        Ok(cmd) => ok(&node.write_here(cmd).await),
        Err(r) => r,
    }
}

async fn read_index(State(node): State<Arc<Node>>) -> Response {
    ok(&node.read_index_here().await)
}

async fn admin(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match decode::<AdminOp>(&body) {
        Ok(op) => ok(&node.admin_here(op).await),
        Err(r) => r,
    }
}

/// The `/raft/*` router.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/forward", post(forward))
        .route("/raft/read-index", post(read_index))
        .route("/raft/admin", post(admin))
        .layer(axum::extract::DefaultBodyLimit::max(512 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&node),
            secret_guard,
        ))
        .with_state(node)
}
