//! Merge (compaction): rewrite the live records of every sealed file into new files, with hints.
//!
//! Steps, and why each is crash-safe:
//!
//! 1. Under the writer mutex, seal the active file (if it holds records). Every sealed file
//!    is an input; the inputs hold every record with a sequence number below the new active
//!    file's `base_seq`. The writer mutex is held for this file switch only.
//! 2. Scan the inputs in id order. A put record is live if the keydir still points at it and
//!    it has not expired (the records the keydir points at are gathered by one walk of the
//!    keydir before the scan, not by a lookup per record; the inputs take no writes, so that
//!    set can only shrink, and a record that dies after the walk is copied for nothing and
//!    never switched to, by step 3's check); live records are copied verbatim (same sequence number, same CRC)
//!    into `MMMMMMMMMM-NNNNN.data.merging`, where the major number is one below the active
//!    file's and the minors are new. Tombstones are dropped: every older record of their key
//!    is in an input too, so nothing can resurrect.
//! 3. When an output is full (or the inputs end): fsync it, rename it to `.data`, write its
//!    hint (temp + fsync + rename), fsync the directory, add it to the file table, then switch
//!    each copied key to its new location *only if the keydir still points at the old one*, so
//!    a write made during the merge is never undone (the keys bucketed by shard, each bucket
//!    switched under its shard's lock a few dozen keys at a time).
//! 4. Retire the inputs, oldest first: drop them from the file table, unlink data and hint,
//!    fsync the directory.
//!
//! A crash before 3 leaves only `.merging` files, removed at start-up. A crash after some
//! outputs were renamed leaves copies of records that are also in the inputs, with the same
//! sequence numbers; outputs sort after their inputs and before every newer file, so replay
//! gives the same answers. A crash during 4 leaves a suffix of the inputs: deleting oldest
//! first means an older value never outlives the tombstone that hid it.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::data_file::{DATA_MAGIC, DataFile, FILE_HEADER_LEN, FileHeader, FileId, Role, sync_dir};
use super::hint::{HintEntry, HintWriter};
use super::keydir::{Loc, Slot, Switch};
use super::record::Kind;
use super::{Inner, scan};
use crate::error::{Error, IoContext, Result};
use crate::jobs::Claim;
use crate::{JobState, MergeReport, Progress, UnixMillis, crash_point, fault};

/// When merges start by themselves (Riak-style triggers).
#[derive(Clone, Debug, PartialEq)]
pub struct MergePolicy {
    /// Merge when dead bytes are at least this share of the sealed files (0.0–1.0) ...
    pub min_fragmentation: f64,
    /// ... and at least this many bytes are dead; or whenever this many dead bytes pile up
    /// at twice the amount.
    pub min_dead_bytes: u64,
    /// How often the policy is checked; `None` = only manual merges.
    pub check_interval: Option<Duration>,
    /// Only start automatic merges between these UTC hours (`start..end`, may wrap midnight).
    pub window: Option<(u8, u8)>,
}

impl Default for MergePolicy {
    fn default() -> Self {
        MergePolicy {
            min_fragmentation: 0.5,
            min_dead_bytes: 64 << 20,
            check_interval: Some(Duration::from_secs(60)),
            window: None,
        }
    }
}

impl MergePolicy {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_fragmentation) {
            return Err(Error::InvalidConfig {
                name: "merge.min_fragmentation".into(),
                reason: "must be between 0.0 and 1.0".into(),
            });
        }
        if let Some((a, b)) = self.window
            && (a > 23 || b > 24)
        {
            return Err(Error::InvalidConfig {
                name: "merge.window".into(),
                reason: "hours must be 0-23 (start) and 0-24 (end)".into(),
            });
        }
        if self.check_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidConfig {
                name: "merge.check_interval".into(),
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }

    /// True when the policy says to merge, given the sealed files' dead and total bytes and
    /// the current UTC hour.
    pub fn should_merge(&self, dead: u64, total: u64, utc_hour: u8) -> bool {
        if let Some((a, b)) = self.window {
            let inside = if a <= b {
                (a..b).contains(&utc_hour)
            } else {
                utc_hour >= a || utc_hour < b
            };
            if !inside {
                return false;
            }
        }
        if total == 0 || dead == 0 {
            return false;
        }
        let frag = dead as f64 / total as f64;
        (frag >= self.min_fragmentation && dead >= self.min_dead_bytes)
            || dead >= self.min_dead_bytes.saturating_mul(2)
    }
}

