//! No torn reads: readers and writers on the same keys at once, on both engines (bitcask with
//! `pread` and with `mmap` reads), while merges and snapshots (bitcask) or snapshots and log
//! rewrites (memory) run. Every value embeds its key, a sequence number and a checksum, so a
//! read of half a record, of another key's record, of buffer bytes not yet written or of a
//! file retired by a merge shows. Each key has one writer, so a reader must also never see a
//! key go back to an older value than one it already read (sequence numbers only grow).

mod claims_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use claims_support::{check, options, seed, value, wait_until};
use hoardhaven::engine::bitcask::ReadMode;
use hoardhaven::engine::{
    BatchOp, Engine, EngineKind, Error, Precondition, PutOptions, SyncPolicy,
};

const KEYS: usize = 16;
const WRITERS: usize = 2;
const READERS: usize = 2;
const OPS: u64 = 1500;

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:02}").into_bytes()
}

fn writer(e: Arc<dyn Engine>, t: usize, seed: u64, reads: Arc<AtomicU64>) {
    let mut rng = fastrand::Rng::with_seed(seed ^ (t as u64 + 7));
    let mine: Vec<usize> = (0..KEYS).filter(|k| k % WRITERS == t).collect();
    for seq in 1..=OPS {
        if seq == OPS / 2 {
            // Half way: the readers are reading these keys (so they read during the rest).
            let seen = reads.load(Ordering::Relaxed);
            wait_until("readers read during the writes", || {
                reads.load(Ordering::Relaxed) >= seen + KEYS as u64
            });
        }
        let k = key(mine[rng.u64(..mine.len() as u64) as usize]);
        // Sizes across the bitcask buffer and flush boundaries.
        let pad = rng.u64(..3000) as usize;
        match rng.u64(..10) {
            0 => {
                e.delete(&k, Precondition::None).expect("delete");
            }
            1 => {
                let k2 = key(mine[rng.u64(..mine.len() as u64) as usize]);
                let ops = [k.clone(), k2]
                    .into_iter()
                    .map(|k| BatchOp::Put {
                        value: Bytes::from(value(&k, seq, pad)),
                        key: k,
                        expires_at: None,
                    })
                    .collect();
                e.apply_batch(ops).expect("batch");
            }
            _ => {
                e.put(&k, Bytes::from(value(&k, seq, pad)), PutOptions::default())
                    .expect("put");
            }
        }
    }
}

fn reader(e: Arc<dyn Engine>, done: Arc<AtomicBool>, reads: Arc<AtomicU64>, what: String) {
    let mut last = [0u64; KEYS];
    loop {
        // Read once more after the writers are done, then stop.
        let finished = done.load(Ordering::Acquire);
        for (i, seen) in last.iter_mut().enumerate() {
            let k = key(i);
            let got = e
                .get(&k)
                .unwrap_or_else(|err| panic!("{what}: get {i}: {err}"));
            if let Some(v) = got {
                let s = check(&k, &v.bytes)
                    .unwrap_or_else(|err| panic!("{what}: torn read of key {i}: {err}"));
                assert!(
                    s >= *seen,
                    "{what}: key {i} went back from {} to {s}",
                    *seen
                );
                *seen = s;
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }
        if finished {
            return;
        }
    }
}

fn run(kind: EngineKind, read_mode: ReadMode) {
    let what = format!("{kind} ({read_mode:?})");
    let seed = seed(&what);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut opts = options(kind, &tmp.path().join("data"), SyncPolicy::Never);
    opts.bitcask.read_mode = read_mode;
    opts.bitcask.max_file_size = 256 * 1024;
    let e = hoardhaven::engine::open(&opts).expect("open");
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let jobs_done = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (e, done, reads, what) = (e.clone(), done.clone(), reads.clone(), what.clone());
            std::thread::spawn(move || reader(e, done, reads, what))
        })
        .collect();
    let jobs = {
        let (e, done, jobs_done) = (e.clone(), done.clone(), jobs_done.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::Acquire) {
                n += 1;
                let r = if n.is_multiple_of(2) {
                    e.merge().map(|_| ())
                } else {
                    e.snapshot().map(|_| ())
                };
                match r {
                    Ok(()) => {
                        jobs_done.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(Error::Busy(_)) => {}
                    Err(err) => panic!("background job: {err}"),
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (e, reads) = (e.clone(), reads.clone());
            std::thread::spawn(move || writer(e, t, seed, reads))
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    wait_until(&format!("{what}: background jobs ran"), || {
        jobs_done.load(Ordering::Acquire) >= 2
    });
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().expect("reader");
    }
    jobs.join().expect("jobs");
    let n = reads.load(Ordering::Relaxed);
    eprintln!("{what}: {n} values read and checked");
    assert!(n > 0, "{what}: no value was read");
    e.close().expect("close");
}

#[test]
fn bitcask_pread_serves_no_torn_value() {
    run(EngineKind::Bitcask, ReadMode::Pread);
}

#[test]
fn bitcask_mmap_serves_no_torn_value() {
    run(EngineKind::Bitcask, ReadMode::Mmap);
}

#[test]
fn memory_serves_no_torn_value() {
    run(EngineKind::Memory, ReadMode::Pread);
}
