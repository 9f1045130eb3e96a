//! Sequential scanning of a data file, record by record, with batches expanded.
//!
//! Used by recovery (to rebuild the keydir), by hint writing and by merge. The scanner
//! decides what a bad record means: in the last file a torn or garbage tail is reported as
//! the length to truncate to; anywhere else, or when a valid record follows the bad bytes
//! (damage in the middle, not a torn tail), it is a [`Error::Corrupted`] naming file and offset.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::data_file::{DATA_MAGIC, FILE_HEADER_LEN, FileHeader};
use super::record::{self, HEADER_LEN, Header, Kind};
use crate::error::{Error, IoContext, Result};
use crate::fault;

/// One record met by the scanner (a batch's nested records are met one by one).
#[derive(Debug)]
pub struct Item<'a> {
    /// Absolute offset of the record in the file.
    pub offset: u64,
    /// Its header.
    pub header: Header,
    /// Its key.
    pub key: &'a [u8],
    /// The whole record: header, key and value.
    pub raw: &'a [u8],
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// The file's header.
    pub header: FileHeader,
    /// Length of the valid prefix of the file.
    pub valid_len: u64,
    /// Bytes after `valid_len` (a torn tail to cut), 0 when the file ended cleanly.
    pub torn_bytes: u64,
    /// Why the tail was rejected, when it was.
    pub torn_reason: Option<(u64, &'static str)>,
    /// True when the cut tail is all zero bytes (unused preallocation).
    pub zero_tail: bool,
    /// Highest sequence number seen.
    pub max_seq: u64,
}

/// Scans `path`, calling `f` for every valid put or tombstone record in file order.
/// `tail_may_be_torn` is true for the last appended file, the only one a crash can tear.
///
/// # Errors
/// [`Error::Corrupted`] / [`Error::UnsupportedFormat`] for bad bytes that are not a torn
/// tail; I/O errors; errors returned by `f`.
pub fn scan(
    path: &Path,
    tail_may_be_torn: bool,
    mut f: impl FnMut(Item<'_>) -> Result<()>,
) -> Result<ScanEnd> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let file_len = file
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 20, fault::Reader::new(&file, path));
    let mut head = [0u8; FILE_HEADER_LEN];
    reader
        .read_exact(&mut head)
        .ctx(|| format!("reading header of {}", path.display()))?;
    let header = FileHeader::decode(&head, DATA_MAGIC, path)?;
    let mut pos = FILE_HEADER_LEN as u64;
    let mut max_seq = 0u64;
    let mut buf = Vec::new();
    let ctx = TailCtx {
        file: &file,
        path,
        header,
        tail_may_be_torn,
        file_len,
    };
    while pos < file_len {
        let left = file_len - pos;
        if left < HEADER_LEN as u64 {
            return ctx.bad(
                pos,
                max_seq,
                "truncated header",
                format!("{left} bytes left, less than a header"),
            );
        }
        buf.resize(HEADER_LEN, 0);
        reader
            .read_exact(&mut buf[..HEADER_LEN])
            .ctx(|| format!("reading {}", path.display()))?;
        let h = match Header::decode(&buf) {
            Ok(h) => h,
            Err(e) => return ctx.bad(pos, max_seq, "bad header", e),
        };
        if h.record_len() > left {
            return ctx.bad(
                pos,
                max_seq,
                "record runs past the end",
                format!("record of {} bytes, {left} left", h.record_len()),
            );
        }
        let rest = usize::try_from(h.record_len()).unwrap_or(usize::MAX) - HEADER_LEN;
        buf.resize(HEADER_LEN + rest, 0);
        reader
            .read_exact(&mut buf[HEADER_LEN..])
            .ctx(|| format!("reading {}", path.display()))?;
        let rec = match record::decode(&buf) {
            Ok(r) => r,
            Err(e) => return ctx.bad(pos, max_seq, "checksum mismatch", e),
        };
        max_seq = max_seq.max(h.seq);
        if rec.header.kind == Kind::Batch {
            // Checked whole by the envelope CRC; the nested records are checked again here.
            for item in record::nested(rec.value) {
                let (at, inner) = item.map_err(|e| Error::corrupted(path, pos, e))?;
                max_seq = max_seq.max(inner.header.seq);
                let offset = pos + HEADER_LEN as u64 + at as u64;
                let len = inner.header.record_len() as usize;
                let start = HEADER_LEN + at;
                f(Item {
                    offset,
                    header: inner.header,
                    key: inner.key,
                    raw: &buf[start..start + len],
                })?;
            }
        } else {
            f(Item {
                offset: pos,
                header: rec.header,
                key: rec.key,
                raw: &buf,
            })?;
        }
        pos += h.record_len();
    }
    Ok(ScanEnd {
        header,
        valid_len: pos,
        torn_bytes: 0,
        torn_reason: None,
        zero_tail: false,
        max_seq,
    })
}

