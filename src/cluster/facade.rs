//! The store facade of a clustered node: an [`Engine`] whose writes go through the Raft log.
//!
//! Owns [`ClusterStore`]. The HTTP handlers (and any other door) call the same `Engine` trait
//! they call on a single node, so clustering changes no handler: `put`, `delete` and batches
//! become log entries (proposed here when this node leads, forwarded to the leader
//! otherwise), and their answers are what the state machine answered when it applied them.
//! Reads serve the local engine; linearizability comes from the read barrier the `/cluster`
//! layer puts in front of read routes ([`super::admin`]). Merge, snapshot, stats and sync
//! stay local to each node. The reserved key range (`\0hh/`) is hidden and refused.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use super::node::Node;
use super::state_machine::RESERVED_PREFIX;
use super::types::{Command, Cond, Op, Outcome, expiry};
use crate::engine::{
    self as eng, BatchOp, BatchResult, Engine, EngineKind, JobHandle, JobStatus, KeyRange,
    ListPage, MergeReport, Meta, Precondition, PutOptions, SnapshotInfo, SnapshotReport, Stats,
    Ticket, Value, Version, Written,
};

/// The facade; see the module doc.
pub struct ClusterStore {
    node: Arc<Node>,
    rt: tokio::runtime::Handle,
}

impl ClusterStore {
    /// A facade over `node`, running its async calls on `rt`.
    pub fn new(node: Arc<Node>, rt: tokio::runtime::Handle) -> Self {
        ClusterStore { node, rt }
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Runs `fut` on the runtime and waits for it from this (blocking-capable) thread.
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> eng::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        // Called from an async task too (the HTTP and RESP write paths call the engine's
        // `*_deferred` methods inline): on a multi-thread runtime the worker hands its other
        // tasks off while it waits, so Raft's own tasks keep running.
        let wait = || rx.recv();
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        answer.map_err(|_| eng::Error::Unavailable("the node is stopping".into()))
    }

    fn write(&self, cmd: Command) -> eng::Result<Outcome> {
        let node = Arc::clone(&self.node);
        let outcome = self.block(async move { node.write(cmd).await })??;
        match outcome {
            Outcome::PreconditionFailed { current } => Err(eng::Error::PreconditionFailed {
                current: current.map(Version),
            }),
            Outcome::Invalid { reason } => Err(eng::Error::BatchTooLarge(reason)),
            o => Ok(o),
        }
    }
}

fn reserved(key: &[u8]) -> eng::Result<()> {
    if key.starts_with(RESERVED_PREFIX) {
        Err(eng::Error::ReservedKey("\\0hh/"))
    } else {
        Ok(())
    }
}

fn unexpected(o: &Outcome) -> eng::Error {
    eng::Error::Unavailable(format!("unexpected answer from the state machine: {o:?}"))
}

impl Engine for ClusterStore {
    fn kind(&self) -> EngineKind {
        self.node.sm.kind()
    }

    fn get(&self, key: &[u8]) -> eng::Result<Option<Value>> {
        if key.starts_with(RESERVED_PREFIX) {
            return Ok(None);
        }
        self.node.sm.engine().get(key)
    }

    fn head(&self, key: &[u8]) -> eng::Result<Option<Meta>> {
        if key.starts_with(RESERVED_PREFIX) {
            return Ok(None);
        }
        self.node.sm.engine().head(key)
    }

