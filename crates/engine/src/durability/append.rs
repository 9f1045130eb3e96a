//! The file side of an append log: positional writes at the end of the data, preallocation,
//! cutting back a write a full disk stopped half way, trimming, fdatasync.
//!
//! The append buffer itself stays with the engine (it decides what is appended under which
//! lock); [`AppendFile::write`] writes a buffer's bytes with one `pwrite` where the data ends.
//!
//! # Preallocation
//! When on, the file is zero-filled ahead of the write position (4 MiB at a time, up to the
//! engine's file size limit) and the new size fdatasynced, so the fdatasync of each later
//! append is a pure overwrite with no file-size metadata to flush (about twice the
//! append+fdatasync rate on ext4). Readers of the log take zeros as the end of the data;
//! [`AppendFile::trim`] cuts them off before a file is sealed.
//!
//! # Errors
//! A full disk met while preallocating or writing is returned as [`Error::DiskFull`] after the
//! bytes of the failed call are cut back, and does not poison: nothing past the data was
//! changed, so the write can be retried once there is space. Every other failure, and any
//! failed fdatasync, poisons the engine (fail-stop, see [`super::poison`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Poison;
use crate::error::{Error, Result};
use crate::fs;

/// A file an [`AppendFile`] appends to.
pub trait LogFile {
    /// The open file (read-write).
    fn file(&self) -> &File;
    /// Its path, for errors and the fault seam.
    fn path(&self) -> &Path;
}

/// A plain open file and its path.
#[derive(Debug)]
pub struct PlainFile {
    /// The open file.
    pub file: File,
    /// Its path.
    pub path: PathBuf,
}

impl LogFile for PlainFile {
    fn file(&self) -> &File {
        &self.file
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

impl<T: LogFile> LogFile for Arc<T> {
    fn file(&self) -> &File {
        (**self).file()
    }
    fn path(&self) -> &Path {
        (**self).path()
    }
}

/// Preallocation settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prealloc {
    /// Zero-fill this much ahead at a time.
    pub chunk: u64,
    /// Never past this file size.
    pub max: u64,
}

/// One log file being appended to.
#[derive(Debug)]
pub struct AppendFile<F> {
    f: F,
    /// Bytes of data in the file.
    flushed: u64,
    /// Physical length: past `flushed` it is zero-filled preallocation.
    allocated: u64,
    prealloc: Option<Prealloc>,
    poison: Arc<Poison>,
}

impl<F: LogFile> AppendFile<F> {
    /// Appends to `f`, whose data is `len` bytes long (with no preallocation after it).
    pub fn new(f: F, len: u64, prealloc: Option<Prealloc>, poison: Arc<Poison>) -> Self {
        AppendFile {
            f,
            flushed: len,
            allocated: len,
            prealloc,
            poison,
        }
    }

    /// Takes `allocated` bytes as the file's physical length (zero-filled past the data), so
    /// that [`AppendFile::trim`] cuts them off: for a file handed over from another
    /// `AppendFile` (a log switch).
    #[must_use]
    pub fn with_allocated(mut self, allocated: u64) -> Self {
        self.allocated = allocated.max(self.flushed);
        self
    }

    /// Physical length: data plus zero-filled preallocation.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// The file.
    pub fn inner(&self) -> &F {
        &self.f
    }

    /// Bytes of data written to the file.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }

    /// Switches to a new file of `len` bytes (rotation); returns the old one.
    pub fn replace(&mut self, f: F, len: u64) -> F {
        self.flushed = len;
        self.allocated = len;
        std::mem::replace(&mut self.f, f)
    }

    fn fail(&self, what: &str, e: std::io::Error) -> Error {
        let err = Error::io(format!("{what} {}", self.f.path().display()), e);
        if !matches!(err, Error::DiskFull { .. }) {
            self.poison.poison(&err);
        }
        err
    }

