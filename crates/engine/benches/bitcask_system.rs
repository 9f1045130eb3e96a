//! System benchmark of the bitcask engine, every figure beside its floor measured in the same
//! run (this machine is shared and noisy, so only ratios within one run mean much).
//!
//! ```text
//! cargo bench --bench bitcask_system -- [--keys 1000000] [--dir /path/on/the/disk] [--json out.json]
//! cargo bench --bench bitcask_system -- --writes-only   # the disk floors and the write phases
//!     [--index-keys 10000000] [--only read|startup|merge]
//! ```
//!
//! `--index-keys N` first measures the in-memory index alone (hash keydir + ordered index) at
//! N keys: bytes per key of each, insert and lookup rates. `--only read` stops after the read
//! and listing phases (PUT, keydir size, GET in both modes, listing pages); `--only startup`
//! runs the PUT phase and start-up only; `--only merge` the PUT phase and the merge phases.
//!
//! Phases: the disk's own rates (sequential write, append+fdatasync, overwrite+fdatasync in a
//! preallocated file); engine PUT with sync=never on one thread; keydir bytes per key; GET of
//! hot data on one thread with pread and with mmap; PUT with sync=always at 1, 8, 64, 256 and
//! 1,000 blocking writers, and from one thread keeping 1,000 awaited writes in flight; start-up with hint files beside a full scan; merge throughput beside the disk's
//! sequential write rate; foreground GET latency (p50, p99) on one reader thread while idle
//! and while a merge runs.

mod keys;
use keys::{key, splitmix};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hoardhaven_engine::bitcask::keydir::{Keydir, Loc};
use hoardhaven_engine::bitcask::{Bitcask, BitcaskOptions, ReadMode};
use hoardhaven_engine::{Engine, KeyRange, PutOptions, SyncPolicy};

struct Args {
    keys: usize,
    dir: PathBuf,
    json: Option<PathBuf>,
    writes_only: bool,
    index_keys: usize,
    /// `--only read|startup|merge`: run the PUT phase and that phase only.
    only: Option<String>,
}

impl Args {
    fn runs(&self, phase: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == phase)
    }
}

