//! The bitcask engine: append-only data files and an in-memory keydir.
//!
//! Submodules, one job each:
//! - [`record`]: the record format (header, CRC32C, batch envelopes).
//! - [`data_file`]: file ids and names, the file header, positional reads (pread or mmap).
//! - [`keydir`]: the compact sharded key -> location index.
//! - [`writer`]: the active file, the append buffer, rotation, group commit.
//! - [`scan`]: sequential record scanning with torn-tail detection.
//! - [`recovery`]: rebuilding the keydir at start-up.
//! - [`hint`]: hint files.
//! - [`merge`]: compaction of sealed files, and its policy.
//! - [`snapshot`]: point-in-time copies that are themselves data directories.
//! - [`ops`]: the read and write paths behind the [`Engine`] trait.
//! - `history`: the change history watchers read from the data files.
//!
//! Concurrency: one writer mutex orders appends; the keydir has its own sharded locks; the
//! file table is behind an `RwLock` that readers hold only to clone an `Arc<DataFile>`.
//! Reads of sealed files never touch the writer mutex.

pub mod data_file;
pub mod hint;
mod history;
pub mod keydir;
mod merge;
mod mmap;
mod ops;
pub mod record;
pub mod recovery;
pub mod scan;
mod snapshot;
mod writer;

use hashbrown::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

pub use data_file::ReadMode;
pub use merge::MergePolicy;

use crate::changes::ChangeLog;
use crate::dir_lock::DirLock;
use crate::error::{Error, Result};
use crate::jobs::{JobLock, job_lock};
use crate::{JobStatus, SyncPolicy, Version};
use data_file::{DataFile, FileId, Role};
use keydir::Keydir;
use writer::Writer;

use crate::durability::{Flusher, GroupCommit, Poison};

/// Largest value the bitcask engine stores (record lengths are kept in 32 bits).
pub const MAX_VALUE_LEN: usize = 1 << 30;
/// How often `SyncPolicy::Never` writes the append buffer to the OS.
const NEVER_FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Largest `max_file_size` (record offsets are kept in 32 bits).
pub const MAX_FILE_SIZE: u64 = 2 << 30;

/// Bitcask settings (the data directory and sync policy are passed beside them).
#[derive(Clone, Debug, PartialEq)]
pub struct BitcaskOptions {
    /// Rotate the active file when it would grow past this many bytes.
    pub max_file_size: u64,
    /// How data files are read (see [`ReadMode`]).
    pub read_mode: ReadMode,
    /// When merges run by themselves.
    pub merge: MergePolicy,
    /// Snapshots kept in `<dir>/snapshots`; older ones are pruned.
    pub snapshots_kept: usize,
    /// Value compression for new records (any stored codec is read whatever this says).
    pub compression: crate::compression::Compression,
}

impl Default for BitcaskOptions {
    fn default() -> Self {
        BitcaskOptions {
            max_file_size: 256 << 20,
            read_mode: ReadMode::Pread,
            merge: MergePolicy::default(),
            snapshots_kept: 3,
            compression: crate::compression::Compression::default(),
        }
    }
}

impl BitcaskOptions {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        if self.max_file_size < 4096 || self.max_file_size > MAX_FILE_SIZE {
            return Err(Error::InvalidConfig {
                name: "max_file_size".into(),
                reason: format!("must be between 4096 and {MAX_FILE_SIZE} bytes"),
            });
        }
        self.merge.validate()
    }
}

