//! The append-only log (AOF): record format, the group-committing writer and the reader used
//! by recovery.
//!
//! Owns log files `log-<seq>.hha` (16 hex digits). It does not decide when logs are rotated or
//! deleted (the engine's checkpoint does) nor what the records mean to the table.
//!
//! # Format (version 2, little-endian; version 1 files are read too)
//! File header, 24 bytes: `magic "HHMEMLOG" | format_version u32 = 2 | seq u64 |
//! crc32c u32 over the 20 bytes before it`.
//! Then records, back to back:
//! `crc32c u32 | body_len u32 | body`, the CRC covering `body_len` and `body`.
//! `body = tag u8 (0xB7) | op_count u32 | op*` — one record per put, delete or whole batch,
//! so a batch is applied entirely or not at all after a crash.
//! `op = kind u8 | version u64 | [expires_at u64 if kind = 3] | key_len u16 | [value_len u32 if
//! put] | key | [value]`; kind (low 4 bits) 1 = put without expiry, 3 = put with expiry,
//! 2 = delete. Version 2 adds the value codec in the high 4 bits of a put's kind (0 = raw,
//! 1 = LZ4, see [`crate::compression`]); `value_len` is then the stored length. Version 1
//! files (written before compression) only hold raw values. A packed value that passes the
//! CRC but does not unpack is [`Error::Corrupted`], never a torn tail.
//!
//! # Durability
//! Appends go to an in-memory buffer under a mutex (cheap, keeps the log in apply order),
//! with what each record changes in the table beside it. The buffer is written to the file
//! through the durability core's [`AppendFile`]. With `SyncPolicy::Always` the engine's
//! [`crate::durability::GroupCommit`] makes records durable (byte LSNs): its leader calls
//! [`LogWriter::flush`] with an fdatasync, then publishes the changes of the records it
//! covered ([`LogWriter::take_durable`]). Otherwise a background thread writes the buffer every
//! flush interval and, for `Every(d)`, fsyncs every `d`. A failed write or fsync poisons the
//! engine: every later write fails with [`Error::Poisoned`].
//!
//! # A full disk
//! Before a write draws its version or touches the table it reserves disk space for its record
//! ([`LogWriter::reserve`]): the log file is zero-filled ahead (4 MiB at a time, fdatasynced)
//! and a write that would pass the filled part waits for the next chunk. A full disk met there
//! refuses the write with [`Error::DiskFull`] before anything of it is applied, without
//! poisoning, so the engine takes writes again once space is back, with no restart. Writing
//! the buffer later only overwrites zeros it owns. Readers take zeros after the last record as
//! the end of the data; the zeros are cut off when a log is switched or closed.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::codec::{Reader, crc_of};
use crate::SyncPolicy;
use crate::compression::{self, Codec, Compression};
use crate::durability::append::{PlainFile, Prealloc};
use crate::durability::{AppendFile, PendingQueue, Poison};
use crate::error::{Error, IoContext, Result};
use crate::fs::{self, sync_dir};

pub(crate) const LOG_MAGIC: &[u8; 8] = b"HHMEMLOG";
pub(crate) const LOG_VERSION: u32 = 2;
pub(crate) const LOG_HEADER_LEN: usize = 24;
const RECORD_TAG: u8 = 0xB7;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_PUT_TTL: u8 = 3;
/// Zero-fill the log this much ahead of its data (see "A full disk" above).
const PREALLOC_CHUNK: u64 = 4 << 20;
/// Largest record body (the length field is a `u32`).
pub(crate) const MAX_RECORD: usize = u32::MAX as usize;

/// File name of log `seq`.
pub(crate) fn log_name(seq: u64) -> String {
    format!("log-{seq:016x}.hha")
}

/// Parses a log file name back to its sequence number.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("log-")?.strip_suffix(".hha")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// One logged operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogOp<'a> {
    /// A put.
    Put {
        version: u64,
        expires_at: Option<u64>,
        key: &'a [u8],
        /// The value as stored under `codec` (writers hand raw values; the log packs them).
        value: &'a [u8],
        codec: Codec,
    },
    /// A delete.
    Delete { version: u64, key: &'a [u8] },
}

