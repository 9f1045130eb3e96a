//! Bitcask merge and snapshots: space is reclaimed, reads during a merge are never wrong,
//! writes made during a merge survive it, snapshots hold exactly the data of their moment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod common;

use bytes::Bytes;
use common::{bitcask_opts, dir_size, open_bitcask};
use hoardhaven::engine::bitcask::{Bitcask, BitcaskOptions};
use hoardhaven::engine::{Engine, JobState, Precondition, PutOptions, SyncPolicy};

const FILE_SIZE: u64 = 64 * 1024;

#[test]
fn merge_reclaims_space_and_keeps_live_data_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    let big = Bytes::from(vec![b'x'; 500]);
    for _ in 0..10 {
        for i in 0..200 {
            e.put(
                format!("k{i}").as_bytes(),
                big.clone(),
                PutOptions::default(),
            )
            .expect("put");
        }
    }
    for i in 0..50 {
        e.delete(format!("k{i}").as_bytes(), Precondition::None)
            .expect("delete");
    }
    let before = dir_size(dir.path());
    let stats = e.stats().expect("stats");
    assert!(
        stats.fragmentation > 0.8,
        "fragmentation {}",
        stats.fragmentation
    );
    let report = e.merge().expect("merge");
    let after = dir_size(dir.path());
    assert!(after * 5 < before, "directory {before} -> {after} bytes");
    assert_eq!(report.records_kept, 150);
    assert!(report.bytes_reclaimed > 0);
    assert!(matches!(e.jobs().merge, JobState::Done(_)));
    let stats = e.stats().expect("stats");
    assert!(
        stats.fragmentation < 0.1,
        "fragmentation after {}",
        stats.fragmentation
    );
    e.close().expect("close");
    drop(e);
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    for i in 0..200 {
        let got = e
            .get(format!("k{i}").as_bytes())
            .expect("get")
            .map(|v| v.bytes);
        assert_eq!(got, (i >= 50).then(|| big.clone()), "k{i}");
    }
}

#[test]
fn reads_during_merge_are_never_wrong_and_concurrent_writes_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Arc::new(open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE));
    // Stable keys: their value never changes, so any read must return exactly it.
    for i in 0..2000 {
        e.put(
            format!("stable{i}").as_bytes(),
            Bytes::from(format!("s{i}")),
            PutOptions::default(),
        )
        .expect("put");
    }
    // Churn to give the merge work.
    for r in 0..5 {
        for i in 0..1000 {
            e.put(
                format!("churn{i}").as_bytes(),
                Bytes::from(format!("{r}")),
                PutOptions::default(),
            )
            .expect("put");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (e, stop) = (e.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 5000 {
                    let i = (n * 7 + t) % 2000;
                    let got = e
                        .get(format!("stable{i}").as_bytes())
                        .expect("get during merge");
                    assert_eq!(got.map(|v| v.bytes), Some(Bytes::from(format!("s{i}"))));
                    n += 1;
                }
                n
            })
        })
        .collect();
    // A writer overwriting churn keys during the merges: the last write must win.
    let writer = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 3000 {
                let i = n % 1000;
                let v = format!("w{n}");
                e.put(
                    format!("churn{i}").as_bytes(),
                    Bytes::from(v.clone()),
                    PutOptions::default(),
                )
                .expect("put during merge");
                last.insert(i, v);
                n += 1;
            }
            last
        })
    };
    for _ in 0..3 {
        e.merge().expect("merge");
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    let last = writer.join().expect("writer");
    let check = |e: &Bitcask| {
        for (i, v) in &last {
            let got = e
                .get(format!("churn{i}").as_bytes())
                .expect("get")
                .map(|v| v.bytes);
            assert_eq!(got, Some(Bytes::from(v.clone())), "churn{i}");
        }
    };
    check(&e);
    e.merge().expect("merge");
    check(&e);
    e.close().expect("close");
    drop(e);
    check(&open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE));
}

#[test]
fn concurrent_merge_calls_run_one_at_a_time_and_keep_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Arc::new(open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE));
    for r in 0..20u8 {
        for i in 0..500 {
            e.put(
                format!("k{i}").as_bytes(),
                Bytes::from(vec![r; 200]),
                PutOptions::default(),
            )
            .expect("put");
        }
    }
    // Four merges released at once. However the threads are scheduled, the merges that ran
    // (the others are refused `Busy`) must not overlap in time: each report's interval
    // [started_at, started_at + duration] is disjoint from the others (1 ms of slack: the
    // start is whole milliseconds, rounded down).
    let before = e.jobs().merges_completed;
    let gate = std::sync::Barrier::new(4);
    let reports: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    gate.wait();
                    e.merge()
                })
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| match h.join().expect("join") {
                Ok(r) => Some(r),
                Err(hoardhaven::Error::Busy("merge")) => None,
                Err(other) => panic!("merge failed: {other}"),
            })
            .collect()
    });
    assert!(!reports.is_empty(), "every merge was refused");
    let span = |r: &hoardhaven::engine::MergeReport| {
        let start = u128::from(r.started_at.0) * 1000;
        (start, start + r.duration.as_micros())
    };
    for (i, a) in reports.iter().enumerate() {
        for b in &reports[i + 1..] {
            let ((a0, a1), (b0, b1)) = (span(a), span(b));
            assert!(
                a1 <= b0 + 1000 || b1 <= a0 + 1000,
                "two merges ran at once: [{a0}, {a1}] and [{b0}, {b1}] µs"
            );
        }
    }
    assert_eq!(
        e.jobs().merges_completed - before,
        reports.len() as u64,
        "merges counted"
    );
    assert!(matches!(e.jobs().merge, JobState::Done(_)));
    for i in 0..500 {
        let got = e
            .get(format!("k{i}").as_bytes())
            .expect("get")
            .map(|v| v.bytes);
        assert_eq!(got, Some(Bytes::from(vec![19u8; 200])));
    }
}

