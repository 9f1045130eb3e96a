//! Hint files: a compact index of one data file, read at start-up instead of the data.
//!
//! `MMMMMMMMMM-NNNNN.hint` sits beside the data file of the same name. Layout (little-endian):
//!
//! ```text
//! file header   32 bytes, magic "HHBCHINT", same id and base_seq as the data file
//! entries       one per record of the data file, in file order:
//!                 seq u64 | expires_at u64 | offset u32 | len u32 | kind u8 | key_len u16 | key
//! trailer       20 bytes: "HHBCHEND" | entry count u64 | crc32c u32 of all entry bytes
//! ```
//!
//! A hint is written to `<name>.hint.tmp`, fsynced, renamed into place and the directory
//! fsynced, so a hint that exists is complete. Start-up still checks the trailer's CRC and
//! count; a hint that fails them is ignored and the data file is scanned instead.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::data_file::{FILE_HEADER_LEN, FileHeader, HINT_MAGIC, sync_dir};
use super::record::Kind;
use crate::error::{IoContext, Result};
use crate::fault;

const TRAILER_MAGIC: &[u8; 8] = b"HHBCHEND";
const TRAILER_LEN: usize = 20;
const ENTRY_FIXED: usize = 27;

/// One hint entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintEntry<'a> {
    /// Sequence number of the record.
    pub seq: u64,
    /// Expiry in ms, 0 = never.
    pub expires_at: u64,
    /// Offset of the record in the data file.
    pub offset: u32,
    /// Record length.
    pub len: u32,
    /// Put or tombstone.
    pub kind: Kind,
    /// The key.
    pub key: &'a [u8],
}

/// Writes a hint file.
#[derive(Debug)]
pub struct HintWriter {
    out: BufWriter<fault::Writer>,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    crc: u32,
    count: u64,
    done: bool,
}

impl Drop for HintWriter {
    /// An unfinished hint (an error, a failed merge) leaves no temp file behind.
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl HintWriter {
    /// Starts the hint for the data file with `header`, in `dir`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn create(dir: &Path, header: FileHeader) -> Result<Self> {
        let path = dir.join(header.id.hint_name());
        let tmp = dir.join(format!("{}.tmp", header.id.hint_name()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))?;
        let mut out = BufWriter::with_capacity(256 * 1024, fault::Writer::new(file, &tmp));
        out.write_all(&header.encode(HINT_MAGIC))
            .ctx(|| format!("writing {}", tmp.display()))?;
        Ok(HintWriter {
            out,
            tmp,
            path,
            dir: dir.to_path_buf(),
            crc: 0,
            count: 0,
            done: false,
        })
    }

    /// Adds an entry.
    ///
    /// # Errors
    /// I/O errors.
    pub fn add(&mut self, e: &HintEntry<'_>) -> Result<()> {
        let mut b = [0u8; ENTRY_FIXED];
        b[0..8].copy_from_slice(&e.seq.to_le_bytes());
        b[8..16].copy_from_slice(&e.expires_at.to_le_bytes());
        b[16..20].copy_from_slice(&e.offset.to_le_bytes());
        b[20..24].copy_from_slice(&e.len.to_le_bytes());
        b[24] = if e.kind == Kind::Tombstone { 2 } else { 1 };
        b[25..27].copy_from_slice(&(e.key.len() as u16).to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, &b);
        self.crc = crc32c::crc32c_append(self.crc, e.key);
        self.count += 1;
        self.out
            .write_all(&b)
            .and_then(|()| self.out.write_all(e.key))
            .ctx(|| format!("writing {}", self.tmp.display()))
    }

