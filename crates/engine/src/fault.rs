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
//!
//! # The power-loss model ([`track_power`])
//! A SIGKILL keeps the page cache, so it cannot tell whether an fsync happened; a power cut
//! can. A [`PowerLoss`] tracker keeps, for every file under its directory, the bytes that were
//! on disk at its last successful fsync (keyed by inode, so renames and hard links share them),
//! and, for every directory, the entries it had at its last successful fsync. A *cut* writes
//! that durable state to another directory: every byte written since a file's last fsync is
//! forgotten (also overwrites of preallocated space, which read back as what was there), and
//! every create, rename, link or removal not followed by an fsync of its directory is undone.
//! A file whose entry survives but that was never fsynced is empty. The engine keeps running
//! after a cut (the cut is a copy), so one run can be cut at any chosen call
//! ([`PowerLoss::cut_at`]: the Nth write, fsync, rename or link under the directory, before it
//! runs). The model is stricter than most filesystems (ext4 `data=ordered` often keeps more),
//! never looser than POSIX.
//!
//! # Holding calls ([`hold`])
//! A [`Hold`] makes every matching call block until it is opened, so a test can line up
//! concurrent writers behind one fsync (group commit) without waiting on time.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

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
        let before = plans.len();
        plans.retain(|p| !Arc::ptr_eq(p, &self.state));
        ARMED.fetch_sub(before - plans.len(), Ordering::AcqRel);
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
    ARMED.fetch_add(1, Ordering::AcqRel);
    Armed { state }
}

