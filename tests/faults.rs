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
        // The memory engine reads no file after start-up: its reads are swept by
        // `faults_during_recovery_never_open_a_wrong_store`.
        assert_eq!(
            (kind, ops),
            (EngineKind::Memory, &[Op::Read][..]),
            "no {ops:?} call"
        );
        return tally;
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

/// Faults while *opening* (recovery reads, truncates a torn tail, removes leftovers): open
/// fails with an error or succeeds with the right data; the next clean open is right.
#[test]
fn faults_during_recovery_never_open_a_wrong_store() {
    for kind in ENGINES {
        let dir = scratch();
        let steps = workload();
        let want = {
            let e = open(kind, dir.path(), SyncPolicy::Always).expect("open");
            let out = run(&*e, &steps);
            e.close().expect("close");
            out.candidates[0].clone()
        };
        // Leave a torn tail so recovery has a truncation to do (bitcask's active file or the
        // memory engine's last log).
        let newest = std::fs::read_dir(dir.path())
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
        for ops in [&[Op::Read][..], &[Op::Write], &[Op::Sync], &[Op::Rename]] {
            for nth in 1..=12 {
                let copy = scratch();
                common::copy_dir(dir.path(), copy.path());
                let armed = fault::arm(Plan::new(copy.path(), ops, nth));
                if let Ok(e) = open(kind, copy.path(), SyncPolicy::Always) {
                    let got = dump(&*e);
                    drop(armed);
                    if let Ok(got) = got {
                        assert_eq!(got, want, "{kind} {ops:?} nth={nth}: {}", diff(&want, &got));
                    }
                    let _ = e.close();
                } else {
                    drop(armed);
                }
                let e = open(kind, copy.path(), SyncPolicy::Always).expect("clean reopen");
                let got = dump(&*e).expect("dump");
                e.close().expect("close");
                assert_eq!(got, want, "{kind} {ops:?} nth={nth}: {}", diff(&want, &got));
            }
        }
    }
}
