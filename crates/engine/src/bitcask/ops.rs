//! The read and write paths of the bitcask engine: the [`Engine`] trait implementation.
//!
//! Writes: take the writer mutex, check the precondition against the keydir (and the record
//! header for compare-and-set), append, update the keydir and the live-byte counts, release,
//! then wait for durability as the sync policy says. Reads: keydir lookup, then a positional
//! read of the record, whose CRC and key are checked before a byte is returned.

use hashbrown::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::keydir::Loc;
use super::record::{self, HEADER_LEN, Kind};
use super::writer::{BatchRecord, Writer};
use super::{Bitcask, Inner, MAX_VALUE_LEN, merge, snapshot};
use crate::changes::{Change, ChangeKind, ChangeLog};
use crate::compression::Codec;
use crate::error::{Error, Result};
use crate::jobs;
use crate::{
    BatchOp, BatchResult, Engine, EngineKind, FileStats, JobHandle, JobStatus, KeyRange, ListPage,
    MergeReport, Meta, Precondition, PutOptions, SnapshotInfo, SnapshotReport, Stats, SyncPolicy,
    Ticket, UnixMillis, Value, Version, Written, check_key,
};

/// Expiry is kept to whole seconds (rounded to the nearest) so the keydir and the record
/// agree exactly.
fn round_expiry(e: Option<UnixMillis>) -> Option<UnixMillis> {
    e.map(|e| {
        UnixMillis(
            (e.0.saturating_add(500) / 1000)
                .saturating_mul(1000)
                .max(1000),
        )
    })
}

