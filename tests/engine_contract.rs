//! The engine contract: one suite, run against every engine through `Arc<dyn Engine>`.
//!
//! Each test opens a store in a temp dir, acts, often closes and reopens, and asserts again.

use std::sync::Arc;
use std::time::Duration;

mod common;

use bytes::Bytes;
use common::{get, put};
use hoardhaven::Error;
use hoardhaven::engine::{
    self, BatchOp, Engine, EngineKind, EngineOptions, KeyRange, Precondition, PutOptions,
    SyncPolicy, UnixMillis, Version,
};

/// The suite's options: [`common::options`] with 64 KiB bitcask files and the memory
/// engine's default background jobs (save points, sweeps, rewrites) left running.
fn options(kind: EngineKind, dir: &std::path::Path, sync: SyncPolicy) -> EngineOptions {
    let d = EngineOptions::default();
    let mut o = common::options(kind, dir, sync);
    o.bitcask.max_file_size = 64 * 1024;
    o.memory = d.memory;
    o
}

fn open(kind: EngineKind, dir: &std::path::Path) -> Arc<dyn Engine> {
    engine::open(&options(kind, dir, SyncPolicy::Never)).expect("open")
}

fn put_get_delete_and_reopen(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = open(kind, dir.path());
        let w = e
            .put(b"a", Bytes::from_static(b"1"), PutOptions::default())
            .expect("put");
        assert!(w.created);
        let w2 = e
            .put(b"a", Bytes::from_static(b"2"), PutOptions::default())
            .expect("put");
        assert!(!w2.created);
        assert!(w2.version > w.version);
        assert_eq!(get(&*e, b"a"), Some(b"2".to_vec()));
        assert_eq!(
            e.head(b"a").expect("head").map(|m| m.version),
            Some(w2.version)
        );
        assert_eq!(get(&*e, b"missing"), None);
        put(&*e, b"empty", b"");
        assert_eq!(get(&*e, b"empty"), Some(Vec::new()));
        put(&*e, b"\xff\x00bin/a/b", b"\x00\x01\x02");
        assert_eq!(
            e.delete(b"a", Precondition::None).expect("delete"),
            Some(w2.version)
        );
        assert_eq!(e.delete(b"a", Precondition::None).expect("delete"), None);
        assert_eq!(get(&*e, b"a"), None);
        e.close().expect("close");
    }
    let e = open(kind, dir.path());
    assert_eq!(get(&*e, b"a"), None);
    assert_eq!(get(&*e, b"empty"), Some(Vec::new()));
    assert_eq!(get(&*e, b"\xff\x00bin/a/b"), Some(b"\x00\x01\x02".to_vec()));
    assert!(matches!(e.get(b""), Err(Error::EmptyKey)));
}

fn compare_and_set(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(kind, dir.path());
    let create = |v: &'static [u8], p| {
        e.put(
            b"k",
            Bytes::from_static(v),
            PutOptions {
                precondition: p,
                ..PutOptions::default()
            },
        )
    };
    assert!(matches!(
        create(b"x", Precondition::IfExists),
        Err(Error::PreconditionFailed { current: None })
    ));
    assert!(matches!(
        create(b"x", Precondition::IfVersion(Version(1))),
        Err(Error::PreconditionFailed { .. })
    ));
    let v1 = create(b"1", Precondition::IfAbsent)
        .expect("create")
        .version;
    assert!(
        matches!(
            create(b"1", Precondition::IfAbsent),
            Err(Error::PreconditionFailed { current: Some(v) }) if v == v1
        ),
        "a failed create-only reports the real current version"
    );
    let v2 = create(b"2", Precondition::IfVersion(v1))
        .expect("cas")
        .version;
    assert!(matches!(
        create(b"3", Precondition::IfVersion(v1)),
        Err(Error::PreconditionFailed { .. })
    ));
    assert_eq!(get(&*e, b"k"), Some(b"2".to_vec()));
    assert!(matches!(
        e.delete(b"k", Precondition::IfVersion(v1)),
        Err(Error::PreconditionFailed { .. })
    ));
    assert_eq!(
        e.delete(b"k", Precondition::IfVersion(v2)).expect("delete"),
        Some(v2)
    );
    assert!(matches!(
        e.delete(b"k", Precondition::IfExists),
        Err(Error::PreconditionFailed { current: None })
    ));
}

