//! The Redis-style memory engine: the whole data set in a sharded in-memory table, made
//! durable by an append-only log (AOF, optional) and point-in-time snapshots.
//!
//! Owns the engine's options, its open/close life cycle and the [`Engine`] operations. The
//! pieces live in sub-modules:
//! - `table`: the sharded hash table and its arenas (entries in memory, copy-on-write clones);
//! - `aof`: log records, the group-committing writer, the log reader;
//! - `snapshot`: snapshot files; `manifest`: which snapshot is the base, which logs follow;
//! - `recovery`: start-up; `checkpoint`: snapshots and log rewrites;
//! - `background`: the flusher, expiry sweeper and save-point threads;
//! - `codec`: checked byte parsing shared by the formats.
//!
//! File formats: `docs/format.md`, section "Memory engine", and the module docs.
//!
//! # Versions and consistency
//! A write takes the *cut lock* shared, then its shard's write lock, draws its version from
//! the engine-wide sequence, applies the change and appends its log record, all before
//! unlocking; it waits for durability only after unlocking. A snapshot takes the cut lock
//! exclusively for the few microseconds it needs to clone every shard's `Arc` and switch the
//! log to a new file, so a snapshot holds exactly the writes with versions up to its
//! `max_version`, and the new log exactly those after. A batch locks all its shards (in
//! ascending order) before applying anything, and is one log record.
//!
//! After a restart versions continue from `max(highest version recovered, now in µs)`, so a
//! version handed out before a crash is never reused even if its write was lost (no AOF, or
//! sync=never).

mod aof;
mod background;
mod checkpoint;
mod codec;
mod manifest;
mod recovery;
mod snapshot;
mod table;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use self::aof::{LogOp, LogWriter, MAX_RECORD, create_log, log_name};
use self::checkpoint::Kind;
use self::manifest::Manifest;
use self::table::Table;
use crate::dir_lock::DirLock;
use crate::error::{Error, Result};
use crate::jobs::{self, JobLock, job_lock};
use crate::{
    BatchOp, BatchResult, Engine, EngineKind, JobHandle, JobStatus, ListPage, MergeReport, Meta,
    Precondition, PutOptions, SnapshotInfo, SnapshotReport, Stats, SyncPolicy, UnixMillis, Value,
    Version, Written, check_key,
};

/// "Save after `after` if at least `changes` writes happened" (Redis's `save <s> <n>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavePoint {
    /// Time since the last snapshot.
    pub after: Duration,
    /// Writes since the last snapshot.
    pub changes: u64,
}

/// Memory-engine settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Keep the append-only log (`--aof on`, the default). Off = snapshots only (Redis's
    /// default): writes since the last snapshot are lost on a crash.
    pub aof: bool,
    /// Number of table shards (rounded up to a power of two). More shards: less lock
    /// contention and shorter copy-on-write pauses, a little more memory.
    pub shards: usize,
    /// When to take a snapshot in the background. Empty = only on demand.
    pub save_points: Vec<SavePoint>,
    /// Snapshots kept on disk (at least 1: the newest is the base recovery starts from).
    pub snapshots_kept: usize,
    /// Rewrite the log when it has grown by this percent of the base snapshot's size...
    pub rewrite_growth_percent: u64,
    /// ...and is at least this many bytes (Redis's auto-aof-rewrite-min-size).
    pub rewrite_min_bytes: u64,
    /// How often buffered log records are handed to the OS when the sync policy is not
    /// `always` (a process crash can lose at most this window; `always` loses nothing).
    pub flush_interval: Duration,
    /// How often the expiry sweeper and the save points are checked.
    pub sweep_interval: Duration,
    /// Most operations in one batch.
    pub max_batch_ops: usize,
    /// Most key + value bytes in one batch.
    pub max_batch_bytes: usize,
    /// Test hook: abort the process when a checkpoint reaches the named step
    /// (`log-created`, `cut`, `snapshot-written`, `snapshot-renamed`, `manifest-stored`,
    /// `cleaned`). Not for production use.
    #[doc(hidden)]
    pub crash_at: Option<String>,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            aof: true,
            shards: 64,
            save_points: vec![SavePoint {
                after: Duration::from_secs(60),
                changes: 1,
            }],
            snapshots_kept: 2,
            rewrite_growth_percent: 100,
            rewrite_min_bytes: 64 << 20,
            flush_interval: Duration::from_millis(10),
            sweep_interval: Duration::from_millis(100),
            max_batch_ops: 10_000,
            max_batch_bytes: 64 << 20,
            crash_at: None,
        }
    }
}

