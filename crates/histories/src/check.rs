//! Checking a whole history: split by key (a register per key, so each key is checked alone:
//! linearizability is compositional), run the search on each, and for a key with no valid
//! order cut out the smallest window of operations that still has none.
//!
//! # The window
//!
//! A window `[s, t]` keeps the operations that overlap it. It must be *sound*: if the whole
//! history had a valid order, the window would too, so a window with none proves a violation
//! by itself. Two relaxations make it so:
//! - operations still running at `t`, and those that began before `s`, lose their result
//!   (reads are dropped; writes and CASes become "unknown outcome": they may take effect at any
//!   time after their call, or never);
//! - with a start cut, the register begins in any state ([`Reg::Unknown`]).
//!
//! (Cutting at `t` is the Jepsen prefix argument: every operation that completed by `t` is
//! ordered after only operations that began by `t`. Cutting at `s`: operations that completed
//! before `s` are ordered before every operation that began at or after `s`; their effect is
//! the unknown initial state, and those that overlap `s` may already be part of it.) Both cuts
//! are sound. The end cut is monotone (a failing prefix stays failing when it grows), so `t` is
//! found by binary search: the earliest completion for which the prefix fails. The start cut is
//! not (see [`smallest_window`]), so `s` is found by scanning back from `t`: the latest start
//! for which `[s, t]` still fails.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Serialize;

use crate::history::{Event, F, Input, NEMESIS, Op, Output, pair};
use crate::model::{CasRegister, Interner, Reg, RegOp, ValueId};
use crate::wgl::{self, Budget, Timed, Verdict};

/// The verdict on one key.
#[derive(Clone, Debug, Serialize)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Operations that reached the checker.
    pub ops: usize,
    /// Linearizable, not, or not decided within the budget.
    pub verdict: Outcome,
    /// Steps the search of the whole key took (its budget is [`Budget::steps`]).
    pub steps: u64,
    /// For a violation: the smallest window found with no valid order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

/// A serializable [`Verdict`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Some valid order exists.
    Linearizable,
    /// None exists.
    NotLinearizable,
    /// The search budget ran out.
    Unknown,
}

impl From<Verdict> for Outcome {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Linearizable => Outcome::Linearizable,
            Verdict::NotLinearizable => Outcome::NotLinearizable,
            Verdict::Unknown => Outcome::Unknown,
        }
    }
}

/// A window of operations with no valid order.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// Start of the cut (`None`: from the beginning, the register absent).
    pub from_ns: Option<u64>,
    /// End of the cut.
    pub to_ns: u64,
    /// The operations, by call time, as recorded.
    pub ops: Vec<WindowOp>,
    /// Faults the nemesis injected inside the window, as `time_ns f error`.
    pub faults: Vec<String>,
}

/// An operation of a window.
#[derive(Clone, Debug, Serialize)]
pub struct WindowOp {
    /// Index of its invoke event in the history.
    pub invoke_index: u64,
    /// Process.
    pub process: String,
    /// Call time.
    pub call_ns: u64,
    /// Return time (`None`: unknown outcome).
    pub ret_ns: Option<u64>,
    /// The operation and its result, as text.
    pub what: String,
    /// Its result was set aside by the cut (see the module documentation).
    pub relaxed: bool,
    /// The value it writes (writes and CASes).
    #[serde(skip)]
    pub writes: Option<String>,
    /// The values it read or expected.
    #[serde(skip)]
    pub observes: Option<String>,
}

/// The verdict on a history.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// One report per key, in key order.
    pub keys: Vec<KeyReport>,
}

impl Report {
    /// `NotLinearizable` if any key is, else `Unknown` if any key is, else `Linearizable`.
    pub fn outcome(&self) -> Outcome {
        let any = |o| self.keys.iter().any(|k| k.verdict == o);
        if any(Outcome::NotLinearizable) {
            Outcome::NotLinearizable
        } else if any(Outcome::Unknown) {
            Outcome::Unknown
        } else {
            Outcome::Linearizable
        }
    }

    /// The most steps the search of one key took.
    pub fn most_steps(&self) -> u64 {
        self.keys.iter().map(|k| k.steps).max().unwrap_or(0)
    }
}