#[test]
fn snapshot_is_a_data_directory_holding_exactly_its_moment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    let mut model = BTreeMap::new();
    for i in 0..1500 {
        let v = format!("v{i}");
        e.put(
            format!("k{i}").as_bytes(),
            Bytes::from(v.clone()),
            PutOptions::default(),
        )
        .expect("put");
        model.insert(format!("k{i}"), v);
    }
    for i in (0..1500).step_by(3) {
        e.delete(format!("k{i}").as_bytes(), Precondition::None)
            .expect("delete");
        model.remove(&format!("k{i}"));
    }
    let snap = e.snapshot().expect("snapshot");
    // Changes after the snapshot must not show in it.
    for i in 0..100 {
        e.put(
            format!("k{i}").as_bytes(),
            Bytes::from_static(b"after"),
            PutOptions::default(),
        )
        .expect("put");
    }
    e.put(
        b"new-after",
        Bytes::from_static(b"x"),
        PutOptions::default(),
    )
    .expect("put");
    e.merge().expect("merge after snapshot");
    let listed = e.snapshots().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, snap.path);
    {
        let s = open_bitcask(&snap.path, SyncPolicy::Never, FILE_SIZE);
        let keys = s.list(b"", None, 10_000).expect("list").keys;
        assert_eq!(keys.len(), model.len());
        for (k, v) in &model {
            assert_eq!(
                s.get(k.as_bytes()).expect("get").map(|x| x.bytes),
                Some(Bytes::from(v.clone())),
                "{k}"
            );
        }
        assert_eq!(s.get(b"new-after").expect("get"), None);
        // Writing to the snapshot store must not touch the live store.
        s.put(
            b"k1",
            Bytes::from_static(b"in-snapshot"),
            PutOptions::default(),
        )
        .expect("put");
        s.merge().expect("merge snapshot store");
    }
    assert_eq!(
        e.get(b"k1").expect("get").map(|x| x.bytes),
        Some(Bytes::from_static(b"after"))
    );
    assert_eq!(
        e.get(b"k200").expect("get").map(|x| x.bytes),
        Some(Bytes::from_static(b"v200"))
    );
}

#[test]
fn old_snapshots_are_pruned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = BitcaskOptions {
        snapshots_kept: 2,
        ..bitcask_opts(FILE_SIZE)
    };
    let e = Bitcask::open(dir.path(), SyncPolicy::Never, &o).expect("open");
    let mut paths = Vec::new();
    for i in 0..4 {
        e.put(
            format!("k{i}").as_bytes(),
            Bytes::from_static(b"v"),
            PutOptions::default(),
        )
        .expect("put");
        // Back to back: snapshots in one millisecond are numbered, not clashing.
        paths.push(e.snapshot().expect("snapshot").path);
    }
    let kept: Vec<_> = e
        .snapshots()
        .expect("list")
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(kept, paths[2..].to_vec());
    assert!(!paths[0].exists());
}

#[test]
fn expired_records_are_dropped_by_merge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    let gone = PutOptions {
        expires_at: Some(hoardhaven::engine::UnixMillis(1000)),
        ..PutOptions::default()
    };
    for i in 0..300 {
        e.put(
            format!("t{i}").as_bytes(),
            Bytes::from(vec![0u8; 300]),
            gone,
        )
        .expect("put");
    }
    e.put(b"keep", Bytes::from_static(b"v"), PutOptions::default())
        .expect("put");
    let r = e.merge().expect("merge");
    assert_eq!(r.records_kept, 1);
    assert_eq!(e.stats().expect("stats").keys, 1);
}

#[test]
fn no_hint_file_outlives_its_data_file() {
    // Rotation writes hints in the background; a merge right after must not let one land
    // after it retired the data file.
    for round in 0..20 {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = BitcaskOptions {
            max_file_size: 4096,
            ..bitcask_opts(FILE_SIZE)
        };
        let e = Bitcask::open(dir.path(), SyncPolicy::Never, &o).expect("open");
        for i in 0..200 {
            e.put(
                format!("k{i}").as_bytes(),
                Bytes::from(vec![b'x'; 100]),
                PutOptions::default(),
            )
            .expect("put");
        }
        e.merge().expect("merge");
        e.close().expect("close");
        for f in std::fs::read_dir(dir.path()).expect("dir").flatten() {
            let p = f.path();
            if p.extension().is_some_and(|x| x == "hint") {
                assert!(
                    p.with_extension("data").exists(),
                    "round {round}: orphan {}",
                    p.display()
                );
            }
        }
    }
}
