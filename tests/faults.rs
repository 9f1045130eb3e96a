//! Fault injection through `engine::fault`, for both engines: fail (or short-write) the Nth
//! write, fsync, rename or read of a workload, for every N the workload makes (redb's
//! crash_consistency, at the file layer), then reopen and check:
//!
//! - every acknowledged write is there, and the store equals the model with any in-doubt
//!   write (one that failed with an I/O error) applied wholly or not at all;
//! - nothing refused (`Poisoned`) appears, and no `get` ever served bytes no write made;
//! - after a write or fsync failed, the engine acknowledged no further write (fail-stop);
//! - the reopened store takes writes again.
//!
//! Failed fsyncs drop the bytes written since the file's last good fsync (see the seam's
//! module doc), so acknowledging after a failed fsync would show up as a lost write.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::{ENGINES, Step, diff, dump, open, run, scratch, workload};
use hoardhaven::Error;
use hoardhaven::engine::fault::{self, Fault, Op, Plan};
use hoardhaven::engine::{EngineKind, PutOptions, SyncPolicy};

/// Totals over a sweep, printed for the report.
#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    fired: u64,
    in_doubt: u64,
    refused: u64,
}

/// Runs the workload once with `plan` armed (its `dir` is replaced by the run's directory)
/// and checks the store after reopen. Returns how many faults fired.
fn one_run(kind: EngineKind, plan: &Plan, steps: &[Step], tally: &mut Tally) -> u64 {
    let dir = scratch();
    let e = open(kind, dir.path(), SyncPolicy::Always).expect("open");
    let armed = fault::arm(Plan {
        dir: dir.path().to_path_buf(),
        ..plan.clone()
    });
    let out = run(&*e, steps);
    let _ = e.close();
    drop(e);
    let fired = armed.fired();
    drop(armed);
    let label = format!("{kind} {:?} {:?} nth={}", plan.ops, plan.fault, plan.nth);
    assert!(
        out.wrong_reads.is_empty(),
        "{label}: wrong bytes served: {:?}",
        out.wrong_reads
    );
    let watches_writes = plan.ops.iter().any(|o| matches!(o, Op::Write | Op::Sync));
    if watches_writes && out.write_failed {
        assert!(
            !out.acked_after_failure,
            "{label}: a write was acknowledged after a failed write or fsync"
        );
    }
    let e = open(kind, dir.path(), SyncPolicy::Always)
        .unwrap_or_else(|err| panic!("{label}: reopen failed: {err}"));
    let got = dump(&*e).expect("dump");
    assert!(
        out.candidates.contains(&got),
        "{label}: recovered store matches no allowed state (acked {}, in doubt {}): {}",
        out.acked,
        out.in_doubt,
        diff(&out.candidates[0], &got)
    );
    e.put(
        b"after",
        Bytes::from_static(b"reopen"),
        PutOptions::default(),
    )
    .unwrap_or_else(|err| panic!("{label}: reopened store refuses writes: {err}"));
    tally.runs += 1;
    tally.fired += fired;
    tally.in_doubt += out.in_doubt as u64;
    tally.refused += out.refused as u64;
    fired
}

/// How many calls of `ops` the workload makes (one counting run).
fn count_calls(kind: EngineKind, ops: &[Op], steps: &[Step]) -> u64 {
    let dir = scratch();
    let e = open(kind, dir.path(), SyncPolicy::Always).expect("open");
    let armed = fault::arm(Plan::count(dir.path(), ops));
    let out = run(&*e, steps);
    let _ = e.close();
    assert_eq!(out.in_doubt + out.refused, 0, "counting run must not fail");
    armed.calls()
}

