//! The library's error type.
//!
//! Owns [`Error`], the one enum every engine operation returns, and the [`Result`] alias.
//! It says *what* went wrong in storage terms (corruption, a failed precondition, a full disk);
//! mapping those to HTTP statuses happens in exactly one place, `http::error`.

use std::io;
use std::path::PathBuf;

use crate::Version;

/// Everything an engine operation can fail with. Deliberately not `#[non_exhaustive]`: the
/// server maps every variant to HTTP in one exhaustive match, so a new variant must be mapped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with what was being done when it happened.
    ///
    /// The OS error is part of the message and deliberately not also the error's `source()`:
    /// being both printed it twice in an error chain (`File exists (os error 17): File exists
    /// (os error 17)` under anyhow's `{:#}`).
    #[error("{context}: {cause}")]
    Io {
        /// What the engine was doing ("appending to 000003.data", ...).
        context: String,
        /// The operating system's error.
        cause: io::Error,
    },
    /// The disk (or quota) is full; the write was not made. Reads keep working.
    #[error("disk full: {context}")]
    DiskFull {
        /// What the engine was doing.
        context: String,
    },
    /// Bytes on disk failed their checksum or do not parse. Never served as data.
    #[error("corrupted data in {file} at offset {offset}: {reason}")]
    Corrupted {
        /// The file holding the bad bytes.
        file: PathBuf,
        /// Byte offset of the bad record in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A compare-and-set or create-only condition did not hold.
    #[error("precondition failed")]
    PreconditionFailed {
        /// The version the key has now, `None` when absent.
        current: Option<Version>,
    },
    /// The key is empty; keys are non-empty byte strings.
    #[error("key must not be empty")]
    EmptyKey,
    /// The key is longer than the limit.
    #[error("key is {len} bytes, the limit is {max}")]
    KeyTooLarge {
        /// Length given.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
    /// The value is longer than the limit.
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge {
        /// Length given.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
    /// The batch holds more operations or bytes than allowed.
    #[error("batch too large: {0}")]
    BatchTooLarge(String),
    /// A merge or snapshot is already running; only one at a time.
    #[error("a {0} is already running")]
    Busy(&'static str),
    /// A write or fsync failed earlier; the engine refuses writes (fail-stop) until reopened,
    /// because data acknowledged after a failed fsync could be lost.
    #[error("engine refuses writes after an earlier I/O failure: {0}")]
    Poisoned(String),
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    /// The data directory was written by a format this build does not know.
    #[error("{path}: format version {found} is not supported (this build reads {supported})")]
    UnsupportedFormat {
        /// The file with the unknown version.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version this build writes and reads.
        supported: u32,
    },
    /// A setting is invalid.
    #[error("invalid setting {name}: {reason}")]
    InvalidConfig {
        /// Setting name.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// The store cannot serve this now but may shortly (a replicated store without a quorum
    /// or a leader); the request may be retried.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Like [`Error::Unavailable`], and the write was certainly not applied (no leader could be
    /// reached in time): a retry cannot apply it twice.
    #[error("unavailable, not applied: {0}")]
    NotApplied(String),
    /// The key lies in a range the store keeps for itself (a replicated store's bookkeeping).
    #[error("keys starting with the bytes {0:?} are reserved")]
    ReservedKey(&'static str),
    /// The engine was closed.
    #[error("engine is closed")]
    Closed,
    /// The store was opened read-only (offline inspection): writes, syncs, merges and
    /// snapshots are refused.
    #[error("the store is opened read-only")]
    ReadOnly,
    /// The data directory belongs to the other engine (its `ENGINE` marker, or its files,
    /// say so); opening it with this one would misread it or write beside it.
    #[error(
        "data directory {dir} holds a {found} store, not a {wanted} one (use --engine {found}, \
         or another directory)"
    )]
    WrongEngine {
        /// The data directory.
        dir: PathBuf,
        /// The engine the directory belongs to.
        found: crate::EngineKind,
        /// The engine asked for.
        wanted: crate::EngineKind,
    },
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with context, turning ENOSPC/EDQUOT into [`Error::DiskFull`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if is_disk_full(&source) {
            Error::DiskFull { context }
        } else {
            Error::Io {
                context,
                cause: source,
            }
        }
    }

    /// A corruption error for `file` at `offset`.
    pub fn corrupted(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupted {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// True when the error means "no space left" (ENOSPC) or "quota exceeded" (EDQUOT).
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28) | Some(122))
}

/// Extension to attach context to I/O results.
pub trait IoContext<T> {
    /// Maps an `io::Error` into [`Error::io`] with the context computed lazily.
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}
