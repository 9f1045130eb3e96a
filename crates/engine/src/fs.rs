//! The engines' filesystem layer: every write, fsync, truncation, rename, link and read of an
//! engine file, and the directory fsync.
//!
//! Owns the production calls. Each function has the signature of the `std` call it stands
//! for plus the path (for errors and for the fault seam). When a test has armed the fault
//! seam ([`crate::fault`]) the call is routed through it, which may fail it, cut it short or
//! model a power cut; otherwise (always, outside tests) it is the plain system call after one
//! relaxed atomic load. Nothing here decides what an engine does with an error.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::fault;

/// Name of the fsync latency histogram the engines record (described with the other metrics in
/// `http::metrics`; the `metrics` facade is a no-op when no recorder is installed).
pub const FSYNC_DURATION_METRIC: &str = "hoardhaven_engine_fsync_duration_seconds";

/// `fdatasync` with its latency recorded in [`FSYNC_DURATION_METRIC`] (no fault seam: the
/// seam's own sync calls this).
///
/// # Errors
/// The I/O error of `fdatasync`.
pub fn fdatasync(file: &File) -> io::Result<()> {
    let started = std::time::Instant::now();
    let r = file.sync_data();
    metrics::histogram!(FSYNC_DURATION_METRIC).record(started.elapsed().as_secs_f64());
    r
}

/// `pwrite` of all of `buf` at `offset`.
///
/// # Errors
/// The I/O error of the write.
pub fn write_all_at(file: &File, buf: &[u8], offset: u64, path: &Path) -> io::Result<()> {
    if fault::armed() {
        return fault::write_all_at(file, buf, offset, path);
    }
    file.write_all_at(buf, offset)
}

/// `write_all` at the current position of `file`.
///
/// # Errors
/// The I/O error of the write.
pub fn write_all(file: &mut File, buf: &[u8], path: &Path) -> io::Result<()> {
    if fault::armed() {
        return fault::write_all(file, buf, path);
    }
    file.write_all(buf)
}

/// `File::set_len`.
///
/// # Errors
/// The I/O error of the truncation or extension.
pub fn set_len(file: &File, len: u64, path: &Path) -> io::Result<()> {
    if fault::armed() {
        return fault::set_len(file, len, path);
    }
    file.set_len(len)
}

/// `fdatasync` of `file`, its latency recorded.
///
/// # Errors
/// The I/O error of the sync.
pub fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    if let Some(d) = test_sync_delay() {
        std::thread::sleep(d);
    }
    if fault::armed() {
        return fault::sync_data(file, path);
    }
    fdatasync(file)
}

/// Test hook: with `HOARDHAVEN_TEST_SYNC_DELAY_MS=N` every fdatasync of a log first sleeps N
/// ms, as on a slow disk, so a test that kills the real server (which it cannot reach with
/// the in-process fault seam) meets writes that are appended but not yet durable. Read once;
/// not for production use.
fn test_sync_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("HOARDHAVEN_TEST_SYNC_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis)
    })
}

/// `fsync` of `file` (also of a directory).
///
/// # Errors
/// The I/O error of the sync.
pub fn sync_all(file: &File, path: &Path) -> io::Result<()> {
    if fault::armed() {
        return fault::sync_all(file, path);
    }
    file.sync_all()
}

/// `std::fs::rename`.
///
/// # Errors
/// The I/O error of the rename.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    if fault::armed() {
        return fault::rename(from, to);
    }
    std::fs::rename(from, to)
}

/// `std::fs::hard_link`.
///
/// # Errors
/// The I/O error of the link.
pub fn hard_link(from: &Path, to: &Path) -> io::Result<()> {
    if fault::armed() {
        return fault::hard_link(from, to);
    }
    std::fs::hard_link(from, to)
}

/// `pread` of exactly `buf.len()` bytes at `offset`.
///
/// # Errors
/// The I/O error of the read (`UnexpectedEof` when the file is shorter).
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64, path: &Path) -> io::Result<()> {
    if fault::armed() {
        return fault::read_exact_at(file, buf, offset, path);
    }
    file.read_exact_at(buf, offset)
}

/// `std::fs::read`.
///
/// # Errors
/// The I/O error of the read.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    if fault::armed() {
        return fault::read(path);
    }
    std::fs::read(path)
}

/// fsyncs directory `dir`, making the creations, renames and removals of entries in it
/// durable.
///
/// # Errors
/// The I/O error, naming the directory.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| sync_all(&d, dir))
        .ctx(|| format!("fsync directory {}", dir.display()))
}