/// The engine's shared state.
///
/// # Lock order
///
/// A thread that holds several of these locks takes them in this order, never the reverse
/// (each is released before an earlier one is taken):
///
/// 1. `merge_running`, then `snapshot_running` (job claims; `close` takes both, merge first);
/// 2. `retire` (files leaving the store after a merge, or being linked into a snapshot);
/// 3. `writer` (the append path: version order, the active file, rotation);
/// 4. `files` (the map of open data files; write-locked only to add or retire a file);
/// 5. `live` (live bytes per file) and the keydir's shard locks, each held only for one update;
/// 6. leaves, taken with nothing after them: `hint_threads`, `jobs`, `poison_reason`, `lock`,
///    the group commit's state.
///
/// Reads of sealed files take `files` (read) alone, never `writer`.
pub(crate) struct Inner {
    dir: PathBuf,
    opts: BitcaskOptions,
    sync: SyncPolicy,
    keydir: Keydir,
    files: RwLock<HashMap<u32, Arc<DataFile>>>,
    next_file_no: AtomicU32,
    writer: Mutex<Writer>,
    commit: Arc<GroupCommit>,
    /// Runtime number of the active file, readable without the writer mutex.
    active_no: AtomicU32,
    /// Live bytes per runtime file number.
    live: Mutex<HashMap<u32, u64>>,
    poison: Arc<Poison>,
    closed: AtomicBool,
    bytes_written: AtomicU64,
    corrupt_records: AtomicU64,
    jobs: Mutex<JobStatus>,
    /// Claimed by a running merge (see [`crate::jobs`]).
    merge_running: JobLock,
    /// Claimed by a running snapshot.
    snapshot_running: JobLock,
    /// Held while files are retired (removed after a merge) or linked into a snapshot.
    retire: Mutex<()>,
    /// Hint writers started on rotation; joined on close.
    hint_threads: Mutex<Vec<JoinHandle<()>>>,
    lock: Mutex<Option<DirLock>>,
    /// The change feed: published under the writer mutex where a write becomes visible.
    changes: ChangeLog,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitcask")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Adds a file to the file table, returning its runtime number.
    fn register(&self, file: Arc<DataFile>) -> u32 {
        let no = self.next_file_no.fetch_add(1, Ordering::Relaxed);
        self.files.write().insert(no, file);
        no
    }

    /// The file with runtime number `no`, if still present.
    fn file(&self, no: u32) -> Option<Arc<DataFile>> {
        self.files.read().get(&no).cloned()
    }

    /// Marks the engine as refusing writes after an I/O failure (fail-stop).
    fn poison(&self, err: &Error) {
        self.poison.poison(err);
    }

