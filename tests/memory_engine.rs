//! Integration tests of the memory engine: reopen-and-assert, TTL, CAS, batches, listing,
//! snapshots + log replay, corruption handling, crash points of a log rewrite and real kill -9
//! crash tests (the test binary re-executes itself as the child, see `child_main`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

mod common;

use bytes::Bytes;
use common::{
    KillOnDrop, Lines, assert_aborted_at, get_str as get, memory_opts as opts, open_memory as open,
    put, wait_child,
};
use hoardhaven::engine::memory::{MemoryEngine, MemoryOptions};
use hoardhaven::engine::{BatchOp, Engine, Precondition, PutOptions, UnixMillis, Version};
use hoardhaven::{Error, SyncPolicy};

#[test]
fn reopen_and_assert_with_every_sync_policy() {
    for sync in [
        SyncPolicy::Always,
        SyncPolicy::Never,
        SyncPolicy::Every(std::time::Duration::from_millis(5)),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let last = {
            let e = open(dir.path(), sync, &opts());
            for i in 0..300 {
                put(&e, &format!("k{i}"), &format!("v{i}"));
            }
            for i in (0..300).step_by(3) {
                e.delete(format!("k{i}").as_bytes(), Precondition::None)
                    .expect("delete");
            }
            let last = put(&e, "k1", "again");
            assert_eq!(e.stats().expect("stats").last_version, last, "{sync}");
            e.close().expect("close");
            assert!(matches!(e.get(b"k1"), Err(Error::Closed)));
            assert!(
                matches!(e.stats(), Err(Error::Closed)),
                "{sync}: stats after close"
            );
            put_err_closed(&e);
            e.close().expect("close is idempotent");
            last
        };
        let e = open(dir.path(), sync, &opts());
        assert_eq!(get(&e, "k1").as_deref(), Some("again"));
        for i in 2..300 {
            let want = (i % 3 != 0).then(|| format!("v{i}"));
            assert_eq!(get(&e, &format!("k{i}")), want, "{sync} k{i}");
        }
        assert!(e.stats().expect("stats").last_version >= last, "{sync}");
        let next = put(&e, "after-reopen", "x");
        assert!(
            next > last,
            "{sync}: version {next:?} after reopen not above {last:?}"
        );
    }
}

fn put_err_closed(e: &MemoryEngine) {
    assert!(matches!(
        e.put(b"x", Bytes::new(), PutOptions::default()),
        Err(Error::Closed)
    ));
}

#[test]
fn versions_increase_across_reopen_and_cas_works() {
    let dir = tempfile::tempdir().expect("tmp");
    let v1 = {
        let e = open(dir.path(), SyncPolicy::Never, &opts());
        let w = e
            .put(b"a", Bytes::from_static(b"1"), PutOptions::default())
            .expect("put");
        assert!(w.created);
        let create_only = PutOptions {
            precondition: Precondition::IfAbsent,
            ..PutOptions::default()
        };
        match e.put(b"a", Bytes::from_static(b"x"), create_only) {
            Err(Error::PreconditionFailed { current }) => assert_eq!(current, Some(w.version)),
            other => panic!("expected 412, got {other:?}"),
        }
        w.version
    };
    let e = open(dir.path(), SyncPolicy::Never, &opts());
    assert_eq!(e.head(b"a").expect("head").map(|m| m.version), Some(v1));
    let cas = |v| PutOptions {
        precondition: Precondition::IfVersion(v),
        ..PutOptions::default()
    };
    let w2 = e.put(b"a", Bytes::from_static(b"2"), cas(v1)).expect("cas");
    assert!(w2.version > v1 && !w2.created);
    assert!(matches!(
        e.put(b"a", Bytes::from_static(b"3"), cas(v1)),
        Err(Error::PreconditionFailed { current: Some(v) }) if v == w2.version
    ));
    assert!(matches!(
        e.put(b"nope", Bytes::from_static(b"3"), cas(v1)),
        Err(Error::PreconditionFailed { current: None })
    ));
    let if_exists = PutOptions {
        precondition: Precondition::IfExists,
        ..PutOptions::default()
    };
    assert!(e.put(b"nope", Bytes::new(), if_exists).is_err());
    assert!(matches!(
        e.delete(b"a", Precondition::IfVersion(v1)),
        Err(Error::PreconditionFailed { .. })
    ));
    assert_eq!(
        e.delete(b"a", Precondition::IfVersion(w2.version))
            .expect("delete"),
        Some(w2.version)
    );
    assert_eq!(e.delete(b"a", Precondition::None).expect("absent"), None);
    assert!(matches!(e.get(b""), Err(Error::EmptyKey)));
}