    fn put(&self, key: &[u8], value: Bytes, opts: PutOptions) -> eng::Result<Written> {
        eng::check_key(key)?;
        reserved(key)?;
        let o = self.write(Command::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            expires_at: expiry(opts.expires_at),
            cond: Cond::from(opts.precondition),
        })?;
        o.as_written().ok_or_else(|| unexpected(&o))
    }

    fn delete(&self, key: &[u8], precondition: Precondition) -> eng::Result<Option<Version>> {
        eng::check_key(key)?;
        reserved(key)?;
        match self.write(Command::Delete {
            key: key.to_vec(),
            cond: Cond::from(precondition),
        })? {
            Outcome::Delete { removed } => Ok(removed.map(Version)),
            o => Err(unexpected(&o)),
        }
    }

    // Every write entry point is spelled out so that none can reach the local engine by a
    // default: the deferred forms commit through Raft like the plain ones (the state machine
    // applied the entry durably before `client_write` answered), so their ticket is resolved.

    fn put_deferred(
        &self,
        key: &[u8],
        value: Bytes,
        opts: PutOptions,
    ) -> eng::Result<(Written, Ticket)> {
        Ok((self.put(key, value, opts)?, Ticket::ready()))
    }

    fn delete_deferred(
        &self,
        key: &[u8],
        precondition: Precondition,
    ) -> eng::Result<(Option<Version>, Ticket)> {
        Ok((self.delete(key, precondition)?, Ticket::ready()))
    }

    fn apply_batch_checked_deferred(
        &self,
        checks: &[(Vec<u8>, Precondition)],
        ops: Vec<BatchOp>,
    ) -> eng::Result<(Vec<BatchResult>, Ticket)> {
        Ok((self.apply_batch_checked(checks, ops)?, Ticket::ready()))
    }

    fn apply_batch(&self, ops: Vec<BatchOp>) -> eng::Result<Vec<BatchResult>> {
        self.apply_batch_checked(&[], ops)
    }

    fn advance_version(&self, _floor: Version) -> eng::Result<()> {
        // Versions follow the Raft log on every replica; nobody outside chooses them.
        Err(eng::Error::ReadOnly)
    }

    fn apply_batch_checked(
        &self,
        checks: &[(Vec<u8>, Precondition)],
        ops: Vec<BatchOp>,
    ) -> eng::Result<Vec<BatchResult>> {
        for (k, _) in checks {
            reserved(k)?;
        }
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            eng::check_key(op.key())?;
            reserved(op.key())?;
            out.push(match op {
                BatchOp::Put {
                    key,
                    value,
                    expires_at,
                } => Op::Put {
                    key,
                    value: value.to_vec(),
                    expires_at: expiry(expires_at),
                },
                BatchOp::Delete { key } => Op::Delete { key },
            });
        }
        if out.is_empty() && checks.is_empty() {
            return Ok(Vec::new());
        }
        match self.write(Command::Batch {
            checks: checks
                .iter()
                .map(|(k, p)| (k.clone(), Cond::from(*p)))
                .collect(),
            ops: out,
        })? {
            Outcome::Batch { results } => Ok(results
                .into_iter()
                .map(|(v, existed)| BatchResult {
                    version: Version(v),
                    existed_before: existed,
                })
                .collect()),
            o => Err(unexpected(&o)),
        }
    }

    fn list_range(
        &self,
        range: &KeyRange<'_>,
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> eng::Result<ListPage> {
        // Pages of the local engine with the reserved keys taken out, until `limit` keys are
        // found or the range ends; the cursor is the engine's, so it may name a reserved key.
        let engine = self.node.sm.engine();
        let mut keys = Vec::new();
        let mut cursor = start_after.map(<[u8]>::to_vec);
        loop {
            let page = engine.list_range(range, cursor.as_deref(), limit - keys.len())?;
            keys.extend(
                page.keys
                    .into_iter()
                    .filter(|k| !k.starts_with(RESERVED_PREFIX)),
            );
            match page.next_start_after {
                Some(next) if keys.len() < limit => cursor = Some(next),
                next_start_after => {
                    return Ok(ListPage {
                        keys,
                        next_start_after,
                    });
                }
            }
        }
    }

    fn sync(&self) -> eng::Result<()> {
        self.node.sm.engine().sync()
    }

    fn stats(&self) -> eng::Result<Stats> {
        self.node.sm.engine().stats()
    }

    fn merge(&self) -> eng::Result<MergeReport> {
        self.node.sm.engine().merge()
    }

    fn snapshot(&self) -> eng::Result<SnapshotReport> {
        self.node.sm.engine().snapshot()
    }

    fn start_merge(&self) -> eng::Result<JobHandle<MergeReport>> {
        self.node.sm.engine().start_merge()
    }

    fn start_snapshot(&self) -> eng::Result<JobHandle<SnapshotReport>> {
        self.node.sm.engine().start_snapshot()
    }

    fn jobs(&self) -> JobStatus {
        self.node.sm.engine().jobs()
    }

    fn snapshots(&self) -> eng::Result<Vec<SnapshotInfo>> {
        self.node.sm.engine().snapshots()
    }

    fn close(&self) -> eng::Result<()> {
        let node = Arc::clone(&self.node);
        self.block(async move { node.stop().await })?.map_err(|e| {
            eng::Error::io(
                "closing the cluster node",
                std::io::Error::other(e.to_string()),
            )
        })
    }
}