impl LogOp<'_> {
    pub(crate) fn version(&self) -> u64 {
        match self {
            LogOp::Put { version, .. } | LogOp::Delete { version, .. } => *version,
        }
    }

    /// Bytes this op takes in a record body.
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            LogOp::Put {
                expires_at,
                key,
                value,
                ..
            } => 1 + 8 + if expires_at.is_some() { 8 } else { 0 } + 2 + 4 + key.len() + value.len(),
            LogOp::Delete { key, .. } => 1 + 8 + 2 + key.len(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>, comp: &Compression) {
        match *self {
            LogOp::Put {
                version,
                expires_at,
                key,
                value,
                codec,
            } => {
                let packed = match codec {
                    Codec::Raw => comp.pack(value),
                    _ => None,
                };
                let (codec, value) = match &packed {
                    Some((c, p)) => (*c, &p[..]),
                    None => (codec, value),
                };
                let kind = if expires_at.is_some() {
                    OP_PUT_TTL
                } else {
                    OP_PUT
                };
                out.push(kind | codec.to_bits() << 4);
                out.extend_from_slice(&version.to_le_bytes());
                if let Some(t) = expires_at {
                    out.extend_from_slice(&t.to_le_bytes());
                }
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(value);
            }
            LogOp::Delete { version, key } => {
                out.push(OP_DELETE);
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(key);
            }
        }
    }
}

/// Bytes of the framed record holding `ops`.
pub(crate) fn record_len(ops: &[LogOp<'_>]) -> usize {
    8 + 1 + 4 + ops.iter().map(LogOp::encoded_len).sum::<usize>()
}

/// Appends one framed record holding `ops` to `out`. Callers keep the body under
/// [`MAX_RECORD`] (key and value lengths are checked by the engine beforehand).
pub(crate) fn encode_record(out: &mut Vec<u8>, ops: &[LogOp<'_>], comp: &Compression) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.push(RECORD_TAG);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        op.encode(out, comp);
    }
    let body_len = (out.len() - start - 8) as u32;
    let len_bytes = body_len.to_le_bytes();
    let crc = crc_of(&[&len_bytes, &out[start + 8..]]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&len_bytes);
}

/// Parses the record at the start of `buf`: its ops and its framed length, or why it is bad.
pub(crate) fn decode_record(buf: &[u8]) -> Result<(Vec<LogOp<'_>>, usize), String> {
    let mut r = Reader::new(buf);
    let (Some(crc), Some(len)) = (r.u32(), r.u32()) else {
        return Err("truncated record header".into());
    };
    let Some(body) = r.bytes(len as usize) else {
        return Err(format!(
            "record of {len} bytes runs past the end of the file"
        ));
    };
    if crc_of(&[&len.to_le_bytes(), body]) != crc {
        return Err("record checksum mismatch".into());
    }
    let ops = decode_body(body).ok_or_else(|| "malformed record body".to_string())?;
    Ok((ops, 8 + len as usize))
}

fn decode_body(body: &[u8]) -> Option<Vec<LogOp<'_>>> {
    let mut r = Reader::new(body);
    if r.u8()? != RECORD_TAG {
        return None;
    }
    let count = r.u32()? as usize;
    // Each op takes at least 11 bytes: bound the allocation by the body's size.
    let mut ops = Vec::with_capacity(count.min(r.remaining() / 11));
    for _ in 0..count {
        let byte = r.u8()?;
        let (kind, codec) = (byte & 0x0f, Codec::from_bits(byte >> 4)?);
        if codec != Codec::Raw && kind == OP_DELETE {
            return None;
        }
        let version = r.u64()?;
        let op = match kind {
            OP_PUT | OP_PUT_TTL => {
                let expires_at = if kind == OP_PUT_TTL {
                    Some(r.u64()?)
                } else {
                    None
                };
                let klen = r.u16()? as usize;
                let vlen = r.u32()? as usize;
                let key = r.bytes(klen)?;
                let value = r.bytes(vlen)?;
                LogOp::Put {
                    version,
                    expires_at,
                    key,
                    value,
                    codec,
                }
            }
            OP_DELETE => {
                let klen = r.u16()? as usize;
                LogOp::Delete {
                    version,
                    key: r.bytes(klen)?,
                }
            }
            _ => return None,
        };
        if op_key(&op).is_empty() {
            return None;
        }
        ops.push(op);
    }
    (r.remaining() == 0).then_some(ops)
}

