//! Value compression beside none, on a corpus this bench generates: JSON documents of
//! 1-8 KiB, log-line chunks of 1-8 KiB, random bytes of 1-8 KiB (and small JSON values of
//! 200-900 bytes, below the default threshold, to show small writes do not pay for it).
//!
//! ```text
//! cargo bench -p hoardhaven-engine --bench compression -- [--values 20000] [--dir /path]
//! ```
//!
//! For each corpus and codec, on the bitcask engine with `sync=never` (so the figures are the
//! CPU cost, not the fsync): PUT throughput on one thread, data bytes on disk after close,
//! GET throughput on one thread (mmap read mode, values in sealed files, random order), then
//! every key overwritten once and the merge timed. On the memory engine: the log bytes and PUT
//! throughput. Every figure beside `none` measured in the same run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use hoardhaven_engine::bitcask::{Bitcask, BitcaskOptions, ReadMode};
use hoardhaven_engine::compression::{Algorithm, Compression};
use hoardhaven_engine::memory::{MemoryEngine, MemoryOptions};
use hoardhaven_engine::{Engine, PutOptions, SyncPolicy};

/// xorshift64*: a deterministic corpus without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
];

fn json_doc(r: &mut Rng, size: usize) -> Vec<u8> {
    let mut s = format!("{{\"id\":\"{:016x}\",\"events\":[", r.next());
    while s.len() < size {
        let w = WORDS[r.below(WORDS.len() as u64) as usize];
        s.push_str(&format!(
            "{{\"ts\":{},\"user\":\"user-{}\",\"action\":\"{w}\",\"amount\":{}.{:02},\"ok\":{}}},",
            1_700_000_000_000u64 + r.below(1_000_000_000),
            r.below(5000),
            r.below(10_000),
            r.below(100),
            r.below(2) == 0
        ));
    }
    s.truncate(size.saturating_sub(2));
    s.push_str("]}");
    s.into_bytes()
}

fn log_lines(r: &mut Rng, size: usize) -> Vec<u8> {
    let mut s = String::new();
    while s.len() < size {
        let level = ["INFO", "WARN", "DEBUG", "ERROR"][r.below(4) as usize];
        let w = WORDS[r.below(WORDS.len() as u64) as usize];
        s.push_str(&format!(
            "2026-12-03T11:{:02}:{:02}.{:03}Z {level} hoardhaven::http: request method=GET path=/kv/{w}-{} status=200 latency_us={} peer=10.0.{}.{}:{}\n",
            r.below(60),
            r.below(60),
            r.below(1000),
            r.below(100_000),
            r.below(5000),
            r.below(256),
            r.below(256),
            r.below(65_536)
        ));
    }
    s.truncate(size);
    s.into_bytes()
}

fn random_bytes(r: &mut Rng, size: usize) -> Vec<u8> {
    (0..size).map(|_| r.next() as u8).collect()
}

struct Corpus {
    name: &'static str,
    values: Vec<Bytes>,
}

fn corpora(n: usize) -> Vec<Corpus> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut gen_with = |name, f: fn(&mut Rng, usize) -> Vec<u8>, lo: u64, hi: u64| {
        let values = (0..n)
            .map(|_| {
                let size = (lo + r.below(hi - lo + 1)) as usize;
                Bytes::from(f(&mut r, size))
            })
            .collect();
        Corpus { name, values }
    };
    vec![
        gen_with("json 1-8 KiB", json_doc, 1024, 8192),
        gen_with("log lines 1-8 KiB", log_lines, 1024, 8192),
        gen_with("random 1-8 KiB", random_bytes, 1024, 8192),
        gen_with("json 200-900 B", json_doc, 200, 900),
    ]
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

fn data_bytes(dir: &Path, ext: &str) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == ext))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

fn comp(a: Algorithm) -> Compression {
    Compression {
        algorithm: a,
        ..Compression::default()
    }
}

struct Row {
    put_per_s: f64,
    disk: u64,
    get_per_s: f64,
    merge_ms: f64,
    mem_log: u64,
    mem_put_per_s: f64,
}

