//! Snapshot files (like Redis's RDB): a point-in-time copy of the table, compressed and
//! checksummed, also used as the base the append-only log is replayed on.
//!
//! Owns the file format, writing it from cloned shards and reading it back. It does not decide
//! when snapshots are taken, which one is the base (the manifest does) or how many are kept.
//!
//! # Format (version 1, little-endian), file `snap-<seq>.hhs` (16 hex digits)
//! Header, 44 bytes: `magic "HHMEMSNP" | format_version u32 = 1 | reserved u32 = 0 | seq u64 |
//! max_version u64 (highest version the snapshot contains) | taken_at u64 (ms since epoch) |
//! crc32c u32 over the 40 bytes before it`.
//! Blocks: `raw_len u32 | comp_len u32 | crc32c u32 over raw_len, comp_len and the compressed
//! bytes | lz4 block (lz4_flex) of raw_len bytes`. The raw bytes are entries back to back:
//! `flags u8 (1 = has expiry) | version u64 | [expires_at u64] | key_len u16 | value_len u32 |
//! key | value`. A block holds about 64 KiB of entries (one larger entry gets its own block).
//! Trailer: `0u32 | 0u32 | key_count u64 | block_count u64 | crc32c u32 over those 24 bytes`.
//! Written to `snap-<seq>.hhs.tmp`, fsynced, renamed, directory fsynced.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec::{Reader, crc_of, sync_dir};
use super::table::{EntryRef, Shard};
use crate::error::{Error, IoContext, Result};
use crate::fault;

pub(crate) const SNAP_MAGIC: &[u8; 8] = b"HHMEMSNP";
pub(crate) const SNAP_VERSION: u32 = 1;
const HEADER_LEN: usize = 44;
const BLOCK_TARGET: usize = 64 * 1024;

/// File name of snapshot `seq`.
pub(crate) fn snap_name(seq: u64) -> String {
    format!("snap-{seq:016x}.hhs")
}

/// Parses a snapshot file name back to its sequence number.
pub(crate) fn parse_snap_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("snap-")?.strip_suffix(".hhs")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// What a snapshot's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapHeader {
    pub(crate) seq: u64,
    pub(crate) max_version: u64,
    pub(crate) taken_at: u64,
}

/// A finished snapshot.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) path: PathBuf,
    pub(crate) keys: u64,
    pub(crate) bytes: u64,
}

struct BlockWriter<W: Write> {
    out: W,
    raw: Vec<u8>,
    written: u64,
    blocks: u64,
    path: PathBuf,
}

impl<W: Write> BlockWriter<W> {
    fn flush_block(&mut self) -> Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let comp = lz4_flex::block::compress(&self.raw);
        let (raw_len, comp_len) = (u32::try_from(self.raw.len()), u32::try_from(comp.len()));
        let (Ok(raw_len), Ok(comp_len)) = (raw_len, comp_len) else {
            return Err(Error::ValueTooLarge {
                len: self.raw.len(),
                max: u32::MAX as usize,
            });
        };
        let (r, c) = (raw_len.to_le_bytes(), comp_len.to_le_bytes());
        let crc = crc_of(&[&r, &c, &comp]);
        let path = &self.path;
        self.out
            .write_all(&r)
            .and_then(|()| self.out.write_all(&c))
            .and_then(|()| self.out.write_all(&crc.to_le_bytes()))
            .and_then(|()| self.out.write_all(&comp))
            .ctx(|| format!("writing {}", path.display()))?;
        self.written += 12 + comp.len() as u64;
        self.blocks += 1;
        self.raw.clear();
        Ok(())
    }

    fn push(&mut self, e: &EntryRef<'_>) -> Result<()> {
        if !self.raw.is_empty() && self.raw.len() + e.key.len() + e.value.len() > BLOCK_TARGET {
            self.flush_block()?;
        }
        let raw = &mut self.raw;
        raw.push(u8::from(e.expires_at.is_some()));
        raw.extend_from_slice(&e.version.to_le_bytes());
        if let Some(t) = e.expires_at {
            raw.extend_from_slice(&t.to_le_bytes());
        }
        raw.extend_from_slice(&(e.key.len() as u16).to_le_bytes());
        raw.extend_from_slice(&(e.value.len() as u32).to_le_bytes());
        raw.extend_from_slice(e.key);
        raw.extend_from_slice(e.value);
        Ok(())
    }
}