fn args() -> Args {
    let mut a = Args {
        keys: 1_000_000,
        dir: std::env::temp_dir().join("hoardhaven-bench"),
        json: None,
        writes_only: false,
        index_keys: 0,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--keys" => a.keys = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.keys),
            "--dir" => a.dir = it.next().map(PathBuf::from).unwrap_or(a.dir),
            "--json" => a.json = it.next().map(PathBuf::from),
            "--writes-only" => a.writes_only = true,
            "--index-keys" => a.index_keys = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--only" => a.only = it.next(),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn opts(mode: ReadMode) -> BitcaskOptions {
    let mut o = BitcaskOptions {
        max_file_size: 64 << 20,
        read_mode: mode,
        ..BitcaskOptions::default()
    };
    o.merge.check_interval = None;
    o
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

struct Report {
    rows: Vec<(String, f64, String)>,
}

impl Report {
    fn add(&mut self, name: &str, value: f64, unit: &str) {
        println!("{name:<58} {value:>14.1} {unit}");
        self.rows.push((name.to_string(), value, unit.to_string()));
    }
    fn get(&self, name: &str) -> f64 {
        self.rows
            .iter()
            .find(|r| r.0 == name)
            .map(|r| r.1)
            .unwrap_or(f64::NAN)
    }
}

fn disk_seq_write(dir: &Path) -> f64 {
    let path = dir.join("seq.bin");
    let mut f = File::create(&path).expect("create");
    let chunk = vec![7u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..256 {
        f.write_all(&chunk).expect("write");
    }
    f.sync_all().expect("sync");
    let mbs = 256.0 / t.elapsed().as_secs_f64();
    drop(f);
    let _ = fs::remove_file(&path);
    mbs
}

fn disk_fsync_rate(dir: &Path, preallocated: bool) -> f64 {
    let path = dir.join("fsync.bin");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    if preallocated {
        f.write_all_at(&vec![0u8; 64 << 20], 0).expect("fill");
        f.sync_all().expect("sync");
    }
    let rec = [1u8; 152];
    let t = Instant::now();
    let mut n = 0u64;
    let mut off = 0u64;
    while t.elapsed() < Duration::from_secs(3) {
        f.write_all_at(&rec, off).expect("write");
        f.sync_data().expect("fdatasync");
        off += rec.len() as u64;
        n += 1;
    }
    let r = rate(n, t.elapsed());
    drop(f);
    let _ = fs::remove_file(&path);
    r
}

/// Durable puts on a fresh store: blocking writers (one thread each), then one thread keeping
/// 1,000 awaited writes in flight (`put_deferred`, waiting on the oldest ticket).
fn durable_writers(dir: &Path, r: &mut Report) {
    let durable = dir.join("durable");
    let e = Arc::new(
        Bitcask::open(&durable, SyncPolicy::Always, &opts(ReadMode::Pread)).expect("open"),
    );
    for w in [1usize, 8, 64, 256, 1000] {
        r.add(
            &format!("engine PUT sync=always, {w} writers"),
            timed_puts(&e, w, 3, w * 1_000_000_000),
            "ops/s",
        );
    }
    r.add(
        "engine PUT sync=always, 1 thread, 1000 awaited in flight",
        windowed_puts(&e, 1000, 3),
        "ops/s",
    );
}

/// One thread appends with `put_deferred` and keeps `window` tickets outstanding, waiting on
/// the oldest when the window is full: the group commit's rate without a thread per write.
fn windowed_puts(e: &Arc<Bitcask>, window: usize, secs: u64) -> f64 {
    let v = Bytes::from(vec![b'v'; 100]);
    let mut tickets = std::collections::VecDeque::with_capacity(window);
    let t = Instant::now();
    let mut i = 0usize;
    while t.elapsed() < Duration::from_secs(secs) {
        let (_, ticket) = e
            .put_deferred(&key(7_000_000_000 + i), v.clone(), PutOptions::default())
            .expect("put");
        tickets.push_back(ticket);
        i += 1;
        if tickets.len() >= window
            && let Some(oldest) = tickets.pop_front()
        {
            oldest.wait().expect("durable");
        }
    }
    for ticket in tickets {
        ticket.wait().expect("durable");
    }
    rate(i as u64, t.elapsed())
}

/// The write-path ratios (also printed by the full run).
fn print_write_ratios(r: &Report) {
    let append = r.get("disk append + fdatasync (152 B)");
    let prealloc = r.get("disk overwrite in preallocated file + fdatasync");
    println!("\nwrite ratios (same run):");
    for w in [1usize, 8, 64, 256, 1000] {
        let put = r.get(&format!("engine PUT sync=always, {w} writers"));
        println!(
            "  PUT sync=always {w:>4} writers: {:>7.2}x append+fdatasync, {:>6.2}x preallocated overwrite",
            put / append,
            put / prealloc
        );
    }
    let win = r.get("engine PUT sync=always, 1 thread, 1000 awaited in flight");
    println!(
        "  PUT sync=always 1 thread, 1000 awaited: {:>7.2}x append+fdatasync",
        win / append
    );
}

fn timed_puts(e: &Arc<Bitcask>, writers: usize, secs: u64, base: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let hs: Vec<_> = (0..writers)
        .map(|w| {
            let (e, stop, count) = (e.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let v = Bytes::from(vec![b'v'; 100]);
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let k = key(base + w * 10_000_000 + i);
                    e.put(&k, v.clone(), PutOptions::default()).expect("put");
                    i += 1;
                }
                count.fetch_add(i as u64, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().expect("join");
    }
    rate(count.load(Ordering::Relaxed), t.elapsed())
}

fn gets(e: &Bitcask, keys: &[[u8; 16]], n: usize) -> f64 {
    let t = Instant::now();
    let mut found = 0usize;
    for i in 0..n {
        let k = &keys[splitmix(i as u64) as usize % keys.len()];
        found += e.get(k).expect("get").is_some() as usize;
    }
    assert_eq!(found, n);
    rate(n as u64, t.elapsed())
}

/// The in-memory index alone at `n` keys of 16 B: hash keydir + ordered index.
fn index_phase(n: usize, r: &mut Report) {
    let kd = Keydir::new();
    let loc = |i: usize| Loc {
        file: 1,
        offset: i as u32,
        len: 134,
        expiry_s: 0,
    };
    let t = Instant::now();
    for i in 0..n {
        kd.insert(&key(i), loc(i));
    }
    r.add(
        &format!("index insert of new keys ({n} keys, hash + ordered)"),
        rate(n as u64, t.elapsed()),
        "ops/s",
    );
    let t = Instant::now();
    for i in 0..n {
        kd.insert(&key(i), loc(i + 1));
    }
    r.add(
        "index overwrite of existing keys (hash only)",
        rate(n as u64, t.elapsed()),
        "ops/s",
    );
    let total = kd.memory_bytes() as f64 / n as f64;
    let ordered = kd.ordered_memory_bytes() as f64 / n as f64;
    r.add(
        &format!("index bytes per key minus key length at {n} keys"),
        total - 16.0,
        "B/key",
    );
    r.add(
        "  of which the hash keydir",
        total - ordered - 16.0,
        "B/key",
    );
    r.add("  of which the ordered index", ordered, "B/key");
    let t = Instant::now();
    let pages = 20_000usize;
    let mut listed = 0usize;
    for i in 0..pages {
        let start = key(n + i);
        let range = KeyRange {
            start: Some(&start),
            ..KeyRange::default()
        };
        listed += kd.list(&range, None, 100, 0).keys.len();
    }
    assert!(listed > 0);
    r.add(
        "index range page of 100 keys (no I/O)",
        rate(pages as u64, t.elapsed()),
        "pages/s",
    );
}

/// Listing through the engine: pages of 100 keys under a random one-byte prefix (about
/// n / 256 keys each) and from a random start key.
fn listing_phase(e: &Bitcask, n: usize, r: &mut Report) {
    let pages = 20_000usize;
    let t = Instant::now();
    let mut listed = 0usize;
    for i in 0..pages {
        let p = [key(n + i)[0]];
        listed += e.list(&p, None, 100).expect("list").keys.len();
    }
    assert!(listed > 0);
    r.add(
        "engine prefix listing, page of 100",
        rate(pages as u64, t.elapsed()),
        "pages/s",
    );
    let t = Instant::now();
    let mut after: Option<Vec<u8>> = None;
    let prefix = [key(7)[0]];
    for _ in 0..pages {
        let page = e.list(&prefix, after.as_deref(), 100).expect("list");
        after = page.next_start_after;
    }
    r.add(
        "engine prefix listing, next page by cursor",
        rate(pages as u64, t.elapsed()),
        "pages/s",
    );
    let t = Instant::now();
    for i in 0..pages {
        let start = key(n + i);
        let range = KeyRange {
            start: Some(&start),
            ..KeyRange::default()
        };
        e.list_range(&range, None, 100).expect("list");
    }
    r.add(
        "engine range listing [start, ..), page of 100",
        rate(pages as u64, t.elapsed()),
        "pages/s",
    );
}

/// Writes every dirty page back (`sync`), so a timed phase does not pay an earlier one's.
fn sync_all_files() {
    let _ = std::process::Command::new("sync").status();
}

/// Drops the kernel's page cache (needs root); false when not permitted.
fn drop_page_cache() -> bool {
    let _ = std::process::Command::new("sync").status();
    fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

fn hint_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "hint"))
        .collect()
}

fn main() {
    let a = args();
    let _ = fs::remove_dir_all(&a.dir);
    fs::create_dir_all(&a.dir).expect("bench dir");
    let n = a.keys;
    let mut r = Report { rows: Vec::new() };
    println!(
        "hoardhaven bitcask system benchmark: {n} keys of 16 B, values of 100 B, dir {}",
        a.dir.display()
    );

    if a.index_keys > 0 {
        index_phase(a.index_keys, &mut r);
    }
    r.add("disk sequential write", disk_seq_write(&a.dir), "MB/s");
    if a.only.as_deref().is_none_or(|o| o == "read") {
        r.add(
            "disk append + fdatasync (152 B)",
            disk_fsync_rate(&a.dir, false),
            "ops/s",
        );
        r.add(
            "disk overwrite in preallocated file + fdatasync",
            disk_fsync_rate(&a.dir, true),
            "ops/s",
        );
    }

    if a.writes_only {
        let e = Bitcask::open(
            &a.dir.join("never"),
            SyncPolicy::Never,
            &opts(ReadMode::Pread),
        )
        .expect("open");
        let value = Bytes::from(vec![b'v'; 100]);
        let t = Instant::now();
        for i in 0..n {
            e.put(&key(i), value.clone(), PutOptions::default())
                .expect("put");
        }
        r.add(
            "engine PUT sync=never, 1 thread",
            rate(n as u64, t.elapsed()),
            "ops/s",
        );
        drop(e);
        durable_writers(&a.dir, &mut r);
        print_write_ratios(&r);
        return;
    }

    let data = a.dir.join("store");
    let keys: Vec<[u8; 16]> = (0..n).map(key).collect();
    let value = Bytes::from(vec![b'v'; 100]);
    {
        let e = Bitcask::open(&data, SyncPolicy::Never, &opts(ReadMode::Pread)).expect("open");
        let t = Instant::now();
        for k in &keys {
            e.put(k, value.clone(), PutOptions::default()).expect("put");
        }
        r.add(
            "engine PUT sync=never, 1 thread",
            rate(n as u64, t.elapsed()),
            "ops/s",
        );
        let s = e.stats().expect("stats");
        r.add(
            "keydir bytes per key (index_bytes / keys)",
            s.index_bytes as f64 / s.keys as f64,
            "B/key",
        );
        r.add(
            "keydir bytes per key minus key length",
            s.index_bytes as f64 / s.keys as f64 - 16.0,
            "B/key",
        );
        let reads = n.clamp(200_000, 2_000_000);
        if a.runs("read") {
            gets(&e, &keys, reads / 10); // warm up
            r.add(
                "engine GET hot, 1 thread, pread (active+sealed)",
                gets(&e, &keys, reads),
                "ops/s",
            );
        }
        e.close().expect("close");
    }
    for mode in [ReadMode::Pread, ReadMode::Mmap] {
        if !a.runs("read") {
            break;
        }
        let e = Bitcask::open(&data, SyncPolicy::Never, &opts(mode)).expect("open");
        let reads = n.clamp(200_000, 2_000_000);
        gets(&e, &keys, reads / 10);
        let name = format!("engine GET hot, 1 thread, {mode:?} (after reopen)");
        r.add(&name, gets(&e, &keys, reads), "ops/s");
        if mode == ReadMode::Mmap {
            listing_phase(&e, n, &mut r);
        }
    }
    if a.only.as_deref() == Some("read") {
        print_json(&a, n, &r, &[]);
        let _ = fs::remove_dir_all(&a.dir);
        return;
    }
    if a.runs("startup") {
        startup_phase(&data, &a.dir, &mut r);
    }
    if a.only.is_none() {
        durable_writers(&a.dir, &mut r);
    }
    if a.runs("merge") {
        merge_phases(&data, &a.dir, &keys, n, &mut r);
    }
    print_ratios(&a, n, &r);
    let _ = fs::remove_dir_all(&a.dir);
}

/// Start-up: with hints, then with the hints moved away (full scan); each warm (files in the
/// page cache) and, when this process may drop the page cache (root), cold.
fn startup_phase(data: &Path, dir: &Path, r: &mut Report) {
    let open_ms = |cold: bool| -> Option<f64> {
        if cold && !drop_page_cache() {
            return None;
        }
        let t = Instant::now();
        drop(Bitcask::open(data, SyncPolicy::Never, &opts(ReadMode::Pread)).expect("open"));
        Some(t.elapsed().as_secs_f64() * 1000.0)
    };
    let cold_hints = open_ms(true);
    let with_hints = open_ms(false).expect("warm");
    let hints = hint_files(data);
    let aside = dir.join("hints-aside");
    fs::create_dir_all(&aside).expect("aside");
    for h in &hints {
        fs::rename(h, aside.join(h.file_name().expect("name"))).expect("move hint");
    }
    let cold_scan = open_ms(true);
    let scanned = open_ms(false).expect("warm");
    // Start-up may have written hints for the files it scanned: those go, the originals return.
    for h in hint_files(data) {
        fs::remove_file(h).expect("remove new hint");
    }
    for h in &hints {
        fs::rename(aside.join(h.file_name().expect("name")), h).expect("restore hint");
    }
    r.add("start-up with hint files", with_hints, "ms");
    r.add("start-up scanning data files", scanned, "ms");
    r.add(
        &format!("  ({} hint files)", hints.len()),
        hints.len() as f64,
        "files",
    );
    match (cold_hints, cold_scan) {
        (Some(h), Some(s)) => {
            r.add("start-up with hint files, cold page cache", h, "ms");
            r.add("start-up scanning data files, cold page cache", s, "ms");
        }
        _ => println!("(cold start-up not measured: cannot drop the page cache, not root)"),
    }
}

/// Random GETs on one thread until `stop` is set (and at least `min` of them): each one's
/// latency in nanoseconds, sorted.
fn get_latencies(e: &Bitcask, keys: &[[u8; 16]], stop: &AtomicBool, min: usize) -> Vec<u64> {
    let mut lat = Vec::with_capacity(1 << 20);
    let mut i = 0u64;
    while lat.len() < min || !stop.load(Ordering::Relaxed) {
        let k = &keys[splitmix(i ^ 0x5eed) as usize % keys.len()];
        let t = Instant::now();
        let v = e.get(k).expect("get");
        lat.push(t.elapsed().as_nanos() as u64);
        assert!(v.is_some());
        i += 1;
    }
    lat.sort_unstable();
    lat
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// Merge: overwrite half the keys, then merge (throughput beside the disk's sequential write
/// rate); again with one reader thread doing random GETs (mmap mode, the server's default),
/// its latency beside the same reader's with no merge right after; then 4 KiB values.
fn merge_phases(data: &Path, dir: &Path, keys: &[[u8; 16]], n: usize, r: &mut Report) {
    let value = Bytes::from(vec![b'v'; 100]);
    {
        let e = Bitcask::open(data, SyncPolicy::Never, &opts(ReadMode::Pread)).expect("open");
        for k in keys.iter().step_by(2) {
            e.put(k, value.clone(), PutOptions::default()).expect("put");
        }
        // Writeback of the PUT phase's pages neither slows the floor nor the merge.
        sync_all_files();
        let seq = disk_seq_write(dir);
        sync_all_files();
        let m = e.merge().expect("merge");
        let mbs = m.bytes_written as f64 / 1e6 / m.duration.as_secs_f64();
        let read_mbs = m.bytes_read as f64 / 1e6 / m.duration.as_secs_f64();
        r.add("disk sequential write (same phase as merge)", seq, "MB/s");
        r.add("merge write throughput", mbs, "MB/s");
        r.add("merge read throughput", read_mbs, "MB/s");
        r.add(
            "merge records read per second",
            (m.records_kept + m.records_dropped) as f64 / m.duration.as_secs_f64(),
            "records/s",
        );
        e.close().expect("close");
    }
    {
        let e = Bitcask::open(data, SyncPolicy::Never, &opts(ReadMode::Mmap)).expect("open");
        for k in keys.iter().skip(1).step_by(2) {
            e.put(k, value.clone(), PutOptions::default()).expect("put");
        }
        let stop = AtomicBool::new(false);
        let (during, m) = std::thread::scope(|s| {
            let reader = s.spawn(|| get_latencies(&e, keys, &stop, 1));
            let m = e.merge().expect("merge");
            stop.store(true, Ordering::Relaxed);
            (reader.join().expect("reader"), m)
        });
        // The same reader with no merge, on the merged store (every file sealed and mapped,
        // as the files are for most of the merge: it seals the active file first).
        let idle = get_latencies(&e, keys, &stop, during.len().max(200_000));
        for (when, lat) in [("no merge", &idle), ("during a merge", &during)] {
            for (name, q) in [("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999)] {
                r.add(
                    &format!("GET {name}, 1 reader, {when}"),
                    percentile(lat, q),
                    "us",
                );
            }
        }
        r.add(
            "  (GETs during the merge; merge ms with the reader)",
            during.len() as f64,
            &format!("gets, {} ms", m.duration.as_millis()),
        );
        e.close().expect("close");
    }

    // Merge of large values (4 KiB), where the disk rather than the keydir sets the pace.
    {
        let big = dir.join("big");
        let e = Bitcask::open(&big, SyncPolicy::Never, &opts(ReadMode::Pread)).expect("open");
        let v = Bytes::from(vec![b'b'; 4096]);
        let m = (n / 20).max(10_000);
        for round in 0..2 {
            for i in 0..m {
                if round == 0 || i % 2 == 0 {
                    e.put(&key(i), v.clone(), PutOptions::default())
                        .expect("put");
                }
            }
        }
        sync_all_files();
        let seq = disk_seq_write(dir);
        sync_all_files();
        let rep = e.merge().expect("merge");
        r.add(
            "disk sequential write (same phase as 4 KiB merge)",
            seq,
            "MB/s",
        );
        r.add(
            "merge write throughput, 4 KiB values",
            rep.bytes_written as f64 / 1e6 / rep.duration.as_secs_f64(),
            "MB/s",
        );
        e.close().expect("close");
    }
}

fn print_ratios(a: &Args, n: usize, r: &Report) {
    println!("\nratios (same run):");
    let ratio = |a: f64, b: f64| a / b;
    let lines = [
        (
            "PUT sync=always 1 writer / preallocated overwrite+fdatasync",
            ratio(
                r.get("engine PUT sync=always, 1 writers"),
                r.get("disk overwrite in preallocated file + fdatasync"),
            ),
        ),
        (
            "PUT sync=always 1 writer / append+fdatasync",
            ratio(
                r.get("engine PUT sync=always, 1 writers"),
                r.get("disk append + fdatasync (152 B)"),
            ),
        ),
        (
            "PUT sync=always 64 writers / append+fdatasync",
            ratio(
                r.get("engine PUT sync=always, 64 writers"),
                r.get("disk append + fdatasync (152 B)"),
            ),
        ),
        (
            "start-up scan / start-up with hints",
            ratio(
                r.get("start-up scanning data files"),
                r.get("start-up with hint files"),
            ),
        ),
        (
            "start-up scan / start-up with hints, cold page cache",
            ratio(
                r.get("start-up scanning data files, cold page cache"),
                r.get("start-up with hint files, cold page cache"),
            ),
        ),
        (
            "merge write / disk sequential write",
            ratio(
                r.get("merge write throughput"),
                r.get("disk sequential write (same phase as merge)"),
            ),
        ),
        (
            "merge write, 4 KiB values / disk sequential write",
            ratio(
                r.get("merge write throughput, 4 KiB values"),
                r.get("disk sequential write (same phase as 4 KiB merge)"),
            ),
        ),
        (
            "GET p99 during a merge / GET p99 without one",
            ratio(
                r.get("GET p99, 1 reader, during a merge"),
                r.get("GET p99, 1 reader, no merge"),
            ),
        ),
    ];
    // Only the ratios of the phases that ran.
    let lines: Vec<(&str, f64)> = lines.into_iter().filter(|(_, v)| !v.is_nan()).collect();
    for (name, v) in &lines {
        println!("{name:<62} {v:>8.2}x");
    }
    print_json(a, n, r, &lines);
}

fn print_json(a: &Args, n: usize, r: &Report, lines: &[(&str, f64)]) {
    let Some(path) = &a.json else {
        return;
    };
    let mut out = String::from("{\n  \"keys\": ");
    out.push_str(&n.to_string());
    out.push_str(",\n  \"figures\": [\n");
    let rows: Vec<String> = r
        .rows
        .iter()
        .map(|(k, v, u)| format!("    {{\"name\": {k:?}, \"value\": {v:.3}, \"unit\": {u:?}}}"))
        .collect();
    out.push_str(&rows.join(",\n"));
    out.push_str("\n  ],\n  \"ratios\": [\n");
    let rs: Vec<String> = lines
        .iter()
        .map(|(k, v)| format!("    {{\"name\": {k:?}, \"ratio\": {v:.3}}}"))
        .collect();
    out.push_str(&rs.join(",\n"));
    out.push_str("\n  ]\n}\n");
    fs::write(path, out).expect("write json");
}