/// Sweeps N over every call of `ops` in the workload.
fn sweep(kind: EngineKind, ops: &[Op], fault_kind: Fault) -> Tally {
    let steps = workload();
    let calls = count_calls(kind, ops, &steps);
    let mut tally = Tally::default();
    if calls == 0 {
        // The memory engine serves from memory: it reads no file after start-up, so its
        // failed reads can only happen while it opens. Sweep those instead of passing empty.
        assert_eq!(
            (kind, ops),
            (EngineKind::Memory, &[Op::Read][..]),
            "no {ops:?} call"
        );
        let t = recovery_sweep(kind, ops);
        assert!(t.runs > 0 && t.fired == t.runs, "{kind}: {t:?}");
        return t;
    }
    // A few calls past the count: background hint writers can shift the numbering.
    for nth in 1..=calls + 2 {
        let mut plan = Plan::new(std::path::Path::new("/"), ops, nth);
        plan.fault = fault_kind;
        one_run(kind, &plan, &steps, &mut tally);
    }
    eprintln!("{kind} {ops:?} {fault_kind:?}: {calls} calls swept, {tally:?}");
    // Background hint writers make the numbering vary a little from run to run.
    assert!(
        tally.fired * 4 >= calls * 3,
        "{kind}: faults did not fire: {tally:?}"
    );
    tally
}