    fn check_poisoned(&self) -> Result<()> {
        self.poison.check()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Called by the writer after sealing file `no`: reopen it as immutable (mapped in mmap
    /// mode) and write its hint in the background.
    fn sealed(&self, no: u32) -> Result<()> {
        let Some(old) = self.file(no) else {
            return Ok(());
        };
        let file = std::fs::File::open(&old.path)
            .map_err(|e| Error::io(format!("reopening {}", old.path.display()), e))?;
        let sealed = Arc::new(DataFile::new(
            old.id,
            old.path.clone(),
            file,
            self.opts.read_mode,
            Role::Sealed,
        )?);
        self.files.write().insert(no, sealed.clone());
        let dir = self.dir.clone();
        let handle = std::thread::Builder::new()
            .name("hoardhaven-hint".into())
            .spawn(move || {
                if let Err(e) = merge::write_hint_for(&dir, &sealed.path) {
                    tracing::warn!(file = %sealed.path.display(), error = %e, "could not write hint file");
                }
            })
            .map_err(|e| Error::io("spawning the hint writer", e))?;
        let mut threads = self.hint_threads.lock();
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
        Ok(())
    }
}

/// True for the names of the files a bitcask store keeps in its directory (data and hint
/// files), used to tell which engine a directory without a marker belongs to.
pub fn owns_file_name(name: &str) -> bool {
    FileId::parse(name, "data").is_some() || FileId::parse(name, "hint").is_some()
}

/// The bitcask engine. Cheap to share behind `Arc<dyn Engine>`.
#[derive(Debug)]
pub struct Bitcask {
    inner: Arc<Inner>,
    background: Mutex<Background>,
}

#[derive(Debug, Default)]
struct Background {
    stop: Option<mpsc::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    /// Leads group commits for awaited writes (`SyncPolicy::Always`).
    committer: Option<JoinHandle<()>>,
}

impl Bitcask {
    /// Opens (creating or recovering) the store in `dir`.
    ///
    /// # Errors
    /// [`Error::Locked`] if another process has it, [`Error::InvalidConfig`],
    /// [`Error::Corrupted`], [`Error::UnsupportedFormat`], I/O errors.
    pub fn open(dir: &Path, sync: SyncPolicy, opts: &BitcaskOptions) -> Result<Self> {
        opts.validate()?;
        let lock = DirLock::acquire(dir)?;
        let rec = recovery::recover(dir, opts.read_mode, opts.max_file_size)?;
        Self::from_recovered(dir, sync, opts, Some(lock), rec)
    }

    /// Opens the store in `dir` for reading only (see [`crate::open_read_only`], the public
    /// way in, which also refuses every write): the lock is taken shared, recovery changes no
    /// file, no active file is created and no background thread runs. The engine is marked
    /// as refusing writes from the start, so `close` makes no final trim or sync.
    ///
    /// # Errors
    /// As [`Bitcask::open`].
    /// With `salvage`, recovery reads past damaged regions instead of stopping (see
    /// [`recovery::recover_salvage`]); they count in `corrupt_records`.
    pub(crate) fn open_read_only(dir: &Path, opts: &BitcaskOptions, salvage: bool) -> Result<Self> {
        opts.validate()?;
        let lock = DirLock::acquire_shared(dir)?;
        let rec = if salvage {
            recovery::recover_salvage(dir, opts.read_mode, opts.max_file_size)?
        } else {
            recovery::recover_read_only(dir, opts.read_mode, opts.max_file_size)?
        };
        let files: HashMap<u32, Arc<DataFile>> = rec.files.iter().cloned().collect();
        let next_no = rec.files.len() as u32 + 1;
        let (active_no, active, len) = match rec.files.last() {
            Some((no, f)) if rec.last_is_active => (*no, f.clone(), rec.last_valid_len),
            _ => {
                // Nothing to append to and nothing will be: a placeholder (the directory's
                // own handle, never read: no keydir entry points at it) outside the file
                // table, so stats list only real files.
                let file = std::fs::File::open(dir)
                    .map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
                let id = FileId {
                    major: rec.max_major + 1,
                    minor: 0,
                };
                let f = Arc::new(DataFile::new(
                    id,
                    dir.to_path_buf(),
                    file,
                    ReadMode::Pread,
                    Role::Sealed,
                )?);
                (next_no, f, 0)
            }
        };
        let inner = Self::inner(
            dir,
            SyncPolicy::Never,
            opts,
            lock,
            rec,
            files,
            active_no,
            active,
            len,
            next_no + 1,
        );
        inner.poison.refuse(Error::ReadOnly.to_string());
        Ok(Bitcask {
            inner,
            background: Mutex::new(Background::default()),
        })
    }

    fn from_recovered(
        dir: &Path,
        sync: SyncPolicy,
        opts: &BitcaskOptions,
        lock: Option<DirLock>,
        rec: recovery::Recovered,
    ) -> Result<Self> {
        let files: HashMap<u32, Arc<DataFile>> = rec.files.iter().cloned().collect();
        let mut next_no = rec.files.len() as u32 + 1;
        let (active_no, active, len) = match rec.files.last() {
            Some((no, f)) if rec.last_is_active => (*no, f.clone(), f.size()?),
            _ => {
                let id = FileId {
                    major: rec.max_major + 1,
                    minor: 0,
                };
                let (file, path) = writer::create_data_file(dir, id, rec.next_seq)?;
                let no = next_no;
                next_no += 1;
                let role = Role::Active {
                    capacity: opts.max_file_size,
                };
                let f = Arc::new(DataFile::new(id, path, file, opts.read_mode, role)?);
                (no, f, data_file::FILE_HEADER_LEN as u64)
            }
        };
        let mut files = files;
        files.insert(active_no, active.clone());
        let inner = Self::inner(
            dir, sync, opts, lock, rec, files, active_no, active, len, next_no,
        );
        inner
            .changes
            .set_history(Box::new(history::DiskHistory::new(Arc::downgrade(&inner))));
        let mut background = Background::default();
        if sync == SyncPolicy::Always {
            background.committer = Some(inner.commit.spawn_committer("hoardhaven-commit")?);
        }
        let engine = Bitcask {
            inner,
            background: Mutex::new(background),
        };
        engine.start_background()?;
        Ok(engine)
    }

    /// The shared state over a recovered store whose active file is `active`.
    #[allow(clippy::too_many_arguments)]
    fn inner(
        dir: &Path,
        sync: SyncPolicy,
        opts: &BitcaskOptions,
        lock: Option<DirLock>,
        rec: recovery::Recovered,
        files: HashMap<u32, Arc<DataFile>>,
        active_no: u32,
        active: Arc<DataFile>,
        len: u64,
        next_no: u32,
    ) -> Arc<Inner> {
        let poison = Arc::new(Poison::new());
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            sync,
            keydir: rec.keydir,
            files: RwLock::new(files),
            next_file_no: AtomicU32::new(next_no),
            writer: Mutex::new(Writer::new(
                active_no,
                active,
                len,
                rec.next_seq,
                sync,
                opts.max_file_size,
                poison.clone(),
            )),
            commit: GroupCommit::new(rec.next_seq - 1, poison.clone()),
            active_no: AtomicU32::new(active_no),
            live: Mutex::new(rec.live),
            poison,
            closed: AtomicBool::new(false),
            bytes_written: AtomicU64::new(0),
            // A torn tail cut at start-up is a damaged record found.
            corrupt_records: AtomicU64::new(rec.torn_tails + rec.damaged_regions),
            jobs: Mutex::new(JobStatus::default()),
            merge_running: job_lock(),
            snapshot_running: job_lock(),
            retire: Mutex::new(()),
            hint_threads: Mutex::new(Vec::new()),
            lock: Mutex::new(lock),
            changes: ChangeLog::new(Version(rec.next_seq.saturating_sub(1))),
        });
        let flusher: Arc<dyn Flusher> = inner.clone();
        inner.commit.set_flusher(Arc::downgrade(&flusher));
        inner
    }

