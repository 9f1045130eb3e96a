//! The change feed every engine publishes: what `GET /watch` and blocking reads are served from.
//!
//! Owns [`ChangeLog`]: a bounded in-memory ring of the most recent changes (puts, deletes,
//! expiries) in version order, the listeners woken when the current version moves, and the
//! hand-off to an engine's [`HistorySource`] for versions older than the ring (bitcask data
//! files, the memory engine's append-only log) until a merge or rewrite drops them.
//!
//! # The one hook
//! An engine calls [`ChangeLog::publish`] once per write (or once per batch, its changes in
//! version order) at the point where the write becomes visible to readers, and once per key
//! found expired or swept. Nothing else in the engines knows about watchers. A cluster can
//! feed the same call from applied log entries.
//!
//! # Order and gaps
//! Versions are handed out from one sequence per engine, so within a run every version is
//! published exactly once. Writes on different shards (memory engine) can reach `publish` out
//! of version order: such changes wait in a small reorder buffer until the versions before
//! them arrive, so the ring and every watcher see strictly increasing versions with no gap.
//! The ring starts at the version the engine recovered (its `floor`): every change with a
//! version above the floor and at most [`ChangeLog::current`] is in the ring until evicted;
//! eviction raises the floor.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::Version;
use crate::error::Result;

/// Default number of changes the ring keeps.
pub const DEFAULT_RING_CAPACITY: usize = 4096;
/// Default largest value the ring keeps with a put (larger ones are kept without the value).
pub const DEFAULT_VALUE_CAP: usize = 4096;
/// Reorder buffer size past which a missing version is given up on (a bug guard).
const MAX_PENDING: usize = 100_000;

/// What a change did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A value was stored.
    Put,
    /// The key was deleted.
    Delete,
    /// The key's time to live ran out (found expired on read, or swept).
    Expire,
}

impl ChangeKind {
    /// The SSE event name: `put`, `delete` or `expire`.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Put => "put",
            ChangeKind::Delete => "delete",
            ChangeKind::Expire => "expire",
        }
    }
}

/// One change, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The version the change was written with.
    pub version: Version,
    /// Put, delete or expire.
    pub kind: ChangeKind,
    /// The key.
    pub key: Bytes,
    /// The stored value of a put, when it is at most the ring's value cap.
    pub value: Option<Bytes>,
    /// Length of the stored value (0 for deletes and expiries).
    pub value_len: u64,
    /// First version of the batch this change belongs to (its own version when alone).
    pub batch: Version,
}

impl Change {
    /// A put of `value` under `key` (the ring drops values over its cap when it keeps it).
    pub fn put(version: Version, key: &[u8], value: &Bytes) -> Change {
        Change {
            version,
            kind: ChangeKind::Put,
            key: Bytes::copy_from_slice(key),
            value: Some(value.clone()),
            value_len: value.len() as u64,
            batch: version,
        }
    }

    /// The same change, counted as part of the batch that starts at `first`.
    pub fn in_batch(mut self, first: Version) -> Change {
        self.batch = first;
        self
    }

    /// A delete (or, with `kind` Expire, an expiry) of `key`.
    pub fn removal(version: Version, kind: ChangeKind, key: &[u8]) -> Change {
        Change {
            version,
            kind,
            key: Bytes::copy_from_slice(key),
            value: None,
            value_len: 0,
            batch: version,
        }
    }
}

/// What an engine keeps on disk of older changes.
pub trait HistorySource: Send + Sync {
    /// The changes with versions above `after`, in version order, at most about `limit` of
    /// them (whole batches); fewer (or none) when the history on disk ends. `Ok(None)` when
    /// the history no longer reaches back to `after` (a merge or rewrite dropped it).
    ///
    /// # Errors
    /// I/O failures and records failing their checksums.
    fn read_after(
        &self,
        after: Version,
        limit: usize,
        value_cap: usize,
    ) -> Result<Option<Vec<Change>>>;

    /// The oldest version a reader may resume after: every change above it is still on disk
    /// (or in the ring).
    ///
    /// # Errors
    /// I/O failures.
    fn floor(&self) -> Result<Version>;
}