/// Progress and cancellation hooks of a snapshot being written.
pub(crate) struct Hooks<'a> {
    /// Called after each shard with the key + value bytes done so far.
    pub(crate) progress: &'a dyn Fn(u64),
    /// Polled between shards; `true` aborts the snapshot.
    pub(crate) cancelled: &'a dyn Fn() -> bool,
    /// Test hook: called with the name of each step (`snapshot-written`, `snapshot-renamed`).
    pub(crate) step: &'a dyn Fn(&str),
}

/// Writes snapshot `seq` of `shards` (entries expired at `now` are left out).
pub(crate) fn write_snapshot(
    dir: &Path,
    seq: u64,
    max_version: u64,
    now: u64,
    shards: &[Arc<Shard>],
    hooks: &Hooks<'_>,
) -> Result<Written> {
    let path = dir.join(snap_name(seq));
    let tmp = dir.join(format!("{}.tmp", snap_name(seq)));
    let r = write_tmp(&tmp, seq, max_version, now, shards, hooks);
    let keys = match r {
        Ok(k) => k,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    (hooks.step)("snapshot-written");
    fault::rename(&tmp, &path).ctx(|| format!("renaming {}", tmp.display()))?;
    sync_dir(dir)?;
    (hooks.step)("snapshot-renamed");
    let bytes = std::fs::metadata(&path)
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    Ok(Written { path, keys, bytes })
}

fn write_tmp(
    tmp: &Path,
    seq: u64,
    max_version: u64,
    now: u64,
    shards: &[Arc<Shard>],
    hooks: &Hooks<'_>,
) -> Result<u64> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .ctx(|| format!("creating {}", tmp.display()))?;
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(SNAP_MAGIC);
    h.extend_from_slice(&SNAP_VERSION.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&seq.to_le_bytes());
    h.extend_from_slice(&max_version.to_le_bytes());
    h.extend_from_slice(&now.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    let mut w = BlockWriter {
        out: BufWriter::with_capacity(1 << 20, fault::Writer::new(file, tmp)),
        raw: Vec::with_capacity(BLOCK_TARGET * 2),
        written: 0,
        blocks: 0,
        path: tmp.to_path_buf(),
    };
    w.out
        .write_all(&h)
        .ctx(|| format!("writing {}", tmp.display()))?;
    let (mut keys, mut done) = (0u64, 0u64);
    for shard in shards {
        if (hooks.cancelled)() {
            return Err(Error::Closed);
        }
        let mut err = None;
        shard.for_each(|e| {
            if err.is_some() || e.expired(now) {
                return;
            }
            keys += 1;
            done += (e.key.len() + e.value.len()) as u64;
            if let Err(x) = w.push(&e) {
                err = Some(x);
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        (hooks.progress)(done);
    }
    w.flush_block()?;
    let mut t = Vec::with_capacity(28);
    t.extend_from_slice(&[0u8; 8]);
    t.extend_from_slice(&keys.to_le_bytes());
    t.extend_from_slice(&w.blocks.to_le_bytes());
    let crc = crc32c::crc32c(&t);
    t.extend_from_slice(&crc.to_le_bytes());
    w.out
        .write_all(&t)
        .ctx(|| format!("writing {}", tmp.display()))?;
    let file = w
        .out
        .into_inner()
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e.into_error()))?;
    fault::sync_all(&file.into_file(), tmp).ctx(|| format!("fsync of {}", tmp.display()))?;
    Ok(keys)
}

fn parse_header(path: &Path, h: &[u8]) -> Result<SnapHeader> {
    let bad = |reason: &str| Error::corrupted(path, 0, reason);
    let mut r = Reader::new(h);
    if r.bytes(8) != Some(&SNAP_MAGIC[..]) {
        return Err(bad("not a hoardhaven memory-engine snapshot (bad magic)"));
    }
    let version = r.u32().ok_or_else(|| bad("truncated header"))?;
    if version != SNAP_VERSION {
        return Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
            found: version,
            supported: SNAP_VERSION,
        });
    }
    let fields = (r.u32(), r.u64(), r.u64(), r.u64(), r.u32());
    let (Some(_), Some(seq), Some(max_version), Some(taken_at), Some(crc)) = fields else {
        return Err(bad("truncated header"));
    };
    if h.get(..40).map(crc32c::crc32c) != Some(crc) {
        return Err(bad("header checksum mismatch"));
    }
    Ok(SnapHeader {
        seq,
        max_version,
        taken_at,
    })
}