/// True while any plan or hold is armed: the filesystem layer ([`crate::fs`]) then routes its
/// calls through this seam.
#[inline]
pub fn armed() -> bool {
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
    gate(Op::Write, path);
    let _p = power_guard(path);
    power_write(file, path, offset, buf.len() as u64);
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
    gate(Op::Write, path);
    let _p = power_guard(path);
    let pos = file.stream_position()?;
    power_write(file, path, pos, buf.len() as u64);
    let (v, st) = decide(Op::Write, path);
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
    gate(Op::Write, path);
    let _p = power_guard(path);
    power_write(file, path, len, 0);
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
            crate::fs::fdatasync(file)
        } else {
            file.sync_all()
        }
    };
    if !armed() {
        return run();
    }
    gate(Op::Sync, path);
    // Held over the fsync: no write under the directory runs while it is made durable.
    let _p = power_guard(path);
    let pending = power_before_sync(file, path);
    let (v, st) = decide(Op::Sync, path);
    match v {
        Verdict::Go => {
            run()?;
            synced(&st, path);
            power_after_sync(pending);
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
    if !armed() {
        return std::fs::rename(from, to);
    }
    gate(Op::Rename, to);
    let _p = power_guard(to);
    power_call(to);
    if let (Verdict::Fail(f, _), _) = decide(Op::Rename, to) {
        return Err(os_error(f));
    }
    std::fs::rename(from, to)
}

/// `std::fs::hard_link` (counted as a rename).
pub fn hard_link(from: &Path, to: &Path) -> io::Result<()> {
    if !armed() {
        return std::fs::hard_link(from, to);
    }
    gate(Op::Rename, to);
    let _p = power_guard(to);
    power_call(to);
    if let (Verdict::Fail(f, _), _) = decide(Op::Rename, to) {
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

// ---------------------------------------------------------------------------------------------
// Holding calls.

#[derive(Debug)]
struct HoldState {
    dir: PathBuf,
    op: Op,
    inner: Mutex<HoldInner>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct HoldInner {
    open: bool,
    blocked: u64,
    passed: u64,
}

static HOLDS: Mutex<Vec<Arc<HoldState>>> = Mutex::new(Vec::new());

/// Calls of one kind under one directory, held until opened; released and disarmed when
/// dropped. See [`hold`].
#[derive(Debug)]
pub struct Hold {
    state: Arc<HoldState>,
}

/// Holds every `op` call on files under `dir` (closed from the start) until [`Hold::open`].
pub fn hold(dir: &Path, op: Op) -> Hold {
    let state = Arc::new(HoldState {
        dir: dir.to_path_buf(),
        op,
        inner: Mutex::new(HoldInner::default()),
        cv: Condvar::new(),
    });
    lock(&HOLDS).push(state.clone());
    ARMED.fetch_add(1, Ordering::AcqRel);
    Hold { state }
}

impl Hold {
    /// Lets held and later calls through.
    pub fn open(&self) {
        lock(&self.state.inner).open = true;
        self.state.cv.notify_all();
    }

    /// Holds later calls again.
    pub fn close(&self) {
        lock(&self.state.inner).open = false;
    }

    /// Calls blocked right now.
    pub fn blocked(&self) -> u64 {
        lock(&self.state.inner).blocked
    }

    /// Calls that went through so far.
    pub fn passed(&self) -> u64 {
        lock(&self.state.inner).passed
    }

    /// Blocks until at least `n` calls are held (an event, not a timeout).
    pub fn wait_blocked(&self, n: u64) {
        let mut g = lock(&self.state.inner);
        while g.blocked < n {
            g = self.state.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.open();
        let mut holds = lock(&HOLDS);
        let before = holds.len();
        holds.retain(|h| !Arc::ptr_eq(h, &self.state));
        ARMED.fetch_sub(before - holds.len(), Ordering::AcqRel);
    }
}

fn gate(op: Op, path: &Path) {
    let holds: Vec<Arc<HoldState>> = lock(&HOLDS)
        .iter()
        .filter(|h| h.op == op && path.starts_with(&h.dir))
        .cloned()
        .collect();
    for h in holds {
        let mut g = lock(&h.inner);
        if !g.open {
            g.blocked += 1;
            h.cv.notify_all();
            while !g.open {
                g = h.cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            g.blocked -= 1;
        }
        g.passed += 1;
        h.cv.notify_all();
    }
}

// ---------------------------------------------------------------------------------------------
// The power-loss model.

/// Identity of a file or directory: inode number and birth time (ext4 reuses inode numbers).
type FileKey = (u64, u128);

fn key_of(m: &std::fs::Metadata) -> FileKey {
    use std::os::unix::fs::MetadataExt;
    let born = m
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    (m.ino(), born)
}

/// One entry of a directory: name, identity, whether it is a directory.
type Entry = (std::ffi::OsString, FileKey, bool);

#[derive(Debug)]
struct Power {
    root: PathBuf,
    root_key: FileKey,
    /// Durable bytes of each file.
    images: HashMap<FileKey, Vec<u8>>,
    /// Durable entries of each directory.
    dirs: HashMap<FileKey, Vec<Entry>>,
    /// Byte ranges written since each file's last fsync (`len` 0 = only its size changed).
    dirty: HashMap<FileKey, Vec<(u64, u64)>>,
    calls: u64,
    cut_at: u64,
    dest: Option<PathBuf>,
    cuts: u64,
    error: Option<String>,
}

/// A power-loss tracker over one directory; disarmed when dropped. See [`track_power`].
#[derive(Debug)]
pub struct PowerLoss {
    state: Arc<Mutex<Power>>,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

type PowerShared = (Arc<Mutex<Power>>, Arc<std::sync::atomic::AtomicBool>);

static POWER: Mutex<Vec<PowerShared>> = Mutex::new(Vec::new());

/// Serializes the file calls under tracked directories, each held over the whole call
/// (write, fsync, rename): what an fsync reads as durable is then exactly what was written
/// before it, and no write lands between reading its ranges and the fsync.
static POWER_CALL: Mutex<()> = Mutex::new(());

fn power_guard(path: &Path) -> Option<MutexGuard<'static, ()>> {
    let tracked = lock(&POWER)
        .iter()
        .any(|(s, _)| path.starts_with(&lock(s).root));
    tracked.then(|| lock(&POWER_CALL))
}

fn scan_dir(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        // An entry removed meanwhile is simply not there.
        if let Ok(m) = std::fs::symlink_metadata(e.path()) {
            out.push((e.file_name(), key_of(&m), m.is_dir()));
        }
    }
    Ok(out)
}

fn scan_tree(p: &mut Power, dir: &Path, key: FileKey) -> io::Result<()> {
    let entries = scan_dir(dir)?;
    for (name, k, is_dir) in &entries {
        let path = dir.join(name);
        if *is_dir {
            scan_tree(p, &path, *k)?;
        } else {
            p.images.insert(*k, std::fs::read(&path)?);
        }
    }
    p.dirs.insert(key, entries);
    Ok(())
}

/// Starts tracking what a power cut would leave of `root` (which must exist; everything in
/// it now counts as durable).
///
/// # Errors
/// I/O errors reading `root`.
pub fn track_power(root: &Path) -> io::Result<PowerLoss> {
    let root_key = key_of(&std::fs::metadata(root)?);
    let mut p = Power {
        root: root.to_path_buf(),
        root_key,
        images: HashMap::new(),
        dirs: HashMap::new(),
        dirty: HashMap::new(),
        calls: 0,
        cut_at: 0,
        dest: None,
        cuts: 0,
        error: None,
    };
    scan_tree(&mut p, root, root_key)?;
    let state = Arc::new(Mutex::new(p));
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    lock(&POWER).push((state.clone(), cut.clone()));
    ARMED.fetch_add(1, Ordering::AcqRel);
    Ok(PowerLoss { state, cut })
}

impl PowerLoss {
    /// Cuts the power just before the `n`th (1-based) write, fsync, rename or link under the
    /// tracked directory: its durable state is written to `dest` (which must be outside it).
    pub fn cut_at(&self, n: u64, dest: &Path) {
        let mut p = lock(&self.state);
        p.cut_at = n;
        p.dest = Some(dest.to_path_buf());
    }

    /// Cuts the power now (see [`PowerLoss::cut_at`]).
    ///
    /// # Errors
    /// I/O errors writing `dest`.
    pub fn cut_now(&self, dest: &Path) -> io::Result<()> {
        let _p = lock(&POWER_CALL);
        self.cut.store(true, Ordering::SeqCst);
        let mut p = lock(&self.state);
        p.cuts += 1;
        materialize(&p, p.root_key, dest)
    }

    /// True once a cut has begun: a write acknowledged before this first reads `true` is in
    /// the cut.
    pub fn has_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Writes, fsyncs, renames and links counted so far.
    pub fn calls(&self) -> u64 {
        lock(&self.state).calls
    }

    /// Cuts made, or the error met writing one.
    ///
    /// # Errors
    /// The message of a failed cut.
    pub fn cuts(&self) -> Result<u64, String> {
        let p = lock(&self.state);
        match &p.error {
            Some(e) => Err(e.clone()),
            None => Ok(p.cuts),
        }
    }
}

impl Drop for PowerLoss {
    fn drop(&mut self) {
        let mut all = lock(&POWER);
        let before = all.len();
        all.retain(|(s, _)| !Arc::ptr_eq(s, &self.state));
        ARMED.fetch_sub(before - all.len(), Ordering::AcqRel);
    }
}

fn materialize(p: &Power, dir: FileKey, dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for (name, k, is_dir) in p.dirs.get(&dir).map(Vec::as_slice).unwrap_or(&[]) {
        let to = dest.join(name);
        if *is_dir {
            materialize(p, *k, &to)?;
        } else {
            std::fs::write(&to, p.images.get(k).map(Vec::as_slice).unwrap_or(&[]))?;
        }
    }
    Ok(())
}

/// The trackers whose directory holds `path`.
fn trackers(path: &Path) -> Vec<PowerShared> {
    lock(&POWER)
        .iter()
        .filter(|(s, _)| path.starts_with(&lock(s).root))
        .cloned()
        .collect()
}

/// Counts one call; cuts when it is the chosen one.
fn count_call(p: &mut Power, cut: &std::sync::atomic::AtomicBool) {
    p.calls += 1;
    if p.calls == p.cut_at
        && let Some(dest) = p.dest.clone()
    {
        cut.store(true, Ordering::SeqCst);
        p.cuts += 1;
        if let Err(e) = materialize(p, p.root_key, &dest) {
            p.error = Some(format!("cut into {}: {e}", dest.display()));
        }
    }
}

fn power_call(path: &Path) {
    for (s, cut) in trackers(path) {
        count_call(&mut lock(&s), &cut);
    }
}

fn power_write(file: &File, path: &Path, offset: u64, len: u64) {
    let ts = trackers(path);
    if ts.is_empty() {
        return;
    }
    let Ok(m) = file.metadata() else { return };
    let k = key_of(&m);
    for (s, cut) in ts {
        let mut p = lock(&s);
        count_call(&mut p, &cut);
        p.dirty.entry(k).or_default().push((offset, len));
    }
}

/// What an fsync will make durable, read before it runs.
enum Pending {
    File(Vec<PowerShared>, FileKey, u64, Vec<(u64, Vec<u8>)>),
    Dir(Vec<PowerShared>, FileKey, Vec<Entry>),
    Nothing,
}

fn power_before_sync(file: &File, path: &Path) -> Pending {
    use std::os::fd::AsRawFd;
    let ts = trackers(path);
    if ts.is_empty() {
        return Pending::Nothing;
    }
    for (s, cut) in &ts {
        count_call(&mut lock(s), cut);
    }
    let Ok(m) = file.metadata() else {
        return Pending::Nothing;
    };
    let k = key_of(&m);
    if m.is_dir() {
        return match scan_dir(path) {
            Ok(entries) => Pending::Dir(ts, k, entries),
            Err(_) => Pending::Nothing,
        };
    }
    let mut ranges = Vec::new();
    for (s, _) in &ts {
        if let Some(r) = lock(s).dirty.remove(&k) {
            ranges.extend(r);
        }
    }
    // Read through the descriptor: the file may have been renamed or opened write-only.
    let Ok(r) = File::open(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
        return Pending::Nothing;
    };
    let len = r.metadata().map_or(m.len(), |m| m.len());
    let mut parts = Vec::new();
    for (off, n) in ranges {
        let end = (off + n).min(len);
        if off >= end {
            continue;
        }
        let mut buf = vec![0u8; (end - off) as usize];
        if r.read_exact_at(&mut buf, off).is_ok() {
            parts.push((off, buf));
        }
    }
    Pending::File(ts, k, len, parts)
}

fn power_after_sync(pending: Pending) {
    match pending {
        Pending::Nothing => {}
        Pending::Dir(ts, k, entries) => {
            for (s, _) in ts {
                lock(&s).dirs.insert(k, entries.clone());
            }
        }
        Pending::File(ts, k, len, parts) => {
            for (s, _) in ts {
                let mut p = lock(&s);
                let img = p.images.entry(k).or_default();
                img.resize(len as usize, 0);
                for (off, bytes) in &parts {
                    let off = *off as usize;
                    img[off..off + bytes.len()].copy_from_slice(bytes);
                }
            }
        }
    }
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
        gate(Op::Write, &self.path);
        let _p = power_guard(&self.path);
        power_write(&self.file, &self.path, self.pos, buf.len() as u64);
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
    #[test]
    fn a_power_cut_forgets_unsynced_bytes_and_unsynced_directory_entries() {
        let d = tempfile::tempdir().expect("tmp");
        let root = d.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::write(root.join("old"), b"before").expect("write");
        let power = track_power(&root).expect("track");
        let a = root.join("a");
        let fa = File::create(&a).expect("create");
        write_all_at(&fa, b"synced", 0, &a).expect("w");
        sync_data(&fa, &a).expect("sync");
        let dir = File::open(&root).expect("open dir");
        sync_all(&dir, &root).expect("dir sync");
        write_all_at(&fa, b"+lost", 6, &a).expect("w");
        write_all_at(&fa, b"S", 0, &a).expect("overwrite, not synced");
        let b = root.join("b");
        let fb = File::create(&b).expect("create");
        write_all_at(&fb, b"never linked durably", 0, &b).expect("w");
        sync_data(&fb, &b).expect("sync");
        rename(&root.join("old"), &root.join("new")).expect("rename, no dir sync");
        let cut = d.path().join("cut");
        power.cut_now(&cut).expect("cut");
        assert_eq!(std::fs::read(cut.join("a")).expect("a"), b"synced");
        assert!(
            !cut.join("b").exists(),
            "an entry never fsynced in its directory"
        );
        assert_eq!(std::fs::read(cut.join("old")).expect("old"), b"before");
        assert!(
            !cut.join("new").exists(),
            "a rename not followed by a directory fsync"
        );
        sync_all(&dir, &root).expect("dir sync");
        let cut2 = d.path().join("cut2");
        power.cut_at(power.calls() + 2, &cut2);
        write_all_at(&fb, b"N", 0, &b).expect("first call after arming the cut");
        write_all_at(&fb, b"X", 1, &b).expect("the cut happens before this one");
        sync_data(&fb, &b).expect("sync after the cut");
        assert_eq!(power.cuts(), Ok(2));
        assert_eq!(
            std::fs::read(cut2.join("b")).expect("b"),
            b"never linked durably"
        );
        assert_eq!(std::fs::read(cut2.join("new")).expect("new"), b"before");
    }
}