/// The result of reading the ring.
#[derive(Debug)]
pub enum RingRead {
    /// Changes above the given version, in order (empty when caught up), and the current
    /// version.
    Changes(Vec<Arc<Change>>, Version),
    /// The ring no longer holds the changes right after the given version: its oldest
    /// version is above it. Older changes can only come from [`ChangeLog::history`].
    Behind {
        /// The ring's floor: it holds every change above this version.
        floor: Version,
    },
}

/// The result of reading older history.
#[derive(Debug)]
pub enum History {
    /// Changes above the given version, in order (possibly empty when the disk has nothing
    /// newer than what the ring holds).
    Changes(Vec<Arc<Change>>),
    /// The history no longer reaches back that far.
    Gone {
        /// The oldest version one may resume after.
        oldest: Version,
        /// The current version (re-list, then watch from here).
        current: Version,
    },
}

type Listener = Arc<dyn Fn(Version) + Send + Sync>;

struct Ring {
    events: VecDeque<Arc<Change>>,
    capacity: usize,
    value_cap: usize,
    /// Every change above this version (up to `current`) is in `events`.
    floor: Version,
    /// The last version published in order.
    current: Version,
    /// Changes that arrived before an earlier version did, by version.
    pending: BTreeMap<u64, Vec<Change>>,
    /// Ranges of versions no write will ever have ([`ChangeLog::skip`]), first -> last.
    skipped: BTreeMap<u64, u64>,
}

impl Ring {
    fn push(&mut self, mut c: Change) {
        if c.value_len > self.value_cap as u64 {
            c.value = None;
        }
        self.current = c.version;
        self.events.push_back(Arc::new(c));
        while self.events.len() > self.capacity {
            if let Some(old) = self.events.pop_front() {
                self.floor = old.version;
            }
        }
    }

    /// Applies `batch` (if it is next) and every pending batch that follows it.
    fn accept(&mut self, batch: Vec<Change>) {
        let Some(first) = batch.first().map(|c| c.version.0) else {
            return;
        };
        if first <= self.current.0 {
            // A version at or below the current one: already published (never expected).
            tracing::warn!(
                version = first,
                current = self.current.0,
                "change published twice; ignored"
            );
            return;
        }
        if first != self.current.0 + 1 {
            self.pending.insert(first, batch);
            if self.pending.len() > MAX_PENDING {
                // A version was drawn but never published: skip the gap rather than stall.
                tracing::error!(missing = self.current.0 + 1, "change feed gap; skipping it");
                if let Some((_, b)) = self.pending.pop_first() {
                    self.append(b);
                }
            } else {
                return;
            }
        } else {
            self.append(batch);
        }
        self.drain();
    }

    /// Publishes what waited for the versions now current: pending batches and skipped ranges.
    fn drain(&mut self) {
        loop {
            let next = self.current.0 + 1;
            if let Some(b) = self.pending.remove(&next) {
                self.append(b);
            } else if let Some(last) = self.skipped.remove(&next) {
                self.current = Version(last);
            } else {
                return;
            }
        }
    }

    fn append(&mut self, batch: Vec<Change>) {
        for c in batch {
            self.push(c);
        }
    }
}

/// The change feed of one engine: ring, listeners, history on disk. Thread-safe.
pub struct ChangeLog {
    ring: RwLock<Ring>,
    listeners: Mutex<Vec<Listener>>,
    history: OnceLock<Box<dyn HistorySource>>,
    /// Changes of writes appended but not yet durable (sync=always), by first version: held
    /// back from watchers as the writes are from readers, until [`ChangeLog::release`] or
    /// [`ChangeLog::release_upto`]. A write lost to a crash is never announced.
    held: Mutex<BTreeMap<u64, Vec<Change>>>,
}

impl std::fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.ring.read();
        f.debug_struct("ChangeLog")
            .field("floor", &r.floor)
            .field("current", &r.current)
            .field("len", &r.events.len())
            .finish_non_exhaustive()
    }
}

impl ChangeLog {
    /// An empty feed whose last published version is `current` (what the engine recovered).
    pub fn new(current: Version) -> Self {
        Self::starting(current, current)
    }