struct TailCtx<'a> {
    file: &'a File,
    path: &'a Path,
    header: FileHeader,
    tail_may_be_torn: bool,
    file_len: u64,
}

impl TailCtx<'_> {
    /// Decides what bad bytes at `pos` mean: a torn tail to cut, or corruption.
    fn bad(&self, pos: u64, max_seq: u64, reason: &'static str, detail: String) -> Result<ScanEnd> {
        let (valid_after, zero_tail) = if self.tail_may_be_torn {
            inspect_tail(self.file, self.path, pos, self.file_len)?
        } else {
            (true, false)
        };
        if !valid_after {
            Ok(ScanEnd {
                header: self.header,
                valid_len: pos,
                torn_bytes: self.file_len - pos,
                torn_reason: Some((pos, reason)),
                zero_tail,
                max_seq,
            })
        } else {
            Err(Error::corrupted(
                self.path,
                pos,
                format!("{reason}: {detail}"),
            ))
        }
    }
}

/// Where to start looking for valid records after the bad one at the start of `tail`.
///
/// A batch envelope torn by a crash has an intact header and nested records that are each
/// valid on their own up to the tear; they are the torn record itself, not records after the
/// damage. (Counting them made a crash in the middle of writing a batch refuse start-up as
/// "damage in the middle".) So when `tail` starts with a batch header whose nested records,
/// walked from its start, stop before the envelope's declared end, the search starts where the
/// walk stopped; anything valid after that is still damage in the middle.
fn torn_batch_end(tail: &[u8]) -> usize {
    let Ok(h) = Header::decode(tail) else {
        return 1;
    };
    if h.kind != Kind::Batch || h.key_len != 0 {
        return 1;
    }
    let mut at = HEADER_LEN;
    while let Some(rest) = tail.get(at..) {
        match record::decode(rest) {
            Ok(r) if r.header.kind != Kind::Batch && r.header.seq >= h.seq => {
                at += r.header.record_len() as usize;
            }
            _ => break,
        }
    }
    if (at as u64) < h.record_len() { at } else { 1 }
}

/// Looks at the bytes from the bad record at `pos` to the end: is there a record with a valid
/// checksum after `pos` (then the bad bytes are damage in the middle, not a torn tail), and
/// is the whole tail zeros (unused preallocation)?
fn inspect_tail(file: &File, path: &Path, pos: u64, file_len: u64) -> Result<(bool, bool)> {
    let len = usize::try_from(file_len - pos).unwrap_or(usize::MAX);
    let mut tail = vec![0u8; len];
    fault::read_exact_at(file, &mut tail, pos, path)
        .ctx(|| "reading the tail of a data file".to_string())?;
    if tail.iter().all(|b| *b == 0) {
        return Ok((false, true));
    }
    for i in torn_batch_end(&tail)..tail.len().saturating_sub(HEADER_LEN - 1) {
        // Cheap filters first: format byte and kind byte must be plausible.
        if tail[i + 4] != record::RECORD_FORMAT || !(1..=3).contains(&tail[i + 5]) {
            continue;
        }
        if record::decode(&tail[i..]).is_ok() {
            return Ok((true, false));
        }
    }
    Ok((false, false))
}
