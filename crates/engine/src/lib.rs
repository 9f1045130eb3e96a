//! hoardhaven's storage engines as an embeddable library: no HTTP, no async runtime, no CLI.
//!
//! Owns the [`Engine`] trait that both engines implement ([`bitcask`]: append-only data files,
//! in-memory keydir, merge, hint files; [`memory`]: a Redis-style table with background
//! snapshots and an append-only log) and the plain types that cross it: versions, expiry times,
//! preconditions, batches, listing pages, stats and the status of background jobs. The
//! `hoardhaven` server wraps this crate; a program that wants an embedded store uses it alone.
//!
//! Engines are synchronous and thread-safe: every method takes `&self` and may be called from
//! many threads at once. Calls that write may block on `fdatasync` (see [`SyncPolicy`]); an
//! async program instead uses the `*_deferred` writes ([`Engine::put_deferred`]), which append
//! without waiting and return a [`Ticket`] to await: the group commit resolves it, and no thread
//! is parked per waiting write. Both engines write through one durability core
//! ([`durability`]: group commit, fail-stop, the append file) and one filesystem layer
//! ([`fs`], wrapped by the [`fault`] seam in tests). With `SyncPolicy::Always` a write is
//! visible to readers only once it is durable.
//!
//! # Embedding
//!
//! ```
//! use bytes::Bytes;
//! use hoardhaven_engine::{BatchOp, EngineKind, EngineOptions, PutOptions, SyncPolicy};
//!
//! # fn main() -> hoardhaven_engine::Result<()> {
//! # let tmp = tempfile::tempdir().map_err(|e| hoardhaven_engine::Error::io("tempdir", e))?;
//! let opts = EngineOptions {
//!     kind: EngineKind::Bitcask,
//!     dir: tmp.path().join("store"), // created if missing, locked while open
//!     sync: SyncPolicy::Always,       // acknowledged = on disk
//!     ..EngineOptions::default()
//! };
//! let store = hoardhaven_engine::open(&opts)?;
//!
//! let w = store.put(b"users/1", Bytes::from_static(b"ada"), PutOptions::default())?;
//! assert!(w.created);
//! let v = store.get(b"users/1")?.expect("just written");
//! assert_eq!(v.bytes, "ada");
//! assert_eq!(v.meta.version, w.version); // versions back ETags and compare-and-set
//!
//! // All or nothing, also across a crash.
//! store.apply_batch(vec![
//!     BatchOp::Put { key: b"users/2".to_vec(), value: Bytes::from_static(b"grace"), expires_at: None },
//!     BatchOp::Delete { key: b"users/1".to_vec() },
//! ])?;
//!
//! let page = store.list(b"users/", None, 100)?;
//! assert_eq!(page.keys, vec![b"users/2".to_vec()]);
//!
//! store.close()?; // everything durable, directory lock released
//! # Ok(())
//! # }
//! ```

pub mod bitcask;
pub mod changes;
pub mod compression;
pub mod dir_lock;
pub mod durability;
pub mod error;
pub mod fault;
pub mod fs;
pub mod jobs;
pub mod listing;
pub mod memory;
mod open;
pub mod ordered;
mod sync_policy;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

pub use crate::durability::Ticket;
pub use crate::error::{Error, Result};
pub use jobs::JobHandle;
pub use listing::KeyRange;

pub use open::{EngineKind, EngineOptions, MARKER, detect, open, open_read_only, open_salvage};
pub use sync_policy::SyncPolicy;

/// Longest key any engine accepts (the on-disk formats store key lengths as `u16`).
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// The version of a stored value: the engine-wide sequence number of the write that made it.
/// Strictly increasing across writes (and across restarts), it backs ETags and compare-and-set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

/// A wall-clock instant in milliseconds since the Unix epoch (used for expiry and timestamps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        UnixMillis(ms)
    }

    /// `ttl` from now, saturating.
    pub fn after(ttl: Duration) -> Self {
        let now = Self::now().0;
        UnixMillis(now.saturating_add(ttl.as_millis().min(u64::MAX as u128) as u64))
    }

    /// True when this instant is at or before `now`.
    pub fn has_passed(self, now: UnixMillis) -> bool {
        self.0 <= now.0
    }
}