    /// Writes the trailer, fsyncs, renames into place and fsyncs the directory.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish(mut self) -> Result<PathBuf> {
        let mut t = [0u8; TRAILER_LEN];
        t[..8].copy_from_slice(TRAILER_MAGIC);
        t[8..16].copy_from_slice(&self.count.to_le_bytes());
        t[16..20].copy_from_slice(&self.crc.to_le_bytes());
        self.out
            .write_all(&t)
            .ctx(|| format!("writing {}", self.tmp.display()))?;
        self.out
            .flush()
            .ctx(|| format!("flushing {}", self.tmp.display()))?;
        fault::sync_all(self.out.get_ref().file(), &self.tmp)
            .ctx(|| format!("fsync {}", self.tmp.display()))?;
        fault::rename(&self.tmp, &self.path).ctx(|| format!("renaming {}", self.tmp.display()))?;
        self.done = true;
        sync_dir(&self.dir)?;
        Ok(self.path.clone())
    }
}

/// Reads a hint file, calling `f` for each entry. Returns `Ok(None)` (and calls nothing) if
/// the hint is missing, incomplete or fails its checksum, so the caller scans the data file;
/// otherwise the hint's header.
///
/// # Errors
/// I/O errors other than "not found", and errors from `f`.
pub fn load(path: &Path, f: impl FnMut(HintEntry<'_>) -> Result<()>) -> Result<Option<FileHeader>> {
    match read(path)? {
        Some(h) => {
            h.for_each(f)?;
            Ok(Some(h.header))
        }
        None => Ok(None),
    }
}

/// A hint file read whole and verified (checksum, entry count, tiling), ready to be walked,
/// by several threads at once if need be (see `recovery`).
#[derive(Debug)]
pub struct Loaded {
    /// The hint's header (names its data file).
    pub header: FileHeader,
    bytes: Vec<u8>,
}

/// Reads and verifies the hint at `path`: `None` (after a warning) when it is missing,
/// incomplete or fails its checksum, as for [`load`].
///
/// # Errors
/// I/O errors other than "not found".
pub fn read(path: &Path) -> Result<Option<Loaded>> {
    let bytes = match fault::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::Error::io(format!("reading {}", path.display()), e)),
    };
    if verify(&bytes).is_none() {
        tracing::warn!(hint = %path.display(), "hint file is damaged; scanning the data file instead");
        return Ok(None);
    }
    let Ok(header) = FileHeader::decode(&bytes, HINT_MAGIC, path) else {
        return Ok(None);
    };
    Ok(Some(Loaded { header, bytes }))
}

impl Loaded {
    /// Calls `f` with every entry, in file order.
    ///
    /// # Errors
    /// Errors from `f`.
    pub fn for_each(&self, mut f: impl FnMut(HintEntry<'_>) -> Result<()>) -> Result<()> {
        // Verified in `read` (as `verify` splits it): the entries tile the body exactly.
        let entries = &self.bytes[FILE_HEADER_LEN..self.bytes.len() - TRAILER_LEN];
        let mut pos = 0;
        while pos < entries.len() {
            let b = &entries[pos..];
            let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            let u64_at = |i: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[i..i + 8]);
                u64::from_le_bytes(a)
            };
            let klen = usize::from(u16::from_le_bytes([b[25], b[26]]));
            f(HintEntry {
                seq: u64_at(0),
                expires_at: u64_at(8),
                offset: u32_at(16),
                len: u32_at(20),
                kind: if b[24] == 2 {
                    Kind::Tombstone
                } else {
                    Kind::Put
                },
                key: &b[ENTRY_FIXED..ENTRY_FIXED + klen],
            })?;
            pos += ENTRY_FIXED + klen;
        }
        Ok(())
    }
}

/// The entry count a hint's trailer claims, read from its last bytes only (for sizing the
/// keydir before loading); `None` if there is no readable hint.
pub fn claimed_entries(path: &Path) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let at = len.checked_sub(TRAILER_LEN as u64)?;
    let mut t = [0u8; TRAILER_LEN];
    f.read_exact_at(&mut t, at).ok()?;
    if &t[..8] != TRAILER_MAGIC {
        return None;
    }
    let mut c = [0u8; 8];
    c.copy_from_slice(&t[8..16]);
    let claimed = u64::from_le_bytes(c);
    // The trailer is not checked here (that is `load`'s job), so a damaged one may claim
    // anything: never more entries than the file's bytes can hold (an entry has a key).
    Some(claimed.min(len / (ENTRY_FIXED as u64 + 1)))
}

