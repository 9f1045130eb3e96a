//! Checkpoints: a point-in-time snapshot that also becomes the new base of the log
//! (so a snapshot *is* a log rewrite), plus the job status, retention and stats that go
//! with the engine's files.
//!
//! Owns the crash-safe sequence. Each step leaves a state recovery handles:
//! 1. `log-created`: the next log file exists (header only, fsynced). A crash leaves an empty
//!    log that recovery replays as nothing.
//! 2. `cut`: under the exclusive cut lock, clone every shard's `Arc` and switch appends to the
//!    new log; then (writers already going on) the old log's tail is written and fsynced
//!    before any record of the new log can be made durable. A crash leaves old base + old logs + new
//!    log: all replayed, in order.
//! 3. `snapshot-written` / `snapshot-renamed`: the snapshot is written to a `.tmp` name,
//!    fsynced, renamed, directory fsynced. A crash before the rename leaves a `.tmp` that
//!    recovery deletes; after it, an unreferenced but valid snapshot (kept, listed).
//! 4. `manifest-stored`: the manifest now names the new snapshot and the new log as the first
//!    to replay (atomic replace). A crash leaves old logs that recovery deletes.
//! 5. `cleaned`: logs before the new one and snapshots beyond `snapshots_kept` are deleted.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::aof::{create_log, log_name};
use super::manifest::{MANIFEST, Manifest};
use super::recovery::list_files;
use super::snapshot::{self, Hooks, read_header};
use super::{Inner, aof};
use crate::error::{Error, Result};
use crate::jobs::Claim;
use crate::{
    EngineKind, FileStats, JobState, MergeReport, Progress, SnapshotInfo, SnapshotReport, Stats,
    UnixMillis, Version,
};

/// Why a checkpoint runs: it is the same work, reported as a snapshot or as a merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Snapshot,
    Merge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Merge => "merge",
        }
    }
}

/// What a finished checkpoint did.
#[derive(Debug)]
pub(crate) struct Outcome {
    started_at: UnixMillis,
    duration: Duration,
    path: PathBuf,
    keys: u64,
    bytes: u64,
    version: u64,
    files_replaced: u64,
    bytes_before: u64,
    bytes_after: u64,
    records_before: u64,
}

impl Outcome {
    pub(crate) fn snapshot_report(&self) -> SnapshotReport {
        SnapshotReport {
            started_at: self.started_at,
            duration: self.duration,
            path: self.path.clone(),
            keys: self.keys,
            bytes: self.bytes,
            version: Version(self.version),
        }
    }

    pub(crate) fn merge_report(&self) -> MergeReport {
        MergeReport {
            started_at: self.started_at,
            duration: self.duration,
            files_merged: self.files_replaced,
            // A rewrite serialises the table in memory; it reads no file.
            bytes_read: 0,
            bytes_written: self.bytes,
            bytes_reclaimed: self.bytes_before.saturating_sub(self.bytes_after),
            records_kept: self.keys,
            records_dropped: self.records_before.saturating_sub(self.keys),
        }
    }
}

fn set_running(inner: &Inner, kind: Kind, started_at: UnixMillis, progress: Progress) {
    let mut j = inner.jobs.lock();
    match kind {
        Kind::Snapshot => {
            j.snapshot = JobState::Running {
                started_at,
                progress,
            }
        }
        Kind::Merge => {
            j.merge = JobState::Running {
                started_at,
                progress,
            }
        }
    }
}

/// Runs a checkpoint on the calling thread. `wait`: queue behind a running one instead of
/// failing with `Busy`, and do not stop early when the engine is closing (used by `close` and
/// `sync` without a log).
pub(crate) fn run(inner: &Inner, kind: Kind, wait: bool) -> Result<Outcome> {
    let claim = if wait {
        let claim = Claim::take(&inner.checkpoint);
        claimed(inner, kind, claim)?
    } else {
        claim(inner, kind)?
    };
    run_claimed(inner, kind, wait, claim)
}

