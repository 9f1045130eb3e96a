//! A deterministic workload for the reliability tests (faults, disk full): puts, overwrites,
//! deletes, batches, reads, merges, snapshots and syncs, run against an engine while tracking
//! what was acknowledged, what is in doubt and what reads served.

use bytes::Bytes;
use hoardhaven::Error;
use hoardhaven::engine::{BatchOp, Engine, PutOptions};

use super::State;

/// One step of the workload.
#[derive(Clone, Debug)]
pub enum Step {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Get(Vec<u8>),
    Merge,
    Snapshot,
    Sync,
}

/// A fixed workload: puts (some large enough to rotate bitcask files), overwrites, deletes,
/// batches, reads, a merge, a snapshot and a sync. Every written value is unique, so a value
/// found after reopen names the exact write that made it.
pub fn workload() -> Vec<Step> {
    let mut s = Vec::new();
    let k = |i: u32| format!("key-{i:02}").into_bytes();
    let v = |i: u32, tag: &str| {
        let mut b = format!("{tag}-{i}-").into_bytes();
        b.resize(40 + (i as usize * 37) % 700, b'a' + (i % 26) as u8);
        b
    };
    for i in 0..12 {
        s.push(Step::Put(k(i), v(i, "first")));
    }
    s.push(Step::Get(k(3)));
    s.push(Step::Delete(k(2)));
    s.push(Step::Batch(vec![
        (k(20), Some(v(20, "batch"))),
        (k(21), Some(v(21, "batch"))),
        (k(4), None),
    ]));
    s.push(Step::Merge);
    for i in 5..10 {
        s.push(Step::Put(k(i), v(i, "second")));
    }
    s.push(Step::Get(k(6)));
    s.push(Step::Snapshot);
    s.push(Step::Delete(k(7)));
    s.push(Step::Batch(vec![
        (k(30), Some(v(30, "batch2"))),
        (k(0), None),
        (k(31), Some(v(31, "batch2"))),
    ]));
    s.push(Step::Sync);
    for i in 10..16 {
        s.push(Step::Put(k(i), v(i, "third")));
    }
    s.push(Step::Merge);
    s.push(Step::Put(k(1), v(1, "last")));
    s
}

/// Applies a write step to a model state.
pub fn apply(state: &mut State, step: &Step) {
    match step {
        Step::Put(k, v) => {
            state.insert(k.clone(), v.clone());
        }
        Step::Delete(k) => {
            state.remove(k);
        }
        Step::Batch(ops) => {
            for (k, v) in ops {
                match v {
                    Some(v) => state.insert(k.clone(), v.clone()),
                    None => state.remove(k),
                };
            }
        }
        _ => {}
    }
}

/// What a run of the workload left: the states the store may hold after reopen.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every acknowledged write applied, plus any subset of the in-doubt ones (at most a
    /// couple: a one-shot fault fails one call).
    pub candidates: Vec<State>,
    /// Write steps that failed with an I/O error (in doubt: applied or not, atomically).
    pub in_doubt: usize,
    /// Write steps refused before anything was done (`Poisoned`, `DiskFull`, `Closed`).
    pub refused: usize,
    /// Write steps acknowledged.
    pub acked: usize,
    /// True once a write step failed with an I/O error other than `DiskFull`.
    pub write_failed: bool,
    /// True when a write step succeeded after `write_failed` (an engine that should be
    /// poisoned acknowledged a write).
    pub acked_after_failure: bool,
    /// Wrong bytes served by a `get` (must stay empty).
    pub wrong_reads: Vec<String>,
}

fn is_refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::Poisoned(_) | Error::DiskFull { .. } | Error::Closed
    )
}

/// Runs `steps` against `e`, tracking the model. Errors never panic: they are recorded.
pub fn run(e: &dyn Engine, steps: &[Step]) -> Outcome {
    let mut out = Outcome {
        candidates: vec![State::new()],
        ..Outcome::default()
    };
    for step in steps {
        let result: hoardhaven::Result<()> = match step {
            Step::Put(k, v) => e
                .put(k, Bytes::copy_from_slice(v), PutOptions::default())
                .map(|_| ()),
            Step::Delete(k) => e
                .delete(k, hoardhaven::engine::Precondition::None)
                .map(|_| ()),
            Step::Batch(ops) => e
                .apply_batch(
                    ops.iter()
                        .map(|(k, v)| match v {
                            Some(v) => BatchOp::Put {
                                key: k.clone(),
                                value: Bytes::copy_from_slice(v),
                                expires_at: None,
                            },
                            None => BatchOp::Delete { key: k.clone() },
                        })
                        .collect(),
                )
                .map(|_| ()),
            Step::Get(k) => {
                if let Ok(Some(v)) = e.get(k) {
                    let ok = out
                        .candidates
                        .iter()
                        .any(|c| c.get(k).map(Vec::as_slice) == Some(&v.bytes[..]));
                    if !ok {
                        out.wrong_reads.push(format!(
                            "{}: {:?}",
                            String::from_utf8_lossy(k),
                            v.bytes
                        ));
                    }
                }
                continue;
            }
            Step::Merge => {
                let _ = e.merge();
                continue;
            }
            Step::Snapshot => {
                let _ = e.snapshot();
                continue;
            }
            Step::Sync => {
                let _ = e.sync();
                continue;
            }
        };
        match result {
            Ok(()) => {
                out.acked += 1;
                if out.write_failed {
                    out.acked_after_failure = true;
                }
                for c in &mut out.candidates {
                    apply(c, step);
                }
            }
            Err(err) if is_refusal(&err) => out.refused += 1,
            Err(err) => {
                out.in_doubt += 1;
                if !matches!(err, Error::Corrupted { .. }) {
                    out.write_failed = true;
                }
                let mut more = out.candidates.clone();
                for c in &mut more {
                    apply(c, step);
                }
                out.candidates.extend(more);
                out.candidates.dedup();
            }
        }
    }
    out
}
