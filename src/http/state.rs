//! The state every handler shares, and how engine calls are run.
//!
//! Owns [`AppState`] (the engine handle once it is open, readiness, limits, the metrics handle)
//! and [`Exec`], the choice of where a possibly blocking engine call runs: inline on the async
//! worker, on tokio's blocking pool (`spawn_blocking`), or on a dedicated thread pool. Engine
//! calls may block on fsync, so writes must not run inline under `sync=always`; which choice
//! is fastest for reads and for writes was measured (see `.env.example` and the issue note).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;

use super::error::ApiError;
use crate::engine::Engine;
use crate::error::Error;

/// Request limits, all enforced before a body is buffered whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key in bytes (after percent-decoding).
    pub max_key_bytes: usize,
    /// Longest value in bytes.
    pub max_value_bytes: usize,
    /// Most operations in one `/batch` or keys in one `/mget`.
    pub max_batch_ops: usize,
    /// Largest JSON request body in bytes.
    pub max_body_bytes: usize,
    /// Most keys in one listing page (`limit` above this is clamped).
    pub max_list_limit: usize,
    /// Most requests served at once on the data and admin routes; more are shed with 503.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            max_batch_ops: 1000,
            max_body_bytes: 8 * 1024 * 1024,
            max_list_limit: 1000,
            max_in_flight: 1024,
        }
    }
}

/// Where engine calls run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecMode {
    /// On the async worker thread itself (fine for calls that never block long).
    Inline,
    /// On tokio's blocking thread pool.
    Blocking,
    /// On a dedicated pool of threads owned by the server.
    Pool,
}

impl FromStr for ExecMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "inline" => Ok(ExecMode::Inline),
            "blocking" => Ok(ExecMode::Blocking),
            "pool" => Ok(ExecMode::Pool),
            other => Err(format!(
                "expected `inline`, `blocking` or `pool`, got `{other}`"
            )),
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of threads taking jobs from one queue.
#[derive(Debug)]
pub struct Pool {
    tx: SyncSender<Job>,
}

impl Pool {
    /// Starts `threads` workers with a queue of `4 * threads` jobs.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads * 4);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("engine-{i}"))
                .spawn(move || worker(&rx))?;
        }
        Ok(Pool { tx })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done_tx.send(f());
        });
        // The queue is bounded: when it is full, wait on a blocking thread rather than stall
        // the async worker.
        let tx = self.tx.clone();
        match tx.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || tx.send(job))
                    .await
                    .map_err(|_| ApiError::Engine(Error::Closed))?
                    .map_err(|_| ApiError::Engine(Error::Closed))?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(ApiError::Engine(Error::Closed));
            }
        }
        done_rx.await.map_err(|_| ApiError::Engine(Error::Closed))
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// How reads and writes are dispatched.
#[derive(Clone, Debug)]
pub struct Exec {
    /// Mode for `get`, `head`, `list`, `mget`.
    pub reads: ExecMode,
    /// Mode for `put`, `delete`, `batch`.
    pub writes: ExecMode,
    /// The dedicated pool, when either mode uses it.
    pub pool: Option<Arc<Pool>>,
}

/// A background job the admin API starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Merge (bitcask) or log rewrite (memory).
    Merge,
    /// Point-in-time snapshot.
    Snapshot,
}

impl JobKind {
    /// Its name, as in messages.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Merge => "merge",
            JobKind::Snapshot => "snapshot",
        }
    }

    /// Its status route.
    pub fn path(self) -> &'static str {
        match self {
            JobKind::Merge => "/admin/merge",
            JobKind::Snapshot => "/admin/snapshot",
        }
    }
}

/// Marks a job as started from HTTP until dropped.
#[derive(Debug)]
pub struct JobGuard {
    state: AppState,
    kind: JobKind,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.state
            .job_flag(self.kind)
            .store(false, Ordering::SeqCst);
    }
}

struct Inner {
    engine: OnceLock<Arc<dyn Engine>>,
    merge_started: AtomicBool,
    snapshot_started: AtomicBool,
    stopping: AtomicBool,
    poisoned: AtomicBool,
    limits: Limits,
    exec: Exec,
    metrics: Option<PrometheusHandle>,
    openapi_json: OnceLock<Bytes>,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("ready", &self.is_ready())
            .field("limits", &self.0.limits)
            .finish_non_exhaustive()
    }
}

