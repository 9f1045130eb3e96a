//! A transaction's private view of the store: reads through, writes held back.
//!
//! Owns [`Overlay`], the [`Engine`] a MULTI/EXEC transaction runs its queued commands against.
//! Reads see the transaction's own earlier writes first, then the engine; every key read from
//! the engine is remembered with the version seen (absent = absent) and served from that
//! memory afterwards, so the whole transaction sees one consistent state. Writes are kept in
//! the overlay and never reach the engine during the run. At EXEC the final state of every
//! written key becomes ONE engine batch, applied with
//! [`Engine::apply_batch_checked`] on the versions read (and the WATCHed ones): the reads, the
//! checks and the writes are one atomic step. If another client wrote a key the transaction
//! read, the batch is refused whole and the transaction runs again from the start
//! (optimistic concurrency, as in etcd's STM), so its replies always describe the state its
//! writes were applied to.
//!
//! Keyspace walks (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHDB) and the background-job commands
//! cannot be checked key by key; `txn.rs` does not run those through an overlay, and the
//! methods here that would need them refuse.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::engine::{
    BatchOp, BatchResult, Engine, EngineKind, Error, JobHandle, JobStatus, KeyRange, ListPage,
    MergeReport, Meta, Precondition, PutOptions, SnapshotInfo, SnapshotReport, Stats, UnixMillis,
    Value, Version, Written,
};

/// The first version handed to a write made inside the transaction. Real versions never get
/// near it; the pending ones only need to be distinct, so a compare-and-set inside the
/// transaction (INCR after SET) works on them like on real ones.
const PENDING_VERSION_BASE: u64 = u64::MAX / 2;

/// A key's state as the transaction sees it.
#[derive(Clone, Debug)]
enum Seen {
    /// Present with this value.
    Present(Value),
    /// Absent (or expired).
    Absent,
}

impl Seen {
    fn value(&self, now: UnixMillis) -> Option<&Value> {
        match self {
            Seen::Present(v) if !v.meta.expires_at.is_some_and(|e| e.has_passed(now)) => Some(v),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Keys read from the engine, with what was seen: the preconditions of the commit.
    reads: HashMap<Vec<u8>, Option<Version>>,
    /// What the engine showed for each key read, served again on later reads.
    read_values: HashMap<Vec<u8>, Seen>,
    /// The transaction's writes, final state per key, in first-write order.
    writes: Vec<(Vec<u8>, Seen)>,
    /// Index into `writes` by key.
    written: HashMap<Vec<u8>, usize>,
    /// Versions handed to pending writes so far.
    pending: u64,
}

/// A transaction's view of `engine`; see the module documentation.
pub struct Overlay {
    engine: Arc<dyn Engine>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.lock();
        f.debug_struct("Overlay")
            .field("reads", &st.reads.len())
            .field("writes", &st.writes.len())
            .finish_non_exhaustive()
    }
}

/// What the overlay turns into at EXEC.
#[derive(Debug)]
pub struct Commit {
    /// Versions every key read must still have (`None`: still absent).
    pub checks: Vec<(Vec<u8>, Precondition)>,
    /// The final state of every written key.
    pub ops: Vec<BatchOp>,
}

impl Overlay {
    /// An empty view over `engine`.
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        Overlay {
            engine,
            state: Mutex::new(State::default()),
        }
    }

    /// The batch and its preconditions; empty `ops` when the transaction wrote nothing.
    pub fn into_commit(self) -> Commit {
        let st = self.state.into_inner();
        let checks = st
            .reads
            .into_iter()
            .map(|(k, v)| (k, v.map_or(Precondition::IfAbsent, Precondition::IfVersion)))
            .collect();
        let ops = st
            .writes
            .into_iter()
            .map(|(key, seen)| match seen {
                Seen::Present(v) => BatchOp::Put {
                    key,
                    value: v.bytes,
                    expires_at: v.meta.expires_at,
                },
                Seen::Absent => BatchOp::Delete { key },
            })
            .collect();
        Commit { checks, ops }
    }

