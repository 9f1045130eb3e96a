//! Memory-engine measurements (one run, no statistics): single-thread put/get throughput,
//! durable puts at 1 and 64 threads, the longest request pause during a background snapshot,
//! and bytes per key (resident memory growth while loading).
//!
//! `cargo bench --bench memory_bench -- [all|mem N|durable]` (default `all` with 1 M keys).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hoardhaven_engine::SyncPolicy;
use hoardhaven_engine::memory::{MemoryEngine, MemoryOptions};
use hoardhaven_engine::{Engine, PutOptions};

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(format!("key:{i:012}").as_bytes());
    k
}

fn value(i: u64) -> Bytes {
    let mut v = vec![0u8; 100];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut v {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = b'a' + (x % 26) as u8;
    }
    Bytes::from(v)
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn opts(aof: bool) -> MemoryOptions {
    MemoryOptions {
        aof,
        save_points: vec![],
        rewrite_min_bytes: u64::MAX,
        ..MemoryOptions::default()
    }
}

fn keys(n: u64) -> Vec<[u8; 16]> {
    (0..n).map(key).collect()
}

/// Loads keys `0..n`, each with its own 100 B value; values are made outside the clock.
fn load(e: &MemoryEngine, ks: &[[u8; 16]]) -> f64 {
    let mut spent = Duration::ZERO;
    for (chunk_no, chunk) in ks.chunks(100_000).enumerate() {
        let vals: Vec<Bytes> = (0..chunk.len())
            .map(|j| value((chunk_no * 100_000 + j) as u64))
            .collect();
        let t = Instant::now();
        for (k, v) in chunk.iter().zip(vals) {
            e.put(k, v, PutOptions::default()).expect("put");
        }
        spent += t.elapsed();
    }
    ks.len() as f64 / spent.as_secs_f64()
}

fn mem(dir: &Path, n: u64) {
    let e = MemoryEngine::open(dir, SyncPolicy::Never, &opts(false)).expect("open");
    // Values are built before measuring so that only the engine's memory is counted.
    let ks = keys(n);
    let before = rss_bytes();
    let rate = load(&e, &ks);
    let after = rss_bytes();
    let st = e.stats().expect("stats");
    println!(
        "mem: {n} keys (16 B keys, 100 B values), load {rate:.0} puts/s (aof off); RSS growth {:.1} B/key; engine-counted table {:.1} B/key",
        (after - before) as f64 / n as f64,
        st.index_bytes as f64 / n as f64
    );
}

fn throughput(dir: &Path, n: u64) {
    let e = Arc::new(MemoryEngine::open(dir, SyncPolicy::Never, &opts(true)).expect("open"));
    let ks = keys(n);
    let rate = load(&e, &ks);
    println!("put, sync=never, aof on, 1 thread: {rate:.0} ops/s ({n} keys)");
    let mut x = 12345u64;
    let order: Vec<usize> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as usize
        })
        .collect();
    let t = Instant::now();
    let mut found = 0u64;
    for &i in &order {
        if e.get(&ks[i]).expect("get").is_some() {
            found += 1;
        }
    }
    assert_eq!(found, n);
    println!(
        "get, hot, 1 thread: {:.0} ops/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    // Longest request pause while a snapshot of the n keys is written in the background.
    let done = Arc::new(AtomicBool::new(false));
    let snap = {
        let (e, done) = (e.clone(), done.clone());
        std::thread::spawn(move || {
            let r = e.snapshot().expect("snapshot");
            done.store(true, Ordering::Release);
            r
        })
    };
    let (mut worst, mut ops, mut i) = (Duration::ZERO, 0u64, 0usize);
    let (start, mut worst_at) = (Instant::now(), Duration::ZERO);
    let mut lat = Vec::new();
    let v = value(7);
    let n = n as usize;
    while !done.load(Ordering::Acquire) {
        i = (i + 7919) % n;
        let t = Instant::now();
        e.put(&ks[i], v.clone(), PutOptions::default())
            .expect("put");
        e.get(&ks[(i * 31) % n]).expect("get");
        let d = t.elapsed();
        lat.push(d);
        if d > worst {
            worst = d;
            worst_at = start.elapsed();
        }
        ops += 1;
    }
    let r = snap.join().expect("join");
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "snapshot of {} keys: {:?}, {} bytes; during it {ops} put+get pairs, longest {:?} (at {:?}), p99.9 {:?}, p99 {:?}",
        r.keys,
        r.duration,
        r.bytes,
        worst,
        worst_at,
        p(0.999),
        p(0.99)
    );
}

/// The disk's append + fdatasync rate right now, for comparison.
fn probe_fsync(dir: &Path) -> f64 {
    use std::io::Write;
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join("probe");
    let mut f = std::fs::File::create(&path).expect("probe");
    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&[b'x'; 150]).expect("write");
        f.sync_data().expect("fdatasync");
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    rate
}

fn durable(dir: &Path) {
    println!(
        "disk probe, 150 B append + fdatasync: {:.0}/s",
        probe_fsync(&dir.join("probe"))
    );
    let e = Arc::new(MemoryEngine::open(dir, SyncPolicy::Always, &opts(true)).expect("open"));
    let n = 3000u64;
    let t = Instant::now();
    for i in 0..n {
        e.put(&key(i), value(i), PutOptions::default())
            .expect("put");
    }
    println!(
        "put, sync=always, 1 thread: {:.0} ops/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let (threads, per) = (64u64, 400u64);
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|th| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let k = th * 1_000_000 + i;
                    e.put(&key(k), value(k), PutOptions::default())
                        .expect("put");
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("join");
    }
    println!(
        "put, sync=always, 64 threads: {:.0} ops/s",
        (threads * per) as f64 / t.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = tempfile::tempdir_in(".").expect("tmp");
    let n = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000u64);
    match args.first().map(String::as_str) {
        Some("mem") => mem(dir.path(), n),
        Some("durable") => durable(dir.path()),
        Some("throughput") => throughput(dir.path(), n),
        _ => {
            throughput(&dir.path().join("t"), n);
            durable(&dir.path().join("d"));
        }
    }
}
