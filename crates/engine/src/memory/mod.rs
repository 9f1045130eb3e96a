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
//! - `codec`: checked byte parsing shared by the formats;
//! - `history`: the change history watchers read from the logs.
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
mod history;
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

use hashbrown::HashMap;

use self::aof::{LogOp, LogWriter, MAX_RECORD, create_log, log_name};
use self::checkpoint::Kind;
use self::manifest::Manifest;
use self::table::Table;
use crate::changes::{Change, ChangeKind, ChangeLog};
use crate::compression::Codec;
use crate::dir_lock::DirLock;
use crate::durability::{Flusher, GroupCommit, Poison};
use crate::error::{Error, Result};
use crate::jobs::{self, JobLock, job_lock};
use crate::{
    BatchOp, BatchResult, Engine, EngineKind, JobHandle, JobStatus, ListPage, MergeReport, Meta,
    Precondition, PutOptions, SnapshotInfo, SnapshotReport, Stats, SyncPolicy, Ticket, UnixMillis,
    Value, Version, Written, check_key,
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
    /// Value compression in the log (the table and snapshots are not affected: snapshot
    /// blocks are LZ4-compressed whole anyway).
    pub compression: crate::compression::Compression,
    /// Where the version counter starts when the engine opens.
    pub version_start: VersionStart,
    /// Test hook: abort the process when a checkpoint reaches the named step
    /// (`log-created`, `cut`, `snapshot-written`, `snapshot-renamed`, `manifest-stored`,
    /// `cleaned`). Not for production use.
    #[doc(hidden)]
    pub crash_at: Option<String>,
}

/// Where the memory engine's version counter starts when it opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VersionStart {
    /// Above both the highest version recovered and the clock (in microseconds), so no
    /// version is handed out twice, even one whose write was deleted and compacted away
    /// before a restart.
    #[default]
    Clock,
    /// Right above the highest version recovered, so replicas that apply the same writes
    /// (raising the counter with [`crate::Engine::advance_version`]) number them alike: the
    /// Raft state machine, whose versions come from log indexes.
    Recovered,
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
            compression: crate::compression::Compression::default(),
            version_start: VersionStart::default(),
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
    log: Option<LogWriter<Staged>>,
    /// Group commit over the log (byte LSNs), when there is a log.
    commit: Option<Arc<GroupCommit>>,
    /// Per shard: the newest change to each key not yet visible to readers (sync `always`
    /// with a log), under the shard's write lock. See [`Inner::stage`].
    staged: Box<[Mutex<HashMap<Bytes, StagedEntry>>]>,
    /// Writes are staged until durable.
    hold_until_durable: bool,
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
    poison: Arc<Poison>,
    /// The change feed: a write is published to it where it becomes visible to readers
    /// (held back with the write until durable under sync=always).
    changes: ChangeLog,
}

/// What a staged write does to a key.
#[derive(Clone, Debug)]
enum StagedOp {
    Put {
        value: Bytes,
        expires_at: Option<u64>,
    },
    Delete,
}

/// The newest staged change to one key.
#[derive(Clone, Debug)]
struct StagedEntry {
    version: u64,
    op: StagedOp,
}