fn op_key<'a>(op: &LogOp<'a>) -> &'a [u8] {
    match op {
        LogOp::Put { key, .. } | LogOp::Delete { key, .. } => key,
    }
}

fn header(seq: u64) -> [u8; LOG_HEADER_LEN] {
    let mut h = [0u8; LOG_HEADER_LEN];
    h[..8].copy_from_slice(LOG_MAGIC);
    h[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Creates log `seq` in `dir` holding only its header, fsynced, directory fsynced.
pub(crate) fn create_log(dir: &Path, seq: u64) -> Result<File> {
    let path = dir.join(log_name(seq));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .ctx(|| format!("creating {}", path.display()))?;
    fs::write_all(&mut f, &header(seq), &path)
        .and_then(|()| fs::sync_all(&f, &path))
        .ctx(|| format!("writing header of {}", path.display()))?;
    sync_dir(dir)?;
    Ok(f)
}

/// What reading a log found.
#[derive(Debug, Default)]
pub(crate) struct LogScan {
    /// Records applied.
    pub(crate) records: u64,
    /// Highest version seen.
    pub(crate) max_version: u64,
    /// When the tail was torn: the offset it was cut at and why.
    pub(crate) torn_at: Option<(u64, String)>,
}

/// Reads log `path` (expected to be log `seq`), calling `apply` for each op of each valid record
/// in order. A bad record in the last log (`is_last`) with no valid record after it is a torn
/// tail: the file is truncated there. Any other bad record is [`Error::Corrupted`].
pub(crate) fn read_log(
    path: &Path,
    seq: u64,
    is_last: bool,
    apply: impl FnMut(&LogOp<'_>),
) -> Result<LogScan> {
    read_log_with(path, seq, is_last, true, apply)
}

/// As [`read_log`]; with `cut` false a torn tail is reported but left in the file (a
/// read-only open).
pub(crate) fn read_log_with(
    path: &Path,
    seq: u64,
    is_last: bool,
    cut: bool,
    mut apply: impl FnMut(&LogOp<'_>),
) -> Result<LogScan> {
    let buf = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    let mut scan = LogScan::default();
    if buf.len() < LOG_HEADER_LEN && LOG_MAGIC.starts_with(&buf[..buf.len().min(8)]) {
        // A crash while creating the file: it never held a record. (Not only in the last log:
        // after the restart that follows, a newer log exists, and an empty file must not
        // block the restart after that.)
        scan.torn_at = Some((0, "log header incomplete".into()));
        if cut {
            truncate(path, 0)?;
        }
        return Ok(scan);
    }
    check_header(path, &buf, seq)?;
    let mut pos = LOG_HEADER_LEN;
    while pos < buf.len() {
        match decode_record(&buf[pos..]) {
            Ok((ops, len)) => {
                for op in &ops {
                    scan.max_version = scan.max_version.max(op.version());
                    match *op {
                        LogOp::Put {
                            version,
                            expires_at,
                            key,
                            value,
                            codec,
                        } if codec != Codec::Raw => {
                            // The CRC passed: a value that does not unpack is corruption.
                            let raw = compression::unpack(codec, value, u32::MAX as usize)
                                .map_err(|reason| Error::corrupted(path, pos as u64, reason))?;
                            apply(&LogOp::Put {
                                version,
                                expires_at,
                                key,
                                value: &raw,
                                codec: Codec::Raw,
                            });
                        }
                        _ => apply(op),
                    }
                }
                scan.records += 1;
                pos += len;
            }
            Err(_) if buf[pos..].iter().all(|&b| b == 0) => {
                // Zero-filled preallocation past the last record (a crash before the log
                // was trimmed): the end of the data, not damage.
                if cut {
                    truncate(path, pos as u64)?;
                }
                break;
            }
            Err(reason) => {
                if !is_last {
                    return Err(Error::corrupted(path, pos as u64, reason));
                }
                if let Some(next) = (pos + 1..buf.len()).find(|&y| decode_record(&buf[y..]).is_ok())
                {
                    return Err(Error::corrupted(
                        path,
                        pos as u64,
                        format!("{reason}; valid records follow at offset {next}"),
                    ));
                }
                if cut {
                    truncate(path, pos as u64)?;
                }
                scan.torn_at = Some((pos as u64, reason));
                break;
            }
        }
    }
    Ok(scan)
}

fn check_header(path: &Path, buf: &[u8], seq: u64) -> Result<()> {
    let mut r = Reader::new(buf);
    let bad = |reason: &str| Error::corrupted(path, 0, reason);
    if r.bytes(8) != Some(&LOG_MAGIC[..]) {
        return Err(bad("not a hoardhaven memory-engine log (bad magic)"));
    }
    let version = r.u32().ok_or_else(|| bad("truncated header"))?;
    if !(1..=LOG_VERSION).contains(&version) {
        return Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
            found: version,
            supported: LOG_VERSION,
        });
    }
    let file_seq = r.u64().ok_or_else(|| bad("truncated header"))?;
    let crc = r.u32().ok_or_else(|| bad("truncated header"))?;
    if buf.get(..20).map(crc32c::crc32c) != Some(crc) {
        return Err(bad("header checksum mismatch"));
    }
    if file_seq != seq {
        return Err(bad("header names another log sequence number"));
    }
    Ok(())
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            fs::set_len(&f, len, path)?;
            fs::sync_all(&f, path)
        })
        .ctx(|| format!("truncating torn tail of {}", path.display()))
}

