//! The keydir: the in-memory hash index from key to the location of its newest record.
//!
//! Built for memory first (the target is at most key length + 32 bytes per key at 10 M keys):
//!
//! - 64 shards, each behind its own `RwLock`, so readers on different keys rarely meet and a
//!   reader never waits for the data-file writer.
//! - Each shard keeps its keys and locations packed in an arena of 64 KiB pages; one entry is
//!   `[file u32][offset u32][len u32][expiry_s u32][key_len u16][key]`, 18 bytes + the key,
//!   with no per-key heap allocation. An entry larger than a page gets a page of its own.
//!   A position is `page << 16 | offset`.
//! - The hash table itself holds only a `u32` arena position per key (plus hashbrown's one
//!   control byte), about 5–9 bytes per key depending on load.
//!
//! - Beside the hash table, an [`OrderedKeys`] index keeps every key in byte order for listings;
//!   it changes only when a key is created or removed (under that key's shard lock), never on
//!   an overwrite, so point writes of existing keys do not touch it.
//!
//! The record's version is not kept here: it is in the record header, read with the value.
//! Expiry is kept in whole seconds (rounded up), enough to skip expired keys in listings; reads
//! check the exact millisecond expiry in the header. Deleted entries leave holes in the arena;
//! a shard rewrites its arena when more than half of it is holes.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::RwLock;

use crate::ListPage;
use crate::listing::{self, KeyRange};
use crate::ordered::OrderedKeys;

const SHARDS: usize = 64;
const PAGE_BITS: u32 = 16;
const PAGE_SIZE: usize = 1 << PAGE_BITS;
const ENTRY_FIXED: usize = 18;
/// Most keys [`Keydir::replace_if_many`] switches under one hold of a shard's write lock.
const REPLACE_RUN: usize = 32;
/// One switch of [`Keydir::replace_if_many`]: where the key's entry was, the key, the expected
/// location, the new location.
pub type Switch<'k> = (Slot, &'k [u8], Loc, Loc);

/// The location left in a removed key's arena entry: no record has length 0.
const LOC_DEAD: Loc = Loc {
    file: u32::MAX,
    offset: u32::MAX,
    len: 0,
    expiry_s: 0,
};

/// Where a key's newest record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    /// Runtime number of the data file (see `files`).
    pub file: u32,
    /// Byte offset of the record in the file.
    pub offset: u32,
    /// Record length (header + key + value).
    pub len: u32,
    /// Expiry in whole seconds since the epoch, rounded up; 0 = never.
    pub expiry_s: u32,
}

impl Loc {
    /// True when expired at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expiry_s != 0 && u64::from(self.expiry_s) * 1000 <= now_ms
    }

    /// Converts a millisecond expiry to the keydir's rounded-up seconds.
    pub fn expiry_secs(expires_at_ms: u64) -> u32 {
        if expires_at_ms == 0 {
            0
        } else {
            u32::try_from(expires_at_ms.div_ceil(1000)).unwrap_or(u32::MAX)
        }
    }
}

#[derive(Default)]
struct Shard {
    table: HashTable<u32>,
    pages: Vec<Vec<u8>>,
    used: usize,
    dead: usize,
    /// Bumped whenever the arena is rewritten (entries move): a [`Slot`] taken under an older
    /// epoch no longer says where its entry is.
    epoch: u32,
}

/// Where a key's entry sat in the keydir's memory when [`Keydir::for_each_slot`] met it.
/// While its shard's arena is not rewritten the entry stays there (a removed key's entry is
/// marked dead in place), so [`Keydir::replace_if_many`] goes straight to it, in memory order,
/// instead of probing the hash table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    shard: u8,
    epoch: u32,
    pos: u32,
}

fn entry_at(pages: &[Vec<u8>], pos: u32) -> &[u8] {
    let page = &pages[(pos >> PAGE_BITS) as usize];
    &page[(pos as usize & (PAGE_SIZE - 1))..]
}

fn key_of(pages: &[Vec<u8>], pos: u32) -> &[u8] {
    let e = entry_at(pages, pos);
    let klen = u16::from_le_bytes([e[16], e[17]]) as usize;
    &e[ENTRY_FIXED..ENTRY_FIXED + klen]
}

