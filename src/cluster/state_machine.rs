//! The Raft state machine: the storage engine itself.
//!
//! Owns [`StateMachine`]: applying committed entries to the engine, its snapshots, and
//! installing a snapshot received from the leader. Each entry is applied as one atomic engine
//! batch that also rewrites the reserved key [`META_KEY`] with the applied log id and the
//! membership, so a crash never leaves data and applied index apart. Before each entry the
//! engine's version counter is raised to `index << 16` ([`version_floor`]): the versions (and
//! ETags) a write gets are the same on every replica and strictly increase with the log.
//!
//! The engine runs with its own fsync off (`sync=never`): the Raft log is fsynced before an
//! entry is acknowledged, and a restarted node re-applies from the applied id its engine
//! recovered. The engine is fsynced before each snapshot, and the log is purged only up to a
//! snapshot, so nothing needed for a re-apply is ever purged.
//!
//! Directory layout under the node's data directory: `sm/` (the engine), `sm.building/` and
//! `sm.new/` (an installed snapshot being rebuilt, then complete), `sm.old/` (the engine being
//! replaced), `snapshots/current.snap` (the last snapshot built or received).

// openraft's `StorageError` is the error type its traits demand: boxing it would only move the allocation.
#![allow(clippy::result_large_err)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use parking_lot::{Mutex, RwLock};

use super::snapshot::{self, Record};
use super::types::{
    Command, Cond, Entry, LogId, Op, Outcome, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};
use crate::engine::memory::{MemoryOptions, VersionStart};
use crate::engine::{
    self as eng, BatchOp, Engine, EngineKind, EngineOptions, Precondition, SyncPolicy, UnixMillis,
    Version,
};

/// The reserved key holding the applied log id and membership.
pub const META_KEY: &[u8] = b"\0hh/raft/applied";
/// Keys starting with these bytes are the cluster's own; clients may not use them.
pub const RESERVED_PREFIX: &[u8] = b"\0hh/";

/// Versions of the writes in the entry at `index` start above this.
pub fn version_floor(index: u64) -> Version {
    Version(index << 16)
}

/// Most operations one entry may carry (versions of one entry stay below the next floor).
pub const MAX_OPS_PER_ENTRY: usize = (1 << 16) - 2;

fn sio(e: StorageIOError<u64>) -> StorageError {
    StorageError::IO { source: e }
}

fn any(e: &dyn std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

/// What the state machine has applied.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Applied {
    last: Option<LogId>,
    membership: StoredMembership,
}

struct Shared {
    dir: PathBuf,
    opts: EngineOptions,
    engine: RwLock<Arc<dyn Engine>>,
    /// Held while an entry is applied, a snapshot cut is taken or the engine is swapped.
    apply: Mutex<Applied>,
}

/// The state machine; cheap to clone (clones share one engine). The facade reads through
/// [`StateMachine::engine`].
#[derive(Clone)]
pub struct StateMachine(Arc<Shared>);

/// Builds snapshots of a [`StateMachine`].
pub struct Builder(StateMachine);

fn engine_opts(base: &EngineOptions, dir: PathBuf) -> EngineOptions {
    EngineOptions {
        dir,
        sync: SyncPolicy::Never,
        // Versions come from log indexes, alike on every node: not from each node's clock.
        memory: MemoryOptions {
            version_start: VersionStart::Recovered,
            ..base.memory.clone()
        },
        ..base.clone()
    }
}

