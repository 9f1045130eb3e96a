//! Snapshots are consistent cuts while the store serves writes, on both engines.
//!
//! One writer increments a set of counters, all of them in one batch each time. Each snapshot
//! is held in flight (its first link or rename is held through the fault seam) until the
//! writer has acknowledged more batches, so the store provably served writes during it. The
//! snapshot is then restored into a directory of its own and opened: all counters must be
//! equal (a cut never splits a batch), at least the count acknowledged before the snapshot
//! began and at most the count acknowledged when it returned, and no value may have a version
//! above the one the snapshot reports as its cut.

mod claims_support;
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use claims_support::{ENGINES, check, open, value, wait_until};
use hoardhaven::engine::fault::{self, Op};
use hoardhaven::engine::{BatchOp, EngineKind, PutOptions, SyncPolicy};

const COUNTERS: usize = 5;
const SNAPSHOTS: usize = 8;

fn counter(i: usize) -> Vec<u8> {
    format!("counter-{i}").into_bytes()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn snapshots_taken_under_writes_are_consistent_cuts() {
    for kind in ENGINES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        // Bitcask durable (a linked active file would show the writes after the cut); memory
        // as fast as it goes (more batches race each cut).
        let sync = match kind {
            EngineKind::Bitcask => SyncPolicy::Always,
            EngineKind::Memory => SyncPolicy::Never,
        };
        let e = open(kind, &dir, sync);
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (e, acked, stop) = (e.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    let ops = (0..COUNTERS)
                        .map(|i| {
                            let k = counter(i);
                            BatchOp::Put {
                                value: Bytes::from(value(&k, n, 200)),
                                key: k,
                                expires_at: None,
                            }
                        })
                        .collect();
                    e.apply_batch(ops).expect("batch");
                    // Unrelated writes, so bitcask files fill and rotate.
                    let k = format!("noise-{}", n % 50).into_bytes();
                    e.put(&k, Bytes::from(value(&k, n, 300)), PutOptions::default())
                        .expect("put");
                    acked.store(n, Ordering::Release);
                }
            })
        };
        let mut cuts = Vec::new();
        for i in 0..SNAPSHOTS {
            let hold = fault::hold(&dir, Op::Rename);
            let before = acked.load(Ordering::Acquire);
            let job = e.start_snapshot().expect("start snapshot");
            hold.wait_blocked(1);
            let during = acked.load(Ordering::Acquire);
            wait_until(
                &format!("{kind}: writes served during snapshot {i}"),
                || acked.load(Ordering::Acquire) >= during + 20,
            );
            drop(hold);
            let r = job.wait().expect("snapshot");
            let after = acked.load(Ordering::Acquire);
            let to = tmp.path().join(format!("restore-{i}"));
            match kind {
                EngineKind::Bitcask => copy_dir(&r.path, &to),
                EngineKind::Memory => common::restore_memory_snapshot(&r.path, &to),
            }
            cuts.push((to, before, after, r.version));
        }
        stop.store(true, Ordering::Release);
        writer.join().expect("writer");
        e.close().expect("close");
        let mut last = 0;
        for (i, (to, before, after, version)) in cuts.iter().enumerate() {
            let r = open(kind, to, SyncPolicy::Always);
            let got: Vec<Option<u64>> = (0..COUNTERS)
                .map(|c| {
                    let k = counter(c);
                    r.get(&k).expect("get").map(|v| {
                        assert!(
                            v.meta.version <= *version,
                            "{kind}: snapshot {i} at version {version:?} holds a write from after \
                             its cut ({:?})",
                            v.meta.version
                        );
                        check(&k, &v.bytes)
                            .unwrap_or_else(|err| panic!("{kind}: snapshot {i}: {err}"))
                    })
                })
                .collect();
            let n = got[0].unwrap_or(0);
            assert!(
                got.iter().all(|g| *g == got[0]),
                "{kind}: snapshot {i} splits a batch: {got:?}"
            );
            assert!(
                (*before..=*after).contains(&n),
                "{kind}: snapshot {i} holds batch {n}, taken between {before} and {after}"
            );
            assert!(
                n >= last,
                "{kind}: snapshot {i} is older than the one before"
            );
            last = n;
            r.close().expect("close restored");
        }
    }
}