fn loc_of(pages: &[Vec<u8>], pos: u32) -> Loc {
    let e = entry_at(pages, pos);
    let u = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
    Loc {
        file: u(0),
        offset: u(4),
        len: u(8),
        expiry_s: u(12),
    }
}

fn write_loc(pages: &mut [Vec<u8>], pos: u32, loc: Loc) {
    let page = &mut pages[(pos >> PAGE_BITS) as usize];
    let at = pos as usize & (PAGE_SIZE - 1);
    let e = &mut page[at..at + 16];
    e[0..4].copy_from_slice(&loc.file.to_le_bytes());
    e[4..8].copy_from_slice(&loc.offset.to_le_bytes());
    e[8..12].copy_from_slice(&loc.len.to_le_bytes());
    e[12..16].copy_from_slice(&loc.expiry_s.to_le_bytes());
}

/// Appends an entry to a shard's arena, returning its position.
fn append(pages: &mut Vec<Vec<u8>>, used: &mut usize, key: &[u8], loc: Loc) -> u32 {
    let need = ENTRY_FIXED + key.len();
    let fits = pages
        .last()
        .is_some_and(|p| p.capacity() - p.len() >= need && p.len() < PAGE_SIZE);
    if !fits {
        pages.push(Vec::with_capacity(PAGE_SIZE.max(need)));
    }
    let idx = pages.len() - 1;
    let page = &mut pages[idx];
    let pos = ((idx as u32) << PAGE_BITS) | page.len() as u32;
    page.extend_from_slice(&[0u8; 16]);
    page.extend_from_slice(&(key.len() as u16).to_le_bytes());
    page.extend_from_slice(key);
    write_loc(pages, pos, loc);
    *used += need;
    pos
}

impl Shard {
    /// Rewrites the arena without holes when holes are more than half of it.
    fn maybe_compact(&mut self, hasher: &DefaultHashBuilder) {
        if self.dead < PAGE_SIZE || self.dead * 2 < self.used {
            return;
        }
        let old = std::mem::take(&mut self.pages);
        self.epoch = self.epoch.wrapping_add(1);
        let positions: Vec<u32> = self.table.iter().copied().collect();
        self.used = 0;
        self.dead = 0;
        let mut table = HashTable::with_capacity(positions.len());
        for pos in positions {
            let key = key_of(&old, pos);
            let new_pos = append(&mut self.pages, &mut self.used, key, loc_of(&old, pos));
            let pages = &self.pages;
            table.insert_unique(hasher.hash_one(key), new_pos, |&p| {
                hasher.hash_one(key_of(pages, p))
            });
        }
        self.table = table;
    }
}

/// The sharded key -> location index.
pub struct Keydir {
    shards: Box<[RwLock<Shard>]>,
    hasher: DefaultHashBuilder,
    order: OrderedKeys,
    /// Set while start-up loads keys: the ordered index is built once at the end
    /// ([`Keydir::build_order`]) instead of a key at a time.
    order_deferred: AtomicBool,
}

impl Default for Keydir {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Keydir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keydir").field("keys", &self.len()).finish()
    }
}

impl Keydir {
    /// An empty keydir.
    pub fn new() -> Self {
        Keydir {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            hasher: DefaultHashBuilder::default(),
            order: OrderedKeys::new(),
            order_deferred: AtomicBool::new(false),
        }
    }

    /// An empty keydir whose ordered index is left empty until [`Keydir::build_order`]: for
    /// start-up, which loads every key before anyone lists.
    pub fn deferring_order() -> Self {
        let kd = Self::new();
        kd.order_deferred.store(true, Ordering::Relaxed);
        kd
    }