#[test]
fn ttl_expires_like_absent_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let far = UnixMillis(UnixMillis::now().0 + 3_600_000);
    {
        let e = open(dir.path(), SyncPolicy::Never, &opts());
        let ttl = |t| PutOptions {
            expires_at: Some(t),
            ..PutOptions::default()
        };
        put(&e, "gone", "old value");
        e.put(b"gone", Bytes::from_static(b"x"), ttl(UnixMillis(1)))
            .expect("put");
        e.put(b"later", Bytes::from_static(b"y"), ttl(far))
            .expect("put");
        assert_eq!(get(&e, "gone"), None);
        assert_eq!(e.head(b"gone").expect("head"), None);
        assert_eq!(e.delete(b"gone", Precondition::None).expect("del"), None);
        let w = e
            .put(b"gone", Bytes::from_static(b"z"), ttl(UnixMillis(2)))
            .expect("put");
        assert!(w.created, "an expired key is absent");
        assert!(e.list(b"", None, 10).expect("list").keys == vec![b"later".to_vec()]);
        e.snapshot().expect("snapshot");
    }
    let e = open(dir.path(), SyncPolicy::Never, &opts());
    assert_eq!(get(&e, "gone"), None);
    let m = e.head(b"later").expect("head").expect("present");
    assert_eq!(m.expires_at, Some(far));
    assert_eq!(e.stats().expect("stats").keys, 1);
}

#[test]
fn batches_are_atomic_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = MemoryOptions {
        max_batch_ops: 4,
        ..opts()
    };
    {
        let e = open(dir.path(), SyncPolicy::Always, &o);
        put(&e, "b", "old");
        let r = e
            .apply_batch(vec![
                BatchOp::Put {
                    key: b"a".to_vec(),
                    value: Bytes::from_static(b"1"),
                    expires_at: None,
                },
                BatchOp::Put {
                    key: b"b".to_vec(),
                    value: Bytes::from_static(b"2"),
                    expires_at: None,
                },
                BatchOp::Delete { key: b"c".to_vec() },
                BatchOp::Delete { key: b"a".to_vec() },
            ])
            .expect("batch");
        assert_eq!(
            r.iter().map(|x| x.existed_before).collect::<Vec<_>>(),
            vec![false, true, false, true]
        );
        assert!(r.windows(2).all(|w| w[0].version < w[1].version));
        let too_big = (0..5)
            .map(|i| BatchOp::Delete { key: vec![b'k', i] })
            .collect();
        assert!(matches!(
            e.apply_batch(too_big),
            Err(Error::BatchTooLarge(_))
        ));
        let bad_key = vec![
            BatchOp::Put {
                key: b"z".to_vec(),
                value: Bytes::new(),
                expires_at: None,
            },
            BatchOp::Delete { key: Vec::new() },
        ];
        assert!(matches!(e.apply_batch(bad_key), Err(Error::EmptyKey)));
        assert_eq!(get(&e, "z"), None, "nothing of a failed batch is applied");
    }
    let e = open(dir.path(), SyncPolicy::Always, &o);
    assert_eq!((get(&e, "a"), get(&e, "b")), (None, Some("2".into())));
}

