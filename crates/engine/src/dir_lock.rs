//! Exclusive ownership of a data directory by one process.
//!
//! A `LOCK` file inside the directory is locked with an OS advisory lock (`flock`) for as long
//! as the engine is open. The lock dies with the process, so a kill -9 leaves nothing stale; an
//! empty or leftover `LOCK` file from an earlier run never blocks start-up.
//!
//! Read-only opens (offline inspection) take the same lock *shared*, through a read-only
//! handle, and only when `LOCK` exists: they create and write nothing. A shared holder blocks
//! a server's exclusive lock (and the other way round), so a tool never reads files a server
//! is changing. A directory without `LOCK` has never been opened read-write, so no server is
//! using it.

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

    /// Takes the lock shared without creating or writing anything; `Ok(None)` when the
    /// directory has no `LOCK` file (nothing to share).
    ///
    /// # Errors
    /// [`Error::Locked`] when a process holds it exclusively; I/O errors.
    pub fn acquire_shared(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("LOCK");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(DirLock {
                file,
                dir: dir.to_path_buf(),
            })),
            Err(TryLockError::WouldBlock) => Err(Error::Locked(dir.to_path_buf())),
            Err(TryLockError::Error(e)) => Err(Error::io(format!("locking {}", path.display()), e)),
        }
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
    fn shared_lock_excludes_the_exclusive_one_and_creates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(DirLock::acquire_shared(dir.path()).expect("none").is_none());
        assert!(!dir.path().join("LOCK").exists());
        let a = DirLock::acquire(dir.path()).expect("exclusive");
        assert!(matches!(
            DirLock::acquire_shared(dir.path()),
            Err(Error::Locked(_))
        ));
        drop(a);
        let s1 = DirLock::acquire_shared(dir.path())
            .expect("shared")
            .expect("some");
        let s2 = DirLock::acquire_shared(dir.path())
            .expect("shared twice")
            .expect("some");
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(Error::Locked(_))
        ));
        drop((s1, s2));
        DirLock::acquire(dir.path()).expect("after the readers");
    }

    #[test]
    fn empty_leftover_lock_file_does_not_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("LOCK"), b"").expect("write");
        DirLock::acquire(dir.path()).expect("lock");
    }
}
