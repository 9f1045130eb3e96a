//! Linearizable reads on the leader: concurrent read-index requests share one leadership
//! confirmation.
//!
//! Owns [`ReadIndex`]. openraft 0.9's `ensure_linearizable` sends a heartbeat to every voter
//! for each call, so 64 concurrent reads cost 128 heartbeat RPCs. Here a read joins a queue;
//! one round at a time takes everything queued, confirms leadership once, and gives every
//! read in it the same read index. A round begins only after every read it answers arrived,
//! so the quorum it hears from confirms the leadership after each of those reads was asked
//! for: what a read index must guarantee (etcd batches its ReadIndex the same way). Reads
//! that arrive while a round runs wait for the next one.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::node::{WriteError, unavailable_quorum};
use super::types::Raft;

/// Pause between two rounds of leadership confirmation when a quorum did not answer in time.
const QUORUM_RETRY: Duration = Duration::from_millis(20);

type Reply = oneshot::Sender<Result<u64, WriteError>>;

#[derive(Default)]
struct Queue {
    waiting: Vec<Reply>,
    /// Reads not answered yet: those waiting and those in the running round. A task runs
    /// rounds exactly while this is above zero.
    unanswered: usize,
}

/// Confirms leadership for linearizable reads, one round for every read queued.
#[derive(Clone)]
pub struct ReadIndex {
    raft: Raft,
    timeout: Duration,
    queue: Arc<Mutex<Queue>>,
}

impl ReadIndex {
    /// Reads on `raft`, each failing after `timeout` without a quorum.
    pub fn new(raft: Raft, timeout: Duration) -> Self {
        ReadIndex {
            raft,
            timeout,
            queue: Arc::default(),
        }
    }

    /// The read index, confirmed with a quorum by a round that began after this call (this
    /// node must lead).
    ///
    /// # Errors
    /// [`WriteError::NotLeader`] when another node leads; [`WriteError::Unavailable`] without
    /// a quorum in time.
    pub async fn read_index(&self) -> Result<u64, WriteError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock();
            q.waiting.push(tx);
            q.unanswered += 1;
            super::metrics::reads_waiting(q.unanswered);
            q.unanswered == 1
        };
        if start {
            // Its own task: a round must finish for everyone queued even when the read that
            // started it is dropped (its client went away).
            tokio::spawn(self.clone().rounds());
        }
        // The round this read waits for may start only when the one before it ends.
        match tokio::time::timeout(self.timeout * 2, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(WriteError::Unavailable("the node is stopping".into())),
            Err(_) => Err(WriteError::Unavailable(unavailable_quorum())),
        }
    }

    /// Runs rounds until every read is answered.
    async fn rounds(self) {
        loop {
            let batch = std::mem::take(&mut self.queue.lock().waiting);
            let r = self.confirm().await;
            let done = {
                let mut q = self.queue.lock();
                q.unanswered -= batch.len();
                super::metrics::read_round(batch.len(), q.unanswered);
                // A read arriving from now on starts a task of its own.
                q.unanswered == 0
            };
            for tx in batch {
                let _ = tx.send(r.clone());
            }
            if done {
                return;
            }
        }
    }

    /// One confirmation: openraft's heartbeat round, asked again until the timeout when a
    /// follower is only slow.
    async fn confirm(&self) -> Result<u64, WriteError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.raft.ensure_linearizable()).await {
                Err(_) => return Err(WriteError::Unavailable(unavailable_quorum())),
                Ok(Ok(id)) => return Ok(id.map(|l| l.index).unwrap_or(0)),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    return Err(WriteError::NotLeader {
                        leader: f.leader_id.zip(f.leader_node),
                    });
                }
                // openraft confirms leadership with one round of heartbeats, each given only
                // the heartbeat interval: a follower slow to answer (a loaded machine) is not
                // a lost quorum, so ask again until the cluster timeout, as writes wait.
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                    if tokio::time::Instant::now() + QUORUM_RETRY >= deadline {
                        return Err(WriteError::Unavailable(format!(
                            "{} ({q})",
                            unavailable_quorum()
                        )));
                    }
                    tokio::time::sleep(QUORUM_RETRY).await;
                }
                Ok(Err(e)) => return Err(WriteError::Unavailable(e.to_string())),
            }
        }
    }
}