/// Claims the checkpoint (one at a time, whatever its kind) and marks the job running.
///
/// # Errors
/// [`Error::Busy`] while one runs; [`Error::Poisoned`] after a failed log write.
pub(crate) fn claim(inner: &Inner, kind: Kind) -> Result<Claim> {
    let claim = Claim::try_take(&inner.checkpoint, kind.name())?;
    claimed(inner, kind, claim)
}

fn claimed(inner: &Inner, kind: Kind, claim: Claim) -> Result<Claim> {
    if let Some(msg) = inner.poisoned() {
        return Err(Error::Poisoned(msg));
    }
    set_running(
        inner,
        kind,
        claim.started_at,
        Progress { done: 0, total: 0 },
    );
    Ok(claim)
}

/// Runs the checkpoint `claim` was taken for and records how it ended.
///
/// # Errors
/// I/O errors; the checkpoint leaves the previous state in force.
pub(crate) fn run_claimed(inner: &Inner, kind: Kind, wait: bool, claim: Claim) -> Result<Outcome> {
    let started_at = claim.started_at;
    let t0 = Instant::now();
    let r = checkpoint(inner, kind, wait, started_at, t0);
    let mut j = inner.jobs.lock();
    let succeeded = match kind {
        Kind::Snapshot => j
            .snapshot
            .finish(started_at, &r.as_ref().map(|o| o.snapshot_report())),
        Kind::Merge => j
            .merge
            .finish(started_at, &r.as_ref().map(|o| o.merge_report())),
    };
    if succeeded {
        match kind {
            Kind::Snapshot => j.snapshots_completed += 1,
            Kind::Merge => j.merges_completed += 1,
        }
    }
    drop(j);
    drop(claim);
    if let Err(e) = &r {
        tracing::warn!(error = %e, job = kind.name(), "checkpoint failed");
    }
    r
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let l = list_files(dir)?;
    Ok(l.logs
        .values()
        .chain(l.snaps.values())
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum())
}

fn checkpoint(
    inner: &Inner,
    kind: Kind,
    wait: bool,
    started_at: UnixMillis,
    t0: Instant,
) -> Result<Outcome> {
    let dir = &inner.dir;
    let bytes_before = dir_bytes(dir)?;
    let (snap_seq, new_log_seq, records_before) = {
        let f = inner.files.lock();
        let records = f.base_keys + inner.log_ops.load(Ordering::Relaxed);
        (f.next_snap, f.log_seq + 1, records)
    };
    // 1. The next log, ready before the pause. Not after the log failed: the failed log's torn
    // tail must stay the last thing recovery reads.
    let new_log = match &inner.log {
        Some(log) => {
            log.check()?;
            Some(create_log(dir, new_log_seq)?)
        }
        None => None,
    };
    inner.step("log-created");
    // 2. The cut: a consistent clone of every shard, and the log switched.
    let (shards, version, lsn, dirty, rotation) = {
        let _cut = inner.cut.write();
        // Writes staged until durable are made durable and visible first: the clone must
        // hold every write the old log holds.
        inner.settle()?;
        let shards = inner.table.clone_shards();
        let version = inner.seq.load(Ordering::SeqCst);
        let mut lsn = 0;
        let mut rotation = None;
        if let (Some(log), Some(file)) = (&inner.log, new_log) {
            log.check()?;
            rotation = Some(log.begin_rotate(file, dir.join(log_name(new_log_seq))));
            lsn = log.appended();
        }
        inner.log_ops.store(0, Ordering::Relaxed);
        let dirty = inner.dirty.swap(0, Ordering::AcqRel);
        (shards, version, lsn, dirty, rotation)
    };
    // Writers go on (into memory) while the old log's tail is written and fsynced.
    if let Some(r) = rotation {
        r.finish()?;
    }
    {
        let mut f = inner.files.lock();
        f.log_seq = new_log_seq;
        f.next_snap = snap_seq + 1;
    }
    inner.step("cut");
    // 3. The snapshot, in the background of the store.
    let total: u64 = shards.iter().map(|s| s.data_bytes()).sum();
    let progress = |done: u64| set_running(inner, kind, started_at, Progress { done, total });
    let cancelled = || !wait && *inner.stopping.lock();
    let step = |name: &str| inner.step(name);
    let hooks = Hooks {
        progress: &progress,
        cancelled: &cancelled,
        step: &step,
    };
    let now = UnixMillis::now().0;
    let written = match snapshot::write_snapshot(dir, snap_seq, version, now, &shards, &hooks) {
        Ok(w) => w,
        Err(e) => {
            // Those changes still need a snapshot.
            inner.dirty.fetch_add(dirty, Ordering::AcqRel);
            return Err(e);
        }
    };
    drop(shards);
    inner
        .snapshot_bytes_written
        .fetch_add(written.bytes, Ordering::Relaxed);
    // 4. Switch the base.
    let manifest = Manifest {
        base: snap_seq,
        first_log: new_log_seq,
    };
    if let Err(e) = manifest.store(dir) {
        // The manifest may or may not have been replaced: stop writing until reopened.
        inner.poison(&e);
        return Err(e);
    }
    inner.step("manifest-stored");
    {
        let mut f = inner.files.lock();
        f.manifest = manifest;
        f.base_keys = written.keys;
        f.base_bytes = written.bytes;
    }
    inner.log_base_lsn.store(lsn, Ordering::Release);
    *inner.last_save.lock() = Instant::now();
    // 5. Delete what the new base replaces.
    let files_replaced = clean(inner, &manifest)?;
    inner.step("cleaned");
    let bytes_after = dir_bytes(dir)?;
    tracing::info!(path = %written.path.display(), keys = written.keys, bytes = written.bytes,
        job = kind.name(), "checkpoint done");
    Ok(Outcome {
        started_at,
        duration: t0.elapsed(),
        path: written.path,
        keys: written.keys,
        bytes: written.bytes,
        version,
        files_replaced,
        bytes_before,
        bytes_after,
        records_before,
    })
}

