//! The ordered key index: every key of an engine in byte order, beside the engine's hash index,
//! so that a prefix or range page costs O(log n + page) instead of a scan of every key.
//!
//! Shared by both engines. It holds keys only: locations and values stay in the hash index,
//! which a listing asks for liveness (expiry) of the keys it is about to return.
//!
//! # Layout (in memory only, never written to disk)
//! Keys are kept in sorted blocks of at most [`BLOCK_MAX`] bytes, each front-coded: an entry is
//! `shared varint | suffix_len varint | suffix`, where `shared` is the length of the prefix the
//! key has in common with the previous key of the block (0 for a block's first key). A
//! `BTreeMap` maps each block's fence (a key <= the block's first key and > the previous
//! block's last key) to the block. Keys with common prefixes (`users/42/...`) therefore cost
//! a few bytes each; the map adds one fence key and a node slot per block (~30 keys). A fence
//! also keeps its first 8 bytes inline as a number, so that searching or walking the map
//! rarely follows a fence's pointer (a cache miss each on a large index).
//!
//! Chosen by measurement against a `BTreeSet<Box<[u8]>>` (key + ~40 B per key) and a per-key
//! skip list (more): see `docs/benchmarks.md`, "ordered index".
//!
//! # Concurrency and the cost to writers
//! Writers do not touch the blocks: creating or removing a key appends the operation to a
//! queue (a mutex and a `Vec` push, from inside the writer's hash shard lock), so a PUT of a
//! new key costs the writer about what it did without this index. The queue is applied to the
//! blocks, sorted by key and with only the last operation per key kept (membership is all that
//! matters), by a drainer thread once [`WAKE_AT`] operations (or two per block on a large
//! index, so a batch of random keys shares each block's cache misses) are queued, by any
//! reader before it reads (so a listing always sees every write made before it), and by a
//! writer itself when the queue reaches [`DRAIN_INLINE_AT`] (back-pressure, so the queue stays
//! bounded). A batch is applied in one walk of the map, each touched block edited once per run
//! of keys (see `Blocks::apply_sorted`).
//!
//! The drain's work is not free: on this 2-core machine it is about as much CPU per new key as
//! the rest of a PUT (`docs/benchmarks.md`, issue 16), so where both cores are busy a PUT of a
//! new key is slower than without the index.
//!
//! Locks: the blocks' `RwLock`, then the queue's mutex (a drain takes the blocks first, so two
//! drains apply their batches in queue order). Writers take only the queue's mutex, under their
//! shard's lock; readers hold no shard lock while they hold these (see [`crate::listing`]).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

/// A block is split when it grows past this many bytes.
pub const BLOCK_MAX: usize = 1024;
/// Queued operations that wake the drainer thread, at least.
pub const WAKE_AT: usize = 4096;
/// On a larger index the drainer waits for this many operations per block (up to
/// [`WAKE_MAX`]): a batch of random keys then touches most blocks, so the walk of the map and
/// each block's cache misses are shared by several keys.
const WAKE_PER_BLOCK: usize = 2;
/// The most queued operations the drainer waits for.
const WAKE_MAX: usize = 1 << 17;
/// Queued operations at which a writer applies the queue itself.
pub const DRAIN_INLINE_AT: usize = 1 << 18;

/// A batch applied to at most one block in this many is applied a key at a time (a map search
/// each) rather than by a walk of the map.
const SPARSE_RATIO: usize = 32;

/// The largest queue buffer a drain keeps for the writers to reuse.
const SPARE_MAX: usize = 1 << 20;

const OP_INSERT: u8 = 1;
const OP_REMOVE: u8 = 2;

/// Keys in byte order. See the module documentation.
#[derive(Default)]
pub struct OrderedKeys {
    shared: Arc<Shared>,
    drainer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Shared {
    blocks: RwLock<Blocks>,
    queue: Mutex<Queue>,
    wake: Condvar,
    stop: AtomicBool,
    /// The drainer's batch size beyond [`WAKE_AT`], set from the block count by each drain.
    wake_at: AtomicUsize,
}

/// Operations not yet applied: `op u8 | key_len u32 LE | key`, in the order made.
#[derive(Default)]
struct Queue {
    ops: Vec<u8>,
    count: usize,
}

impl Shared {
    /// Queued operations that wake the drainer.
    fn wake_threshold(&self) -> usize {
        self.wake_at.load(Ordering::Relaxed).max(WAKE_AT)
    }

    /// Applies every queued operation to the blocks.
    fn drain(&self) {
        let mut blocks = self.blocks.write();
        self.drain_into(&mut blocks);
    }

