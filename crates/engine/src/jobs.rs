//! Background jobs (merge or log rewrite, and snapshot) as the engines own them.
//!
//! Owns the one-at-a-time claim on a job kind ([`Claim`]), the bookkeeping of a job's state
//! from running to done or failed (written once here for both engines), and [`JobHandle`]:
//! what [`Engine::start_merge`](crate::Engine::start_merge) and
//! [`Engine::start_snapshot`](crate::Engine::start_snapshot) return. When those return, the job
//! is already claimed and marked running, so a status read right after never says idle and a
//! second start gets [`Error::Busy`]; the work itself runs on a thread of its own and
//! [`JobHandle::wait`] gives its result to callers that want it.

use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{ArcMutexGuard, Mutex, RawMutex};

use crate::error::{Error, Result};
use crate::{JobState, Progress, UnixMillis};

/// The lock a job kind is claimed through (shared so a claim can move to the job's thread).
pub(crate) type JobLock = Arc<Mutex<()>>;

/// A new, unclaimed [`JobLock`].
pub(crate) fn job_lock() -> JobLock {
    Arc::new(Mutex::new(()))
}

/// The right to run a job of one kind, from its start until dropped.
pub(crate) struct Claim {
    _held: ArcMutexGuard<RawMutex, ()>,
    /// When the job started.
    pub(crate) started_at: UnixMillis,
}

impl Claim {
    /// Claims `lock` for the job `name`.
    ///
    /// # Errors
    /// [`Error::Busy`] while a job holding the same lock runs.
    pub(crate) fn try_take(lock: &JobLock, name: &'static str) -> Result<Claim> {
        let held = lock.try_lock_arc().ok_or(Error::Busy(name))?;
        Ok(Claim {
            _held: held,
            started_at: UnixMillis::now(),
        })
    }

    /// Waits for `lock` (used by close and by checkpoints that must happen).
    pub(crate) fn take(lock: &JobLock) -> Claim {
        Claim {
            _held: lock.lock_arc(),
            started_at: UnixMillis::now(),
        }
    }
}

impl<R: Clone> JobState<R> {
    /// A job that just started.
    pub(crate) fn started(started_at: UnixMillis) -> Self {
        JobState::Running {
            started_at,
            progress: Progress { done: 0, total: 0 },
        }
    }

    /// Records how a run that started at `started_at` ended; true when it succeeded (the caller
    /// counts completed runs).
    pub(crate) fn finish<E: std::fmt::Display>(
        &mut self,
        started_at: UnixMillis,
        result: &std::result::Result<R, E>,
    ) -> bool {
        match result {
            Ok(report) => {
                *self = JobState::Done(report.clone());
                true
            }
            Err(e) => {
                *self = JobState::Failed {
                    started_at,
                    error: e.to_string(),
                };
                false
            }
        }
    }
}

/// A background job that was started: it is running (or already over).
#[derive(Debug)]
pub struct JobHandle<R> {
    name: &'static str,
    thread: JoinHandle<Result<R>>,
}

impl<R> JobHandle<R> {
    /// True once the job has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Blocks until the job ends and returns its result.
    ///
    /// # Errors
    /// The job's own error; an I/O error naming the job if its thread panicked.
    pub fn wait(self) -> Result<R> {
        let name = self.name;
        self.thread.join().unwrap_or_else(|_| {
            Err(Error::io(
                format!("the {name} thread"),
                std::io::Error::other("panicked"),
            ))
        })
    }
}

/// Runs `job` on a thread of its own named after it; a failure is also logged, since nobody
/// may be waiting for it.
///
/// # Errors
/// When the thread cannot be started (the claim inside `job` is released then).
pub(crate) fn spawn<R: Send + 'static>(
    name: &'static str,
    job: impl FnOnce() -> Result<R> + Send + 'static,
) -> Result<JobHandle<R>> {
    // A span for traces (DEBUG: off unless the server exports traces): from start to end on
    // the job's thread, a child of whatever span started the job.
    let span = tracing::debug_span!("job", job = name, otel.name = name);
    let thread = std::thread::Builder::new()
        .name(format!("hh-{name}"))
        .spawn(move || {
            let _entered = span.enter();
            let result = job();
            if let Err(e) = &result {
                tracing::warn!(job = name, error = %e, "background job failed");
            }
            result
        })
        .map_err(|e| Error::io(format!("starting the {name} thread"), e))?;
    Ok(JobHandle { name, thread })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, EngineKind, EngineOptions, JobStatus, SyncPolicy};

    fn open(kind: EngineKind, dir: &std::path::Path) -> Arc<dyn Engine> {
        crate::open(&EngineOptions {
            kind,
            dir: dir.to_path_buf(),
            sync: SyncPolicy::Never,
            ..EngineOptions::default()
        })
        .expect("open")
    }

    fn not_idle(jobs: &JobStatus) -> (bool, bool) {
        (
            !matches!(jobs.merge, JobState::Idle),
            !matches!(jobs.snapshot, JobState::Idle),
        )
    }

    #[test]
    fn a_started_job_is_claimed_and_visible_before_start_returns() {
        for kind in [EngineKind::Bitcask, EngineKind::Memory] {
            let tmp = tempfile::tempdir().expect("tmp");
            let e = open(kind, tmp.path());
            e.put(b"k", bytes::Bytes::from_static(b"v"), Default::default())
                .expect("put");
            let merge = e.start_merge().expect("start merge");
            assert!(not_idle(&e.jobs()).0, "{kind}: merge idle after start");
            merge.wait().expect("merge");
            assert!(matches!(e.jobs().merge, JobState::Done(_)), "{kind}");
            let snap = e.start_snapshot().expect("start snapshot");
            assert!(not_idle(&e.jobs()).1, "{kind}: snapshot idle after start");
            snap.wait().expect("snapshot");
            assert!(matches!(e.jobs().snapshot, JobState::Done(_)), "{kind}");
            assert_eq!(e.jobs().snapshots_completed, 1, "{kind}");
            e.close().expect("close");
        }
    }

    #[test]
    fn a_claim_refuses_a_second_job_until_released() {
        let lock = job_lock();
        let first = Claim::try_take(&lock, "merge").expect("first");
        assert!(matches!(
            Claim::try_take(&lock, "merge"),
            Err(Error::Busy("merge"))
        ));
        // The claim moves to another thread and is released there.
        std::thread::spawn(move || drop(first))
            .join()
            .expect("join");
        Claim::try_take(&lock, "merge").expect("free again");
    }

    #[test]
    fn finish_records_done_or_failed() {
        let at = UnixMillis(5);
        let mut s: JobState<u32> = JobState::started(at);
        assert!(s.finish::<Error>(at, &Ok(7)));
        assert_eq!(s, JobState::Done(7));
        assert!(!s.finish(at, &Err::<u32, _>("boom")));
        assert_eq!(
            s,
            JobState::Failed {
                started_at: at,
                error: "boom".into()
            }
        );
    }
}
