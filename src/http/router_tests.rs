//! In-process router tests (`tower::ServiceExt::oneshot`, no socket) over the real bitcask
//! engine in a temporary directory: the states a black-box test cannot reach on purpose
//! (engine not yet open, a job already running, a request holding the last in-flight slot).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use tower::ServiceExt;

use super::{AppState, Exec, ExecMode, Limits, router};
use crate::engine::{
    self, BatchOp, BatchResult, Engine, EngineKind, EngineOptions, JobHandle, JobStatus, ListPage,
    MergeReport, Meta, Precondition, PutOptions, SnapshotInfo, SnapshotReport, Stats, SyncPolicy,
    Value, Version, Written,
};
use crate::error::{Error, Result};

/// The real engine, except that starting a job fails with `Busy` while `held` is set: the
/// state "a job of this kind already runs", which a real merge of a small store leaves too
/// quickly to be caught.
struct HeldJobs {
    inner: Arc<dyn Engine>,
    held: std::sync::atomic::AtomicBool,
}

impl HeldJobs {
    fn busy(&self, name: &'static str) -> Result<()> {
        if self.held.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Busy(name));
        }
        Ok(())
    }
}

impl Engine for HeldJobs {
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.inner.get(key)
    }
    fn head(&self, key: &[u8]) -> Result<Option<Meta>> {
        self.inner.head(key)
    }
    fn put(&self, key: &[u8], value: Bytes, opts: PutOptions) -> Result<Written> {
        self.inner.put(key, value, opts)
    }
    fn delete(&self, key: &[u8], precondition: Precondition) -> Result<Option<Version>> {
        self.inner.delete(key, precondition)
    }
    fn apply_batch_checked(
        &self,
        checks: &[(Vec<u8>, crate::engine::Precondition)],
        ops: Vec<BatchOp>,
    ) -> Result<Vec<BatchResult>> {
        self.inner.apply_batch_checked(checks, ops)
    }
    fn list_range(
        &self,
        range: &crate::engine::KeyRange<'_>,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ListPage> {
        self.inner.list_range(range, start_after, limit)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
    fn stats(&self) -> Result<Stats> {
        self.inner.stats()
    }
    fn merge(&self) -> Result<MergeReport> {
        self.busy("merge")?;
        self.inner.merge()
    }
    fn snapshot(&self) -> Result<SnapshotReport> {
        self.busy("snapshot")?;
        self.inner.snapshot()
    }
    fn start_merge(&self) -> Result<JobHandle<MergeReport>> {
        self.busy("merge")?;
        self.inner.start_merge()
    }
    fn start_snapshot(&self) -> Result<JobHandle<SnapshotReport>> {
        self.busy("snapshot")?;
        self.inner.start_snapshot()
    }
    fn jobs(&self) -> JobStatus {
        self.inner.jobs()
    }
    fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        self.inner.snapshots()
    }
    fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

fn open(dir: &std::path::Path) -> Arc<dyn Engine> {
    engine::open(&EngineOptions {
        kind: EngineKind::Bitcask,
        dir: dir.to_path_buf(),
        sync: SyncPolicy::Never,
        ..EngineOptions::default()
    })
    .expect("open bitcask")
}

async fn send(app: &Router, method: &str, uri: &str, body: Body) -> (StatusCode, String, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, ct, bytes)
}

#[tokio::test]
async fn not_ready_until_the_engine_is_open_and_again_when_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = Exec {
        reads: ExecMode::Inline,
        writes: ExecMode::Blocking,
        pool: None,
    };
    let state = AppState::new(Limits::default(), exec, super::metrics::install());
    let app = router(state.clone());
    let (st, ct, _) = send(&app, "GET", "/readyz", Body::empty()).await;
    assert_eq!(
        (st, ct.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "application/problem+json")
    );
    assert_eq!(
        send(&app, "GET", "/healthz", Body::empty()).await.0,
        StatusCode::OK
    );
    let (st, _, _) = send(&app, "GET", "/kv/x", Body::empty()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);

    state.set_engine(open(dir.path()));
    assert_eq!(
        send(&app, "GET", "/readyz", Body::empty()).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "PUT", "/kv/x", Body::from("1")).await.0,
        StatusCode::CREATED
    );
    let (st, _, body) = send(&app, "GET", "/kv/x", Body::empty()).await;
    assert_eq!((st, body.as_ref()), (StatusCode::OK, &b"1"[..]));

    state.set_stopping();
    assert_eq!(
        send(&app, "GET", "/readyz", Body::empty()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn a_second_job_of_a_kind_is_409() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(HeldJobs {
        inner: open(dir.path()),
        held: std::sync::atomic::AtomicBool::new(false),
    });
    let state = AppState::with_engine(engine.clone(), Limits::default());
    let app = router(state.clone());
    for path in ["/admin/merge", "/admin/snapshot"] {
        engine.held.store(true, std::sync::atomic::Ordering::SeqCst);
        let (st, ct, body) = send(&app, "POST", path, Body::empty()).await;
        assert_eq!(
            st,
            StatusCode::CONFLICT,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(ct, "application/problem+json");
        engine
            .held
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let (st, _, body) = send(&app, "POST", &format!("{path}?wait=true"), Body::empty()).await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test]
async fn every_exec_mode_serves() {
    for (reads, writes) in [
        (ExecMode::Inline, ExecMode::Inline),
        (ExecMode::Blocking, ExecMode::Blocking),
        (ExecMode::Pool, ExecMode::Pool),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = Some(Arc::new(crate::exec::Pool::new(2).expect("pool")));
        let state = AppState::new(
            Limits::default(),
            Exec {
                reads,
                writes,
                pool,
            },
            None,
        );
        state.set_engine(open(dir.path()));
        let app = router(state);
        assert_eq!(
            send(&app, "PUT", "/kv/k", Body::from("v")).await.0,
            StatusCode::CREATED
        );
        let (st, _, body) = send(&app, "GET", "/kv/k", Body::empty()).await;
        assert_eq!(
            (st, body.as_ref()),
            (StatusCode::OK, &b"v"[..]),
            "{reads:?}"
        );
    }
}

/// A body that never delivers anything: its request stays in flight.
struct Stalled;

impl HttpBody for Stalled {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn load_beyond_max_in_flight_is_shed_with_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        max_in_flight: 1,
        ..Limits::default()
    };
    let state = AppState::with_engine(open(dir.path()), limits);
    let app = router(state);
    // On this single-threaded test runtime, one yield lets the spawned request run until it
    // waits for its body, holding the only slot.
    let stalled = tokio::spawn({
        let app = app.clone();
        async move { send(&app, "PUT", "/kv/slow", Body::new(Stalled)).await }
    });
    tokio::task::yield_now().await;
    assert!(!stalled.is_finished(), "the stalled request is in flight");
    let (st, ct, body) = send(&app, "GET", "/kv/other", Body::empty()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ct, "application/problem+json");
    assert!(String::from_utf8_lossy(&body).contains("overloaded"));
    // Probes are never shed.
    assert_eq!(
        send(&app, "GET", "/readyz", Body::empty()).await.0,
        StatusCode::OK
    );
    stalled.abort();
}

#[tokio::test]
async fn served_openapi_is_the_generated_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = AppState::with_engine(open(dir.path()), Limits::default());
    let app = router(state.clone());
    let (st, ct, body) = send(&app, "GET", "/openapi.json", Body::empty()).await;
    assert_eq!((st, ct.as_str()), (StatusCode::OK, "application/json"));
    assert_eq!(Some(&body), state.openapi_json());
}