/// Reads only the header of a snapshot.
pub(crate) fn read_header(path: &Path) -> Result<SnapHeader> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    File::open(path)
        .and_then(|f| f.take(HEADER_LEN as u64).read_to_end(&mut h))
        .ctx(|| format!("reading {}", path.display()))?;
    parse_header(path, &h)
}

/// One entry read back from a snapshot.
pub(crate) struct SnapEntry<'a> {
    pub(crate) version: u64,
    pub(crate) expires_at: Option<u64>,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
}

/// Reads a whole snapshot, calling `apply` for each entry; returns its header and key count.
/// Every block is checked against its CRC before it is decompressed.
pub(crate) fn read_snapshot(
    path: &Path,
    mut apply: impl FnMut(SnapEntry<'_>),
) -> Result<(SnapHeader, u64)> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let file_len = file
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    let mut rd = BufReader::with_capacity(1 << 20, fault::Reader::new(file, path));
    let io = |e| Error::io(format!("reading {}", path.display()), e);
    let mut h = [0u8; HEADER_LEN];
    if file_len < HEADER_LEN as u64 {
        return Err(Error::corrupted(path, 0, "file shorter than its header"));
    }
    rd.read_exact(&mut h).map_err(io)?;
    let header = parse_header(path, &h)?;
    let (mut pos, mut keys, mut blocks) = (HEADER_LEN as u64, 0u64, 0u64);
    let mut comp = Vec::new();
    loop {
        let bad = |off: u64, reason: &str| Error::corrupted(path, off, reason);
        if file_len - pos < 12 {
            return Err(bad(pos, "snapshot ends without its trailer"));
        }
        let mut bh = [0u8; 12];
        rd.read_exact(&mut bh).map_err(io)?;
        let mut r = Reader::new(&bh);
        let (raw_len, comp_len, crc) = match (r.u32(), r.u32(), r.u32()) {
            (Some(a), Some(b), Some(c)) => (a as usize, b as usize, c),
            _ => return Err(bad(pos, "truncated block header")),
        };
        if raw_len == 0 && comp_len == 0 {
            return read_trailer(path, &mut rd, pos, crc, file_len, keys, blocks)
                .map(|()| (header, keys));
        }
        if comp_len as u64 > file_len - pos - 12 {
            return Err(bad(pos, "block runs past the end of the file"));
        }
        comp.resize(comp_len, 0);
        rd.read_exact(&mut comp).map_err(io)?;
        if crc_of(&[&bh[..8], &comp]) != crc {
            return Err(bad(pos, "block checksum mismatch"));
        }
        // lz4 expands at most ~255x: refuse absurd sizes before allocating.
        if raw_len > comp_len.saturating_mul(255).saturating_add(64) {
            return Err(bad(pos, "block claims an impossible uncompressed size"));
        }
        let raw = lz4_flex::block::decompress(&comp, raw_len)
            .map_err(|e| bad(pos, &format!("block does not decompress: {e}")))?;
        if raw.len() != raw_len {
            return Err(bad(pos, "block decompresses to the wrong size"));
        }
        keys += parse_entries(&raw, &mut apply).ok_or_else(|| bad(pos, "malformed entry"))?;
        blocks += 1;
        pos += 12 + comp_len as u64;
    }
}

fn read_trailer(
    path: &Path,
    rd: &mut impl Read,
    pos: u64,
    crc_field: u32,
    file_len: u64,
    keys: u64,
    blocks: u64,
) -> Result<()> {
    let bad = |reason: &str| Error::corrupted(path, pos, reason);
    // The trailer is `0u32 0u32 keys u64 blocks u64 crc u32`: the CRC field read as part of a
    // block header is the first half of `keys`.
    let mut rest = [0u8; 16];
    if file_len - pos != 28 {
        return Err(bad("trailer is not at the end of the file"));
    }
    rd.read_exact(&mut rest)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut t = Vec::with_capacity(24);
    t.extend_from_slice(&[0u8; 8]);
    t.extend_from_slice(&crc_field.to_le_bytes());
    t.extend_from_slice(&rest[..12]);
    let mut r = Reader::new(&t[8..]);
    let (Some(k), Some(b)) = (r.u64(), r.u64()) else {
        return Err(bad("truncated trailer"));
    };
    let crc = rest.get(12..16).and_then(|s| <[u8; 4]>::try_from(s).ok());
    if crc.map(u32::from_le_bytes) != Some(crc32c::crc32c(&t)) {
        return Err(bad("trailer checksum mismatch"));
    }
    if (k, b) != (keys, blocks) {
        return Err(bad("trailer counts do not match the blocks read"));
    }
    Ok(())
}

