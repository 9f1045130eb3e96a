//! Read-only memory maps of data files: the one place with `unsafe`.
//!
//! Safety argument. Touching a mapped page past the end of its file raises SIGBUS, so every
//! byte read through a map must stay inside the file:
//! - A sealed file ([`Map::of`]) is never written or truncated again by this process.
//! - The active file ([`Map::ahead`]) is mapped up to its size limit, past its current end.
//!   `DataFile` reads its map only below its `written` mark: the file's length when opened,
//!   then raised by the writer after each `pwrite` has returned (the same mark tells
//!   `Inner::read_raw` which records are still in the writer's buffer). Every byte below the
//!   mark is in the file and, through the shared page cache, visible in the map; a range
//!   beyond it is read with `pread` instead (a short read there is reported as corruption, not
//!   a signal). The writer never cuts the file below the mark: `trim` cuts to it, a failed
//!   write cuts back to the mark or the preallocation, whichever is further, and a failed
//!   preallocation to where it began.
//!
//! The data-directory lock keeps other hoardhaven processes out. A merge that retires a file
//! unlinks it; the mapping stays valid until the last reader drops its `Arc<DataFile>` and
//! the last value read from it. Another program truncating files inside a locked data
//! directory is outside the contract (it could raise SIGBUS); `read_mode = pread` maps
//! nothing. (The fault injector's failed-fsync model cuts a file below the mark; the fault
//! tests that use it read with `pread`.)
//!
//! The map is held as one [`Bytes`] (`Bytes::from_owner`), so a read hands out a slice of it:
//! a reference count, no allocation and no copy, and the map lives as long as any value read
//! from it (a value being sent on a socket keeps its retired file's map alive).

use std::fs::File;
use std::io;

use bytes::Bytes;

/// A read-only map of a whole file.
#[derive(Debug)]
pub struct Map(Bytes);

impl Map {
    /// Maps `file`; `None` for an empty file (which cannot be mapped).
    ///
    /// # Errors
    /// I/O errors from `mmap`.
    pub fn of(file: &File) -> io::Result<Option<Map>> {
        if file.metadata()?.len() == 0 {
            return Ok(None);
        }
        // SAFETY: see the module documentation: the file is sealed and never modified while
        // mapped.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::MmapOptions::new().map(file)? };
        Ok(Some(Map(Bytes::from_owner(map))))
    }

    /// Maps `capacity` bytes of `file` (at least its current length), past its end: for the
    /// active file, which grows into the map. `None` when that is 0 bytes.
    ///
    /// # Errors
    /// I/O errors from `mmap`.
    pub fn ahead(file: &File, capacity: u64) -> io::Result<Option<Map>> {
        let len = capacity.max(file.metadata()?.len());
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: see the module documentation: only bytes below the writer's flushed mark,
        // which the file always holds, are read.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        Ok(Some(Map(Bytes::from_owner(map))))
    }

    /// `len` bytes at `start`, sharing the map; `None` past its end.
    pub fn slice(&self, start: usize, len: usize) -> Option<Bytes> {
        let end = start.checked_add(len)?;
        (end <= self.0.len()).then(|| self.0.slice(start..end))
    }
}

impl std::ops::Deref for Map {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0[..]
    }
}