/// What one log record changes in the table, published once it is durable: per op its
/// shard, key hash, key, version and change.
pub(crate) struct Staged {
    ops: Vec<(usize, u64, Bytes, u64, StagedOp)>,
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
    /// Leads group commits for awaited writes (sync `always` with a log).
    committer: Mutex<Option<JoinHandle<()>>>,
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
        let poison = Arc::new(Poison::new());
        let log = if opts.aof {
            log_seq += 1;
            let file = create_log(dir, log_seq)?;
            Some(LogWriter::new(
                file,
                dir.join(log_name(log_seq)),
                sync,
                opts.compression,
                poison.clone(),
            ))
        } else {
            None
        };
        tracing::info!(dir = %dir.display(), keys = rec.table.shards().iter().map(|s| s.read().len()).sum::<usize>(),
            log_records = rec.log_records, elapsed_ms = started.elapsed().as_millis() as u64,
            "memory engine recovered");
        let inner = Inner::new(dir, sync, opts, Some(lock), rec, log, log_seq, poison);
        let committer = match &inner.commit {
            Some(c) if sync == SyncPolicy::Always => Some(c.spawn_committer("hoardhaven-commit")?),
            _ => None,
        };
        if inner.log.is_some() {
            inner
                .changes
                .set_history(Box::new(history::LogHistory::new(Arc::downgrade(&inner))));
        }
        let threads = background::spawn(&inner)?;
        Ok(MemoryEngine {
            inner,
            threads: Mutex::new(threads),
            committer: Mutex::new(committer),
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
        let poison = Arc::new(Poison::new());
        poison.refuse(Error::ReadOnly.to_string());
        let inner = Inner::new(
            dir,
            SyncPolicy::Never,
            opts,
            lock,
            rec,
            None,
            log_seq,
            poison,
        );
        inner.dirty.store(0, Ordering::Release);
        Ok(MemoryEngine {
            inner,
            threads: Mutex::new(Vec::new()),
            committer: Mutex::new(None),
        })
    }
}

impl Inner {
    /// The shared state over a recovered store appending to `log` (none: no AOF, or
    /// read-only).
    #[allow(clippy::too_many_arguments)]
    fn new(
        dir: &Path,
        sync: SyncPolicy,
        opts: &MemoryOptions,
        lock: Option<DirLock>,
        rec: recovery::Recovered,
        log: Option<LogWriter<Staged>>,
        log_seq: u64,
        poison: Arc<Poison>,
    ) -> Arc<Inner> {
        let first = match opts.version_start {
            VersionStart::Clock => rec
                .last_version
                .max(UnixMillis::now().0.saturating_mul(1000)),
            VersionStart::Recovered => rec.last_version,
        };
        let commit = log.as_ref().map(|_| GroupCommit::new(0, poison.clone()));
        let hold_until_durable = log.is_some() && sync == SyncPolicy::Always;
        let shards = rec.table.shards().len();
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            sync,
            opts: opts.clone(),
            seq: AtomicU64::new(first),
            log,
            commit,
            staged: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            hold_until_durable,
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
            poison,
            // Versions between the last recovered one and `first` are never handed out.
            changes: ChangeLog::starting(Version(rec.last_version), Version(first)),
        });
        if let Some(c) = &inner.commit {
            let flusher: Arc<dyn Flusher> = inner.clone();
            c.set_flusher(Arc::downgrade(&flusher));
        }
        inner
    }
}

impl Inner {
    /// Fails when closed or poisoned. Called with the cut lock held shared, so that `close`
    /// (which takes it exclusively after setting `closed`) never misses a write.
    fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.poison.check()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn poison(&self, e: &Error) {
        self.poison.poison(e);
    }

    /// Poisoned (or read-only): the reason.
    fn poisoned(&self) -> Option<String> {
        self.poison.check().err().map(|e| match e {
            Error::Poisoned(m) => m,
            other => other.to_string(),
        })
    }

    /// Test hook: abort at a named checkpoint step.
    fn step(&self, name: &str) {
        if self.opts.crash_at.as_deref() == Some(name) {
            tracing::error!(step = name, "crash_at hook: aborting the process");
            std::process::abort();
        }
    }