    /// The key as the transaction sees it now, remembering an engine read.
    fn view(&self, st: &mut State, key: &[u8]) -> Result<Option<Value>, Error> {
        let now = UnixMillis::now();
        if let Some(&i) = st.written.get(key) {
            return Ok(st.writes[i].1.value(now).cloned());
        }
        if let Some(seen) = st.read_values.get(key) {
            return Ok(seen.value(now).cloned());
        }
        let got = self.engine.get(key)?;
        st.reads
            .insert(key.to_vec(), got.as_ref().map(|v| v.meta.version));
        st.read_values.insert(
            key.to_vec(),
            got.clone().map_or(Seen::Absent, Seen::Present),
        );
        Ok(got)
    }

    /// Records the transaction's new state of `key`; returns the version handed to it.
    fn write(st: &mut State, key: &[u8], new: Option<(Bytes, Option<UnixMillis>)>) -> Version {
        st.pending += 1;
        let version = Version(PENDING_VERSION_BASE + st.pending);
        let seen = match new {
            Some((bytes, expires_at)) => {
                let value_len = bytes.len() as u64;
                Seen::Present(Value {
                    bytes,
                    meta: Meta {
                        version,
                        expires_at,
                        value_len,
                    },
                })
            }
            None => Seen::Absent,
        };
        match st.written.get(key) {
            Some(&i) => st.writes[i].1 = seen,
            None => {
                st.written.insert(key.to_vec(), st.writes.len());
                st.writes.push((key.to_vec(), seen));
            }
        }
        version
    }

    fn unsupported(what: &'static str) -> Error {
        Error::BatchTooLarge(format!(
            "{what} cannot run inside an optimistic transaction"
        ))
    }
}

impl Engine for Overlay {
    fn kind(&self) -> EngineKind {
        self.engine.kind()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Value>, Error> {
        let mut st = self.state.lock();
        self.view(&mut st, key)
    }

    fn head(&self, key: &[u8]) -> Result<Option<Meta>, Error> {
        Ok(self.get(key)?.map(|v| v.meta))
    }

    fn put(&self, key: &[u8], value: Bytes, opts: PutOptions) -> Result<Written, Error> {
        crate::engine::check_key(key)?;
        let mut st = self.state.lock();
        let current = self.view(&mut st, key)?;
        opts.precondition
            .check(current.as_ref().map(|v| v.meta.version))?;
        let version = Self::write(&mut st, key, Some((value, opts.expires_at)));
        Ok(Written {
            version,
            created: current.is_none(),
        })
    }

    fn delete(&self, key: &[u8], precondition: Precondition) -> Result<Option<Version>, Error> {
        let mut st = self.state.lock();
        let current = self.view(&mut st, key)?.map(|v| v.meta.version);
        precondition.check(current)?;
        if current.is_some() {
            Self::write(&mut st, key, None);
        }
        Ok(current)
    }

    fn apply_batch_checked(
        &self,
        checks: &[(Vec<u8>, Precondition)],
        ops: Vec<BatchOp>,
    ) -> Result<Vec<BatchResult>, Error> {
        let mut st = self.state.lock();
        for (key, pre) in checks {
            let current = self.view(&mut st, key)?.map(|v| v.meta.version);
            pre.check(current)?;
        }
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            crate::engine::check_key(op.key())?;
            let existed_before = self.view(&mut st, op.key())?.is_some();
            let version = match op {
                BatchOp::Put {
                    key,
                    value,
                    expires_at,
                } => Self::write(&mut st, &key, Some((value, expires_at))),
                BatchOp::Delete { key } => Self::write(&mut st, &key, None),
            };
            out.push(BatchResult {
                version,
                existed_before,
            });
        }
        Ok(out)
    }