/// The condition under which a write is applied (HTTP `If-Match` / `If-None-Match`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Apply unconditionally.
    #[default]
    None,
    /// Apply only if the key exists with exactly this version (compare-and-set).
    IfVersion(Version),
    /// Apply only if the key exists (`If-Match: *`).
    IfExists,
    /// Apply only if the key is absent (`If-None-Match: *`, create only).
    IfAbsent,
}

impl Precondition {
    /// Checks the condition against the current version of the key.
    ///
    /// # Errors
    /// [`crate::Error::PreconditionFailed`] when it does not hold.
    pub fn check(self, current: Option<Version>) -> Result<()> {
        let ok = match self {
            Precondition::None => true,
            Precondition::IfVersion(v) => current == Some(v),
            Precondition::IfExists => current.is_some(),
            Precondition::IfAbsent => current.is_none(),
        };
        if ok {
            Ok(())
        } else {
            Err(crate::Error::PreconditionFailed { current })
        }
    }
}

/// Options of a single put.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// When the value expires; `None` = never.
    pub expires_at: Option<UnixMillis>,
    /// Condition for the write.
    pub precondition: Precondition,
}

/// What a key's current value looks like, without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Version (sequence number) of the write that made the value.
    pub version: Version,
    /// Expiry, if any.
    pub expires_at: Option<UnixMillis>,
    /// Length of the value in bytes.
    pub value_len: u64,
}

/// A value read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// The value's bytes.
    pub bytes: Bytes,
    /// Its version and expiry.
    pub meta: Meta,
}

/// Result of a successful put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The new version.
    pub version: Version,
    /// True when the key did not exist (or had expired) before.
    pub created: bool,
}

/// One operation of an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Store `value` under `key`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Bytes,
        /// Optional expiry.
        expires_at: Option<UnixMillis>,
    },
    /// Remove `key` (no error if absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl BatchOp {
    /// The key this operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }
}

/// Result of one batch operation, in request order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchResult {
    /// Version written by the operation (a tombstone's version for deletes).
    pub version: Version,
    /// The key existed (and had not expired) just before this operation, counting the
    /// batch's own earlier operations. A put with `false` created the key.
    pub existed_before: bool,
}

/// One page of a prefix listing, in ascending byte order of keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Keys of the page.
    pub keys: Vec<Vec<u8>>,
    /// When more keys follow: the last key of this page, to pass as `start_after` next time.
    pub next_start_after: Option<Vec<u8>>,
}

/// Per-file statistics (bitcask: one row per data file; memory: snapshot and log files).
#[derive(Clone, Debug, PartialEq)]
pub struct FileStats {
    /// File name inside the data directory.
    pub name: String,
    /// Bytes on disk.
    pub total_bytes: u64,
    /// Bytes of records still live.
    pub live_bytes: u64,
    /// Bytes of overwritten, deleted or expired records.
    pub dead_bytes: u64,
    /// True for the file currently appended to.
    pub active: bool,
}

/// Engine-wide statistics for `/admin/stats` and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Which engine.
    pub engine: EngineKind,
    /// Keys in the index (expired keys count until a merge or sweep collects them).
    pub keys: u64,
    /// Bytes of live records on disk (bitcask) or of keys and values in memory (memory).
    pub live_bytes: u64,
    /// Bytes of dead records on disk.
    pub dead_bytes: u64,
    /// Total bytes of the engine's files on disk.
    pub disk_bytes: u64,
    /// Number of data files (bitcask) or log + snapshot files (memory).
    pub data_files: u64,
    /// `dead_bytes / (live_bytes + dead_bytes)`, 0 when empty.
    pub fragmentation: f64,
    /// Bytes the in-memory index uses (keydir or table), as counted by the engine.
    pub index_bytes: u64,
    /// Per-file detail.
    pub files: Vec<FileStats>,
    /// The sync policy in force.
    pub sync: SyncPolicy,
    /// Total bytes appended since open.
    pub bytes_written: u64,
    /// Records found corrupt since open (at start-up or on read).
    pub corrupt_records: u64,
    /// Highest version written so far.
    pub last_version: Version,
    /// Current or last merge and snapshot.
    pub jobs: JobStatus,
}