#[test]
fn listing_paginates_in_byte_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = open(dir.path(), SyncPolicy::Never, &opts());
    let mut want = Vec::new();
    for i in 0..250u32 {
        let k = format!("p/{:03}", (i * 7919) % 250);
        put(&e, &k, "v");
        want.push(k.into_bytes());
    }
    put(&e, "q", "other prefix");
    e.put(
        b"p/expired",
        Bytes::new(),
        PutOptions {
            expires_at: Some(UnixMillis(1)),
            ..PutOptions::default()
        },
    )
    .expect("put");
    e.put(b"p/\xff", Bytes::new(), PutOptions::default())
        .expect("put");
    want.push(b"p/\xff".to_vec());
    want.sort();
    let mut got = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = e.list(b"p/", after.as_deref(), 33).expect("list");
        assert!(page.keys.len() <= 33);
        got.extend(page.keys.iter().cloned());
        match page.next_start_after {
            Some(n) => {
                assert_eq!(Some(&n), page.keys.last());
                after = Some(n);
            }
            None => break,
        }
    }
    assert_eq!(got, want);
    assert_eq!(e.list(b"", None, 0).expect("list").keys.len(), 0);
}

#[test]
fn snapshot_then_log_replay_and_merge_shrinks_the_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = MemoryOptions {
        snapshots_kept: 2,
        ..opts()
    };
    {
        let e = open(dir.path(), SyncPolicy::Never, &o);
        for round in 0..5 {
            for i in 0..200 {
                put(&e, &format!("k{i}"), &format!("r{round}-{i}"));
            }
        }
        e.sync().expect("sync");
        let before = e.stats().expect("stats").disk_bytes;
        let s = e.snapshot().expect("snapshot");
        assert_eq!(s.keys, 200);
        for i in 0..50 {
            put(&e, &format!("k{i}"), "after snapshot");
        }
        let m = e.merge().expect("merge");
        assert_eq!(m.records_kept, 200);
        let after = e.stats().expect("stats");
        assert!(after.disk_bytes < before, "{before} -> {after:#?}");
        for i in 0..10 {
            put(&e, &format!("k{i}"), "after merge");
        }
        e.snapshot().expect("third");
        let snaps = e.snapshots().expect("list");
        assert_eq!(snaps.len(), 2, "only the last 2 are kept");
        assert!(snaps[0].taken_at <= snaps[1].taken_at);
        let j = e.jobs();
        assert_eq!((j.snapshots_completed, j.merges_completed), (2, 1));
        put(&e, "k199", "only in the log");
    }
    let e = open(dir.path(), SyncPolicy::Never, &o);
    assert_eq!(get(&e, "k0").as_deref(), Some("after merge"));
    assert_eq!(get(&e, "k20").as_deref(), Some("after snapshot"));
    assert_eq!(get(&e, "k100").as_deref(), Some("r4-100"));
    assert_eq!(get(&e, "k199").as_deref(), Some("only in the log"));
}

#[test]
fn without_aof_close_saves_a_snapshot() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = MemoryOptions {
        aof: false,
        ..opts()
    };
    {
        let e = open(dir.path(), SyncPolicy::Always, &o);
        put(&e, "a", "1");
        e.snapshot().expect("snapshot");
        put(&e, "b", "2");
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("log-")), "{names:?}");
    let e = open(dir.path(), SyncPolicy::Always, &o);
    assert_eq!(
        (get(&e, "a"), get(&e, "b")),
        (Some("1".into()), Some("2".into()))
    );
    // Switching the log on later keeps everything.
    drop(e);
    let e = open(dir.path(), SyncPolicy::Always, &opts());
    put(&e, "c", "3");
    drop(e);
    let e = open(dir.path(), SyncPolicy::Always, &opts());
    assert_eq!(get(&e, "c").as_deref(), Some("3"));
    assert_eq!(get(&e, "a").as_deref(), Some("1"));
}

