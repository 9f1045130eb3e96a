//! The state every handler shares.
//!
//! Owns [`AppState`]: the engine handle once it is open, readiness, limits, the metrics handle,
//! and [`AppState::call`], which runs an engine call where [`crate::exec::Exec`] says and maps
//! its errors for HTTP, counting the calls that met damaged data. Background jobs are the engine's own (`Engine::start_merge`); no job
//! state lives here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;

use super::error::ApiError;
use crate::engine::Engine;
use crate::error::Error;
use crate::exec::ExecError;
pub use crate::exec::{CallKind, Exec, ExecMode};

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Stopped => ApiError::Engine(Error::Closed),
            ExecError::Panicked(msg) => ApiError::Internal(msg),
        }
    }
}

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

struct Inner {
    engine: OnceLock<Arc<dyn Engine>>,
    stopping: AtomicBool,
    poisoned: AtomicBool,
    corrupt_reads: AtomicU64,
    resp_addr: OnceLock<std::net::SocketAddr>,
    limits: Limits,
    exec: Exec,
    metrics: Option<PrometheusHandle>,
    openapi_json: OnceLock<Bytes>,
    watch: super::watch::WatchHub,
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

impl AppState {
    /// State with no engine yet (readiness 503 until [`AppState::set_engine`]).
    pub fn new(limits: Limits, exec: Exec, metrics: Option<PrometheusHandle>) -> Self {
        AppState(Arc::new(Inner {
            engine: OnceLock::new(),
            stopping: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            corrupt_reads: AtomicU64::new(0),
            resp_addr: OnceLock::new(),
            limits,
            exec,
            metrics,
            openapi_json: OnceLock::new(),
            watch: super::watch::WatchHub::default(),
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
        self.0.watch.attach(&*engine);
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
        self.0.watch.stop();
        super::metrics::record_ready(false);
    }

    /// Open, not stopping, and not refusing writes after an I/O failure.
    pub fn is_ready(&self) -> bool {
        self.0.engine.get().is_some()
            && !self.0.stopping.load(Ordering::SeqCst)
            && !self.0.poisoned.load(Ordering::SeqCst)
    }

    /// Engine calls that met a record failing its checksum since the server started. Any
    /// such call means the store holds damaged data (see docs/operations.md).
    pub fn corrupt_reads(&self) -> u64 {
        self.0.corrupt_reads.load(Ordering::Relaxed)
    }

    /// Records where the Redis protocol listener listens (shown in `/admin/stats`).
    pub fn set_resp_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.0.resp_addr.set(addr);
    }

    /// The Redis protocol listener's address, when it is on.
    pub fn resp_addr(&self) -> Option<std::net::SocketAddr> {
        self.0.resp_addr.get().copied()
    }

    /// Watchers and blocking reads: options, cap, wake-ups (see [`super::watch`]).
    pub fn watch(&self) -> &super::watch::WatchHub {
        &self.0.watch
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

    /// Runs a write that returns a durability ticket (the engine's `*_deferred` calls): the
    /// write is appended inline on this task (cheap: no fsync, no thread hop), then its ticket
    /// is awaited, so no thread is parked while the group commit makes it durable. With
    /// `sync=never` the ticket is ready at once. Errors are mapped as in [`AppState::call`].
    ///
    /// # Errors
    /// 503 before the engine is open; the engine's error otherwise.
    pub async fn call_write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&dyn Engine) -> crate::Result<(T, crate::engine::Ticket)>,
    {
        let engine = self.engine_handle().ok_or(ApiError::NotReady)?;
        // One span over the append and the wait for durability (the sync wait).
        let span = crate::telemetry::engine_call(CallKind::Write);
        let result = match span.in_scope(|| f(&*engine)) {
            Ok((value, ticket)) => tracing::Instrument::instrument(ticket, span)
                .await
                .map(|()| value),
            // A refusal may rest on a write not durable yet: answer it once that write is.
            Err(e @ Error::PreconditionFailed { .. }) => {
                self.call(CallKind::Write, |e| e.durable_barrier()).await?;
                Err(e)
            }
            Err(e) => Err(e),
        };
        self.observe(result)
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
        let span = crate::telemetry::engine_call(kind);
        let (queued, inner) = (crate::telemetry::clock(&span), span.clone());
        let call = move || {
            crate::telemetry::record_queue(&inner, queued);
            inner.in_scope(|| f(&*engine))
        };
        let result = tracing::Instrument::instrument(self.0.exec.run(kind, call), span).await?;
        self.observe(result)
    }

    /// Notes what an engine error says about the store (poisoned, damaged data), then maps it.
    fn observe<T>(&self, result: crate::Result<T>) -> Result<T, ApiError> {
        match &result {
            Err(Error::Poisoned(_)) => {
                self.0.poisoned.store(true, Ordering::SeqCst);
                super::metrics::record_ready(false);
            }
            Err(Error::Corrupted { .. }) => {
                self.0.corrupt_reads.fetch_add(1, Ordering::Relaxed);
                super::metrics::record_corrupt_read();
            }
            _ => {}
        }
        result.map_err(ApiError::from)
    }
}
