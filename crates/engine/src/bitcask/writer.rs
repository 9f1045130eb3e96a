//! The single writer: the active data file, its in-memory append buffer, rotation, and the
//! bitcask side of group commit and visibility.
//!
//! Appends ([`Writer::append`], [`Writer::append_batch`]) encode records straight into a buffer
//! under the writer mutex and return where each record will be. The buffer is written to the
//! file through the durability core's [`AppendFile`] with one `pwrite` when it passes 64 KiB,
//! when a durable write needs it, on rotation and on sync.
//!
//! Group commit (`SyncPolicy::Always`) is the core's [`crate::durability::GroupCommit`], with
//! record sequence numbers as LSNs; its leader runs this engine's [`Flusher`]: flush the
//! buffer, fdatasync once, publish.
//!
//! # Visibility
//! With `SyncPolicy::Always` a write reaches the keydir (readers) only once it is durable: the
//! change is staged in the writer ([`Writer::stage`]) and [`publish_visible`] applies it when
//! the leader's fdatasync (or the seal of the file) covers it. Writers, under the writer
//! mutex, see staged changes ([`Writer::staged`]), so compare-and-set orders against pending
//! writes. With `never` or an interval the change is published at once, as before.
//!
//! A failed write or fsync poisons the engine, except a full disk met before a record is
//! appended (see [`Writer::reserve`]): that write is refused with `DiskFull` and the engine
//! takes writes again once there is space.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use hashbrown::HashMap;

use super::Inner;
use super::data_file::{DATA_MAGIC, DataFile, FILE_HEADER_LEN, FileHeader, FileId, Role};
use super::keydir::Loc;
use super::record::{self, HEADER_LEN, Kind};
use crate::compression::Codec;
use crate::durability::append::{LogFile, Prealloc, sync_file};
use crate::durability::{AppendFile, Flusher, PendingQueue, Poison};
use crate::error::{Error, IoContext, Result};
use crate::{SyncPolicy, UnixMillis, fs};

/// Flush the buffer to the file once it holds this much.
const FLUSH_AT: usize = 64 * 1024;
/// Preallocate this much ahead of the write position.
const PREALLOC_CHUNK: u64 = 4 << 20;

impl LogFile for DataFile {
    fn file(&self) -> &File {
        DataFile::file(self)
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// A change to one key a write makes: its new record's location, or `None` for a delete.
pub type Change = Option<Loc>;

/// One record to append as part of a batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchRecord<'a> {
    /// Put or tombstone.
    pub kind: Kind,
    /// The key.
    pub key: &'a [u8],
    /// The value as stored under `codec` (empty for a tombstone).
    pub value: &'a [u8],
    /// How `value` is stored.
    pub codec: Codec,
    /// Expiry, rounded to seconds.
    pub expires_at: Option<UnixMillis>,
}

/// State of the active file, guarded by the writer mutex.
#[derive(Debug)]
pub struct Writer {
    log: AppendFile<Arc<DataFile>>,
    active_no: u32,
    /// Logical length: bytes in the file plus bytes in the buffer.
    len: u64,
    /// Appended records not yet written to the file.
    buf: Vec<u8>,
    next_seq: u64,
    /// A flush met a full disk: the next write flushes first and is refused while it fails.
    stalled: bool,
    /// Changes are staged until durable (`SyncPolicy::Always`).
    hold_until_durable: bool,
    /// The newest staged change per key, with its sequence number.
    staged: HashMap<Bytes, (u64, Change)>,
    /// Staged changes in sequence order, published once durable.
    queue: PendingQueue<(Bytes, Change)>,
}

impl Writer {
    /// A writer appending to `active` (runtime number `active_no`), whose data is `len` bytes,
    /// issuing sequence numbers from `next_seq`.
    pub fn new(
        active_no: u32,
        active: Arc<DataFile>,
        len: u64,
        next_seq: u64,
        sync: SyncPolicy,
        max_file_size: u64,
        poison: Arc<Poison>,
    ) -> Self {
        let prealloc = (sync != SyncPolicy::Never).then_some(Prealloc {
            chunk: PREALLOC_CHUNK,
            max: max_file_size,
        });
        Writer {
            log: AppendFile::new(active, len, prealloc, poison),
            active_no,
            len,
            buf: Vec::with_capacity(128 * 1024),
            next_seq,
            stalled: false,
            hold_until_durable: sync == SyncPolicy::Always,
            staged: HashMap::new(),
            queue: PendingQueue::new(),
        }
    }

