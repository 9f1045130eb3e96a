//! Operations routes: `/admin/merge`, `/admin/snapshot`, `/admin/stats`, `/metrics`,
//! `/healthz`, `/readyz`.
//!
//! Owns how background jobs are started from HTTP (on a blocking thread, one of each kind at a
//! time: 409 otherwise; 202 with a status document, or 200 with the result under `?wait=true`)
//! and how their state is reported (from [`Engine::jobs`](crate::engine::Engine::jobs)).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::dto::{Health, MergeStatus, SnapshotStatus, StatsDto, merge_status, snapshot_status};
use super::error::{ApiError, Problem};
use super::extract::{Query, WaitQuery};
use super::metrics;
use super::state::{AppState, CallKind};

/// A background job the admin API starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobKind {
    /// Merge (bitcask) or log rewrite (memory).
    Merge,
    /// Point-in-time snapshot.
    Snapshot,
}

impl JobKind {
    /// Its status route.
    fn path(self) -> &'static str {
        match self {
            JobKind::Merge => "/admin/merge",
            JobKind::Snapshot => "/admin/snapshot",
        }
    }
}

/// The status document of a job, as JSON.
async fn status_doc(state: &AppState, kind: JobKind) -> Result<serde_json::Value, ApiError> {
    let (jobs, kept) = state
        .call(CallKind::Read, move |e| {
            let kept = match kind {
                JobKind::Merge => Vec::new(),
                JobKind::Snapshot => e.snapshots()?,
            };
            Ok((e.jobs(), kept))
        })
        .await?;
    let doc = match kind {
        JobKind::Merge => serde_json::to_value(merge_status(&jobs)),
        JobKind::Snapshot => serde_json::to_value(snapshot_status(&jobs, &kept)),
    };
    doc.map_err(|e| ApiError::Internal(format!("status document: {e}")))
}

/// Starts a job (or runs it to the end under `wait`). The engine claims the job and marks it
/// running before `start_*` returns, so the status answered here is the engine's own.
async fn start(state: AppState, kind: JobKind, query: WaitQuery) -> Result<Response, ApiError> {
    let wait = query.wait.unwrap_or(false);
    let engine = state.engine_handle().ok_or(ApiError::NotReady)?;
    // On a blocking thread: starting claims a lock, and `wait` blocks until the job ends. The
    // request's span goes along, so the engine's `job` span is its child in a trace.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || -> crate::Result<()> {
        let _in_request = span.enter();
        match kind {
            JobKind::Merge => {
                let job = engine.start_merge()?;
                if wait {
                    job.wait()?;
                }
            }
            JobKind::Snapshot => {
                let job = engine.start_snapshot()?;
                if wait {
                    job.wait()?;
                }
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("job task: {e}")))??;
    if wait {
        let doc = status_doc(&state, kind).await?;
        return Ok((StatusCode::OK, Json(doc)).into_response());
    }
    let doc = status_doc(&state, kind).await?;
    let location = HeaderValue::from_static(kind.path());
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(doc),
    )
        .into_response())
}

/// Starts a merge (bitcask) or log rewrite (memory).
#[utoipa::path(
    post,
    path = "/admin/merge",
    tag = "admin",
    params(WaitQuery),
    responses(
        (status = 202, description = "Started; poll `GET /admin/merge`.", body = MergeStatus,
            headers(("Location" = String, description = "Where to poll: /admin/merge."))),
        (status = 200, description = "Finished (with `?wait=true`).", body = MergeStatus),
        (status = 400, description = "Bad query parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A merge is already running.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "With `?wait=true`: the merge met a record failing its checksum (type `corrupted`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "Disk full.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start_merge(
    State(state): State<AppState>,
    Query(query): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    start(state, JobKind::Merge, query).await
}

/// State of the current or last merge.
#[utoipa::path(
    get,
    path = "/admin/merge",
    tag = "admin",
    responses(
        (status = 200, description = "Idle, running (with progress), done (with the report) or failed.", body = MergeStatus),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn merge_state(State(state): State<AppState>) -> Result<Json<MergeStatus>, ApiError> {
    let jobs = state.call(CallKind::Read, |e| Ok(e.jobs())).await?;
    Ok(Json(merge_status(&jobs)))
}

/// Takes a point-in-time snapshot.
#[utoipa::path(
    post,
    path = "/admin/snapshot",
    tag = "admin",
    params(WaitQuery),
    responses(
        (status = 202, description = "Started; poll `GET /admin/snapshot`.", body = SnapshotStatus,
            headers(("Location" = String, description = "Where to poll: /admin/snapshot."))),
        (status = 200, description = "Finished (with `?wait=true`).", body = SnapshotStatus),
        (status = 400, description = "Bad query parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A snapshot is already running.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "Disk full.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start_snapshot(
    State(state): State<AppState>,
    Query(query): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    start(state, JobKind::Snapshot, query).await
}

/// State of the current or last snapshot, and the snapshots kept.
#[utoipa::path(
    get,
    path = "/admin/snapshot",
    tag = "admin",
    responses(
        (status = 200, description = "Job state and the snapshots on disk, oldest first.", body = SnapshotStatus),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn snapshot_state(
    State(state): State<AppState>,
) -> Result<Json<SnapshotStatus>, ApiError> {
    let (jobs, kept) = state
        .call(CallKind::Read, |e| Ok((e.jobs(), e.snapshots()?)))
        .await?;
    Ok(Json(snapshot_status(&jobs, &kept)))
}

/// Engine statistics.
#[utoipa::path(
    get,
    path = "/admin/stats",
    tag = "admin",
    responses(
        (status = 200, description = "Keys, bytes, files, fragmentation, jobs, sync mode.", body = StatsDto),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stats(State(state): State<AppState>) -> Result<Json<StatsDto>, ApiError> {
    let (s, kept) = state
        .call(CallKind::Read, |e| Ok((e.stats()?, e.snapshots()?)))
        .await?;
    metrics::record_engine(&s);
    Ok(Json(
        StatsDto::new(&s, &kept)
            .with_corrupt_reads(state.corrupt_reads())
            .with_resp_listen(state.resp_addr()),
    ))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain"))
)]
pub async fn prometheus(State(state): State<AppState>) -> Response {
    if state.is_ready()
        && let Ok(s) = state.call(CallKind::Read, |e| e.stats()).await
    {
        metrics::record_engine(&s);
    }
    metrics::record_ready(state.is_ready());
    let body = state.metrics().map(|h| h.render()).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "Alive.", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        corrupt_reads: None,
    })
}

/// Readiness: recovered and accepting writes.
///
/// A store where a read met damaged data stays ready (200, `status: damaged`): the other keys
/// are served, and taking the only replica out of rotation would turn one bad record into a
/// full outage. Alert on `hoardhaven_corrupt_reads_total` instead.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready (`ready`), or serving with damaged records found by reads (`damaged`).", body = Health),
        (status = 503, description = "Starting (recovering), stopping, or refusing writes.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.is_ready() {
        let n = state.corrupt_reads();
        Ok(Json(Health {
            status: if n > 0 { "damaged" } else { "ready" }.into(),
            corrupt_reads: (n > 0).then_some(n),
        }))
    } else {
        Err(ApiError::NotReady)
    }
}