fn check_value_len(len: usize) -> Result<()> {
    if len > MAX_VALUE_LEN {
        return Err(Error::ValueTooLarge {
            len,
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

impl Inner {
    /// Reads the raw record at `loc`. `Ok(None)` means its file was retired by a merge
    /// meanwhile (look the key up again). `w` is the writer when the caller holds it.
    pub(super) fn read_raw(&self, loc: Loc, w: Option<&Writer>) -> Result<Option<Bytes>> {
        let Some(f) = self.file(loc.file) else {
            return Ok(None);
        };
        if u64::from(loc.offset) + u64::from(loc.len) > f.written() {
            // Not in the file yet: in the writer's buffer (unless it was written out meanwhile,
            // which `read_at` then finds; or the location is damaged, which it reports).
            let copied = match w {
                Some(w) => w.read_buffered(loc),
                None => self.writer.lock().read_buffered(loc),
            };
            if let Some(b) = copied {
                return Ok(Some(b));
            }
        }
        f.read_at(u64::from(loc.offset), loc.len as usize).map(Some)
    }

    /// Reads and verifies the put record of `key` at `loc`.
    fn read_record(
        &self,
        key: &[u8],
        loc: Loc,
        w: Option<&Writer>,
    ) -> Result<Option<(record::Header, Bytes)>> {
        let raw = match self.read_raw(loc, w) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(None),
            Err(e @ Error::Corrupted { .. }) => {
                // A record cut off by a truncated file, found on read.
                self.corrupt_records.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "corrupt record");
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let checked = record::decode(&raw).and_then(|r| {
            if r.key != key {
                Err("record holds another key".to_string())
            } else if r.header.kind != Kind::Put {
                Err("keydir points at a non-put record".to_string())
            } else {
                Ok(r.header)
            }
        });
        match checked {
            Ok(h) => Ok(Some((h, raw))),
            Err(reason) => {
                self.corrupt_records.fetch_add(1, Ordering::Relaxed);
                let path = self
                    .file(loc.file)
                    .map(|f| f.path.clone())
                    .unwrap_or_default();
                tracing::error!(file = %path.display(), offset = loc.offset, %reason, "corrupt record");
                Err(Error::corrupted(path, u64::from(loc.offset), reason))
            }
        }
    }

    /// Counts and reports a record of `key` whose CRC passed but whose value does not unpack.
    fn corrupt_value(&self, key: &[u8], reason: String) -> Error {
        self.corrupt_records.fetch_add(1, Ordering::Relaxed);
        let loc = self.keydir.get(key);
        let path = loc
            .and_then(|l| self.file(l.file))
            .map(|f| f.path.clone())
            .unwrap_or_default();
        let offset = loc.map_or(0, |l| u64::from(l.offset));
        tracing::error!(file = %path.display(), offset, %reason, "corrupt record");
        Error::corrupted(path, offset, reason)
    }

    /// The current record of `key` (not expired), retrying if a merge moves it meanwhile.
    fn lookup(&self, key: &[u8], w: Option<&Writer>) -> Result<Option<(record::Header, Bytes)>> {
        for _ in 0..64 {
            let Some(loc) = self.keydir.get(key) else {
                return Ok(None);
            };
            // The clock is read only for keys that expire (it was 6-15 % of a GET's
            // instructions under callgrind).
            if loc.expiry_s != 0 && loc.expired_at(UnixMillis::now().0) {
                if w.is_none() {
                    self.expire_found(key, loc);
                }
                return Ok(None);
            }
            if let Some((h, raw)) = self.read_record(key, loc, w)? {
                let expired = h.expires_at != 0 && h.is_expired(UnixMillis::now());
                return Ok((!expired).then_some((h, raw)));
            }
        }
        Err(Error::io(
            "reading a key moved by a merge",
            std::io::Error::other("the record kept moving"),
        ))
    }

    /// A key found expired on read: writes a tombstone for it and publishes an `expire`
    /// change, once (only if the keydir still points at `loc`). Best effort: a store that
    /// refuses writes (read-only, poisoned, disk full) keeps hiding the key without it. The
    /// tombstone is not waited on: if a crash loses it, the key is still expired.
    pub(super) fn expire_found(&self, key: &[u8], loc: Loc) {
        if self.writable().is_err() {
            return;
        }
        let mut w = self.writer.lock();
        // Not when the keydir moved on, nor when a newer write to the key is staged (not yet
        // visible): the tombstone would land after it and remove it.
        if self.keydir.get(key) != Some(loc) || w.staged(key).is_some() {
            return;
        }
        let seq = match w.append(
            self,
            Kind::Tombstone,
            key,
            (Codec::Raw, &[]),
            None,
            UnixMillis::now(),
        ) {
            Ok((seq, _)) => seq,
            Err(e) => {
                tracing::warn!(error = %e, "writing the tombstone of an expired key failed");
                return;
            }
        };
        w.stage(self, key, seq, None);
        w.feed(
            self,
            vec![Change::removal(Version(seq), ChangeKind::Expire, key)],
        );
    }

    /// The current version of `key` as far as `pre` needs it, under the writer mutex. The
    /// record header is read only when the version is compared or reported in the failure
    /// (`If-None-Match: *` on an existing key); presence alone comes from the keydir.
    fn current_version(
        &self,
        key: &[u8],
        pre: Precondition,
        w: &Writer,
    ) -> Result<Option<Version>> {
        let present = || {
            let now = UnixMillis::now().0;
            match w.staged(key) {
                Some(change) => change.is_some_and(|l| !l.expired_at(now)),
                None => self.keydir.get(key).is_some_and(|l| !l.expired_at(now)),
            }
        };
        match pre {
            Precondition::None => Ok(None),
            Precondition::IfExists if present() => Ok(Some(Version(0))),
            Precondition::IfExists => Ok(None),
            Precondition::IfAbsent if !present() => Ok(None),
            Precondition::IfVersion(_) | Precondition::IfAbsent => {
                Ok(self.lookup_writing(key, w)?.map(|(h, _)| h.version()))
            }
        }
    }

    /// The current record of `key` as writers see it (under the writer mutex): the newest
    /// staged change if there is one, else the keydir's.
    fn lookup_writing(&self, key: &[u8], w: &Writer) -> Result<Option<(record::Header, Bytes)>> {
        match w.staged(key) {
            None => self.lookup(key, Some(w)),
            Some(None) => Ok(None),
            Some(Some(loc)) => {
                if loc.expiry_s != 0 && loc.expired_at(UnixMillis::now().0) {
                    return Ok(None);
                }
                // A staged record is in the active file (or its buffer): no merge moves it.
                Ok(self
                    .read_record(key, loc, Some(w))?
                    .filter(|(h, _)| h.expires_at == 0 || !h.is_expired(UnixMillis::now())))
            }
        }
    }

    fn writable(&self) -> Result<()> {
        self.check_open()?;
        self.check_poisoned()
    }

    /// Moves live-byte accounting from `old` to `new`.
    pub(super) fn account(&self, old: Option<Loc>, new: Option<Loc>) {
        let mut live = self.live.lock();
        if let Some(o) = old
            && let Some(l) = live.get_mut(&o.file)
        {
            *l = l.saturating_sub(u64::from(o.len));
        }
        if let Some(n) = new {
            *live.entry(n.file).or_default() += u64::from(n.len);
        }
    }

    /// The ticket of a write whose last record is `seq`: it resolves once the record is
    /// durable when the policy says so, at once otherwise.
    fn ticket(&self, seq: u64) -> Ticket {
        match self.sync {
            SyncPolicy::Always => self.commit.ticket(seq),
            _ => Ticket::ready(),
        }
    }
}

impl Engine for Bitcask {
    fn kind(&self) -> EngineKind {
        EngineKind::Bitcask
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        check_key(key)?;
        self.inner.check_open()?;
        let Some((h, raw)) = self.inner.lookup(key, None)? else {
            return Ok(None);
        };
        let start = HEADER_LEN + usize::from(h.key_len);
        // Raw values stay a slice of what was read (of the map, zero-copy, in mmap mode);
        // a compressed one is unpacked into a buffer of its own.
        let bytes = match record::value_of(&h, raw.slice(start..), MAX_VALUE_LEN) {
            Ok(b) => b,
            Err(reason) => return Err(self.inner.corrupt_value(key, reason)),
        };
        Ok(Some(Value {
            meta: Meta {
                version: h.version(),
                expires_at: h.expiry(),
                value_len: bytes.len() as u64,
            },
            bytes,
        }))
    }

    fn head(&self, key: &[u8]) -> Result<Option<Meta>> {
        Ok(self.get(key)?.map(|v| v.meta))
    }

    fn durable_barrier(&self) -> Result<()> {
        if self.inner.sync == SyncPolicy::Always {
            self.sync()
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
        check_key(key)?;
        check_value_len(value.len())?;
        let inner = &*self.inner;
        inner.writable()?;
        let expires_at = round_expiry(opts.expires_at);
        // Packed before the writer mutex: compressing is the slow part of a large put.
        let packed = inner.opts.compression.pack(&value);
        let stored = match &packed {
            Some((codec, p)) => (*codec, &p[..]),
            None => (Codec::Raw, &value[..]),
        };
        let (seq, created) = {
            let mut w = inner.writer.lock();
            let current = inner.current_version(key, opts.precondition, &w)?;
            opts.precondition.check(current)?;
            let now = UnixMillis::now();
            let existed = match w.staged(key) {
                Some(change) => change.is_some_and(|o| !o.expired_at(now.0)),
                None => inner.keydir.get(key).is_some_and(|o| !o.expired_at(now.0)),
            };
            let (seq, loc) = w.append(inner, Kind::Put, key, stored, expires_at, now)?;
            w.stage(inner, key, seq, Some(loc));
            w.feed(inner, vec![Change::put(Version(seq), key, &value)]);
            (seq, !existed)
        };
        let written = Written {
            version: Version(seq),
            created,
        };
        Ok((written, inner.ticket(seq)))
    }

    fn delete(&self, key: &[u8], precondition: Precondition) -> Result<Option<Version>> {
        let (removed, ticket) = crate::settled(self, self.delete_deferred(key, precondition))?;
        ticket.wait()?;
        Ok(removed)
    }

    fn delete_deferred(
        &self,
        key: &[u8],
        precondition: Precondition,
    ) -> Result<(Option<Version>, Ticket)> {
        check_key(key)?;
        let inner = &*self.inner;
        inner.writable()?;
        let (seq, removed) = {
            let mut w = inner.writer.lock();
            let current = inner.lookup_writing(key, &w)?.map(|(h, _)| h.version());
            precondition.check(current)?;
            let Some(removed) = current else {
                // Absent or expired: nothing to write, but drop an expired entry.
                if w.staged(key).is_none() {
                    let now = UnixMillis::now().0;
                    let (old, _) = inner
                        .keydir
                        .update(key, |cur| cur.filter(|l| !l.expired_at(now)));
                    if old.is_some_and(|o| o.expired_at(now)) {
                        inner.account(old, None);
                    }
                }
                return Ok((None, Ticket::ready()));
            };
            let (seq, _) = w.append(
                inner,
                Kind::Tombstone,
                key,
                (Codec::Raw, &[]),
                None,
                UnixMillis::now(),
            )?;
            w.stage(inner, key, seq, None);
            w.feed(
                inner,
                vec![Change::removal(Version(seq), ChangeKind::Delete, key)],
            );
            (seq, removed)
        };
        Ok((Some(removed), inner.ticket(seq)))
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
        for (key, _) in checks {
            check_key(key)?;
        }
        for op in &ops {
            check_key(op.key())?;
            if let BatchOp::Put { value, .. } = op {
                check_value_len(value.len())?;
            }
        }
        if ops.is_empty() && checks.is_empty() {
            return Ok((Vec::new(), Ticket::ready()));
        }
        let inner = &*self.inner;
        inner.writable()?;
        let packed: Vec<Option<(Codec, Vec<u8>)>> = ops
            .iter()
            .map(|op| match op {
                BatchOp::Put { value, .. } => inner.opts.compression.pack(value),
                BatchOp::Delete { .. } => None,
            })
            .collect();
        let (last_seq, results) = {
            let mut w = inner.writer.lock();
            // Under the writer mutex: no write can come between these checks and the batch.
            for (key, pre) in checks {
                pre.check(inner.current_version(key, *pre, &w)?)?;
            }
            if ops.is_empty() {
                return Ok((Vec::new(), Ticket::ready()));
            }
            let now = UnixMillis::now();
            // Presence as the batch goes, for results: key -> exists after the ops so far.
            let mut present: HashMap<&[u8], bool> = HashMap::new();
            let mut records = Vec::with_capacity(ops.len());
            let mut existed_before = Vec::with_capacity(ops.len());
            for (op, packed) in ops.iter().zip(&packed) {
                let key = op.key();
                let existed = match present.get(key) {
                    Some(&p) => p,
                    None => match w.staged(key) {
                        Some(change) => change.is_some_and(|l| !l.expired_at(now.0)),
                        None => inner.keydir.get(key).is_some_and(|l| !l.expired_at(now.0)),
                    },
                };
                existed_before.push(existed);
                let record = match op {
                    BatchOp::Put {
                        value, expires_at, ..
                    } => {
                        let (codec, value) = match packed {
                            Some((codec, p)) => (*codec, &p[..]),
                            None => (Codec::Raw, &value[..]),
                        };
                        BatchRecord {
                            kind: Kind::Put,
                            key,
                            value,
                            codec,
                            expires_at: round_expiry(*expires_at),
                        }
                    }
                    BatchOp::Delete { .. } => BatchRecord {
                        kind: Kind::Tombstone,
                        key,
                        value: &[],
                        codec: Codec::Raw,
                        expires_at: None,
                    },
                };
                present.insert(key, record.kind == Kind::Put);
                records.push(record);
            }
            let placed = w.append_batch(inner, &records, now)?;
            let mut results = Vec::with_capacity(ops.len());
            for ((r, (seq, loc)), existed) in records.iter().zip(placed).zip(existed_before) {
                let change = (r.kind == Kind::Put).then_some(loc);
                w.stage(inner, r.key, seq, change);
                results.push(BatchResult {
                    version: Version(seq),
                    existed_before: existed,
                });
            }
            if let Some(first) = results.first().map(|r| r.version) {
                let feed = ops
                    .iter()
                    .zip(&results)
                    .map(|(op, r)| {
                        match op {
                            BatchOp::Put { value, .. } => Change::put(r.version, op.key(), value),
                            BatchOp::Delete { .. } => {
                                Change::removal(r.version, ChangeKind::Delete, op.key())
                            }
                        }
                        .in_batch(first)
                    })
                    .collect();
                w.feed(inner, feed);
            }
            (w.last_seq(), results)
        };
        Ok((results, inner.ticket(last_seq)))
    }

    fn advance_version(&self, floor: Version) -> Result<()> {
        let inner = &*self.inner;
        inner.writable()?;
        let mut w = inner.writer.lock();
        // The next record's sequence number (its version) is `next_seq`.
        w.raise_next_seq(inner, floor.0.saturating_add(1));
        Ok(())
    }

    fn list_range(
        &self,
        range: &KeyRange<'_>,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ListPage> {
        self.inner.check_open()?;
        let now = UnixMillis::now().0;
        Ok(self.inner.keydir.list(range, start_after, limit, now))
    }

    fn sync(&self) -> Result<()> {
        self.inner.writable()?;
        self.inner.commit.sync_now().map(|_| ())
    }

    fn stats(&self) -> Result<Stats> {
        let inner = &*self.inner;
        let files: Vec<_> = {
            let f = inner.files.read();
            let mut v: Vec<_> = f.iter().map(|(no, f)| (*no, f.clone())).collect();
            v.sort_by_key(|(_, f)| f.id);
            v
        };
        let live = inner.live.lock().clone();
        let active_no = inner.active_no.load(Ordering::Acquire);
        let (active_len, last_seq) = {
            let w = inner.writer.lock();
            (w.len(), w.last_seq())
        };
        let mut rows = Vec::with_capacity(files.len());
        let (mut live_total, mut disk_total) = (0u64, 0u64);
        for (no, f) in &files {
            let total = if *no == active_no {
                active_len
            } else {
                f.size()?
            };
            let live_bytes = live.get(no).copied().unwrap_or(0).min(total);
            live_total += live_bytes;
            disk_total += total;
            rows.push(FileStats {
                name: f.id.data_name(),
                total_bytes: total,
                live_bytes,
                dead_bytes: total.saturating_sub(live_bytes),
                active: *no == active_no,
            });
        }
        let dead = disk_total.saturating_sub(live_total);
        Ok(Stats {
            engine: EngineKind::Bitcask,
            keys: inner.keydir.len() as u64,
            live_bytes: live_total,
            dead_bytes: dead,
            disk_bytes: disk_total,
            data_files: files.len() as u64,
            fragmentation: if disk_total == 0 {
                0.0
            } else {
                dead as f64 / disk_total as f64
            },
            index_bytes: inner.keydir.memory_bytes() as u64,
            files: rows,
            sync: inner.sync,
            bytes_written: inner.bytes_written.load(Ordering::Relaxed),
            corrupt_records: inner.corrupt_records.load(Ordering::Relaxed),
            last_version: Version(last_seq),
            jobs: inner.jobs.lock().clone(),
        })
    }

    fn merge(&self) -> Result<MergeReport> {
        self.inner.check_open()?;
        merge::run(&self.inner)
    }

    fn snapshot(&self) -> Result<SnapshotReport> {
        self.inner.check_open()?;
        snapshot::run(&self.inner)
    }

    fn start_merge(&self) -> Result<JobHandle<MergeReport>> {
        self.inner.check_open()?;
        let claim = merge::claim(&self.inner)?;
        let inner = Arc::clone(&self.inner);
        jobs::spawn("merge", move || merge::run_claimed(&inner, claim))
    }

    fn start_snapshot(&self) -> Result<JobHandle<SnapshotReport>> {
        self.inner.check_open()?;
        let claim = snapshot::claim(&self.inner)?;
        let inner = Arc::clone(&self.inner);
        jobs::spawn("snapshot", move || snapshot::run_claimed(&inner, claim))
    }

    fn jobs(&self) -> JobStatus {
        self.inner.jobs.lock().clone()
    }

    fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        snapshot::list(&self.inner.dir)
    }

    fn changes(&self) -> Option<&ChangeLog> {
        Some(&self.inner.changes)
    }

    fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let bg = std::mem::take(&mut *self.background.lock());
        drop(bg.stop);
        for t in bg.threads {
            let _ = t.join();
        }
        // Wait for a running merge or snapshot to finish before the final sync.
        let _m = self.inner.merge_running.lock();
        let _s = self.inner.snapshot_running.lock();
        for t in std::mem::take(&mut *self.inner.hint_threads.lock()) {
            let _ = t.join();
        }
        let result = if self.inner.poison.is_set() {
            Ok(())
        } else {
            let trimmed = self.inner.writer.lock().trim(&self.inner);
            trimmed.and_then(|()| self.inner.commit.sync_now().map(|_| ()))
        };
        self.inner.commit.stop();
        if let Some(t) = bg.committer {
            let _ = t.join();
        }
        if let Some(lock) = self.inner.lock.lock().take() {
            lock.release();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use bytes::Bytes;

    use crate::bitcask::{Bitcask, BitcaskOptions, ReadMode};
    use crate::{Engine, PutOptions, SyncPolicy};

    /// In mmap mode a record of the active file is served from the file's map (the value read
    /// is a slice of it) once written: a new file's records, and after a reopen the recovered
    /// file's old records and new ones. Went red with `Writer::write_buffer` not raising the
    /// file's written mark (reads then fell back to `pread`, still correct but copied).
    #[test]
    fn active_file_records_are_served_from_the_map() {
        let tmp = tempfile::tempdir().expect("tmp");
        let opts = BitcaskOptions {
            read_mode: ReadMode::Mmap,
            ..BitcaskOptions::default()
        };
        for round in 0..2u8 {
            let b = Bitcask::open(tmp.path(), SyncPolicy::Always, &opts).expect("open");
            let value = Bytes::from(vec![round; 100]);
            b.put(&[round], value.clone(), PutOptions::default())
                .expect("put");
            let inner = &b.inner;
            for key in 0..=round {
                let loc = inner.keydir.get(&[key]).expect("in the keydir");
                assert_eq!(loc.file, inner.active_no.load(Ordering::Acquire), "active");
                let file = inner.file(loc.file).expect("file");
                let raw = inner.read_raw(loc, None).expect("read").expect("found");
                let mapped = file
                    .mapped(u64::from(loc.offset), loc.len as usize)
                    .unwrap_or_else(|| panic!("round {round}, key {key}: not from the map"));
                assert_eq!(raw.as_ptr(), mapped.as_ptr(), "a slice of the map");
                let got = b.get(&[key]).expect("get").expect("value");
                assert_eq!(got.bytes, Bytes::from(vec![key; 100]));
            }
            b.close().expect("close");
        }
    }
}
