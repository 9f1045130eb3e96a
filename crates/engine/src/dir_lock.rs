//! Exclusive ownership of a data directory by one process.
//!
//! A `LOCK` file inside the directory is locked with an OS advisory lock (`flock`) for as long
//! as the engine is open. The lock dies with the process, so a kill -9 leaves nothing stale; an
//! empty or leftover `LOCK` file from an earlier run never blocks start-up.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and locks it.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the directory when another process holds it; I/O errors.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .ctx(|| format!("creating data directory {}", dir.display()))?;
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked(dir.to_path_buf())),
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
        }
        // Informational only: who holds it. Failure to write it does not matter.
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(DirLock {
            file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Releases the lock now (dropping does the same).
    pub fn release(self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = DirLock::acquire(dir.path()).expect("first");
        match DirLock::acquire(dir.path()) {
            Err(Error::Locked(p)) => assert_eq!(p, dir.path()),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(a);
        DirLock::acquire(dir.path()).expect("after release");
    }

    #[test]
    fn empty_leftover_lock_file_does_not_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("LOCK"), b"").expect("write");
        DirLock::acquire(dir.path()).expect("lock");
    }
}