    /// Sequence number of the last record appended (0 if none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Raises the sequence number the next record gets to at least `next` (never lowers it).
    /// No record is written: the gap is a range of versions no record holds (cluster replicas
    /// use it so versions follow the Raft log).
    pub fn raise_next_seq(&mut self, inner: &Inner, next: u64) {
        if next > self.next_seq {
            inner
                .changes
                .skip(crate::Version(self.next_seq), crate::Version(next - 1));
            self.next_seq = next;
        }
    }

    /// Logical length of the active file (file plus buffer).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Runtime number of the active file.
    pub fn active_no(&self) -> u32 {
        self.active_no
    }

    /// The active file.
    pub fn active(&self) -> &Arc<DataFile> {
        self.log.inner()
    }

    /// Makes room for a record of `len` bytes before anything of it is applied: writes out
    /// what earlier writes left in the buffer when it would pass the flush threshold, rotates
    /// if the record would not fit, and (unless the policy is `never`) preallocates the disk
    /// space the record will take. Returns the offset the record will have.
    ///
    /// A full disk met here refuses the write cleanly with [`Error::DiskFull`]: nothing of it
    /// was applied, the partial bytes of the failed write are cut back, the buffer is kept for
    /// the next attempt, and the engine is *not* poisoned, so writes succeed again once space
    /// is freed. Every other failure poisons the engine.
    fn reserve(&mut self, inner: &Inner, len: usize) -> Result<u64> {
        let rotate =
            self.len + len as u64 > inner.opts.max_file_size && self.len > FILE_HEADER_LEN as u64;
        if !self.buf.is_empty() && (rotate || self.stalled || self.buf.len() + len >= FLUSH_AT) {
            self.flush_before_append(inner)?;
        }
        if rotate {
            self.rotate(inner)?;
        }
        self.log.preallocate(self.len + len as u64)?;
        Ok(self.len)
    }

    /// Appends one record; returns its sequence number and location. Nothing is visible to
    /// readers until [`Writer::stage`].
    ///
    /// # Errors
    /// [`Error::DiskFull`] (nothing appended), other I/O errors (poisoned).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        inner: &Inner,
        kind: Kind,
        key: &[u8],
        (codec, value): (Codec, &[u8]),
        expires_at: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Result<(u64, Loc)> {
        let len = HEADER_LEN + key.len() + value.len();
        let offset = self.reserve(inner, len)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        record::encode_stored(&mut self.buf, kind, codec, seq, now, expires_at, key, value);
        let loc = Loc {
            file: self.active_no,
            offset: offset as u32,
            len: len as u32,
            expiry_s: Loc::expiry_secs(expires_at.map_or(0, |e| e.0)),
        };
        self.appended(inner, len)?;
        Ok((seq, loc))
    }

    /// Appends `records` as one batch record (applied whole or not at all after a crash);
    /// returns each record's sequence number and location, in order.
    ///
    /// # Errors
    /// [`Error::BatchTooLarge`], [`Error::DiskFull`] (nothing appended), other I/O errors.
    pub fn append_batch(
        &mut self,
        inner: &Inner,
        records: &[BatchRecord<'_>],
        now: UnixMillis,
    ) -> Result<Vec<(u64, Loc)>> {
        let first_seq = self.next_seq;
        let mut nested = Vec::new();
        let mut placed = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let at = nested.len();
            let seq = first_seq + i as u64;
            record::encode_stored(
                &mut nested,
                r.kind,
                r.codec,
                seq,
                now,
                r.expires_at,
                r.key,
                r.value,
            );
            placed.push((at, nested.len() - at));
        }
        if nested.len() > u32::MAX as usize - HEADER_LEN {
            return Err(Error::BatchTooLarge(format!(
                "{} bytes encoded",
                nested.len()
            )));
        }
        let len = HEADER_LEN + nested.len();
        let offset = self.reserve(inner, len)?;
        self.next_seq = first_seq + records.len() as u64;
        record::encode(
            &mut self.buf,
            Kind::Batch,
            first_seq,
            now,
            None,
            &[],
            &nested,
        );
        let file = self.active_no;
        let out = records
            .iter()
            .zip(placed)
            .enumerate()
            .map(|(i, (r, (at, rec_len)))| {
                let loc = Loc {
                    file,
                    offset: (offset + (HEADER_LEN + at) as u64) as u32,
                    len: rec_len as u32,
                    expiry_s: Loc::expiry_secs(r.expires_at.map_or(0, |e| e.0)),
                };
                (first_seq + i as u64, loc)
            })
            .collect();
        self.appended(inner, len)?;
        Ok(out)
    }