/// Checks trailer, CRC and that the entries parse exactly; returns the entry bytes.
fn verify(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < FILE_HEADER_LEN + TRAILER_LEN {
        return None;
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let entries = body.get(FILE_HEADER_LEN..)?;
    if &trailer[..8] != TRAILER_MAGIC {
        return None;
    }
    let mut c = [0u8; 8];
    c.copy_from_slice(&trailer[8..16]);
    let count = u64::from_le_bytes(c);
    let crc = u32::from_le_bytes([trailer[16], trailer[17], trailer[18], trailer[19]]);
    if crc32c::crc32c(entries) != crc {
        return None;
    }
    // Walk the entries: they must tile the body exactly and number `count`.
    let (mut pos, mut n) = (0usize, 0u64);
    while pos < entries.len() {
        let fixed = entries.get(pos..pos + ENTRY_FIXED)?;
        if fixed[24] != 1 && fixed[24] != 2 {
            return None;
        }
        let klen = usize::from(u16::from_le_bytes([fixed[25], fixed[26]]));
        pos = pos.checked_add(ENTRY_FIXED + klen)?;
        n += 1;
    }
    (pos == entries.len() && n == count).then_some(entries)
}

/// Removes a hint file if present (and any temp of it).
pub fn remove_for(dir: &Path, header_name: &str) {
    let _ = fs::remove_file(dir.join(header_name));
    let _ = fs::remove_file(dir.join(format!("{header_name}.tmp")));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcask::data_file::FileId;

    #[test]
    fn a_damaged_trailer_cannot_claim_more_entries_than_fit() {
        // Recovery sizes the keydir from this count before any checksum is checked: a
        // damaged trailer claiming 2^52 entries once aborted start-up on allocation.
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("0000000001-00000.hint");
        let mut bytes = vec![0u8; 64];
        bytes.extend_from_slice(TRAILER_MAGIC);
        bytes.extend_from_slice(&(1u64 << 52).to_le_bytes());
        bytes.extend_from_slice(&[0u8; 4]);
        std::fs::write(&p, &bytes).expect("write");
        let n = claimed_entries(&p).expect("a trailer");
        assert!(n <= bytes.len() as u64 / (ENTRY_FIXED as u64 + 1), "{n}");
    }

    #[test]
    fn round_trip_and_damage_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = FileHeader {
            id: FileId { major: 1, minor: 0 },
            base_seq: 1,
        };
        let mut w = HintWriter::create(dir.path(), header).expect("create");
        for i in 0..100u32 {
            w.add(&HintEntry {
                seq: u64::from(i),
                expires_at: 0,
                offset: i * 10,
                len: 10,
                kind: if i % 10 == 0 {
                    Kind::Tombstone
                } else {
                    Kind::Put
                },
                key: format!("k{i}").as_bytes(),
            })
            .expect("add");
        }
        let path = w.finish().expect("finish");
        let mut n = 0;
        let got = load(&path, |e| {
            assert_eq!(e.key, format!("k{n}").as_bytes());
            n += 1;
            Ok(())
        })
        .expect("load");
        assert_eq!(got, Some(header));
        assert_eq!(n, 100);

        let good = fs::read(&path).expect("read");
        for at in [0, 40, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            fs::write(&path, &bad).expect("write");
            let mut calls = 0;
            let r = load(&path, |_| {
                calls += 1;
                Ok(())
            })
            .expect("load");
            assert_eq!((r, calls), (None, 0), "flip at {at}");
        }
        fs::write(&path, &good[..good.len() - 3]).expect("truncate");
        assert_eq!(load(&path, |_| Ok(())).expect("load"), None);
    }
}
