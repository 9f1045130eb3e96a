//! Grouping of concurrent unconditional puts into one Raft entry.
//!
//! Owns [`Proposer`]. openraft 0.9 appends every proposal as its own log entry and its core
//! waits for that entry's fdatasync before it takes the next one, so a leader proposing one
//! entry per write makes one fdatasync per write (about 1,000 writes/s here whatever the
//! concurrency). The proposer keeps at most [`IN_FLIGHT`] proposals open; puts that arrive
//! while they are all open wait in a queue and go out together as one
//! [`Command::Group`], applied by the state machine as one engine batch (so a crash never
//! applies part of it) with an answer per put. A lone put still goes out at once as a plain
//! [`Command::Put`]. Conditional writes, deletes and batches are proposed on their own, as
//! before: their preconditions are checked against the state they see, one entry each.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::node::WriteError;
use super::types::{Command, Cond, Outcome, Raft};

/// Proposals open at once before puts start to queue for the next group.
pub const IN_FLIGHT: usize = 2;
/// Most puts in one group.
pub const MAX_GROUP: usize = 512;
/// Most value bytes in one group (a bigger put closes the group; one over it goes alone).
pub const MAX_GROUP_BYTES: usize = 4 << 20;
/// Largest value grouped; a larger one is proposed on its own.
pub const MAX_GROUPED_VALUE: usize = 64 << 10;

type Reply = oneshot::Sender<Result<Outcome, WriteError>>;

/// One queued put.
struct Pending {
    cmd: Command,
    bytes: usize,
    reply: Reply,
}

/// Proposes writes for the leader, grouping concurrent unconditional puts.
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
    raft: Raft,
    timeout: Duration,
}

/// Whether `cmd` may share an entry: an unconditional put of a value no larger than
/// [`MAX_GROUPED_VALUE`].
pub fn groupable(cmd: &Command) -> bool {
    matches!(cmd, Command::Put { value, cond: Cond::None, .. } if value.len() <= MAX_GROUPED_VALUE)
}

impl Proposer {
    /// Starts the grouping task on the current runtime.
    pub fn start(raft: Raft, timeout: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(group_loop(rx, raft.clone(), timeout));
        Proposer { tx, raft, timeout }
    }

    /// Proposes `cmd` (this node must lead) and waits for its answer.
    ///
    /// # Errors
    /// As [`propose`]: not the leader, or no quorum in time.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, WriteError> {
        if !groupable(&cmd) {
            return propose(&self.raft, self.timeout, cmd).await;
        }
        let bytes = match &cmd {
            Command::Put { key, value, .. } => key.len() + value.len(),
            _ => 0,
        };
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { cmd, bytes, reply })
            .map_err(|_| WriteError::Unavailable("the node is stopping".into()))?;
        rx.await
            .map_err(|_| WriteError::Unavailable("the node is stopping".into()))?
    }
}

/// Proposes one entry and waits for the state machine's answer.
///
/// # Errors
/// [`WriteError::NotLeader`] when this node does not lead (the entry was not appended);
/// [`WriteError::Unavailable`] on no quorum within `timeout` (outcome unknown).
pub async fn propose(raft: &Raft, timeout: Duration, cmd: Command) -> Result<Outcome, WriteError> {
    use openraft::error::{ClientWriteError, RaftError};
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Err(_) => Err(WriteError::Unavailable(super::node::unavailable_quorum())),
        Ok(Ok(r)) => Ok(r.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(WriteError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            })
        }
        Ok(Err(e)) => Err(WriteError::Unavailable(e.to_string())),
    }
}

/// Takes a slot, then every put queued meanwhile (up to the group limits), and proposes them
/// as one entry on a task of its own.
async fn group_loop(mut rx: mpsc::UnboundedReceiver<Pending>, raft: Raft, timeout: Duration) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) if bytes + p.bytes > MAX_GROUP_BYTES => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.bytes;
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose_group(&raft, timeout, group).await;
            drop(slot);
        });
    }
}

/// Proposes `group` (one put alone, several as a [`Command::Group`]) and answers each.
async fn propose_group(raft: &Raft, timeout: Duration, mut group: Vec<Pending>) {
    if group.len() == 1 {
        if let Some(p) = group.pop() {
            let _ = p.reply.send(propose(raft, timeout, p.cmd).await);
        }
        return;
    }
    let (cmds, replies): (Vec<Command>, Vec<Reply>) =
        group.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = replies.len();
    match propose(raft, timeout, Command::Group(cmds)).await {
        Ok(Outcome::Group(outcomes)) if outcomes.len() == n => {
            for (reply, o) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(o));
            }
        }
        // Refused as a whole (the same way on every replica): each put gets the answer.
        Ok(o @ Outcome::Invalid { .. }) => {
            for reply in replies {
                let _ = reply.send(Ok(o.clone()));
            }
        }
        Ok(o) => {
            let e = WriteError::Unavailable(format!("unexpected answer to a group: {o:?}"));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