#[test]
fn second_open_is_locked_and_busy_is_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = open(dir.path(), SyncPolicy::Never, &opts());
    assert!(matches!(
        MemoryEngine::open(dir.path(), SyncPolicy::Never, &opts()),
        Err(Error::Locked(_))
    ));
    drop(e);
    open(dir.path(), SyncPolicy::Never, &opts());
}

fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|d| d.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".hha"))
        .collect();
    v.sort();
    v
}

#[test]
fn corruption_in_an_earlier_log_stops_open_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let e = open(dir.path(), SyncPolicy::Never, &opts());
        for i in 0..20 {
            put(&e, &format!("k{i}"), "value");
        }
    }
    drop(open(dir.path(), SyncPolicy::Never, &opts())); // a second, empty log follows
    let logs = log_files(dir.path());
    assert!(logs.len() >= 2);
    let mut bytes = std::fs::read(&logs[0]).expect("read");
    bytes[40] ^= 0xFF;
    std::fs::write(&logs[0], &bytes).expect("write");
    match MemoryEngine::open(dir.path(), SyncPolicy::Never, &opts()) {
        Err(Error::Corrupted { file, offset, .. }) => {
            assert_eq!(file, logs[0]);
            assert!((24..=40).contains(&offset), "{offset}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[test]
fn torn_tail_of_the_last_log_is_cut() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let e = open(dir.path(), SyncPolicy::Never, &opts());
        for i in 0..20 {
            put(&e, &format!("k{i}"), "value");
        }
    }
    let logs = log_files(dir.path());
    let last = logs.last().expect("a log");
    let len = std::fs::metadata(last).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .expect("open");
    f.set_len(len - 3).expect("truncate");
    let e = open(dir.path(), SyncPolicy::Never, &opts());
    assert_eq!(get(&e, "k18").as_deref(), Some("value"));
    assert_eq!(get(&e, "k19"), None);
    assert_eq!(e.stats().expect("stats").corrupt_records, 1);
}

#[test]
fn unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    drop(open(dir.path(), SyncPolicy::Never, &opts()));
    let path = dir.path().join("MANIFEST");
    let mut b = std::fs::read(&path).expect("read");
    b[8] = 7;
    std::fs::write(&path, &b).expect("write");
    assert!(matches!(
        MemoryEngine::open(dir.path(), SyncPolicy::Never, &opts()),
        Err(Error::UnsupportedFormat { found: 7, .. })
    ));
}

