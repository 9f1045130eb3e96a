//! Power loss, not just kill -9: a SIGKILL keeps the page cache, so it cannot tell whether an
//! fsync happened. The fault seam's power-loss model (`fault::track_power`) can: at a seeded
//! random write, fsync, rename or link of the engine (while writers, merges, snapshots and log
//! rewrites run), it writes out only what was durable: each file as of its last fdatasync,
//! each directory as of its last fsync. The cut is then opened as a store and checked:
//!
//! - it opens (a power cut never makes the store unopenable);
//! - every write acknowledged before the cut is there (or a later write of the same key that
//!   was in flight);
//! - nothing torn is served: every value carries its key and a checksum;
//! - a batch is all or nothing: the keys of a group, written only by batches, hold one batch;
//! - nothing from after the cut appears;
//! - the newest snapshot finished before the cut is still listed.
//!
//! `HH_SEED=<n>` replays a run (the seed is printed).

mod claims_support;
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use claims_support::{check, open, seed, value};
use hoardhaven::engine::fault::{self, PowerLoss};
use hoardhaven::engine::{
    BatchOp, Engine, EngineKind, Error, Precondition, PutOptions, SyncPolicy,
};
use parking_lot::Mutex;

const WRITERS: usize = 3;
const OPS: u64 = 50;
const SINGLES: usize = 6;
const GROUP: usize = 4;
const PAD: usize = 100;

/// Background work running with the writers.
#[derive(Clone, Copy, Debug)]
enum Jobs {
    None,
    Merge,
    Snapshot,
    Both,
}

/// One attempted operation on a key (or a group).
#[derive(Clone, Debug)]
struct Attempt {
    seq: u64,
    put: bool,
    /// Issued after the cut began: cannot be in it.
    after_cut: bool,
    /// Acknowledged before the cut began: must be in it.
    acked: bool,
}

type History = BTreeMap<Vec<u8>, Vec<Attempt>>;

fn single(t: usize, i: usize) -> Vec<u8> {
    format!("s{t}-{i}").into_bytes()
}

fn group_key(t: usize, i: usize) -> Vec<u8> {
    format!("g{t}-{i}").into_bytes()
}

/// The group's name in the history.
fn group_name(t: usize) -> Vec<u8> {
    format!("group{t}").into_bytes()
}