    fn drain_into(&self, blocks: &mut Blocks) {
        let q_count;
        let mut ops = {
            let mut q = self.queue.lock();
            if q.count == 0 {
                return;
            }
            q_count = q.count;
            q.count = 0;
            // The writers go on with the buffer the previous drain emptied (no regrowth).
            let spare = std::mem::take(&mut blocks.spare);
            std::mem::replace(&mut q.ops, spare)
        };
        let last = sorted_last_ops(&ops, q_count);
        blocks.apply_sorted(&last);
        self.wake_at.store(
            (blocks.map.len() * WAKE_PER_BLOCK).min(WAKE_MAX),
            Ordering::Relaxed,
        );
        drop(last);
        // Kept unless a large batch (a lagging drainer) grew it: that memory goes back.
        if ops.capacity() <= SPARE_MAX {
            ops.clear();
            blocks.spare = ops;
        }
    }
}

/// The operation queued at `pos` of a queue buffer and its key.
fn op_at(ops: &[u8], pos: usize) -> (u8, &[u8]) {
    let len = u32::from_le_bytes([ops[pos + 1], ops[pos + 2], ops[pos + 3], ops[pos + 4]]) as usize;
    (ops[pos], &ops[pos + 5..pos + 5 + len])
}

/// The queued operations (`count` of them) sorted by key, with only the last one made on each
/// key kept (membership is all that matters).
///
/// Sorted as numbers first: (first 8 key bytes big-endian, position in the queue) packed in a
/// `u128`, which orders by key wherever the first 8 bytes differ and keeps queue order among
/// equal ones; only runs with equal first 8 bytes are then sorted by their whole key.
fn sorted_last_ops(ops: &[u8], count: usize) -> Vec<(&[u8], u8)> {
    let mut order: Vec<u128> = Vec::with_capacity(count);
    let mut pos = 0;
    while pos < ops.len() {
        let (_, key) = op_at(ops, pos);
        order.push((u128::from(head(key)) << 64) | pos as u128);
        pos += 5 + key.len();
    }
    order.sort_unstable();
    let at = |x: u128| op_at(ops, (x as u64) as usize);
    let mut last: Vec<(&[u8], u8)> = Vec::with_capacity(order.len());
    let mut run: Vec<(&[u8], usize, u8)> = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let h = order[i] >> 64;
        let mut j = i + 1;
        while j < order.len() && order[j] >> 64 == h {
            j += 1;
        }
        if j == i + 1 {
            let (op, key) = at(order[i]);
            last.push((key, op));
        } else {
            run.clear();
            run.extend(order[i..j].iter().map(|&x| {
                let (op, key) = at(x);
                (key, (x as u64) as usize, op)
            }));
            // Stable by key: queue order is kept among a key's operations.
            run.sort_by(|a, b| a.0.cmp(b.0));
            for (k, &(key, _, op)) in run.iter().enumerate() {
                if run.get(k + 1).is_none_or(|n| n.0 != key) {
                    last.push((key, op));
                }
            }
        }
        i = j;
    }
    last
}

impl Drop for OrderedKeys {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _q = self.shared.queue.lock();
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.drainer.lock().take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for OrderedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderedKeys")
            .field("keys", &self.len())
            .finish()
    }
}

/// A block's fence: its key, with the first 8 bytes also kept inline as a big-endian number, so
/// that most comparisons of a search or a walk of the map never follow the key's pointer (on a
/// large index each such pointer is a cache miss).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fence {
    head: u64,
    key: Box<[u8]>,
}

/// The first 8 bytes of `key` as a big-endian number, zero-padded: `a < b` implies
/// `head(a) <= head(b)`, so ordering by (head, key) is ordering by key.
fn head(key: &[u8]) -> u64 {
    let mut h = [0u8; 8];
    let n = key.len().min(8);
    h[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(h)
}

impl Fence {
    fn new(key: &[u8]) -> Self {
        Fence {
            head: head(key),
            key: key.into(),
        }
    }

    /// This fence against a key.
    fn cmp_key(&self, key: &[u8]) -> std::cmp::Ordering {
        self.head.cmp(&head(key)).then_with(|| (*self.key).cmp(key))
    }
}

impl Ord for Fence {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head
            .cmp(&other.head)
            .then_with(|| self.key.cmp(&other.key))
    }
}

