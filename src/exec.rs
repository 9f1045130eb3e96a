//! Where engine calls run.
//!
//! Owns [`Exec`], the choice of where a possibly blocking engine call runs: inline on the
//! async worker, on tokio's blocking pool (`spawn_blocking`), or on a dedicated [`Pool`] of
//! threads; which choice is fastest for reads was measured (see `.env.example` and
//! docs/benchmarks.md). The HTTP handlers reach it through `http::AppState::call`; nothing
//! here knows about HTTP.
//!
//! Key writes (PUT, DELETE, `/batch`) no longer come here: they are appended inline and their
//! durability ticket is awaited (`http::AppState::call_write`), so no thread waits on an fsync
//! and `sync=never` writes make no thread hop. [`CallKind::Write`] (and `--exec-writes`) is
//! left for engine calls that block as a whole.

use std::fmt;
use std::str::FromStr;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// Why an engine call could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The pool's threads are gone (the server is stopping).
    #[error("the engine threads have stopped")]
    Stopped,
    /// The call panicked on its thread.
    #[error("engine call failed: {0}")]
    Panicked(String),
}

/// The kind of engine call, choosing its [`ExecMode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// A read.
    Read,
    /// A write (may wait for fsync).
    Write,
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

impl fmt::Display for ExecMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecMode::Inline => "inline",
            ExecMode::Blocking => "blocking",
            ExecMode::Pool => "pool",
        })
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
    ) -> Result<T, ExecError> {
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
                    .map_err(|_| ExecError::Stopped)?
                    .map_err(|_| ExecError::Stopped)?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(ExecError::Stopped);
            }
        }
        done_rx.await.map_err(|_| ExecError::Stopped)
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

impl Exec {
    /// Runs `f` where calls of `kind` run.
    ///
    /// # Errors
    /// [`ExecError`] when the call could not be run to its end.
    pub async fn run<T: Send + 'static>(
        &self,
        kind: CallKind,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ExecError> {
        let mode = match kind {
            CallKind::Read => self.reads,
            CallKind::Write => self.writes,
        };
        match (mode, &self.pool) {
            (ExecMode::Inline, _) => Ok(f()),
            (ExecMode::Pool, Some(pool)) => pool.run(f).await,
            (ExecMode::Blocking | ExecMode::Pool, _) => tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| ExecError::Panicked(e.to_string())),
        }
    }
}
