//! Real crashes of the bitcask engine: a child process (this test binary re-run with
//! `HH_CHILD` set) is killed with SIGKILL under load, or aborts at an injected crash point
//! (`HOARDHAVEN_CRASH_AT`) inside merge, snapshot and rotation. The parent then reopens the
//! data directory and checks that nothing acknowledged was lost and nothing dead came back.
//!
//! A crash-point run counts only when the child died of SIGABRT after printing the hook's
//! `crash point <name>: aborting` line: a panic or an error exit before the named step is a
//! failure, not "the crash point was reached". Every wait on the child is for an event (a
//! line, an exit, bytes in a file) and bounded, with a message saying what did not happen.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use common::{
    KillOnDrop, Lines, NoLine, STEP_TIMEOUT, assert_aborted_at, bitcask_opts, data_files,
    open_bitcask, wait_child,
};
use hoardhaven::engine::bitcask::{Bitcask, BitcaskOptions};
use hoardhaven::engine::{Engine, Precondition, PutOptions, SyncPolicy};

const FILE_SIZE: u64 = 32 * 1024;

/// Entry point of the child processes; does nothing in a normal test run.
#[test]
fn child_process_entry() {
    let Ok(mode) = std::env::var("HH_CHILD") else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var("HH_DIR").expect("HH_DIR"));
    match mode.as_str() {
        "load" => child_load(&dir, false),
        "load-and-merge" => child_load(&dir, true),
        "merge" => {
            let e = open_bitcask(&dir, SyncPolicy::Never, FILE_SIZE);
            e.merge().expect("merge");
        }
        "snapshot" => {
            let e = open_bitcask(&dir, SyncPolicy::Never, FILE_SIZE);
            e.snapshot().expect("snapshot");
        }
        "rotate" => {
            let e = open_bitcask(&dir, SyncPolicy::Always, FILE_SIZE);
            for i in 0..10_000 {
                e.put(
                    format!("r{i}").as_bytes(),
                    Bytes::from(vec![1u8; 100]),
                    PutOptions::default(),
                )
                .expect("put");
                println!("ack r{i}");
            }
        }
        "trickle" => {
            let e = open_bitcask(&dir, SyncPolicy::Never, FILE_SIZE);
            e.put(
                b"trickle",
                Bytes::from_static(b"one small write"),
                PutOptions::default(),
            )
            .expect("put");
            println!("ack trickle");
            // Never returns: only the flush tick can hand the write to the OS (dropping the
            // store would flush it too). The parent kills this process.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        other => panic!("unknown child mode {other}"),
    }
    std::process::exit(0);
}

