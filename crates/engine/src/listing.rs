//! One page of a prefix listing over an unordered index, shared by both engines.
//!
//! Both keydirs are hash tables, so a page is found by offering every key to a
//! [`PageCollector`]: it keeps the `limit + 1` smallest keys that match the prefix and come after
//! the cursor (a max-heap evicting the largest), then sorts them. O(n log limit) per page.

use std::collections::BinaryHeap;

use super::ListPage;

/// Gathers the keys of one listing page.
#[derive(Debug)]
pub struct PageCollector<'a> {
    prefix: &'a [u8],
    start_after: Option<&'a [u8]>,
    limit: usize,
    heap: BinaryHeap<Vec<u8>>,
}

impl<'a> PageCollector<'a> {
    /// A collector for keys starting with `prefix`, strictly after `start_after`, at most
    /// `limit` of them (`limit` >= 1).
    pub fn new(prefix: &'a [u8], start_after: Option<&'a [u8]>, limit: usize) -> Self {
        PageCollector {
            prefix,
            start_after,
            limit,
            heap: BinaryHeap::with_capacity(limit.saturating_add(1).min(1 << 16)),
        }
    }

    /// Offers a live key; keys outside the page are ignored.
    pub fn offer(&mut self, key: &[u8]) {
        if !key.starts_with(self.prefix) || self.start_after.is_some_and(|s| key <= s) {
            return;
        }
        if self.heap.len() <= self.limit {
            self.heap.push(key.to_vec());
        } else if self.heap.peek().is_some_and(|top| key < top.as_slice()) {
            self.heap.pop();
            self.heap.push(key.to_vec());
        }
    }

    /// The page, in ascending byte order, with the cursor for the next one when more follow.
    pub fn finish(self) -> ListPage {
        let mut keys = self.heap.into_sorted_vec();
        let more = keys.len() > self.limit;
        keys.truncate(self.limit);
        let next_start_after = if more { keys.last().cloned() } else { None };
        ListPage {
            keys,
            next_start_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through_in_order() {
        let keys: Vec<Vec<u8>> = (0..50u8).rev().map(|i| vec![b'p', i]).collect();
        let mut after: Option<Vec<u8>> = None;
        let mut seen = Vec::new();
        loop {
            let mut c = PageCollector::new(b"p", after.as_deref(), 7);
            for k in &keys {
                c.offer(k);
            }
            c.offer(b"q-other-prefix");
            let page = c.finish();
            seen.extend(page.keys.iter().cloned());
            match page.next_start_after {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let mut want = keys.clone();
        want.sort();
        assert_eq!(seen, want);
    }
}
