//! The client-facing cluster layer: `/cluster` membership routes, the read barrier in front
//! of read routes, and the `X-Hoardhaven-Leader` header on every response.
//!
//! Owns [`wrap`], which puts the above around the single-node router: the handlers stay as
//! they are. Reads (`GET`/`HEAD` on `/kv`, `POST /mget`) wait for the read barrier unless the
//! query says `consistency=stale` (the parameter is taken off before the handler sees it);
//! without a quorum they answer 503 with Retry-After, never a stale 200.

// axum `Response` is the early return of these helpers: boxing it would only move the allocation.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;

use super::node::{AdminError, AdminOp, Node};
use super::types::{NodeId, NodeInfo};
use crate::engine::Error as EngineError;
use crate::http::ApiError;
#[allow(unused_imports)] // named in the utoipa attributes
use crate::http::error::Problem;

/// Where the node appears once started (the router is built before).
pub type Slot = Arc<OnceLock<Arc<Node>>>;

/// The leader header.
pub const LEADER_HEADER: &str = "x-hoardhaven-leader";

fn node_of(slot: &Slot) -> Result<Arc<Node>, Response> {
    slot.get()
        .cloned()
        .ok_or_else(|| ApiError::NotReady.into_response())
}

fn admin_result(r: Result<String, AdminError>) -> Response {
    match r {
        Ok(msg) => (StatusCode::OK, Json(serde_json::json!({ "result": msg }))).into_response(),
        Err(AdminError::Conflict(m)) => ApiError::ClusterConflict(m).into_response(),
        Err(AdminError::NotFound(m)) => ApiError::NoSuchMember(m).into_response(),
        Err(e @ (AdminError::Unavailable(_) | AdminError::NotLeader { .. })) => {
            ApiError::Engine(EngineError::Unavailable(e.to_string())).into_response()
        }
    }
}

/// This node's view of the cluster: its state and term, the leader, voters and learners
/// (with each one's replication lag on the leader), and its log indexes.
#[utoipa::path(
    get,
    path = "/cluster",
    tag = "cluster",
    responses(
        (status = 200, description = "`node_id`, `state` (leader, follower, candidate, learner), `term`, `leader` (`node_id`, `api_url`, `peer_url`), `voters` and `learners` (`node_id`, URLs, `matched_index`, `lag`), `last_log_index`, `first_log_index`, `commit_index`, `applied_index`, `snapshot_index`, `purged_index`.", body = Object),
        (status = 503, description = "The node is starting.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn status(State(slot): State<Slot>) -> Response {
    match node_of(&slot) {
        Ok(n) => Json(n.status()).into_response(),
        Err(r) => r,
    }
}

/// Makes this node a one-voter cluster (what `--cluster-init` does on first start).
#[utoipa::path(
    post,
    path = "/cluster/init",
    tag = "cluster",
    responses(
        (status = 200, description = "Initialized: `{\"result\": \"...\"}`.", body = Object),
        (status = 409, description = "Already initialized (type `cluster-conflict`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting, or no leader / quorum in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn init(State(slot): State<Slot>) -> Response {
    match node_of(&slot) {
        Ok(n) => admin_result(
            n.init()
                .await
                .map(|()| format!("node {} initialized a one-voter cluster", n.id)),
        ),
        Err(r) => r,
    }
}

/// Body of `POST /cluster/learners`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LearnerBody {
    /// The new node's id.
    pub node_id: NodeId,
    /// Its peer URL.
    pub peer_url: String,
    /// Its client API URL.
    pub api_url: String,
}

/// Adds a node as a learner (it receives the log, or a snapshot, but does not vote); the
/// call returns once the learner has caught up. Promote it with `POST /cluster/voters/{id}`.
#[utoipa::path(
    post,
    path = "/cluster/learners",
    tag = "cluster",
    request_body = LearnerBody,
    responses(
        (status = 200, description = "Added and caught up.", body = Object),
        (status = 400, description = "Bad body.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id or a URL is already a member's (type `cluster-conflict`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No leader or quorum in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn add_learner(
    State(slot): State<Slot>,
    body: Result<Json<LearnerBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return ApiError::BadRequest(e.body_text()).into_response(),
    };
    match node_of(&slot) {
        Ok(n) => admin_result(
            n.admin(AdminOp::AddLearner {
                id: b.node_id,
                info: NodeInfo {
                    peer_url: b.peer_url,
                    api_url: b.api_url,
                },
            })
            .await,
        ),
        Err(r) => r,
    }
}

fn parse_id(id: &str) -> Result<NodeId, Response> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("`{id}` is not a node id")).into_response())
}

