//! Sequential scanning of a data file, record by record, with batches expanded: the one
//! record scanner of the bitcask format.
//!
//! [`scan`] is used by recovery (to rebuild the keydir), by hint writing and by merge. It
//! decides what a bad record means: in the last file a torn or garbage tail is reported as
//! the length to truncate to; anywhere else, or when a valid record follows the bad bytes
//! (damage in the middle, not a torn tail), it is a [`Error::Corrupted`] naming file and offset.
//!
//! [`survey`] is the same walk for `hoardhaven check`: it does not stop at the first bad
//! record but resyncs at the next valid one, and reports every damaged region. Both walks
//! decode records with [`decode_at`] and look for the next valid record with [`next_valid`],
//! so recovery and `check` agree on what is a record, a torn tail and damage in the middle.

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
            // `e` names the failure ("checksum mismatch (stored .., computed ..)").
            Err(e) => return ctx.bad_detail(pos, max_seq, "checksum mismatch", e),
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
        self.decide(pos, max_seq, reason, format!("{reason}: {detail}"))
    }

    /// As [`TailCtx::bad`] when `detail` already says what `reason` would.
    fn bad_detail(
        &self,
        pos: u64,
        max_seq: u64,
        reason: &'static str,
        detail: String,
    ) -> Result<ScanEnd> {
        self.decide(pos, max_seq, reason, detail)
    }

    fn decide(
        &self,
        pos: u64,
        max_seq: u64,
        reason: &'static str,
        text: String,
    ) -> Result<ScanEnd> {
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
            Err(Error::corrupted(self.path, pos, text))
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
    Ok((next_valid(&tail).is_some(), false))
}

/// The distance from the start of `tail` (a bad record) to the next record with a valid
/// checksum, if any (a torn batch's own nested records do not count, see `torn_batch_end`).
pub fn next_valid(tail: &[u8]) -> Option<usize> {
    (torn_batch_end(tail)..tail.len().saturating_sub(HEADER_LEN - 1)).find(|&i| {
        // Cheap filters first: format byte and kind byte must be plausible.
        tail[i + 4] == record::RECORD_FORMAT
            && (1..=3).contains(&tail[i + 5])
            && record::decode(&tail[i..]).is_ok()
    })
}

/// A put or tombstone inside a record (a batch's nested records one by one).
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    /// Offset relative to the start of the decoded bytes.
    pub at: usize,
    /// Its header.
    pub header: Header,
    /// Its key.
    pub key: &'a [u8],
}

/// Decodes the record at the start of `b`: its whole length and the puts and tombstones it
/// holds (one, or a batch's nested records), each with its offset relative to `b`.
///
/// # Errors
/// Why the bytes are not a valid record (the reason names the failure).
pub fn decode_at(b: &[u8]) -> Result<(usize, Vec<Found<'_>>), String> {
    if b.len() < HEADER_LEN {
        return Err(format!("truncated header ({} bytes left)", b.len()));
    }
    let rec = record::decode(b)?;
    let len = usize::try_from(rec.header.record_len()).map_err(|_| "record too long")?;
    if rec.header.kind != Kind::Batch {
        let one = Found {
            at: 0,
            header: rec.header,
            key: rec.key,
        };
        return Ok((len, vec![one]));
    }
    let mut out = Vec::new();
    for item in record::nested(rec.value) {
        let (at, inner) = item.map_err(|e| format!("bad record inside a batch: {e}"))?;
        out.push(Found {
            at: HEADER_LEN + at,
            header: inner.header,
            key: inner.key,
        });
    }
    Ok((len, out))
}

/// A damaged region met by [`survey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first bad byte in the file.
    pub offset: u64,
    /// Bad bytes from there (to the next valid record, or to the end of the file).
    pub len: u64,
    /// Why the record at `offset` is not valid.
    pub reason: String,
    /// True when no valid record follows: the region runs to the end of the file (a torn
    /// tail when the file is the last appended one).
    pub at_end: bool,
    /// True when the region is all zero bytes (unused preallocation).
    pub zeros: bool,
}

/// Everything [`survey`] found in a data file.
#[derive(Debug, Default)]
pub struct Survey<'a> {
    /// Every valid put and tombstone, `at` being its absolute offset in the file.
    pub records: Vec<Found<'a>>,
    /// Every damaged region, in file order.
    pub damage: Vec<Damage>,
}

/// Walks the records of a whole data file's bytes (after its header; the header is the
/// caller's to check), reporting every damaged region instead of stopping at the first:
/// after bad bytes the walk goes on at the next valid record ([`next_valid`]).
pub fn survey(bytes: &[u8]) -> Survey<'_> {
    let mut out = Survey::default();
    let mut pos = FILE_HEADER_LEN;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        match decode_at(rest) {
            Ok((len, found)) => {
                out.records.extend(found.into_iter().map(|f| Found {
                    at: pos + f.at,
                    ..f
                }));
                pos += len;
            }
            Err(reason) => {
                let next = next_valid(rest);
                let len = next.unwrap_or(rest.len());
                out.damage.push(Damage {
                    offset: pos as u64,
                    len: len as u64,
                    reason,
                    at_end: next.is_none(),
                    zeros: rest[..len].iter().all(|b| *b == 0),
                });
                pos += len;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UnixMillis;
    use crate::bitcask::data_file::FileId;

    fn file_with(n: u64) -> (Vec<u8>, Vec<usize>) {
        let id = FileId { major: 1, minor: 0 };
        let mut b = FileHeader { id, base_seq: 1 }.encode(DATA_MAGIC).to_vec();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(b.len());
            let key = format!("k{i}");
            record::encode(
                &mut b,
                Kind::Put,
                i + 1,
                UnixMillis(1),
                None,
                key.as_bytes(),
                b"value",
            );
        }
        (b, starts)
    }

    #[test]
    fn survey_reports_every_damaged_region_and_keeps_every_valid_record() {
        let (mut b, starts) = file_with(6);
        b[starts[1] + HEADER_LEN] ^= 1; // record 1's key
        b[starts[4] + HEADER_LEN + 3] ^= 1; // record 4's value
        let s = survey(&b);
        let keys: Vec<&[u8]> = s.records.iter().map(|r| r.key).collect();
        assert_eq!(keys, [&b"k0"[..], b"k2", b"k3", b"k5"]);
        assert_eq!(s.records[1].at, starts[2]);
        assert_eq!(s.damage.len(), 2, "{:?}", s.damage);
        assert_eq!(s.damage[0].offset, starts[1] as u64);
        assert_eq!(s.damage[0].len, (starts[2] - starts[1]) as u64);
        assert!(!s.damage[0].at_end);
        assert!(s.damage[0].reason.starts_with("checksum mismatch"));
        assert_eq!(s.damage[1].offset, starts[4] as u64);
        // A torn tail: no valid record after it.
        let (mut b, starts) = file_with(3);
        b.truncate(starts[2] + 5);
        let s = survey(&b);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.damage.len(), 1);
        assert!(s.damage[0].at_end && !s.damage[0].zeros);
        let (mut b, _) = file_with(2);
        b.extend_from_slice(&[0; 100]);
        let s = survey(&b);
        assert!(s.damage[0].at_end && s.damage[0].zeros);
    }
}
