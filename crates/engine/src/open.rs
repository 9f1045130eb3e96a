//! Choosing and opening an engine from typed options, and which engine owns a directory.
//!
//! Owns [`open`] (read-write, what the server and `import`/`compact` use), [`open_read_only`]
//! (offline inspection: creates, truncates and removes nothing), the `ENGINE` marker that says
//! which engine a data directory belongs to, and [`detect`], which reads it (or, for
//! directories made before the marker existed, guesses from their files). Both opens refuse a
//! directory of the other engine with [`Error::WrongEngine`], so the server and every tool
//! share the refusal.
//!
//! # The `ENGINE` marker
//! A file named `ENGINE` in the data directory, written by the first read-write open (also
//! of a directory made before markers existed): one line of ASCII text,
//! `hoardhaven-engine <kind>\n` with `<kind>` `bitcask` or `memory`. It is written to
//! `ENGINE.tmp`, fsynced, renamed over `ENGINE`, and the directory fsynced. A marker with any
//! other content is refused as [`Error::Corrupted`]. Without a marker the directory's files
//! decide: `MANIFEST`, `log-*.hha` or `snap-*` mean memory; `*.data` or `*.hint` mean bitcask;
//! a directory with neither is unclaimed (empty).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;

use super::{
    BatchOp, BatchResult, Engine, JobHandle, JobStatus, ListPage, MergeReport, Meta, Precondition,
    PutOptions, SnapshotInfo, SnapshotReport, Stats, SyncPolicy, Value, Version, Written, bitcask,
    memory,
};
use crate::error::{Error, IoContext, Result};

/// Name of the marker file (format in the module docs).
pub const MARKER: &str = "ENGINE";
const MARKER_PREFIX: &str = "hoardhaven-engine ";

/// Which engine serves the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// Log-structured data files with an in-memory keydir.
    #[default]
    Bitcask,
    /// Redis-style in-memory table with snapshots and an append-only log.
    Memory,
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "bitcask" => Ok(EngineKind::Bitcask),
            "memory" => Ok(EngineKind::Memory),
            other => Err(format!("expected `bitcask` or `memory`, got `{other}`")),
        }
    }
}

impl EngineKind {
    /// Longest value this engine stores: bitcask [`bitcask::MAX_VALUE_LEN`], memory
    /// [`memory::MAX_VALUE_LEN`].
    pub const fn max_value_len(self) -> usize {
        match self {
            EngineKind::Bitcask => bitcask::MAX_VALUE_LEN,
            EngineKind::Memory => memory::MAX_VALUE_LEN,
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineKind::Bitcask => "bitcask",
            EngineKind::Memory => "memory",
        })
    }
}

/// Everything needed to open an engine.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Which engine.
    pub kind: EngineKind,
    /// The data directory (created if missing, locked while open).
    pub dir: PathBuf,
    /// When writes are made durable.
    pub sync: SyncPolicy,
    /// Bitcask-specific settings.
    pub bitcask: bitcask::BitcaskOptions,
    /// Memory-engine-specific settings.
    pub memory: memory::MemoryOptions,
}

/// The engine `dir` belongs to: its marker's, else the one its files are of; `Ok(None)` for
/// a missing or empty directory (or one holding neither engine's files).
///
/// # Errors
/// [`Error::Corrupted`] for an unreadable marker, or files of both engines without a marker;
/// I/O errors.
pub fn detect(dir: &Path) -> Result<Option<EngineKind>> {
    let path = dir.join(MARKER);
    match std::fs::read(&path) {
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            return text
                .strip_prefix(MARKER_PREFIX)
                .and_then(|k| k.strip_suffix('\n'))
                .and_then(|k| k.parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    Error::corrupted(
                        &path,
                        0,
                        format!("not a hoardhaven engine marker (want `{MARKER_PREFIX}<kind>`)"),
                    )
                });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let (mut mem, mut bc) = (false, false);
    for entry in entries {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        mem |= memory::owns_file_name(name);
        bc |= bitcask::owns_file_name(name);
    }
    match (mem, bc) {
        (true, true) => Err(Error::corrupted(
            dir,
            0,
            "the directory holds files of both engines and no ENGINE marker; move one \
             engine's files away",
        )),
        (true, false) => Ok(Some(EngineKind::Memory)),
        (false, true) => Ok(Some(EngineKind::Bitcask)),
        (false, false) => Ok(None),
    }
}

/// Refuses `dir` unless it is unclaimed or belongs to `wanted`; returns what it holds.
fn check_owner(dir: &Path, wanted: EngineKind) -> Result<Option<EngineKind>> {
    match detect(dir)? {
        Some(found) if found != wanted => Err(Error::WrongEngine {
            dir: dir.to_path_buf(),
            found,
            wanted,
        }),
        found => Ok(found),
    }
}

/// Writes the `ENGINE` marker for `kind` into `dir` (format in the module docs).
fn write_marker(dir: &Path, kind: EngineKind) -> Result<()> {
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let path = dir.join(MARKER);
    // Through the fs seam like every other durable write, so fault injection and the
    // power-loss model see it.
    std::fs::File::create(&tmp)
        .and_then(|mut f| {
            crate::fault::write_all(&mut f, format!("{MARKER_PREFIX}{kind}\n").as_bytes(), &tmp)?;
            crate::fault::sync_all(&f, &tmp)
        })
        .ctx(|| format!("writing {}", tmp.display()))?;
    crate::fault::rename(&tmp, &path).ctx(|| format!("renaming {}", tmp.display()))?;
    bitcask::data_file::sync_dir(dir)
}

