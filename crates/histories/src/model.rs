//! The sequential specification the checker holds histories to: one compare-and-set register
//! per key (Knossos's `cas-register`, porcupine's etcd model).
//!
//! The register starts absent. A write sets it; a CAS sets `new` only when the current value
//! is `expect`, and a CAS refused (412) says the current value was not `expect`. Values are
//! interned to small integers per key ([`Interner`]) so states hash cheaply.
//!
//! [`Reg::Unknown`] is the state at the start of a window cut out of a longer history (see
//! `check::smallest_window`): any value. It only ever loosens the specification (a refused or
//! unknown CAS leaves it unknown), so a window found to have no valid order from it has none
//! from any actual state.

use std::collections::HashMap;

use crate::history::{Input, Output};
use crate::wgl::Model;

/// An interned value.
pub type ValueId = u32;

/// The register's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reg {
    /// Any value (start of a window).
    Unknown,
    /// This value (`None`: absent).
    Known(Option<ValueId>),
}

/// One operation as the model steps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// Read this (`None`: absent).
    Read(Option<ValueId>),
    /// Write; the outcome does not matter to the register.
    Write(ValueId),
    /// CAS with its outcome: `Some(true)` applied, `Some(false)` refused, `None` unknown.
    Cas {
        /// Expected value.
        expect: ValueId,
        /// New value.
        new: ValueId,
        /// Outcome, when known.
        applied: Option<bool>,
    },
}

/// The compare-and-set register.
#[derive(Clone, Copy, Debug, Default)]
pub struct CasRegister;

impl Model for CasRegister {
    type State = Reg;
    type Op = RegOp;

    fn step(&self, s: &Reg, op: &RegOp) -> Option<Reg> {
        match (*s, op) {
            (Reg::Unknown, RegOp::Read(v)) => Some(Reg::Known(*v)),
            (Reg::Known(cur), RegOp::Read(v)) => (cur == *v).then_some(*s),
            (_, RegOp::Write(v)) => Some(Reg::Known(Some(*v))),
            (Reg::Unknown, RegOp::Cas { new, applied, .. }) => match applied {
                Some(true) => Some(Reg::Known(Some(*new))),
                _ => Some(Reg::Unknown),
            },
            (
                Reg::Known(cur),
                RegOp::Cas {
                    expect,
                    new,
                    applied,
                },
            ) => {
                let matches = cur == Some(*expect);
                match applied {
                    Some(true) => matches.then_some(Reg::Known(Some(*new))),
                    Some(false) => (!matches).then_some(*s),
                    None if matches => Some(Reg::Known(Some(*new))),
                    None => Some(*s),
                }
            }
        }
    }
}

/// Maps the values of one key to small integers.
#[derive(Default, Debug)]
pub struct Interner {
    ids: HashMap<String, ValueId>,
    /// Ids handed out by [`Interner::fresh`].
    fresh: usize,
}

impl Interner {
    /// The id of `v`, made on first sight.
    pub fn id(&mut self, v: &str) -> ValueId {
        let next = self.next_id();
        *self.ids.entry(v.to_owned()).or_insert(next)
    }

    fn next_id(&self) -> ValueId {
        ValueId::try_from(self.ids.len() + self.fresh).unwrap_or(ValueId::MAX)
    }

    /// An id no value of this key has (nor will have: it is taken).
    pub fn fresh(&mut self) -> ValueId {
        let id = self.next_id();
        self.fresh += 1;
        id
    }

    /// Turns a paired operation into a model operation; `None` for one that cannot affect the
    /// check (a read with no result).
    pub fn reg_op(&mut self, input: &Input, output: &Output) -> Option<RegOp> {
        Some(match (input, output) {
            (Input::Read, Output::Read(v)) => RegOp::Read(v.as_deref().map(|v| self.id(v))),
            (Input::Read, _) => return None,
            (Input::Write(v), _) => RegOp::Write(self.id(v)),
            (Input::Cas { expect, new }, out) => RegOp::Cas {
                expect: self.id(expect),
                new: self.id(new),
                applied: match out {
                    Output::Cas(b) => Some(*b),
                    _ => None,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_register_follows_its_specification() {
        let m = CasRegister;
        let absent = Reg::Known(None);
        assert_eq!(m.step(&absent, &RegOp::Read(None)), Some(absent));
        assert_eq!(m.step(&absent, &RegOp::Read(Some(1))), None);
        assert_eq!(m.step(&absent, &RegOp::Write(1)), Some(Reg::Known(Some(1))));
        let one = Reg::Known(Some(1));
        let cas = |applied| RegOp::Cas {
            expect: 1,
            new: 2,
            applied,
        };
        assert_eq!(m.step(&one, &cas(Some(true))), Some(Reg::Known(Some(2))));
        assert_eq!(m.step(&one, &cas(Some(false))), None);
        assert_eq!(m.step(&absent, &cas(Some(true))), None);
        assert_eq!(m.step(&absent, &cas(Some(false))), Some(absent));
        assert_eq!(m.step(&one, &cas(None)), Some(Reg::Known(Some(2))));
        assert_eq!(m.step(&absent, &cas(None)), Some(absent));
        assert_eq!(
            m.step(&Reg::Unknown, &RegOp::Read(Some(3))),
            Some(Reg::Known(Some(3)))
        );
        assert_eq!(m.step(&Reg::Unknown, &cas(Some(false))), Some(Reg::Unknown));
    }
}