/// Checks the policy and merges if it says so (the background thread calls this).
pub fn maybe_merge(inner: &Arc<Inner>) {
    let active = inner.active_no.load(Ordering::Acquire);
    let (mut dead, mut total) = (0u64, 0u64);
    {
        let files = inner.files.read();
        let live = inner.live.lock();
        for (no, f) in files.iter().filter(|(no, _)| **no != active) {
            let size = f.size().unwrap_or(0);
            total += size;
            dead += size.saturating_sub(live.get(no).copied().unwrap_or(0));
        }
    }
    let hour = ((UnixMillis::now().0 / 3_600_000) % 24) as u8;
    if inner.opts.merge.should_merge(dead, total, hour) {
        tracing::info!(
            dead_bytes = dead,
            total_bytes = total,
            "merge policy triggered"
        );
        match run(inner) {
            Ok(r) => tracing::info!(reclaimed = r.bytes_reclaimed, "automatic merge done"),
            Err(Error::Busy(_)) => {}
            Err(e) => tracing::error!(error = %e, "automatic merge failed"),
        }
    }
}

/// Runs a merge now, on the calling thread. Only one at a time.
///
/// # Errors
/// [`Error::Busy`] when one is running; I/O and corruption errors of the inputs.
pub fn run(inner: &Inner) -> Result<MergeReport> {
    let claim = claim(inner)?;
    run_claimed(inner, claim)
}

/// Claims the merge and marks it running (before any work, so a status read sees it).
///
/// # Errors
/// [`Error::Busy`] when one is running.
pub(crate) fn claim(inner: &Inner) -> Result<Claim> {
    let claim = Claim::try_take(&inner.merge_running, "merge")?;
    inner.jobs.lock().merge = JobState::started(claim.started_at);
    Ok(claim)
}

/// Runs the merge `claim` was taken for and records how it ended.
///
/// # Errors
/// I/O and corruption errors of the inputs.
pub(crate) fn run_claimed(inner: &Inner, claim: Claim) -> Result<MergeReport> {
    let started_at = claim.started_at;
    let result = merge(inner, started_at);
    if result.is_err() {
        remove_merging(&inner.dir);
    }
    let mut jobs = inner.jobs.lock();
    if jobs.merge.finish(started_at, &result) {
        jobs.merges_completed += 1;
    }
    drop(jobs);
    drop(claim);
    result
}

/// Removes the `.merging` outputs of a failed merge (they are never read; start-up would
/// remove them too), so that a merge failing on a full disk gives its space back.
fn remove_merging(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with(".merging") {
            let _ = fs::remove_file(e.path());
        }
    }
}

struct Output {
    id: FileId,
    tmp: PathBuf,
    out: BufWriter<fault::Writer>,
    len: u64,
    hint: HintWriter,
    /// Each copied record: where its key is in `keys`, its old location, its new offset,
    /// where its keydir entry was.
    moves: Vec<(usize, Loc, u32, Slot)>,
    /// The copied records' keys end to end (one allocation, not one per key).
    keys: Vec<u8>,
}

