//! `check [--repair]`: verify a stopped bitcask store byte by byte, and cut what is safe to cut.
//!
//! Bitcask-format specific: it reads the data and hint files itself, walking each data file
//! with the engine's own scanner ([`crate::engine::bitcask::scan::survey`], the walk recovery
//! makes, reporting every damaged region instead of stopping at the first) instead of opening
//! the engine, so it reports every problem, and changes nothing unless `--repair` is given.
//! For the memory engine `check` opens the store, which verifies the checksum of every
//! snapshot and log record on load, and `--repair` is refused.
//!
//! What is checked: each data file's header (magic, format, id); every record's header and
//! CRC32C, batches and their nested records included; after a bad record the scan resyncs at
//! the next valid record, so damage in the middle is reported as a region. Each hint file's
//! trailer and checksum, and that each of its entries points at a record of its data file
//! with the same sequence number, length, kind, expiry and key. Orphan hints, leftovers of an
//! interrupted merge or hint write, and files cut short while being created.
//!
//! What `--repair` does (all of it is what start-up would do, or loses nothing readable):
//! cut a torn tail of the last appended file (bytes after the last valid record with no valid
//! record after them, as a crash leaves them); delete a bad, stale or orphan hint (start-up
//! then scans the data file); delete merge leftovers and header-less files. What it refuses:
//! damage in the middle of a file or at the end of a sealed file (those records were
//! acknowledged, and cutting would hide the loss; restore from a snapshot, or `export` what
//! is still readable), and files with a bad header.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::progress::Progress;
use super::{DirArgs, print};
use crate::cli::exit::{self, Exit};
use crate::engine::EngineKind;
use crate::engine::bitcask::data_file::{DATA_MAGIC, FILE_HEADER_LEN, FileHeader, FileId};
use crate::engine::bitcask::record::{Header, Kind};
use crate::engine::bitcask::{hint, scan};
use crate::engine::dir_lock::DirLock;

/// Flags of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Cut what can be cut safely (a torn tail, bad hints, leftovers); never valid records
    #[arg(long)]
    repair: bool,
}

/// What `--repair` may do about a problem.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Fix {
    /// Truncate the file to `len` bytes.
    Cut {
        /// New length.
        len: u64,
    },
    /// Delete the file.
    Remove,
    /// Nothing safe to do, and why.
    Refuse {
        /// Why it is not cut.
        reason: String,
    },
}

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// File name inside the data directory.
    pub file: String,
    /// Offset of the bad bytes, when it is about bytes.
    pub offset: Option<u64>,
    /// What is wrong.
    pub what: String,
    /// What `--repair` does about it.
    pub fix: Fix,
    /// True once `--repair` did it.
    pub repaired: bool,
}

/// Per data file summary.
#[derive(Debug, Default, Serialize)]
struct FileReport {
    file: String,
    bytes: u64,
    records: u64,
    tombstones: u64,
    hint: &'static str,
}

/// A record's identity, to compare hint entries with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecMeta {
    len: u64,
    seq: u64,
    tombstone: bool,
    expires_at: u64,
    key_crc: u32,
}

impl RecMeta {
    fn of(h: &Header, key: &[u8]) -> Self {
        RecMeta {
            len: h.record_len(),
            seq: h.seq,
            tombstone: h.kind == Kind::Tombstone,
            expires_at: h.expires_at,
            key_crc: crc32c::crc32c(key),
        }
    }
}

/// Runs `check`.
///
/// # Errors
/// [`exit::NOT_FOUND`] (status 1) when problems remain; [`exit::LOCKED`] while a server runs;
/// [`exit::LOCAL`] for I/O errors.
pub fn run(a: &CheckArgs) -> Result<(), Exit> {
    a.dir.must_exist()?;
    if a.dir.kind()? == EngineKind::Memory {
        return check_memory(a);
    }
    let dir = a.dir.data_dir.as_path();
    // Without --repair nothing is written: the lock is shared (and not created).
    let lock = if a.repair {
        DirLock::acquire(dir).map(Some)
    } else {
        DirLock::acquire_shared(dir)
    }
    .map_err(|e| exit::from_engine(e, "checking"))?;
    let (files, mut problems) = inspect(dir)?;
    if a.repair {
        repair(dir, &mut problems)?;
    }
    if let Some(lock) = lock {
        lock.release();
    }
    report(a, &files, &problems)
}

fn check_memory(a: &CheckArgs) -> Result<(), Exit> {
    if a.repair {
        return Err(Exit::new(
            exit::USAGE,
            "--repair works on the bitcask format only; a memory store that fails to open is \
             restored from an older snapshot in its directory",
        ));
    }
    let engine = super::open_read_only(&a.dir)?;
    // Offline, the count is the torn tails met (left in place: the read-only open cuts none).
    let torn = engine
        .stats()
        .map_err(|e| exit::from_engine(e, "reading stats"))?
        .corrupt_records;
    super::close(&engine)?;
    let note = if torn > 0 {
        " (the last log ends in a torn record, as a crash leaves it; the next start cuts it)"
    } else {
        ""
    };
    print(&format!(
        "ok: memory store {} opened; every snapshot and log record passed its checksum{note}\n",
        a.dir.data_dir.display()
    ))
}