struct Pending<T> {
    buf: Vec<u8>,
    /// Log sequence number: bytes appended since open, across files.
    appended: u64,
    /// What each record changes, published once it is durable (sync `always`).
    staged: PendingQueue<T>,
    /// The LSN at which the current file's records begin.
    file_start: u64,
    /// Bytes reserved by writes not yet appended ([`LogWriter::reserve`]).
    reserved: u64,
}

struct Io {
    log: AppendFile<PlainFile>,
    spare: Vec<u8>,
}

/// The log writer. Thread-safe. `T` is what a record changes in the table, kept until the
/// record is durable (see [`crate::durability::pending`]).
pub(crate) struct LogWriter<T> {
    policy: SyncPolicy,
    compression: Compression,
    pending: Mutex<Pending<T>>,
    io: Mutex<Io>,
    /// Physical length of the current file (data and zero-filled space), as last allocated.
    allocated: AtomicU64,
    poison: Arc<Poison>,
}

impl<T> LogWriter<T> {
    /// A writer appending to `file` at `path` (a new log holding only its header); failures
    /// poison `poison`.
    pub(crate) fn new(
        file: File,
        path: PathBuf,
        policy: SyncPolicy,
        compression: Compression,
        poison: Arc<Poison>,
    ) -> Self {
        LogWriter {
            policy,
            compression,
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(64 * 1024),
                appended: 0,
                staged: PendingQueue::new(),
                file_start: 0,
                reserved: 0,
            }),
            io: Mutex::new(Io {
                log: AppendFile::new(
                    PlainFile { file, path },
                    LOG_HEADER_LEN as u64,
                    Some(Prealloc {
                        chunk: PREALLOC_CHUNK,
                        max: u64::MAX,
                    }),
                    poison.clone(),
                ),
                spare: Vec::with_capacity(64 * 1024),
            }),
            allocated: AtomicU64::new(LOG_HEADER_LEN as u64),
            poison,
        }
    }

    /// `Err(Poisoned)` once a write or fsync has failed.
    pub(crate) fn check(&self) -> Result<()> {
        self.poison.check()
    }

    /// Reserves disk space for a record of `ops` before anything of the write is applied
    /// (call it with the cut lock held shared, so that no log switch comes between it and
    /// [`LogWriter::append`]); returns the bytes reserved, to hand to `append`.
    ///
    /// # Errors
    /// [`Error::DiskFull`] when the space cannot be allocated: nothing is reserved and the
    /// engine is not poisoned. Other I/O errors poison.
    pub(crate) fn reserve(&self, ops: &[LogOp<'_>]) -> Result<u64> {
        let len = record_len(ops) as u64;
        loop {
            let need = {
                let mut p = self.pending.lock();
                let need = LOG_HEADER_LEN as u64 + (p.appended - p.file_start) + p.reserved + len;
                if need <= self.allocated.load(Ordering::Acquire) {
                    p.reserved += len;
                    return Ok(len);
                }
                need
            };
            let mut io = self.io.lock();
            io.log.preallocate(need)?;
            let allocated = io.log.allocated();
            self.allocated.store(allocated, Ordering::Release);
            if allocated < need {
                // Cannot happen with preallocation on; never spin if it does.
                return Err(Error::Poisoned("log preallocation did not grow".into()));
            }
        }
    }

    /// Buffers one record of `ops`, with `staged` (what it changes, published once the
    /// record is durable), releasing `reserved` bytes taken by [`LogWriter::reserve`];
    /// returns its end LSN and the buffered byte count.
    pub(crate) fn append(
        &self,
        ops: &[LogOp<'_>],
        staged: Option<T>,
        reserved: u64,
    ) -> (u64, usize) {
        // Values are packed before the lock: compressing is the slow part of a large put.
        let packed = (self.compression.algorithm != compression::Algorithm::None).then(|| {
            let mut rec = Vec::new();
            encode_record(&mut rec, ops, &self.compression);
            rec
        });
        let mut p = self.pending.lock();
        p.reserved = p.reserved.saturating_sub(reserved);
        let before = p.buf.len();
        match &packed {
            Some(rec) => p.buf.extend_from_slice(rec),
            None => encode_record(&mut p.buf, ops, &self.compression),
        }
        p.appended += (p.buf.len() - before) as u64;
        let lsn = p.appended;
        if let Some(t) = staged {
            p.staged.push(lsn, t);
        }
        (lsn, p.buf.len())
    }

    /// Bytes appended since open.
    pub(crate) fn appended(&self) -> u64 {
        self.pending.lock().appended
    }

    /// Takes what the records up to `upto` change, in log order.
    pub(crate) fn take_durable(&self, upto: u64) -> Vec<T> {
        self.pending.lock().staged.take_upto(upto)
    }

    /// After `append`, with the table locks released: writes the buffer out when it is
    /// large and the policy does not wait for fsync (`always` waits on group commit instead).
    pub(crate) fn after_append(&self, buffered: usize) -> Result<()> {
        if self.policy != SyncPolicy::Always && buffered >= 1 << 20 {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Writes everything buffered to the file, fdatasyncs if `sync`; returns the LSN written.
    pub(crate) fn flush(&self, sync: bool) -> Result<u64> {
        self.check()?;
        let mut io = self.io.lock();
        let io = &mut *io;
        let end = {
            let mut p = self.pending.lock();
            std::mem::swap(&mut p.buf, &mut io.spare);
            p.appended
        };
        // A failed write poisons, a full disk too: the records may be awaited.
        let r = io
            .log
            .write(&io.spare)
            .inspect_err(|e| self.poison.poison(e));
        io.spare.clear();
        self.allocated.store(io.log.allocated(), Ordering::Release);
        r?;
        if sync {
            io.log.sync()?;
        }
        Ok(end)
    }

    /// Cuts the zero-filled space off the end of the current file (at close, after the last
    /// flush).
    ///
    /// # Errors
    /// I/O errors (poisoned).
    pub(crate) fn trim(&self) -> Result<()> {
        let mut io = self.io.lock();
        io.log.trim()?;
        self.allocated.store(io.log.allocated(), Ordering::Release);
        Ok(())
    }

    /// Switches appends to `file` (a new log at `path`); the caller excludes appenders while
    /// this runs, which only swaps buffers and handles. The old file's buffered records are
    /// written (and fsynced unless the policy is `Never`) by [`Rotation::finish`], called after
    /// the caller lets writers go on: until then the I/O lock stays held, so no record of the
    /// new log can become durable before the old log's tail.
    pub(crate) fn begin_rotate(&self, file: File, path: PathBuf) -> Rotation<'_, T> {
        let mut io = self.io.lock();
        let mut tail = Vec::new();
        {
            let mut p = self.pending.lock();
            std::mem::swap(&mut p.buf, &mut tail);
            p.file_start = p.appended;
            p.reserved = 0;
        }
        let old_len = io.log.flushed();
        let old_allocated = io.log.allocated();
        self.allocated
            .store(LOG_HEADER_LEN as u64, Ordering::Release);
        let old = io
            .log
            .replace(PlainFile { file, path }, LOG_HEADER_LEN as u64);
        Rotation {
            writer: self,
            _io: io,
            old: AppendFile::new(old, old_len, None, self.poison.clone())
                .with_allocated(old_allocated),
            tail,
        }
    }
}

/// A log switch in progress: the old log's tail still to be written. See
/// [`LogWriter::begin_rotate`].
pub(crate) struct Rotation<'a, T> {
    writer: &'a LogWriter<T>,
    _io: parking_lot::MutexGuard<'a, Io>,
    old: AppendFile<PlainFile>,
    tail: Vec<u8>,
}

impl<T> Rotation<'_, T> {
    /// Writes and syncs the old log's tail; poisons the log on failure.
    pub(crate) fn finish(mut self) -> Result<()> {
        let w = self.writer;
        self.old
            .write(&self.tail)
            .inspect_err(|e| w.poison.poison(e))?;
        // The old log ends at its data: cut the zero-filled space off.
        self.old.trim()?;
        if w.policy != SyncPolicy::Never {
            self.old.sync()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            &[LogOp::Put {
                version: 1,
                expires_at: None,
                key: b"a",
                value: b"1",
                codec: Codec::Raw,
            }],
            &Compression::default(),
        );
        encode_record(
            &mut out,
            &[
                LogOp::Put {
                    version: 2,
                    expires_at: Some(99),
                    key: b"b",
                    value: b"",
                    codec: Codec::Raw,
                },
                LogOp::Delete {
                    version: 3,
                    key: b"a",
                },
            ],
            &Compression::default(),
        );
        out
    }

    #[test]
    fn compressed_puts_round_trip_and_a_bad_packed_value_is_corruption() {
        let dir = tempfile::tempdir().expect("tmp");
        let big = b"{\"name\":\"a json value that repeats\"},".repeat(100);
        let lz4 = Compression {
            algorithm: compression::Algorithm::Lz4,
            min_bytes: 1024,
        };
        let op = |value: &'static [u8]| LogOp::Put {
            version: 5,
            expires_at: None,
            key: b"k",
            value,
            codec: Codec::Raw,
        };
        let big: &'static [u8] = Box::leak(big.into_boxed_slice());
        let mut body = Vec::new();
        encode_record(&mut body, &[op(big), op(b"small")], &lz4);
        assert!(body.len() < big.len() / 2, "packed: {} bytes", body.len());
        let (ops, _) = decode_record(&body).expect("decodes");
        // Flag set on the large value only; the small one is stored as it is.
        assert!(matches!(
            ops[0],
            LogOp::Put {
                codec: Codec::Lz4,
                ..
            }
        ));
        assert!(matches!(
            ops[1],
            LogOp::Put {
                codec: Codec::Raw,
                value: b"small",
                ..
            }
        ));
        // Reading unpacks: the bytes applied are the bytes written.
        let path = write_log(dir.path(), 2, &body);
        let mut seen = Vec::new();
        read_log(&path, 2, true, |op| {
            if let LogOp::Put { value, codec, .. } = op {
                assert_eq!(*codec, Codec::Raw);
                seen.push(value.to_vec());
            }
        })
        .expect("reads");
        assert_eq!(seen, vec![big.to_vec(), b"small".to_vec()]);
        // A packed value that passes the CRC but does not unpack: corruption, in any log.
        let (_, packed) = lz4.pack(big).expect("packs");
        let mut bad = packed.clone();
        bad[..4].copy_from_slice(&(big.len() as u32 + 7).to_le_bytes());
        let mut body = Vec::new();
        encode_record(
            &mut body,
            &[LogOp::Put {
                version: 1,
                expires_at: None,
                key: b"k",
                value: &bad,
                codec: Codec::Lz4,
            }],
            &Compression::default(),
        );
        let path = write_log(dir.path(), 3, &body);
        assert!(matches!(
            read_log(&path, 3, true, |_| {}),
            Err(Error::Corrupted { .. })
        ));
        // A file written with compression off reads the same with it on, and vice versa:
        // reading never depends on the setting (version 1 files included).
        let mut v1 = header(4);
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&v1[..20]);
        v1[20..24].copy_from_slice(&crc.to_le_bytes());
        let mut bytes = v1.to_vec();
        encode_record(&mut bytes, &[op(big)], &Compression::default());
        let path = dir.path().join(log_name(4));
        std::fs::write(&path, bytes).expect("write");
        let mut n = 0;
        read_log(&path, 4, true, |op| {
            assert!(matches!(op, LogOp::Put { value, .. } if *value == big));
            n += 1;
        })
        .expect("a version 1 log reads");
        assert_eq!(n, 1);
    }

    #[test]
    fn record_roundtrip() {
        let buf = sample();
        let (ops, n) = decode_record(&buf).expect("first");
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].encoded_len() + 8 + 5, n);
        let (ops, m) = decode_record(&buf[n..]).expect("second");
        assert_eq!(n + m, buf.len());
        assert_eq!(
            ops,
            vec![
                LogOp::Put {
                    version: 2,
                    expires_at: Some(99),
                    key: b"b",
                    value: b"",
                    codec: Codec::Raw,
                },
                LogOp::Delete {
                    version: 3,
                    key: b"a"
                }
            ]
        );
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected_without_panic() {
        let buf = sample();
        let (_, first) = decode_record(&buf).expect("first");
        for cut in 0..first {
            assert!(decode_record(&buf[..cut]).is_err(), "cut {cut}");
        }
        for i in 0..first {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(decode_record(&b[..first]).is_err(), "flip {i}:{bit}");
            }
        }
        assert!(decode_record(&[0xFF; 64]).is_err());
        assert!(decode_record(&[0; 64]).is_err());
    }

    fn write_log(dir: &Path, seq: u64, body: &[u8]) -> PathBuf {
        let path = dir.join(log_name(seq));
        let mut bytes = header(seq).to_vec();
        bytes.extend_from_slice(body);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn zero_filled_space_after_the_records_is_the_end_not_damage() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut body = sample();
        let records = body.len();
        body.resize(records + 64 * 1024, 0);
        // A log switched in a crash before its zeros were cut: not last, yet not corrupt.
        for is_last in [false, true] {
            let path = write_log(dir.path(), 3, &body);
            let mut n = 0;
            let scan = read_log(&path, 3, is_last, |_| n += 1).expect("zeros end the data");
            assert_eq!(scan.torn_at, None, "zeros are not a torn tail");
            assert!(n > 0);
            let len = std::fs::metadata(&path).expect("meta").len();
            assert_eq!(len, (LOG_HEADER_LEN + records) as u64, "zeros cut off");
        }
    }

    #[test]
    fn a_reservation_preallocates_and_a_full_disk_refuses_it_unpoisoned() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = create_log(dir.path(), 1).expect("create");
        let path = dir.path().join(log_name(1));
        let poison = Arc::new(Poison::new());
        let w: LogWriter<()> = LogWriter::new(
            file,
            path.clone(),
            SyncPolicy::Always,
            Compression::default(),
            poison.clone(),
        );
        let op = [LogOp::Put {
            version: 1,
            expires_at: None,
            key: b"k",
            value: b"v",
            codec: Codec::Raw,
        }];
        let r = w.reserve(&op).expect("reserve");
        assert_eq!(r, record_len(&op) as u64);
        let allocated = std::fs::metadata(&path).expect("meta").len();
        assert!(
            allocated >= PREALLOC_CHUNK,
            "zero-filled ahead: {allocated}"
        );
        w.append(&op, None, r);
        w.flush(true).expect("flush");
        w.trim().expect("trim");
        let len = std::fs::metadata(&path).expect("meta").len();
        assert_eq!(len, (LOG_HEADER_LEN + record_len(&op)) as u64);
        let mut plan = crate::fault::Plan::new(dir.path(), &[crate::fault::Op::Write], 1);
        plan.fault = crate::fault::Fault::Short(28);
        plan.sticky = true;
        let armed = crate::fault::arm(plan);
        assert!(matches!(w.reserve(&op), Err(Error::DiskFull { .. })));
        assert!(!poison.is_set(), "a full disk does not poison");
        armed.heal();
        drop(armed);
        let r = w.reserve(&op).expect("space is back");
        w.append(&op, None, r);
        w.flush(true).expect("flush");
    }

    #[test]
    fn torn_tail_is_truncated_in_last_log_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let buf = sample();
        let (_, first) = decode_record(&buf).expect("first");
        for cut in first + 1..buf.len() {
            let path = write_log(dir.path(), 7, &buf[..cut]);
            let mut n = 0;
            let scan = read_log(&path, 7, true, |_| n += 1).expect("torn tail tolerated");
            assert_eq!((n, scan.records), (1, 1));
            assert_eq!(
                scan.torn_at.as_ref().map(|t| t.0),
                Some((LOG_HEADER_LEN + first) as u64)
            );
            let len = std::fs::metadata(&path).expect("meta").len();
            assert_eq!(len, (LOG_HEADER_LEN + first) as u64);
            match read_log(&write_log(dir.path(), 7, &buf[..cut]), 7, false, |_| {}) {
                Err(Error::Corrupted { offset, .. }) => {
                    assert_eq!(offset, (LOG_HEADER_LEN + first) as u64)
                }
                other => panic!("expected Corrupted, got {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_before_valid_records_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        let buf = sample();
        let mut bad = buf.clone();
        bad[3] ^= 0x10; // first record's CRC
        let path = write_log(dir.path(), 1, &bad);
        match read_log(&path, 1, true, |_| {}) {
            Err(Error::Corrupted { file, offset, .. }) => {
                assert_eq!(file, path);
                assert_eq!(offset, LOG_HEADER_LEN as u64);
            }
            other => panic!("expected Corrupted, got {other:?}"),
        }
    }

    #[test]
    fn unknown_version_and_bad_magic() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write_log(dir.path(), 1, &[]);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[8] = 9;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            read_log(&path, 1, true, |_| {}),
            Err(Error::UnsupportedFormat { found: 9, .. })
        ));
        bytes[0] = b'X';
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            read_log(&path, 1, true, |_| {}),
            Err(Error::Corrupted { .. })
        ));
    }

    #[test]
    fn group_commit_writer_appends_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = create_log(dir.path(), 1).expect("create");
        let path = dir.path().join(log_name(1));
        let w = std::sync::Arc::new(LogWriter::<()>::new(
            f,
            path.clone(),
            SyncPolicy::Always,
            Compression::default(),
            Arc::new(Poison::new()),
        ));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let key = format!("{t}-{i}");
                        let (lsn, _) = w.append(
                            &[LogOp::Put {
                                version: t * 100 + i,
                                expires_at: None,
                                key: key.as_bytes(),
                                value: b"v",
                                codec: Codec::Raw,
                            }],
                            None,
                            0,
                        );
                        assert!(w.flush(true).expect("flush") >= lsn);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        let mut n = 0;
        let scan = read_log(&path, 1, true, |_| n += 1).expect("read");
        assert_eq!((n, scan.records, scan.torn_at), (200, 200, None));
    }
}