/// The kind of engine call, choosing its [`ExecMode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// A read.
    Read,
    /// A write (may wait for fsync).
    Write,
}

impl AppState {
    /// State with no engine yet (readiness 503 until [`AppState::set_engine`]).
    pub fn new(limits: Limits, exec: Exec, metrics: Option<PrometheusHandle>) -> Self {
        AppState(Arc::new(Inner {
            engine: OnceLock::new(),
            merge_started: AtomicBool::new(false),
            snapshot_started: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            limits,
            exec,
            metrics,
            openapi_json: OnceLock::new(),
        }))
    }

    /// State with an open engine, calls dispatched to tokio's blocking pool (tests, embedding).
    pub fn with_engine(engine: Arc<dyn Engine>, limits: Limits) -> Self {
        let exec = Exec {
            reads: ExecMode::Blocking,
            writes: ExecMode::Blocking,
            pool: None,
        };
        let state = AppState::new(limits, exec, super::metrics::install());
        state.set_engine(engine);
        state
    }

    /// Hands over the opened engine: from now on the store is ready.
    pub fn set_engine(&self, engine: Arc<dyn Engine>) {
        let _ = self.0.engine.set(engine);
        super::metrics::record_ready(self.is_ready());
    }

    /// The engine, if open (also while stopping: in-flight requests finish).
    pub fn engine_handle(&self) -> Option<Arc<dyn Engine>> {
        self.0.engine.get().cloned()
    }

    /// Marks the server as stopping: readiness turns 503.
    pub fn set_stopping(&self) {
        self.0.stopping.store(true, Ordering::SeqCst);
        super::metrics::record_ready(false);
    }

    /// Open, not stopping, and not refusing writes after an I/O failure.
    pub fn is_ready(&self) -> bool {
        self.0.engine.get().is_some()
            && !self.0.stopping.load(Ordering::SeqCst)
            && !self.0.poisoned.load(Ordering::SeqCst)
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    /// The Prometheus handle, when a recorder is installed.
    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.0.metrics.as_ref()
    }

    /// The served OpenAPI document (pretty JSON), set once the router is built.
    pub fn openapi_json(&self) -> Option<&Bytes> {
        self.0.openapi_json.get()
    }

    pub(super) fn set_openapi_json(&self, doc: Bytes) {
        let _ = self.0.openapi_json.set(doc);
    }

    fn job_flag(&self, kind: JobKind) -> &AtomicBool {
        match kind {
            JobKind::Merge => &self.0.merge_started,
            JobKind::Snapshot => &self.0.snapshot_started,
        }
    }

    /// Claims the right to start a job of this kind; `None` while one started here still runs.
    pub fn try_begin(&self, kind: JobKind) -> Option<JobGuard> {
        self.job_flag(kind)
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| JobGuard {
                state: self.clone(),
                kind,
            })
    }

    /// Runs an engine call where its kind says, mapping errors for HTTP.
    ///
    /// # Errors
    /// 503 before the engine is open; the engine's error otherwise.
    pub async fn call<T, F>(&self, kind: CallKind, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Engine) -> crate::Result<T> + Send + 'static,
    {
        let engine = self.engine_handle().ok_or(ApiError::NotReady)?;
        let mode = match kind {
            CallKind::Read => self.0.exec.reads,
            CallKind::Write => self.0.exec.writes,
        };
        let result = match (mode, &self.0.exec.pool) {
            (ExecMode::Inline, _) => f(&*engine),
            (ExecMode::Pool, Some(pool)) => pool.run(move || f(&*engine)).await?,
            (ExecMode::Blocking | ExecMode::Pool, _) => {
                tokio::task::spawn_blocking(move || f(&*engine))
                    .await
                    .map_err(|e| ApiError::Internal(format!("engine call failed: {e}")))?
            }
        };
        if let Err(Error::Poisoned(_)) = &result {
            self.0.poisoned.store(true, Ordering::SeqCst);
            super::metrics::record_ready(false);
        }
        result.map_err(ApiError::from)
    }
}
