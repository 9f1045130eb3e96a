//! The snapshot file that travels between nodes: the engine's contents at one log position.
//!
//! # Format
//! Magic `HHRAFTS1`, then frames `[payload len: u32 LE][crc32c: u32 LE][payload]` (the same
//! framing as the log segments): the first frame is the [`SnapshotMeta`] (postcard), each
//! next one a [`Record`] (key, value, version, expiry), and the last an `End` frame holding
//! the record count. Records are written in ascending version order, so the receiving node
//! rebuilds its engine reading one record at a time (files from before that order are
//! sorted in memory first). A file whose frames do not all check, or that lacks its end
//! frame, is refused: the engine it was being rebuilt into is thrown away.
//!
//! Written by [`Writer`] from a consistent cut of the engine (bitcask: the hard-linked
//! snapshot directory opened read-only; memory: the live table while applies wait), read by
//! [`Reader`] on the receiving node, which rebuilds an engine from it in version order so
//! every version (ETag) is what it was on the leader.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::types::SnapshotMeta;

/// Magic at the start of a snapshot file.
pub const MAGIC: &[u8; 8] = b"HHRAFTS1";

/// One key of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Its version.
    pub version: u64,
    /// Its expiry (Unix ms).
    pub expires_at: Option<u64>,
}

#[derive(Serialize, Deserialize)]
enum Frame {
    Record(Record),
    End { records: u64 },
}

/// Writes a snapshot file.
pub struct Writer {
    out: BufWriter<File>,
    records: u64,
}

fn put_frame(out: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    out.write_all(&len)?;
    out.write_all(&crc.to_le_bytes())?;
    out.write_all(payload)
}

fn enc<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| io::Error::other(format!("encoding: {e}")))
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Writer {
    /// Creates `path` and writes the header.
    ///
    /// # Errors
    /// I/O failures.
    pub fn create(path: &Path, meta: &SnapshotMeta) -> io::Result<Writer> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        out.write_all(MAGIC)?;
        put_frame(&mut out, &enc(meta)?)?;
        Ok(Writer { out, records: 0 })
    }

    /// Adds a record.
    ///
    /// # Errors
    /// I/O failures.
    pub fn push(&mut self, r: Record) -> io::Result<()> {
        self.records += 1;
        put_frame(&mut self.out, &enc(&Frame::Record(r))?)
    }

    /// Writes the end frame and fsyncs.
    ///
    /// # Errors
    /// I/O failures.
    pub fn finish(mut self) -> io::Result<()> {
        put_frame(
            &mut self.out,
            &enc(&Frame::End {
                records: self.records,
            })?,
        )?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }
}

fn get_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > 512 * 1024 * 1024 {
        return Err(bad(format!("snapshot frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    if crc32c::crc32c_append(crc32c::crc32c(&head[..4]), &payload) != crc {
        return Err(bad("snapshot frame fails its checksum".into()));
    }
    Ok(payload)
}

fn dec<T: for<'a> Deserialize<'a>>(b: &[u8]) -> io::Result<T> {
    postcard::from_bytes(b).map_err(|e| bad(format!("snapshot frame: {e}")))
}

/// Reads a snapshot file record by record, checking every frame as it comes; memory: one
/// record at a time.
pub struct Reader {
    r: io::BufReader<File>,
    records: u64,
    ended: bool,
}

impl Reader {
    /// Opens `path` and reads its magic and meta.
    ///
    /// # Errors
    /// I/O failures, a bad magic or meta frame.
    pub fn open(path: &Path) -> io::Result<(SnapshotMeta, Reader)> {
        let mut r = io::BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a hoardhaven snapshot file".into()));
        }
        let meta = dec(&get_frame(&mut r)?)?;
        Ok((
            meta,
            Reader {
                r,
                records: 0,
                ended: false,
            },
        ))
    }

    /// The next record, or `None` after the end frame (whose record count is checked).
    ///
    /// # Errors
    /// I/O failures, bad frames, a missing end frame or a record count that does not match.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        if self.ended {
            return Ok(None);
        }
        let frame = get_frame(&mut self.r).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                bad("snapshot file ends before its end frame".into())
            } else {
                e
            }
        })?;
        match dec::<Frame>(&frame)? {
            Frame::Record(rec) => {
                self.records += 1;
                Ok(Some(rec))
            }
            Frame::End { records: n } => {
                if n != self.records {
                    return Err(bad(format!(
                        "snapshot end frame says {n} records, {} read",
                        self.records
                    )));
                }
                self.ended = true;
                Ok(None)
            }
        }
    }
}

/// Reads only the meta of a snapshot file.
///
/// # Errors
/// I/O failures, a bad magic or frame.
pub fn read_meta(path: &Path) -> io::Result<SnapshotMeta> {
    Reader::open(path).map(|(meta, _)| meta)
}

/// Reads and checks a whole snapshot file: its meta and every record. Memory: the records.
///
/// # Errors
/// I/O failures, bad frames, a missing end frame or a record count that does not match.
pub fn read_all(path: &Path) -> io::Result<(SnapshotMeta, Vec<Record>)> {
    let (meta, mut r) = Reader::open(path)?;
    let mut records = Vec::new();
    while let Some(rec) = r.next_record()? {
        records.push(rec);
    }
    Ok((meta, records))
}