    fn list_range(
        &self,
        _range: &KeyRange<'_>,
        _after: Option<&[u8]>,
        _limit: usize,
    ) -> Result<ListPage, Error> {
        Err(Self::unsupported("a keyspace walk"))
    }

    fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    fn stats(&self) -> Result<Stats, Error> {
        self.engine.stats()
    }

    fn merge(&self) -> Result<MergeReport, Error> {
        Err(Self::unsupported("a merge"))
    }

    fn snapshot(&self) -> Result<SnapshotReport, Error> {
        Err(Self::unsupported("a snapshot"))
    }

    fn start_merge(&self) -> Result<JobHandle<MergeReport>, Error> {
        Err(Self::unsupported("a merge"))
    }

    fn start_snapshot(&self) -> Result<JobHandle<SnapshotReport>, Error> {
        Err(Self::unsupported("a snapshot"))
    }

    fn jobs(&self) -> JobStatus {
        self.engine.jobs()
    }

    fn snapshots(&self) -> Result<Vec<SnapshotInfo>, Error> {
        self.engine.snapshots()
    }

    fn close(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineOptions, SyncPolicy};

    fn engine() -> (tempfile::TempDir, Arc<dyn Engine>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = EngineOptions {
            kind: EngineKind::Memory,
            dir: dir.path().join("data"),
            sync: SyncPolicy::Never,
            ..EngineOptions::default()
        };
        let e = hoardhaven_engine::open(&opts).expect("open");
        (dir, e)
    }

    fn put(e: &dyn Engine, k: &[u8], v: &'static [u8]) -> Version {
        e.put(k, Bytes::from_static(v), PutOptions::default())
            .expect("put")
            .version
    }

    #[test]
    fn reads_its_own_writes_and_holds_them_back() {
        let (_d, e) = engine();
        put(&*e, b"a", b"1");
        let o = Overlay::new(Arc::clone(&e));
        o.put(b"a", Bytes::from_static(b"2"), PutOptions::default())
            .expect("put");
        o.delete(b"b", Precondition::None).expect("delete absent");
        assert_eq!(o.get(b"a").expect("get").expect("a").bytes, "2");
        assert_eq!(
            e.get(b"a").expect("get").expect("a").bytes,
            "1",
            "held back"
        );
        let c = o.into_commit();
        assert_eq!(c.ops.len(), 1, "deleting an absent key writes nothing");
        assert_eq!(c.checks.len(), 2, "a and b were read");
    }

    #[test]
    fn compare_and_set_works_on_pending_versions() {
        let (_d, e) = engine();
        let o = Overlay::new(Arc::clone(&e));
        let w = o
            .put(b"k", Bytes::from_static(b"x"), PutOptions::default())
            .expect("put");
        assert!(w.created);
        let cas = PutOptions {
            precondition: Precondition::IfVersion(w.version),
            ..PutOptions::default()
        };
        o.put(b"k", Bytes::from_static(b"y"), cas)
            .expect("cas on pending");
        assert!(matches!(
            o.put(b"k", Bytes::from_static(b"z"), cas),
            Err(Error::PreconditionFailed { .. })
        ));
    }

    #[test]
    fn the_commit_is_refused_when_a_read_key_changed() {
        let (_d, e) = engine();
        put(&*e, b"r", b"1");
        let o = Overlay::new(Arc::clone(&e));
        let seen = o.get(b"r").expect("get").expect("r").bytes;
        o.put(b"w", seen, PutOptions::default()).expect("put");
        put(&*e, b"r", b"2"); // another client, between the read and EXEC
        let r = o.get(b"r").expect("get again").expect("r").bytes;
        assert_eq!(r, "1", "the transaction keeps seeing what it read first");
        let c = o.into_commit();
        assert!(matches!(
            e.apply_batch_checked(&c.checks, c.ops),
            Err(Error::PreconditionFailed { .. })
        ));
        assert!(e.get(b"w").expect("get").is_none(), "nothing applied");
    }
}