/// Checks every key of a history.
pub fn check_history(events: &[Event], budget: Budget) -> Report {
    let mut by_key: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for op in pair(events) {
        by_key.entry(op.key.clone()).or_default().push(op);
    }
    let faults: Vec<&Event> = events.iter().filter(|e| e.process == NEMESIS).collect();
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| check_key(key, &ops, &faults, budget))
        .collect();
    Report { keys }
}

fn check_key(key: String, ops: &[Op], faults: &[&Event], budget: Budget) -> KeyReport {
    let searched = run(ops, None, u64::MAX, budget);
    let window = (searched.verdict == Verdict::NotLinearizable)
        .then(|| smallest_window(ops, faults, budget));
    KeyReport {
        key,
        ops: ops.len(),
        verdict: searched.verdict.into(),
        steps: searched.steps,
        window,
    }
}

/// Which operations a window `[s, t]` keeps, and whether each is relaxed (module docs).
fn cut(ops: &[Op], s: Option<u64>, t: u64) -> Vec<(usize, bool)> {
    ops.iter()
        .enumerate()
        .filter(|(_, o)| o.call <= t && s.is_none_or(|s| o.ret.is_none_or(|r| r >= s)))
        .map(|(i, o)| {
            let relaxed = s.is_some_and(|s| o.call < s) || o.ret.is_none_or(|r| r > t);
            (i, relaxed)
        })
        .filter(|&(i, relaxed)| !(relaxed && ops[i].input == Input::Read))
        .collect()
}

/// Runs the search on the window `[s, t]` (`s = None, t = MAX`: the whole history).
fn run(ops: &[Op], s: Option<u64>, t: u64, budget: Budget) -> wgl::Searched {
    let mut interner = Interner::default();
    let timed: Vec<Timed<RegOp>> = cut(ops, s, t)
        .into_iter()
        .filter_map(|(i, relaxed)| {
            let o = &ops[i];
            let output = if relaxed { &Output::Unknown } else { &o.output };
            let op = interner.reg_op(&o.input, output)?;
            Some(Timed {
                op,
                call: o.call,
                ret: if relaxed { None } else { o.ret },
            })
        })
        .collect();
    let unobserved = interner.fresh();
    let timed = merge_unobserved_values(timed, unobserved);
    let timed = drop_unobserved_unknowns(timed, unobserved);
    let init = if s.is_some() {
        Reg::Unknown
    } else {
        Reg::Known(None)
    };
    wgl::search(&CasRegister, init, &timed, budget)
}

/// Gives every value that no read returns and no CAS expects one id, `unobserved`.
///
/// Exact, not an approximation: the model compares the register's value only with values read
/// or expected (and with "absent"), so from any state holding an unobserved value every
/// operation does the same thing as from any other state holding one. Merging them changes no
/// verdict, and it makes writes (and CASes) that differ only in such a value the same
/// operation: hanging ones become twins (see `wgl`), which the search orders instead of trying
/// every subset. Under kill -9 a cluster leaves many such writes on one key (those of the
/// killed node's clients), often with a refused CAS that keeps [`drop_unobserved_unknowns`]
/// from setting them aside.
fn merge_unobserved_values(mut timed: Vec<Timed<RegOp>>, unobserved: ValueId) -> Vec<Timed<RegOp>> {
    let observed: HashSet<ValueId> = timed
        .iter()
        .filter_map(|t| match t.op {
            RegOp::Read(v) => v,
            RegOp::Cas { expect, .. } => Some(expect),
            RegOp::Write(_) => None,
        })
        .collect();
    let merge = |v: &mut ValueId| {
        if !observed.contains(v) {
            *v = unobserved;
        }
    };
    for t in &mut timed {
        match &mut t.op {
            RegOp::Write(v) | RegOp::Cas { new: v, .. } => merge(v),
            RegOp::Read(_) => {}
        }
    }
    timed
}

