//! The linearizability search: Wing & Gong's algorithm with Lowe's memoisation, as porcupine
//! (`checker.go`, `checkSingle`) and Knossos (`wgl`) implement it.
//!
//! The history becomes a list of call and return entries in time order (a call before a return
//! at the same instant, so touching operations count as concurrent). The search walks the
//! list: at a call it tries to linearize that operation now (the model accepts it from the
//! current state, and the pair (set of linearized operations, state) has not been explored
//! before), lifting its call and return out of the list; reaching a return of an operation not
//! yet linearized means the current order is impossible, so it backtracks (undoes the last
//! choice and tries the next call). The history is linearizable when the list empties.
//!
//! An operation with unknown outcome has no return entry in time: it can be linearized at any
//! point after its call, and, since nothing follows the end, placing it last is the same as it
//! never having happened.
//!
//! Open operations that are the same operation (two writes of a value nobody reads, once
//! `check` has given all such values one id) are interchangeable: the search only linearizes
//! such a twin after every twin called before it ([`earlier_twins`]). This cuts 2^k orders of
//! k hanging twins to k + 1 without losing any verdict (the argument is on that function).
//!
//! The memo holds the full sets (no hashes standing in for them): a collision could only hide
//! a valid order, so it would report violations that are not. The search is bounded by the
//! size of that memo and by a number of steps ([`Budget`]); past either the verdict is
//! [`Verdict::Unknown`], never a pass.

use std::collections::HashSet;
use std::hash::Hash;

use fixedbitset::FixedBitSet;

/// A sequential specification.
pub trait Model {
    /// The state; hashed into the memo.
    type State: Clone + Eq + Hash;
    /// An operation with its (known) result; equal operations have equal effects.
    type Op: Eq;
    /// The state after `op` from `s`, or `None` when `op` cannot happen (or return what it
    /// returned) from `s`.
    fn step(&self, s: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// An operation and its interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timed<O> {
    /// The operation.
    pub op: O,
    /// Invocation time.
    pub call: u64,
    /// Completion time; `None` when unknown (open-ended).
    pub ret: Option<u64>,
}

/// How much the search may explore.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Most 64-bit words the memo may hold (its memory, in eighths of a byte).
    pub memo_words: usize,
    /// Most steps (tries and backtracks) one search may take: bounds its time.
    pub steps: u64,
}

impl Default for Budget {
    fn default() -> Self {
        // 256 MiB of memo; some seconds of search per key.
        Budget {
            memo_words: 32 << 20,
            steps: 5_000_000,
        }
    }
}

/// The outcome of a search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations respects real time and the model.
    Linearizable,
    /// None does.
    NotLinearizable,
    /// The budget ran out first.
    Unknown,
}

const NONE: usize = usize::MAX;

/// The doubly linked list of entries (index `2n` is the head sentinel).
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For a call entry, its operation; `NONE` for returns and the head.
    op_of_call: Vec<usize>,
    /// For a call entry, its return entry.
    ret_of_call: Vec<usize>,
}

impl Entries {
    fn new<O>(ops: &[Timed<O>]) -> Entries {
        let n = ops.len();
        // (time, 0 = call | 1 = return, op)
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
        for (i, o) in ops.iter().enumerate() {
            order.push((o.call, 0, i));
            order.push((o.ret.unwrap_or(u64::MAX).max(o.call), 1, i));
        }
        order.sort_unstable();
        let head = 2 * n;
        let mut e = Entries {
            next: vec![NONE; 2 * n + 1],
            prev: vec![NONE; 2 * n + 1],
            op_of_call: vec![NONE; 2 * n + 1],
            ret_of_call: vec![NONE; 2 * n + 1],
        };
        let mut call_entry = vec![NONE; n];
        let mut last = head;
        for (pos, &(_, kind, op)) in order.iter().enumerate() {
            e.next[last] = pos;
            e.prev[pos] = last;
            if kind == 0 {
                e.op_of_call[pos] = op;
                call_entry[op] = pos;
            } else {
                e.ret_of_call[call_entry[op]] = pos;
            }
            last = pos;
        }
        e
    }

    fn remove(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != NONE {
            self.prev[n] = p;
        }
    }

    fn restore(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != NONE {
            self.prev[n] = x;
        }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.remove(call);
        self.remove(self.ret_of_call[call]);
    }

    /// Undoes [`Entries::lift`] (lifts and unlifts nest, like dancing links).
    fn unlift(&mut self, call: usize) {
        self.restore(self.ret_of_call[call]);
        self.restore(call);
    }
}

/// Searches for a linearization of `ops` from `init`.
pub fn check<M: Model>(model: &M, init: M::State, ops: &[Timed<M::Op>], budget: Budget) -> Verdict {
    search(model, init, ops, budget).verdict
}

/// What a search found, and what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Searched {
    /// The verdict.
    pub verdict: Verdict,
    /// Steps taken (tries and backtracks), to compare with [`Budget::steps`].
    pub steps: u64,
}

