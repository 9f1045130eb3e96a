//! Criterion benchmarks: hoardhaven's bitcask and memory engines beside sled, redb and fjall,
//! same workloads, equal durability.
//!
//! ```text
//! cargo bench -p hoardhaven-bench-peers --bench engines            # the full run
//! HH_BENCH_KEYS=100000 HH_BENCH_SECS=1 cargo bench -p hoardhaven-bench-peers --bench engines
//! ```
//!
//! Workloads, 16 B keys, values of 100 B and 4 KiB:
//! - no sync: point get (hot data), point put (overwrite), mixed 90/10, batch put (100 keys),
//!   prefix listing (a group of 64 keys, limit 100);
//! - sync on every write: point put, mixed 90/10, batch put, and point put from 8 writers
//!   (where group commit shows).
//!
//! Environment: `HH_BENCH_KEYS` keys loaded for 100 B values (default 1,000,000);
//! `HH_BENCH_KEYS_4K` for 4 KiB values (default 250,000, i.e. 1 GiB per store; set it to
//! 1000000 for the 4 GiB run); `HH_BENCH_SECS` measurement seconds per benchmark (default 2);
//! `HH_BENCH_STORES` a comma list of stores to run (default all); `HH_BENCH_DIR` where the
//! stores live (default the system temp dir).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use hoardhaven_bench_peers::{Durability, Kind, Store, group_prefix, key, load, splitmix, value};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Ctx<'a> {
    store: Arc<dyn Store>,
    keys: u64,
    /// Every key, made before measuring so that formatting is not timed.
    all: &'a [[u8; 16]],
    value: Bytes,
}

impl Ctx<'_> {
    fn pick(&self, i: u64) -> [u8; 16] {
        self.all[(splitmix(i) % self.keys) as usize]
    }
}

fn point_get(c: &mut Criterion, group: &str, id: &str, x: &Ctx) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| {
            i += 1;
            x.store.get(&x.pick(i)).expect("get")
        })
    });
    g.finish();
}

fn point_put(c: &mut Criterion, group: &str, id: &str, x: &Ctx) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut i = 1u64 << 40;
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| {
            i += 1;
            x.store.put(&x.pick(i), &x.value).expect("put")
        })
    });
    g.finish();
}

fn mixed(c: &mut Criterion, group: &str, id: &str, x: &Ctx) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut i = 2u64 << 40;
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| {
            i += 1;
            let k = x.pick(i);
            if i.is_multiple_of(10) {
                x.store.put(&k, &x.value).expect("put");
            } else {
                x.store.get(&k).expect("get");
            }
        })
    });
    g.finish();
}

fn batch_put(c: &mut Criterion, group: &str, id: &str, x: &Ctx) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(100));
    let mut i = 3u64 << 40;
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter_batched(
            || {
                (0..100)
                    .map(|_| {
                        i += 1;
                        (x.pick(i), x.value.clone())
                    })
                    .collect::<Vec<_>>()
            },
            |pairs| x.store.put_batch(&pairs).expect("batch"),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn prefix_list(c: &mut Criterion, group: &str, id: &str, x: &Ctx) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut i = 4u64 << 40;
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| {
            i += 1;
            let p = group_prefix(splitmix(i) % x.keys);
            x.store.list(&p, 100).expect("list")
        })
    });
    g.finish();
}

/// Durable puts from 8 threads at once: criterion's iteration count is shared out among them
/// and the wall-clock time of the whole is reported.
fn put_writers(c: &mut Criterion, group: &str, id: &str, x: &Ctx, writers: u64) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(writers);
            let t = Instant::now();
            std::thread::scope(|s| {
                for w in 0..writers {
                    s.spawn(move || {
                        for j in 0..per {
                            let k = x.pick((5 << 40) + w * (1 << 32) + j);
                            x.store.put(&k, &x.value).expect("put");
                        }
                    });
                }
            });
            t.elapsed()
        })
    });
    g.finish();
}

fn main() {
    let secs = env_u64("HH_BENCH_SECS", 2);
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(secs))
        .without_plots()
        .configure_from_args();
    let stores: Vec<Kind> = match std::env::var("HH_BENCH_STORES") {
        Ok(list) => Kind::ALL
            .into_iter()
            .filter(|k| list.split(',').any(|n| k.name().ends_with(n.trim())))
            .collect(),
        Err(_) => Kind::ALL.to_vec(),
    };
    let base = std::env::var("HH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir())
        .join("hoardhaven-peers-bench");
    let sizes = [
        (100usize, env_u64("HH_BENCH_KEYS", 1_000_000)),
        (4096, env_u64("HH_BENCH_KEYS_4K", 250_000)),
    ];
    for (vlen, keys) in sizes {
        for kind in &stores {
            let dir = base.join(format!("{}-{vlen}", kind.name()));
            let _ = std::fs::remove_dir_all(&dir);
            let v = value(vlen);
            let id = kind.name();
            let all: Vec<[u8; 16]> = (0..keys).map(key).collect();
            {
                let store = kind.open(&dir, Durability::None).expect("open");
                let t = Instant::now();
                load(store.as_ref(), keys, &v).expect("load");
                eprintln!(
                    "loaded {keys} keys of {vlen} B into {id} in {:.2}s",
                    t.elapsed().as_secs_f64()
                );
                let x = Ctx {
                    store,
                    keys,
                    all: &all,
                    value: v.clone(),
                };
                let d = Durability::None.name();
                point_get(&mut c, &format!("get/{vlen}B"), id, &x);
                point_put(&mut c, &format!("put/{vlen}B/{d}"), id, &x);
                mixed(&mut c, &format!("mixed90-10/{vlen}B/{d}"), id, &x);
                batch_put(&mut c, &format!("batch100/{vlen}B/{d}"), id, &x);
                prefix_list(&mut c, &format!("prefix-list/{vlen}B"), id, &x);
            }
            {
                let store = kind.open(&dir, Durability::Sync).expect("reopen");
                let x = Ctx {
                    store,
                    keys,
                    all: &all,
                    value: v.clone(),
                };
                let d = Durability::Sync.name();
                point_put(&mut c, &format!("put/{vlen}B/{d}"), id, &x);
                mixed(&mut c, &format!("mixed90-10/{vlen}B/{d}"), id, &x);
                batch_put(&mut c, &format!("batch100/{vlen}B/{d}"), id, &x);
                put_writers(&mut c, &format!("put-8-writers/{vlen}B/{d}"), id, &x, 8);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    c.final_summary();
}