/// Outcome of a finished merge (bitcask) or log rewrite (memory).
#[derive(Clone, Debug, PartialEq)]
pub struct MergeReport {
    /// Wall-clock start.
    pub started_at: UnixMillis,
    /// How long it took.
    pub duration: Duration,
    /// Files read.
    pub files_merged: u64,
    /// Bytes read from the merged files.
    pub bytes_read: u64,
    /// Bytes written to the new files.
    pub bytes_written: u64,
    /// Bytes of disk freed (old size minus new size).
    pub bytes_reclaimed: u64,
    /// Live records carried over.
    pub records_kept: u64,
    /// Records dropped (overwritten, deleted, expired).
    pub records_dropped: u64,
}

/// Outcome of a finished snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotReport {
    /// Wall-clock start.
    pub started_at: UnixMillis,
    /// How long it took.
    pub duration: Duration,
    /// Where the snapshot is (a directory for bitcask, a file for memory).
    pub path: PathBuf,
    /// Keys in the snapshot.
    pub keys: u64,
    /// Bytes of the snapshot on disk.
    pub bytes: u64,
    /// Highest version the snapshot contains.
    pub version: Version,
}

/// Progress of a running job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Units (bytes) done.
    pub done: u64,
    /// Units (bytes) in all.
    pub total: u64,
}

/// The state of a background job (merge or snapshot).
#[derive(Clone, Debug, PartialEq, Default)]
pub enum JobState<R> {
    /// Never ran since open.
    #[default]
    Idle,
    /// Running now.
    Running {
        /// When it started.
        started_at: UnixMillis,
        /// How far it is.
        progress: Progress,
    },
    /// Finished with this report.
    Done(R),
    /// Failed with this message.
    Failed {
        /// When it started.
        started_at: UnixMillis,
        /// Why it failed.
        error: String,
    },
}

/// State of the merge and snapshot jobs, as shown by the admin API.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct JobStatus {
    /// Current or last run of the merge job.
    pub merge: JobState<MergeReport>,
    /// Current or last run of the snapshot job.
    pub snapshot: JobState<SnapshotReport>,
    /// Merges (log rewrites) finished since open.
    pub merges_completed: u64,
    /// Snapshots finished since open.
    pub snapshots_completed: u64,
}

/// A snapshot kept on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its path.
    pub path: PathBuf,
    /// Bytes on disk.
    pub bytes: u64,
    /// When it was taken.
    pub taken_at: UnixMillis,
}