macro_rules! both_engines {
    ($($name:ident => $body:expr;)*) => {
        mod bitcask {
            $(#[test] fn $name() { let f: fn(hoardhaven::engine::EngineKind) = $body; f(hoardhaven::engine::EngineKind::Bitcask) })*
        }
        mod memory {
            $(#[test] fn $name() { let f: fn(hoardhaven::engine::EngineKind) = $body; f(hoardhaven::engine::EngineKind::Memory) })*
        }
    };
}

both_engines! {
    every_failed_write_is_survived => |k| { super::sweep(k, &[super::Op::Write], super::Fault::Error(5)); };
    every_short_write_is_survived => |k| { super::sweep(k, &[super::Op::Write], super::Fault::Short(5)); };
    every_failed_fsync_is_survived_and_poisons => |k| { super::sweep(k, &[super::Op::Sync], super::Fault::Error(5)); };
    every_failed_rename_is_survived => |k| { super::sweep(k, &[super::Op::Rename], super::Fault::Error(5)); };
    every_failed_read_is_survived => |k| { super::sweep(k, &[super::Op::Read], super::Fault::Error(5)); };
}

/// A failed fsync under group commit: many writers, the k-th fsync fails. No writer may be
/// acknowledged for a write that the failed fsync lost, and after it every write is refused
/// with `Poisoned` until reopen.
#[test]
fn group_commit_after_a_failed_fsync_acknowledges_nothing_lost() {
    for kind in ENGINES {
        for k in [1u64, 3, 7, 15] {
            let dir = scratch();
            let e = open(kind, dir.path(), SyncPolicy::Always).expect("open");
            let armed = fault::arm(Plan::new(dir.path(), &[Op::Sync], k));
            let acked = Arc::new(parking_lot::Mutex::new(Vec::<(Vec<u8>, Vec<u8>)>::new()));
            let attempts = Arc::new(AtomicU64::new(0));
            let threads: Vec<_> = (0..6)
                .map(|t| {
                    let (e, acked, attempts) = (e.clone(), acked.clone(), attempts.clone());
                    std::thread::spawn(move || {
                        let mut poisoned_seen = false;
                        for i in 0..40 {
                            let key = format!("t{t}-k{}", i % 8).into_bytes();
                            let val = format!("t{t}-v{i}").into_bytes();
                            attempts.fetch_add(1, Ordering::Relaxed);
                            match e.put(&key, Bytes::from(val.clone()), PutOptions::default()) {
                                Ok(_) => {
                                    assert!(!poisoned_seen, "acknowledged after Poisoned");
                                    acked.lock().push((key, val));
                                }
                                Err(Error::Poisoned(_)) => poisoned_seen = true,
                                Err(_) => {}
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("writer thread");
            }
            assert_eq!(armed.fired(), 1, "{kind} k={k}: the fsync fault fired");
            let refused = e.put(b"x", Bytes::from_static(b"y"), PutOptions::default());
            assert!(
                matches!(refused, Err(Error::Poisoned(_))),
                "{kind} k={k}: engine still takes writes after a failed fsync: {refused:?}"
            );
            drop(armed);
            let _ = e.close();
            drop(e);
            let e = open(kind, dir.path(), SyncPolicy::Always).expect("reopen");
            // The last acknowledged value of each key must be there (a later in-doubt value of
            // the same writer may have replaced it: accept only that writer's later values).
            let acked = acked.lock().clone();
            let mut last = std::collections::BTreeMap::new();
            for (k, v) in acked {
                last.insert(k, v);
            }
            for (key, val) in &last {
                let got = e.get(key).expect("get").map(|v| v.bytes.to_vec());
                let got = got.unwrap_or_else(|| {
                    panic!(
                        "{kind} k={k}: acked key {} lost",
                        String::from_utf8_lossy(key)
                    )
                });
                let seq = |v: &[u8]| {
                    String::from_utf8_lossy(v)
                        .rsplit('v')
                        .next()
                        .and_then(|n| n.parse::<u32>().ok())
                        .unwrap_or(0)
                };
                assert!(
                    seq(&got) >= seq(val),
                    "{kind} k={k}: {} went back from {:?} to {:?}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(val),
                    String::from_utf8_lossy(&got)
                );
            }
        }
    }
}

/// Awaited writes through the durability core's tickets (`put_deferred`, one thread keeping
/// a window of writes in flight, so each group commit covers many): fail (or short-write) the
/// Nth write or fsync, for every N the run makes. A ticket that resolved `Ok` is an
/// acknowledgement: its value (or a later one of the same key) must be there after reopen, and
/// once a ticket or append failed with `Poisoned` the engine takes no more writes.
#[test]
fn awaited_writes_through_the_core_survive_every_failed_write_and_fsync() {
    const WRITES: u64 = 120;
    const WINDOW: usize = 12;
    const KEYS: u64 = 16;
    fn key(i: u64) -> Vec<u8> {
        format!("k{}", i % KEYS).into_bytes()
    }
    /// Runs the writes; returns the highest acknowledged `i` per key.
    fn run_awaited(e: &dyn hoardhaven::engine::Engine) -> std::collections::BTreeMap<Vec<u8>, u64> {
        let mut acked = std::collections::BTreeMap::new();
        let mut window = std::collections::VecDeque::new();
        let mut failed = false;
        let mut settle =
            |(i, ticket): (u64, hoardhaven::engine::Ticket), failed: &mut bool| match ticket.wait()
            {
                Ok(()) => {
                    let e = acked.entry(key(i)).or_insert(i);
                    *e = (*e).max(i);
                }
                Err(_) => *failed = true,
            };
        for i in 0..WRITES {
            match e.put_deferred(&key(i), Bytes::from(format!("v{i}")), PutOptions::default()) {
                Ok((_, ticket)) => {
                    assert!(!failed, "a write was taken after a failed fsync or write");
                    window.push_back((i, ticket));
                }
                Err(_) => failed = true,
            }
            if window.len() >= WINDOW
                && let Some(w) = window.pop_front()
            {
                settle(w, &mut failed);
            }
        }
        for w in window {
            settle(w, &mut failed);
        }
        acked
    }
    for kind in ENGINES {
        let count = {
            let dir = scratch();
            let e = open(kind, dir.path(), SyncPolicy::Always).expect("open");
            let counting = fault::arm(Plan::count(dir.path(), &[Op::Write, Op::Sync]));
            run_awaited(&*e);
            let n = counting.calls();
            drop(counting);
            let _ = e.close();
            n
        };
        assert!(count > 2, "{kind}: the run made {count} writes and fsyncs");
        let mut fired = 0;
        for nth in 1..=count {
            for fault_kind in [Fault::Error(5), Fault::Short(5)] {
                let dir = scratch();
                let e = open(kind, dir.path(), SyncPolicy::Always).expect("open");
                let mut plan = Plan::new(dir.path(), &[Op::Write, Op::Sync], nth);
                plan.fault = fault_kind;
                let armed = fault::arm(plan);
                let acked = run_awaited(&*e);
                fired += armed.fired();
                drop(armed);
                let _ = e.close();
                drop(e);
                let e = open(kind, dir.path(), SyncPolicy::Always).expect("reopen");
                for (k, i) in &acked {
                    let got = e.get(k).expect("get").map(|v| v.bytes.to_vec());
                    let got_i = got
                        .as_deref()
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.strip_prefix('v'))
                        .and_then(|v| v.parse::<u64>().ok());
                    assert!(
                        got_i.is_some_and(|g| g >= *i && g % KEYS == *i % KEYS),
                        "{kind} fault {fault_kind:?} at call {nth}: {} acknowledged v{i}, holds {got:?}",
                        String::from_utf8_lossy(k)
                    );
                }
                e.put(b"after", Bytes::from_static(b"ok"), PutOptions::default())
                    .expect("the reopened store takes writes");
                let _ = e.close();
            }
        }
        eprintln!("{kind}: {count} calls swept, {fired} faults fired");
        assert!(fired > 0, "{kind}: no fault fired");
    }
}

/// A store left by the workload, with a torn tail appended so that recovery has a truncation
/// to do (bitcask's active file or the memory engine's last log); returns what it must hold.
fn store_to_recover(kind: EngineKind, dir: &std::path::Path) -> common::State {
    let want = {
        let e = open(kind, dir, SyncPolicy::Always).expect("open");
        let out = run(&*e, &workload());
        e.close().expect("close");
        assert_eq!(
            out.in_doubt + out.refused,
            0,
            "the workload runs without faults"
        );
        out.candidates[0].clone()
    };
    let newest = std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
            n.is_some_and(|n| n.ends_with(".data") || n.ends_with(".hha"))
        })
        .max()
        .expect("a data file or log");
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes.extend_from_slice(&[0x5a; 23]);
    std::fs::write(&newest, &bytes).expect("torn tail");
    want
}

/// Fails the nth call of `ops` made while opening a copy of the store, for every n the open
/// makes (counted on a clean open), and checks each run: the fault fired during the open;
/// the open failed with an error, or it succeeded and (faults disarmed) the store holds
/// exactly what it must; then a clean reopen holds exactly that too.
fn recovery_sweep(kind: EngineKind, ops: &[Op]) -> Tally {
    let dir = scratch();
    let want = store_to_recover(kind, dir.path());
    let calls = {
        let copy = scratch();
        common::copy_dir(dir.path(), copy.path());
        let armed = fault::arm(Plan::count(copy.path(), ops));
        let e = open(kind, copy.path(), SyncPolicy::Always).expect("counting open");
        let calls = armed.calls();
        drop(armed);
        e.close().expect("close");
        calls
    };
    let mut tally = Tally::default();
    for nth in 1..=calls {
        let label = format!("{kind} {ops:?} nth={nth} of {calls} during open");
        let copy = scratch();
        common::copy_dir(dir.path(), copy.path());
        let armed = fault::arm(Plan::new(copy.path(), ops, nth));
        let opened = open(kind, copy.path(), SyncPolicy::Always);
        let fired = armed.fired();
        drop(armed);
        assert_eq!(fired, 1, "{label}: the fault did not fire while opening");
        tally.runs += 1;
        tally.fired += fired;
        match opened {
            Ok(e) => {
                let got = dump(&*e).unwrap_or_else(|err| panic!("{label}: dump failed: {err}"));
                assert_eq!(
                    got,
                    want,
                    "{label}: opened a wrong store: {}",
                    diff(&want, &got)
                );
                e.close()
                    .unwrap_or_else(|err| panic!("{label}: close failed: {err}"));
            }
            Err(err) => {
                assert!(
                    matches!(err, Error::Io { .. }),
                    "{label}: the failed open should report the I/O error, got: {err}"
                );
                tally.refused += 1;
            }
        }
        let e = open(kind, copy.path(), SyncPolicy::Always)
            .unwrap_or_else(|err| panic!("{label}: clean reopen failed: {err}"));
        let got = dump(&*e).unwrap_or_else(|err| panic!("{label}: dump failed: {err}"));
        e.close().expect("close");
        assert_eq!(
            got,
            want,
            "{label}: after a clean reopen: {}",
            diff(&want, &got)
        );
    }
    eprintln!("{kind} {ops:?} during recovery: {calls} calls swept, {tally:?}");
    tally
}

/// Faults while *opening* (recovery reads, truncates a torn tail, removes leftovers), one run
/// per call recovery makes of each kind: open fails with an error or succeeds with the right
/// data; the next clean open is right.
#[test]
fn faults_during_recovery_never_open_a_wrong_store() {
    for kind in ENGINES {
        let mut runs = 0;
        for ops in [&[Op::Read][..], &[Op::Write], &[Op::Sync], &[Op::Rename]] {
            runs += recovery_sweep(kind, ops).runs;
        }
        assert!(runs > 0, "{kind}: recovery made no call the seam can fail");
    }
}