/// Drops the operations of unknown outcome that write the `unobserved` value (see
/// [`merge_unobserved_values`]), when no CAS was refused: they can neither help nor hurt, and
/// even as ordered twins they would cost the search a state each.
///
/// Sound: take a valid order in which such an operation takes effect. Until the next write,
/// the register holds a value that no read returns and no CAS expects, so what follows it there
/// is only CASes of unknown outcome that found it and did nothing. Remove the operation and
/// move those CASes to the very end (an unknown outcome may take effect at any time after its
/// call, or never; nothing follows the end): every other operation sees the same state as
/// before, so the order stays valid. A refused CAS is the one operation that can need a value
/// nobody reads (it needs "not `expect`"), hence the condition.
fn drop_unobserved_unknowns(timed: Vec<Timed<RegOp>>, unobserved: ValueId) -> Vec<Timed<RegOp>> {
    let refused = timed.iter().any(|t| {
        matches!(
            t.op,
            RegOp::Cas {
                applied: Some(false),
                ..
            }
        )
    });
    if refused {
        return timed;
    }
    timed
        .into_iter()
        .filter(|t| {
            let written = match t.op {
                RegOp::Write(v) => Some(v),
                RegOp::Cas {
                    new, applied: None, ..
                } => Some(new),
                _ => None,
            };
            !(t.ret.is_none() && written == Some(unobserved))
        })
        .collect()
}

/// The smallest window of a key's operations that has no valid order (module docs).
fn smallest_window(ops: &[Op], faults: &[&Event], budget: Budget) -> Window {
    // Each probe gets a twentieth of the budget: a probe that runs out counts as "not shown
    // to fail", which only makes the window found larger, never unsound.
    let probe = Budget {
        steps: (budget.steps / 20).max(1),
        ..budget
    };
    let fails = |s: Option<u64>, t: u64| run(ops, s, t, probe).verdict == Verdict::NotLinearizable;
    let mut rets: Vec<u64> = ops.iter().filter_map(|o| o.ret).collect();
    rets.sort_unstable();
    rets.dedup();
    // The earliest completion t whose prefix fails (the last one does: it is the whole history
    // but for unknown operations called after it, which can always go last).
    let t = match rets.last() {
        Some(&last) if fails(None, last) => {
            let i = rets.partition_point(|&t| !fails(None, t));
            rets.get(i).copied().unwrap_or(last)
        }
        _ => u64::MAX,
    };
    let mut calls: Vec<u64> = ops.iter().map(|o| o.call).filter(|&c| c <= t).collect();
    calls.sort_unstable();
    calls.dedup();
    // The latest start s for which [s, t] still fails, scanning back from t (small windows
    // first, so this usually stops early). Not a plain binary search: moving s later can make
    // the window fail again (an operation straddling s is relaxed to "any time after its
    // call", one wholly before s is dropped), so the predicate is not monotone in s. Past
    // `SCAN` probes, a binary search picks a start, kept only if its window is seen to fail.
    const SCAN: usize = 64;
    let mut s = calls
        .iter()
        .rev()
        .take(SCAN)
        .copied()
        .find(|&s| fails(Some(s), t));
    if s.is_none() && calls.len() > SCAN {
        let rest = &calls[..calls.len() - SCAN];
        let i = rest.partition_point(|&s| fails(Some(s), t));
        s = i
            .checked_sub(1)
            .map(|i| rest[i])
            .filter(|&s| fails(Some(s), t));
    }
    let window_ops = cut(ops, s, t)
        .into_iter()
        .map(|(i, relaxed)| {
            let o = &ops[i];
            WindowOp {
                invoke_index: o.invoke_index,
                process: o.process.clone(),
                call_ns: o.call,
                ret_ns: o.ret,
                what: describe(o),
                relaxed,
                writes: match &o.input {
                    Input::Write(v) | Input::Cas { new: v, .. } => Some(v.clone()),
                    Input::Read => None,
                },
                observes: match (&o.input, &o.output) {
                    (Input::Cas { expect, .. }, _) => Some(expect.clone()),
                    (_, Output::Read(v)) => v.clone(),
                    _ => None,
                },
            }
        })
        .collect();
    let from = s.unwrap_or(0);
    let faults = faults
        .iter()
        .filter(|e| e.time_ns >= from && e.time_ns <= t)
        .map(|e| {
            format!(
                "{} {:?} {}",
                e.time_ns,
                e.f,
                e.error.as_deref().unwrap_or_default()
            )
        })
        .collect();
    Window {
        from_ns: s,
        to_ns: t,
        ops: window_ops,
        faults,
    }
}