fn writer(e: Arc<dyn Engine>, power: Arc<PowerLoss>, t: usize, seed: u64) -> History {
    let mut rng =
        fastrand::Rng::with_seed(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut h = History::new();
    let mut seq = 0u64;
    for _ in 0..OPS {
        seq += 1;
        let after_cut = power.has_cut();
        let (name, put, r) = match rng.u64(..10) {
            0..=4 => {
                let k = single(t, rng.u64(..SINGLES as u64) as usize);
                let r = e
                    .put(&k, Bytes::from(value(&k, seq, PAD)), PutOptions::default())
                    .map(|_| ());
                (k, true, r)
            }
            5..=6 => {
                let k = single(t, rng.u64(..SINGLES as u64) as usize);
                (
                    k.clone(),
                    false,
                    e.delete(&k, Precondition::None).map(|_| ()),
                )
            }
            _ => {
                let ops = (0..GROUP)
                    .map(|i| {
                        let k = group_key(t, i);
                        BatchOp::Put {
                            value: Bytes::from(value(&k, seq, PAD)),
                            key: k,
                            expires_at: None,
                        }
                    })
                    .collect();
                (group_name(t), true, e.apply_batch(ops).map(|_| ()))
            }
        };
        r.unwrap_or_else(|e| panic!("writer {t}: op {seq}: {e}"));
        let acked = !power.has_cut();
        h.entry(name).or_default().push(Attempt {
            seq,
            put,
            after_cut,
            acked,
        });
    }
    h
}

/// Checks one key's recovered state against its attempts.
fn check_state(what: &str, got: Option<u64>, attempts: &[Attempt]) {
    let must = attempts.iter().filter(|a| a.acked).map(|a| a.seq).max();
    let ok = match got {
        Some(s) => attempts
            .iter()
            .any(|a| a.seq == s && a.put && !a.after_cut && must.is_none_or(|m| s >= m)),
        None => match must {
            None => true,
            Some(m) => attempts
                .iter()
                .any(|a| !a.put && !a.after_cut && a.seq >= m),
        },
    };
    assert!(
        ok,
        "{what}: recovered {got:?}, but the last acknowledged write before the cut was {must:?}; \
         attempts {attempts:?}"
    );
}

fn recovered(e: &dyn Engine, key: &[u8], what: &str) -> Option<u64> {
    let v = e
        .get(key)
        .unwrap_or_else(|err| panic!("{what}: get {}: {err}", String::from_utf8_lossy(key)))?;
    Some(check(key, &v.bytes).unwrap_or_else(|err| panic!("{what}: torn value served: {err}")))
}

fn run_once(kind: EngineKind, jobs: Jobs, seed: u64, cut_at: Option<u64>) -> u64 {
    let what = format!("{kind}, jobs {jobs:?}, seed {seed}, cut at {cut_at:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let tmp_path = if std::env::var_os("HH_KEEP").is_some() {
        let p = tmp.keep();
        eprintln!("{what}: in {}", p.display());
        p
    } else {
        tmp.path().to_path_buf()
    };
    let root = tmp_path.join("data");
    let cut = tmp_path.join("cut");
    std::fs::create_dir_all(&root).expect("mkdir");
    let power = Arc::new(fault::track_power(&root).expect("track"));
    if let Some(n) = cut_at {
        power.cut_at(n, &cut);
    }
    let e = open(kind, &root, SyncPolicy::Always);
    let done = Arc::new(AtomicBool::new(false));
    let last_snapshot: Arc<Mutex<Option<String>>> = Arc::default();
    let background = {
        let (e, done, power, last) = (
            e.clone(),
            done.clone(),
            power.clone(),
            last_snapshot.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut ran = 0u64;
            while !done.load(Ordering::Acquire) {
                n += 1;
                let merge = match jobs {
                    Jobs::None => break,
                    Jobs::Merge => true,
                    Jobs::Snapshot => false,
                    Jobs::Both => n.is_multiple_of(2),
                };
                if merge {
                    match e.merge() {
                        Ok(_) => ran += 1,
                        Err(Error::Busy(_)) => {}
                        Err(err) => panic!("merge: {err}"),
                    }
                } else {
                    match e.snapshot() {
                        Ok(r) => {
                            ran += 1;
                            if !power.has_cut() {
                                let name = r.path.file_name().expect("name");
                                *last.lock() = Some(name.to_string_lossy().into_owned());
                            }
                        }
                        Err(Error::Busy(_)) => {}
                        Err(err) => panic!("snapshot: {err}"),
                    }
                }
            }
            ran
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (e, power) = (e.clone(), power.clone());
            std::thread::spawn(move || writer(e, power, t, seed))
        })
        .collect();
    let mut history = History::new();
    for w in writers {
        history.extend(w.join().expect("writer"));
    }
    done.store(true, Ordering::Release);
    let jobs_ran = background.join().expect("background jobs");
    if !matches!(jobs, Jobs::None) {
        assert!(jobs_ran > 0, "{what}: no background job ran");
    }
    e.close().expect("close");
    drop(e);
    let calls = power.calls();
    if !power.has_cut() {
        // The chosen call was never reached: cut after everything.
        power.cut_now(&cut).expect("cut at the end");
    }
    assert_eq!(power.cuts(), Ok(1), "{what}: one cut");
    drop(power);

    let r = hoardhaven::engine::open(&claims_support::options(kind, &cut, SyncPolicy::Always))
        .unwrap_or_else(|err| panic!("{what}: the store does not open after a power cut: {err}"));
    for t in 0..WRITERS {
        for i in 0..SINGLES {
            let k = single(t, i);
            let got = recovered(&*r, &k, &what);
            let h = history.get(&k).map(Vec::as_slice).unwrap_or(&[]);
            check_state(&format!("{what}: {}", String::from_utf8_lossy(&k)), got, h);
        }
        let got: Vec<Option<u64>> = (0..GROUP)
            .map(|i| recovered(&*r, &group_key(t, i), &what))
            .collect();
        assert!(
            got.windows(2).all(|w| w[0] == w[1]),
            "{what}: group {t} holds parts of different batches: {got:?}"
        );
        let h = history
            .get(&group_name(t))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        check_state(&format!("{what}: group {t}"), got[0], h);
    }
    if let Some(name) = last_snapshot.lock().clone() {
        let listed = r.snapshots().expect("snapshots");
        // It, or a newer one: retention removes it once newer snapshots replaced it (a log
        // rewrite writes one too; seen in CI with snapshots 4 and 5 kept and 3 retired).
        // Names carry a zero-padded sequence number, so a newer one sorts after it.
        assert!(
            listed.iter().any(|s| s
                .path
                .file_name()
                .is_some_and(|n| *n.to_string_lossy() >= *name)),
            "{what}: snapshot {name}, finished before the cut, is gone: {listed:?}"
        );
    }
    r.close().expect("close recovered");
    calls
}

fn sweep(kind: EngineKind) {
    let seed = seed(&format!("power_loss {kind}"));
    let mut rng = fastrand::Rng::with_seed(seed);
    let modes = [Jobs::None, Jobs::Merge, Jobs::Snapshot, Jobs::Both];
    // A run cut after everything gives the number of calls to pick cut points from.
    let total = run_once(kind, Jobs::Both, seed, None);
    for i in 0..12u64 {
        let jobs = modes[(i % 4) as usize];
        let at = 1 + rng.u64(..total);
        run_once(kind, jobs, seed.wrapping_add(i + 1), Some(at));
    }
}

#[test]
fn bitcask_survives_power_cuts_at_random_points() {
    sweep(EngineKind::Bitcask);
}

#[test]
fn memory_survives_power_cuts_at_random_points() {
    sweep(EngineKind::Memory);
}

/// Everything in `e`, key by key ([`common::dump`]; a read error fails the test).
fn dump(e: &dyn Engine) -> BTreeMap<Vec<u8>, Vec<u8>> {
    common::dump(e).expect("dump")
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// A power cut at every write, fsync, rename and link of a snapshot and then a merge
/// (bitcask) or a snapshot and then a log rewrite (memory), over a store holding overwrites
/// and deletes: the cut is exactly the store (nothing lost, nothing dead back), and every
/// bitcask snapshot listed in it restores to the store too.
fn cut_at_every_call_of_the_jobs(kind: EngineKind) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let prepared = tmp.path().join("prepared");
    let model = {
        let e = open(kind, &prepared, SyncPolicy::Always);
        for i in 0..400u64 {
            let k = format!("k{:03}", (i * 7) % 120).into_bytes();
            if i % 5 == 4 {
                e.delete(&k, Precondition::None).expect("delete");
            } else {
                e.put(&k, Bytes::from(value(&k, i, 60)), PutOptions::default())
                    .expect("put");
            }
        }
        let m = dump(&*e);
        e.close().expect("close");
        m
    };
    let mut n = 1u64;
    loop {
        let what = format!("{kind}: power cut at call {n} of open, snapshot, merge, close");
        let run = tmp.path().join(format!("run-{n}"));
        let root = run.join("data");
        let cut = run.join("cut");
        copy_tree(&prepared, &root);
        let power = fault::track_power(&root).expect("track");
        power.cut_at(n, &cut);
        let e = open(kind, &root, SyncPolicy::Always);
        e.snapshot().expect("snapshot");
        e.merge().expect("merge");
        e.close().expect("close");
        drop(e);
        let calls = power.calls();
        let reached = power.has_cut();
        drop(power);
        if !reached {
            assert!(n > 10, "{kind}: only {calls} calls");
            eprintln!("{kind}: cut at each of {} calls", n - 1);
            return;
        }
        let r = hoardhaven::engine::open(&claims_support::options(kind, &cut, SyncPolicy::Always))
            .unwrap_or_else(|err| panic!("{what}: does not open: {err}"));
        assert!(dump(&*r) == model, "{what}: the store is not what it was");
        if kind == EngineKind::Bitcask {
            for s in r.snapshots().expect("snapshots") {
                let to = run.join("restore");
                copy_tree(&s.path, &to);
                let s = open(kind, &to, SyncPolicy::Always);
                assert!(
                    dump(&*s) == model,
                    "{what}: a listed snapshot restores wrong"
                );
                s.close().expect("close");
                std::fs::remove_dir_all(&to).expect("clean");
            }
        }
        r.close().expect("close");
        std::fs::remove_dir_all(&run).expect("clean");
        n += 1;
    }
}

#[test]
fn bitcask_survives_a_power_cut_at_every_call_of_snapshot_and_merge() {
    cut_at_every_call_of_the_jobs(EngineKind::Bitcask);
}

#[test]
fn memory_survives_a_power_cut_at_every_call_of_snapshot_and_rewrite() {
    cut_at_every_call_of_the_jobs(EngineKind::Memory);
}