    /// Writes `buf` where the data ends (preallocating first when on). A full disk cuts the
    /// partial bytes back and returns [`Error::DiskFull`] unpoisoned; the caller keeps `buf`.
    ///
    /// # Errors
    /// [`Error::DiskFull`]; other I/O errors (poisoned).
    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = self.flushed + buf.len() as u64;
        if self.prealloc.is_some() && end > self.allocated {
            self.preallocate(end)?;
        }
        if let Err(e) = fs::write_all_at(self.f.file(), buf, self.flushed, self.f.path()) {
            let err = self.fail("appending to", e);
            if matches!(err, Error::DiskFull { .. })
                && let Err(cut) = self.cut_back()
            {
                self.poison.poison(&cut);
                return Err(cut);
            }
            return Err(err);
        }
        self.flushed = end;
        Ok(())
    }

    /// Cuts the file back to its data and preallocation after a write that failed part way.
    /// Bytes of the failed write left inside the preallocated area are rewritten in place by
    /// the next write, and look like a torn tail to recovery until then.
    fn cut_back(&mut self) -> Result<()> {
        let keep = self.flushed.max(self.allocated);
        let (file, path) = (self.f.file(), self.f.path());
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        if len > keep {
            fs::set_len(file, keep, path)
                .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Makes sure the file is allocated up to at least `needed` bytes (see the module doc).
    /// On a full disk it tries exactly `needed` before giving up.
    ///
    /// # Errors
    /// [`Error::DiskFull`] (zeros given back, unpoisoned); other errors poison.
    pub fn preallocate(&mut self, needed: u64) -> Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];
        let Some(p) = self.prealloc else {
            return Ok(());
        };
        if needed <= self.allocated {
            return Ok(());
        }
        let chunk = needed.max((self.allocated + p.chunk).min(p.max));
        let (file, path) = (self.f.file(), self.f.path());
        let from = self.allocated.max(self.flushed);
        let mut target = chunk;
        loop {
            let mut at = from;
            let mut result = Ok(());
            while at < target {
                let n = (target - at).min(ZEROS.len() as u64) as usize;
                if let Err(e) = fs::write_all_at(file, &ZEROS[..n], at, path) {
                    result = Err(e);
                    break;
                }
                at += n as u64;
            }
            match result {
                Ok(()) => break,
                Err(e) => {
                    let err = self.fail("preallocating", e);
                    if !matches!(err, Error::DiskFull { .. }) {
                        return Err(err);
                    }
                    // Give the zeros back; harmless if it fails (zeros read as the end).
                    let _ = fs::set_len(file, from, path);
                    if target > needed {
                        target = needed;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
        if let Err(e) = fs::sync_data(file, path) {
            let err = Error::io(format!("preallocating {}", path.display()), e);
            self.poison.poison(&err);
            return Err(err);
        }
        self.allocated = target;
        Ok(())
    }

    /// Cuts the zero-filled preallocation off the end (before sealing or closing).
    ///
    /// # Errors
    /// I/O errors (poisoned).
    pub fn trim(&mut self) -> Result<()> {
        if self.allocated > self.flushed {
            if let Err(e) = fs::set_len(self.f.file(), self.flushed, self.f.path()) {
                let err = Error::io(format!("truncating {}", self.f.path().display()), e);
                self.poison.poison(&err);
                return Err(err);
            }
            self.allocated = self.flushed;
        }
        Ok(())
    }

    /// fdatasyncs the file.
    ///
    /// # Errors
    /// The I/O error (poisoned: after a failed fsync nothing written since the last good one
    /// can be trusted to be on disk).
    pub fn sync(&self) -> Result<()> {
        sync_file(self.f.file(), self.f.path(), &self.poison)
    }
}

/// fdatasyncs `file`, poisoning on failure (for a file handle taken out of its
/// [`AppendFile`] so the fsync runs without the append lock).
///
/// # Errors
/// The I/O error.
pub fn sync_file(file: &File, path: &Path, poison: &Poison) -> Result<()> {
    if let Err(e) = fs::sync_data(file, path) {
        let err = Error::io(format!("fsync {}", path.display()), e);
        poison.poison(&err);
        return Err(err);
    }
    Ok(())
}