fn merge(inner: &Inner, started_at: UnixMillis) -> Result<MergeReport> {
    let clock = Instant::now();
    let (active_id, seal_seq) = {
        let mut w = inner.writer.lock();
        inner.check_poisoned()?;
        if w.len() > FILE_HEADER_LEN as u64 {
            w.rotate(inner)?;
        }
        (w.active().id, w.next_seq())
    };
    crash_point("merge:sealed");
    let mut inputs: Vec<(u32, Arc<DataFile>)> = inner
        .files
        .read()
        .iter()
        .filter(|(_, f)| f.id < active_id)
        .map(|(no, f)| (*no, f.clone()))
        .collect();
    inputs.sort_by_key(|(_, f)| f.id);
    let total: u64 = inputs.iter().map(|(_, f)| f.size().unwrap_or(0)).sum();
    let out_major = active_id.major - 1;
    let mut next_minor = inputs
        .iter()
        .filter(|(_, f)| f.id.major == out_major)
        .map(|(_, f)| f.id.minor)
        .max()
        .unwrap_or(0)
        + 1;
    let mut report = MergeReport {
        started_at,
        duration: Duration::ZERO,
        files_merged: inputs.len() as u64,
        bytes_read: total,
        bytes_written: 0,
        bytes_reclaimed: 0,
        records_kept: 0,
        records_dropped: 0,
    };
    let mut output: Option<Output> = None;
    let mut done = 0u64;
    let mut pointed = pointed_offsets(inner, &inputs);
    for (no, input) in &inputs {
        let now = UnixMillis::now().0;
        let mut offsets = PointedCursor::new(pointed.remove(no).unwrap_or_default());
        scan::scan(&input.path, false, |item| {
            done += item.raw.len() as u64;
            let loc = Loc {
                file: *no,
                offset: item.offset as u32,
                len: item.raw.len() as u32,
                expiry_s: super::keydir::Loc::expiry_secs(item.header.expires_at),
            };
            let slot = offsets
                .pointed(loc.offset)
                .filter(|_| item.header.kind == Kind::Put && !loc.expired_at(now));
            let Some(slot) = slot else {
                report.records_dropped += 1;
                if item.header.kind == Kind::Put && loc.expired_at(now) {
                    // Swept: watchers hear of it (a tombstone, if the store takes writes).
                    inner.expire_found(item.key, loc);
                    // Collect the expired entry if it is still the current one.
                    let (old, changed) = inner
                        .keydir
                        .update(item.key, |cur| cur.filter(|c| *c != loc));
                    if changed {
                        inner.account(old, None);
                    }
                }
                return Ok(());
            };
            if let Some(o) = &output
                && o.len + item.raw.len() as u64 > inner.opts.max_file_size
                && o.len > FILE_HEADER_LEN as u64
                && let Some(full) = output.take()
            {
                report.bytes_written += finish(inner, full)?;
            }
            let o = match &mut output {
                Some(o) => o,
                None => {
                    let id = FileId {
                        major: out_major,
                        minor: next_minor,
                    };
                    next_minor += 1;
                    output.insert(start_output(&inner.dir, id, seal_seq)?)
                }
            };
            o.out
                .write_all(item.raw)
                .ctx(|| format!("writing {}", o.tmp.display()))?;
            o.hint.add(&HintEntry {
                seq: item.header.seq,
                expires_at: item.header.expires_at,
                offset: o.len as u32,
                len: loc.len,
                kind: Kind::Put,
                key: item.key,
            })?;
            o.moves.push((o.keys.len(), loc, o.len as u32, slot));
            o.keys.extend_from_slice(item.key);
            o.len += item.raw.len() as u64;
            report.records_kept += 1;
            if done % (4 << 20) < item.raw.len() as u64 {
                set_progress(inner, started_at, done, total);
            }
            Ok(())
        })?;
        set_progress(inner, started_at, done, total);
    }
    if let Some(last) = output.take() {
        report.bytes_written += finish(inner, last)?;
    }
    retire(inner, &inputs)?;
    report.bytes_reclaimed = report.bytes_read.saturating_sub(report.bytes_written);
    report.duration = clock.elapsed();
    tracing::info!(
        files = report.files_merged,
        read = report.bytes_read,
        written = report.bytes_written,
        kept = report.records_kept,
        dropped = report.records_dropped,
        ms = report.duration.as_millis() as u64,
        "merge done"
    );
    Ok(report)
}

