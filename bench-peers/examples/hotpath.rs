//! A fixed engine workload to profile (callgrind counts instructions, so it is repeatable on a
//! noisy machine): `N` puts of 16 B keys with 100 B values into bitcask (sync=never), then `N`
//! random gets.
//!
//! ```text
//! cargo build --release -p hoardhaven-bench-peers --example hotpath
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/hotpath 200000
//! callgrind_annotate cg.out | head -40
//! ```

use bytes::Bytes;
use hoardhaven_bench_peers::{key, splitmix, value};
use hoardhaven_engine::SyncPolicy;
use hoardhaven_engine::bitcask::{Bitcask, BitcaskOptions};
use hoardhaven_engine::{Engine, PutOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir()?;
    let mut o = BitcaskOptions::default();
    o.merge.check_interval = None;
    let e = Bitcask::open(dir.path(), SyncPolicy::Never, &o)?;
    let v: Bytes = value(100);
    let keys: Vec<[u8; 16]> = (0..n).map(key).collect();
    for k in &keys {
        e.put(k, v.clone(), PutOptions::default())?;
    }
    let mut found = 0u64;
    for i in 0..n {
        let k = &keys[(splitmix(i) % n) as usize];
        found += e.get(k)?.is_some() as u64;
    }
    e.close()?;
    println!("{n} puts, {found} gets found");
    Ok(())
}