/// Reads the whole directory and returns the per-file summaries and every problem.
fn inspect(dir: &Path) -> Result<(Vec<FileReport>, Vec<Problem>), Exit> {
    let io = |e: std::io::Error| Exit::local(format!("listing {}: {e}", dir.display()));
    let mut data = Vec::new();
    let mut hints = Vec::new();
    let mut problems = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".merging") || name.ends_with(".hint.tmp") {
            problems.push(Problem {
                file: name,
                offset: None,
                what: "leftover of an interrupted merge or hint write".into(),
                fix: Fix::Remove,
                repaired: false,
            });
        } else if let Some(id) = FileId::parse(&name, "data") {
            data.push((id, entry.path()));
        } else if let Some(id) = FileId::parse(&name, "hint") {
            hints.push(id);
        }
    }
    data.sort();
    let last_appended = data
        .last()
        .filter(|(id, _)| id.minor == 0)
        .map(|(id, _)| *id);
    let total: u64 = data
        .iter()
        .filter_map(|(_, p)| fs::metadata(p).ok().map(|m| m.len()))
        .sum();
    let mut bar = Progress::new("check", total, "bytes");
    let mut files = Vec::new();
    for (id, path) in &data {
        let is_last = Some(*id) == last_appended;
        let (mut rep, recs, clean) = check_data(*id, path, is_last, &mut problems, &mut bar)?;
        rep.hint = check_hint(dir, *id, is_last, clean.then_some(&recs), &mut problems)?;
        files.push(rep);
    }
    for id in hints {
        if !data.iter().any(|(d, _)| *d == id) {
            problems.push(Problem {
                file: id.hint_name(),
                offset: None,
                what: "hint without its data file".into(),
                fix: Fix::Remove,
                repaired: false,
            });
        }
    }
    bar.finish();
    Ok((files, problems))
}

/// Checks one data file; returns its summary, its records by offset, and whether it is clean.
fn check_data(
    id: FileId,
    path: &Path,
    is_last: bool,
    problems: &mut Vec<Problem>,
    bar: &mut Progress,
) -> Result<(FileReport, HashMap<u64, RecMeta>, bool), Exit> {
    let file = id.data_name();
    let bytes = fs::read(path).map_err(|e| Exit::local(format!("reading {file}: {e}")))?;
    let mut rep = FileReport {
        file: file.clone(),
        bytes: bytes.len() as u64,
        hint: "none",
        ..FileReport::default()
    };
    let mut recs = HashMap::new();
    let before = problems.len();
    let mut add = |offset: Option<u64>, what: String, fix: Fix| {
        problems.push(Problem {
            file: file.clone(),
            offset,
            what,
            fix,
            repaired: false,
        });
    };
    if bytes.len() < FILE_HEADER_LEN {
        add(
            None,
            "shorter than a file header: cut short while being created, holds no record".into(),
            Fix::Remove,
        );
        bar.inc(bytes.len() as u64);
        return Ok((rep, recs, false));
    }
    match FileHeader::decode(&bytes[..FILE_HEADER_LEN], DATA_MAGIC, path) {
        Ok(h) if h.id == id => {}
        Ok(h) => add(
            Some(0),
            format!("header names file {}", h.id),
            refuse("the file header is wrong; rename or restore the file"),
        ),
        Err(e) => add(
            Some(0),
            format!("bad file header: {e}"),
            refuse("the file header is unreadable; restore the file from a snapshot"),
        ),
    }
    let found = scan::survey(&bytes);
    for r in &found.records {
        if r.header.kind == Kind::Tombstone {
            rep.tombstones += 1;
        }
        rep.records += 1;
        recs.insert(r.at as u64, RecMeta::of(&r.header, r.key));
    }
    for d in found.damage {
        let (off, n, reason) = (d.offset, d.len, d.reason);
        let (what, fix) = if !d.at_end {
            (
                format!("{reason}; {n} bad bytes before the next valid record"),
                refuse(
                    "valid records follow: the bad bytes were acknowledged data; \
                     restore from a snapshot or export what is readable",
                ),
            )
        } else if is_last && d.zeros {
            (
                format!("{n} zero bytes after the last record (unused space)"),
                Fix::Cut { len: off },
            )
        } else if is_last {
            (
                format!("torn tail: {n} bytes after the last valid record ({reason})"),
                Fix::Cut { len: off },
            )
        } else {
            (
                format!("{n} bad bytes at the end of a sealed file ({reason})"),
                refuse(
                    "a crash never tears a sealed file: these records were \
                     acknowledged; restore from a snapshot",
                ),
            )
        };
        add(Some(off), what, fix);
    }
    bar.inc(bytes.len() as u64);
    let clean = problems.len() == before;
    Ok((rep, recs, clean))
}