/// The offsets of the records the keydir points at in each input, sorted, each with its
/// keydir entry's [`Slot`]: one walk of the keydir instead of a hash lookup per record scanned.
fn pointed_offsets(
    inner: &Inner,
    inputs: &[(u32, Arc<DataFile>)],
) -> hashbrown::HashMap<u32, Vec<(u32, Slot)>> {
    let mut map: hashbrown::HashMap<u32, Vec<(u32, Slot)>> =
        inputs.iter().map(|(no, _)| (*no, Vec::new())).collect();
    inner.keydir.for_each_slot(|loc, slot| {
        if let Some(offsets) = map.get_mut(&loc.file) {
            offsets.push((loc.offset, slot));
        }
    });
    for offsets in map.values_mut() {
        offsets.sort_unstable_by_key(|&(offset, _)| offset);
    }
    map
}

/// Walks an input's sorted pointed-at offsets beside its records, met in increasing offset.
struct PointedCursor {
    offsets: Vec<(u32, Slot)>,
    next: usize,
}

impl PointedCursor {
    fn new(offsets: Vec<(u32, Slot)>) -> Self {
        PointedCursor { offsets, next: 0 }
    }

    /// The keydir entry's slot when the keydir pointed at the record at `offset` (offsets
    /// asked in increasing order).
    fn pointed(&mut self, offset: u32) -> Option<Slot> {
        while self
            .offsets
            .get(self.next)
            .is_some_and(|&(o, _)| o < offset)
        {
            self.next += 1;
        }
        self.offsets
            .get(self.next)
            .filter(|&&(o, _)| o == offset)
            .map(|&(_, slot)| slot)
    }
}

fn set_progress(inner: &Inner, started_at: UnixMillis, done: u64, total: u64) {
    inner.jobs.lock().merge = JobState::Running {
        started_at,
        progress: Progress { done, total },
    };
}

fn start_output(dir: &Path, id: FileId, base_seq: u64) -> Result<Output> {
    let tmp = dir.join(format!("{}.merging", id.data_name()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .ctx(|| format!("creating {}", tmp.display()))?;
    let header = FileHeader { id, base_seq };
    let mut out = BufWriter::with_capacity(1 << 20, fault::Writer::new(file, &tmp));
    out.write_all(&header.encode(DATA_MAGIC))
        .ctx(|| format!("writing {}", tmp.display()))?;
    Ok(Output {
        id,
        tmp,
        out,
        len: FILE_HEADER_LEN as u64,
        hint: HintWriter::create(dir, header)?,
        moves: Vec::new(),
        keys: Vec::new(),
    })
}

/// Makes an output durable and visible, then switches its keys. Returns its size.
fn finish(inner: &Inner, o: Output) -> Result<u64> {
    crash_point("merge:output-buffered");
    let file = o
        .out
        .into_inner()
        .map_err(|e| Error::io(format!("flushing {}", o.tmp.display()), e.into_error()))?
        .into_file();
    fault::sync_all(&file, &o.tmp).ctx(|| format!("fsync {}", o.tmp.display()))?;
    let path = inner.dir.join(o.id.data_name());
    crash_point("merge:output-synced");
    fault::rename(&o.tmp, &path).ctx(|| format!("renaming {}", o.tmp.display()))?;
    // From here recovery reads the output, so it joins the file table at once, whatever fails
    // below: a later merge then takes it as an input. (An output left on disk but not in the
    // table was never merged again, so after a later merge dropped the tombstones of keys it
    // held, a restart brought those deleted keys back.)
    let data = match DataFile::new(o.id, path.clone(), file, inner.opts.read_mode, Role::Sealed) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            // Keys still point at the inputs: the output can go.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
    };
    let no = inner.register(data);
    let switches: Vec<Switch<'_>> = o
        .moves
        .iter()
        .enumerate()
        .map(|(i, &(at, old, offset, slot))| {
            let end = o.moves.get(i + 1).map_or(o.keys.len(), |m| m.0);
            let new = Loc {
                file: no,
                offset,
                ..old
            };
            (slot, &o.keys[at..end], old, new)
        })
        .collect();
    let mut moved: hashbrown::HashMap<u32, u64> = hashbrown::HashMap::new();
    let mut moved_total = 0u64;
    inner.keydir.replace_if_many(&switches, |&(_, _, old, _)| {
        *moved.entry(old.file).or_default() += u64::from(old.len);
        moved_total += u64::from(old.len);
    });
    drop(switches);
    // One pass over the live-byte table for the whole output, not one lock per key.
    let mut live = inner.live.lock();
    for (file, bytes) in moved {
        if let Some(l) = live.get_mut(&file) {
            *l = l.saturating_sub(bytes);
        }
    }
    *live.entry(no).or_default() += moved_total;
    drop(live);
    // A failed directory fsync fails the merge before any input is retired.
    sync_dir(&inner.dir)?;
    crash_point("merge:output-renamed");
    // The hint only speeds up start-up: without it the data file is scanned.
    if let Err(e) = o.hint.finish() {
        tracing::warn!(file = %path.display(), error = %e, "could not write the merge output's hint");
    }
    crash_point("merge:hint-written");
    Ok(o.len)
}

/// Drops merged inputs from the file table and the disk, oldest first.
fn retire(inner: &Inner, inputs: &[(u32, Arc<DataFile>)]) -> Result<()> {
    // A hint still being written for an input (started when it was sealed) would land after
    // the input is gone and be left behind: let those writers finish first.
    let pending = std::mem::take(&mut *inner.hint_threads.lock());
    for t in pending {
        let _ = t.join();
    }
    let _retire = inner.retire.lock();
    {
        let mut files = inner.files.write();
        let mut live = inner.live.lock();
        for (no, _) in inputs {
            files.remove(no);
            live.remove(no);
        }
    }
    crash_point("merge:before-retire");
    for (_, f) in inputs {
        fs::remove_file(&f.path).ctx(|| format!("removing {}", f.path.display()))?;
        crash_point("merge:retired-one");
        let hint = inner.dir.join(f.id.hint_name());
        match fs::remove_file(&hint) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", hint.display()), e)),
        }
    }
    sync_dir(&inner.dir)
}