/// Writers with sync=always print every acknowledged write; optionally merges run in a loop.
fn child_load(dir: &Path, merging: bool) {
    // Files large enough that rotation rarely flushes the append buffer for us.
    let o = BitcaskOptions {
        max_file_size: 1 << 20,
        ..bitcask_opts(FILE_SIZE)
    };
    let e = Arc::new(Bitcask::open(dir, SyncPolicy::Always, &o).expect("open"));
    if merging {
        let m = e.clone();
        std::thread::spawn(move || {
            loop {
                if let Err(err) = m.merge() {
                    eprintln!("merge under load failed: {err}");
                    std::process::exit(3);
                }
                writeln!(std::io::stdout().lock(), "merged").expect("stdout");
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let key = format!("t{t}-{}", i % 150);
                    let val = format!("{t}:{i}");
                    if i % 10 == 9 {
                        e.delete(key.as_bytes(), Precondition::None)
                            .expect("delete");
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "del {key} {i}").expect("stdout");
                    } else {
                        e.put(
                            key.as_bytes(),
                            Bytes::from(val.clone()),
                            PutOptions::default(),
                        )
                        .expect("put");
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "put {key} {val}").expect("stdout");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

fn child(mode: &str, dir: &Path, crash_at: Option<&str>) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("exe"));
    c.args([
        "--exact",
        "child_process_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("HH_CHILD", mode)
    .env("HH_DIR", dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    c.env_remove("HOARDHAVEN_CRASH_AT");
    if let Some(p) = crash_at {
        c.env("HOARDHAVEN_CRASH_AT", p);
    }
    c
}

/// The crash hook's last words (`hoardhaven_engine::crash_point`).
fn marker(point: &str) -> String {
    format!("crash point {point}: aborting")
}

/// Runs `mode` with the crash point `point` armed; returns its exit, its stdout lines and its
/// stderr once it has exited (bounded).
fn run_to_crash(mode: &str, dir: &Path, point: &str) -> (ExitStatus, Vec<String>, String) {
    let err_dir = tempfile::tempdir().expect("tempdir");
    let err_path = err_dir.path().join("stderr");
    let mut c = KillOnDrop(
        child(mode, dir, Some(point))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("spawn"),
    );
    let lines = Lines::of(&mut c).rest(point);
    let status = wait_child(&mut c, point);
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    (status, lines, stderr)
}

/// Longest a load child may take to reach its targets: generous, so that only a hang or a
/// stuck writer reaches it on a loaded machine (no throughput is asserted).
const LOAD_BOUND: Duration = Duration::from_secs(600);

/// What the parent learnt from a load child: the last acknowledged state of each key, and
/// each writer thread's last acknowledged step (its next op may have landed unacknowledged).
#[derive(Default)]
struct Acked {
    state: BTreeMap<String, Option<String>>,
    last_step: BTreeMap<u64, u64>,
}

/// Runs a load child, SIGKILLs it once it has acknowledged `acks` writes and finished
/// `merges` merges, then drains every complete line it printed before dying: those are all
/// acknowledged.
fn kill_under_load(dir: &Path, mode: &str, acks: usize, merges: usize) -> Acked {
    let mut c = KillOnDrop(child(mode, dir, None).spawn().expect("spawn"));
    let out = Lines::of(&mut c);
    let mut acked = Acked::default();
    let (mut n, mut merged) = (0, 0);
    let mut killed = false;
    let deadline = Instant::now() + LOAD_BOUND;
    loop {
        let text = match out.next_before(if killed {
            Instant::now() + STEP_TIMEOUT
        } else {
            deadline
        }) {
            Ok(t) => t,
            Err(NoLine::Closed) => break,
            Err(NoLine::Timeout) => {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{mode}: after {n} acknowledged writes and {merged} merges the child was \
                     silent until the bound ({LOAD_BOUND:?} in all, {STEP_TIMEOUT:?} after the kill)"
                );
            }
        };
        let parts: Vec<&str> = text.split(' ').collect();
        let (key, value, thread, step) = match parts.as_slice() {
            ["merged"] => {
                merged += 1;
                continue;
            }
            ["put", k, v] => {
                let (t, i) = v.split_once(':').expect("value t:i");
                (
                    k.to_string(),
                    Some(v.to_string()),
                    t.parse().expect("t"),
                    i.parse().expect("i"),
                )
            }
            ["del", k, i] => {
                let t = k[1..].split('-').next().expect("t").parse().expect("t");
                (k.to_string(), None, t, i.parse().expect("i"))
            }
            _ => continue,
        };
        acked.state.insert(key, value);
        acked.last_step.insert(thread, step);
        n += 1;
        if !killed && n >= acks && merged >= merges {
            c.kill().expect("kill -9");
            killed = true;
        }
    }
    let status = wait_child(&mut c, mode);
    assert!(
        killed,
        "{mode}: the child exited by itself ({status}) after {n} writes and {merged} merges"
    );
    assert!(
        n >= acks && merged >= merges,
        "{mode}: {n} writes, {merged} merges"
    );
    acked
}

/// Every key holds exactly its last acknowledged state, except that each writer's one
/// in-flight operation may have landed without its acknowledgement being printed.
fn check_acked(e: &Bitcask, acked: &Acked) {
    let mut in_flight = BTreeMap::new();
    for (t, last) in &acked.last_step {
        let i = last + 1;
        let key = format!("t{t}-{}", i % 150);
        let val = (i % 10 != 9).then(|| format!("{t}:{i}"));
        in_flight.insert(key, val);
    }
    for (k, want) in &acked.state {
        let got = e
            .get(k.as_bytes())
            .expect("get")
            .map(|v| String::from_utf8(v.bytes.to_vec()).expect("utf8"));
        let ok = &got == want || in_flight.get(k) == Some(&got);
        assert!(ok, "{k}: acknowledged {want:?}, found {got:?}");
    }
}

#[test]
fn kill_9_under_sync_always_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = kill_under_load(dir.path(), "load", 3000, 0);
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    check_acked(&e, &model);
}

#[test]
fn kill_9_during_merges_under_write_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = kill_under_load(dir.path(), "load-and-merge", 4000, 3);
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    check_acked(&e, &model);
    // And a merge after the crash keeps it all.
    e.merge().expect("merge");
    check_acked(&e, &model);
}

/// A store with overwrites, deletes and several files; returns the model of what it holds.
fn prepare(dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let e = open_bitcask(dir, SyncPolicy::Never, FILE_SIZE);
    let mut model = BTreeMap::new();
    for round in 0..4 {
        for i in 0..400 {
            let k = format!("k{i:03}").into_bytes();
            let v = format!("r{round}-{i}-{}", "p".repeat(i % 40)).into_bytes();
            e.put(&k, Bytes::from(v.clone()), PutOptions::default())
                .expect("put");
            model.insert(k, v);
        }
        for i in (round..400).step_by(9) {
            let k = format!("k{i:03}").into_bytes();
            e.delete(&k, Precondition::None).expect("delete");
            model.remove(&k);
        }
    }
    e.close().expect("close");
    model
}

fn assert_model(dir: &Path, model: &BTreeMap<Vec<u8>, Vec<u8>>, what: &str) {
    let e = Bitcask::open(dir, SyncPolicy::Never, &bitcask_opts(FILE_SIZE))
        .unwrap_or_else(|err| panic!("{what}: reopen: {err}"));
    let keys = e.list(b"", None, 100_000).expect("list").keys;
    assert_eq!(keys.len(), model.len(), "{what}: key count");
    for (k, v) in model {
        let got = e.get(k).expect("get").map(|v| v.bytes.to_vec());
        assert_eq!(
            got.as_ref(),
            Some(v),
            "{what}: {}",
            String::from_utf8_lossy(k)
        );
    }
    // A full merge afterwards must agree too.
    e.merge()
        .unwrap_or_else(|err| panic!("{what}: merge after crash: {err}"));
    for (k, v) in model {
        assert_eq!(
            e.get(k).expect("get").map(|v| v.bytes.to_vec()).as_ref(),
            Some(v),
            "{what}: after merge"
        );
    }
}

#[test]
fn a_crash_at_every_step_of_merge_loses_nothing() {
    for point in [
        "merge:sealed",
        "merge:output-buffered",
        "merge:output-synced",
        "merge:output-renamed",
        "merge:hint-written",
        "merge:before-retire",
        "merge:retired-one",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = prepare(dir.path());
        let (status, _, stderr) = run_to_crash("merge", dir.path(), point);
        assert_aborted_at(status, &stderr, &marker(point), point);
        assert_model(dir.path(), &model, point);
    }
}

#[test]
fn a_crash_while_taking_a_snapshot_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = prepare(dir.path());
    let point = "snapshot:linked";
    let (status, _, stderr) = run_to_crash("snapshot", dir.path(), point);
    assert_aborted_at(status, &stderr, &marker(point), point);
    assert_model(dir.path(), &model, "snapshot:linked");
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    assert!(
        e.snapshots().expect("list").is_empty(),
        "a half-made snapshot is not listed"
    );
    let r = e.snapshot().expect("snapshot after crash");
    assert!(r.path.exists());
}

#[test]
fn a_crash_during_rotation_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let point = "rotate:sealed";
    let (status, lines, stderr) = run_to_crash("rotate", dir.path(), point);
    assert_aborted_at(status, &stderr, &marker(point), point);
    let acked: Vec<String> = lines
        .iter()
        .filter_map(|l| l.split_once("ack ").map(|(_, k)| k.to_string()))
        .collect();
    assert!(
        !acked.is_empty(),
        "no write acknowledged before the rotation"
    );
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    for k in &acked {
        assert!(e.get(k.as_bytes()).expect("get").is_some(), "{k} lost");
    }
}

#[test]
fn sync_never_hands_a_lone_small_write_to_the_os_soon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = KillOnDrop(child("trickle", dir.path(), None).spawn().expect("spawn"));
    let out = Lines::of(&mut c);
    // libtest may print "test child_process_entry ... " on the same line first.
    while !out
        .next("waiting for the trickle write")
        .expect("the child died before acknowledging")
        .contains("ack trickle")
    {}
    // The event: the record's bytes are in the data file as the OS sees it (the page cache
    // survives kill -9), which only the flush tick can bring about while the child sleeps.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let in_file = || {
        data_files(dir.path())
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| b.windows(15).any(|w| w == b"one small write")))
    };
    while !in_file() {
        if Instant::now() >= deadline {
            panic!(
                "a lone write under sync=never was not handed to the OS within {STEP_TIMEOUT:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    c.kill().expect("kill -9");
    let _ = c.wait();
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    assert!(
        e.get(b"trickle").expect("get").is_some(),
        "a write left in the buffer was lost"
    );
}
