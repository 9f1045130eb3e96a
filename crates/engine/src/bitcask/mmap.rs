//! Read-only memory maps of immutable data files: the one place with `unsafe`.
//!
//! Safety argument: a file is mapped only once it is sealed. Sealed files are never written
//! or truncated again by this process, and the data-directory lock keeps other hoardhaven
//! processes out. A merge that retires a file unlinks it; the mapping stays valid until the
//! last reader drops its `Arc<DataFile>`. Another program truncating files inside a locked
//! data directory is outside the contract (it could raise SIGBUS), which is why `pread` is
//! the default read mode.

use std::fs::File;
use std::io;

/// A read-only map of a whole file.
#[derive(Debug)]
pub struct Map(memmap2::Mmap);

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
        Ok(Some(Map(map)))
    }
}

impl std::ops::Deref for Map {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}
