//! Start-up: from the files in the data directory back to a table.
//!
//! Owns the recovery order: remove temp files, read the manifest, load the base snapshot it
//! names, replay the logs from `first_log` on (skipping records already in the base), cut a
//! torn tail of the last log, and delete logs a finished rewrite left behind. Opening the
//! writer and starting threads is the engine's job.
//!
//! A read-only recovery ([`recover_read_only`], for offline inspection) changes nothing: temp
//! files and logs a rewrite left behind are skipped instead of removed, a missing manifest of
//! an empty directory is assumed instead of written, and a torn tail is read up to its valid
//! prefix and left in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::aof::{LogOp, parse_log_name, read_log_with};
use super::codec::sync_dir;
use super::manifest::{MANIFEST, Manifest};
use super::snapshot::{parse_snap_name, read_snapshot, snap_name};
use super::table::Table;
use crate::UnixMillis;
use crate::error::{Error, IoContext, Result};

/// The state recovered from disk.
pub(crate) struct Recovered {
    pub(crate) table: Table,
    pub(crate) manifest: Manifest,
    /// Highest version found in the base and the logs.
    pub(crate) last_version: u64,
    /// Highest log sequence number in use (a new log gets the next one).
    pub(crate) log_seq: u64,
    /// Sequence number for the next snapshot.
    pub(crate) next_snap: u64,
    /// Keys in the base snapshot.
    pub(crate) base_keys: u64,
    /// Bytes of the base snapshot.
    pub(crate) base_bytes: u64,
    /// Log records replayed.
    pub(crate) log_records: u64,
    /// Bytes of the logs replayed.
    pub(crate) log_bytes: u64,
    /// Torn tails cut.
    pub(crate) torn_tails: u64,
}

/// The engine's files in `dir`: logs and snapshots by sequence number.
pub(crate) struct Listing {
    pub(crate) logs: BTreeMap<u64, PathBuf>,
    pub(crate) snaps: BTreeMap<u64, PathBuf>,
    pub(crate) temps: Vec<PathBuf>,
}

pub(crate) fn list_files(dir: &Path) -> Result<Listing> {
    let mut l = Listing {
        logs: BTreeMap::new(),
        snaps: BTreeMap::new(),
        temps: Vec::new(),
    };
    let rd = std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))?;
    for entry in rd {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_log_name(name) {
            l.logs.insert(seq, entry.path());
        } else if let Some(seq) = parse_snap_name(name) {
            l.snaps.insert(seq, entry.path());
        } else if name.ends_with(".tmp") {
            l.temps.push(entry.path());
        }
    }
    Ok(l)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Recovers the data set in `dir` into a table of `shards` shards.
pub(crate) fn recover(dir: &Path, shards: usize) -> Result<Recovered> {
    recover_with(dir, shards, false)
}

/// As [`recover`], changing no file (see the module docs).
pub(crate) fn recover_read_only(dir: &Path, shards: usize) -> Result<Recovered> {
    recover_with(dir, shards, true)
}

fn recover_with(dir: &Path, shards: usize, read_only: bool) -> Result<Recovered> {
    let files = list_files(dir)?;
    for t in files.temps.iter().filter(|_| !read_only) {
        std::fs::remove_file(t).ctx(|| format!("removing leftover {}", t.display()))?;
    }
    let manifest = match Manifest::load(dir)? {
        Some(m) => m,
        None if files.logs.is_empty() && files.snaps.is_empty() => {
            let m = Manifest {
                base: 0,
                first_log: 1,
            };
            if !read_only {
                m.store(dir)?;
            }
            m
        }
        None => {
            return Err(Error::corrupted(
                dir.join(MANIFEST),
                0,
                "MANIFEST is missing but snapshot or log files exist",
            ));
        }
    };
    let now = UnixMillis::now().0;
    let table = Table::new(shards);
    let mut rec = Recovered {
        table,
        manifest,
        last_version: 0,
        log_seq: manifest.first_log.saturating_sub(1),
        next_snap: files.snaps.keys().next_back().map_or(1, |s| s + 1),
        base_keys: 0,
        base_bytes: 0,
        log_records: 0,
        log_bytes: 0,
        torn_tails: 0,
    };
    if manifest.base != 0 {
        let path = dir.join(snap_name(manifest.base));
        if !files.snaps.contains_key(&manifest.base) {
            return Err(Error::corrupted(
                dir.join(MANIFEST),
                0,
                format!("base snapshot {} is missing", path.display()),
            ));
        }
        let t = &rec.table;
        let (header, keys) = read_snapshot(&path, |e| {
            if !matches!(e.expires_at, Some(x) if x <= now) {
                put(t, e.key, e.value, e.version, e.expires_at);
            }
        })?;
        rec.last_version = header.max_version;
        rec.base_keys = keys;
        rec.base_bytes = file_len(&path);
        tracing::info!(path = %path.display(), keys, "loaded base snapshot");
    }
    let base_version = rec.last_version;
    let mut removed = false;
    // The log a crash can tear is the last one holding records: logs after it hold only their
    // header (a checkpoint creates the next log before its cut, and open creates one too).
    let last_seq = files
        .logs
        .iter()
        .rev()
        .find(|(_, p)| file_len(p) > super::aof::LOG_HEADER_LEN as u64)
        .or_else(|| files.logs.iter().next_back())
        .map(|(s, _)| *s);
    for (&seq, path) in &files.logs {
        if seq < manifest.first_log && read_only {
            continue;
        }
        if seq < manifest.first_log {
            // Left behind by a rewrite that finished: its records are in the base.
            std::fs::remove_file(path).ctx(|| format!("removing {}", path.display()))?;
            removed = true;
            continue;
        }
        rec.log_seq = rec.log_seq.max(seq);
        let t = &rec.table;
        let is_last = last_seq.is_some_and(|l| seq >= l);
        let scan = read_log_with(path, seq, is_last, !read_only, |op| {
            if op.version() > base_version {
                apply(t, op, now);
            }
        })?;
        if let Some((offset, reason)) = &scan.torn_at {
            if read_only {
                tracing::info!(path = %path.display(), offset, reason = %reason,
                    "torn tail of the last log left in place (read-only); the next start cuts it");
            } else {
                tracing::warn!(path = %path.display(), offset, reason = %reason,
                    "cut a torn tail off the last log (records after it were never acknowledged)");
            }
            rec.torn_tails += 1;
        }
        rec.last_version = rec.last_version.max(scan.max_version);
        rec.log_records += scan.records;
        rec.log_bytes += file_len(path);
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(rec)
}

fn put(t: &Table, key: &[u8], value: &[u8], version: u64, expires: Option<u64>) {
    let h = t.hash(key);
    let mut g = t.shards()[t.shard_of(h)].write();
    Arc::make_mut(&mut g).put(t.hasher(), h, key, value, version, expires);
}

fn remove(t: &Table, key: &[u8]) {
    let h = t.hash(key);
    let mut g = t.shards()[t.shard_of(h)].write();
    Arc::make_mut(&mut g).remove(t.hasher(), h, key);
}

/// Applies one logged op to the table. A put that has expired by now is a removal: it
/// replaced whatever the key held before.
pub(crate) fn apply(t: &Table, op: &LogOp<'_>, now: u64) {
    match *op {
        LogOp::Put {
            version,
            expires_at,
            key,
            value,
            ..
        } => {
            if matches!(expires_at, Some(x) if x <= now) {
                remove(t, key);
            } else {
                put(t, key, value, version, expires_at);
            }
        }
        LogOp::Delete { key, .. } => remove(t, key),
    }
}