fn concurrent_cas_has_one_winner_per_version(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(kind, dir.path());
    let mut version = put(&*e, b"counter", b"0");
    for round in 0..20 {
        let wins: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|t| {
                    let e = &e;
                    s.spawn(move || {
                        let v = format!("{round}-{t}");
                        e.put(
                            b"counter",
                            Bytes::from(v),
                            PutOptions {
                                precondition: Precondition::IfVersion(version),
                                ..PutOptions::default()
                            },
                        )
                        .is_ok() as usize
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("join")).sum()
        });
        assert_eq!(wins, 1, "round {round}");
        version = e.head(b"counter").expect("head").expect("present").version;
    }
}

/// Bitcask keeps expiry in whole seconds, rounded to the nearest: a key may go up to half a
/// second before its `expires_at`.
const EXPIRY_ROUNDING: Duration = Duration::from_millis(500);

/// Polls `key` (which expires at `at`) until it reads as absent: never more than the rounding
/// before `at` (it must not vanish early), and at the latest a bounded wait after `at`.
fn wait_for_expiry(e: &dyn Engine, key: &[u8], at: UnixMillis) {
    let early = at.0 - EXPIRY_ROUNDING.as_millis() as u64;
    let bound = std::time::Instant::now()
        + Duration::from_millis(at.0.saturating_sub(UnixMillis::now().0))
        + EXPIRY_ROUNDING
        + Duration::from_secs(60);
    loop {
        let before = UnixMillis::now().0;
        if get(e, key).is_none() {
            assert!(
                UnixMillis::now().0 >= early,
                "expired {} ms before its time",
                early - before
            );
            return;
        }
        assert!(
            std::time::Instant::now() < bound,
            "still present a minute after it expired"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn expiry(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let soon_at = UnixMillis::after(Duration::from_millis(1200));
    {
        let e = open(kind, dir.path());
        let past = PutOptions {
            expires_at: Some(UnixMillis(1_000)),
            ..PutOptions::default()
        };
        let future = PutOptions {
            expires_at: Some(UnixMillis::after(Duration::from_secs(3600))),
            ..PutOptions::default()
        };
        let soon = PutOptions {
            expires_at: Some(soon_at),
            ..PutOptions::default()
        };
        e.put(b"old", Bytes::from_static(b"x"), past).expect("put");
        e.put(b"later", Bytes::from_static(b"y"), future)
            .expect("put");
        e.put(b"soon", Bytes::from_static(b"z"), soon).expect("put");
        assert_eq!(get(&*e, b"old"), None);
        let later = e.get(b"later").expect("get").expect("present");
        assert!(later.meta.expires_at.is_some());
        // Present until its time: a read right after the put may only miss it if the clock
        // has already reached (rounded) expiry, as on a machine stalled for a second.
        if get(&*e, b"soon").is_none() {
            assert!(
                UnixMillis::now().0 + EXPIRY_ROUNDING.as_millis() as u64 >= soon_at.0,
                "{kind}: a key with a 1.2 s TTL was absent at once"
            );
        }
        // An expired key is absent for preconditions and listing too.
        assert!(
            e.put(
                b"old",
                Bytes::from_static(b"new"),
                PutOptions {
                    precondition: Precondition::IfAbsent,
                    ..PutOptions::default()
                }
            )
            .expect("create over expired")
            .created
        );
        e.close().expect("close");
    }
    let e = open(kind, dir.path());
    assert_eq!(get(&*e, b"old"), Some(b"new".to_vec()));
    assert!(
        e.get(b"later")
            .expect("get")
            .expect("kept")
            .meta
            .expires_at
            .is_some(),
        "TTL kept across reopen"
    );
    // The event is the clock passing the expiry: wait for the key to go, not a fixed time.
    wait_for_expiry(&*e, b"soon", soon_at);
    let page = e.list(b"", None, 100).expect("list");
    assert!(!page.keys.contains(&b"soon".to_vec()));
}

fn batches_are_atomic_and_ordered(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = open(kind, dir.path());
        put(&*e, b"gone", b"1");
        let r = e
            .apply_batch(vec![
                BatchOp::Put {
                    key: b"a".to_vec(),
                    value: Bytes::from_static(b"1"),
                    expires_at: None,
                },
                BatchOp::Delete {
                    key: b"gone".to_vec(),
                },
                BatchOp::Put {
                    key: b"a".to_vec(),
                    value: Bytes::from_static(b"2"),
                    expires_at: None,
                },
                BatchOp::Delete {
                    key: b"never".to_vec(),
                },
            ])
            .expect("batch");
        assert_eq!(r.len(), 4);
        assert!(!r[0].existed_before, "first put of a is a creation");
        assert!(r[1].existed_before, "gone existed");
        assert!(r[2].existed_before, "second put of a replaces the first");
        assert!(!r[3].existed_before, "never did not exist");
        assert!(r.windows(2).all(|w| w[0].version < w[1].version));
        // A batch with a bad op applies nothing.
        let bad = e.apply_batch(vec![
            BatchOp::Put {
                key: b"b".to_vec(),
                value: Bytes::from_static(b"1"),
                expires_at: None,
            },
            BatchOp::Put {
                key: Vec::new(),
                value: Bytes::new(),
                expires_at: None,
            },
        ]);
        assert!(bad.is_err());
        assert_eq!(get(&*e, b"b"), None);
        e.close().expect("close");
    }
    let e = open(kind, dir.path());
    assert_eq!(get(&*e, b"a"), Some(b"2".to_vec()));
    assert_eq!(get(&*e, b"gone"), None);
}

fn checked_batches_apply_only_when_every_check_holds(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(kind, dir.path());
    let v = put(&*e, b"watched", b"1");
    let put_op = |k: &[u8], val: &'static [u8]| BatchOp::Put {
        key: k.to_vec(),
        value: Bytes::from_static(val),
        expires_at: None,
    };
    // Every check holds: applied (a checked key need not be written).
    let checks = [
        (b"watched".to_vec(), Precondition::IfVersion(v)),
        (b"absent".to_vec(), Precondition::IfAbsent),
    ];
    e.apply_batch_checked(&checks, vec![put_op(b"out", b"a")])
        .expect("checks hold");
    assert_eq!(get(&*e, b"out").as_deref(), Some(&b"a"[..]));
    // A write in between makes the version check fail: nothing applied, the current named.
    let v2 = put(&*e, b"watched", b"2");
    match e.apply_batch_checked(&checks, vec![put_op(b"out", b"b"), put_op(b"new", b"c")]) {
        Err(Error::PreconditionFailed { current }) => assert_eq!(current, Some(v2)),
        other => panic!("expected a failed precondition, got {other:?}"),
    }
    assert_eq!(
        get(&*e, b"out").as_deref(),
        Some(&b"a"[..]),
        "nothing applied"
    );
    assert_eq!(get(&*e, b"new"), None, "nothing applied");
    // IfAbsent on a present key fails too; checks alone (no ops) are checked.
    let present = [(b"out".to_vec(), Precondition::IfAbsent)];
    assert!(matches!(
        e.apply_batch_checked(&present, Vec::new()),
        Err(Error::PreconditionFailed { .. })
    ));
    assert!(
        e.apply_batch_checked(&[(b"out".to_vec(), Precondition::IfExists)], Vec::new())
            .is_ok()
    );
}

fn listing_pages_in_order(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(kind, dir.path());
    for i in (0..250).rev() {
        put(&*e, format!("user/{i:04}").as_bytes(), b"v");
    }
    put(&*e, b"other", b"v");
    put(&*e, b"user\xff", b"v");
    e.delete(b"user/0100", Precondition::None).expect("delete");
    let mut all = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = e.list(b"user/", after.as_deref(), 40).expect("list");
        assert!(page.keys.len() <= 40);
        all.extend(page.keys.iter().cloned());
        match page.next_start_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let want: Vec<Vec<u8>> = (0..250)
        .filter(|i| *i != 100)
        .map(|i| format!("user/{i:04}").into_bytes())
        .collect();
    assert_eq!(all, want);
    assert_eq!(e.list(b"", None, 0).expect("list").keys.len(), 0);
    assert_eq!(e.list(b"zzz", None, 10).expect("list").keys.len(), 0);
}

/// Cursors under concurrent writes: while a writer creates and deletes other keys of the range
/// (before and after the cursor), paging sees every key that stays put exactly once, in order.
fn listing_cursor_is_stable_under_concurrent_writes(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(kind, dir.path());
    let stable: Vec<Vec<u8>> = (0..600)
        .map(|i| format!("r/{i:04}/s").into_bytes())
        .collect();
    for k in &stable {
        put(&*e, k, b"v");
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 2000 {
                let k = format!("r/{:04}/t", (n * 7919) % 600).into_bytes();
                if n % 3 == 2 {
                    e.delete(&k, Precondition::None).expect("delete");
                } else {
                    e.put(&k, Bytes::from_static(b"w"), PutOptions::default())
                        .expect("put");
                }
                n += 1;
            }
        })
    };
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    let range = KeyRange {
        prefix: b"r/",
        start: Some(b"r/0100"),
        end: Some(b"r/0500"),
    };
    loop {
        let page = e.list_range(&range, after.as_deref(), 7).expect("list");
        seen.extend(page.keys.iter().filter(|k| k.ends_with(b"/s")).cloned());
        assert!(
            page.keys.windows(2).all(|w| w[0] < w[1]),
            "page out of order"
        );
        if let (Some(a), Some(first)) = (&after, page.keys.first()) {
            assert!(first > a, "a page starts at or before its cursor");
        }
        match page.next_start_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    assert_eq!(seen, stable[100..500].to_vec());
}