    /// An empty feed whose next version is above `current`, where no change exists between
    /// `floor` and `current` (the memory engine skips versions at start-up): a watcher
    /// resuming after `floor` reads on from the ring.
    pub fn starting(floor: Version, current: Version) -> Self {
        ChangeLog {
            ring: RwLock::new(Ring {
                events: VecDeque::new(),
                capacity: DEFAULT_RING_CAPACITY,
                value_cap: DEFAULT_VALUE_CAP,
                floor: floor.min(current),
                current,
                pending: BTreeMap::new(),
                skipped: BTreeMap::new(),
            }),
            listeners: Mutex::new(Vec::new()),
            history: OnceLock::new(),
            held: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sets how many changes the ring keeps (at least 1) and the largest value kept with a
    /// put. Shrinking evicts the oldest changes at once.
    pub fn configure(&self, capacity: usize, value_cap: usize) {
        let mut r = self.ring.write();
        r.capacity = capacity.max(1);
        r.value_cap = value_cap;
        while r.events.len() > r.capacity {
            if let Some(old) = r.events.pop_front() {
                r.floor = old.version;
            }
        }
    }

    /// Installs the reader of older history (once; later calls are ignored).
    pub fn set_history(&self, source: Box<dyn HistorySource>) {
        let _ = self.history.set(source);
    }

    /// Calls `f` with the new current version after every publish (from the writer's thread:
    /// `f` must be quick and must not block).
    pub fn subscribe(&self, f: Arc<dyn Fn(Version) + Send + Sync>) {
        self.listeners.lock().push(f);
    }

    /// Holds the changes of one write or batch that is not durable yet; they are published by
    /// [`ChangeLog::release`] or [`ChangeLog::release_upto`] once it is.
    pub fn stage(&self, batch: Vec<Change>) {
        if let Some(first) = batch.first().map(|c| c.version.0) {
            self.held.lock().insert(first, batch);
        }
    }

    /// Publishes the held write or batch whose first version is `first` (now durable).
    pub fn release(&self, first: Version) {
        let batch = self.held.lock().remove(&first.0);
        if let Some(batch) = batch {
            self.publish(batch);
        }
    }

    /// Publishes every held write or batch whose versions are all at or below `upto` (the log
    /// is durable up to there), in version order.
    pub fn release_upto(&self, upto: Version) {
        let done = {
            let mut held = self.held.lock();
            if held.is_empty() {
                return;
            }
            let rest = held.split_off(&upto.0.saturating_add(1));
            std::mem::replace(&mut *held, rest)
        };
        for (_, batch) in done {
            self.publish(batch);
        }
    }

    /// Records that no write will ever have a version in `first..=last` (an engine raised its
    /// version counter: [`crate::Engine::advance_version`]), so the feed does not wait for
    /// them. Call it where versions are drawn, before any version above `last` is published.
    pub fn skip(&self, first: Version, last: Version) {
        if last < first {
            return;
        }
        let current = {
            let mut r = self.ring.write();
            let before = r.current;
            if first.0 <= before.0.saturating_add(1) {
                r.current = r.current.max(last);
                r.drain();
            } else {
                r.skipped.insert(first.0, last.0);
            }
            if r.current == before {
                return;
            }
            r.current
        };
        let listeners = self.listeners.lock().clone();
        for l in &listeners {
            l(current);
        }
    }

    /// Publishes the changes of one write or batch, in version order. See the module docs.
    pub fn publish(&self, batch: Vec<Change>) {
        let current = {
            let mut r = self.ring.write();
            let before = r.current;
            r.accept(batch);
            if r.current == before {
                return;
            }
            r.current
        };
        let listeners = self.listeners.lock().clone();
        for l in &listeners {
            l(current);
        }
    }

    /// The last version published (in order).
    pub fn current(&self) -> Version {
        self.ring.read().current
    }

    /// The ring's floor: it holds every change above this version.
    pub fn ring_floor(&self) -> Version {
        self.ring.read().floor
    }

    /// Up to about `limit` changes above `after` from the ring (a batch is never split).
    pub fn read_after(&self, after: Version, limit: usize) -> RingRead {
        let r = self.ring.read();
        if after < r.floor {
            return RingRead::Behind { floor: r.floor };
        }
        // Versions in the ring are strictly increasing: find the first above `after`.
        let start = r.events.partition_point(|c| c.version <= after);
        let mut out: Vec<Arc<Change>> = Vec::new();
        for c in r.events.range(start..) {
            if out.len() >= limit.max(1) && out.last().is_none_or(|l| l.batch != c.batch) {
                break;
            }
            out.push(Arc::clone(c));
        }
        RingRead::Changes(out, r.current)
    }

    /// Changes above `after` from the history on disk (blocking I/O: call it off the async
    /// runtime). Used when [`ChangeLog::read_after`] says the ring is behind.
    ///
    /// # Errors
    /// I/O failures and records failing their checksums.
    pub fn history(&self, after: Version, limit: usize) -> Result<History> {
        let (ring_floor, current, cap) = {
            let r = self.ring.read();
            (r.floor, r.current, r.value_cap)
        };
        let gone = |oldest: Version| History::Gone { oldest, current };
        let Some(source) = self.history.get() else {
            return Ok(gone(ring_floor));
        };
        let floor = source.floor()?;
        if after < floor {
            return Ok(gone(floor.min(ring_floor)));
        }
        match source.read_after(after, limit, cap)? {
            Some(v) => Ok(History::Changes(v.into_iter().map(Arc::new).collect())),
            None => Ok(gone(source.floor()?.min(ring_floor))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(v: u64) -> Change {
        Change::put(Version(v), b"k", &Bytes::from_static(b"v"))
    }

    fn versions(r: RingRead) -> Vec<u64> {
        match r {
            RingRead::Changes(v, _) => v.iter().map(|c| c.version.0).collect(),
            RingRead::Behind { floor } => panic!("behind, floor {floor:?}"),
        }
    }

    #[test]
    fn out_of_order_publishes_come_out_in_order_without_gaps() {
        let log = ChangeLog::new(Version(10));
        log.publish(vec![put(12)]);
        assert_eq!(log.current(), Version(10), "12 waits for 11");
        assert!(versions(log.read_after(Version(10), 10)).is_empty());
        log.publish(vec![put(11)]);
        assert_eq!(log.current(), Version(12));
        assert_eq!(versions(log.read_after(Version(10), 10)), vec![11, 12]);
    }

    #[test]
    fn skipped_versions_are_not_waited_for() {
        let log = ChangeLog::new(Version(10));
        log.skip(Version(13), Version(20));
        log.publish(vec![Change::put(
            Version(21),
            b"b",
            &Bytes::from_static(b"2"),
        )]);
        assert_eq!(log.current(), Version(10), "11 and 12 are still drawn");
        log.publish(vec![Change::put(
            Version(11),
            b"a",
            &Bytes::from_static(b"1"),
        )]);
        log.publish(vec![Change::put(
            Version(12),
            b"a",
            &Bytes::from_static(b"1"),
        )]);
        assert_eq!(log.current(), Version(21));
        assert_eq!(versions(log.read_after(Version(10), 10)), vec![11, 12, 21]);
        log.skip(Version(22), Version(30));
        assert_eq!(log.current(), Version(30));
    }

    #[test]
    fn eviction_raises_the_floor_and_readers_behind_it_are_told() {
        let log = ChangeLog::new(Version(0));
        log.configure(3, 16);
        for v in 1..=5 {
            log.publish(vec![put(v)]);
        }
        assert_eq!(log.ring_floor(), Version(2));
        assert!(matches!(
            log.read_after(Version(1), 10),
            RingRead::Behind { floor: Version(2) }
        ));
        assert_eq!(versions(log.read_after(Version(2), 10)), vec![3, 4, 5]);
        assert!(matches!(
            log.history(Version(0), 10),
            Ok(History::Gone {
                oldest: Version(2),
                current: Version(5)
            })
        ));
    }

    #[test]
    fn a_batch_is_never_split_by_the_limit() {
        let log = ChangeLog::new(Version(0));
        let batch: Vec<Change> = (1..=4).map(|v| put(v).in_batch(Version(1))).collect();
        log.publish(batch);
        log.publish(vec![put(5)]);
        assert_eq!(versions(log.read_after(Version(0), 2)), vec![1, 2, 3, 4]);
    }

    #[test]
    fn listeners_hear_the_new_current_version() {
        let log = ChangeLog::new(Version(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        log.subscribe(Arc::new(move |v| s.lock().push(v.0)));
        log.publish(vec![put(2)]);
        log.publish(vec![put(1)]);
        assert_eq!(*seen.lock(), vec![2]);
    }
}