/// Opens (recovering if needed) the engine the options name, read-write. Writes the
/// directory's `ENGINE` marker when it has none.
///
/// # Errors
/// [`Error::WrongEngine`] when the directory belongs to the other engine; lock, format,
/// corruption and I/O errors of the chosen engine.
pub fn open(opts: &EngineOptions) -> Result<Arc<dyn Engine>> {
    check_owner(&opts.dir, opts.kind)?;
    let engine = open_unchecked(opts)?;
    if !opts.dir.join(MARKER).exists() {
        // Under the engine's lock, so two opens never race on it.
        write_marker(&opts.dir, opts.kind)?;
    }
    Ok(engine)
}

/// Opens the store read-only for offline inspection: takes the directory lock shared (only
/// if a `LOCK` file exists), creates, truncates and removes nothing, runs no background
/// thread. A torn tail is left in place and not read. Writes, syncs, merges and snapshots
/// fail with [`Error::ReadOnly`]; [`Engine::sync`] succeeds with nothing to do. Only `kind`,
/// `dir` and the engines' read settings of `opts` are used.
///
/// # Errors
/// [`Error::WrongEngine`]; [`Error::Locked`] while a read-write open (a server) holds the
/// directory; format, corruption and I/O errors.
pub fn open_read_only(opts: &EngineOptions) -> Result<Arc<dyn Engine>> {
    read_only(opts, false)
}

/// As [`open_read_only`], reading past damage to get out what is readable (`export
/// --skip-corrupt`): a bitcask data file without a good hint is walked record by record,
/// resyncing after bad bytes, and each damaged region counts in `corrupt_records` instead of
/// failing the open. A value overwritten or deleted inside a damaged region can come back in
/// its older version, so this is for getting data out, never for serving. The memory engine
/// opens as [`open_read_only`] does (damage in a snapshot or log fails the open).
///
/// # Errors
/// As [`open_read_only`], less the corruption of bitcask records.
pub fn open_salvage(opts: &EngineOptions) -> Result<Arc<dyn Engine>> {
    read_only(opts, true)
}

fn read_only(opts: &EngineOptions, salvage: bool) -> Result<Arc<dyn Engine>> {
    check_owner(&opts.dir, opts.kind)?;
    let inner: Arc<dyn Engine> = match opts.kind {
        EngineKind::Bitcask => Arc::new(bitcask::Bitcask::open_read_only(
            &opts.dir,
            &opts.bitcask,
            salvage,
        )?),
        EngineKind::Memory => Arc::new(memory::MemoryEngine::open_read_only(
            &opts.dir,
            &opts.memory,
        )?),
    };
    Ok(Arc::new(ReadOnly(inner)))
}

/// An engine opened read-only: reads pass through, everything that writes is refused.
struct ReadOnly(Arc<dyn Engine>);

impl Engine for ReadOnly {
    fn kind(&self) -> EngineKind {
        self.0.kind()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.0.get(key)
    }
    fn head(&self, key: &[u8]) -> Result<Option<Meta>> {
        self.0.head(key)
    }
    fn put(&self, _: &[u8], _: Bytes, _: PutOptions) -> Result<Written> {
        Err(Error::ReadOnly)
    }
    fn delete(&self, _: &[u8], _: Precondition) -> Result<Option<Version>> {
        Err(Error::ReadOnly)
    }
    fn apply_batch_checked(
        &self,
        _: &[(Vec<u8>, Precondition)],
        _: Vec<BatchOp>,
    ) -> Result<Vec<BatchResult>> {
        Err(Error::ReadOnly)
    }
    fn list_range(
        &self,
        range: &crate::KeyRange<'_>,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ListPage> {
        self.0.list_range(range, start_after, limit)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn stats(&self) -> Result<Stats> {
        self.0.stats()
    }
    fn merge(&self) -> Result<MergeReport> {
        Err(Error::ReadOnly)
    }
    fn snapshot(&self) -> Result<SnapshotReport> {
        Err(Error::ReadOnly)
    }
    fn start_merge(&self) -> Result<JobHandle<MergeReport>> {
        Err(Error::ReadOnly)
    }
    fn start_snapshot(&self) -> Result<JobHandle<SnapshotReport>> {
        Err(Error::ReadOnly)
    }
    fn jobs(&self) -> JobStatus {
        self.0.jobs()
    }
    fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        self.0.snapshots()
    }
    fn close(&self) -> Result<()> {
        self.0.close()
    }
}

fn open_unchecked(opts: &EngineOptions) -> Result<Arc<dyn Engine>> {
    Ok(match opts.kind {
        EngineKind::Bitcask => {
            Arc::new(bitcask::Bitcask::open(&opts.dir, opts.sync, &opts.bitcask)?)
        }
        EngineKind::Memory => Arc::new(memory::MemoryEngine::open(
            &opts.dir,
            opts.sync,
            &opts.memory,
        )?),
    })
}
