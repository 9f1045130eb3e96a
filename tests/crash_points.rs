//! Crashes at every step of a bitcask snapshot, and at every step of a memory-engine log
//! rewrite over a workload of overwrites and deletes.
//!
//! A child process (this test binary re-run with `HH_CHILD` set) aborts at the named step:
//! bitcask through `HOARDHAVEN_CRASH_AT` (which prints `crash point <step>: aborting` first),
//! the memory engine through `MemoryOptions::crash_at`. The parent checks that the child died
//! of SIGABRT (a panic exits with 101, so an error before the step does not count as reaching
//! it) and, for bitcask, that the marker names the step. Then it reopens the store: exactly
//! the model (nothing acknowledged lost, nothing deleted or overwritten back), every listed
//! snapshot restores to one of the states it could have cut, and the next snapshot or rewrite
//! works.

mod claims_support;
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use claims_support::{options, value};
use hoardhaven::engine::{Engine, EngineKind, EngineOptions, Precondition, PutOptions, SyncPolicy};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const BITCASK_STEPS: &[&str] = &[
    "snapshot:root-created",
    "snapshot:rotated",
    "rotate:sealed",
    "snapshot:tmp-created",
    "snapshot:linked-one",
    "snapshot:own-file",
    "snapshot:linked",
    "snapshot:renamed",
    "snapshot:published",
    "snapshot:pruned",
];

const MEMORY_STEPS: &[&str] = &[
    "log-created",
    "cut",
    "snapshot-written",
    "snapshot-renamed",
    "manifest-stored",
    "cleaned",
];

fn opts(kind: EngineKind, dir: &Path) -> EngineOptions {
    let mut o = options(kind, dir, SyncPolicy::Always);
    o.bitcask.snapshots_kept = 2;
    o
}

fn open(kind: EngineKind, dir: &Path) -> std::sync::Arc<dyn Engine> {
    hoardhaven::engine::open(&opts(kind, dir)).unwrap_or_else(|e| panic!("{kind}: open: {e}"))
}

/// Everything in `e`, key by key ([`common::dump`]; a read error fails the test).
fn dump(e: &dyn Engine) -> Model {
    common::dump(e).expect("dump")
}

/// Writes `round` of a workload: puts, overwrites and deletes, returning the model after it.
fn workload(e: &dyn Engine, model: &mut Model, round: u64, mut ack: impl FnMut(&str)) {
    for i in 0..120u64 {
        let k = format!("k{:03}", (i * 7 + round * 13) % 150).into_bytes();
        if (i + round).is_multiple_of(4) {
            e.delete(&k, Precondition::None).expect("delete");
            model.remove(&k);
            ack(&format!("del {}", String::from_utf8_lossy(&k)));
        } else {
            let v = value(&k, round * 1000 + i, 80 + (i as usize % 5) * 40);
            e.put(&k, Bytes::from(v.clone()), PutOptions::default())
                .expect("put");
            ack(&format!(
                "put {} {}",
                String::from_utf8_lossy(&k),
                round * 1000 + i
            ));
            model.insert(k, v);
        }
    }
}

/// Entry point of the child processes; does nothing in a normal run.
#[test]
fn child_process_entry() {
    let Ok(mode) = std::env::var("HH_CHILD") else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var("HH_DIR").expect("HH_DIR"));
    match mode.as_str() {
        "snapshot" => {
            let e = open(EngineKind::Bitcask, &dir);
            e.snapshot().expect("snapshot");
            println!("snapshot returned");
        }
        "rewrite" => {
            let mut o = opts(EngineKind::Memory, &dir);
            o.memory.crash_at = Some(std::env::var("HH_STEP").expect("HH_STEP"));
            let e = hoardhaven::engine::open(&o).expect("open");
            let mut model = Model::new();
            workload(&*e, &mut model, 9, |line| println!("ack {line}"));
            println!("rewrite starts");
            e.merge().expect("rewrite");
            println!("rewrite returned");
        }
        other => panic!("unknown child mode {other}"),
    }
}

struct Died {
    stdout: Vec<String>,
    stderr: String,
}

