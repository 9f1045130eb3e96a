//! Opening engines the way the tests want them, and the small read/write/inspect helpers every
//! suite shares: options with small files and no background jobs, `put`/`get` that panic with
//! a clear message, `fill`/`check_filled` over a numbered key space, a dump of the whole store,
//! a diff of two states, and directory listings and copies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hoardhaven::engine::bitcask::{Bitcask, BitcaskOptions};
use hoardhaven::engine::memory::{MemoryEngine, MemoryOptions};
use hoardhaven::engine::{
    self, Engine, EngineKind, EngineOptions, PutOptions, SyncPolicy, Version,
};

/// Key -> value: what a store holds (or must hold).
pub type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// A scratch directory, on tmpfs when there is one (fault tests need no real durability and
/// run hundreds of fsyncs), else the default temp dir.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new().prefix("hh-rel-").tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().expect("tempdir")
}

/// Options with small bitcask files (rotation happens) and no background merge, snapshot or
/// rewrite, so the workload's I/O happens in the calling thread, in a repeatable order.
pub fn options(kind: EngineKind, dir: &Path, sync: SyncPolicy) -> EngineOptions {
    let mut o = EngineOptions {
        kind,
        dir: dir.to_path_buf(),
        sync,
        ..EngineOptions::default()
    };
    o.bitcask.max_file_size = 4096;
    o.bitcask.merge.check_interval = None;
    o.memory.save_points = Vec::new();
    o.memory.sweep_interval = Duration::from_secs(3600);
    o.memory.rewrite_min_bytes = u64::MAX / 4;
    o
}

/// Opens with [`options`].
pub fn open(kind: EngineKind, dir: &Path, sync: SyncPolicy) -> hoardhaven::Result<Arc<dyn Engine>> {
    engine::open(&options(kind, dir, sync))
}

/// Everything the store holds now, read through `list` and `get`.
pub fn dump(e: &dyn Engine) -> hoardhaven::Result<State> {
    let mut out = State::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = e.list(b"", after.as_deref(), 1000)?;
        for k in &page.keys {
            if let Some(v) = e.get(k)? {
                out.insert(k.clone(), v.bytes.to_vec());
            }
        }
        match page.next_start_after {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// Bitcask options with `max_file_size`-byte files (so rotation happens) and no background
/// merge check.
pub fn bitcask_opts(max_file_size: u64) -> BitcaskOptions {
    let mut o = BitcaskOptions {
        max_file_size,
        ..BitcaskOptions::default()
    };
    o.merge.check_interval = None;
    o
}

/// Opens a bitcask store with [`bitcask_opts`].
pub fn open_bitcask(dir: &Path, sync: SyncPolicy, max_file_size: u64) -> Bitcask {
    Bitcask::open(dir, sync, &bitcask_opts(max_file_size))
        .unwrap_or_else(|e| panic!("open bitcask at {}: {e}", dir.display()))
}

/// Memory-engine options with no save points (snapshots only when asked) and 8 shards.
pub fn memory_opts() -> MemoryOptions {
    MemoryOptions {
        save_points: vec![],
        shards: 8,
        ..MemoryOptions::default()
    }
}

/// Opens a memory store.
pub fn open_memory(dir: &Path, sync: SyncPolicy, o: &MemoryOptions) -> MemoryEngine {
    MemoryEngine::open(dir, sync, o)
        .unwrap_or_else(|e| panic!("open memory engine at {}: {e}", dir.display()))
}

/// Writes `v` under `k` with default options; returns the new version.
pub fn put<E, K, V>(e: &E, k: &K, v: &V) -> Version
where
    E: Engine + ?Sized,
    K: AsRef<[u8]> + ?Sized,
    V: AsRef<[u8]> + ?Sized,
{
    let k = k.as_ref();
    e.put(k, Bytes::copy_from_slice(v.as_ref()), PutOptions::default())
        .unwrap_or_else(|err| panic!("put {}: {err}", String::from_utf8_lossy(k)))
        .version
}

/// The bytes under `k`, if any.
pub fn get<E: Engine + ?Sized, K: AsRef<[u8]> + ?Sized>(e: &E, k: &K) -> Option<Vec<u8>> {
    let k = k.as_ref();
    e.get(k)
        .unwrap_or_else(|err| panic!("get {}: {err}", String::from_utf8_lossy(k)))
        .map(|v| v.bytes.to_vec())
}

/// The value under `k` as text (lossy), if any.
pub fn get_str<E: Engine + ?Sized, K: AsRef<[u8]> + ?Sized>(e: &E, k: &K) -> Option<String> {
    get(e, k).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Key `i` of the numbered key space [`fill`] writes.
pub fn key(i: usize) -> Vec<u8> {
    format!("key{i}").into_bytes()
}

/// The value [`fill`] writes under key `i`: it names `i` and varies in length.
pub fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(i % 50)).into_bytes()
}

/// Writes keys `0..n` with [`value`].
pub fn fill<E: Engine + ?Sized>(e: &E, n: usize) {
    for i in 0..n {
        put(e, &key(i), &value(i));
    }
}

/// Asserts that keys `0..n` hold exactly what [`fill`] wrote.
pub fn check_filled<E: Engine + ?Sized>(e: &E, n: usize) {
    for i in 0..n {
        assert_eq!(get(e, &key(i)), Some(value(i)), "key{i}");
    }
}

/// Describes how `got` differs from `want`, for assertion messages.
pub fn diff(want: &State, got: &State) -> String {
    let mut d = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => d.push(format!("missing {}", String::from_utf8_lossy(k))),
            Some(g) if g != v => d.push(format!("changed {}", String::from_utf8_lossy(k))),
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        d.push(format!("extra {}", String::from_utf8_lossy(k)));
    }
    d.join(", ")
}

/// Copies a data directory (files and sub-directories; the lock file too).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The files in `dir` (not recursive) whose extension is `ext`, sorted.
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// The bitcask data files in `dir`, sorted (oldest first).
pub fn data_files(dir: &Path) -> Vec<PathBuf> {
    files_with_ext(dir, "data")
}

/// Bytes of the regular files directly in `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum()
}

/// Bytes on disk under `dir`, recursively, each inode once (snapshots hard-link data files).
pub fn tree_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut std::collections::HashSet<u64>) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(rd) = std::fs::read_dir(dir) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path(), seen),
                Ok(m) if seen.insert(m.ino()) => m.len(),
                _ => 0,
            })
            .sum()
    }
    walk(dir, &mut std::collections::HashSet::new())
}

/// A data directory holding only the memory snapshot `snap` as its base (a `MANIFEST` naming
/// it, no log), so opening it loads exactly what that snapshot holds. Format of the manifest:
/// `crates/engine/src/memory/manifest.rs`.
pub fn restore_memory_snapshot(snap: &Path, into: &Path) {
    let name = snap
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let seq = name
        .strip_prefix("snap-")
        .and_then(|n| n.strip_suffix(".hhs"))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("not a snapshot name: {name}"));
    std::fs::create_dir_all(into).expect("mkdir");
    std::fs::copy(snap, into.join(&name)).expect("copy snapshot");
    let mut m = b"HHMEMMAN".to_vec();
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&u64::MAX.to_le_bytes()); // no log to replay
    let crc = crc32c::crc32c(&m);
    m.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(into.join("MANIFEST"), m).expect("manifest");
}
