//! Writes appended but not yet durable, in log order, until a leader publishes them.
//!
//! With `SyncPolicy::Always` a write is visible to readers only once durable: the engine
//! keeps what the write will change (a keydir location, a table entry) here, tagged with the
//! LSN that makes it durable, and the group-commit leader publishes every item at or below the
//! LSN it made durable, in the order they were appended. Compare-and-set reads the engine's
//! own per-key view of these items, so two conditional writes on one key still serialize.

use std::collections::VecDeque;

/// Items waiting for their LSN to be durable, oldest first.
#[derive(Debug)]
pub struct PendingQueue<T> {
    items: VecDeque<(u64, T)>,
}

impl<T> Default for PendingQueue<T> {
    fn default() -> Self {
        PendingQueue {
            items: VecDeque::new(),
        }
    }
}

impl<T> PendingQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `item`, durable once `lsn` is. LSNs are pushed in ascending order.
    pub fn push(&mut self, lsn: u64, item: T) {
        debug_assert!(self.items.back().is_none_or(|(l, _)| *l <= lsn));
        self.items.push_back((lsn, item));
    }

    /// Removes and returns, oldest first, every item durable once `upto` is.
    pub fn take_upto(&mut self, upto: u64) -> Vec<T> {
        let n = self.items.partition_point(|(l, _)| *l <= upto);
        self.items.drain(..n).map(|(_, t)| t).collect()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_in_order_up_to_the_lsn() {
        let mut q = PendingQueue::new();
        for (l, v) in [(1, 'a'), (3, 'b'), (3, 'c'), (7, 'd')] {
            q.push(l, v);
        }
        assert_eq!(q.take_upto(0), Vec::<char>::new());
        assert_eq!(q.take_upto(3), vec!['a', 'b', 'c']);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_upto(100), vec!['d']);
        assert!(q.is_empty());
    }
}