fn run_child(mode: &str, dir: &Path, env: &[(&str, &str)], step: &str) -> Died {
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.args([
        "--exact",
        "child_process_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("HH_CHILD", mode)
    .env("HH_DIR", dir)
    .env_remove("HOARDHAVEN_CRASH_AT")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run child");
    let stdout: Vec<String> = BufReader::new(&out.stdout[..])
        .lines()
        .map_while(Result::ok)
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{mode} at {step}: the child did not abort at the step ({:?}); stdout {stdout:?}, \
         stderr {stderr}",
        out.status
    );
    Died { stdout, stderr }
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
fn a_crash_at_every_step_of_a_bitcask_snapshot_loses_nothing() {
    for step in BITCASK_STEPS {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        // Two snapshots already (the crashed one prunes the oldest), each a model state.
        let mut states = Vec::new();
        let mut model = Model::new();
        {
            let e = open(EngineKind::Bitcask, &dir);
            for round in 0..3 {
                workload(&*e, &mut model, round, |_| {});
                if round < 2 {
                    e.snapshot().expect("snapshot");
                    states.push(model.clone());
                }
            }
            e.close().expect("close");
        }
        states.push(model.clone());
        let died = run_child("snapshot", &dir, &[("HOARDHAVEN_CRASH_AT", step)], step);
        assert!(
            died.stderr
                .contains(&format!("crash point {step}: aborting")),
            "{step}: the child aborted elsewhere: {}",
            died.stderr
        );
        assert!(
            !died.stdout.iter().any(|l| l.contains("snapshot returned")),
            "{step}"
        );
        let e = open(EngineKind::Bitcask, &dir);
        assert!(
            dump(&*e) == model,
            "{step}: the store is not the model after the crash"
        );
        let listed = e.snapshots().expect("snapshots");
        assert!(
            !listed.is_empty(),
            "{step}: the finished snapshots are gone"
        );
        for (i, s) in listed.iter().enumerate() {
            let name = s.path.file_name().expect("name").to_string_lossy();
            assert!(
                !name.starts_with(".tmp"),
                "{step}: a half-made snapshot is listed"
            );
            let to = tmp.path().join(format!("restore-{i}"));
            copy_dir(&s.path, &to);
            let r = open(EngineKind::Bitcask, &to);
            let got = dump(&*r);
            assert!(
                states.contains(&got),
                "{step}: snapshot {name} restores to a state the store never had"
            );
            r.close().expect("close");
        }
        e.snapshot().expect("a snapshot after the crash");
        e.close().expect("close");
    }
}

#[test]
fn a_crash_at_every_step_of_a_memory_rewrite_brings_nothing_dead_back() {
    for step in MEMORY_STEPS {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut model = Model::new();
        {
            let e = open(EngineKind::Memory, &dir);
            for round in 0..3 {
                workload(&*e, &mut model, round, |_| {});
                if round == 1 {
                    e.merge().expect("a first rewrite");
                }
            }
            e.close().expect("close");
        }
        let died = run_child("rewrite", &dir, &[("HH_STEP", step)], step);
        assert!(
            died.stdout.iter().any(|l| l.contains("rewrite starts"))
                && !died.stdout.iter().any(|l| l.contains("rewrite returned")),
            "{step}: the child did not die inside the rewrite: {:?}",
            died.stdout
        );
        // The child's writes, all acknowledged before the rewrite, in order.
        let acks = died.stdout.iter().filter(|l| l.contains("ack ")).count();
        assert_eq!(acks, 120, "{step}: the child's workload ran");
        workload_model(&mut model, 9);
        for pass in ["after the crash", "after a full rewrite", "after a reopen"] {
            let e = open(EngineKind::Memory, &dir);
            let got = dump(&*e);
            let back: Vec<_> = got
                .keys()
                .filter(|k| !model.contains_key(*k))
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            assert!(
                back.is_empty(),
                "{step}: {pass}: deleted keys came back: {back:?}"
            );
            assert!(got == model, "{step}: {pass}: the store is not the model");
            if pass == "after the crash" {
                e.merge().expect("rewrite after the crash");
            }
            e.close().expect("close");
        }
    }
}

/// The model change of [`workload`] round `round`, without an engine.
fn workload_model(model: &mut Model, round: u64) {
    for i in 0..120u64 {
        let k = format!("k{:03}", (i * 7 + round * 13) % 150).into_bytes();
        if (i + round).is_multiple_of(4) {
            model.remove(&k);
        } else {
            model.insert(
                k.clone(),
                value(&k, round * 1000 + i, 80 + (i as usize % 5) * 40),
            );
        }
    }
}