/// Writes the hint of a sealed data file by scanning it.
///
/// # Errors
/// I/O and corruption errors.
pub fn write_hint_for(dir: &Path, data_path: &Path) -> Result<PathBuf> {
    let mut head = [0u8; FILE_HEADER_LEN];
    {
        use std::io::Read;
        File::open(data_path)
            .and_then(|mut f| f.read_exact(&mut head))
            .ctx(|| format!("reading {}", data_path.display()))?;
    }
    let header = FileHeader::decode(&head, DATA_MAGIC, data_path)?;
    let mut hint = HintWriter::create(dir, header)?;
    scan::scan(data_path, false, |item| {
        hint.add(&HintEntry {
            seq: item.header.seq,
            expires_at: item.header.expires_at,
            offset: item.offset as u32,
            len: item.raw.len() as u32,
            kind: item.header.kind,
            key: item.key,
        })
    })?;
    hint.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcask::{Bitcask, BitcaskOptions};
    use crate::{Engine, SyncPolicy};

    #[test]
    fn a_claimed_job_is_running_at_once_and_refuses_a_second_start() {
        let tmp = tempfile::tempdir().expect("tmp");
        let b =
            Bitcask::open(tmp.path(), SyncPolicy::Never, &BitcaskOptions::default()).expect("open");
        let c = claim(&b.inner).expect("claim merge");
        assert!(matches!(b.jobs().merge, JobState::Running { .. }));
        assert!(matches!(b.start_merge(), Err(Error::Busy("merge"))));
        run_claimed(&b.inner, c).expect("merge");
        assert!(matches!(b.jobs().merge, JobState::Done(_)));
        let c = crate::bitcask::snapshot::claim(&b.inner).expect("claim snapshot");
        assert!(matches!(b.jobs().snapshot, JobState::Running { .. }));
        assert!(matches!(b.start_snapshot(), Err(Error::Busy("snapshot"))));
        drop(c);
        b.start_snapshot().expect("start").wait().expect("snapshot");
        assert!(matches!(b.jobs().snapshot, JobState::Done(_)));
        b.close().expect("close");
    }

    #[test]
    fn pointed_cursor_matches_offsets_met_in_order() {
        let kd = crate::bitcask::keydir::Keydir::new();
        for i in 0..3u32 {
            kd.insert(
                &[i as u8],
                Loc {
                    file: 1,
                    offset: i,
                    len: 1,
                    expiry_s: 0,
                },
            );
        }
        let mut slots = Vec::new();
        kd.for_each_slot(|loc, slot| slots.push((loc.offset, slot)));
        slots.sort_unstable_by_key(|&(o, _)| o);
        let s = |i: usize| slots[i].1;
        let offsets = vec![(30, s(0)), (50, s(1)), (90, s(2))];
        let mut c = PointedCursor::new(offsets);
        let met: Vec<Option<Slot>> = [10, 30, 40, 50, 60, 90, 100]
            .iter()
            .map(|&o| c.pointed(o))
            .collect();
        assert_eq!(
            met,
            [None, Some(s(0)), None, Some(s(1)), None, Some(s(2)), None]
        );
        assert_eq!(PointedCursor::new(Vec::new()).pointed(0), None);
    }

    #[test]
    fn merge_copies_exactly_the_live_records() {
        use crate::{BatchOp, PutOptions};
        let tmp = tempfile::tempdir().expect("tmp");
        let opts = BitcaskOptions {
            max_file_size: 16 << 10,
            ..BitcaskOptions::default()
        };
        let b = Bitcask::open(tmp.path(), SyncPolicy::Never, &opts).expect("open");
        let key = |i: usize| format!("k{i:04}").into_bytes();
        let value = |i: usize, round: usize| bytes::Bytes::from(format!("v{i}-{round}"));
        for round in 0..3 {
            for i in (0..600usize).filter(|&i| round == 0 || i.is_multiple_of(round + 1)) {
                b.put(&key(i), value(i, round), PutOptions::default())
                    .expect("put");
            }
        }
        for i in (0..600).step_by(7) {
            b.delete(&key(i), crate::Precondition::None)
                .expect("delete");
        }
        // A batch: its records are nested in one envelope.
        let ops: Vec<BatchOp> = (600..650)
            .map(|i| BatchOp::Put {
                key: key(i),
                value: value(i, 0),
                expires_at: None,
            })
            .collect();
        b.apply_batch(ops).expect("batch");
        let live = (0..600).filter(|&i: &usize| !i.is_multiple_of(7)).count() + 50;
        let report = b.merge().expect("merge");
        assert_eq!(report.records_kept, live as u64);
        let want = |i: usize| -> Option<bytes::Bytes> {
            if i >= 600 {
                return Some(value(i, 0));
            }
            if i.is_multiple_of(7) {
                return None;
            }
            let round = (0..3)
                .rev()
                .find(|r| i.is_multiple_of(r + 1))
                .expect("round 0");
            Some(value(i, round))
        };
        for i in 0..650 {
            assert_eq!(
                b.get(&key(i)).expect("get").map(|v| v.bytes),
                want(i),
                "k{i}"
            );
        }
        b.close().expect("close");
        drop(b);
        let b = Bitcask::open(tmp.path(), SyncPolicy::Never, &opts).expect("reopen");
        for i in 0..650 {
            assert_eq!(
                b.get(&key(i)).expect("get").map(|v| v.bytes),
                want(i),
                "k{i}"
            );
        }
        assert_eq!(b.merge().expect("merge again").records_kept, live as u64);
        b.close().expect("close");
    }

    #[test]
    fn policy_thresholds_and_window() {
        let p = MergePolicy {
            min_fragmentation: 0.5,
            min_dead_bytes: 100,
            check_interval: None,
            window: None,
        };
        assert!(!p.should_merge(0, 0, 0));
        assert!(!p.should_merge(99, 100, 0), "too few dead bytes");
        assert!(p.should_merge(100, 150, 0));
        assert!(!p.should_merge(150, 1000, 0), "fragmentation too low");
        assert!(p.should_merge(200, 10_000, 0), "enough dead bytes alone");
        let w = MergePolicy {
            window: Some((22, 4)),
            ..p.clone()
        };
        assert!(w.should_merge(100, 150, 23));
        assert!(w.should_merge(100, 150, 3));
        assert!(!w.should_merge(100, 150, 12));
    }
}