fn describe(o: &Op) -> String {
    let show = |v: &Option<String>| v.as_deref().unwrap_or("(absent)").to_owned();
    let what = match &o.input {
        Input::Read => "read".to_owned(),
        Input::Write(v) => format!("write {v}"),
        Input::Cas { expect, new } => format!("cas {expect} -> {new}"),
    };
    let result = match &o.output {
        Output::Read(v) => format!("ok {}", show(v)),
        Output::Written => "ok".to_owned(),
        Output::Cas(true) => "ok (applied)".to_owned(),
        Output::Cas(false) => "fail (412: value differed)".to_owned(),
        Output::Unknown => "info (unknown outcome)".to_owned(),
    };
    format!("{what} => {result}")
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        match self.from_ns {
            Some(s) => writeln!(
                f,
                "window {:.3} ms .. {:.3} ms (register in any state at its start), {} operations:",
                ms(s),
                ms(self.to_ns),
                self.ops.len()
            )?,
            None => writeln!(
                f,
                "window from the start (register absent) to {:.3} ms, {} operations:",
                ms(self.to_ns),
                self.ops.len()
            )?,
        }
        // Operations the cut set aside are shown when an operation of the window observes
        // their value; the others (unknown writes nobody saw) are only counted.
        let seen: std::collections::HashSet<&str> = self
            .ops
            .iter()
            .filter(|o| !o.relaxed)
            .filter_map(|o| o.observes.as_deref())
            .collect();
        let from = self.from_ns.unwrap_or(0);
        let shown = |o: &&WindowOp| {
            !o.relaxed || o.call_ns >= from || o.writes.as_deref().is_some_and(|v| seen.contains(v))
        };
        let hidden = self.ops.iter().filter(|o| !shown(o)).count();
        for o in self.ops.iter().filter(shown) {
            let ret = o
                .ret_ns
                .map_or_else(|| "       ?".to_owned(), |r| format!("{:>8.3}", ms(r)));
            writeln!(
                f,
                "  #{:<6} {:<6} [{:>8.3} .. {ret}] {}{}",
                o.invoke_index,
                o.process,
                ms(o.call_ns),
                o.what,
                if o.relaxed {
                    "  (outcome set aside by the cut)"
                } else {
                    ""
                }
            )?;
        }
        if hidden > 0 {
            writeln!(
                f,
                "  (and {hidden} earlier operations with unknown outcome whose values nothing here reads)"
            )?;
        }
        for fault in &self.faults {
            writeln!(f, "  fault: {fault}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?} over {} keys", self.outcome(), self.keys.len())?;
        for k in &self.keys {
            if k.verdict != Outcome::Linearizable {
                writeln!(
                    f,
                    "key {}: {:?} ({} operations, {} search steps)",
                    k.key, k.verdict, k.ops, k.steps
                )?;
            }
            if let Some(w) = &k.window {
                write!(f, "{w}")?;
            }
        }
        Ok(())
    }
}