/// Deletes logs before the manifest's first log and the oldest snapshots beyond the number
/// kept (never the base). Returns how many logs were deleted.
fn clean(inner: &Inner, m: &Manifest) -> Result<u64> {
    let files = list_files(&inner.dir)?;
    let mut deleted = 0;
    let remove = |p: &Path| match std::fs::remove_file(p) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "could not delete an old file");
            false
        }
    };
    let mut logs = 0;
    for (_, p) in files.logs.range(..m.first_log) {
        if remove(p) {
            deleted += 1;
            logs += 1;
        }
    }
    let extra = files.snaps.len().saturating_sub(inner.opts.snapshots_kept);
    for (_, p) in files
        .snaps
        .iter()
        .filter(|(s, _)| **s != m.base)
        .take(extra)
    {
        if remove(p) {
            deleted += 1;
        }
    }
    if deleted > 0 {
        super::codec::sync_dir(&inner.dir)?;
    }
    Ok(logs)
}

/// Snapshots on disk, oldest first.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<SnapshotInfo>> {
    let files = list_files(dir)?;
    let mut out = Vec::with_capacity(files.snaps.len());
    for p in files.snaps.values() {
        let Ok(meta) = std::fs::metadata(p) else {
            continue; // deleted meanwhile
        };
        let taken_at = read_header(p).map(|h| h.taken_at).unwrap_or(0);
        out.push(SnapshotInfo {
            path: p.clone(),
            bytes: meta.len(),
            taken_at: UnixMillis(taken_at),
        });
    }
    Ok(out)
}

/// The fixed bytes of a file of `len` bytes named `name`, holding no entry: the whole
/// manifest, a log's header, a snapshot's header (44 bytes) and trailer (28 bytes).
fn structure_bytes(name: &str, len: u64) -> u64 {
    const SNAPSHOT_FIXED: u64 = 44 + 28;
    if name == MANIFEST {
        len
    } else if super::aof::parse_log_name(name).is_some() {
        len.min(aof::LOG_HEADER_LEN as u64)
    } else if super::snapshot::parse_snap_name(name).is_some() {
        len.min(SNAPSHOT_FIXED)
    } else {
        0
    }
}