impl MemoryOptions {
    /// Checks the settings (also done by open).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, reason: &str| {
            Err(Error::InvalidConfig {
                name: format!("memory.{name}"),
                reason: reason.into(),
            })
        };
        if self.shards == 0 || self.shards > 1 << 16 {
            return bad("shards", "must be between 1 and 65536");
        }
        if self.snapshots_kept == 0 {
            return bad("snapshots_kept", "must be at least 1");
        }
        if self.flush_interval.is_zero() {
            return bad("flush_interval", "must be positive");
        }
        if self.sweep_interval.is_zero() {
            return bad("sweep_interval", "must be positive");
        }
        if self.max_batch_bytes > MAX_RECORD / 2 {
            return bad("max_batch_bytes", "must be below 2 GiB");
        }
        Ok(())
    }
}

/// Which files the engine is using now.
#[derive(Debug)]
struct FileState {
    manifest: Manifest,
    /// Sequence number of the log appended to (or the highest in use).
    log_seq: u64,
    next_snap: u64,
    base_keys: u64,
    base_bytes: u64,
}

pub(crate) struct Inner {
    dir: PathBuf,
    sync: SyncPolicy,
    opts: MemoryOptions,
    table: Table,
    cut: RwLock<()>,
    /// The last version handed out.
    seq: AtomicU64,
    log: Option<LogWriter>,
    files: Mutex<FileState>,
    /// Writes since the last snapshot's cut.
    dirty: AtomicU64,
    /// Log ops appended since the last cut.
    log_ops: AtomicU64,
    /// LSN at the last cut: the log has grown by `appended - this` since the base.
    log_base_lsn: AtomicU64,
    last_save: Mutex<Instant>,
    /// Claimed by a running checkpoint (snapshot or rewrite; one at a time, see [`crate::jobs`]).
    checkpoint: JobLock,
    jobs: Mutex<JobStatus>,
    closed: AtomicBool,
    stopping: Mutex<bool>,
    stop_cv: Condvar,
    lock: Mutex<Option<DirLock>>,
    snapshot_bytes_written: AtomicU64,
    corrupt_records: AtomicU64,
    poisoned: Mutex<Option<String>>,
}

/// Longest value the memory engine stores (its log and snapshots keep value lengths as `u32`).
pub const MAX_VALUE_LEN: usize = u32::MAX as usize;

/// Validates a value against the memory engine's limit.
///
/// # Errors
/// [`crate::Error::ValueTooLarge`].
fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(crate::Error::ValueTooLarge {
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

/// True for the names of the files a memory store keeps in its directory (manifest, logs,
/// snapshots), used to tell which engine a directory without a marker belongs to.
pub fn owns_file_name(name: &str) -> bool {
    name == manifest::MANIFEST
        || aof::parse_log_name(name).is_some()
        || snapshot::parse_snap_name(name).is_some()
}

/// The memory engine. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct MemoryEngine {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryEngine")
            .field("dir", &self.inner.dir)
            .field("sync", &self.inner.sync)
            .field("aof", &self.inner.opts.aof)
            .finish_non_exhaustive()
    }
}

