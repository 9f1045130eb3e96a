//! With `sync=always` a write becomes visible to readers only once it is durable, on both
//! engines, while writers' preconditions still see it at once.
//!
//! The engine's fdatasyncs are held through the fault seam (`fault::hold`), so a durable write
//! is appended but not yet durable for as long as the test needs, without waiting on time:
//! - a reader then still sees the old value, and a power cut taken at that moment (the
//!   fault seam's power-loss model) shows why it must: the new value is not on disk;
//! - a second compare-and-set on the same version is refused (exactly one of two wins);
//! - a deferred write's ticket is not ready until the fsync goes on;
//! - 1,000 writes awaited on a single-threaded async runtime share a few fdatasyncs: no thread
//!   is parked per waiting write.

mod claims_support;

use std::sync::Arc;

use bytes::Bytes;
use claims_support::{ENGINES, open, options};
use hoardhaven::engine::fault::{self, Op, Plan};
use hoardhaven::engine::{Engine, Error, Precondition, PutOptions, SyncPolicy};

fn get(e: &dyn Engine, key: &[u8]) -> Option<Vec<u8>> {
    e.get(key).expect("get").map(|v| v.bytes.to_vec())
}

fn put(e: &dyn Engine, key: &[u8], value: &[u8]) -> hoardhaven::engine::Version {
    e.put(key, Bytes::copy_from_slice(value), PutOptions::default())
        .expect("put")
        .version
}

#[test]
fn readers_see_a_write_only_once_it_is_durable() {
    for kind in ENGINES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let e = open(kind, &dir, SyncPolicy::Always);
        put(&*e, b"k", b"old");
        let power = fault::track_power(&dir).expect("track power");
        let feed = e.changes().map(|c| c.current());
        let hold = fault::hold(&dir, Op::Sync);
        hold.close();
        let writer = {
            let e = e.clone();
            std::thread::spawn(move || put(&*e, b"k", b"new"))
        };
        // The leader has written the record and is inside its fdatasync.
        hold.wait_blocked(1);
        assert_eq!(
            get(&*e, b"k").as_deref(),
            Some(&b"old"[..]),
            "{kind}: a reader saw a write that is not durable yet"
        );
        assert_eq!(
            e.changes().map(|c| c.current()),
            feed,
            "{kind}: a watcher heard of a write that is not durable yet"
        );
        // What a power cut now would leave: the old value.
        let cut = tmp.path().join("cut");
        power.cut_now(&cut).expect("cut");
        hold.open();
        writer.join().expect("writer");
        assert_eq!(get(&*e, b"k").as_deref(), Some(&b"new"[..]), "{kind}");
        assert!(
            e.changes().map(|c| c.current()) > feed,
            "{kind}: the durable write reached the change feed"
        );
        drop(hold);
        drop(power);
        e.close().expect("close");
        let after = hoardhaven::engine::open(&options(kind, &cut, SyncPolicy::Always))
            .expect("open the cut");
        assert_eq!(get(&*after, b"k").as_deref(), Some(&b"old"[..]), "{kind}");
        after.close().expect("close");
    }
}

/// A refused precondition that rests on a write not yet durable is answered only once that
/// write is durable: a crash before then would take the write away and leave the refusal
/// describing a version that never existed (found by the consistency checker under kill -9).
#[test]
fn a_refusal_is_answered_once_the_write_it_saw_is_durable() {
    for kind in ENGINES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let e = open(kind, &dir, SyncPolicy::Always);
        let v1 = put(&*e, b"k", b"v1");
        let if_v1 = PutOptions {
            precondition: Precondition::IfVersion(v1),
            ..PutOptions::default()
        };
        let hold = fault::hold(&dir, Op::Sync);
        hold.close();
        // Appended, preconditions see it; not durable while fsyncs are held.
        let (_, first) = e
            .put_deferred(b"k", Bytes::from_static(b"a"), if_v1)
            .expect("first write");
        let loser = {
            let e = e.clone();
            std::thread::spawn(move || {
                let refused = e.put(b"k", Bytes::from_static(b"b"), if_v1);
                // What a client told "412" could read right then.
                (refused, get(&*e, b"k"))
            })
        };
        // Either the loser answers (wrongly, before the write it saw is durable) or an
        // fdatasync is held on its behalf: wait for whichever happens first.
        while !loser.is_finished() && hold.blocked() == 0 {
            std::thread::yield_now();
        }
        hold.open();
        let (refused, seen) = loser.join().expect("loser");
        assert!(
            matches!(refused, Err(Error::PreconditionFailed { .. })),
            "{kind}: {refused:?}"
        );
        assert_eq!(
            seen.as_deref(),
            Some(&b"a"[..]),
            "{kind}: the 412 was answered before the write it rests on was durable"
        );
        first.wait().expect("first durable");
        drop(hold);
        e.close().expect("close");
    }
}

