//! hoardhaven's engines beside sled, redb and fjall, behind one small [`Store`] interface, so
//! the criterion benchmarks in `benches/engines.rs` run the same workloads on all of them.
//!
//! This crate is a workspace member but not a default member: `cargo test` and `cargo build`
//! in the repository root never compile the peers. Run it with
//! `cargo bench -p hoardhaven-bench-peers` (see docs/benchmarks.md).
//!
//! Durability is equal across stores:
//! - [`Durability::None`]: nothing is synced before a write returns (hoardhaven `sync=never`,
//!   memory engine AOF with `sync=never`, sled without its periodic flush, redb
//!   `Durability::None` commits, fjall without `persist`).
//! - [`Durability::Sync`]: every write is on stable storage when it returns (hoardhaven
//!   `sync=always` with group commit, memory engine AOF `sync=always`, redb
//!   `Durability::Immediate`, fjall `persist(SyncData)` after each write). sled's `flush` is
//!   `sync_file_range`, not an fsync: its figures here are not comparable and are marked so.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hoardhaven_engine::SyncPolicy;
use hoardhaven_engine::bitcask::{Bitcask, BitcaskOptions, ReadMode};
use hoardhaven_engine::memory::{MemoryEngine, MemoryOptions};
use hoardhaven_engine::{BatchOp, Engine, PutOptions};

/// Errors of any store, boxed (this is benchmark scaffolding, not an API).
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// No sync before returning.
    None,
    /// Synced before returning (group commit where the store has it).
    Sync,
}

impl Durability {
    /// `nosync` or `sync`, for benchmark names.
    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "nosync",
            Durability::Sync => "sync",
        }
    }
}

/// The operations the benchmarks need, implemented by every store.
pub trait Store: Send + Sync {
    /// Reads a key; returns the value's length when present.
    fn get(&self, key: &[u8]) -> Result<Option<usize>>;
    /// Writes a key.
    fn put(&self, key: &[u8], value: &Bytes) -> Result<()>;
    /// Writes all pairs atomically (one transaction / batch).
    fn put_batch(&self, pairs: &[([u8; 16], Bytes)]) -> Result<()>;
    /// Counts the keys starting with `prefix`, in order, at most `limit`.
    fn list(&self, prefix: &[u8], limit: usize) -> Result<usize>;
}

/// The stores compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// hoardhaven's bitcask engine (pread reads).
    Bitcask,
    /// hoardhaven's bitcask engine with mmap reads of sealed files.
    BitcaskMmap,
    /// hoardhaven's memory engine (AOF on).
    Memory,
    /// sled 0.34.
    Sled,
    /// redb 4.
    Redb,
    /// fjall 3.
    Fjall,
}

impl Kind {
    /// Every store, hoardhaven's first.
    pub const ALL: [Kind; 6] = [
        Kind::Bitcask,
        Kind::BitcaskMmap,
        Kind::Memory,
        Kind::Sled,
        Kind::Redb,
        Kind::Fjall,
    ];

    /// Its name in benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bitcask => "hoardhaven-bitcask",
            Kind::BitcaskMmap => "hoardhaven-bitcask-mmap",
            Kind::Memory => "hoardhaven-memory",
            Kind::Sled => "sled",
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
        }
    }

    /// Opens (or reopens) the store in `dir` with the given durability.
    ///
    /// # Errors
    /// The store's own open errors.
    pub fn open(self, dir: &Path, d: Durability) -> Result<Arc<dyn Store>> {
        std::fs::create_dir_all(dir)?;
        Ok(match self {
            Kind::Bitcask => Arc::new(Hoard::bitcask(dir, d, ReadMode::Pread)?),
            Kind::BitcaskMmap => Arc::new(Hoard::bitcask(dir, d, ReadMode::Mmap)?),
            Kind::Memory => Arc::new(Hoard::memory(dir, d)?),
            Kind::Sled => Arc::new(SledStore::open(dir, d)?),
            Kind::Redb => Arc::new(RedbStore::open(dir, d)?),
            Kind::Fjall => Arc::new(FjallStore::open(dir, d)?),
        })
    }
}