impl PartialOrd for Fence {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Default)]
struct Blocks {
    map: BTreeMap<Fence, Vec<u8>>,
    len: usize,
    /// Reused by [`block_insert`].
    scratch: Vec<u8>,
    /// The queue's buffer from the previous drain, emptied, handed back to the writers.
    spare: Vec<u8>,
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `pos`; the blocks are written only by this module, so they are trusted.
#[inline]
fn get_varint(buf: &[u8], mut pos: usize) -> (usize, usize) {
    let first = buf[pos];
    if first < 0x80 {
        return (usize::from(first), pos + 1);
    }
    let mut v = 0usize;
    let mut shift = 0;
    loop {
        let b = buf[pos];
        pos += 1;
        v |= usize::from(b & 0x7F) << shift;
        if b < 0x80 {
            return (v, pos);
        }
        shift += 7;
    }
}

fn encode(out: &mut Vec<u8>, shared: usize, suffix: &[u8]) {
    put_varint(out, shared);
    put_varint(out, suffix.len());
    out.extend_from_slice(suffix);
}

fn lcp(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Walks a block's entries, rebuilding each full key in `key`.
struct Walk<'a> {
    data: &'a [u8],
    pos: usize,
    key: Vec<u8>,
}

/// One decoded entry: where it lies in the block and its stored `shared` length.
#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    end: usize,
    shared: usize,
}

impl<'a> Walk<'a> {
    fn new(data: &'a [u8]) -> Self {
        Walk {
            data,
            pos: 0,
            key: Vec::new(),
        }
    }

    /// Advances to the next entry; its full key is then in `self.key`.
    fn advance(&mut self) -> Option<Entry> {
        if self.pos >= self.data.len() {
            return None;
        }
        let start = self.pos;
        let (shared, p) = get_varint(self.data, start);
        let (slen, p) = get_varint(self.data, p);
        self.key.truncate(shared);
        self.key.extend_from_slice(&self.data[p..p + slen]);
        self.pos = p + slen;
        Some(Entry {
            start,
            end: self.pos,
            shared,
        })
    }
}

/// Grows `v` for `extra` more bytes by an eighth at least (blocks are small and many: doubling
/// would waste a third of the index on average).
fn reserve(v: &mut Vec<u8>, extra: usize) {
    if v.capacity() - v.len() < extra {
        v.reserve_exact(extra.max(v.len() / 8).max(32));
    }
}

/// Inserts `key` into a block: `None` when already there, else whether it went at the end.
///
/// Walks the entries without rebuilding their keys: `m` is the length `key` shares with the
/// previous entry, which is below `key`. An entry sharing more than `m` bytes with the previous
/// one is below `key` too (it agrees with the previous entry where that one was below `key`);
/// otherwise its first `shared` bytes are `key`'s and only its suffix needs comparing.
/// `scratch` is a buffer reused between calls (no allocation per key).
fn block_insert(data: &mut Vec<u8>, key: &[u8], scratch: &mut Vec<u8>) -> Option<bool> {
    let (inserted, after) = block_insert_at(data, key, 0, 0, scratch);
    inserted.then_some(after == data.len())
}

/// [`block_insert`] from the entry at `pos`, which follows a key below `key` sharing exactly
/// `m` bytes with it (or is the first entry, with `m` 0). Returns whether `key` was inserted
/// (false: already there) and where the entry after `key`'s begins, so that a sorted run of
/// keys into one block resumes there instead of walking the block again.
fn block_insert_at(
    data: &mut Vec<u8>,
    key: &[u8],
    mut pos: usize,
    mut m: usize,
    scratch: &mut Vec<u8>,
) -> (bool, usize) {
    // The entry above `key`: its span, and where its tail (bytes past `key`'s lcp) starts.
    let mut at = None;
    while pos < data.len() {
        let (shared, p) = get_varint(data, pos);
        let (slen, p) = get_varint(data, p);
        let end = p + slen;
        if shared > m {
            pos = end;
            continue;
        }
        let suffix = &data[p..end];
        let rest = &key[shared..];
        // Most entries differ from `key` at their first suffix byte.
        if let (Some(&a), Some(&b)) = (suffix.first(), rest.first())
            && a != b
        {
            if a < b {
                m = shared;
                pos = end;
                continue;
            }
            at = Some((pos, end, shared, p));
            break;
        }
        let c = lcp(suffix, rest);
        if c == suffix.len() {
            if c == rest.len() {
                return (false, end);
            }
            // The entry is a proper prefix of `key`: below it.
            m = shared + c;
            pos = end;
            continue;
        }
        if c < rest.len() && suffix[c] < rest[c] {
            m = shared + c;
            pos = end;
            continue;
        }
        at = Some((pos, end, shared + c, p + c));
        break;
    }
    scratch.clear();
    encode(scratch, m, &key[m..]);
    let key_entry = scratch.len();
    match at {
        Some((start, end, next_lcp, tail)) => {
            // The next entry is now coded against `key`: they share `next_lcp` bytes.
            encode(scratch, next_lcp, &data[tail..end]);
            let old = end - start;
            let grow = scratch.len() - old;
            reserve(data, grow);
            let len = data.len();
            data.resize(len + grow, 0);
            data.copy_within(end..len, end + grow);
            data[start..start + scratch.len()].copy_from_slice(scratch);
            (true, start + key_entry)
        }
        None => {
            reserve(data, scratch.len());
            data.extend_from_slice(scratch);
            (true, data.len())
        }
    }
}

