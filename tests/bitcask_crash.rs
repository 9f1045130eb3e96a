//! Real crashes of the bitcask engine: a child process (this test binary re-run with
//! `HH_CHILD` set) is killed with SIGKILL under load, or aborts at an injected crash point
//! (`HOARDHAVEN_CRASH_AT`) inside merge, snapshot and rotation. The parent then reopens the
//! data directory and checks that nothing acknowledged was lost and nothing dead came back.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use common::{bitcask_opts, open_bitcask};
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
            std::thread::sleep(Duration::from_secs(60));
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
                let _ = m.merge();
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
    if let Some(p) = crash_at {
        c.env("HOARDHAVEN_CRASH_AT", p);
    }
    c
}

/// What the parent learnt from a load child: the last acknowledged state of each key, and
/// each writer thread's last acknowledged step (its next op may have landed unacknowledged).
#[derive(Default)]
struct Acked {
    state: BTreeMap<String, Option<String>>,
    last_step: BTreeMap<u64, u64>,
}

/// Runs a load child, SIGKILLs it after `acks` acknowledged writes, then drains every line it
/// printed before dying: those are all acknowledged.
fn kill_under_load(dir: &Path, mode: &str, acks: usize) -> Acked {
    let mut c = child(mode, dir, None).spawn().expect("spawn");
    let mut out = BufReader::new(c.stdout.take().expect("stdout"));
    let mut acked = Acked::default();
    let mut n = 0;
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = Vec::new();
    loop {
        line.clear();
        if out.read_until(b'\n', &mut line).expect("read") == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            break; // a line cut by the kill: not an acknowledgement
        }
        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        let parts: Vec<&str> = text.split(' ').collect();
        let (key, value, thread, step) = match parts.as_slice() {
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
        if !killed && (n >= acks || Instant::now() > deadline) {
            c.kill().expect("kill -9");
            killed = true;
        }
    }
    let _ = c.wait();
    assert!(n >= acks, "child acknowledged only {n} writes");
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
    let model = kill_under_load(dir.path(), "load", 3000);
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    check_acked(&e, &model);
}

#[test]
fn kill_9_during_merges_under_write_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = kill_under_load(dir.path(), "load-and-merge", 4000);
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
        let status = child("merge", dir.path(), Some(point))
            .status()
            .expect("run child");
        assert!(
            !status.success(),
            "{point}: the crash point was not reached"
        );
        assert_model(dir.path(), &model, point);
    }
}

#[test]
fn a_crash_while_taking_a_snapshot_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = prepare(dir.path());
    let status = child("snapshot", dir.path(), Some("snapshot:linked"))
        .status()
        .expect("run");
    assert!(!status.success(), "crash point reached");
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
    let mut c = child("rotate", dir.path(), Some("rotate:sealed"))
        .spawn()
        .expect("spawn");
    let out = c.stdout.take().expect("stdout");
    let acked: Vec<String> = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("ack ").map(str::to_string))
        .collect();
    let status = c.wait().expect("wait");
    assert!(!status.success(), "crash point reached");
    assert!(!acked.is_empty());
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    for k in &acked {
        assert!(e.get(k.as_bytes()).expect("get").is_some(), "{k} lost");
    }
}

#[test]
fn sync_never_hands_a_lone_small_write_to_the_os_soon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = child("trickle", dir.path(), None).spawn().expect("spawn");
    let mut out = BufReader::new(c.stdout.take().expect("stdout"));
    let mut line = String::new();
    // libtest may print "test child_process_entry ... " on the same line first.
    while !line.contains("ack trickle") {
        line.clear();
        assert!(out.read_line(&mut line).expect("read") > 0, "child died");
    }
    // Far longer than the 50 ms flush tick, far shorter than the child's sleep.
    std::thread::sleep(Duration::from_millis(500));
    c.kill().expect("kill -9");
    let _ = c.wait();
    let e = open_bitcask(dir.path(), SyncPolicy::Never, FILE_SIZE);
    assert!(
        e.get(b"trickle").expect("get").is_some(),
        "a write left in the buffer was lost"
    );
}
