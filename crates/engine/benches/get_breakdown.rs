//! Where a hot GET of the bitcask engine spends its time, one thread, 1 M keys of 16 B with
//! 100 B values (the keys and access pattern of `bitcask_system`): the keydir lookup alone
//! (random keys, then 1,000 keys that stay in cache), CRC32C of one record, and the engine's
//! GET in mmap mode with the default file size (after a reopen the last file, here all the
//! data, is the active file again; it is mapped ahead of its end like a sealed one).
//!
//! ```text
//! cargo bench -p hoardhaven-engine --bench get_breakdown
//! ```
mod keys;
use bytes::Bytes;
use hoardhaven_engine::bitcask::keydir::{Keydir, Loc};
use hoardhaven_engine::bitcask::{Bitcask, BitcaskOptions, ReadMode};
use hoardhaven_engine::{Engine, PutOptions, SyncPolicy};
use keys::{key, splitmix};
use std::time::Instant;
fn main() {
    let n = 1_000_000usize;
    let reads = 2_000_000usize;
    let keys: Vec<[u8; 16]> = (0..n).map(key).collect();
    let pick = |i: usize| &keys[splitmix(i as u64) as usize % n];
    // 1. keydir alone
    let kd = Keydir::deferring_order();
    for (i, k) in keys.iter().enumerate() {
        kd.insert(
            k,
            Loc {
                file: 1,
                offset: i as u32,
                len: 134,
                expiry_s: 0,
            },
        );
    }
    let t = Instant::now();
    let mut s = 0u64;
    for i in 0..reads {
        s += kd.get(pick(i)).map_or(0, |l| u64::from(l.offset));
    }
    println!(
        "keydir get alone: {:.0} ns/op ({s})",
        t.elapsed().as_nanos() as f64 / reads as f64
    );
    let t = Instant::now();
    for i in 0..reads {
        s += kd.get(&keys[i % 1000]).map_or(0, |l| u64::from(l.offset));
    }
    println!(
        "keydir get alone, 1000 hot keys: {:.0} ns/op ({s})",
        t.elapsed().as_nanos() as f64 / reads as f64
    );
    drop(kd);
    // 2. crc32c of a 134 B record
    let rec = [7u8; 134];
    let t = Instant::now();
    let mut c = 0u32;
    for i in 0..reads {
        c ^= crc32c::crc32c(&rec[..134 - (i & 1)]);
    }
    println!(
        "crc32c of 134 B: {:.1} ns/op ({c})",
        t.elapsed().as_nanos() as f64 / reads as f64
    );
    // 3. engine GET, mmap
    let dir = std::env::temp_dir().join("hh-scratch-get");
    let _ = std::fs::remove_dir_all(&dir);
    let o = BitcaskOptions {
        read_mode: ReadMode::Mmap,
        ..BitcaskOptions::default()
    };
    {
        let e = Bitcask::open(&dir, SyncPolicy::Never, &o).expect("open");
        let v = Bytes::from(vec![b'v'; 100]);
        for k in &keys {
            e.put(k, v.clone(), PutOptions::default()).expect("put");
        }
        e.close().expect("close");
    }
    let e = Bitcask::open(&dir, SyncPolicy::Never, &o).expect("open");
    for i in 0..reads / 10 {
        e.get(pick(i)).expect("get");
    }
    let t = Instant::now();
    let mut f = 0usize;
    for i in 0..reads {
        f += e.get(pick(i)).expect("get").is_some() as usize;
    }
    println!(
        "engine GET mmap: {:.0} ns/op ({f})",
        t.elapsed().as_nanos() as f64 / reads as f64
    );
    // 4. the same keys in sequence (no random miss on the keydir or the map)
    let t = Instant::now();
    for i in 0..reads {
        f += e.get(&keys[i % 1000]).expect("get").is_some() as usize;
    }
    println!(
        "engine GET mmap, 1000 hot keys: {:.0} ns/op ({f})",
        t.elapsed().as_nanos() as f64 / reads as f64
    );
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}
