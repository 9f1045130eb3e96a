//! Point-in-time snapshots: a directory under `<data>/snapshots/` that is itself a valid
//! data directory, made while the store serves.
//!
//! 1. Hold the retire lock (so no merge unlinks a file meanwhile) and, for a file switch only,
//!    the writer mutex: seal the active file if it holds records. Every record written so far
//!    is now in a sealed file, and sealed files never change again.
//! 2. fsync and hard-link each sealed data file (and its hint, when written) into
//!    `snapshots/.tmp-<name>`; add an empty data file numbered above them, so that opening the
//!    snapshot appends to a file of its own and never to a file shared with the live store.
//! 3. fsync the directory, rename it to `snapshots/<name>`, fsync `snapshots/`; prune the
//!    oldest snapshots past the configured count.
//!
//! `<name>` is `<unix ms>-<highest version>`, zero-padded so names sort by time. A crash
//! leaves at most a `.tmp-` directory, removed by the next snapshot.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::data_file::{DataFile, FILE_HEADER_LEN, FileId, sync_dir};
use super::{Inner, writer};
use crate::error::{Error, IoContext, Result};
use crate::jobs::Claim;
use crate::{JobState, SnapshotInfo, SnapshotReport, UnixMillis, Version, crash_point, fault};

/// The directory holding snapshots.
pub fn snapshots_dir(dir: &Path) -> PathBuf {
    dir.join("snapshots")
}

/// Takes a snapshot now, on the calling thread. Only one at a time.
///
/// # Errors
/// [`Error::Busy`] when one is running; I/O errors.
pub fn run(inner: &Inner) -> Result<SnapshotReport> {
    let claim = claim(inner)?;
    run_claimed(inner, claim)
}

/// Claims the snapshot job and marks it running.
///
/// # Errors
/// [`Error::Busy`] when one is running.
pub(crate) fn claim(inner: &Inner) -> Result<Claim> {
    let claim = Claim::try_take(&inner.snapshot_running, "snapshot")?;
    inner.jobs.lock().snapshot = JobState::started(claim.started_at);
    Ok(claim)
}

/// Takes the snapshot `claim` was taken for and records how it ended.
///
/// # Errors
/// I/O errors.
pub(crate) fn run_claimed(inner: &Inner, claim: Claim) -> Result<SnapshotReport> {
    let started_at = claim.started_at;
    let result = take(inner, started_at);
    let mut jobs = inner.jobs.lock();
    if jobs.snapshot.finish(started_at, &result) {
        jobs.snapshots_completed += 1;
    }
    drop(jobs);
    drop(claim);
    result
}

