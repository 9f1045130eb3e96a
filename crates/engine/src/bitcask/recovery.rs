//! Start-up: find the data files, rebuild the keydir from hints or scans, cut a torn tail.
//!
//! Files are replayed in [`FileId`] order; within a file, in offset order. A put sets the key's
//! location, a tombstone or an expired put removes it. A file's hint is used when a valid one
//! exists; otherwise the data file is scanned (and only the last appended file may have a torn
//! tail, which is truncated with a warning). Leftovers of an interrupted merge (`*.merging`)
//! and of an interrupted hint write (`*.hint.tmp`) are removed first. The newest appended file
//! shorter than its header (a crash while creating it) carries nothing and is removed; any
//! other file that short (sealed, or with a hint) is damage and refused. The last appended file
//! becomes the active file again.
//!
//! A read-only recovery ([`recover_read_only`], for offline inspection) changes nothing: it
//! skips leftovers and header-less files instead of removing them, scans the last file
//! instead of removing its (stale) hint, and reads a torn tail's valid prefix without cutting
//! the rest.
//!
//! A salvage recovery ([`recover_salvage`], for `export --skip-corrupt`) is a read-only one
//! that also reads past damage: each data file without a good hint is walked with
//! [`scan::survey`], which resyncs at the next valid record after bad bytes, and the damaged
//! regions are counted instead of stopping start-up. (A value overwritten or deleted by a record
//! inside a damaged region comes back in its older version: salvage is for getting data out,
//! never for serving.)

use hashbrown::HashMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::data_file::{
    DATA_MAGIC, DataFile, FILE_HEADER_LEN, FileHeader, FileId, ReadMode, Role, sync_dir,
};
use super::hint;
use super::keydir::{Keydir, Loc};
use super::record::Kind;
use super::scan;
use crate::error::{Error, IoContext, Result};
use crate::{UnixMillis, fault};

/// What start-up found.
#[derive(Debug)]
pub struct Recovered {
    /// Data files in id order with their runtime numbers (1, 2, ...).
    pub files: Vec<(u32, Arc<DataFile>)>,
    /// True when the last of `files` was appended to and is opened for writing again.
    pub last_is_active: bool,
    /// The rebuilt keydir.
    pub keydir: Keydir,
    /// Live bytes per runtime file number.
    pub live: HashMap<u32, u64>,
    /// Next sequence number to issue.
    pub next_seq: u64,
    /// Highest major file number seen.
    pub max_major: u32,
    /// Bytes cut from a torn tail.
    pub torn_bytes: u64,
    /// Torn tails cut (not counting unused zero-filled preallocation).
    pub torn_tails: u64,
    /// Damaged regions read past by a salvage recovery (never by the others, which stop).
    pub damaged_regions: u64,
    /// Length of the valid prefix of the last appended file (what a read-write recovery
    /// truncates it to), 0 when there is none.
    pub last_valid_len: u64,
}

/// Lists the data files of `dir`, sorted by id, removing merge and hint leftovers.
///
/// # Errors
/// I/O errors.
pub fn list_data_files(dir: &Path) -> Result<Vec<(FileId, PathBuf)>> {
    list(dir, false)
}

fn list(dir: &Path, read_only: bool) -> Result<Vec<(FileId, PathBuf)>> {
    let mut out = Vec::new();
    let mut removed = false;
    for entry in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".merging") || name.ends_with(".hint.tmp") {
            if read_only {
                continue;
            }
            tracing::info!(
                file = name,
                "removing leftover of an interrupted merge or hint write"
            );
            fs::remove_file(entry.path()).ctx(|| format!("removing {name}"))?;
            removed = true;
        } else if let Some(id) = FileId::parse(name, "data") {
            out.push((id, entry.path()));
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    out.sort();
    Ok(out)
}

/// Rebuilds the engine's state from `dir`. The last file, which the writer appends to
/// again, is mapped `active_capacity` bytes ahead in mmap mode (see [`Role::Active`]).
///
/// # Errors
/// [`Error::Corrupted`] for damage that is not a torn tail, [`Error::UnsupportedFormat`],
/// I/O errors.
pub fn recover(dir: &Path, read_mode: ReadMode, active_capacity: u64) -> Result<Recovered> {
    recover_with(dir, (read_mode, active_capacity), false, false)
}

/// As [`recover`], changing no file (see the module docs); the last file is opened
/// read-only.
///
/// # Errors
/// As [`recover`].
pub fn recover_read_only(
    dir: &Path,
    read_mode: ReadMode,
    active_capacity: u64,
) -> Result<Recovered> {
    recover_with(dir, (read_mode, active_capacity), true, false)
}

/// As [`recover_read_only`], reading past damaged regions (see the module docs).
///
/// # Errors
/// A bad file header, I/O errors.
pub fn recover_salvage(dir: &Path, read_mode: ReadMode, active_capacity: u64) -> Result<Recovered> {
    recover_with(dir, (read_mode, active_capacity), true, true)
}