/// Applies `ops` (sorted by key, one per key, all within this block's range) to a block: a run
/// of inserts resumes each walk where the previous key went. A block that grew past
/// [`BLOCK_MAX`] is cut: in halves when just over, else into parts of 3/4 of a block (a sorted
/// run appended at once), pushed to `added`. Returns the change in key count.
fn block_apply(
    data: &mut Vec<u8>,
    ops: &[(&[u8], u8)],
    scratch: &mut Vec<u8>,
    added: &mut Vec<(Fence, Vec<u8>)>,
) -> isize {
    let mut delta = 0;
    let mut pos = 0;
    let mut prev: Option<&[u8]> = None;
    for &(key, op) in ops {
        if op == OP_INSERT {
            let m = prev.map_or(0, |p| lcp(p, key));
            let (inserted, after) = block_insert_at(data, key, pos, m, scratch);
            if inserted {
                delta += 1;
            }
            pos = after;
            prev = Some(key);
        } else {
            if block_remove(data, key) {
                delta -= 1;
            }
            pos = 0;
            prev = None;
        }
    }
    if data.len() > BLOCK_MAX {
        let at = |len: usize| (len / 2).min(BLOCK_MAX * 3 / 4);
        let mut rest = block_split(data, at(data.len()));
        while let Some(mut part) = rest.take() {
            if part.1.len() > BLOCK_MAX {
                let cut = at(part.1.len());
                rest = block_split(&mut part.1, cut);
            }
            added.push(part);
        }
    }
    delta
}

/// Removes `key` from a block; false when absent.
fn block_remove(data: &mut Vec<u8>, key: &[u8]) -> bool {
    let mut walk = Walk::new(data);
    let mut found = None;
    while let Some(e) = walk.advance() {
        match walk.key.as_slice().cmp(key) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                found = Some(e);
                break;
            }
            std::cmp::Ordering::Greater => return false,
        }
    }
    let Some(gone) = found else {
        return false;
    };
    let removed_key = walk.key.clone();
    match walk.advance() {
        None => data.truncate(gone.start),
        Some(next) => {
            // prev < gone < next, so lcp(prev, next) = min(lcp(prev, gone), lcp(gone, next)).
            let shared = gone.shared.min(next.shared);
            let mut rep = Vec::with_capacity(walk.key.len() - shared + 8);
            encode(&mut rep, shared, &walk.key[shared..]);
            debug_assert_eq!(&removed_key[..shared], &walk.key[..shared]);
            data.splice(gone.start..next.end, rep);
        }
    }
    true
}

/// Splits a block in two at the first entry starting at or after `at` bytes; returns the new
/// right block's fence and data (`None` if there is no such entry).
fn block_split(data: &mut Vec<u8>, at: usize) -> Option<(Fence, Vec<u8>)> {
    let mut walk = Walk::new(data);
    let mut first = true;
    while let Some(e) = walk.advance() {
        if e.start >= at && !first {
            let mut right = Vec::with_capacity(data.len() - e.start + walk.key.len() + 16);
            encode(&mut right, 0, &walk.key);
            right.extend_from_slice(&data[e.end..]);
            let fence = Fence::new(&walk.key);
            data.truncate(e.start);
            data.shrink_to(data.len() + data.len() / 8);
            return Some((fence, right));
        }
        first = false;
    }
    None
}