/// The engine's statistics.
pub(crate) fn stats(inner: &Inner) -> Result<Stats> {
    let (mut keys, mut live, mut index) = (0u64, 0u64, 0u64);
    for s in inner.table.shards() {
        let g = s.read();
        keys += g.len() as u64;
        live += g.data_bytes();
        index += g.memory_bytes() as u64;
    }
    index += inner.table.ordered_memory_bytes() as u64;
    let (current_log, base) = {
        let f = inner.files.lock();
        (log_name(f.log_seq), f.manifest.base)
    };
    let listing = list_files(&inner.dir)?;
    let mut files = Vec::new();
    for p in listing
        .snaps
        .values()
        .chain(listing.logs.values())
        .chain(std::iter::once(&inner.dir.join(MANIFEST)))
    {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let active = inner.log.is_some() && name == current_log;
        // Old snapshots are copies kept on request; base and logs are what recovery needs.
        let is_extra = super::snapshot::parse_snap_name(&name).is_some_and(|s| s != base);
        files.push(FileStats {
            total_bytes: meta.len(),
            live_bytes: if is_extra { 0 } else { meta.len() },
            dead_bytes: if is_extra { meta.len() } else { 0 },
            active,
            name,
        });
    }
    let disk_bytes: u64 = files.iter().map(|f| f.total_bytes).sum();
    // What a rewrite would reclaim: everything the base and logs hold beyond the live data
    // and beyond their fixed structure (the manifest, log headers, the base snapshot's header
    // and trailer), which a store with no keys has too: it is not dead data.
    let needed: u64 = files.iter().map(|f| f.live_bytes).sum();
    let structure: u64 = files
        .iter()
        .filter(|f| f.live_bytes > 0)
        .map(|f| structure_bytes(&f.name, f.total_bytes))
        .sum();
    let dead =
        needed.saturating_sub(live + structure) + files.iter().map(|f| f.dead_bytes).sum::<u64>();
    let log_bytes = inner.log.as_ref().map_or(0, aof::LogWriter::appended);
    Ok(Stats {
        engine: EngineKind::Memory,
        keys,
        live_bytes: live,
        dead_bytes: dead,
        disk_bytes,
        data_files: files.len() as u64,
        fragmentation: if live + dead == 0 {
            0.0
        } else {
            dead as f64 / (live + dead) as f64
        },
        index_bytes: index,
        files,
        sync: inner.sync,
        bytes_written: log_bytes + inner.snapshot_bytes_written.load(Ordering::Relaxed),
        corrupt_records: inner.corrupt_records.load(Ordering::Relaxed),
        last_version: Version(inner.seq.load(Ordering::SeqCst)),
        jobs: inner.jobs.lock().clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryEngine, MemoryOptions};
    use crate::{Engine, SyncPolicy};

    #[test]
    fn a_claimed_checkpoint_is_running_at_once_and_refuses_a_second_start() {
        let tmp = tempfile::tempdir().expect("tmp");
        let m = MemoryEngine::open(tmp.path(), SyncPolicy::Never, &MemoryOptions::default())
            .expect("open");
        let c = claim(&m.inner, Kind::Snapshot).expect("claim");
        assert!(matches!(m.jobs().snapshot, JobState::Running { .. }));
        // One checkpoint at a time, whatever its kind.
        assert!(matches!(m.start_merge(), Err(Error::Busy("merge"))));
        assert!(matches!(m.start_snapshot(), Err(Error::Busy(_))));
        run_claimed(&m.inner, Kind::Snapshot, false, c).expect("snapshot");
        assert!(matches!(m.jobs().snapshot, JobState::Done(_)));
        m.start_merge().expect("start").wait().expect("rewrite");
        assert!(matches!(m.jobs().merge, JobState::Done(_)));
        m.close().expect("close");
    }
}