/// The `i`-th benchmark key: 8 hex digits naming a group of 64 keys (scattered over the key
/// space), then 8 digits of the position in the group. A group is one prefix listing.
pub fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    let group = splitmix(i / 64) as u32;
    let s = format!("{group:08x}{:08}", i % 64);
    k.copy_from_slice(s.as_bytes());
    k
}

/// The prefix of key `i`'s group.
pub fn group_prefix(i: u64) -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&key(i)[..8]);
    p
}

/// A well-mixed 64-bit hash (splitmix64), used for key scattering and random picks.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A value of `len` printable bytes (not all equal, so compressing stores gain little).
pub fn value(len: usize) -> Bytes {
    let mut x = 0x1234_5678_u64;
    Bytes::from(
        (0..len)
            .map(|_| {
                x = splitmix(x);
                b'a' + (x % 26) as u8
            })
            .collect::<Vec<u8>>(),
    )
}

/// Loads keys `0..n` with `value`, in batches of 1,000.
///
/// # Errors
/// The store's write errors.
pub fn load(store: &dyn Store, n: u64, value: &Bytes) -> Result<()> {
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        batch.push((key(i), value.clone()));
        if batch.len() == 1000 {
            store.put_batch(&batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.put_batch(&batch)?;
    }
    Ok(())
}

/// hoardhaven through its [`Engine`] trait.
struct Hoard(Arc<dyn Engine>);

impl Hoard {
    fn policy(d: Durability) -> SyncPolicy {
        match d {
            Durability::None => SyncPolicy::Never,
            Durability::Sync => SyncPolicy::Always,
        }
    }
    fn bitcask(dir: &Path, d: Durability, read_mode: ReadMode) -> Result<Self> {
        // 64 MiB files (as the system benchmark uses) so that most data sits in sealed files,
        // where the read mode applies.
        let mut o = BitcaskOptions {
            read_mode,
            max_file_size: 64 << 20,
            ..BitcaskOptions::default()
        };
        o.merge.check_interval = None;
        Ok(Hoard(Arc::new(Bitcask::open(dir, Self::policy(d), &o)?)))
    }
    fn memory(dir: &Path, d: Durability) -> Result<Self> {
        let o = MemoryOptions {
            aof: true,
            save_points: vec![],
            rewrite_min_bytes: u64::MAX,
            ..MemoryOptions::default()
        };
        Ok(Hoard(Arc::new(MemoryEngine::open(
            dir,
            Self::policy(d),
            &o,
        )?)))
    }
}

impl Drop for Hoard {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

impl Store for Hoard {
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.0.get(key)?.map(|v| v.bytes.len()))
    }
    fn put(&self, key: &[u8], value: &Bytes) -> Result<()> {
        self.0.put(key, value.clone(), PutOptions::default())?;
        Ok(())
    }
    fn put_batch(&self, pairs: &[([u8; 16], Bytes)]) -> Result<()> {
        let ops = pairs
            .iter()
            .map(|(k, v)| BatchOp::Put {
                key: k.to_vec(),
                value: v.clone(),
                expires_at: None,
            })
            .collect();
        self.0.apply_batch(ops)?;
        Ok(())
    }
    fn list(&self, prefix: &[u8], limit: usize) -> Result<usize> {
        Ok(self.0.list(prefix, None, limit)?.keys.len())
    }
}

struct SledStore {
    db: sled::Db,
    sync: bool,
}