fn recover_with(
    dir: &Path,
    (read_mode, active_capacity): (ReadMode, u64),
    read_only: bool,
    salvage: bool,
) -> Result<Recovered> {
    let started = Instant::now();
    let listed = list(dir, read_only)?;
    let total_bytes: u64 = listed
        .iter()
        .filter_map(|(_, p)| fs::metadata(p).ok().map(|m| m.len()))
        .sum();
    // Only the last file, if it was appended to (not a merge output), can have a torn tail;
    // it becomes the active file again.
    let last_appended = listed
        .last()
        .filter(|(id, _)| id.minor == 0)
        .map(|(id, _)| *id);
    // The ordered index is built once all keys are in (sorted runs merged), not per key.
    let keydir = Keydir::deferring_order();
    // Size the keydir once: hints say how many entries they hold; for data files without a
    // hint, guess one key per 128 bytes. Growing a large table rehashes every key.
    let expected: u64 = listed
        .iter()
        .map(|(id, p)| {
            hint::claimed_entries(&dir.join(id.hint_name()))
                .unwrap_or_else(|| fs::metadata(p).map(|m| m.len() / 128).unwrap_or(0))
        })
        .sum();
    keydir.reserve(usize::try_from(expected).unwrap_or(0));
    let mut live: HashMap<u32, u64> = HashMap::new();
    let mut files = Vec::new();
    let (mut max_seq, mut base_seq, mut max_major, mut torn_total) = (0u64, 0u64, 0u32, 0u64);
    let (mut done_bytes, mut last_log) = (0u64, Instant::now());
    let mut torn_tails = 0u64;
    let mut last_valid_len = 0u64;
    let mut damaged_regions = 0u64;
    let now = UnixMillis::now().0;
    for (id, path) in listed {
        max_major = max_major.max(id.major);
        let size = fs::metadata(&path)
            .ctx(|| format!("stat {}", path.display()))?
            .len();
        if size < FILE_HEADER_LEN as u64 {
            // Only the newest appended file can be cut short by a crash while it was created.
            // A sealed file (one with a hint, or any file before the last) was complete once:
            // its records are lost, which must be said, never taken for a leftover.
            let sealed = Some(id) != last_appended || dir.join(id.hint_name()).exists();
            if sealed {
                return Err(Error::corrupted(
                    &path,
                    0,
                    "a sealed data file is shorter than its header (its records are lost): \
                     restore it from a snapshot or backup (docs/operations.md)",
                ));
            }
            if read_only {
                continue;
            }
            tracing::info!(file = %path.display(), "removing a data file cut short while being created");
            fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
            hint::remove_for(dir, &id.hint_name());
            continue;
        }
        let no = u32::try_from(files.len() + 1)
            .map_err(|_| Error::corrupted(&path, 0, "too many files"))?;
        let mut apply = |kind: Kind, key: &[u8], offset: u64, len: u64, expires_at: u64| {
            let loc = Loc {
                file: no,
                offset: offset as u32,
                len: len as u32,
                expiry_s: Loc::expiry_secs(expires_at),
            };
            let old = if kind == Kind::Put && !loc.expired_at(now) {
                *live.entry(no).or_default() += len;
                keydir.insert(key, loc)
            } else {
                keydir.remove(key)
            };
            if let Some(old) = old
                && let Some(l) = live.get_mut(&old.file)
            {
                *l = l.saturating_sub(u64::from(old.len));
            }
        };
        let is_last = Some(id) == last_appended;
        let hint_path = dir.join(id.hint_name());
        if is_last && !read_only {
            // It will be appended to again: a hint of it would go stale.
            hint::remove_for(dir, &id.hint_name());
        }
        let mut hint_deltas = None;
        let from_hint = if is_last && read_only {
            None
        } else {
            match hint::read(&hint_path)? {
                Some(h) => {
                    let (seq, deltas) = apply_hint_parallel(&h, no, &keydir, now)?;
                    max_seq = max_seq.max(seq);
                    hint_deltas = Some(deltas);
                    Some(h.header)
                }
                None => None,
            }
        };
        let header = match from_hint {
            Some(h) => h,
            None if salvage => {
                let bytes = fault::read(&path).ctx(|| format!("reading {}", path.display()))?;
                let head = bytes
                    .get(..FILE_HEADER_LEN)
                    .ok_or_else(|| Error::corrupted(&path, 0, "shorter than a file header"))?;
                let header = FileHeader::decode(head, DATA_MAGIC, &path)?;
                let found = scan::survey(&bytes);
                for r in &found.records {
                    max_seq = max_seq.max(r.header.seq);
                    apply(
                        r.header.kind,
                        r.key,
                        r.at as u64,
                        r.header.record_len(),
                        r.header.expires_at,
                    );
                }
                if is_last {
                    last_valid_len = bytes.len() as u64;
                }
                for d in &found.damage {
                    if d.at_end && is_last {
                        // A torn tail, as a crash leaves it: not damage.
                        last_valid_len = d.offset;
                    } else {
                        damaged_regions += 1;
                        tracing::warn!(
                            file = %path.display(), offset = d.offset, bytes = d.len,
                            reason = %d.reason, "salvage: reading past a damaged region"
                        );
                    }
                }
                header
            }
            None => {
                let end = scan::scan(&path, is_last, |item| {
                    apply(
                        item.header.kind,
                        item.key,
                        item.offset,
                        item.header.record_len(),
                        item.header.expires_at,
                    );
                    Ok(())
                })?;
                max_seq = max_seq.max(end.max_seq);
                if is_last {
                    last_valid_len = end.valid_len;
                }
                if read_only {
                    // Left as it is; only the valid prefix was read.
                } else if let Some((at, reason)) = end.torn_reason {
                    if end.zero_tail {
                        tracing::info!(
                            file = %path.display(), offset = at, bytes = end.torn_bytes,
                            "cutting unused preallocation"
                        );
                    } else {
                        torn_tails += 1;
                        tracing::warn!(
                            file = %path.display(), offset = at, bytes = end.torn_bytes, reason,
                            "cutting a torn tail left by a crash; every record before it is kept"
                        );
                    }
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .ctx(|| format!("opening {}", path.display()))?;
                    fault::set_len(&f, end.valid_len, &path)
                        .and_then(|()| fault::sync_all(&f, &path))
                        .ctx(|| format!("truncating {}", path.display()))?;
                    torn_total += end.torn_bytes;
                }
                end.header
            }
        };
        for (f, d) in hint_deltas.into_iter().flatten() {
            let l = live.entry(f).or_default();
            *l = u64::try_from(i128::from(*l) + i128::from(d)).unwrap_or(0);
        }
        if header.id != id {
            return Err(Error::corrupted(
                &path,
                0,
                format!("header names file {}", header.id),
            ));
        }
        base_seq = base_seq.max(header.base_seq);
        let file = OpenOptions::new()
            .read(true)
            .write(is_last && !read_only)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        let role = if is_last {
            Role::Active {
                capacity: active_capacity,
            }
        } else {
            Role::Sealed
        };
        files.push((
            no,
            Arc::new(DataFile::new(id, path, file, read_mode, role)?),
        ));
        done_bytes += size;
        if last_log.elapsed().as_secs() >= 2 {
            tracing::info!(
                done_mb = done_bytes >> 20,
                total_mb = total_bytes >> 20,
                keys = keydir.len(),
                "recovering"
            );
            last_log = Instant::now();
        }
    }
    keydir.build_order();
    tracing::info!(
        files = files.len(),
        keys = keydir.len(),
        mb = total_bytes >> 20,
        ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    Ok(Recovered {
        last_is_active: last_appended.is_some()
            && files.last().map(|(_, f)| Some(f.id)) == Some(last_appended),
        files,
        keydir,
        live,
        next_seq: (max_seq + 1).max(base_seq).max(1),
        max_major,
        torn_bytes: torn_total,
        torn_tails,
        damaged_regions,
        last_valid_len,
    })
}

/// Applies a verified hint of runtime file `no` to the keydir on every core: thread `t` of `T`
/// walks the whole hint but applies only the keys of the shards `t`, `t + T`, ..., so the
/// threads never contend for a shard and each key still sees its records in file order.
/// Returns the highest sequence number seen and the change in live bytes per file.
fn apply_hint_parallel(
    h: &hint::Loaded,
    no: u32,
    keydir: &Keydir,
    now: u64,
) -> Result<(u64, HashMap<u32, i64>)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, keydir.shard_count());
    let part = |t: usize| -> Result<(u64, HashMap<u32, i64>)> {
        let mut deltas: HashMap<u32, i64> = HashMap::new();
        let mut max_seq = 0u64;
        h.for_each(|e| {
            if threads > 1 && keydir.shard_index(e.key) % threads != t {
                return Ok(());
            }
            max_seq = max_seq.max(e.seq);
            let loc = Loc {
                file: no,
                offset: e.offset,
                len: e.len,
                expiry_s: Loc::expiry_secs(e.expires_at),
            };
            let old = if e.kind == Kind::Put && !loc.expired_at(now) {
                *deltas.entry(no).or_default() += i64::from(e.len);
                keydir.insert(e.key, loc)
            } else {
                keydir.remove(e.key)
            };
            if let Some(old) = old {
                *deltas.entry(old.file).or_default() -= i64::from(old.len);
            }
            Ok(())
        })?;
        Ok((max_seq, deltas))
    };
    if threads == 1 {
        return part(0);
    }
    let results: Vec<Result<(u64, HashMap<u32, i64>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|t| s.spawn(move || part(t))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::io(
                        "loading a hint file",
                        std::io::Error::other("a loader thread panicked"),
                    ))
                })
            })
            .collect()
    });
    let (mut max_seq, mut total) = (0u64, HashMap::new());
    for r in results {
        let (seq, deltas) = r?;
        max_seq = max_seq.max(seq);
        for (f, d) in deltas {
            *total.entry(f).or_default() += d;
        }
    }
    Ok((max_seq, total))
}