/// The `F` of client operations (for counting).
pub fn is_client_op(f: F) -> bool {
    matches!(f, F::Read | F::Write | F::Cas)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wgl::Model;

    /// The definition, tried exhaustively: some order of all of `ops` (an open one too, as the
    /// search places it: last at the latest) respects real time (an operation that returned
    /// before another's call comes first) and the register from `init`.
    fn brute(ops: &[Timed<RegOp>], init: Reg) -> bool {
        fn go(ops: &[Timed<RegOp>], placed: &mut [bool], state: Reg, left: usize) -> bool {
            if left == 0 {
                return true;
            }
            for i in 0..ops.len() {
                let must_wait = (0..ops.len())
                    .any(|j| !placed[j] && j != i && ops[j].ret.is_some_and(|r| r < ops[i].call));
                if placed[i] || must_wait {
                    continue;
                }
                if let Some(next) = CasRegister.step(&state, &ops[i].op) {
                    placed[i] = true;
                    if go(ops, placed, next, left - 1) {
                        return true;
                    }
                    placed[i] = false;
                }
            }
            false
        }
        go(ops, &mut vec![false; ops.len()], init, ops.len())
    }

    fn reg_op() -> impl Strategy<Value = RegOp> {
        let v = 0..3 as ValueId;
        prop_oneof![
            prop::option::of(v.clone()).prop_map(RegOp::Read),
            v.clone().prop_map(RegOp::Write),
            (v.clone(), v, prop::option::of(any::<bool>())).prop_map(|(expect, new, applied)| {
                RegOp::Cas {
                    expect,
                    new,
                    applied,
                }
            }),
        ]
    }

    fn timed() -> impl Strategy<Value = Timed<RegOp>> {
        (reg_op(), 0u64..16, prop::option::weighted(0.7, 0u64..16)).prop_map(|(op, call, w)| {
            Timed {
                op,
                call,
                ret: w.map(|w| call + w),
            }
        })
    }

    /// A history that mostly is linearizable: operations run against a register one after
    /// another (at 10, 20, ...; their outputs are what the register says), each recorded with
    /// an interval around its point, some left open; a third of the time one read is spoiled.
    fn executed() -> impl Strategy<Value = Vec<Timed<RegOp>>> {
        // Widths short or long (one operation spanning several others), so that operations
        // both overlap and follow one another in real time.
        let width = || prop_oneof![0u64..4, 0u64..40];
        let step = (reg_op(), width(), prop::option::weighted(0.7, width()));
        (
            prop::collection::vec(step, 0..8),
            any::<prop::sample::Index>(),
            0u8..3,
        )
            .prop_map(|(steps, spoil, dice)| {
                let mut cur: Option<ValueId> = None;
                let mut ops: Vec<Timed<RegOp>> = Vec::new();
                for (i, (op, before, after)) in steps.into_iter().enumerate() {
                    let point = 40 + 10 * i as u64;
                    let op = match op {
                        RegOp::Read(_) => RegOp::Read(cur),
                        RegOp::Write(v) => {
                            cur = Some(v);
                            RegOp::Write(v)
                        }
                        RegOp::Cas {
                            expect,
                            new,
                            applied,
                        } => {
                            let hit = cur == Some(expect);
                            if hit {
                                cur = Some(new);
                            }
                            let applied = applied.map(|_| hit);
                            RegOp::Cas {
                                expect,
                                new,
                                applied,
                            }
                        }
                    };
                    let ret = after.map(|a| point + a);
                    ops.push(Timed {
                        op,
                        call: point - before,
                        ret,
                    });
                }
                let reads: Vec<usize> = (0..ops.len())
                    .filter(|&i| matches!(ops[i].op, RegOp::Read(_)))
                    .collect();
                if dice == 0 && !reads.is_empty() {
                    let r = reads[spoil.index(reads.len())];
                    ops[r].op = RegOp::Read(match ops[r].op {
                        RegOp::Read(Some(v)) => Some((v + 1) % 3),
                        _ => Some(0),
                    });
                }
                ops
            })
    }

    fn verdict(ok: bool) -> Verdict {
        if ok {
            Verdict::Linearizable
        } else {
            Verdict::NotLinearizable
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

        /// The search (with its twin rule), the value merging and the dropping of hanging
        /// writes nobody observes, against the definition, on small histories whose few
        /// values collide often (so there are many twins).
        #[test]
        fn the_search_and_its_reductions_agree_with_the_definition(
            ops in prop_oneof![prop::collection::vec(timed(), 0..8), executed()],
            from_unknown in any::<bool>(),
        ) {
            let init = if from_unknown { Reg::Unknown } else { Reg::Known(None) };
            let truth = verdict(brute(&ops, init));
            let budget = Budget::default();
            prop_assert_eq!(wgl::check(&CasRegister, init, &ops, budget), truth.clone());
            let merged = merge_unobserved_values(ops.clone(), 100);
            prop_assert_eq!(verdict(brute(&merged, init)), truth.clone());
            prop_assert_eq!(wgl::check(&CasRegister, init, &merged, budget), truth.clone());
            let dropped = drop_unobserved_unknowns(merged, 100);
            prop_assert_eq!(wgl::check(&CasRegister, init, &dropped, budget), truth);
        }
    }
}