    /// Records that `n` bytes were appended to `buf`; flushes if the buffer is large (only a
    /// record of `FLUSH_AT` bytes or more gets here with a full buffer).
    fn appended(&mut self, inner: &Inner, n: usize) -> Result<()> {
        self.len += n as u64;
        inner.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
        if self.buf.len() >= FLUSH_AT {
            if inner.sync == SyncPolicy::Never {
                // Acknowledged without durability, as `never` says: on a full disk the record
                // waits in the buffer and the next write's `reserve` is refused until it fits.
                match self.flush_before_append(inner) {
                    Err(Error::DiskFull { context }) => {
                        tracing::warn!(%context, "disk full: buffered writes wait for space");
                    }
                    other => other?,
                }
            } else {
                self.flush(inner)?;
            }
        }
        Ok(())
    }

    /// Makes the change of the record `seq` to `key` visible to readers: at once, or (policy
    /// `always`) once the record is durable.
    pub fn stage(&mut self, inner: &Inner, key: &[u8], seq: u64, change: Change) {
        if self.hold_until_durable {
            let key = Bytes::copy_from_slice(key);
            self.staged.insert(key.clone(), (seq, change));
            self.queue.push(seq, (key, change));
        } else {
            publish_visible(inner, key, change);
        }
    }

    /// Hands the change feed (watch) the changes of the write just staged: published now
    /// when writes are visible at once, held until [`Writer::publish_durable`] otherwise.
    pub fn feed(&self, inner: &Inner, batch: Vec<crate::changes::Change>) {
        if self.hold_until_durable {
            inner.changes.stage(batch);
        } else {
            inner.changes.publish(batch);
        }
    }

    /// The newest change to `key` not yet visible to readers, if any.
    pub fn staged(&self, key: &[u8]) -> Option<Change> {
        self.staged.get(key).map(|(_, c)| *c)
    }

    /// Publishes every staged change whose record is durable (sequence number up to `upto`),
    /// in the order they were appended.
    pub fn publish_durable(&mut self, inner: &Inner, upto: u64) {
        if self.queue.is_empty() {
            return;
        }
        for (key, change) in self.queue.take_upto(upto) {
            publish_visible(inner, &key, change);
            if self.staged.get(&key).is_some_and(|(s, _)| *s <= upto) {
                self.staged.remove(&key);
            }
        }
        // Watchers hear of these writes once readers can see them.
        inner.changes.release_upto(crate::Version(upto));
    }

    /// Writes the buffer to the file.
    ///
    /// # Errors
    /// Write errors (the engine is poisoned, also on a full disk: the records may be awaited).
    pub fn flush(&mut self, inner: &Inner) -> Result<()> {
        self.write_buffer().inspect_err(|e| inner.poison(e))
    }

    /// Writes the buffer to the file; on a full disk keeps the buffer, returning
    /// [`Error::DiskFull`] without poisoning.
    ///
    /// # Errors
    /// [`Error::DiskFull`]; other write errors (poisoned).
    pub fn flush_before_append(&mut self, inner: &Inner) -> Result<()> {
        match self.write_buffer() {
            Ok(()) => {
                self.stalled = false;
                Ok(())
            }
            Err(e @ Error::DiskFull { .. }) if !inner.poison.is_set() => {
                self.stalled = true;
                Err(e)
            }
            Err(e) => {
                inner.poison(&e);
                Err(e)
            }
        }
    }

