//! Fault injection at the engines' file layer: the one seam every write, fsync, rename and
//! read of an engine file goes through, so tests can make the Nth call fail (or write only
//! part of its bytes) and then check what the engine acknowledged against what survives.
//!
//! Owns the injector (a process-wide list of armed [`Plan`]s) and thin wrappers with the
//! signatures of the `std` calls they stand for. It does not decide what an engine does with
//! an error: that is the call site's job (poison, refuse, roll back).
//!
//! # Cost when not armed
//! Always compiled in: each wrapper first reads one relaxed atomic counter of armed plans and,
//! when it is zero (always, outside tests), calls `std` directly. That is one uncontended load
//! beside a system call that costs microseconds. A cargo feature enabled through a self
//! dev-dependency was the alternative; it builds the library twice with different features
//! and lets `cargo test` exercise a different binary than production, so it was not chosen.
//!
//! # Scoping
//! A plan applies only to files under its directory (`Plan::dir`), so tests running in
//! parallel in one process, each with its own temporary data directory, do not see each
//! other's faults. Calls are counted per plan, in the order the engine makes them.
//!
//! # The full-disk model
//! An injected ENOSPC (28) fails writes that need new space; overwriting bytes a file already
//! has (preallocated zeros) and shrinking a file still succeed, as on ext4, xfs or tmpfs
//! (copy-on-write filesystems can fail those too; the engines then fall back to fail-stop).
//!
//! # The failed-fsync model
//! When an injected fsync fails and [`Plan::lose_unsynced`] is set, the bytes written to that
//! file since its last successful fsync are dropped (the file is cut back to where the first
//! of them began), as Linux may do with dirty pages whose writeback failed, even though a
//! later fsync then succeeds. An engine that retried the fsync and acknowledged would then
//! acknowledge lost writes; the engines instead refuse writes after a failed fsync.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A kind of file operation the injector counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `write`, `pwrite`, and `set_len` (a truncation or extension changes bytes too).
    Write,
    /// `fsync` / `fdatasync` of a file or a directory.
    Sync,
    /// `rename` and `link`.
    Rename,
    /// `read`, `pread`, whole-file reads.
    Read,
}

/// What happens at the chosen call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with this OS error number before doing anything (5 = EIO, 28 = ENOSPC).
    Error(i32),
    /// A write writes the first half of its bytes, then fails with this OS error number
    /// (other operations just fail).
    Short(i32),
}

/// One armed fault.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Only files under this directory are affected and counted.
    pub dir: PathBuf,
    /// Which operations are counted.
    pub ops: Vec<Op>,
    /// The 1-based number of the counted call that fails; 0 = count only, never fail.
    pub nth: u64,
    /// What the failing call does.
    pub fault: Fault,
    /// Keep failing every counted call after the nth (a disk that stays full or broken)
    /// until [`Armed::heal`].
    pub sticky: bool,
    /// On a failed fsync, drop the bytes written since the file's last successful fsync.
    pub lose_unsynced: bool,
}

impl Plan {
    /// A plan failing the `nth` call of `ops` under `dir` with EIO, once.
    pub fn new(dir: &Path, ops: &[Op], nth: u64) -> Self {
        Plan {
            dir: dir.to_path_buf(),
            ops: ops.to_vec(),
            nth,
            fault: Fault::Error(5),
            sticky: false,
            lose_unsynced: true,
        }
    }

    /// Counts calls and never fails: run a workload with it to learn how many calls to sweep.
    pub fn count(dir: &Path, ops: &[Op]) -> Self {
        Plan::new(dir, ops, 0)
    }
}

#[derive(Debug)]
struct State {
    plan: Plan,
    calls: u64,
    fired: u64,
    healed: bool,
    /// Per file: the offset of the first byte written since its last successful fsync.
    dirty_from: HashMap<PathBuf, u64>,
}

type Shared = Arc<Mutex<State>>;

static ARMED: AtomicUsize = AtomicUsize::new(0);
static PLANS: Mutex<Vec<Shared>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An armed plan; disarmed when dropped.
#[derive(Debug)]
pub struct Armed {
    state: Shared,
}

impl Armed {
    /// Counted calls so far.
    pub fn calls(&self) -> u64 {
        lock(&self.state).calls
    }

    /// Faults injected so far.
    pub fn fired(&self) -> u64 {
        lock(&self.state).fired
    }

    /// Stops failing (space was freed, the disk was replaced); counting goes on.
    pub fn heal(&self) {
        lock(&self.state).healed = true;
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut plans = lock(&PLANS);
        plans.retain(|p| !Arc::ptr_eq(p, &self.state));
        ARMED.store(plans.len(), Ordering::Release);
    }
}

/// Arms `plan` until the returned guard is dropped.
pub fn arm(plan: Plan) -> Armed {
    let state = Arc::new(Mutex::new(State {
        plan,
        calls: 0,
        fired: 0,
        healed: false,
        dirty_from: HashMap::new(),
    }));
    let mut plans = lock(&PLANS);
    plans.push(state.clone());
    ARMED.store(plans.len(), Ordering::Release);
    Armed { state }
}

