//! Read-only memory maps of immutable data files: the one place with `unsafe`.
//!
//! Safety argument: a file is mapped only once it is sealed. Sealed files are never written
//! or truncated again by this process, and the data-directory lock keeps other hoardhaven
//! processes out. A merge that retires a file unlinks it; the mapping stays valid until the
//! last reader drops its `Arc<DataFile>` and the last value read from it. Another program
//! truncating files inside a locked data directory is outside the contract (it could raise
//! SIGBUS); `read_mode = pread` maps nothing.
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