    fn write_buffer(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.log.write(&self.buf)?;
        self.buf.clear();
        self.active().written_to(self.log.flushed());
        Ok(())
    }

    /// Cuts the zero-filled preallocation off the end of the active file (before sealing
    /// or closing).
    ///
    /// # Errors
    /// I/O errors (the engine is poisoned).
    pub fn trim(&mut self, inner: &Inner) -> Result<()> {
        self.flush(inner)?;
        self.log.trim()
    }

    /// Copies a record that may still be in the buffer.
    pub fn read_buffered(&self, loc: Loc) -> Option<Bytes> {
        if loc.file != self.active_no {
            return None;
        }
        let start = (u64::from(loc.offset)).checked_sub(self.log.flushed())?;
        let start = usize::try_from(start).ok()?;
        let end = start.checked_add(loc.len as usize)?;
        self.buf.get(start..end).map(Bytes::copy_from_slice)
    }

    /// Seals the active file (flush, fdatasync unless `never`) and starts a new one.
    ///
    /// # Errors
    /// I/O errors (the engine is poisoned).
    pub fn rotate(&mut self, inner: &Inner) -> Result<()> {
        self.trim(inner)?;
        if inner.sync != SyncPolicy::Never {
            self.log.sync()?;
            let upto = self.last_seq();
            self.publish_durable(inner, upto);
            inner.commit.mark_durable(upto);
        }
        crate::crash_point("rotate:sealed");
        let sealed_no = self.active_no;
        let id = FileId {
            major: self.active().id.major + 1,
            minor: 0,
        };
        // A full disk here leaves the sealed file active (trimmed and synced): the write that
        // needed the rotation is refused cleanly and the next one tries again.
        let (file, path) = create_data_file(&inner.dir, id, self.next_seq).inspect_err(|e| {
            if !matches!(e, Error::DiskFull { .. }) {
                inner.poison(e);
            }
        })?;
        let capacity = inner.opts.max_file_size;
        let role = Role::Active { capacity };
        let data = Arc::new(DataFile::new(id, path, file, inner.opts.read_mode, role)?);
        let no = inner.register(data.clone());
        inner.active_no.store(no, Ordering::Release);
        self.active_no = no;
        self.log.replace(data, FILE_HEADER_LEN as u64);
        self.len = FILE_HEADER_LEN as u64;
        inner.sealed(sealed_no)?;
        Ok(())
    }
}

/// Applies one write's change to what readers see: the keydir and the live-byte counts. The
/// one place a bitcask write becomes visible.
pub fn publish_visible(inner: &Inner, key: &[u8], change: Change) {
    match change {
        Some(loc) => {
            let old = inner.keydir.insert(key, loc);
            inner.account(old, Some(loc));
        }
        None => {
            let old = inner.keydir.remove(key);
            inner.account(old, None);
        }
    }
}

/// Creates a new data file with its header, fsynced, and fsyncs the directory.
///
/// # Errors
/// I/O errors.
pub fn create_data_file(dir: &Path, id: FileId, base_seq: u64) -> Result<(File, PathBuf)> {
    let path = dir.join(id.data_name());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .ctx(|| format!("creating {}", path.display()))?;
    let header = FileHeader { id, base_seq }.encode(DATA_MAGIC);
    let written = fs::write_all_at(&file, &header, 0, &path)
        .and_then(|()| fs::sync_all(&file, &path))
        .ctx(|| format!("writing header of {}", path.display()))
        .and_then(|()| fs::sync_dir(dir));
    if let Err(e) = written {
        // Leave no half-made file behind to block the next attempt.
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, path))
}

impl Flusher for Inner {
    /// Flushes the buffer, fdatasyncs the active file, publishes what became durable.
    fn flush_and_sync(&self) -> Result<u64> {
        let (file, upto) = {
            let mut w = self.writer.lock();
            w.flush(self)?;
            (w.active().clone(), w.last_seq())
        };
        sync_file(file.file(), &file.path, &self.poison)?;
        self.writer.lock().publish_durable(self, upto);
        Ok(upto)
    }
}