impl SledStore {
    fn open(dir: &Path, d: Durability) -> Result<Self> {
        let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
        Ok(SledStore {
            db,
            sync: d == Durability::Sync,
        })
    }
    fn flush(&self) -> Result<()> {
        if self.sync {
            // sync_file_range, not fsync: see the module documentation.
            self.db.flush()?;
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.db.get(key)?.map(|v| v.len()))
    }
    fn put(&self, key: &[u8], value: &Bytes) -> Result<()> {
        self.db.insert(key, value.as_ref())?;
        self.flush()
    }
    fn put_batch(&self, pairs: &[([u8; 16], Bytes)]) -> Result<()> {
        let mut b = sled::Batch::default();
        for (k, v) in pairs {
            b.insert(&k[..], v.as_ref());
        }
        self.db.apply_batch(b)?;
        self.flush()
    }
    fn list(&self, prefix: &[u8], limit: usize) -> Result<usize> {
        let mut n = 0;
        for kv in self.db.scan_prefix(prefix).take(limit) {
            kv?;
            n += 1;
        }
        Ok(n)
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

struct RedbStore {
    db: redb::Database,
    durability: redb::Durability,
}

impl RedbStore {
    fn open(dir: &Path, d: Durability) -> Result<Self> {
        let db = redb::Database::create(dir.join("redb.db"))?;
        let durability = match d {
            Durability::None => redb::Durability::None,
            Durability::Sync => redb::Durability::Immediate,
        };
        let s = RedbStore { db, durability };
        // Create the table so that readers find it.
        s.write(|_| Ok(()))?;
        Ok(s)
    }
    fn write(&self, f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<()>) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(self.durability)?;
        {
            let mut t = tx.open_table(TABLE)?;
            f(&mut t)?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        use redb::ReadableDatabase as _;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(TABLE)?;
        Ok(t.get(key)?.map(|v| v.value().len()))
    }
    fn put(&self, key: &[u8], value: &Bytes) -> Result<()> {
        self.write(|t| {
            t.insert(key, value.as_ref())?;
            Ok(())
        })
    }
    fn put_batch(&self, pairs: &[([u8; 16], Bytes)]) -> Result<()> {
        self.write(|t| {
            for (k, v) in pairs {
                t.insert(&k[..], v.as_ref())?;
            }
            Ok(())
        })
    }
    fn list(&self, prefix: &[u8], limit: usize) -> Result<usize> {
        use redb::ReadableDatabase as _;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(TABLE)?;
        let mut n = 0;
        for kv in t.range(prefix..)? {
            let (k, _) = kv?;
            if !k.value().starts_with(prefix) || n == limit {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}

struct FjallStore {
    db: fjall::Database,
    ks: fjall::Keyspace,
    sync: bool,
}

impl FjallStore {
    fn open(dir: &Path, d: Durability) -> Result<Self> {
        let db = fjall::Database::builder(dir).open()?;
        let ks = db.keyspace("kv", fjall::KeyspaceCreateOptions::default)?;
        Ok(FjallStore {
            db,
            ks,
            sync: d == Durability::Sync,
        })
    }
    fn persist(&self) -> Result<()> {
        if self.sync {
            self.db.persist(fjall::PersistMode::SyncData)?;
        }
        Ok(())
    }
}

impl Store for FjallStore {
    fn get(&self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.ks.get(key)?.map(|v| v.len()))
    }
    fn put(&self, key: &[u8], value: &Bytes) -> Result<()> {
        self.ks.insert(key, value.as_ref())?;
        self.persist()
    }
    fn put_batch(&self, pairs: &[([u8; 16], Bytes)]) -> Result<()> {
        let mut b = self.db.batch();
        for (k, v) in pairs {
            b.insert(&self.ks, &k[..], v.as_ref());
        }
        b.commit()?;
        self.persist()
    }
    fn list(&self, prefix: &[u8], limit: usize) -> Result<usize> {
        let mut n = 0;
        for g in self.ks.prefix(prefix).take(limit) {
            g.key()?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_answers_the_same() -> Result<()> {
        let v = value(100);
        for kind in Kind::ALL {
            let dir = tempfile::tempdir()?;
            let s = kind.open(dir.path(), Durability::None)?;
            load(s.as_ref(), 640, &v)?;
            assert_eq!(s.get(&key(3))?, Some(100), "{kind:?}");
            assert_eq!(s.get(b"absent-key-00000")?, None, "{kind:?}");
            assert_eq!(s.list(&group_prefix(65), 100)?, 64, "{kind:?}");
            assert_eq!(s.list(&group_prefix(65), 10)?, 10, "{kind:?}");
            s.put(&key(1000), &v)?;
            assert_eq!(s.get(&key(1000))?, Some(100), "{kind:?}");
        }
        Ok(())
    }
}
