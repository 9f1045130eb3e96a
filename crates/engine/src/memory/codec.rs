//! Byte-level helpers shared by the memory engine's file formats (log, snapshot, manifest).
//!
//! Owns the checked little-endian reader ([`Reader`]) that every decoder of bytes from disk
//! uses, so that garbage turns into a `None` (and then [`crate::Error::Corrupted`]) instead of a
//! panic, plus CRC32C helpers (directory fsync is re-exported from [`crate::fs`]). It does not know any record layout.

/// A cursor over bytes read from disk; every read is bounds-checked and returns `None` past
/// the end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
}

/// CRC32C of several slices, as if concatenated.
pub(crate) fn crc_of(parts: &[&[u8]]) -> u32 {
    parts.iter().fold(0u32, |c, p| crc32c::crc32c_append(c, p))
}

pub use crate::fs::sync_dir;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_is_checked() {
        let mut r = Reader::new(&[1, 2, 0, 3, 0, 0, 0]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(2));
        assert_eq!(r.u32(), Some(3));
        assert_eq!(r.u8(), None);
        assert_eq!(r.remaining(), 0);
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(r.u32(), None);
        assert_eq!(r.bytes(usize::MAX), None);
        assert_eq!(r.remaining(), 2);
    }

    #[test]
    fn crc_of_parts_equals_crc_of_concat() {
        assert_eq!(crc_of(&[b"ab", b"cd"]), crc32c::crc32c(b"abcd"));
    }
}