#[inline]
fn armed() -> bool {
    ARMED.load(Ordering::Relaxed) != 0
}

/// The decision for one call.
enum Verdict {
    Go,
    Fail(Fault, bool),
}

fn decide(op: Op, path: &Path) -> (Verdict, Option<Shared>) {
    let plans = lock(&PLANS);
    for p in plans.iter() {
        let mut st = lock(p);
        if !path.starts_with(&st.plan.dir) {
            continue;
        }
        if !st.plan.ops.contains(&op) {
            // Not counted, but writes are still tracked for the failed-fsync model.
            return (Verdict::Go, Some(p.clone()));
        }
        st.calls += 1;
        let n = st.plan.nth;
        let hit = n != 0 && !st.healed && (st.calls == n || (st.plan.sticky && st.calls > n));
        if hit {
            st.fired += 1;
            let lose = st.plan.lose_unsynced;
            return (Verdict::Fail(st.plan.fault, lose), Some(p.clone()));
        }
        return (Verdict::Go, Some(p.clone()));
    }
    (Verdict::Go, None)
}

fn os_error(fault: Fault) -> io::Error {
    match fault {
        Fault::Error(e) | Fault::Short(e) => io::Error::from_raw_os_error(e),
    }
}

fn note_write(state: &Option<Shared>, path: &Path, offset: u64) {
    if let Some(s) = state {
        let mut st = lock(s);
        let e = st.dirty_from.entry(path.to_path_buf()).or_insert(offset);
        *e = (*e).min(offset);
    }
}

fn synced(state: &Option<Shared>, path: &Path) {
    if let Some(s) = state {
        lock(s).dirty_from.remove(path);
    }
}

fn lose_unsynced(state: &Option<Shared>, path: &Path) {
    let Some(s) = state else { return };
    let from = lock(s).dirty_from.remove(path);
    if let Some(from) = from
        && let Ok(f) = std::fs::OpenOptions::new().write(true).open(path)
        && f.metadata().is_ok_and(|m| m.len() > from)
    {
        let _ = f.set_len(from);
    }
}

/// `pwrite` of all of `buf` at `offset` (`FileExt::write_all_at`).
pub fn write_all_at(file: &File, buf: &[u8], offset: u64, path: &Path) -> io::Result<()> {
    if !armed() {
        return file.write_all_at(buf, offset);
    }
    let (v, st) = decide(Op::Write, path);
    note_write(&st, path, offset);
    let inside = file
        .metadata()
        .is_ok_and(|m| offset + buf.len() as u64 <= m.len());
    match v {
        // Overwriting bytes already allocated (preallocated zeros) needs no new space.
        Verdict::Fail(Fault::Error(28) | Fault::Short(28), _) if inside => {
            file.write_all_at(buf, offset)
        }
        Verdict::Go => file.write_all_at(buf, offset),
        Verdict::Fail(f @ Fault::Short(_), _) => {
            file.write_all_at(&buf[..buf.len() / 2], offset)?;
            Err(os_error(f))
        }
        Verdict::Fail(f, _) => Err(os_error(f)),
    }
}

/// `write_all` at the current position of `file` (an appending writer).
pub fn write_all(file: &mut File, buf: &[u8], path: &Path) -> io::Result<()> {
    if !armed() {
        return file.write_all(buf);
    }
    let (v, st) = decide(Op::Write, path);
    let pos = file.stream_position()?;
    note_write(&st, path, pos);
    match v {
        Verdict::Go => file.write_all(buf),
        Verdict::Fail(f @ Fault::Short(_), _) => {
            file.write_all(&buf[..buf.len() / 2])?;
            Err(os_error(f))
        }
        Verdict::Fail(f, _) => Err(os_error(f)),
    }
}

/// `File::set_len`.
pub fn set_len(file: &File, len: u64, path: &Path) -> io::Result<()> {
    if !armed() {
        return file.set_len(len);
    }
    let (v, st) = decide(Op::Write, path);
    let shrinks = file.metadata().is_ok_and(|m| m.len() >= len);
    match v {
        // A full disk never stops a file from shrinking.
        Verdict::Fail(Fault::Error(28) | Fault::Short(28), _) if shrinks => file.set_len(len),
        Verdict::Go => {
            note_write(&st, path, len);
            file.set_len(len)
        }
        Verdict::Fail(f, _) => Err(os_error(f)),
    }
}

fn sync_with(file: &File, path: &Path, data_only: bool) -> io::Result<()> {
    // fdatasync through the engines' helper, which records its latency.
    let run = || {
        if data_only {
            crate::fdatasync(file)
        } else {
            file.sync_all()
        }
    };
    if !armed() {
        return run();
    }
    let (v, st) = decide(Op::Sync, path);
    match v {
        Verdict::Go => {
            run()?;
            synced(&st, path);
            Ok(())
        }
        Verdict::Fail(f, lose) => {
            if lose {
                lose_unsynced(&st, path);
            }
            Err(os_error(f))
        }
    }
}