impl MemoryEngine {
    /// Opens (recovering if needed) the memory engine in `dir`, locking the directory.
    ///
    /// # Errors
    /// [`Error::Locked`], [`Error::Corrupted`] naming file and offset, [`Error::UnsupportedFormat`],
    /// [`Error::InvalidConfig`], I/O errors.
    pub fn open(dir: &Path, sync: SyncPolicy, opts: &MemoryOptions) -> Result<Self> {
        opts.validate()?;
        let lock = DirLock::acquire(dir)?;
        let started = Instant::now();
        let rec = recovery::recover(dir, opts.shards)?;
        let mut log_seq = rec.log_seq;
        let log = if opts.aof {
            log_seq += 1;
            let file = create_log(dir, log_seq)?;
            Some(LogWriter::new(file, dir.join(log_name(log_seq)), sync))
        } else {
            None
        };
        tracing::info!(dir = %dir.display(), keys = rec.table.shards().iter().map(|s| s.read().len()).sum::<usize>(),
            log_records = rec.log_records, elapsed_ms = started.elapsed().as_millis() as u64,
            "memory engine recovered");
        let inner = Arc::new(Inner::new(dir, sync, opts, Some(lock), rec, log, log_seq));
        let threads = background::spawn(&inner)?;
        Ok(MemoryEngine {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// Opens the store in `dir` for reading only (see [`crate::open_read_only`], the public
    /// way in, which also refuses every write): the lock is taken shared, recovery changes no
    /// file (no manifest written, no log created, a torn tail left in place), and no
    /// background thread runs. Nothing counts as dirty, so `close` takes no snapshot.
    ///
    /// # Errors
    /// As [`MemoryEngine::open`].
    pub(crate) fn open_read_only(dir: &Path, opts: &MemoryOptions) -> Result<Self> {
        opts.validate()?;
        let lock = DirLock::acquire_shared(dir)?;
        let rec = recovery::recover_read_only(dir, opts.shards)?;
        let log_seq = rec.log_seq;
        let inner = Inner::new(dir, SyncPolicy::Never, opts, lock, rec, None, log_seq);
        inner.dirty.store(0, Ordering::Release);
        *inner.poisoned.lock() = Some(Error::ReadOnly.to_string());
        Ok(MemoryEngine {
            inner: Arc::new(inner),
            threads: Mutex::new(Vec::new()),
        })
    }
}

impl Inner {
    /// The shared state over a recovered store appending to `log` (none: no AOF, or
    /// read-only).
    fn new(
        dir: &Path,
        sync: SyncPolicy,
        opts: &MemoryOptions,
        lock: Option<DirLock>,
        rec: recovery::Recovered,
        log: Option<LogWriter>,
        log_seq: u64,
    ) -> Inner {
        let floor = UnixMillis::now().0.saturating_mul(1000);
        Inner {
            dir: dir.to_path_buf(),
            sync,
            opts: opts.clone(),
            seq: AtomicU64::new(rec.last_version.max(floor)),
            log,
            files: Mutex::new(FileState {
                manifest: rec.manifest,
                log_seq,
                next_snap: rec.next_snap,
                base_keys: rec.base_keys,
                base_bytes: rec.base_bytes,
            }),
            // Replayed log records are changes the next snapshot must capture.
            dirty: AtomicU64::new(rec.log_records),
            log_ops: AtomicU64::new(rec.log_records),
            // Logs replayed count as growth since the base.
            log_base_lsn: AtomicU64::new(0u64.wrapping_sub(rec.log_bytes)),
            table: rec.table,
            cut: RwLock::new(()),
            last_save: Mutex::new(Instant::now()),
            checkpoint: job_lock(),
            jobs: Mutex::new(JobStatus::default()),
            closed: AtomicBool::new(false),
            stopping: Mutex::new(false),
            stop_cv: Condvar::new(),
            lock: Mutex::new(lock),
            snapshot_bytes_written: AtomicU64::new(0),
            corrupt_records: AtomicU64::new(rec.torn_tails),
            poisoned: Mutex::new(None),
        }
    }
}

impl Inner {
    /// Fails when closed or poisoned. Called with the cut lock held shared, so that `close`
    /// (which takes it exclusively after setting `closed`) never misses a write.
    fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if let Some(msg) = self.poisoned.lock().as_ref() {
            return Err(Error::Poisoned(msg.clone()));
        }
        match &self.log {
            Some(log) => log.check(),
            None => Ok(()),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn poison(&self, e: &Error) {
        tracing::error!(error = %e, "memory engine poisoned: refusing writes until reopened");
        *self.poisoned.lock() = Some(e.to_string());
    }

    /// Test hook: abort at a named checkpoint step.
    fn step(&self, name: &str) {
        if self.opts.crash_at.as_deref() == Some(name) {
            tracing::error!(step = name, "crash_at hook: aborting the process");
            std::process::abort();
        }
    }

    fn log_append(&self, ops: &[LogOp<'_>]) -> Option<(u64, usize)> {
        let r = self.log.as_ref().map(|l| l.append(ops));
        self.log_ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
        self.dirty.fetch_add(1, Ordering::Relaxed);
        r
    }

    fn log_commit(&self, pending: Option<(u64, usize)>) -> Result<()> {
        match (&self.log, pending) {
            (Some(log), Some((lsn, n))) => log.commit(lsn, n),
            _ => Ok(()),
        }
    }

    fn next_versions(&self, n: u64) -> u64 {
        self.seq.fetch_add(n, Ordering::SeqCst) + 1
    }
}

fn record_fits(key: &[u8], value: &[u8]) -> Result<()> {
    let max = MAX_RECORD - 64 - key.len();
    if value.len() > max {
        return Err(Error::ValueTooLarge {
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn meta_of(e: &table::EntryRef<'_>) -> Meta {
    Meta {
        version: Version(e.version),
        expires_at: e.expires_at.map(UnixMillis),
        value_len: e.value.len() as u64,
    }
}

fn live(prev: Option<(u64, Option<u64>)>, now: u64) -> bool {
    matches!(prev, Some((_, exp)) if !matches!(exp, Some(t) if t <= now))
}

impl Engine for MemoryEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Memory
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let inner = &*self.inner;
        inner.check_open()?;
        check_key(key)?;
        let h = inner.table.hash(key);
        let g = inner.table.shards()[inner.table.shard_of(h)].read();
        Ok(g.get(h, key, UnixMillis::now().0).map(|e| Value {
            bytes: Bytes::copy_from_slice(e.value),
            meta: meta_of(&e),
        }))
    }

    fn head(&self, key: &[u8]) -> Result<Option<Meta>> {
        let inner = &*self.inner;
        inner.check_open()?;
        check_key(key)?;
        let h = inner.table.hash(key);
        let g = inner.table.shards()[inner.table.shard_of(h)].read();
        Ok(g.get(h, key, UnixMillis::now().0).map(|e| meta_of(&e)))
    }

    fn put(&self, key: &[u8], value: Bytes, opts: PutOptions) -> Result<Written> {
        let inner = &*self.inner;
        check_key(key)?;
        check_value(&value)?;
        record_fits(key, &value)?;
        let h = inner.table.hash(key);
        let shard = &inner.table.shards()[inner.table.shard_of(h)];
        let now = UnixMillis::now().0;
        let expires_at = opts.expires_at.map(|t| t.0);
        let (written, pending) = {
            let _cut = inner.cut.read();
            inner.check_writable()?;
            let mut g = shard.write();
            let current = g.get(h, key, now).map(|e| Version(e.version));
            opts.precondition.check(current)?;
            let version = inner.next_versions(1);
            Arc::make_mut(&mut g).put(inner.table.hasher(), h, key, &value, version, expires_at);
            let pending = inner.log_append(&[LogOp::Put {
                version,
                expires_at,
                key,
                value: &value,
            }]);
            let written = Written {
                version: Version(version),
                created: current.is_none(),
            };
            (written, pending)
        };
        inner.log_commit(pending)?;
        Ok(written)
    }

    fn delete(&self, key: &[u8], precondition: Precondition) -> Result<Option<Version>> {
        let inner = &*self.inner;
        check_key(key)?;
        let h = inner.table.hash(key);
        let shard = &inner.table.shards()[inner.table.shard_of(h)];
        let now = UnixMillis::now().0;
        let (old, pending) = {
            let _cut = inner.cut.read();
            inner.check_writable()?;
            let mut g = shard.write();
            let current = g.get(h, key, now).map(|e| Version(e.version));
            precondition.check(current)?;
            let Some(old) = current else {
                return Ok(None);
            };
            let version = inner.next_versions(1);
            Arc::make_mut(&mut g).remove(inner.table.hasher(), h, key);
            (old, inner.log_append(&[LogOp::Delete { version, key }]))
        };
        inner.log_commit(pending)?;
        Ok(Some(old))
    }

    fn apply_batch_checked(
        &self,
        checks: &[(Vec<u8>, Precondition)],
        ops: Vec<BatchOp>,
    ) -> Result<Vec<BatchResult>> {
        let inner = &*self.inner;
        for (key, _) in checks {
            check_key(key)?;
        }
        if ops.len() > inner.opts.max_batch_ops {
            return Err(Error::BatchTooLarge(format!(
                "{} operations, the limit is {}",
                ops.len(),
                inner.opts.max_batch_ops
            )));
        }
        let mut bytes = 0usize;
        for op in &ops {
            check_key(op.key())?;
            bytes += op.key().len();
            if let BatchOp::Put { value, .. } = op {
                check_value(value)?;
                bytes += value.len();
            }
        }
        if bytes > inner.opts.max_batch_bytes {
            return Err(Error::BatchTooLarge(format!(
                "{bytes} bytes of keys and values, the limit is {}",
                inner.opts.max_batch_bytes
            )));
        }
        if ops.is_empty() && checks.is_empty() {
            inner.check_open()?;
            return Ok(Vec::new());
        }
        let t = &inner.table;
        let place = |key: &[u8]| {
            let h = t.hash(key);
            (h, t.shard_of(h))
        };
        let placed: Vec<(u64, usize)> = ops.iter().map(|op| place(op.key())).collect();
        let checked: Vec<(u64, usize)> = checks.iter().map(|(k, _)| place(k)).collect();
        let mut ids: Vec<usize> = placed.iter().chain(&checked).map(|p| p.1).collect();
        ids.sort_unstable();
        ids.dedup();
        let now = UnixMillis::now().0;
        let (results, pending) = {
            let _cut = inner.cut.read();
            inner.check_writable()?;
            // Ascending shard order: two batches can never wait on each other in a cycle.
            let mut guards: Vec<_> = ids.iter().map(|&i| t.shards()[i].write()).collect();
            // Under the shards' locks: no write to a checked key can come between.
            for ((key, pre), &(h, si)) in checks.iter().zip(&checked) {
                let gi = ids.binary_search(&si).unwrap_or_else(|_| {
                    unreachable!("checked key's shard {si} is not among the locked shards {ids:?}")
                });
                pre.check(guards[gi].get(h, key, now).map(|e| Version(e.version)))?;
            }
            if ops.is_empty() {
                return Ok(Vec::new());
            }
            let first = inner.next_versions(ops.len() as u64);
            let mut results = Vec::with_capacity(ops.len());
            let mut log_ops = Vec::with_capacity(ops.len());
            for (i, (op, &(h, si))) in ops.iter().zip(&placed).enumerate() {
                let version = first + i as u64;
                // `ids` is every shard the batch touches, sorted and deduplicated, so each op's
                // shard is in it; a miss would write into the wrong shard.
                let gi = ids.binary_search(&si).unwrap_or_else(|_| {
                    unreachable!("batch op's shard {si} is not among the locked shards {ids:?}")
                });
                let shard = Arc::make_mut(&mut guards[gi]);
                let prev = match op {
                    BatchOp::Put {
                        key,
                        value,
                        expires_at,
                    } => {
                        let exp = expires_at.map(|t| t.0);
                        log_ops.push(LogOp::Put {
                            version,
                            expires_at: exp,
                            key,
                            value,
                        });
                        shard.put(t.hasher(), h, key, value, version, exp)
                    }
                    BatchOp::Delete { key } => {
                        log_ops.push(LogOp::Delete { version, key });
                        shard.remove(t.hasher(), h, key)
                    }
                };
                results.push(BatchResult {
                    version: Version(version),
                    existed_before: live(prev, now),
                });
            }
            (results, inner.log_append(&log_ops))
        };
        inner.log_commit(pending)?;
        Ok(results)
    }

    fn advance_version(&self, floor: Version) -> Result<()> {
        let inner = &*self.inner;
        inner.check_open()?;
        // `next_versions` hands out `seq + 1` onwards.
        inner.seq.fetch_max(floor.0, Ordering::SeqCst);
        Ok(())
    }

    fn list(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<ListPage> {
        let inner = &*self.inner;
        inner.check_open()?;
        if limit == 0 {
            return Ok(ListPage::default());
        }
        let now = UnixMillis::now().0;
        let mut page = crate::listing::PageCollector::new(prefix, start_after, limit);
        for s in inner.table.shards() {
            s.read().offer_keys(now, &mut page);
        }
        Ok(page.finish())
    }

    fn sync(&self) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        match &inner.log {
            Some(log) => log.flush(true).map(|_| ()),
            None if inner.dirty.load(Ordering::Acquire) > 0 => {
                checkpoint::run(inner, Kind::Snapshot, true).map(|_| ())
            }
            None => Ok(()),
        }
    }

    fn stats(&self) -> Result<Stats> {
        self.inner.check_open()?;
        checkpoint::stats(&self.inner)
    }

    fn merge(&self) -> Result<MergeReport> {
        self.inner.check_open()?;
        checkpoint::run(&self.inner, Kind::Merge, false).map(|o| o.merge_report())
    }

    fn snapshot(&self) -> Result<SnapshotReport> {
        self.inner.check_open()?;
        checkpoint::run(&self.inner, Kind::Snapshot, false).map(|o| o.snapshot_report())
    }

    fn start_merge(&self) -> Result<JobHandle<MergeReport>> {
        self.inner.check_open()?;
        let claim = checkpoint::claim(&self.inner, Kind::Merge)?;
        let inner = Arc::clone(&self.inner);
        jobs::spawn("rewrite", move || {
            checkpoint::run_claimed(&inner, Kind::Merge, false, claim).map(|o| o.merge_report())
        })
    }

    fn start_snapshot(&self) -> Result<JobHandle<SnapshotReport>> {
        self.inner.check_open()?;
        let claim = checkpoint::claim(&self.inner, Kind::Snapshot)?;
        let inner = Arc::clone(&self.inner);
        jobs::spawn("snapshot", move || {
            checkpoint::run_claimed(&inner, Kind::Snapshot, false, claim)
                .map(|o| o.snapshot_report())
        })
    }

    fn jobs(&self) -> JobStatus {
        self.inner.jobs.lock().clone()
    }

    fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        self.inner.check_open()?;
        checkpoint::list_snapshots(&self.inner.dir)
    }

    fn close(&self) -> Result<()> {
        let inner = &*self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Writers check `closed` under the cut lock: after this, none is in flight.
        drop(inner.cut.write());
        *inner.stopping.lock() = true;
        inner.stop_cv.notify_all();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        let r = match &inner.log {
            Some(log) => log.flush(true).map(|_| ()),
            // Like Redis's save on shutdown: without a log, only a snapshot keeps writes.
            None if inner.dirty.load(Ordering::Acquire) > 0 => {
                checkpoint::run(inner, Kind::Snapshot, true).map(|_| ())
            }
            None => Ok(()),
        };
        if let Some(lock) = inner.lock.lock().take() {
            lock.release();
        }
        r
    }
}

impl Drop for MemoryEngine {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the memory engine on drop failed");
        }
    }
}

#[doc(hidden)]
pub mod decode {
    //! Decoders of the memory engine's files, for the fuzz targets and tools (not a stable
    //! API): thin entry points to the log, snapshot and manifest decoders, so that `fuzz/` can
    //! feed them arbitrary bytes. Reading never changes a file here (a log is read as
    //! not-last).

    use std::path::Path;

    use crate::error::Result;

    /// Parses the log record at the start of `buf`: its op count and framed length.
    ///
    /// # Errors
    /// Why the bytes are not a valid record.
    pub fn log_record(buf: &[u8]) -> std::result::Result<(usize, usize), String> {
        super::aof::decode_record(buf).map(|(ops, n)| (ops.len(), n))
    }

    /// Reads log file `path` (expected to be log `seq`); returns its record count.
    ///
    /// # Errors
    /// Corruption and I/O errors.
    pub fn log_file(path: &Path, seq: u64) -> Result<u64> {
        super::aof::read_log(path, seq, false, |_| {}).map(|s| s.records)
    }

    /// Reads snapshot file `path`; returns its key count.
    ///
    /// # Errors
    /// Corruption and I/O errors.
    pub fn snapshot_file(path: &Path) -> Result<u64> {
        super::snapshot::read_snapshot(path, |_| {}).map(|(_, keys)| keys)
    }

    /// Reads `dir/MANIFEST`: `(base snapshot, first log)`.
    ///
    /// # Errors
    /// Corruption and I/O errors.
    pub fn manifest_in(dir: &Path) -> Result<Option<(u64, u64)>> {
        super::manifest::Manifest::load(dir).map(|m| m.map(|m| (m.base, m.first_log)))
    }
}