    /// Reserves log space for a record of `ops` before the write draws a version or touches
    /// the table (see "A full disk" in [`aof`]); 0 without a log.
    ///
    /// # Errors
    /// [`Error::DiskFull`] (nothing applied, not poisoned), other I/O errors (poisoned).
    fn log_reserve(&self, ops: &[LogOp<'_>]) -> Result<u64> {
        match &self.log {
            Some(l) => l.reserve(ops),
            None => Ok(0),
        }
    }

    fn log_append(
        &self,
        ops: &[LogOp<'_>],
        staged: Option<Staged>,
        reserved: u64,
    ) -> Option<(u64, usize)> {
        let r = self.log.as_ref().map(|l| l.append(ops, staged, reserved));
        self.log_ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
        self.dirty.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// After a write released its locks: the ticket that resolves once its log record is
    /// durable (sync `always`), or ready (writing a large buffer out first otherwise).
    fn log_commit(&self, pending: Option<(u64, usize)>) -> Result<Ticket> {
        match (&self.log, &self.commit, pending) {
            (Some(_), Some(c), Some((lsn, _))) if self.sync == SyncPolicy::Always => {
                Ok(c.ticket(lsn))
            }
            (Some(log), _, Some((_, n))) => log.after_append(n).map(|()| Ticket::ready()),
            _ => Ok(Ticket::ready()),
        }
    }

    /// The current version of `key` as writers see it (under its shard's write lock): the
    /// newest staged change if there is one, else the table's.
    fn current(
        &self,
        g: &table::Shard,
        si: usize,
        h: u64,
        key: &[u8],
        now: u64,
    ) -> Option<Version> {
        if self.hold_until_durable
            && let Some(e) = self.staged[si].lock().get(key)
        {
            return match &e.op {
                StagedOp::Put { expires_at, .. } if !expires_at.is_some_and(|t| t <= now) => {
                    Some(Version(e.version))
                }
                _ => None,
            };
        }
        g.get(h, key, now).map(|e| Version(e.version))
    }

    /// Notes a change not yet durable as the newest of its key (under its shard's write lock).
    fn stage(&self, si: usize, key: &Bytes, version: u64, op: &StagedOp) {
        self.staged[si].lock().insert(
            key.clone(),
            StagedEntry {
                version,
                op: op.clone(),
            },
        );
    }

    /// Applies one write to its shard of the table (under the shard's write lock): the one
    /// place a memory-engine write becomes visible to readers, at once (sync `never` or an
    /// interval, or no log) or, staged, once durable ([`Inner::publish_durable`]). Returns
    /// the version and expiry of the entry it replaced.
    fn publish_visible(
        &self,
        shard: &mut table::Shard,
        h: u64,
        key: &[u8],
        version: u64,
        op: &StagedOp,
    ) -> Option<(u64, Option<u64>)> {
        let t = &self.table;
        match op {
            StagedOp::Put { value, expires_at } => {
                shard.put(t.hasher(), h, key, value, version, *expires_at)
            }
            StagedOp::Delete => shard.remove(t.hasher(), h, key),
        }
    }

    /// Publishes one durable log record's staged changes, in order.
    fn publish_durable(&self, staged: Staged) {
        let t = &self.table;
        let first = staged.ops.first().map(|op| Version(op.3));
        for (si, h, key, version, op) in staged.ops {
            let mut g = t.shards()[si].write();
            self.publish_visible(Arc::make_mut(&mut g), h, &key, version, &op);
            let mut st = self.staged[si].lock();
            if st.get(&key).is_some_and(|e| e.version == version) {
                st.remove(&key);
            }
        }
        // Watchers hear of the record's changes once readers can see them.
        if let Some(first) = first {
            self.changes.release(first);
        }
    }

    /// Makes everything appended durable and visible now (`sync`, `close`). Without a log
    /// there is nothing to do.
    fn sync_log(&self) -> Result<()> {
        match &self.commit {
            Some(c) => c.sync_now().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Before a checkpoint's cut (under the exclusive cut lock): makes the writes staged until
    /// durable durable and visible, so the cut's clone of the table holds every write of the
    /// log it closes. Nothing to do unless writes are staged (sync `always` with a log).
    pub(crate) fn settle(&self) -> Result<()> {
        if self.hold_until_durable {
            self.sync_log()
        } else {
            Ok(())
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

    fn durable_barrier(&self) -> Result<()> {
        if self.inner.hold_until_durable {
            self.inner.sync_log()
        } else {
            Ok(())
        }
    }

    fn put(&self, key: &[u8], value: Bytes, opts: PutOptions) -> Result<Written> {
        let (written, ticket) = crate::settled(self, self.put_deferred(key, value, opts))?;
        ticket.wait()?;
        Ok(written)
    }

    fn put_deferred(
        &self,
        key: &[u8],
        value: Bytes,
        opts: PutOptions,
    ) -> Result<(Written, Ticket)> {
        let inner = &*self.inner;
        check_key(key)?;
        check_value(&value)?;
        record_fits(key, &value)?;
        let h = inner.table.hash(key);
        let si = inner.table.shard_of(h);
        let shard = &inner.table.shards()[si];
        let now = UnixMillis::now().0;
        let expires_at = opts.expires_at.map(|t| t.0);
        let (written, pending) = {
            let _cut = inner.cut.read();
            inner.check_writable()?;
            let mut g = shard.write();
            let current = inner.current(&g, si, h, key, now);
            opts.precondition.check(current)?;
            let mut log_op = LogOp::Put {
                version: 0,
                expires_at,
                key,
                value: &value,
                codec: Codec::Raw,
            };
            let reserved = inner.log_reserve(&[log_op])?;
            let version = inner.next_versions(1);
            if let LogOp::Put { version: v, .. } = &mut log_op {
                *v = version;
            }
            let pending = if inner.hold_until_durable {
                let key = Bytes::copy_from_slice(key);
                let op = StagedOp::Put {
                    value: value.clone(),
                    expires_at,
                };
                inner.stage(si, &key, version, &op);
                inner
                    .changes
                    .stage(vec![Change::put(Version(version), &key, &value)]);
                let staged = Staged {
                    ops: vec![(si, h, key, version, op)],
                };
                inner.log_append(&[log_op], Some(staged), reserved)
            } else {
                let op = StagedOp::Put {
                    value: value.clone(),
                    expires_at,
                };
                inner.publish_visible(Arc::make_mut(&mut g), h, key, version, &op);
                inner
                    .changes
                    .publish(vec![Change::put(Version(version), key, &value)]);
                inner.log_append(&[log_op], None, reserved)
            };
            let written = Written {
                version: Version(version),
                created: current.is_none(),
            };
            (written, pending)
        };
        Ok((written, inner.log_commit(pending)?))
    }

    fn delete(&self, key: &[u8], precondition: Precondition) -> Result<Option<Version>> {
        let (old, ticket) = crate::settled(self, self.delete_deferred(key, precondition))?;
        ticket.wait()?;
        Ok(old)
    }

    fn delete_deferred(
        &self,
        key: &[u8],
        precondition: Precondition,
    ) -> Result<(Option<Version>, Ticket)> {
        let inner = &*self.inner;
        check_key(key)?;
        let h = inner.table.hash(key);
        let si = inner.table.shard_of(h);
        let shard = &inner.table.shards()[si];
        let now = UnixMillis::now().0;
        let (old, pending) = {
            let _cut = inner.cut.read();
            inner.check_writable()?;
            let mut g = shard.write();
            let current = inner.current(&g, si, h, key, now);
            precondition.check(current)?;
            let Some(old) = current else {
                return Ok((None, Ticket::ready()));
            };
            let reserved = inner.log_reserve(&[LogOp::Delete { version: 0, key }])?;
            let version = inner.next_versions(1);
            let log_op = LogOp::Delete { version, key };
            let pending = if inner.hold_until_durable {
                let key = Bytes::copy_from_slice(key);
                inner.stage(si, &key, version, &StagedOp::Delete);
                inner.changes.stage(vec![Change::removal(
                    Version(version),
                    ChangeKind::Delete,
                    &key,
                )]);
                let staged = Staged {
                    ops: vec![(si, h, key, version, StagedOp::Delete)],
                };
                inner.log_append(&[log_op], Some(staged), reserved)
            } else {
                inner.publish_visible(Arc::make_mut(&mut g), h, key, version, &StagedOp::Delete);
                inner.changes.publish(vec![Change::removal(
                    Version(version),
                    ChangeKind::Delete,
                    key,
                )]);
                inner.log_append(&[log_op], None, reserved)
            };
            (old, pending)
        };
        Ok((Some(old), inner.log_commit(pending)?))
    }

    fn apply_batch_checked(
        &self,
        checks: &[(Vec<u8>, Precondition)],
        ops: Vec<BatchOp>,
    ) -> Result<Vec<BatchResult>> {
        let (results, ticket) =
            crate::settled(self, self.apply_batch_checked_deferred(checks, ops))?;
        ticket.wait()?;
        Ok(results)
    }

    fn apply_batch_checked_deferred(
        &self,
        checks: &[(Vec<u8>, Precondition)],
        ops: Vec<BatchOp>,
    ) -> Result<(Vec<BatchResult>, Ticket)> {
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
            return Ok((Vec::new(), Ticket::ready()));
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
                pre.check(inner.current(&guards[gi], si, h, key, now))?;
            }
            if ops.is_empty() {
                return Ok((Vec::new(), Ticket::ready()));
            }
            let sized: Vec<LogOp<'_>> = ops
                .iter()
                .map(|op| match op {
                    BatchOp::Put {
                        key,
                        value,
                        expires_at,
                    } => LogOp::Put {
                        version: 0,
                        expires_at: expires_at.map(|t| t.0),
                        key,
                        value,
                        codec: Codec::Raw,
                    },
                    BatchOp::Delete { key } => LogOp::Delete { version: 0, key },
                })
                .collect();
            let reserved = inner.log_reserve(&sized)?;
            drop(sized);
            let first = inner.next_versions(ops.len() as u64);
            let mut results = Vec::with_capacity(ops.len());
            let mut log_ops = Vec::with_capacity(ops.len());
            let mut staged = Vec::new();
            // Presence as the batch goes (staged writes): key -> exists after the ops so far.
            let mut present: HashMap<&[u8], bool> = HashMap::new();
            for (i, (op, &(h, si))) in ops.iter().zip(&placed).enumerate() {
                let version = first + i as u64;
                // `ids` is every shard the batch touches, sorted and deduplicated, so each op's
                // shard is in it; a miss would write into the wrong shard.
                let gi = ids.binary_search(&si).unwrap_or_else(|_| {
                    unreachable!("batch op's shard {si} is not among the locked shards {ids:?}")
                });
                let key = op.key();
                let (log_op, staged_op) = match op {
                    BatchOp::Put {
                        key,
                        value,
                        expires_at,
                    } => {
                        let exp = expires_at.map(|t| t.0);
                        let log_op = LogOp::Put {
                            version,
                            expires_at: exp,
                            key,
                            value,
                            codec: Codec::Raw,
                        };
                        let staged_op = StagedOp::Put {
                            value: value.clone(),
                            expires_at: exp,
                        };
                        (log_op, staged_op)
                    }
                    BatchOp::Delete { key } => (LogOp::Delete { version, key }, StagedOp::Delete),
                };
                log_ops.push(log_op);
                let existed = if inner.hold_until_durable {
                    let existed = match present.get(key) {
                        Some(&p) => p,
                        None => inner.current(&guards[gi], si, h, key, now).is_some(),
                    };
                    present.insert(key, matches!(staged_op, StagedOp::Put { .. }));
                    let key = Bytes::copy_from_slice(key);
                    inner.stage(si, &key, version, &staged_op);
                    staged.push((si, h, key, version, staged_op));
                    existed
                } else {
                    let shard = Arc::make_mut(&mut guards[gi]);
                    live(
                        inner.publish_visible(shard, h, key, version, &staged_op),
                        now,
                    )
                };
                results.push(BatchResult {
                    version: Version(version),
                    existed_before: existed,
                });
            }
            let feed: Vec<Change> = ops
                .iter()
                .enumerate()
                .map(|(i, op)| {
                    let v = Version(first + i as u64);
                    match op {
                        BatchOp::Put { key, value, .. } => Change::put(v, key, value),
                        BatchOp::Delete { key } => Change::removal(v, ChangeKind::Delete, key),
                    }
                    .in_batch(Version(first))
                })
                .collect();
            let staged = inner.hold_until_durable.then_some(Staged { ops: staged });
            if staged.is_some() {
                inner.changes.stage(feed);
            } else {
                inner.changes.publish(feed);
            }
            (results, inner.log_append(&log_ops, staged, reserved))
        };
        Ok((results, inner.log_commit(pending)?))
    }

    fn advance_version(&self, floor: Version) -> Result<()> {
        let inner = &*self.inner;
        inner.check_open()?;
        // `next_versions` hands out `seq + 1` onwards.
        let before = inner.seq.fetch_max(floor.0, Ordering::SeqCst);
        // Versions nobody drew: the change feed must not wait for them.
        inner.changes.skip(Version(before.saturating_add(1)), floor);
        Ok(())
    }

    fn list_range(
        &self,
        range: &crate::KeyRange<'_>,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ListPage> {
        let inner = &*self.inner;
        inner.check_open()?;
        Ok(inner
            .table
            .list(range, start_after, limit, UnixMillis::now().0))
    }

    fn sync(&self) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        match &inner.log {
            Some(_) => inner.sync_log(),
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

    fn changes(&self) -> Option<&ChangeLog> {
        Some(&self.inner.changes)
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
            // The zero-filled space past the last record is cut off once it is all written.
            Some(log) => inner.sync_log().and_then(|()| {
                log.flush(inner.sync != SyncPolicy::Never)?;
                log.trim()
            }),
            // Like Redis's save on shutdown: without a log, only a snapshot keeps writes.
            None if inner.dirty.load(Ordering::Acquire) > 0 => {
                checkpoint::run(inner, Kind::Snapshot, true).map(|_| ())
            }
            None => Ok(()),
        };
        if let Some(c) = &inner.commit {
            c.stop();
        }
        if let Some(t) = self.committer.lock().take() {
            let _ = t.join();
        }
        if let Some(lock) = inner.lock.lock().take() {
            lock.release();
        }
        r
    }
}

impl Flusher for Inner {
    /// Writes the log buffer, fdatasyncs, publishes the changes of the records now durable.
    fn flush_and_sync(&self) -> Result<u64> {
        let log = self.log.as_ref().ok_or(Error::Closed)?;
        let upto = log.flush(true)?;
        for staged in log.take_durable(upto) {
            self.publish_durable(staged);
        }
        Ok(upto)
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