/// Every snapshot taken while two writers run 4-key batches holds each writer's keys at one
/// batch: a consistent cut. Each snapshot is restored on its own (not the final one `close`
/// writes) and checked, and each is taken only after the writers made progress since the
/// last, so every cut falls among running batches.
#[test]
fn snapshots_are_consistent_cuts_under_concurrent_batches() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;
    const SNAPSHOTS: usize = 8;
    let dir = tempfile::tempdir().expect("tmp");
    let o = MemoryOptions {
        aof: false,
        ..opts()
    };
    let e = Arc::new(open(dir.path(), SyncPolicy::Never, &o));
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (e, stop, done) = (e.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let v = Bytes::from(format!("{t}-{i}"));
                    let ops = (0..4)
                        .map(|j| BatchOp::Put {
                            key: format!("t{t}-{j}").into_bytes(),
                            value: v.clone(),
                            expires_at: None,
                        })
                        .collect();
                    e.apply_batch(ops).expect("batch");
                    i += 1;
                    done[t].store(i, Ordering::Release);
                }
            })
        })
        .collect();
    let copies = tempfile::tempdir().expect("tmp");
    let mut seen = [0u64; 2];
    for n in 0..SNAPSHOTS {
        // Wait (bounded) until both writers have applied a batch since the last snapshot.
        let deadline = Instant::now() + common::STEP_TIMEOUT;
        while (0..2).any(|t| done[t].load(Ordering::Acquire) <= seen[t]) {
            assert!(Instant::now() < deadline, "the writers made no progress");
            std::thread::yield_now();
        }
        let r = e.snapshot().expect("snapshot");
        seen = [0, 1].map(|t| done[t].load(Ordering::Acquire));
        // Copy it at once: later snapshots prune old ones.
        common::restore_memory_snapshot(&r.path, &copies.path().join(format!("{n}")));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("join");
    }
    drop(e);
    for n in 0..SNAPSHOTS {
        let d = copies.path().join(format!("{n}"));
        let s = open(&d, SyncPolicy::Never, &o);
        for t in 0..2 {
            let vals: Vec<_> = (0..4).map(|j| get(&s, &format!("t{t}-{j}"))).collect();
            assert!(vals[0].is_some(), "snapshot {n}: writer {t}'s keys missing");
            assert!(
                vals.windows(2).all(|w| w[0] == w[1]),
                "snapshot {n} is not a consistent cut: {vals:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Real crashes: the test binary re-runs itself as a child with HH_MEM_CHILD set.

const CHILD_ENV: &str = "HH_MEM_CHILD";

/// The child's body. A no-op in a normal test run.
#[test]
fn child_main() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::env::var("HH_MEM_DIR").expect("dir");
    let o = MemoryOptions {
        crash_at: std::env::var("HH_MEM_CRASH_AT").ok(),
        shards: 8,
        save_points: vec![],
        ..MemoryOptions::default()
    };
    let e = Arc::new(open(Path::new(&dir), SyncPolicy::Always, &o));
    let start: u64 = std::env::var("HH_MEM_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if mode == "crash-at" {
        // The step hook logs through `tracing` before it aborts: let it reach stderr.
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
        for i in start..start + 300 {
            put(&*e, &format!("k{i}"), &format!("v{i}"));
            println!("ack {i}");
        }
        match e.merge() {
            Ok(_) => println!("merge finished"),
            Err(err) => println!("merge failed: {err}"),
        }
        std::process::exit(0);
    }
    // Load forever, acknowledging each key; "snapshot"/"merge" modes run that job in a loop.
    if mode != "load" {
        let e = e.clone();
        std::thread::spawn(move || {
            loop {
                let r = if mode == "snapshot" {
                    e.snapshot().map(|_| ())
                } else {
                    e.merge().map(|_| ())
                };
                match r {
                    Ok(()) => println!("job done"),
                    Err(err) => {
                        eprintln!("{mode} failed: {err}");
                        std::process::exit(3);
                    }
                }
            }
        });
    }
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                let mut i = start + t;
                loop {
                    put(&*e, &format!("k{i}"), &format!("v{i}"));
                    println!("ack {i}");
                    i += 4;
                }
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
}

fn spawn_child(
    dir: &Path,
    mode: &str,
    crash_at: Option<&str>,
    start: u64,
    stderr: Stdio,
) -> KillOnDrop {
    let mut c = Command::new(std::env::current_exe().expect("exe"));
    c.args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env("HH_MEM_DIR", dir)
        .env("HH_MEM_START", start.to_string())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(stderr);
    if let Some(step) = crash_at {
        c.env("HH_MEM_CRASH_AT", step);
    }
    KillOnDrop(c.spawn().expect("spawn child"))
}

/// What a child printed: acknowledged keys, finished background jobs, other lines.
#[derive(Default)]
struct Printed {
    acks: Vec<u64>,
    jobs: usize,
    other: Vec<String>,
}

/// Reads the child's lines until `stop(&printed)` says so or the child exits; every line must
/// come within `STEP_TIMEOUT` (a hung child fails the test, naming `what`).
fn read_acks(lines: &Lines, what: &str, mut stop: impl FnMut(&Printed) -> bool) -> Printed {
    let mut p = Printed::default();
    while let Some(line) = lines.next(what) {
        // The harness may print its own text before the first line.
        if let Some((_, n)) = line.split_once("ack ") {
            p.acks.push(n.trim().parse().expect("number"));
        } else if line.ends_with("job done") {
            p.jobs += 1;
        } else {
            p.other.push(line);
        }
        if stop(&p) {
            break;
        }
    }
    p
}

fn assert_acked_present(dir: &Path, acks: &[u64]) {
    let e = open(dir, SyncPolicy::Always, &opts());
    for i in acks {
        assert_eq!(
            get(&e, &format!("k{i}")),
            Some(format!("v{i}")),
            "acknowledged k{i} lost"
        );
    }
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    for (round, mode) in ["load", "snapshot", "merge"].into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut all = Vec::new();
        // Two crashes in a row: the second recovers from the first's files.
        for pass in 0..2u64 {
            let mut child = spawn_child(dir.path(), mode, None, pass * 1_000_000, Stdio::null());
            let target = 300 + 200 * round;
            // The snapshot / merge modes: the jobs must really run beside the writes.
            let jobs = if mode == "load" { 0 } else { 2 };
            let lines = Lines::of(&mut child);
            let p = read_acks(&lines, mode, |p| p.acks.len() >= target && p.jobs >= jobs);
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            // Lines printed before the kill are acknowledged too.
            let rest = read_acks(&lines, mode, |_| false);
            assert!(
                p.acks.len() >= target && p.jobs >= jobs,
                "{mode}: the child exited after {} acknowledged writes and {} finished jobs",
                p.acks.len(),
                p.jobs
            );
            all.extend(p.acks);
            all.extend(rest.acks);
            assert_acked_present(dir.path(), &all);
        }
    }
}

#[test]
fn a_crash_at_each_step_of_a_log_rewrite_loses_nothing() {
    for step in [
        "log-created",
        "cut",
        "snapshot-written",
        "snapshot-renamed",
        "manifest-stored",
        "cleaned",
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut all = Vec::new();
        for pass in 0..2u64 {
            let logs = tempfile::tempdir().expect("tmp");
            let err_path = logs.path().join("stderr.log");
            let err = std::fs::File::create(&err_path).expect("stderr file");
            let mut child =
                spawn_child(dir.path(), "crash-at", Some(step), pass * 1000, err.into());
            let p = read_acks(&Lines::of(&mut child), step, |_| false);
            let status = wait_child(&mut child, step);
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            assert_aborted_at(status, &stderr, "crash_at hook: aborting the process", step);
            assert!(
                stderr.contains(&format!("step=\"{step}\"")),
                "{step}: the hook fired at another step: {stderr}"
            );
            assert!(
                p.other.iter().all(|l| !l.contains("merge ")),
                "{step}: {:?}",
                p.other
            );
            assert_eq!(p.acks.len(), 300, "{step}");
            all.extend(p.acks);
            assert_acked_present(dir.path(), &all);
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".tmp")),
            "{step}: {names:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Model-based property test.

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Put(u8, u8, bool),
        Delete(u8),
        Cas(u8, u8),
        Batch(Vec<(u8, Option<u8>)>),
        Snapshot,
        Merge,
        Reopen,
        /// One listing page: continues the listing in progress, else starts this range.
        Page(u8, Option<u8>, Option<u8>, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..24, any::<u8>(), prop::bool::weighted(0.1)).prop_map(|(k, v, e)| Op::Put(k, v, e)),
            3 => (0u8..24).prop_map(Op::Delete),
            2 => (0u8..24, any::<u8>()).prop_map(|(k, v)| Op::Cas(k, v)),
            2 => prop::collection::vec((0u8..24, prop::option::of(any::<u8>())), 1..5).prop_map(Op::Batch),
            1 => Just(Op::Snapshot),
            1 => Just(Op::Merge),
            1 => Just(Op::Reopen),
            3 => (any::<u8>(), prop::option::of(0u8..50), prop::option::of(0u8..50), 1usize..6)
                .prop_map(|(p, s, e, l)| Op::Page(p, s, e, l)),
        ]
    }

    fn key(k: u8) -> Vec<u8> {
        format!("key{k:02}").into_bytes()
    }

    fn value(k: u8, v: u8) -> Bytes {
        Bytes::from(vec![v; usize::from(k) * 13])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn matches_a_btreemap(ops in prop::collection::vec(op(), 1..60), aof in any::<bool>(), compress in any::<bool>()) {
            use hoardhaven::engine::compression::{Algorithm, Compression};
            let dir = tempfile::tempdir().expect("tmp");
            // Log compression on or off, flipped at every reopen: logs written with it off
            // are replayed with it on and the other way round.
            let with = |compress: bool| MemoryOptions {
                aof,
                shards: 4,
                compression: Compression {
                    algorithm: if compress { Algorithm::Lz4 } else { Algorithm::None },
                    min_bytes: 64,
                },
                ..opts()
            };
            let mut compress = compress;
            let mut o = with(compress);
            let mut e = open(dir.path(), SyncPolicy::Never, &o);
            let mut model: BTreeMap<Vec<u8>, (Bytes, Version)> = BTreeMap::new();
            let mut last = Version(0);
            let mut pager = crate::common::listing::Pager::default();
            for op in ops {
                match op {
                    Op::Put(k, v, expired) => {
                        let opts = PutOptions {
                            expires_at: expired.then_some(UnixMillis(1)),
                            ..PutOptions::default()
                        };
                        let w = e.put(&key(k), value(k, v), opts).expect("put");
                        prop_assert_eq!(w.created, !model.contains_key(&key(k)));
                        prop_assert!(w.version > last);
                        last = w.version;
                        if expired { model.remove(&key(k)); } else { model.insert(key(k), (value(k, v), w.version)); }
                    }
                    Op::Delete(k) => {
                        let r = e.delete(&key(k), Precondition::None).expect("delete");
                        prop_assert_eq!(r, model.remove(&key(k)).map(|x| x.1));
                    }
                    Op::Cas(k, v) => {
                        let cur = model.get(&key(k)).map(|x| x.1);
                        let guess = cur.unwrap_or(Version(1));
                        let r = e.put(&key(k), value(k, v), PutOptions {
                            precondition: Precondition::IfVersion(guess), ..PutOptions::default() });
                        match (cur, r) {
                            (Some(_), Ok(w)) => { last = w.version; model.insert(key(k), (value(k, v), w.version)); }
                            (None, Err(Error::PreconditionFailed { current: None })) => {}
                            (c, r) => prop_assert!(false, "cas on {:?}: {:?}", c, r),
                        }
                    }
                    Op::Batch(items) => {
                        let ops = items.iter().map(|&(k, v)| match v {
                            Some(v) => BatchOp::Put { key: key(k), value: value(k, v), expires_at: None },
                            None => BatchOp::Delete { key: key(k) },
                        }).collect();
                        let res = e.apply_batch(ops).expect("batch");
                        for (&(k, v), r) in items.iter().zip(res) {
                            prop_assert_eq!(r.existed_before, model.contains_key(&key(k)));
                            prop_assert!(r.version > last);
                            last = r.version;
                            match v {
                                Some(v) => { model.insert(key(k), (value(k, v), r.version)); }
                                None => { model.remove(&key(k)); }
                            }
                        }
                    }
                    Op::Snapshot => { e.snapshot().expect("snapshot"); }
                    Op::Merge => { e.merge().expect("merge"); }
                    Op::Reopen => {
                        drop(e);
                        compress = !compress;
                        o = with(compress);
                        e = open(dir.path(), SyncPolicy::Never, &o);
                    }
                    Op::Page(p, s, end, limit) => {
                        let spec = crate::common::listing::RangeSpec::pick(key, p, s, end);
                        if let Err(m) = pager.step(&e, spec, limit, &model) {
                            prop_assert!(false, "{}", m);
                        }
                    }
                }
                for k in 0..24u8 {
                    let got = e.get(&key(k)).expect("get").map(|v| (v.bytes, v.meta.version));
                    prop_assert_eq!(got, model.get(&key(k)).cloned());
                }
                let listed = e.list(b"key", None, 1000).expect("list").keys;
                prop_assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
            }
        }
    }
}
