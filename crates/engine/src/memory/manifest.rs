//! The manifest: which snapshot is the base and from which log on to replay.
//!
//! Owns the `MANIFEST` file and its atomic replacement. Recovery loads the base snapshot it
//! names and replays every log `log-<seq>.hha` with `seq >= first_log`, in order; logs below
//! `first_log` are leftovers of a finished rewrite and are deleted.
//!
//! # Format (version 1, little-endian), exactly 36 bytes
//! `magic "HHMEMMAN" | format_version u32 = 1 | reserved u32 = 0 | base_snapshot u64 (0 = none) |
//! first_log u64 | crc32c u32 over the 32 bytes before it`.
//! Replaced by writing `MANIFEST.tmp`, fsync, rename over `MANIFEST`, directory fsync.

use std::path::Path;

use super::codec::{Reader, sync_dir};
use crate::error::{Error, IoContext, Result};
use crate::fault;

pub(crate) const MANIFEST: &str = "MANIFEST";
const MAGIC: &[u8; 8] = b"HHMEMMAN";
const VERSION: u32 = 1;
const LEN: usize = 36;

/// The manifest's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Sequence number of the base snapshot, 0 for none.
    pub(crate) base: u64,
    /// First log to replay.
    pub(crate) first_log: u64,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(LEN);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&self.base.to_le_bytes());
        b.extend_from_slice(&self.first_log.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads `dir/MANIFEST`; `Ok(None)` when there is none.
    pub(crate) fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST);
        let bytes = match fault::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let bad = |reason: &str| Error::corrupted(&path, 0, reason);
        let mut r = Reader::new(&bytes);
        if r.bytes(8) != Some(&MAGIC[..]) {
            return Err(bad("not a hoardhaven memory-engine manifest (bad magic)"));
        }
        let version = r.u32().ok_or_else(|| bad("truncated manifest"))?;
        if version != VERSION {
            return Err(Error::UnsupportedFormat {
                path,
                found: version,
                supported: VERSION,
            });
        }
        let (Some(_), Some(base), Some(first_log), Some(crc)) =
            (r.u32(), r.u64(), r.u64(), r.u32())
        else {
            return Err(bad("truncated manifest"));
        };
        if r.remaining() != 0 || bytes.get(..LEN - 4).map(crc32c::crc32c) != Some(crc) {
            return Err(bad("manifest checksum mismatch"));
        }
        Ok(Some(Manifest { base, first_log }))
    }

    /// Atomically replaces `dir/MANIFEST` with this one.
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let path = dir.join(MANIFEST);
        std::fs::File::create(&tmp)
            .and_then(|mut f| {
                fault::write_all(&mut f, &self.encode(), &tmp)?;
                fault::sync_all(&f, &tmp)
            })
            .ctx(|| format!("writing {}", tmp.display()))?;
        fault::rename(&tmp, &path).ctx(|| format!("renaming {}", tmp.display()))?;
        sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(Manifest::load(dir.path()).expect("none"), None);
        let m = Manifest {
            base: 7,
            first_log: 9,
        };
        m.store(dir.path()).expect("store");
        assert_eq!(Manifest::load(dir.path()).expect("load"), Some(m));
        let path = dir.path().join(MANIFEST);
        let good = std::fs::read(&path).expect("read");
        assert_eq!(good.len(), LEN);
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 4;
            std::fs::write(&path, &b).expect("write");
            assert!(Manifest::load(dir.path()).is_err(), "flip {i}");
        }
        std::fs::write(&path, &good[..20]).expect("write");
        assert!(Manifest::load(dir.path()).is_err());
    }
}