#[test]
fn compare_and_set_sees_pending_writes() {
    for kind in ENGINES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let e = open(kind, &dir, SyncPolicy::Always);
        let v1 = put(&*e, b"k", b"v1");
        let hold = fault::hold(&dir, Op::Sync);
        hold.close();
        let if_v1 = PutOptions {
            precondition: Precondition::IfVersion(v1),
            ..PutOptions::default()
        };
        let first = {
            let e = e.clone();
            std::thread::spawn(move || e.put(b"k", Bytes::from_static(b"a"), if_v1))
        };
        hold.wait_blocked(1);
        // The first write is appended, not durable, not visible: the second must still lose.
        let second = e.put_deferred(b"k", Bytes::from_static(b"b"), if_v1);
        let del = e.delete_deferred(b"k", Precondition::IfVersion(v1));
        let batch = e.apply_batch_checked_deferred(
            &[(b"k".to_vec(), Precondition::IfVersion(v1))],
            vec![hoardhaven::engine::BatchOp::Delete { key: b"k".to_vec() }],
        );
        hold.open();
        let first = first.join().expect("first").expect("the first write wins");
        assert!(
            matches!(second, Err(Error::PreconditionFailed { current: Some(v) }) if v == first.version),
            "{kind}: a second If-Match on the same version won too: {second:?}"
        );
        assert!(
            matches!(del, Err(Error::PreconditionFailed { .. })),
            "{kind}: {del:?}"
        );
        assert!(
            matches!(batch, Err(Error::PreconditionFailed { .. })),
            "{kind}: {batch:?}"
        );
        assert_eq!(get(&*e, b"k").as_deref(), Some(&b"a"[..]), "{kind}");
        drop(hold);
        e.close().expect("close");
    }
}

#[test]
fn concurrent_if_match_writes_on_one_key_exactly_one_wins() {
    const ROUNDS: usize = 50;
    const RACERS: usize = 4;
    for kind in ENGINES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let e = open(kind, &tmp.path().join("data"), SyncPolicy::Always);
        for round in 0..ROUNDS {
            let v = put(&*e, b"k", format!("base{round}").as_bytes());
            let barrier = Arc::new(std::sync::Barrier::new(RACERS));
            let racers: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (e, barrier) = (e.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let opts = PutOptions {
                            precondition: Precondition::IfVersion(v),
                            ..PutOptions::default()
                        };
                        e.put(b"k", Bytes::from(format!("r{i}")), opts).is_ok()
                    })
                })
                .collect();
            let wins = racers
                .into_iter()
                .map(|t| t.join().expect("racer"))
                .filter(|&won| won)
                .count();
            assert_eq!(wins, 1, "{kind}: round {round}: {wins} If-Match writes won");
        }
        e.close().expect("close");
    }
}

#[test]
fn a_deferred_write_is_ready_only_once_durable() {
    for kind in ENGINES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let e = open(kind, &dir, SyncPolicy::Always);
        put(&*e, b"warm", b"up");
        let hold = fault::hold(&dir, Op::Sync);
        hold.close();
        let (written, ticket) = e
            .put_deferred(b"k", Bytes::from_static(b"v"), PutOptions::default())
            .expect("append");
        assert!(written.created);
        // Nothing leads a round until the ticket is awaited or waited on.
        assert!(!ticket.is_ready(), "{kind}");
        assert_eq!(get(&*e, b"k"), None, "{kind}: visible before durable");
        let waiter = std::thread::spawn(move || ticket.wait());
        hold.wait_blocked(1);
        assert_eq!(get(&*e, b"k"), None, "{kind}: visible during its fsync");
        hold.open();
        waiter.join().expect("waiter").expect("durable");
        assert_eq!(get(&*e, b"k").as_deref(), Some(&b"v"[..]), "{kind}");
        drop(hold);
        e.close().expect("close");
    }
}

#[test]
fn a_thousand_awaited_writes_share_fsyncs_on_one_thread() {
    const WRITES: u64 = 1000;
    for kind in ENGINES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut opts = options(kind, &dir, SyncPolicy::Always);
        opts.bitcask.max_file_size = 64 << 20;
        let e = hoardhaven::engine::open(&opts).expect("open");
        // One write first: it preallocates bitcask's file and gives one record's size.
        let b0 = e.stats().expect("stats").bytes_written;
        put(&*e, b"w0000", b"v");
        let rec = e.stats().expect("stats").bytes_written - b0;
        let syncs = fault::arm(Plan::count(&dir, &[Op::Sync]));
        // The first round's fsync is held until every write has been appended, so the
        // count does not depend on how fast this machine is.
        let hold = fault::hold(&dir, Op::Sync);
        hold.close();
        let opener = {
            let e = e.clone();
            std::thread::spawn(move || {
                hold.wait_blocked(1);
                let want = b0 + rec * (WRITES + 1);
                claims_support::wait_until("every write appended", || {
                    e.stats().expect("stats").bytes_written >= want
                });
                hold.open();
                hold
            })
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..WRITES {
                let e = e.clone();
                tasks.spawn(async move {
                    let key = format!("k{i:04}");
                    let (_, ticket) = e
                        .put_deferred(
                            key.as_bytes(),
                            Bytes::from_static(b"v"),
                            PutOptions::default(),
                        )
                        .expect("append");
                    ticket.await.expect("durable");
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.expect("task");
            }
        });
        let hold = opener.join().expect("opener");
        let n = syncs.calls();
        eprintln!("{kind}: {WRITES} awaited writes on one thread, {n} fsyncs");
        // The held round, one round for everything appended meanwhile, and at most one more
        // that found nothing new.
        assert!(
            (1..=3).contains(&n),
            "{kind}: {n} fsyncs for {WRITES} writes"
        );
        drop(hold);
        drop(syncs);
        for i in 0..WRITES {
            assert!(
                get(&*e, format!("k{i:04}").as_bytes()).is_some(),
                "{kind}: k{i}"
            );
        }
        e.close().expect("close");
    }
}