fn read_applied(engine: &dyn Engine) -> eng::Result<Applied> {
    match engine.get(META_KEY)? {
        Some(v) => postcard::from_bytes(&v.bytes).map_err(|e| eng::Error::Corrupted {
            file: PathBuf::from("raft applied state"),
            offset: 0,
            reason: format!("{e}"),
        }),
        None => Ok(Applied::default()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Finishes or rolls back an interrupted snapshot install (see the module doc).
fn recover_dirs(dir: &Path) -> io::Result<()> {
    let sm = dir.join("sm");
    let new = dir.join("sm.new");
    let old = dir.join("sm.old");
    let building = dir.join("sm.building");
    if building.exists() {
        std::fs::remove_dir_all(&building)?;
    }
    if new.exists() {
        if sm.exists() {
            std::fs::rename(&sm, &old)?;
        }
        std::fs::rename(&new, &sm)?;
        sync_dir(dir)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

fn is_refusal(e: &eng::Error) -> bool {
    matches!(
        e,
        eng::Error::PreconditionFailed { .. }
            | eng::Error::EmptyKey
            | eng::Error::KeyTooLarge { .. }
            | eng::Error::ValueTooLarge { .. }
            | eng::Error::BatchTooLarge(_)
            | eng::Error::ReservedKey(_)
    )
}

fn refusal(e: eng::Error) -> Outcome {
    match e {
        eng::Error::PreconditionFailed { current } => Outcome::PreconditionFailed {
            current: current.map(|v| v.0),
        },
        other => Outcome::Invalid {
            reason: other.to_string(),
        },
    }
}

fn batch_op(op: Op) -> BatchOp {
    match op {
        Op::Put {
            key,
            value,
            expires_at,
        } => BatchOp::Put {
            key,
            value: Bytes::from(value),
            expires_at: expires_at.map(UnixMillis),
        },
        Op::Delete { key } => BatchOp::Delete { key },
    }
}

impl StateMachine {
    /// Opens the engine under `dir/sm` (finishing an interrupted install first).
    ///
    /// # Errors
    /// Engine open failures, a damaged applied state.
    pub fn open(dir: &Path, base: &EngineOptions) -> eng::Result<StateMachine> {
        std::fs::create_dir_all(dir.join("snapshots")).map_err(|e| eng::Error::io("mkdir", e))?;
        recover_dirs(dir).map_err(|e| eng::Error::io("finishing a snapshot install", e))?;
        let opts = engine_opts(base, dir.join("sm"));
        let engine = eng::open(&opts)?;
        let applied = read_applied(&*engine)?;
        let sm = StateMachine(Arc::new(Shared {
            dir: dir.to_path_buf(),
            opts: base.clone(),
            engine: RwLock::new(engine),
            apply: Mutex::new(applied),
        }));
        sm.finish_received_snapshot()
            .map_err(|e| eng::Error::io("installing a received snapshot", e))?;
        Ok(sm)
    }

    /// Installs a snapshot received in full whose install the node did not finish. openraft
    /// (0.9) purges the log up to a received snapshot as soon as its last chunk is in,
    /// without waiting for the install: a node killed meanwhile would restart with its log
    /// purged past its engine and no snapshot to cover the gap (openraft refuses to start).
    /// A snapshot holds only committed entries, so installing one ahead of the engine is safe;
    /// an incomplete file (killed while receiving) is left for the next transfer.
    fn finish_received_snapshot(&self) -> io::Result<()> {
        let snaps = self.0.dir.join("snapshots");
        for name in ["received.tmp", "receiving.tmp"] {
            let path = snaps.join(name);
            let Ok(meta) = snapshot::read_meta(&path) else {
                continue;
            };
            if meta.last_log_id <= self.0.apply.lock().last {
                continue;
            }
            match self.install_blocking(&meta, &path) {
                Ok(()) => {
                    super::metrics::snapshot_installed();
                    tracing::info!(snapshot = %meta.snapshot_id, "installed a snapshot received before a restart");
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The engine now in use (replaced when a snapshot is installed).
    pub fn engine(&self) -> Arc<dyn Engine> {
        Arc::clone(&self.0.engine.read())
    }

    /// The engine kind.
    pub fn kind(&self) -> EngineKind {
        self.0.opts.kind
    }

    /// Makes everything durable and closes the engine.
    ///
    /// # Errors
    /// The engine's close.
    pub fn close(&self) -> eng::Result<()> {
        let _g = self.0.apply.lock();
        self.engine().close()
    }

    fn snapshot_path(&self) -> PathBuf {
        self.0.dir.join("snapshots").join("current.snap")
    }

    fn meta_op(applied: &Applied) -> eng::Result<BatchOp> {
        let bytes = postcard::to_allocvec(applied)
            .map_err(|e| eng::Error::io("encoding applied state", io::Error::other(e)))?;
        Ok(BatchOp::Put {
            key: META_KEY.to_vec(),
            value: Bytes::from(bytes),
            expires_at: None,
        })
    }

    /// Applies one entry; the applied state is updated only if the engine took the batch.
    fn apply_one(&self, applied: &mut Applied, entry: Entry) -> eng::Result<Outcome> {
        let engine = self.engine();
        engine.advance_version(version_floor(entry.log_id.index))?;
        let mut next = Applied {
            last: Some(entry.log_id),
            membership: applied.membership.clone(),
        };
        let cmd = match entry.payload {
            EntryPayload::Blank => None,
            EntryPayload::Membership(m) => {
                next.membership = StoredMembership::new(Some(entry.log_id), m);
                None
            }
            EntryPayload::Normal(cmd) => Some(cmd),
        };
        let meta = Self::meta_op(&next)?;
        let outcome = match cmd {
            None => {
                engine.apply_batch(vec![meta])?;
                Outcome::None
            }
            Some(cmd) => match self.apply_command(&*engine, cmd, meta) {
                Ok(o) => o,
                Err(e) if is_refusal(&e) => {
                    // Refused the same way on every replica; the entry is still applied.
                    engine.apply_batch(vec![Self::meta_op(&next)?])?;
                    refusal(e)
                }
                Err(e) => return Err(e),
            },
        };
        *applied = next;
        Ok(outcome)
    }

    fn apply_command(
        &self,
        engine: &dyn Engine,
        cmd: Command,
        meta: BatchOp,
    ) -> eng::Result<Outcome> {
        let reserved = |k: &[u8]| {
            if k.starts_with(RESERVED_PREFIX) {
                Err(eng::Error::ReservedKey("\\0hh/"))
            } else {
                Ok(())
            }
        };
        match cmd {
            Command::Put {
                key,
                value,
                expires_at,
                cond,
            } => {
                reserved(&key)?;
                let check = vec![(key.clone(), Precondition::from(cond))];
                let ops = vec![
                    batch_op(Op::Put {
                        key,
                        value,
                        expires_at,
                    }),
                    meta,
                ];
                let r = engine.apply_batch_checked(&check, ops)?;
                let first = r.first().ok_or_else(|| {
                    eng::Error::io("apply", io::Error::other("empty batch result"))
                })?;
                Ok(Outcome::written(first.version, !first.existed_before))
            }
            Command::Delete { key, cond } => {
                reserved(&key)?;
                let pre = Precondition::from(cond);
                let current = engine.head(&key)?.map(|m| m.version);
                pre.check(current)?;
                match current {
                    None => {
                        engine.apply_batch(vec![meta])?;
                        Ok(Outcome::Delete { removed: None })
                    }
                    Some(v) => {
                        engine.apply_batch_checked(
                            &[(key.clone(), Precondition::IfVersion(v))],
                            vec![BatchOp::Delete { key }, meta],
                        )?;
                        Ok(Outcome::Delete { removed: Some(v.0) })
                    }
                }
            }
            Command::Group(cmds) => {
                if cmds.len() > MAX_OPS_PER_ENTRY {
                    return Err(eng::Error::BatchTooLarge(format!(
                        "a group of {} puts, at most {MAX_OPS_PER_ENTRY}",
                        cmds.len()
                    )));
                }
                // Unconditional puts only; in order, as one batch, so that a crash never
                // applies part of the entry (a replay would give the puts new versions).
                let mut bops = Vec::with_capacity(cmds.len() + 1);
                for cmd in cmds {
                    let Command::Put {
                        key,
                        value,
                        expires_at,
                        cond: Cond::None,
                    } = cmd
                    else {
                        return Err(eng::Error::BatchTooLarge(
                            "a group holds only unconditional puts".into(),
                        ));
                    };
                    eng::check_key(&key)?;
                    reserved(&key)?;
                    bops.push(batch_op(Op::Put {
                        key,
                        value,
                        expires_at,
                    }));
                }
                let n = bops.len();
                bops.push(meta);
                let r = engine.apply_batch(bops)?;
                // `existed_before` counts the group's own earlier puts (a key put twice in
                // one group is created once).
                let outcomes = r
                    .iter()
                    .take(n)
                    .map(|res| Outcome::written(res.version, !res.existed_before))
                    .collect();
                Ok(Outcome::Group(outcomes))
            }
            Command::Batch { checks, ops } => {
                if ops.len() > MAX_OPS_PER_ENTRY {
                    return Err(eng::Error::BatchTooLarge(format!(
                        "{} operations, at most {MAX_OPS_PER_ENTRY} in a cluster",
                        ops.len()
                    )));
                }
                for (k, _) in &checks {
                    reserved(k)?;
                }
                let mut bops = Vec::with_capacity(ops.len() + 1);
                for op in ops {
                    reserved(match &op {
                        Op::Put { key, .. } | Op::Delete { key } => key,
                    })?;
                    bops.push(batch_op(op));
                }
                let n = bops.len();
                bops.push(meta);
                let checks: Vec<(Vec<u8>, Precondition)> =
                    checks.into_iter().map(|(k, c)| (k, c.into())).collect();
                let mut r = engine.apply_batch_checked(&checks, bops)?;
                r.truncate(n);
                Ok(Outcome::batch(&r))
            }
        }
    }

    fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<Outcome>, StorageError> {
        let mut applied = self.0.apply.lock();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let id = entry.log_id;
            let o = self
                .apply_one(&mut applied, entry)
                .map_err(|e| sio(StorageIOError::apply(id, any(&e))))?;
            out.push(o);
        }
        Ok(out)
    }

    /// Takes a consistent cut and writes it as the current snapshot file.
    fn build_blocking(&self) -> io::Result<(SnapshotMeta, PathBuf)> {
        let dir = self.0.dir.join("snapshots");
        let tmp = dir.join(format!("build-{}.tmp", std::process::id()));
        let (meta, source): (SnapshotMeta, Source) = {
            let applied = self.0.apply.lock();
            let engine = self.engine();
            let id = applied
                .last
                .map(|l| format!("{}-{}-{}", l.leader_id.term, l.index, UnixMillis::now().0))
                .unwrap_or_else(|| format!("none-{}", UnixMillis::now().0));
            let meta = SnapshotMeta {
                last_log_id: applied.last,
                last_membership: applied.membership.clone(),
                snapshot_id: id,
            };
            engine.sync().map_err(io::Error::other)?;
            let source = match engine.kind() {
                EngineKind::Bitcask => {
                    let rep = engine.snapshot().map_err(io::Error::other)?;
                    Source::Dir(rep.path)
                }
                // The memory engine's table is dumped while applies wait (it is in memory).
                EngineKind::Memory => {
                    let mut w = snapshot::Writer::create(&tmp, &meta)?;
                    dump(&*engine, &mut w).map_err(io::Error::other)?;
                    w.finish()?;
                    Source::Written
                }
            };
            (meta, source)
        };
        if let Source::Dir(path) = source {
            let ro = eng::open_read_only(&EngineOptions {
                dir: path.clone(),
                ..self.0.opts.clone()
            })
            .map_err(io::Error::other)?;
            let mut w = snapshot::Writer::create(&tmp, &meta)?;
            dump(&*ro, &mut w).map_err(io::Error::other)?;
            w.finish()?;
            let _ = ro.close();
            std::fs::remove_dir_all(&path)?;
        }
        let path = self.snapshot_path();
        std::fs::rename(&tmp, &path)?;
        sync_dir(&dir)?;
        Ok((meta, path))
    }

    /// Rebuilds the engine from a received snapshot file and switches to it.
    fn install_blocking(&self, meta: &SnapshotMeta, received: &Path) -> io::Result<()> {
        let (file_meta, mut reader) = snapshot::Reader::open(received)?;
        if &file_meta != meta {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot file is {file_meta:?}, expected {meta:?}"),
            ));
        }
        let dir = &self.0.dir;
        let building = dir.join("sm.building");
        if !self.rebuild(&building, meta, || reader.next_record())? {
            // A file from before records were written in version order: sort in memory.
            let (_, mut records) = snapshot::read_all(received)?;
            records.sort_unstable_by_key(|r| r.version);
            let mut records = records.into_iter();
            if !self.rebuild(&building, meta, || Ok(records.next()))? {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "snapshot holds two records of one version",
                ));
            }
        }
        std::fs::rename(&building, dir.join("sm.new"))?;
        sync_dir(dir)?;
        // Switch: applies wait; readers of the old engine see it closed (503) meanwhile.
        let mut applied = self.0.apply.lock();
        let mut slot = self.0.engine.write();
        slot.close().map_err(io::Error::other)?;
        recover_dirs(dir)?;
        let engine =
            eng::open(&engine_opts(&self.0.opts, dir.join("sm"))).map_err(io::Error::other)?;
        *applied = read_applied(&*engine).map_err(io::Error::other)?;
        *slot = engine;
        drop(slot);
        drop(applied);
        let keep = self.snapshot_path();
        std::fs::rename(received, &keep)?;
        sync_dir(&dir.join("snapshots"))
    }

    /// Builds an engine in `building` from the records `next` gives, each with exactly the
    /// version it had on the leader, then the applied state of `meta`. False (and nothing
    /// kept) when the records do not come in ascending version order.
    fn rebuild(
        &self,
        building: &Path,
        meta: &SnapshotMeta,
        mut next: impl FnMut() -> io::Result<Option<Record>>,
    ) -> io::Result<bool> {
        /// Most records, and value bytes, applied as one batch.
        const BATCH: usize = 1000;
        const BATCH_BYTES: usize = 4 << 20;
        if building.exists() {
            std::fs::remove_dir_all(building)?;
        }
        let e = eng::open(&engine_opts(&self.0.opts, building.to_path_buf()))
            .map_err(io::Error::other)?;
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut last: Option<u64> = None;
        while let Some(r) = next()? {
            if last.is_some_and(|l| r.version <= l) {
                let _ = e.close();
                drop(e);
                std::fs::remove_dir_all(building)?;
                return Ok(false);
            }
            // One record per version, exactly the version it had on the leader: a gap in
            // the versions ends the batch and raises the engine's counter.
            if !batch.is_empty() && last.is_some_and(|l| r.version != l + 1) {
                e.apply_batch(std::mem::take(&mut batch))
                    .map_err(io::Error::other)?;
                bytes = 0;
            }
            if batch.is_empty() {
                e.advance_version(Version(r.version.saturating_sub(1)))
                    .map_err(io::Error::other)?;
            }
            last = Some(r.version);
            bytes += r.key.len() + r.value.len();
            batch.push(BatchOp::Put {
                key: r.key,
                value: Bytes::from(r.value),
                expires_at: r.expires_at.map(UnixMillis),
            });
            if batch.len() >= BATCH || bytes >= BATCH_BYTES {
                e.apply_batch(std::mem::take(&mut batch))
                    .map_err(io::Error::other)?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            e.apply_batch(batch).map_err(io::Error::other)?;
        }
        let applied = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        if let Some(l) = meta.last_log_id {
            e.advance_version(version_floor(l.index))
                .map_err(io::Error::other)?;
        }
        e.apply_batch(vec![Self::meta_op(&applied).map_err(io::Error::other)?])
            .map_err(io::Error::other)?;
        e.sync().map_err(io::Error::other)?;
        e.close().map_err(io::Error::other)?;
        Ok(true)
    }
}

enum Source {
    Dir(PathBuf),
    Written,
}

/// Writes every live key of `engine` (but the reserved ones) into `w`, in ascending version
/// order (so the receiver can rebuild reading one record at a time). Memory: every key and
/// its version, not the values.
fn dump(engine: &dyn Engine, w: &mut snapshot::Writer) -> eng::Result<()> {
    let mut keys: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = engine.list(b"", after.as_deref(), 1000)?;
        for key in page.keys {
            if key.starts_with(RESERVED_PREFIX) {
                continue;
            }
            if let Some(m) = engine.head(&key)? {
                keys.push((m.version.0, key));
            }
        }
        match page.next_start_after {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    keys.sort_unstable_by_key(|(v, _)| *v);
    for (_, key) in keys {
        // Gone meanwhile only by expiring: an expired key is not part of the snapshot.
        if let Some(v) = engine.get(&key)? {
            w.push(Record {
                key,
                value: v.bytes.to_vec(),
                version: v.meta.version.0,
                expires_at: v.meta.expires_at.map(|t| t.0),
            })
            .map_err(|e| eng::Error::io("writing the snapshot", e))?;
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| sio(StorageIOError::write_state_machine(any(&e))))
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let sm = self.0.clone();
        let (meta, path) = blocking(move || sm.build_blocking())
            .await?
            .map_err(|e| sio(StorageIOError::write_snapshot(None, any(&e))))?;
        super::metrics::snapshot_built();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| sio(StorageIOError::read_snapshot(None, any(&e))))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.0.apply.lock();
        Ok((a.last, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let sm = self.clone();
        blocking(move || sm.apply_blocking(entries)).await?
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder(self.clone())
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.0.dir.join("snapshots").join("receiving.tmp");
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| sio(StorageIOError::write_snapshot(None, any(&e))))?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let werr = |e: &dyn std::fmt::Display| sio(StorageIOError::write_snapshot(None, any(e)));
        let mut file = *snapshot;
        file.flush().await.map_err(|e| werr(&e))?;
        file.sync_all().await.map_err(|e| werr(&e))?;
        // The received data may sit in a file other than ours (a test hands the leader's file
        // over): copy it into place when so.
        let path = self.0.dir.join("snapshots").join("received.tmp");
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| werr(&e))?;
        let mut out = tokio::fs::File::create(&path).await.map_err(|e| werr(&e))?;
        tokio::io::copy(&mut file, &mut out)
            .await
            .map_err(|e| werr(&e))?;
        out.sync_all().await.map_err(|e| werr(&e))?;
        drop(out);
        let sm = self.clone();
        let meta2 = meta.clone();
        blocking(move || sm.install_blocking(&meta2, &path))
            .await?
            .map_err(|e| werr(&e))?;
        super::metrics::snapshot_installed();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.snapshot_path();
        if !path.exists() {
            return Ok(None);
        }
        let rerr = |e: &dyn std::fmt::Display| sio(StorageIOError::read_snapshot(None, any(e)));
        let p2 = path.clone();
        let meta = blocking(move || snapshot::read_meta(&p2))
            .await?
            .map_err(|e| rerr(&e))?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| rerr(&e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}