fn take(inner: &Inner, started_at: UnixMillis) -> Result<SnapshotReport> {
    let clock = Instant::now();
    let root = snapshots_dir(&inner.dir);
    fs::create_dir_all(&root).ctx(|| format!("creating {}", root.display()))?;
    // The `snapshots` entry must be durable in the data directory too, or a power cut after
    // the first snapshot loses every snapshot (found by tests/power_loss.rs).
    sync_dir(&inner.dir)?;
    crash_point("snapshot:root-created");
    remove_leftovers(&root)?;
    let _retire = inner.retire.lock();
    let (files, last_seq, next_major, keys): (Vec<Arc<DataFile>>, u64, u32, u64) = {
        let mut w = inner.writer.lock();
        inner.check_poisoned()?;
        if w.len() > FILE_HEADER_LEN as u64 {
            w.rotate(inner)?;
        }
        let active = w.active_no();
        let mut v: Vec<_> = inner
            .files
            .read()
            .iter()
            .filter(|(no, _)| **no != active)
            .map(|(_, f)| f.clone())
            .collect();
        v.sort_by_key(|f| f.id);
        (
            v,
            w.last_seq(),
            w.active().id.major + 1,
            inner.keydir.len() as u64,
        )
    };
    crash_point("snapshot:rotated");
    // Two snapshots in one millisecond with no write between would get the same name (found
    // by fuzzing: the second failed to rename onto the first). Names increase strictly within
    // a process; the loop below guards against a name left by another process.
    let ms = unique_ms(started_at.0);
    let base = format!("{ms:013}-{last_seq:020}");
    let mut name = base.clone();
    let mut n = 1;
    while root.join(&name).exists() {
        name = format!("{base}-{n}");
        n += 1;
    }
    let tmp = root.join(format!(".tmp-{name}"));
    fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    crash_point("snapshot:tmp-created");
    let mut bytes = 0u64;
    for f in &files {
        fault::sync_all(f.file(), &f.path).ctx(|| format!("fsync {}", f.path.display()))?;
        let target = tmp.join(f.id.data_name());
        fault::hard_link(&f.path, &target).ctx(|| format!("linking {}", f.path.display()))?;
        bytes += f.size()?;
        let hint = inner.dir.join(f.id.hint_name());
        if hint.exists() {
            fault::hard_link(&hint, &tmp.join(f.id.hint_name()))
                .ctx(|| format!("linking {}", hint.display()))?;
        }
        crash_point("snapshot:linked-one");
    }
    let own = FileId {
        major: next_major,
        minor: 0,
    };
    drop(writer::create_data_file(&tmp, own, last_seq + 1)?);
    crash_point("snapshot:own-file");
    sync_dir(&tmp)?;
    crash_point("snapshot:linked");
    let path = root.join(&name);
    fault::rename(&tmp, &path).ctx(|| format!("renaming {}", tmp.display()))?;
    crash_point("snapshot:renamed");
    sync_dir(&root)?;
    crash_point("snapshot:published");
    prune(&root, inner.opts.snapshots_kept)?;
    crash_point("snapshot:pruned");
    Ok(SnapshotReport {
        started_at,
        duration: clock.elapsed(),
        path,
        keys,
        bytes,
        version: Version(last_seq),
    })
}

/// A millisecond timestamp for a snapshot name, strictly above every one handed out before in
/// this process: two snapshots in the same millisecond get different names, and a name freed by
/// pruning is never handed out again.
fn unique_ms(now: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let mut cur = LAST.load(Ordering::Acquire);
    loop {
        let next = now.max(cur + 1);
        match LAST.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return next,
            Err(seen) => cur = seen,
        }
    }
}

fn remove_leftovers(root: &Path) -> Result<()> {
    for e in fs::read_dir(root).ctx(|| format!("listing {}", root.display()))? {
        let e = e.ctx(|| format!("listing {}", root.display()))?;
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            fs::remove_dir_all(e.path()).ctx(|| format!("removing {}", e.path().display()))?;
        }
    }
    Ok(())
}

fn prune(root: &Path, keep: usize) -> Result<()> {
    let all = list_in(root)?;
    let excess = all.len().saturating_sub(keep.max(1));
    for s in all.into_iter().take(excess) {
        fs::remove_dir_all(&s.path).ctx(|| format!("pruning {}", s.path.display()))?;
    }
    if excess > 0 {
        sync_dir(root)?;
    }
    Ok(())
}

/// Snapshots kept under `dir`, oldest first.
///
/// # Errors
/// I/O errors.
pub fn list(dir: &Path) -> Result<Vec<SnapshotInfo>> {
    list_in(&snapshots_dir(dir))
}

fn list_in(root: &Path) -> Result<Vec<SnapshotInfo>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", root.display()), e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.ctx(|| format!("listing {}", root.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((ms, _)) = name.split_once('-') else {
            continue;
        };
        let Ok(ms) = ms.parse::<u64>() else { continue };
        let mut bytes = 0;
        for f in fs::read_dir(e.path())
            .ctx(|| format!("listing {name}"))?
            .flatten()
        {
            bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
        }
        out.push(SnapshotInfo {
            path: e.path(),
            bytes,
            taken_at: UnixMillis(ms),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
