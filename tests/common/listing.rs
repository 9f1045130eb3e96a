//! Listing checks shared by the engines' model tests: a key range (prefix, inclusive start,
//! exclusive end) paged with a cursor, each page compared with what a `BTreeMap` of the live
//! keys says it must be at that moment, however the store changed since the previous page.

use std::collections::BTreeMap;

use hoardhaven::engine::{Engine, KeyRange};

/// An owned [`KeyRange`].
#[derive(Clone, Debug, Default)]
pub struct RangeSpec {
    pub prefix: Vec<u8>,
    pub start: Option<Vec<u8>>,
    pub end: Option<Vec<u8>>,
}

impl RangeSpec {
    pub fn as_range(&self) -> KeyRange<'_> {
        KeyRange {
            prefix: &self.prefix,
            start: self.start.as_deref(),
            end: self.end.as_deref(),
        }
    }

    /// A range from small numbers, so proptest shrinks well: `prefix_pick` chooses among a few
    /// prefixes of `key(..)` (and the empty one), `start`/`end` are `key(n)` with an extra byte
    /// when odd (a bound between two keys).
    pub fn pick(
        key: fn(u8) -> Vec<u8>,
        prefix_pick: u8,
        start: Option<u8>,
        end: Option<u8>,
    ) -> RangeSpec {
        let k0 = key(0);
        let prefix = match prefix_pick % 5 {
            0 => Vec::new(),
            1 => k0[..k0.len() - 1].to_vec(),
            2 => key(1)[..k0.len()].to_vec(),
            3 => key(12)[..k0.len()].to_vec(),
            _ => b"zz".to_vec(),
        };
        let bound = |n: u8| {
            let mut b = key(n / 2);
            if n % 2 == 1 {
                b.push(b'~');
            }
            b
        };
        RangeSpec {
            prefix,
            start: start.map(bound),
            end: end.map(bound),
        }
    }
}

/// A listing in progress: the range and the cursor of its next page.
#[derive(Clone, Debug, Default)]
pub struct Pager {
    current: Option<(RangeSpec, Vec<u8>)>,
}

impl Pager {
    /// Takes one page of `limit` keys: the next page of the listing in progress if there is
    /// one, else the first page of `spec`. Checks it against `model` (the live keys now).
    pub fn step<V>(
        &mut self,
        e: &dyn Engine,
        spec: RangeSpec,
        limit: usize,
        model: &BTreeMap<Vec<u8>, V>,
    ) -> Result<(), String> {
        let (spec, after) = match self.current.take() {
            Some((s, a)) => (s, Some(a)),
            None => (spec, None),
        };
        let page = e
            .list_range(&spec.as_range(), after.as_deref(), limit)
            .map_err(|err| format!("list_range: {err}"))?;
        let r = spec.as_range();
        let matching: Vec<&Vec<u8>> = model
            .keys()
            .filter(|k| r.contains(k) && after.as_ref().is_none_or(|a| *k > a))
            .collect();
        let want: Vec<Vec<u8>> = matching.iter().take(limit).map(|k| (*k).clone()).collect();
        if page.keys != want {
            return Err(format!(
                "page of {spec:?} after {after:?} limit {limit}: got {:?}, want {want:?}",
                page.keys
            ));
        }
        let more = matching.len() > limit;
        match (&page.next_start_after, more) {
            (Some(c), true) if Some(c) == want.last() => {
                self.current = Some((spec, c.clone()));
            }
            (None, false) => {}
            (c, _) => {
                return Err(format!(
                    "cursor {c:?} with {} matching keys, limit {limit}",
                    matching.len()
                ));
            }
        }
        Ok(())
    }
}