fn refuse(reason: &str) -> Fix {
    Fix::Refuse {
        reason: reason.into(),
    }
}

/// Checks the hint of data file `id`, against `recs` when the data file is clean.
fn check_hint(
    dir: &Path,
    id: FileId,
    is_last: bool,
    recs: Option<&HashMap<u64, RecMeta>>,
    problems: &mut Vec<Problem>,
) -> Result<&'static str, Exit> {
    let path = dir.join(id.hint_name());
    if !path.exists() {
        return Ok("none");
    }
    let mut add = |what: String| {
        problems.push(Problem {
            file: id.hint_name(),
            offset: None,
            what,
            fix: Fix::Remove,
            repaired: false,
        });
    };
    if is_last {
        add("hint of the file still appended to: stale (start-up ignores it)".into());
        return Ok("stale");
    }
    let mut mismatch: Option<String> = None;
    let loaded = hint::load(&path, |e| {
        if mismatch.is_none()
            && let Some(recs) = recs
        {
            let want = RecMeta {
                len: u64::from(e.len),
                seq: e.seq,
                tombstone: e.kind == Kind::Tombstone,
                expires_at: e.expires_at,
                key_crc: crc32c::crc32c(e.key),
            };
            if recs.get(&u64::from(e.offset)) != Some(&want) {
                mismatch = Some(format!(
                    "hint entry for offset {} (seq {}) does not match the data file",
                    e.offset, e.seq
                ));
            }
        }
        Ok(())
    })
    .map_err(|e| Exit::local(format!("reading {}: {e}", path.display())))?;
    match (loaded, mismatch) {
        (None, _) => {
            add("hint fails its trailer or checksum (start-up ignores it)".into());
            Ok("bad")
        }
        (Some(h), _) if h.id != id => {
            add(format!("hint header names file {}", h.id));
            Ok("bad")
        }
        (Some(_), Some(m)) => {
            add(m);
            Ok("bad")
        }
        (Some(_), None) => Ok("ok"),
    }
}

/// Applies the safe fixes, then fsyncs the directory.
fn repair(dir: &Path, problems: &mut [Problem]) -> Result<(), Exit> {
    let mut touched = false;
    for p in problems.iter_mut() {
        let path: PathBuf = dir.join(&p.file);
        let err = |e: std::io::Error| Exit::local(format!("repairing {}: {e}", p.file));
        match &p.fix {
            Fix::Cut { len } => {
                let f = OpenOptions::new().write(true).open(&path).map_err(err)?;
                f.set_len(*len).and_then(|()| f.sync_all()).map_err(err)?;
            }
            Fix::Remove => match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            },
            Fix::Refuse { .. } => continue,
        }
        p.repaired = true;
        touched = true;
    }
    if touched {
        crate::engine::bitcask::data_file::sync_dir(dir)
            .map_err(|e| Exit::local(format!("fsync {}: {e}", dir.display())))?;
    }
    Ok(())
}

fn report(a: &CheckArgs, files: &[FileReport], problems: &[Problem]) -> Result<(), Exit> {
    let left = problems.iter().filter(|p| !p.repaired).count();
    if a.dir.json {
        let doc = serde_json::json!({
            "data_dir": a.dir.data_dir.display().to_string(),
            "files": files,
            "problems": problems,
            "clean": left == 0,
        });
        print(&format!("{doc:#}\n"))?;
    } else {
        let mut s = String::new();
        for f in files {
            s.push_str(&format!(
                "{}: {} bytes, {} records ({} tombstones), hint {}\n",
                f.file, f.bytes, f.records, f.tombstones, f.hint
            ));
        }
        for p in problems {
            let at = p
                .offset
                .map(|o| format!(" at offset {o}"))
                .unwrap_or_default();
            let fix = match (&p.fix, p.repaired) {
                (Fix::Cut { len }, true) => format!("repaired: cut to {len} bytes"),
                (Fix::Remove, true) => "repaired: removed".into(),
                (Fix::Cut { len }, false) => format!("--repair cuts it to {len} bytes"),
                (Fix::Remove, false) => "--repair removes it".into(),
                (Fix::Refuse { reason }, _) => format!("not repairable: {reason}"),
            };
            s.push_str(&format!("PROBLEM {}{at}: {} [{fix}]\n", p.file, p.what));
        }
        s.push_str(&match (problems.len(), left) {
            (0, _) => format!("ok: {} data files, no problems\n", files.len()),
            (n, 0) => format!("repaired: all {n} problems\n"),
            (n, l) => format!("{n} problems, {l} not repaired\n"),
        });
        print(&s)?;
    }
    if left == 0 {
        Ok(())
    } else {
        Err(Exit::new(exit::NOT_FOUND, ""))
    }
}