/// [`check`], also saying how many steps it took.
pub fn search<M: Model>(
    model: &M,
    init: M::State,
    ops: &[Timed<M::Op>],
    budget: Budget,
) -> Searched {
    let verdict = |verdict, steps| Searched { verdict, steps };
    let n = ops.len();
    let head = 2 * n;
    let mut list = Entries::new(ops);
    let twin = earlier_twins(ops);
    let words = n.div_ceil(64).max(1) + 1;
    let mut memo: HashSet<(FixedBitSet, M::State)> = HashSet::new();
    let mut linearized = FixedBitSet::with_capacity(n);
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = init;
    let mut entry = list.next[head];
    let mut steps = 0u64;
    while list.next[head] != NONE {
        steps += 1;
        if steps > budget.steps {
            return verdict(Verdict::Unknown, steps);
        }
        let op = if entry == NONE {
            NONE
        } else {
            list.op_of_call[entry]
        };
        if op != NONE {
            let mut moved = false;
            // An earlier twin not yet linearized goes first (see `earlier_twins`).
            let twin_waits = twin[op] != NONE && !linearized.contains(twin[op]);
            if !twin_waits && let Some(next_state) = model.step(&state, &ops[op].op) {
                let mut set = linearized.clone();
                set.insert(op);
                if memo.insert((set, next_state.clone())) {
                    if memo.len().saturating_mul(words) > budget.memo_words {
                        return verdict(Verdict::Unknown, steps);
                    }
                    stack.push((entry, std::mem::replace(&mut state, next_state)));
                    linearized.insert(op);
                    list.lift(entry);
                    entry = list.next[head];
                    moved = true;
                }
            }
            if !moved {
                entry = list.next[entry];
            }
        } else {
            // A return whose call is not linearized (or, defensively, the end of the list,
            // which cannot come first: the last entry is always a return): backtrack.
            let Some((call, prev_state)) = stack.pop() else {
                return verdict(Verdict::NotLinearizable, steps);
            };
            state = prev_state;
            linearized.set(list.op_of_call[call], false);
            list.unlift(call);
            entry = list.next[call];
        }
    }
    verdict(Verdict::Linearizable, steps)
}

/// For each open operation (no return), the nearest open operation called before it (ties by
/// index) that is the same operation; `NONE` for the rest.
///
/// Why linearizing a twin only after its earlier twins loses no valid order: take a valid order
/// in which `b` takes effect at position p while its earlier twin `a` comes at a later
/// position q, or never. Swap them: `a` at p, `b` at q (or never). `a` was called no later than
/// `b`, so whatever had to precede `b` at p (the operations that returned before `b`'s call) is
/// a superset of what must precede `a`; `b` at q > p still follows all of that; nothing must
/// follow either (neither returned); and the model sees the same operation at p and at q. So
/// the swapped order is valid too, and repeating the swap yields one where twins take effect
/// in call order.
fn earlier_twins<O: Eq>(ops: &[Timed<O>]) -> Vec<usize> {
    let mut open: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
    open.sort_by_key(|&i| (ops[i].call, i));
    let mut twin = vec![NONE; ops.len()];
    for (k, &i) in open.iter().enumerate() {
        if let Some(&j) = open[..k].iter().rev().find(|&&j| ops[j].op == ops[i].op) {
            twin[i] = j;
        }
    }
    twin
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter: `Some(d)` adds d; `None` reads and must see 0..; ops carry the expected read.
    struct Counter;
    impl Model for Counter {
        type State = i64;
        type Op = (i64, Option<i64>);
        fn step(&self, s: &i64, op: &(i64, Option<i64>)) -> Option<i64> {
            match op.1 {
                Some(expect) => (*s == expect).then_some(*s),
                None => Some(s + op.0),
            }
        }
    }

    fn t(op: (i64, Option<i64>), call: u64, ret: Option<u64>) -> Timed<(i64, Option<i64>)> {
        Timed { op, call, ret }
    }

    #[test]
    fn an_empty_history_is_linearizable() {
        assert_eq!(
            check(&Counter, 0, &[], Budget::default()),
            Verdict::Linearizable
        );
    }

    #[test]
    fn real_time_order_is_respected() {
        // add 1 finishes before the read starts: the read must see 1.
        let h = [t((1, None), 0, Some(10)), t((0, Some(0)), 20, Some(30))];
        assert_eq!(
            check(&Counter, 0, &h, Budget::default()),
            Verdict::NotLinearizable
        );
        // Overlapping: the read may go first.
        let h = [t((1, None), 0, Some(25)), t((0, Some(0)), 20, Some(30))];
        assert_eq!(
            check(&Counter, 0, &h, Budget::default()),
            Verdict::Linearizable
        );
    }

    #[test]
    fn an_unknown_operation_may_happen_late_or_never() {
        // The add never returned: reads before and after may see it or not.
        let h = [
            t((1, None), 0, None),
            t((0, Some(0)), 20, Some(30)),
            t((0, Some(1)), 40, Some(50)),
        ];
        assert_eq!(
            check(&Counter, 0, &h, Budget::default()),
            Verdict::Linearizable
        );
        let h = [t((1, None), 0, None), t((0, Some(0)), 20, Some(30))];
        assert_eq!(
            check(&Counter, 0, &h, Budget::default()),
            Verdict::Linearizable
        );
        // ...but not before its call.
        let h = [t((0, Some(1)), 0, Some(10)), t((1, None), 20, None)];
        assert_eq!(
            check(&Counter, 0, &h, Budget::default()),
            Verdict::NotLinearizable
        );
    }

    #[test]
    fn a_tiny_budget_gives_unknown_not_a_pass() {
        let h: Vec<_> = (0..50).map(|i| t((1, None), i, Some(1000))).collect();
        let tiny = Budget {
            memo_words: 4,
            ..Budget::default()
        };
        assert_eq!(check(&Counter, 0, &h, tiny), Verdict::Unknown);
        let few_steps = Budget {
            steps: 10,
            ..Budget::default()
        };
        assert_eq!(check(&Counter, 0, &h, few_steps), Verdict::Unknown);
    }
}