fn versions_increase_across_reopen_and_merge(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let v_last = {
        let e = open(kind, dir.path());
        put(&*e, b"k", b"1");
        let v = put(&*e, b"k", b"2");
        e.delete(b"k", Precondition::None).expect("delete");
        e.merge().expect("merge");
        e.close().expect("close");
        v
    };
    let e = open(kind, dir.path());
    let v_new = put(&*e, b"k", b"3");
    assert!(v_new > v_last, "{v_new:?} must exceed {v_last:?}");
}

fn merge_keeps_everything_live(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(kind, dir.path());
    for round in 0..5 {
        for i in 0..300 {
            put(
                &*e,
                format!("k{i}").as_bytes(),
                format!("{round}-{i}").as_bytes(),
            );
        }
    }
    for i in 0..100 {
        e.delete(format!("k{i}").as_bytes(), Precondition::None)
            .expect("delete");
    }
    e.merge().expect("merge");
    for i in 0..300 {
        let want = (i >= 100).then(|| format!("4-{i}").into_bytes());
        assert_eq!(get(&*e, format!("k{i}").as_bytes()), want);
    }
    e.close().expect("close");
    drop(e);
    let e = open(kind, dir.path());
    for i in 0..300 {
        let want = (i >= 100).then(|| format!("4-{i}").into_bytes());
        assert_eq!(get(&*e, format!("k{i}").as_bytes()), want, "after reopen");
    }
    assert!(matches!(e.jobs().merge, engine::JobState::Idle));
}