impl Blocks {
    fn insert(&mut self, key: &[u8]) -> bool {
        let found = self.map.range_mut(..=Fence::new(key)).next_back();
        let split = match found {
            Some((_, data)) => {
                let Some(at_end) = block_insert(data, key, &mut self.scratch) else {
                    return false;
                };
                // An append at a block's end (sequential loads) splits near the end, so the
                // left block stays nearly full.
                if data.len() > BLOCK_MAX {
                    let at = if at_end {
                        data.len() * 7 / 8
                    } else {
                        data.len() / 2
                    };
                    block_split(data, at)
                } else {
                    None
                }
            }
            None => {
                // Smaller than every fence: it becomes the first key of the first block,
                // whose fence moves down to it.
                let mut data = match self.map.pop_first() {
                    Some((_, d)) => d,
                    None => Vec::with_capacity(64),
                };
                block_insert(&mut data, key, &mut self.scratch);
                let split = if data.len() > BLOCK_MAX {
                    let half = data.len() / 2;
                    block_split(&mut data, half)
                } else {
                    None
                };
                self.map.insert(Fence::new(key), data);
                split
            }
        };
        self.len += 1;
        if let Some((fence, right)) = split {
            self.map.insert(fence, right);
        }
        true
    }

    /// Applies operations sorted by key (one per key). A batch that is sparse beside the number
    /// of blocks is applied one key at a time (a map search and a block edit each); a denser one
    /// in one pass: a cursor walks the map forward instead of a search per key and each block
    /// gets its operations in one [`block_apply`], so a batch costs a walk of the map plus
    /// about one pass over each block it touches.
    fn apply_sorted(&mut self, ops: &[(&[u8], u8)]) {
        if ops.len().saturating_mul(SPARSE_RATIO) < self.map.len() {
            for &(key, op) in ops {
                if op == OP_INSERT {
                    self.insert(key);
                } else {
                    self.remove(key);
                }
            }
            return;
        }
        // Keys below the first fence move it: the one-at-a-time path handles them.
        let mut start = 0;
        while let Some(&(key, op)) = ops.get(start) {
            let below = self
                .map
                .first_key_value()
                .is_none_or(|(f, _)| f.cmp_key(key).is_gt());
            if !below {
                break;
            }
            if op == OP_INSERT {
                self.insert(key);
            } else {
                self.remove(key);
            }
            start += 1;
        }
        let ops = &ops[start..];
        let Some(&(first, _)) = ops.first() else {
            return;
        };
        let Some(first_fence) = self
            .map
            .range(..=Fence::new(first))
            .next_back()
            .map(|(f, _)| f.clone())
        else {
            return;
        };
        let mut added: Vec<(Fence, Vec<u8>)> = Vec::new();
        let mut emptied: Vec<Fence> = Vec::new();
        let mut delta: isize = 0;
        let mut i = 0;
        let mut blocks = self.map.range_mut(first_fence..).peekable();
        while i < ops.len() {
            let Some((fence, data)) = blocks.next() else {
                break;
            };
            let upper: Option<&Fence> = blocks.peek().map(|(f, _)| *f);
            // The operations below the next fence (a short forward scan: they are few per
            // block, and the total over the walk is the batch).
            let n = match upper {
                None => ops.len() - i,
                Some(u) => ops[i..]
                    .iter()
                    .take_while(|(k, _)| u.cmp_key(k).is_gt())
                    .count(),
            };
            if n == 0 {
                continue;
            }
            delta += block_apply(data, &ops[i..i + n], &mut self.scratch, &mut added);
            i += n;
            if data.is_empty() {
                emptied.push(fence.clone());
            }
        }
        drop(blocks);
        self.len = self.len.saturating_add_signed(delta);
        for f in emptied {
            self.map.remove(&f);
        }
        for (f, d) in added {
            self.map.insert(f, d);
        }
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        let Some((fence, data)) = self.map.range_mut(..=Fence::new(key)).next_back() else {
            return false;
        };
        if !block_remove(data, key) {
            return false;
        }
        self.len -= 1;
        if data.is_empty() {
            let fence = fence.clone();
            self.map.remove(&fence);
        }
        true
    }

    /// Appends to `out` up to `max` keys within `(lower, upper)`, in order. Returns true when
    /// it stopped because `out` held `max` keys (more may follow).
    fn collect(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        max: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        let first_fence = match lower {
            Bound::Included(k) | Bound::Excluded(k) => self
                .map
                .range(..=Fence::new(k))
                .next_back()
                .map(|(f, _)| f.clone()),
            Bound::Unbounded => None,
        };
        let blocks = match &first_fence {
            Some(f) => self.map.range(f.clone()..),
            None => self.map.range(..),
        };
        for (_, data) in blocks {
            let mut walk = Walk::new(data);
            while walk.advance().is_some() {
                let k = walk.key.as_slice();
                let above_lower = match lower {
                    Bound::Included(l) => k >= l,
                    Bound::Excluded(l) => k > l,
                    Bound::Unbounded => true,
                };
                if !above_lower {
                    continue;
                }
                let below_upper = match upper {
                    Bound::Included(u) => k <= u,
                    Bound::Excluded(u) => k < u,
                    Bound::Unbounded => true,
                };
                if !below_upper {
                    return false;
                }
                if out.len() >= max {
                    return true;
                }
                out.push(k.to_vec());
            }
        }
        false
    }
}