/// `File::sync_data` (fdatasync).
pub fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    sync_with(file, path, true)
}

/// `File::sync_all` (fsync), also of directories.
pub fn sync_all(file: &File, path: &Path) -> io::Result<()> {
    sync_with(file, path, false)
}

/// `std::fs::rename`.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    if armed()
        && let (Verdict::Fail(f, _), _) = decide(Op::Rename, to)
    {
        return Err(os_error(f));
    }
    std::fs::rename(from, to)
}

/// `std::fs::hard_link` (counted as a rename).
pub fn hard_link(from: &Path, to: &Path) -> io::Result<()> {
    if armed()
        && let (Verdict::Fail(f, _), _) = decide(Op::Rename, to)
    {
        return Err(os_error(f));
    }
    std::fs::hard_link(from, to)
}

fn check_read(path: &Path) -> io::Result<()> {
    if armed()
        && let (Verdict::Fail(f, _), _) = decide(Op::Read, path)
    {
        return Err(os_error(f));
    }
    Ok(())
}

/// `pread` of exactly `buf.len()` bytes at `offset` (`FileExt::read_exact_at`).
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64, path: &Path) -> io::Result<()> {
    check_read(path)?;
    file.read_exact_at(buf, offset)
}

/// `std::fs::read`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    check_read(path)?;
    std::fs::read(path)
}

/// A sequential writer (under a `BufWriter`) whose writes go through the seam.
#[derive(Debug)]
pub struct Writer {
    file: File,
    path: PathBuf,
    pos: u64,
}

impl Writer {
    /// Wraps `file`, positioned at its start, at `path`.
    pub fn new(file: File, path: &Path) -> Self {
        Writer {
            file,
            path: path.to_path_buf(),
            pos: 0,
        }
    }

    /// The file, to fsync once the buffer is flushed.
    pub fn into_file(self) -> File {
        self.file
    }

    /// The file, borrowed.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !armed() {
            let n = self.file.write(buf)?;
            self.pos += n as u64;
            return Ok(n);
        }
        let (v, st) = decide(Op::Write, &self.path);
        note_write(&st, &self.path, self.pos);
        let n = match v {
            Verdict::Go => self.file.write(buf)?,
            Verdict::Fail(f @ Fault::Short(_), _) if buf.len() > 1 => {
                self.file.write_all(&buf[..buf.len() / 2])?;
                self.pos += (buf.len() / 2) as u64;
                return Err(os_error(f));
            }
            Verdict::Fail(f, _) => return Err(os_error(f)),
        };
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A sequential reader (under a `BufReader`) whose reads go through the seam.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    path: PathBuf,
}

impl<R: Read> Reader<R> {
    /// Wraps `inner`, reading the file at `path`.
    pub fn new(inner: R, path: &Path) -> Self {
        Reader {
            inner,
            path: path.to_path_buf(),
        }
    }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        check_read(&self.path)?;
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fails_the_nth_and_stays_in_its_directory() {
        let a = tempfile::tempdir().expect("tmp");
        let b = tempfile::tempdir().expect("tmp");
        let pa = a.path().join("f");
        let pb = b.path().join("f");
        let fa = File::create(&pa).expect("create");
        let fb = File::create(&pb).expect("create");
        let g = arm(Plan::new(a.path(), &[Op::Write], 2));
        write_all_at(&fa, b"one", 0, &pa).expect("first");
        let e = write_all_at(&fa, b"two", 3, &pa).expect_err("second fails");
        assert_eq!(e.raw_os_error(), Some(5));
        write_all_at(&fa, b"three", 3, &pa).expect("third");
        for _ in 0..5 {
            write_all_at(&fb, b"x", 0, &pb).expect("other directory untouched");
        }
        assert_eq!((g.calls(), g.fired()), (3, 1));
    }

    #[test]
    fn failed_fsync_loses_unsynced_bytes_and_short_writes_are_partial() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("f");
        let f = File::create(&p).expect("create");
        let _g = arm(Plan::new(d.path(), &[Op::Sync], 2));
        write_all_at(&f, b"durable", 0, &p).expect("w");
        sync_data(&f, &p).expect("first sync");
        write_all_at(&f, b"lost", 7, &p).expect("w");
        assert!(sync_data(&f, &p).is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"durable");
        drop(_g);
        let mut plan = Plan::new(d.path(), &[Op::Write], 1);
        plan.fault = Fault::Short(28);
        let _g = arm(plan);
        let e = write_all_at(&f, b"abcd", 7, &p).expect_err("short");
        assert!(crate::error::is_disk_full(&e));
        assert_eq!(std::fs::read(&p).expect("read"), b"durableab");
    }
}
