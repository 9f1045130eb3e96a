//! Listing pages over the ordered key index, shared by both engines (and reusable by anything
//! that filters keys by the same rules, such as watches).
//!
//! A [`KeyRange`] is a prefix and an optional `[start, end)` range (end exclusive, as etcd);
//! a page is the first `limit` live keys of the range strictly after a cursor (the last key of
//! the previous page). The cursor is a key, not a position, so it stays valid whatever is
//! written between two pages: the next page is exactly the keys after it at that moment.
//!
//! A page reads the ordered index a chunk at a time (under its read lock only), then asks the
//! engine whether each key is live (not expired, still present) under the hash index's locks,
//! never holding both at once (the writers' lock order is hash shard, then ordered index).

use std::ops::Bound;

use super::ListPage;
use crate::ordered::OrderedKeys;

/// Which keys a listing (or a watch) covers: those starting with `prefix`, at or after
/// `start`, and before `end`. Empty `prefix` and `None` bounds cover everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyRange<'a> {
    /// Keys must start with these bytes.
    pub prefix: &'a [u8],
    /// Inclusive lower bound.
    pub start: Option<&'a [u8]>,
    /// Exclusive upper bound.
    pub end: Option<&'a [u8]>,
}

impl<'a> KeyRange<'a> {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &'a [u8]) -> Self {
        KeyRange {
            prefix,
            start: None,
            end: None,
        }
    }

    /// True when `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key.starts_with(self.prefix)
            && self.start.is_none_or(|s| key >= s)
            && self.end.is_none_or(|e| key < e)
    }

    /// The lowest bound of the range, or strictly after `after` if that is higher.
    pub fn lower(&self, after: Option<&'a [u8]>) -> Bound<&'a [u8]> {
        let mut lo = Bound::Included(self.prefix);
        if let Some(s) = self.start
            && s > self.prefix
        {
            lo = Bound::Included(s);
        }
        if let Some(a) = after {
            let above = match lo {
                Bound::Included(l) => a >= l,
                Bound::Excluded(l) => a > l,
                Bound::Unbounded => true,
            };
            if above {
                lo = Bound::Excluded(a);
            }
        }
        lo
    }

    /// The upper bound: `end`, or the first key past the prefix, whichever is lower.
    pub fn upper(&self) -> Bound<Vec<u8>> {
        let past_prefix = prefix_successor(self.prefix);
        match (self.end, past_prefix) {
            (Some(e), Some(p)) => Bound::Excluded(if e <= p.as_slice() { e.to_vec() } else { p }),
            (Some(e), None) => Bound::Excluded(e.to_vec()),
            (None, Some(p)) => Bound::Excluded(p),
            (None, None) => Bound::Unbounded,
        }
    }
}

/// The smallest key greater than every key starting with `prefix`, `None` when there is none
/// (empty prefix, or all bytes 0xFF).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xFF {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

/// One page of `range` after `start_after`: at most `limit` keys for which `live` holds, in
/// ascending order, with the cursor for the next page when more keys of the range follow.
pub fn page(
    order: &OrderedKeys,
    range: &KeyRange<'_>,
    start_after: Option<&[u8]>,
    limit: usize,
    mut live: impl FnMut(&[u8]) -> bool,
) -> ListPage {
    if limit == 0 {
        return ListPage::default();
    }
    let upper = range.upper();
    let upper = match &upper {
        Bound::Excluded(u) => Bound::Excluded(u.as_slice()),
        Bound::Included(u) => Bound::Included(u.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    };
    let mut lower_owned: Option<Vec<u8>> = None;
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(limit.min(1024) + 1);
    let mut chunk = Vec::new();
    loop {
        let lower = match &lower_owned {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => range.lower(start_after),
        };
        // One more than the page needs, so that we know whether another page follows.
        let want = (limit + 1 - keys.len()).clamp(16, 4096);
        chunk.clear();
        let more = order.collect(lower, upper, want, &mut chunk);
        if let Some(last) = chunk.last() {
            lower_owned = Some(last.clone());
        }
        for k in chunk.drain(..) {
            if keys.len() > limit {
                break;
            }
            if live(&k) {
                keys.push(k);
            }
        }
        if keys.len() > limit || !more {
            break;
        }
    }
    let more = keys.len() > limit;
    keys.truncate(limit);
    let next_start_after = if more { keys.last().cloned() } else { None };
    ListPage {
        keys,
        next_start_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(o: &OrderedKeys, r: &KeyRange<'_>, limit: usize) -> Vec<Vec<u8>> {
        let mut after: Option<Vec<u8>> = None;
        let mut seen = Vec::new();
        loop {
            let p = page(o, r, after.as_deref(), limit, |k| !k.ends_with(b"dead"));
            assert!(p.keys.len() <= limit);
            seen.extend(p.keys.iter().cloned());
            match p.next_start_after {
                Some(n) => after = Some(n),
                None => return seen,
            }
        }
    }

    #[test]
    fn pages_through_prefix_and_range_in_order() {
        let o = OrderedKeys::new();
        let mut keys: Vec<Vec<u8>> = (0..50u8).rev().map(|i| vec![b'p', i]).collect();
        for k in &keys {
            o.insert(k);
        }
        o.insert(b"q-other-prefix");
        o.insert(b"p\xff\xff");
        o.insert(b"pdead");
        keys.push(b"p\xff\xff".to_vec());
        keys.sort();
        assert_eq!(pages(&o, &KeyRange::prefix(b"p"), 7), keys);
        let r = KeyRange {
            prefix: b"p",
            start: Some(&[b'p', 10]),
            end: Some(&[b'p', 20]),
        };
        let want: Vec<Vec<u8>> = (10..20u8).map(|i| vec![b'p', i]).collect();
        assert_eq!(pages(&o, &r, 3), want);
        assert_eq!(pages(&o, &r, 100), want);
        // A start below the prefix and an end past it are clipped to the prefix.
        let r = KeyRange {
            prefix: b"p",
            start: Some(b"a"),
            end: Some(b"z"),
        };
        assert_eq!(pages(&o, &r, 9), keys);
        // Many dead keys in a row do not end the page early.
        for i in 0..100u8 {
            o.insert(&[b'd', i, b'd', b'e', b'a', b'd']);
        }
        o.insert(b"e");
        assert_eq!(
            pages(&o, &KeyRange::prefix(b""), 2)
                .first()
                .map(Vec::as_slice),
            Some(&b"e"[..])
        );
    }

    #[test]
    fn successor_and_bounds() {
        assert_eq!(prefix_successor(b""), None);
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        let r = KeyRange {
            prefix: b"a",
            start: Some(b"ab"),
            end: Some(b"ad"),
        };
        assert!(r.contains(b"ab") && r.contains(b"ac\xff") && !r.contains(b"ad"));
        assert!(!r.contains(b"aa"));
        assert_eq!(r.lower(Some(b"aa")), Bound::Included(&b"ab"[..]));
        assert_eq!(r.lower(Some(b"ab")), Bound::Excluded(&b"ab"[..]));
    }
}