/// Makes a learner a voter (a joint-consensus membership change).
#[utoipa::path(
    post,
    path = "/cluster/voters/{id}",
    tag = "cluster",
    params(("id" = u64, Path, description = "The learner's node id.")),
    responses(
        (status = 200, description = "Promoted.", body = Object),
        (status = 400, description = "Not a node id.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such learner.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No leader or quorum in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn promote(State(slot): State<Slot>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    match node_of(&slot) {
        Ok(n) => admin_result(n.admin(AdminOp::Promote { id }).await),
        Err(r) => r,
    }
}

/// Removes a voter or learner from the cluster (never the last voter).
#[utoipa::path(
    delete,
    path = "/cluster/members/{id}",
    tag = "cluster",
    params(("id" = u64, Path, description = "The member's node id.")),
    responses(
        (status = 200, description = "Removed.", body = Object),
        (status = 400, description = "Not a node id.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such member.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is the last voter (type `cluster-conflict`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No leader or quorum in time.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn remove(State(slot): State<Slot>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    match node_of(&slot) {
        Ok(n) => admin_result(n.admin(AdminOp::Remove { id }).await),
        Err(r) => r,
    }
}

fn is_read(method: &Method, path: &str) -> bool {
    let kv = path == "/kv" || path.starts_with("/kv/");
    ((method == Method::GET || method == Method::HEAD) && kv)
        || (method == Method::POST && path == "/mget")
}

/// Takes `consistency=...` out of the query; returns its value.
fn take_consistency(uri: &Uri) -> (Option<String>, Option<Uri>) {
    let Some(q) = uri.query() else {
        return (None, None);
    };
    let mut value = None;
    let rest: Vec<&str> = q
        .split('&')
        .filter(|p| match p.strip_prefix("consistency=") {
            Some(v) => {
                value = Some(v.to_string());
                false
            }
            None => *p != "consistency",
        })
        .collect();
    if value.is_none() && !q.split('&').any(|p| p == "consistency") {
        return (None, None);
    }
    let pq = if rest.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    };
    (Some(value.unwrap_or_default()), pq.parse().ok())
}

async fn barrier(State(slot): State<Slot>, mut req: Request, next: Next) -> Response {
    let node = slot.get().cloned();
    if is_read(req.method(), req.uri().path()) {
        let (consistency, stripped) = take_consistency(req.uri());
        if let Some(u) = stripped {
            *req.uri_mut() = u;
        }
        let stale = match consistency.as_deref() {
            None | Some("linearizable") => false,
            Some("stale") => true,
            Some(other) => {
                return ApiError::BadRequest(format!(
                    "consistency must be `linearizable` or `stale`, not `{other}`"
                ))
                .into_response();
            }
        };
        if !stale {
            match &node {
                Some(n) => {
                    if let Err(e) = n.read_barrier().await {
                        let mut r = ApiError::Engine(e).into_response();
                        add_leader(&mut r, n);
                        return r;
                    }
                }
                None => {
                    return ApiError::Engine(EngineError::Unavailable(
                        "the cluster node is starting".into(),
                    ))
                    .into_response();
                }
            }
        }
    }
    let mut resp = next.run(req).await;
    if let Some(n) = &node {
        add_leader(&mut resp, n);
    }
    resp
}

fn add_leader(resp: &mut Response, node: &Node) {
    if let Some((_, info)) = node.leader()
        && let Ok(v) = HeaderValue::from_str(&info.api_url)
    {
        resp.headers_mut().insert(LEADER_HEADER, v);
    }
}

/// Adds the `/cluster` routes (behind `auth` when tokens are on) and the read barrier to
/// `app`.
pub fn wrap(app: Router, slot: Slot, auth: Option<Arc<crate::http::auth::Auth>>) -> Router {
    let mut routes = Router::new()
        .route("/cluster", get(status))
        .route("/cluster/init", post(init))
        .route("/cluster/learners", post(add_learner))
        .route("/cluster/voters/{id}", post(promote))
        .route("/cluster/members/{id}", delete(remove))
        .with_state(Arc::clone(&slot));
    if let Some(a) = auth {
        routes = routes.route_layer(axum::middleware::from_fn_with_state(
            a,
            crate::http::auth::require,
        ));
    }
    routes
        .merge(app)
        .layer(axum::middleware::from_fn_with_state(slot, barrier))
}