    /// Starts the interval-sync and merge-policy threads.
    fn start_background(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let mut bg = self.background.lock();
        // `never` still hands the append buffer to the OS every 50 ms, so a process crash
        // loses at most that much; `<N>ms` fsyncs every N ms.
        let tick = match self.inner.sync {
            SyncPolicy::Every(d) => Some(d),
            SyncPolicy::Never => Some(NEVER_FLUSH_EVERY),
            SyncPolicy::Always => None,
        };
        let check = self.inner.opts.merge.check_interval;
        if tick.is_none() && check.is_none() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let handle = std::thread::Builder::new()
            .name("hoardhaven-bitcask-bg".into())
            .spawn(move || background_loop(&inner, &rx, tick, check))
            .map_err(|e| Error::io("spawning the background thread", e))?;
        bg.stop = Some(tx);
        bg.threads.push(handle);
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

/// Interval fsync and the periodic merge-policy check, until the stop channel closes.
fn background_loop(
    inner: &Arc<Inner>,
    rx: &Mutex<mpsc::Receiver<()>>,
    tick: Option<Duration>,
    check: Option<Duration>,
) {
    let step = match (tick, check) {
        (Some(t), Some(c)) => t.min(c),
        (Some(t), None) => t,
        (None, Some(c)) => c,
        (None, None) => return,
    };
    let mut since_check = Duration::ZERO;
    loop {
        match rx.lock().recv_timeout(step) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if tick.is_some() && !inner.poison.is_set() {
            if inner.sync == SyncPolicy::Never {
                // A full disk leaves the buffer waiting (writes are refused meanwhile);
                // other failures poison.
                if let Err(e) = inner.writer.lock().flush_before_append(inner) {
                    tracing::error!(error = %e, "background flush failed");
                }
            } else {
                if let Err(e) = inner.commit.sync_now() {
                    tracing::error!(error = %e, "interval fsync failed");
                }
            }
        }
        if let Some(c) = check {
            since_check += step;
            if since_check >= c {
                since_check = Duration::ZERO;
                merge::maybe_merge(inner);
            }
        }
    }
}

impl Drop for Bitcask {
    fn drop(&mut self) {
        if let Err(e) = crate::Engine::close(self) {
            tracing::error!(error = %e, "closing the bitcask engine failed");
        }
    }
}