fn parse_entries(raw: &[u8], apply: &mut impl FnMut(SnapEntry<'_>)) -> Option<u64> {
    let mut r = Reader::new(raw);
    let mut n = 0;
    while r.remaining() > 0 {
        let flags = r.u8()?;
        let version = r.u64()?;
        let expires_at = match flags {
            0 => None,
            1 => Some(r.u64()?),
            _ => return None,
        };
        let klen = r.u16()? as usize;
        let vlen = r.u32()? as usize;
        let key = r.bytes(klen)?;
        let value = r.bytes(vlen)?;
        if key.is_empty() {
            return None;
        }
        apply(SnapEntry {
            version,
            expires_at,
            key,
            value,
        });
        n += 1;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::table::Table;

    fn hooks() -> Hooks<'static> {
        Hooks {
            progress: &|_| {},
            cancelled: &|| false,
            step: &|_| {},
        }
    }

    fn table_with(n: u64) -> Table {
        let t = Table::new(4);
        for i in 0..n {
            let k = format!("key{i}");
            let h = t.hash(k.as_bytes());
            let mut g = t.shards()[t.shard_of(h)].write();
            let exp = if i % 10 == 0 { Some(5) } else { None };
            let v = vec![(i % 256) as u8; (i % 3000) as usize];
            Arc::make_mut(&mut g).put(t.hasher(), h, k.as_bytes(), &v, i + 1, exp);
        }
        t
    }

    #[test]
    fn roundtrip_skips_expired() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = table_with(2000);
        let w = write_snapshot(dir.path(), 3, 2000, 10, &t.clone_shards(), &hooks()).expect("w");
        assert_eq!(w.keys, 1800);
        assert_eq!(w.path, dir.path().join(snap_name(3)));
        let mut seen = 0;
        let (h, keys) = read_snapshot(&w.path, |e| {
            seen += 1;
            assert_eq!(e.value.len() as u64, (e.version - 1) % 3000);
        })
        .expect("read");
        assert_eq!((h.seq, h.max_version, keys, seen), (3, 2000, 1800, 1800));
        assert_eq!(read_header(&w.path).expect("header"), h);
    }

    #[test]
    fn any_damage_is_reported_with_an_offset() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = table_with(300);
        let w = write_snapshot(dir.path(), 1, 300, 0, &t.clone_shards(), &hooks()).expect("w");
        let good = std::fs::read(&w.path).expect("read");
        let step = (good.len() / 97).max(1);
        for i in (0..good.len()).step_by(step) {
            let mut b = good.clone();
            b[i] ^= 0x41;
            std::fs::write(&w.path, &b).expect("write");
            assert!(read_snapshot(&w.path, |_| {}).is_err(), "flip at {i}");
        }
        for cut in (0..good.len()).step_by(step) {
            std::fs::write(&w.path, &good[..cut]).expect("write");
            assert!(
                matches!(read_snapshot(&w.path, |_| {}), Err(Error::Corrupted { .. })),
                "cut at {cut}"
            );
        }
        let mut b = good.clone();
        b[8] = 2;
        std::fs::write(&w.path, &b).expect("write");
        assert!(matches!(
            read_snapshot(&w.path, |_| {}),
            Err(Error::UnsupportedFormat { found: 2, .. })
        ));
    }

    #[test]
    fn names_roundtrip() {
        assert_eq!(parse_snap_name(&snap_name(0xabc)), Some(0xabc));
        assert_eq!(parse_snap_name("snap-1.hhs"), None);
        assert_eq!(parse_snap_name(&format!("{}.tmp", snap_name(1))), None);
    }
}