fn run(base: &Path, c: &Corpus, a: Algorithm) -> Row {
    let dir = base.join(format!("{}-{a}", c.name.replace(' ', "_")));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = BitcaskOptions {
        max_file_size: 64 << 20,
        read_mode: ReadMode::Mmap,
        compression: comp(a),
        ..BitcaskOptions::default()
    };
    let e = Bitcask::open(&dir, SyncPolicy::Never, &opts).expect("open");
    let t = Instant::now();
    for (i, v) in c.values.iter().enumerate() {
        e.put(&key(i), v.clone(), PutOptions::default())
            .expect("put");
    }
    e.sync().expect("sync");
    let put_per_s = c.values.len() as f64 / t.elapsed().as_secs_f64();
    e.close().expect("close");
    drop(e);
    let disk = data_bytes(&dir, "data");
    // Reopen: the data is in sealed files, read through their maps.
    let e = Bitcask::open(&dir, SyncPolicy::Never, &opts).expect("reopen");
    let mut r = Rng(7);
    let n = c.values.len();
    let t = Instant::now();
    let mut total = 0usize;
    for _ in 0..n {
        let i = r.below(n as u64) as usize;
        let v = e.get(&key(i)).expect("get").expect("present");
        assert_eq!(v.bytes.len(), c.values[i].len());
        total += v.bytes.len();
    }
    let get_per_s = n as f64 / t.elapsed().as_secs_f64();
    assert!(total > 0);
    // Every key overwritten once: half of the store is dead, then merged.
    for (i, v) in c.values.iter().enumerate() {
        e.put(&key(i), v.clone(), PutOptions::default())
            .expect("put");
    }
    e.sync().expect("sync");
    let t = Instant::now();
    e.merge().expect("merge");
    let merge_ms = t.elapsed().as_secs_f64() * 1e3;
    e.close().expect("close");
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    // The memory engine's log.
    let mopts = MemoryOptions {
        compression: comp(a),
        save_points: Vec::new(),
        rewrite_min_bytes: u64::MAX,
        ..MemoryOptions::default()
    };
    let e = MemoryEngine::open(&dir, SyncPolicy::Never, &mopts).expect("open memory");
    let t = Instant::now();
    for (i, v) in c.values.iter().enumerate() {
        e.put(&key(i), v.clone(), PutOptions::default())
            .expect("put");
    }
    e.sync().expect("sync");
    let mem_put_per_s = n as f64 / t.elapsed().as_secs_f64();
    e.close().expect("close");
    drop(e);
    let mem_log = data_bytes(&dir, "hha");
    let _ = std::fs::remove_dir_all(&dir);
    Row {
        put_per_s,
        disk,
        get_per_s,
        merge_ms,
        mem_log,
        mem_put_per_s,
    }
}

fn main() {
    let mut values = 20_000usize;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--values" => {
                values = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--values N")
            }
            "--dir" => dir = args.next().map(PathBuf::from),
            _ => {} // cargo bench passes --bench
        }
    }
    let tmp = tempfile::tempdir_in(dir.unwrap_or_else(std::env::temp_dir)).expect("tempdir");
    println!(
        "values per corpus: {values}; bitcask sync=never, mmap reads; memory engine log, sync=never"
    );
    println!(
        "| corpus | codec | raw MiB | bitcask data MiB | saved | PUT/s | GET/s | merge ms | memory log MiB | memory PUT/s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in corpora(values) {
        let raw: u64 = c.values.iter().map(|v| v.len() as u64).sum();
        let mut base_disk = 0;
        for a in [Algorithm::None, Algorithm::Lz4] {
            let row = run(tmp.path(), &c, a);
            if a == Algorithm::None {
                base_disk = row.disk;
            }
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            println!(
                "| {} | {a} | {:.1} | {:.1} | {:.0} % | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} |",
                c.name,
                mib(raw),
                mib(row.disk),
                100.0 * (1.0 - row.disk as f64 / base_disk as f64),
                row.put_per_s,
                row.get_per_s,
                row.merge_ms,
                mib(row.mem_log),
                row.mem_put_per_s
            );
        }
    }
}