fn second_open_is_refused(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let _e = open(kind, dir.path());
    match engine::open(&options(kind, dir.path(), SyncPolicy::Never)) {
        Err(Error::Locked(p)) => assert_eq!(p, dir.path()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
}

fn sync_always_many_writers(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine::open(&options(kind, dir.path(), SyncPolicy::Always)).expect("open");
    std::thread::scope(|s| {
        for t in 0..16 {
            let e = &e;
            s.spawn(move || {
                for i in 0..20 {
                    put(&**e, format!("t{t}-{i}").as_bytes(), b"v");
                }
            });
        }
    });
    let stats = e.stats().expect("stats");
    assert_eq!(stats.keys, 320);
    assert_eq!(stats.sync, SyncPolicy::Always);
}

fn stats_add_up(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(kind, dir.path());
    for i in 0..100 {
        put(&*e, format!("k{i}").as_bytes(), &[7u8; 100]);
    }
    for i in 0..50 {
        put(&*e, format!("k{i}").as_bytes(), &[8u8; 100]);
    }
    let s = e.stats().expect("stats");
    assert_eq!(s.keys, 100);
    assert!(s.live_bytes > 0);
    assert!(s.fragmentation >= 0.0 && s.fragmentation <= 1.0);
    assert!(s.last_version >= Version(150));
}

macro_rules! contract {
    ($($engine:ident => $kind:expr),* $(,)?) => {$(
        mod $engine {
            use super::*;
            #[test] fn put_get_delete_and_reopen() { super::put_get_delete_and_reopen($kind) }
            #[test] fn compare_and_set() { super::compare_and_set($kind) }
            #[test] fn concurrent_cas_has_one_winner_per_version() { super::concurrent_cas_has_one_winner_per_version($kind) }
            #[test] fn expiry() { super::expiry($kind) }
            #[test] fn batches_are_atomic_and_ordered() { super::batches_are_atomic_and_ordered($kind) }
            #[test] fn checked_batches_apply_only_when_every_check_holds() { super::checked_batches_apply_only_when_every_check_holds($kind) }
            #[test] fn listing_pages_in_order() { super::listing_pages_in_order($kind) }
            #[test] fn listing_cursor_is_stable_under_concurrent_writes() { super::listing_cursor_is_stable_under_concurrent_writes($kind) }
            #[test] fn versions_increase_across_reopen_and_merge() { super::versions_increase_across_reopen_and_merge($kind) }
            #[test] fn merge_keeps_everything_live() { super::merge_keeps_everything_live($kind) }
            #[test] fn second_open_is_refused() { super::second_open_is_refused($kind) }
            #[test] fn sync_always_many_writers() { super::sync_always_many_writers($kind) }
            #[test] fn stats_add_up() { super::stats_add_up($kind) }
        }
    )*};
}

contract! {
    bitcask => EngineKind::Bitcask,
    memory => EngineKind::Memory,
}