    /// Builds the ordered index from the hash shards (each sorted on its own thread, then
    /// merged) and ends the deferral. Called once, before the keydir is shared.
    pub fn build_order(&self) {
        if !self.order_deferred.load(Ordering::Acquire) {
            return;
        }
        let guards: Vec<_> = self.shards.iter().map(|s| s.read()).collect();
        let mut runs: Vec<Vec<&[u8]>> = guards
            .iter()
            .map(|g| g.table.iter().map(|&p| key_of(&g.pages, p)).collect())
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = runs.len().div_ceil(threads.max(1));
        std::thread::scope(|s| {
            for chunk in runs.chunks_mut(per.max(1)) {
                s.spawn(move || {
                    for run in chunk {
                        run.sort_unstable();
                    }
                });
            }
        });
        // A k-way merge of the sorted runs (keys are unique across shards).
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(&[u8], usize)>> = runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.first().map(|k| std::cmp::Reverse((*k, i))))
            .collect();
        let mut next = vec![1usize; runs.len()];
        let merged = std::iter::from_fn(|| {
            let std::cmp::Reverse((k, i)) = heap.pop()?;
            if let Some(n) = runs[i].get(next[i]) {
                heap.push(std::cmp::Reverse((*n, i)));
                next[i] += 1;
            }
            Some(k)
        });
        self.order.load_sorted(merged);
        self.order_deferred.store(false, Ordering::Release);
    }

    /// Which of the shards holds `key` (0..[`Keydir::shard_count`]): start-up partitions its
    /// work by shard so that threads never contend and each key keeps its file order.
    pub fn shard_index(&self, key: &[u8]) -> usize {
        ((self.hasher.hash_one(key) >> 32) as usize) % SHARDS
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        SHARDS
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // The top bits pick the shard; hashbrown uses the low bits and the top 7 for control.
        &self.shards[((hash >> 32) as usize) % SHARDS]
    }

    /// The location of `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<Loc> {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash).read();
        let pages = &shard.pages;
        shard
            .table
            .find(hash, |&p| key_of(pages, p) == key)
            .map(|&p| loc_of(pages, p))
    }

    /// Sets the location of `key`, returning the previous one.
    pub fn insert(&self, key: &[u8], loc: Loc) -> Option<Loc> {
        self.update(key, |_| Some(loc)).0
    }

    /// Removes `key`, returning its location.
    pub fn remove(&self, key: &[u8]) -> Option<Loc> {
        self.update(key, |_| None).0
    }

    /// Replaces the location of `key` with `new` only if it is still `expected` (merge's
    /// per-key switch: a write made during the merge is never undone). Returns true if done.
    pub fn replace_if(&self, key: &[u8], expected: Loc, new: Loc) -> bool {
        self.update(key, |cur| {
            if cur == Some(expected) {
                Some(new)
            } else {
                cur
            }
        })
        .1
    }

    /// [`Keydir::replace_if`] for many keys at once (merge's switch of a finished output),
    /// each with the [`Slot`] its entry had. The items are bucketed by shard and sorted by slot,
    /// and each shard's bucket is switched under its write lock, taken once per
    /// [`REPLACE_RUN`] keys so that a reader never waits long: an entry still at its slot
    /// holding the expected location is switched there (a walk of the arena in memory order,
    /// no hash probe); any other item (its shard's arena rewritten since, or the key changed)
    /// goes through the hash table as [`Keydir::replace_if`] would. Calls `replaced(item)` for
    /// each item switched.
    pub fn replace_if_many<'k>(&self, items: &[Switch<'k>], mut replaced: impl FnMut(&Switch<'k>)) {
        let mut start = [0usize; SHARDS + 1];
        for (slot, ..) in items {
            start[usize::from(slot.shard) + 1] += 1;
        }
        for i in 0..SHARDS {
            start[i + 1] += start[i];
        }
        let mut next = start;
        let mut bucketed: Vec<u32> = vec![0; items.len()];
        for (i, (slot, ..)) in items.iter().enumerate() {
            let at = &mut next[usize::from(slot.shard)];
            bucketed[*at] = i as u32;
            *at += 1;
        }
        for shard in 0..SHARDS {
            let bucket = &mut bucketed[start[shard]..start[shard + 1]];
            bucket.sort_unstable_by_key(|&i| items[i as usize].0.pos);
            for part in bucket.chunks(REPLACE_RUN) {
                let mut guard = self.shards[shard].write();
                let Shard {
                    table,
                    pages,
                    epoch,
                    ..
                } = &mut *guard;
                for &i in part {
                    let item = &items[i as usize];
                    let (slot, key, expected, new) = *item;
                    let at_slot = slot.epoch == *epoch && loc_of(pages, slot.pos) == expected;
                    let pos = if at_slot {
                        debug_assert_eq!(key_of(pages, slot.pos), key);
                        Some(slot.pos)
                    } else {
                        let hash = self.hasher.hash_one(key);
                        table
                            .find(hash, |&p| key_of(pages, p) == key)
                            .copied()
                            .filter(|&p| loc_of(pages, p) == expected)
                    };
                    if let Some(pos) = pos {
                        write_loc(pages, pos, new);
                        replaced(item);
                    }
                }
            }
        }
    }

    /// Calls `f` for every key's location and [`Slot`], one shard at a time under that
    /// shard's read lock, in table order.
    pub fn for_each_slot(&self, mut f: impl FnMut(Loc, Slot)) {
        for (i, s) in self.shards.iter().enumerate() {
            let shard = s.read();
            for &pos in shard.table.iter() {
                let slot = Slot {
                    shard: i as u8,
                    epoch: shard.epoch,
                    pos,
                };
                f(loc_of(&shard.pages, pos), slot);
            }
        }
    }

    /// Applies `f` to the current location of `key` under the shard's write lock: `Some` sets,
    /// `None` removes. Returns the old location and whether anything changed.
    pub fn update(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<Loc>) -> Option<Loc>,
    ) -> (Option<Loc>, bool) {
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        let mut guard = self.shard(hash).write();
        let Shard {
            table,
            pages,
            used,
            dead,
            ..
        } = &mut *guard;
        // One probe finds the key or the slot for it.
        let entry = table.entry(
            hash,
            |&p| key_of(pages, p) == key,
            |&p| hasher.hash_one(key_of(pages, p)),
        );
        let (old, new) = match entry {
            Entry::Occupied(o) => {
                let pos = *o.get();
                let old = loc_of(pages, pos);
                let new = f(Some(old));
                match new {
                    Some(loc) => write_loc(pages, pos, loc),
                    None => {
                        // Marked dead in place: a `Slot` of it never matches again.
                        write_loc(pages, pos, LOC_DEAD);
                        o.remove();
                        *dead += ENTRY_FIXED + key.len();
                        if !self.order_deferred.load(Ordering::Relaxed) {
                            self.order.remove(key);
                        }
                    }
                }
                (Some(old), new)
            }
            Entry::Vacant(v) => {
                let new = f(None);
                if let Some(loc) = new {
                    v.insert(append(pages, used, key, loc));
                    if !self.order_deferred.load(Ordering::Relaxed) {
                        self.order.insert(key);
                    }
                }
                (None, new)
            }
        };
        if new.is_none() && old.is_some() {
            guard.maybe_compact(hasher);
        }
        (old, new != old)
    }

    /// Gives back table space reserved for more keys than arrived (after start-up, where hints
    /// count overwritten records too).
    pub fn shrink_if_oversized(&self) {
        for s in self.shards.iter() {
            let mut guard = s.write();
            let Shard { table, pages, .. } = &mut *guard;
            if table.capacity() > 2 * table.len() + 64 {
                table.shrink_to_fit(|&p| self.hasher.hash_one(key_of(pages, p)));
            }
        }
    }

    /// Makes room for `additional` more keys (spread over the shards), so that loading a
    /// known number of keys at start-up never rehashes.
    pub fn reserve(&self, additional: usize) {
        let per_shard = additional / SHARDS + 1;
        for s in self.shards.iter() {
            let mut guard = s.write();
            let Shard { table, pages, .. } = &mut *guard;
            table.reserve(per_shard, |&p| self.hasher.hash_one(key_of(pages, p)));
        }
    }

    /// Number of keys (expired ones included until collected).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().table.len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` for every key, one shard at a time under that shard's read lock.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], Loc)) {
        for s in self.shards.iter() {
            let shard = s.read();
            for &p in shard.table.iter() {
                f(key_of(&shard.pages, p), loc_of(&shard.pages, p));
            }
        }
    }

    /// One page of the live (present, unexpired at `now_ms`) keys of `range` after
    /// `start_after`, from the ordered index (see [`listing::page`]).
    pub fn list(
        &self,
        range: &KeyRange<'_>,
        start_after: Option<&[u8]>,
        limit: usize,
        now_ms: u64,
    ) -> ListPage {
        listing::page(&self.order, range, start_after, limit, |key| {
            self.get(key).is_some_and(|l| !l.expired_at(now_ms))
        })
    }

    /// Bytes of memory the keydir holds (tables, arena pages in use and the ordered index).
    pub fn memory_bytes(&self) -> usize {
        let hash: usize = self
            .shards
            .iter()
            .map(|s| {
                let s = s.read();
                let pages: usize = s.pages.iter().map(|p| p.capacity()).sum();
                s.table.allocation_size() + pages
            })
            .sum();
        hash + self.order.memory_bytes()
    }

    /// Bytes of memory of the ordered index alone (part of [`Keydir::memory_bytes`]).
    pub fn ordered_memory_bytes(&self) -> usize {
        self.order.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn loc(n: u32) -> Loc {
        Loc {
            file: n,
            offset: n * 2,
            len: n * 3,
            expiry_s: 0,
        }
    }

    #[test]
    fn behaves_like_a_map_through_churn_and_compaction() {
        let kd = Keydir::new();
        let mut model = HashMap::new();
        for round in 0..4u32 {
            for i in 0..20_000u32 {
                let key = format!("key-{i}-{}", i % 7).into_bytes();
                if (i + round) % 3 == 0 {
                    assert_eq!(kd.remove(&key), model.remove(&key));
                } else {
                    assert_eq!(
                        kd.insert(&key, loc(i + round)),
                        model.insert(key, loc(i + round))
                    );
                }
            }
        }
        assert_eq!(kd.len(), model.len());
        for (k, v) in &model {
            assert_eq!(kd.get(k), Some(*v));
        }
        let mut seen = 0;
        kd.for_each(|k, l| {
            assert_eq!(model.get(k), Some(&l));
            seen += 1;
        });
        assert_eq!(seen, model.len());
        let mut sorted: Vec<&Vec<u8>> = model.keys().collect();
        sorted.sort();
        let page = kd.list(&KeyRange::prefix(b""), None, usize::MAX / 2, 0);
        assert_eq!(page.keys.iter().collect::<Vec<_>>(), sorted);
    }

    #[test]
    fn deferred_order_is_built_whole() {
        let kd = Keydir::deferring_order();
        let mut want = Vec::new();
        for i in 0..5000u32 {
            let key = format!("k{}", i.wrapping_mul(2_654_435_761)).into_bytes();
            kd.insert(&key, loc(i));
            if i % 5 == 0 {
                kd.remove(&key);
            } else {
                want.push(key);
            }
        }
        kd.build_order();
        want.sort();
        assert_eq!(kd.list(&KeyRange::prefix(b""), None, 10_000, 0).keys, want);
        kd.insert(b"k", loc(1));
        kd.remove(&want[0]);
        let listed = kd.list(&KeyRange::prefix(b""), None, 2, 0).keys;
        assert_eq!(listed, vec![b"k".to_vec(), want[1].clone()]);
    }

    #[test]
    fn keys_larger_than_a_page_get_their_own() {
        let kd = Keydir::new();
        let big: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 65_535]).collect();
        for (i, k) in big.iter().enumerate() {
            kd.insert(k, loc(i as u32));
            kd.insert(format!("small{i}").as_bytes(), loc(100 + i as u32));
        }
        for (i, k) in big.iter().enumerate() {
            assert_eq!(kd.get(k), Some(loc(i as u32)));
            assert_eq!(
                kd.get(format!("small{i}").as_bytes()),
                Some(loc(100 + i as u32))
            );
        }
    }

    #[test]
    fn replace_if_only_when_unchanged() {
        let kd = Keydir::new();
        kd.insert(b"k", loc(1));
        assert!(!kd.replace_if(b"k", loc(2), loc(3)));
        assert_eq!(kd.get(b"k"), Some(loc(1)));
        assert!(kd.replace_if(b"k", loc(1), loc(3)));
        assert_eq!(kd.get(b"k"), Some(loc(3)));
        assert!(!kd.replace_if(b"absent", loc(1), loc(3)));
        assert_eq!(kd.get(b"absent"), None);
    }

    fn slots(kd: &Keydir) -> HashMap<Loc, Slot> {
        let mut m = HashMap::new();
        kd.for_each_slot(|loc, slot| {
            m.insert(loc, slot);
        });
        m
    }

    #[test]
    fn replace_if_many_switches_only_unchanged_keys() {
        let kd = Keydir::new();
        let keys: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| format!("key{i}").into_bytes())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            kd.insert(k, loc(i as u32));
        }
        let slot = slots(&kd);
        // Changed since the walk: 1 mod 4 overwritten, 3 mod 4 removed, and 2 mod 8 removed
        // and inserted again at the same location (a new entry: found through the table).
        for (i, k) in keys.iter().enumerate() {
            match i % 8 {
                1 | 5 => drop(kd.insert(k, loc(5000 + i as u32))),
                3 | 7 => drop(kd.remove(k)),
                2 => {
                    kd.remove(k);
                    kd.insert(k, loc(i as u32));
                }
                _ => {}
            }
        }
        let mut items: Vec<Switch<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let l = loc(i as u32);
                (slot[&l], k.as_slice(), l, loc(10_000 + i as u32))
            })
            .collect();
        items.push((slot[&loc(0)], b"absent".as_slice(), loc(0), loc(2)));
        let mut replaced = Vec::new();
        kd.replace_if_many(&items, |item| replaced.push(item.3.file - 10_000));
        replaced.sort_unstable();
        let unchanged: Vec<u32> = (0..1000).filter(|i| i % 2 == 0).collect();
        assert_eq!(replaced, unchanged);
        for (i, k) in keys.iter().enumerate() {
            let want = match i % 4 {
                0 | 2 => Some(loc(10_000 + i as u32)),
                1 => Some(loc(5000 + i as u32)),
                _ => None,
            };
            assert_eq!(kd.get(k), want, "key{i}");
        }
        assert_eq!(kd.get(b"absent"), None);
    }

    #[test]
    fn replace_if_many_after_the_arena_was_rewritten() {
        let kd = Keydir::new();
        let keys: Vec<Vec<u8>> = (0..200_000u32)
            .map(|i| format!("a-longer-key-to-fill-pages-{i}").into_bytes())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            kd.insert(k, loc(i as u32));
        }
        let slot = slots(&kd);
        // Removing three keys in four makes every shard rewrite its arena: entries move.
        for (i, k) in keys.iter().enumerate() {
            if i % 4 != 0 {
                kd.remove(k);
            }
        }
        assert!(
            kd.shards.iter().all(|s| s.read().epoch > 0),
            "every arena rewritten"
        );
        let items: Vec<Switch<'_>> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 == 0)
            .map(|(i, k)| {
                let l = loc(i as u32);
                (slot[&l], k.as_slice(), l, loc(100_000 + i as u32))
            })
            .collect();
        let mut n = 0;
        kd.replace_if_many(&items, |_| n += 1);
        assert_eq!(n, items.len());
        for (i, k) in keys.iter().enumerate() {
            let want = (i % 4 == 0).then(|| loc(100_000 + i as u32));
            assert_eq!(kd.get(k), want, "key {i}");
        }
    }

    #[test]
    fn expiry_rounds_up() {
        assert_eq!(Loc::expiry_secs(0), 0);
        assert_eq!(Loc::expiry_secs(1), 1);
        assert_eq!(Loc::expiry_secs(1000), 1);
        assert_eq!(Loc::expiry_secs(1001), 2);
        let l = Loc {
            expiry_s: 2,
            ..loc(1)
        };
        assert!(!l.expired_at(1999));
        assert!(l.expired_at(2000));
    }
}