/// The storage engine contract. Object-safe; used as `Arc<dyn Engine>`.
///
/// Expired keys behave exactly like absent keys in every method.
pub trait Engine: Send + Sync + 'static {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;

    /// Reads a key's value.
    ///
    /// # Errors
    /// I/O failures, or [`crate::Error::Corrupted`] when the stored record fails its checksum
    /// (it is never returned as data).
    fn get(&self, key: &[u8]) -> Result<Option<Value>>;

    /// Reads a key's version, expiry and length without its value.
    ///
    /// # Errors
    /// As [`Engine::get`].
    fn head(&self, key: &[u8]) -> Result<Option<Meta>>;

    /// Stores `value` under `key` if `opts.precondition` holds, atomically with the check.
    /// Returns after the write is durable as the sync policy says.
    ///
    /// # Errors
    /// [`crate::Error::PreconditionFailed`], key/value size errors, I/O and disk-full errors,
    /// [`crate::Error::Poisoned`] after an earlier failed fsync.
    fn put(&self, key: &[u8], value: Bytes, opts: PutOptions) -> Result<Written>;

    /// Makes every write appended so far durable and visible, when writes are held back until
    /// durable (sync `always`); does nothing otherwise. Call it before answering a refused
    /// precondition: the refusal may rest on a write that is not durable yet, and a crash
    /// could still take that write away, leaving the refusal a lie (a 412 for a version that
    /// never existed). The blocking write methods do this themselves.
    ///
    /// # Errors
    /// I/O failures (the engine is poisoned after a failed fsync).
    fn durable_barrier(&self) -> Result<()> {
        Ok(())
    }

    /// Removes `key` if `precondition` holds. Returns the version of the removed value, or
    /// `None` when the key was absent (nothing is written then).
    ///
    /// # Errors
    /// As [`Engine::put`].
    fn delete(&self, key: &[u8], precondition: Precondition) -> Result<Option<Version>>;

    /// [`Engine::put`] without waiting for durability: the write is appended (cheap, no
    /// fsync) and the returned [`Ticket`] resolves once it is durable as the sync policy says.
    /// Await the ticket (async callers park no thread) or call [`Ticket::wait`]. With
    /// `SyncPolicy::Always` readers see the write only once it is durable; writers (and
    /// their preconditions) see it at once. Dropping the ticket does not undo the write.
    ///
    /// # Errors
    /// As [`Engine::put`], except the durability errors, which the ticket returns.
    fn put_deferred(
        &self,
        key: &[u8],
        value: Bytes,
        opts: PutOptions,
    ) -> Result<(Written, Ticket)> {
        Ok((self.put(key, value, opts)?, Ticket::ready()))
    }

    /// [`Engine::delete`] without waiting for durability (see [`Engine::put_deferred`]).
    ///
    /// # Errors
    /// As [`Engine::delete`], except the durability errors, which the ticket returns.
    fn delete_deferred(
        &self,
        key: &[u8],
        precondition: Precondition,
    ) -> Result<(Option<Version>, Ticket)> {
        Ok((self.delete(key, precondition)?, Ticket::ready()))
    }

    /// [`Engine::apply_batch_checked`] without waiting for durability (see
    /// [`Engine::put_deferred`]).
    ///
    /// # Errors
    /// As [`Engine::apply_batch_checked`], except the durability errors, which the ticket
    /// returns.
    fn apply_batch_checked_deferred(
        &self,
        checks: &[(Vec<u8>, Precondition)],
        ops: Vec<BatchOp>,
    ) -> Result<(Vec<BatchResult>, Ticket)> {
        Ok((self.apply_batch_checked(checks, ops)?, Ticket::ready()))
    }

    /// Applies all operations or none, also across a crash. Results are in request order.
    ///
    /// # Errors
    /// As [`Engine::put`]; on error nothing of the batch is applied.
    fn apply_batch(&self, ops: Vec<BatchOp>) -> Result<Vec<BatchResult>> {
        self.apply_batch_checked(&[], ops)
    }

    /// [`Engine::apply_batch`], applied only if every `(key, precondition)` of `checks` holds
    /// when the batch is applied: checked and applied as one atomic step, so no other write
    /// can come between (Redis's WATCH/EXEC, MSETNX, RENAME). A checked key need not be
    /// written by the batch.
    ///
    /// # Errors
    /// [`crate::Error::PreconditionFailed`] with the current version of the first check that
    /// does not hold (nothing applied, no version used); otherwise as [`Engine::apply_batch`].
    fn apply_batch_checked(
        &self,
        checks: &[(Vec<u8>, Precondition)],
        ops: Vec<BatchOp>,
    ) -> Result<Vec<BatchResult>>;

    /// Raises the version counter so that the next write gets a version above `floor` (no
    /// effect when the counter is already there). A replicated store calls it before applying
    /// a log entry so that versions derive from the log position and are the same on every
    /// replica; nothing is written. Engines that cannot choose versions refuse with
    /// [`crate::Error::ReadOnly`].
    ///
    /// # Errors
    /// [`crate::Error::ReadOnly`] (this default), [`crate::Error::Closed`].
    fn advance_version(&self, floor: Version) -> Result<()> {
        let _ = floor;
        Err(crate::Error::ReadOnly)
    }

    /// Lists live keys starting with `prefix`, in ascending byte order, strictly after
    /// `start_after` when given, at most `limit` of them.
    ///
    /// # Errors
    /// I/O failures.
    fn list(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<ListPage> {
        self.list_range(&KeyRange::prefix(prefix), start_after, limit)
    }

    /// Lists live keys of `range` (prefix, inclusive `start`, exclusive `end`), in ascending
    /// byte order, strictly after `start_after` when given, at most `limit` of them. Costs
    /// O(log n + limit) on the ordered index (see [`listing`]).
    ///
    /// # Errors
    /// I/O failures.
    fn list_range(
        &self,
        range: &KeyRange<'_>,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ListPage>;

    /// Makes every write acknowledged so far durable.
    ///
    /// # Errors
    /// I/O failures (the engine is poisoned after a failed fsync).
    fn sync(&self) -> Result<()>;

    /// Statistics.
    ///
    /// # Errors
    /// I/O failures reading file sizes.
    fn stats(&self) -> Result<Stats>;

    /// Runs a merge (bitcask) or log rewrite (memory) now, in the calling thread, while reads
    /// and writes go on.
    ///
    /// # Errors
    /// [`crate::Error::Busy`] if one is already running; I/O failures.
    fn merge(&self) -> Result<MergeReport>;

    /// Takes a point-in-time snapshot now, in the calling thread, while the store serves.
    ///
    /// # Errors
    /// [`crate::Error::Busy`] if one is already running; I/O failures.
    fn snapshot(&self) -> Result<SnapshotReport>;

    /// Starts a merge (bitcask) or log rewrite (memory) on a thread of its own. When this
    /// returns the job is claimed and [`Engine::jobs`] reports it running (or already done);
    /// [`JobHandle::wait`] gives its result.
    ///
    /// # Errors
    /// [`crate::Error::Busy`] if one is already running; [`crate::Error::Closed`].
    fn start_merge(&self) -> Result<JobHandle<MergeReport>>;

    /// Starts a snapshot on a thread of its own; as [`Engine::start_merge`].
    ///
    /// # Errors
    /// [`crate::Error::Busy`] if one is already running; [`crate::Error::Closed`].
    fn start_snapshot(&self) -> Result<JobHandle<SnapshotReport>>;

    /// State of the merge and snapshot jobs.
    fn jobs(&self) -> JobStatus;

    /// Snapshots kept on disk, oldest first.
    ///
    /// # Errors
    /// I/O failures listing the directory.
    fn snapshots(&self) -> Result<Vec<SnapshotInfo>>;

    /// The engine's change feed (see [`changes`]): what watchers and blocking reads are
    /// served from. `None` for an engine that publishes none (then `/watch` is refused).
    fn changes(&self) -> Option<&changes::ChangeLog> {
        None
    }

    /// Makes everything durable, stops background threads and releases the directory lock.
    /// Later calls fail with [`crate::Error::Closed`]. Idempotent.
    ///
    /// # Errors
    /// I/O failures of the final sync.
    fn close(&self) -> Result<()>;
}

/// `result` of a write, after [`Engine::durable_barrier`] when it is a refused precondition
/// (what the blocking write methods answer with).
///
/// # Errors
/// `result`'s own error, or the barrier's.
pub fn settled<T>(engine: &dyn Engine, result: Result<T>) -> Result<T> {
    if let Err(Error::PreconditionFailed { .. }) = &result {
        engine.durable_barrier()?;
    }
    result
}

/// Validates a key against the engines' hard limits.
///
/// # Errors
/// [`crate::Error::EmptyKey`] or [`crate::Error::KeyTooLarge`].
pub fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(crate::Error::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(crate::Error::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// Crash injection for tests: when the environment variable `HOARDHAVEN_CRASH_AT` equals
/// `point`, the process aborts on the spot (no destructors, no buffered writes flushed), as a
/// power cut or kill -9 would leave it. Tests run a child process with the variable set and
/// then check what the next open recovers. Reading the variable once costs nothing after.
pub fn crash_point(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("HOARDHAVEN_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        eprintln!("crash point {point}: aborting");
        std::process::abort();
    }
}

pub use fs::{FSYNC_DURATION_METRIC, fdatasync};