impl OrderedKeys {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` (queued; see the module documentation). The caller knows it is new.
    pub fn insert(&self, key: &[u8]) {
        self.queue(OP_INSERT, key);
    }

    /// Removes `key` (queued).
    pub fn remove(&self, key: &[u8]) {
        self.queue(OP_REMOVE, key);
    }

    fn queue(&self, op: u8, key: &[u8]) {
        let n = {
            let mut q = self.shared.queue.lock();
            q.ops.push(op);
            q.ops.extend_from_slice(&(key.len() as u32).to_le_bytes());
            q.ops.extend_from_slice(key);
            q.count += 1;
            q.count
        };
        if n == self.shared.wake_threshold() {
            self.wake_drainer();
        } else if n >= DRAIN_INLINE_AT {
            self.shared.drain();
        }
    }

    /// Wakes the drainer thread, starting it the first time (small indexes never start one).
    fn wake_drainer(&self) {
        let mut d = self.drainer.lock();
        if d.is_none() {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("hoardhaven-order".into())
                .spawn(move || drainer(&shared));
            match spawned {
                Ok(h) => *d = Some(h),
                // Without the thread, readers and the back-pressure limit still drain.
                Err(e) => tracing::warn!(error = %e, "could not start the ordered-index drainer"),
            }
            return;
        }
        drop(d);
        let _q = self.shared.queue.lock();
        self.shared.wake.notify_one();
    }

    /// Appends to `out` up to `max` keys between `lower` and `upper`, in ascending order, and
    /// says whether it stopped at `max` (more keys in range may follow the last one).
    pub fn collect(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        max: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        if self.shared.queue.lock().count > 0 {
            self.shared.drain();
        }
        self.shared.blocks.read().collect(lower, upper, max, out)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.shared.drain();
        self.shared.blocks.read().len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every key.
    pub fn clear(&self) {
        let mut b = self.shared.blocks.write();
        *self.shared.queue.lock() = Queue::default();
        *b = Blocks::default();
    }

    /// Replaces the contents (queued operations included) with `keys`, which must be sorted and
    /// free of duplicates (start-up builds the index in one pass instead of a key at a time).
    /// Blocks are filled to 7/8.
    pub fn load_sorted<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        let mut b = Blocks::default();
        let mut data: Vec<u8> = Vec::new();
        let mut fence: Option<Fence> = None;
        let mut prev: &[u8] = &[];
        for key in keys {
            if data.len() >= BLOCK_MAX * 7 / 8
                && let Some(f) = fence.take()
            {
                data.shrink_to_fit();
                b.map.insert(f, std::mem::take(&mut data));
            }
            if fence.is_none() {
                fence = Some(Fence::new(key));
                data.reserve_exact(BLOCK_MAX + 64);
                encode(&mut data, 0, key);
            } else {
                let m = lcp(prev, key);
                encode(&mut data, m, &key[m..]);
            }
            prev = key;
            b.len += 1;
        }
        if let Some(f) = fence {
            data.shrink_to_fit();
            b.map.insert(f, data);
        }
        let mut blocks = self.shared.blocks.write();
        *self.shared.queue.lock() = Queue::default();
        *blocks = b;
    }

    /// Bytes of memory held: block buffers, fences and the map's nodes (estimated as two
    /// pointers and a length per block, over a node fill of about 2/3).
    pub fn memory_bytes(&self) -> usize {
        let buffers =
            self.shared.blocks.read().spare.capacity() + self.shared.queue.lock().ops.capacity();
        self.block_bytes() + buffers
    }

    /// Heap bytes of the blocks and their map alone, without the queue's two buffers (each
    /// bounded by `SPARE_MAX` once drained, and as large as the drainer's timing made them).
    fn block_bytes(&self) -> usize {
        let b = self.shared.blocks.read();
        let per_slot = std::mem::size_of::<Fence>() + std::mem::size_of::<Vec<u8>>();
        b.map
            .iter()
            .map(|(f, d)| f.key.len() + d.capacity() + per_slot * 3 / 2)
            .sum()
    }
}

/// The drainer thread: applies the queue whenever [`WAKE_AT`] operations wait, until the
/// index is dropped.
fn drainer(shared: &Shared) {
    loop {
        {
            let mut q = shared.queue.lock();
            while q.count < shared.wake_threshold() && !shared.stop.load(Ordering::Acquire) {
                shared.wake.wait(&mut q);
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        shared.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn all(o: &OrderedKeys) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        o.collect(Bound::Unbounded, Bound::Unbounded, usize::MAX, &mut out);
        out
    }

    /// A small deterministic generator (xorshift), so the test needs no extra dependency.
    fn next(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn agrees_with_a_btreeset_through_churn_and_splits() {
        let o = OrderedKeys::new();
        let mut model = BTreeSet::new();
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..60_000u32 {
            let r = next(&mut s);
            let key = match r % 4 {
                0 => format!("user/{}/{}", r % 97, r % 1013).into_bytes(),
                1 => vec![(r % 3) as u8; (r % 40) as usize + 1],
                2 => format!("seq-{i:08}").into_bytes(),
                _ => (r % 100_000).to_be_bytes().to_vec(),
            };
            // As the engines do: an insert only of an absent key, a remove of a present one.
            if next(&mut s).is_multiple_of(3) {
                if model.remove(&key) {
                    o.remove(&key);
                }
            } else if model.insert(key.clone()) {
                o.insert(&key);
            }
            if i % 7919 == 0 {
                assert_eq!(all(&o), model.iter().cloned().collect::<Vec<_>>());
            }
        }
        assert_eq!(o.len(), model.len());
        assert_eq!(all(&o), model.iter().cloned().collect::<Vec<_>>());
        // Ranges: every bound kind against the model.
        for _ in 0..500 {
            let a = (next(&mut s) % 100_000).to_be_bytes().to_vec();
            let b = format!("user/{}", next(&mut s) % 97).into_bytes();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let mut got = Vec::new();
            let more = o.collect(Bound::Excluded(&lo), Bound::Excluded(&hi), 37, &mut got);
            let want: Vec<_> = model
                .range::<Vec<u8>, _>((Bound::Excluded(&lo), Bound::Excluded(&hi)))
                .cloned()
                .collect();
            assert_eq!(got, want.iter().take(37).cloned().collect::<Vec<_>>());
            assert_eq!(more, want.len() > 37);
            let mut got = Vec::new();
            o.collect(Bound::Included(&lo), Bound::Included(&hi), 1000, &mut got);
            let want: Vec<_> = model
                .range(lo.clone()..=hi.clone())
                .take(1000)
                .cloned()
                .collect();
            assert_eq!(got, want);
        }
        for k in model.iter() {
            o.remove(k);
        }
        assert!(o.is_empty());
        assert!(all(&o).is_empty());
    }

    #[test]
    fn sorted_load_equals_inserts() {
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("k/{i:06}").into_bytes())
            .collect();
        let a = OrderedKeys::new();
        a.load_sorted(keys.iter().map(Vec::as_slice));
        assert_eq!(all(&a), keys);
        assert_eq!(a.len(), keys.len());
        a.insert(b"k/0000005");
        a.remove(b"k/000005");
        assert_eq!(a.len(), keys.len());
        let mut want = keys.clone();
        want.retain(|k| k != b"k/000005");
        want.push(b"k/0000005".to_vec());
        want.sort();
        assert_eq!(all(&a), want);
    }

    #[test]
    fn the_queue_keeps_each_keys_last_operation() {
        let o = OrderedKeys::new();
        // Enough operations to wake the drainer and to hit the inline limit.
        for round in 0..3u32 {
            for i in 0..(DRAIN_INLINE_AT as u32 / 2) {
                let k = format!("q{:07}", i % 50_000);
                if (i / 50_000 + round) % 2 == 0 {
                    o.insert(k.as_bytes());
                } else {
                    o.remove(k.as_bytes());
                }
            }
        }
        // 131072 ops per round: keys 0..31072 saw the last op of block 2 (i/50000 = 2), the
        // rest that of block 1; rounds alternate which of those is an insert.
        let want: Vec<Vec<u8>> = (0..50_000u32)
            .filter(|i| {
                let last_block = if *i < 31_072 { 2 } else { 1 };
                (last_block + 2) % 2 == 0
            })
            .map(|i| format!("q{i:07}").into_bytes())
            .collect();
        assert_eq!(all(&o), want);
    }

    /// Checks the blocks' invariants (no empty block, fences at or below each block's first
    /// key and above the previous block's last, keys strictly ascending, each `shared` the
    /// exact common prefix with the previous key) and returns every key in order.
    fn checked_keys(b: &Blocks) -> Vec<Vec<u8>> {
        let fences: Vec<&[u8]> = b.map.keys().map(|f| &*f.key).collect();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for (j, (fence, data)) in b.map.iter().enumerate() {
            assert!(!data.is_empty(), "empty block at fence {fence:?}");
            let mut walk = Walk::new(data);
            let mut first = true;
            while let Some(e) = walk.advance() {
                if first {
                    assert_eq!(e.shared, 0);
                    assert!(*fence.key <= *walk.key, "fence above the block's first key");
                    assert_eq!(fence.head, head(&fence.key));
                    first = false;
                } else {
                    let prev = keys.last().expect("previous key");
                    assert_eq!(e.shared, lcp(prev, &walk.key), "shared is not exact");
                }
                if let Some(prev) = keys.last() {
                    assert!(*prev < walk.key, "keys out of order");
                }
                if let Some(next) = fences.get(j + 1) {
                    assert!(
                        walk.key.as_slice() < *next,
                        "key at or above the next fence"
                    );
                }
                keys.push(walk.key.clone());
            }
        }
        assert_eq!(keys.len(), b.len);
        keys
    }

    #[test]
    fn batches_applied_in_one_pass_agree_with_a_btreeset() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut b = Blocks::default();
        let mut model = BTreeSet::new();
        for i in 0..20_000u64 {
            let k = (next(&mut s) % 60_000).to_be_bytes().to_vec();
            if model.insert(k.clone()) {
                b.insert(&k);
            }
            if i == 0 {
                assert_eq!(checked_keys(&b), vec![k]);
            }
        }
        let mut seq = 60_000u64;
        // Batch sizes on both sides of the sparse limit; every key family in each batch.
        for (round, size) in [1usize, 10, 500, 5000, 40, 20_000, 3, 2000, 9000, 700]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            let mut ops: Vec<(Vec<u8>, u8)> = Vec::new();
            for _ in 0..size {
                let r = next(&mut s);
                let key = match r % 8 {
                    // Present or absent keys among the loaded ones.
                    0..=3 => (r % 60_000).to_be_bytes().to_vec(),
                    // A sorted run past the end (many keys into the last block).
                    4 => {
                        seq += 1;
                        seq.to_be_bytes().to_vec()
                    }
                    // Below every key (moves the first fence).
                    5 => vec![0, 0, (r % 7) as u8],
                    // Long keys, a few per block, sharing prefixes with the loaded keys.
                    6 => {
                        let mut k = (r % 60_000).to_be_bytes().to_vec();
                        k.extend(std::iter::repeat_n(b'x', (r % 300) as usize));
                        k
                    }
                    _ => (r % 60_000).to_be_bytes()[..(r % 8) as usize].to_vec(),
                };
                let op = if (r >> 40).is_multiple_of(3) || round % 9 == 8 {
                    OP_REMOVE
                } else {
                    OP_INSERT
                };
                ops.push((key, op));
            }
            // As a drain does: sorted, the last operation per key.
            ops.reverse();
            ops.sort_by(|a, b| a.0.cmp(&b.0));
            ops.dedup_by(|a, b| a.0 == b.0);
            for (k, op) in &ops {
                if *op == OP_INSERT {
                    model.insert(k.clone());
                } else {
                    model.remove(k);
                }
            }
            let batch: Vec<(&[u8], u8)> = ops.iter().map(|(k, op)| (k.as_slice(), *op)).collect();
            b.apply_sorted(&batch);
            let got = checked_keys(&b);
            assert!(
                got == model.iter().cloned().collect::<Vec<_>>(),
                "round {round}, batch of {size}: {} keys, model {}",
                got.len(),
                model.len()
            );
        }
        assert!(b.map.len() > 100, "{} blocks only", b.map.len());
    }

    #[test]
    fn sequential_keys_cost_a_few_bytes_each() {
        let o = OrderedKeys::new();
        for i in 0..100_000u32 {
            o.insert(format!("key-{i:010}").as_bytes());
        }
        assert_eq!(o.len(), 100_000);
        // The blocks only: the queue's buffers are up to 2 MiB whatever the key count, and
        // their size at this point depends on when the drainer last ran (CI saw 10.1 B/key).
        let per_key = o.block_bytes() as f64 / 100_000.0;
        assert!(per_key < 10.0, "{per_key} bytes per key");
    }
}
