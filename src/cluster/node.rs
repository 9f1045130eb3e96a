//! One cluster node: its Raft instance, state machine, peer listener, and the operations the
//! facade and the `/cluster` routes need (write, read barrier, membership, status).
//!
//! Owns [`ClusterOptions`] (the start-up settings), [`start`], and [`Node`]. Writes that reach
//! a follower are forwarded to the leader over the peer listener; a write or read barrier
//! that cannot reach a quorum within the timeout fails with `Unavailable` (503).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use super::log_store::LogStore;
use super::network::{Factory, PeerClient, PeerError};
use super::proposer::Proposer;
use super::read_index::ReadIndex;
use super::state_machine::StateMachine;
use super::types::{Command, NodeId, NodeInfo, Outcome, Raft};
use crate::engine::{self as eng, EngineOptions};
use crate::shutdown::Shutdown;
use crate::transport::Transport;

/// Start-up settings of a cluster node.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// This node's id (unique in the cluster, never reused).
    pub node_id: NodeId,
    /// Where the peer listener binds.
    pub peer_listen: SocketAddr,
    /// The peer URL other nodes use to reach this one.
    pub peer_url: String,
    /// The client API URL (where clients and forwarded requests are sent).
    pub api_url: String,
    /// Make this node a one-voter cluster if it is not initialized yet.
    pub init: bool,
    /// Join the cluster through this member's peer URL.
    pub join: Option<String>,
    /// The cluster secret (required on every peer call when set).
    pub secret: Option<String>,
    /// The node's data directory (`raft/`, `sm/`, `snapshots/` inside).
    pub data_dir: PathBuf,
    /// How to open the engine.
    pub engine: EngineOptions,
    /// How long a write or a read barrier may wait for a quorum.
    pub timeout: Duration,
    /// Entries applied since the last snapshot that trigger a new one.
    pub snapshot_every: u64,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// TLS on the peer listener and for calls to `https://` peers; `None` = clear text.
    pub tls: Option<PeerTls>,
}

/// TLS between peers: the listener serves the node's own certificate (the store the client
/// listener uses, so one reload renews both) and calls to peers check theirs.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// The node's certificate and key.
    pub certs: Arc<crate::tls::CertStore>,
    /// How peers' certificates are checked ([`crate::tls::peer_client_config`]).
    pub client: rustls::ClientConfig,
}

/// How long a peer connection may sit idle (or take to send a request head) before the peer
/// listener closes it: longer than the client pool keeps an idle connection (90 s), so the
/// pool drops a connection before the listener does and no request is sent into a closing one.
const PEER_IDLE: Duration = Duration::from_secs(300);

/// A failure of a write or read barrier, as it travels between nodes.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    /// This node does not lead; the leader it knows.
    #[error("not the leader")]
    NotLeader {
        /// The leader, when known.
        leader: Option<(NodeId, NodeInfo)>,
    },
    /// No quorum, no leader, or the node is stopping.
    #[error("{0}")]
    Unavailable(String),
}

/// A membership change, as it travels to the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AdminOp {
    /// Add a learner.
    AddLearner {
        /// Its id.
        id: NodeId,
        /// Its URLs.
        info: NodeInfo,
    },
    /// Make a learner a voter.
    Promote {
        /// Its id.
        id: NodeId,
    },
    /// Remove a voter or learner.
    Remove {
        /// Its id.
        id: NodeId,
    },
    /// Add as learner, wait for it to catch up, promote (what `--join` does).
    Join {
        /// Its id.
        id: NodeId,
        /// Its URLs.
        info: NodeInfo,
    },
}

/// Why a membership change was refused.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum AdminError {
    /// This node does not lead.
    #[error("not the leader")]
    NotLeader {
        /// The leader, when known.
        leader: Option<(NodeId, NodeInfo)>,
    },
    /// The change conflicts with the membership (id clash, last voter, ...).
    #[error("{0}")]
    Conflict(String),
    /// No such member.
    #[error("{0}")]
    NotFound(String),
    /// No quorum or no leader.
    #[error("{0}")]
    Unavailable(String),
}

/// A running node.
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Its URLs.
    pub info: NodeInfo,
    /// The Raft instance.
    pub raft: Raft,
    /// The state machine (and engine).
    pub sm: StateMachine,
    /// The log.
    pub log: LogStore,
    /// The client to peers.
    pub client: PeerClient,
    /// Proposes writes, grouping concurrent puts.
    pub proposer: Proposer,
    /// Confirms leadership for linearizable reads, one round for all concurrent ones.
    pub reads: ReadIndex,
    /// The cluster secret.
    pub secret: Option<String>,
    /// Quorum timeout.
    pub timeout: Duration,
}

pub(super) fn unavailable_quorum() -> String {
    "no quorum: the cluster did not confirm in time (a majority of voters is unreachable); \
     a write's outcome is unknown until a leader answers again"
        .into()
}

impl Node {
    /// The leader this node knows, with its URLs.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let info = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, info))
    }

    /// Proposes `cmd` here (this node must lead), grouped with concurrent unconditional puts
    /// ([`super::proposer`]).
    pub async fn write_here(&self, cmd: Command) -> Result<Outcome, WriteError> {
        self.proposer.write(cmd).await
    }

    /// Proposes `cmd` through the leader, wherever it is.
    ///
    /// A forward that could not connect, or a leader's "not leader" answer (openraft gives it
    /// only for an entry it never appended or has truncated as uncommitted), leaves the write
    /// applied nowhere: it is retried, and the deadline answers [`eng::Error::NotApplied`] so
    /// the client knows a retry cannot apply it twice.
    ///
    /// # Errors
    /// [`eng::Error::NotApplied`] without a reachable leader in time;
    /// [`eng::Error::Unavailable`] when the outcome is unknown (no quorum in time, a forward
    /// broken after it was sent).
    pub async fn write(&self, cmd: Command) -> eng::Result<Outcome> {
        let deadline = Instant::now() + self.timeout;
        let mut why_not = String::from("no leader elected");
        loop {
            let r = match self.write_here(cmd.clone()).await {
                Err(WriteError::NotLeader {
                    leader: Some((id, info)),
                }) if id != self.id => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self
                        .client
                        .call::<_, Result<Outcome, WriteError>>(
                            &info.peer_url,
                            "forward",
                            &cmd,
                            left.max(Duration::from_millis(100)),
                        )
                        .await
                    {
                        Ok(r) => r,
                        // Not sent: applied nowhere, try again.
                        Err(e @ PeerError::NotSent { .. }) => {
                            why_not = format!("forwarding to the leader: {e}");
                            Err(WriteError::NotLeader { leader: None })
                        }
                        // Broken after it may have been delivered: unknown.
                        Err(e) => Err(WriteError::Unavailable(format!(
                            "forwarding to the leader: {e}"
                        ))),
                    }
                }
                other => other,
            };
            match r {
                Ok(o) => return Ok(o),
                // Not written anywhere: safe to retry until the deadline.
                Err(WriteError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(WriteError::NotLeader { .. }) => {
                    return Err(eng::Error::NotApplied(why_not));
                }
                Err(WriteError::Unavailable(m)) => return Err(eng::Error::Unavailable(m)),
            }
        }
    }

    /// The read index, confirmed with a quorum by a round shared with concurrent reads
    /// ([`super::read_index`]; this node must lead).
    pub async fn read_index_here(&self) -> Result<u64, WriteError> {
        self.reads.read_index().await
    }

    /// Waits until a read here sees every write acknowledged before it began (read index:
    /// the leader confirms its leadership with a quorum, and this node applies up to the
    /// leader's commit index).
    ///
    /// # Errors
    /// [`eng::Error::Unavailable`] without a leader or quorum in time.
    pub async fn read_barrier(&self) -> eng::Result<()> {
        let index = match self.read_index_here().await {
            Ok(_) => return Ok(()),
            Err(WriteError::NotLeader {
                leader: Some((id, info)),
            }) if id != self.id => {
                let r: Result<u64, WriteError> = self
                    .client
                    .call(&info.peer_url, "read-index", &(), self.timeout)
                    .await
                    .map_err(|e| eng::Error::Unavailable(format!("asking the leader: {e}")))?;
                r.map_err(|e| eng::Error::Unavailable(e.to_string()))?
            }
            Err(WriteError::NotLeader { .. }) => {
                return Err(eng::Error::Unavailable("no leader elected".into()));
            }
            Err(WriteError::Unavailable(m)) => return Err(eng::Error::Unavailable(m)),
        };
        self.raft
            .wait(Some(self.timeout))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|e| eng::Error::Unavailable(format!("catching up to the read index: {e}")))
    }

    /// Runs a membership change here (this node must lead).
    pub async fn admin_here(&self, op: AdminOp) -> Result<String, AdminError> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            return Err(AdminError::NotLeader {
                leader: self.leader(),
            });
        }
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, NodeInfo> =
            membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let long = self.timeout * 12;
        let werr = |e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => AdminError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            },
            // Another change still running (two nodes joining at once): retry later.
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                c @ ChangeMembershipError::InProgress(_),
            )) => AdminError::Unavailable(c.to_string()),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                AdminError::Conflict(c.to_string())
            }
            other => AdminError::Unavailable(other.to_string()),
        };
        let check_new = |id: NodeId, info: &NodeInfo| -> Result<bool, AdminError> {
            if let Some(have) = nodes.get(&id) {
                if have == info {
                    return Ok(true);
                }
                return Err(AdminError::Conflict(format!(
                    "node id {id} is already in use by {have}"
                )));
            }
            if let Some((other, _)) = nodes
                .iter()
                .find(|(_, n)| n.peer_url == info.peer_url || n.api_url == info.api_url)
            {
                return Err(AdminError::Conflict(format!(
                    "node {other} already uses these URLs ({info})"
                )));
            }
            Ok(false)
        };
        match op {
            AdminOp::AddLearner { id, info } => {
                if check_new(id, &info)? {
                    return Ok(format!("node {id} is already a member"));
                }
                tokio::time::timeout(long, self.raft.add_learner(id, info, true))
                    .await
                    .map_err(|_| AdminError::Unavailable(unavailable_quorum()))?
                    .map_err(werr)?;
                Ok(format!("node {id} added as a learner"))
            }
            AdminOp::Promote { id } => {
                if voters.contains(&id) {
                    return Ok(format!("node {id} is already a voter"));
                }
                if !nodes.contains_key(&id) {
                    return Err(AdminError::NotFound(format!(
                        "node {id} is not a learner of this cluster (add it first)"
                    )));
                }
                tokio::time::timeout(
                    long,
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
                )
                .await
                .map_err(|_| AdminError::Unavailable(unavailable_quorum()))?
                .map_err(werr)?;
                Ok(format!("node {id} is a voter"))
            }
            AdminOp::Remove { id } => {
                if !nodes.contains_key(&id) {
                    return Err(AdminError::NotFound(format!("node {id} is not a member")));
                }
                let change = if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(AdminError::Conflict(format!(
                            "node {id} is the last voter; removing it would leave no cluster"
                        )));
                    }
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                tokio::time::timeout(long, self.raft.change_membership(change, false))
                    .await
                    .map_err(|_| AdminError::Unavailable(unavailable_quorum()))?
                    .map_err(werr)?;
                Ok(format!("node {id} removed"))
            }
            AdminOp::Join { id, info } => {
                if check_new(id, &info)? && voters.contains(&id) {
                    return Ok(format!("node {id} is already a voter"));
                }
                tokio::time::timeout(long, self.raft.add_learner(id, info, true))
                    .await
                    .map_err(|_| AdminError::Unavailable(unavailable_quorum()))?
                    .map_err(werr)?;
                tokio::time::timeout(
                    long,
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
                )
                .await
                .map_err(|_| AdminError::Unavailable(unavailable_quorum()))?
                .map_err(werr)?;
                Ok(format!("node {id} joined as a voter"))
            }
        }
    }

    /// Runs a membership change through the leader.
    pub async fn admin(&self, op: AdminOp) -> Result<String, AdminError> {
        match self.admin_here(op.clone()).await {
            Err(AdminError::NotLeader {
                leader: Some((id, info)),
            }) if id != self.id => self
                .client
                .call::<_, Result<String, AdminError>>(
                    &info.peer_url,
                    "admin",
                    &op,
                    self.timeout * 13,
                )
                .await
                .map_err(|e| AdminError::Unavailable(format!("asking the leader: {e}")))?,
            Err(AdminError::NotLeader { leader: None }) => {
                Err(AdminError::Unavailable("no leader elected".into()))
            }
            other => other,
        }
    }

    /// Makes this node a one-voter cluster.
    ///
    /// # Errors
    /// Already initialized, or Raft failed.
    pub async fn init(&self) -> Result<(), AdminError> {
        let members = BTreeMap::from([(self.id, self.info.clone())]);
        self.raft.initialize(members).await.map_err(|e| match e {
            RaftError::APIError(e) => AdminError::Conflict(e.to_string()),
            other => AdminError::Unavailable(other.to_string()),
        })
    }

    /// Status for `GET /cluster`.
    pub fn status(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let member = |id: &NodeId, n: &NodeInfo| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index);
            let last = m.last_log_index.unwrap_or(0);
            serde_json::json!({
                "node_id": id,
                "peer_url": n.peer_url,
                "api_url": n.api_url,
                "matched_index": matched,
                "lag": m.replication.as_ref().map(|_| last.saturating_sub(matched.unwrap_or(0))),
            })
        };
        let vs: Vec<_> = membership
            .nodes()
            .filter(|(id, _)| voters.contains(id))
            .map(|(id, n)| member(id, n))
            .collect();
        let ls: Vec<_> = membership
            .nodes()
            .filter(|(id, _)| !voters.contains(id))
            .map(|(id, n)| member(id, n))
            .collect();
        let commit = m.replication.as_ref().map(|r| {
            let mut idx: Vec<u64> = r
                .iter()
                .filter(|(id, _)| voters.contains(id))
                .map(|(_, l)| l.map(|l| l.index).unwrap_or(0))
                .collect();
            idx.sort_unstable();
            // The highest index a majority of voters hold.
            idx.get((idx.len().saturating_sub(1)) / 2)
                .copied()
                .unwrap_or(0)
        });
        let (first, _) = self.log.bounds();
        serde_json::json!({
            "node_id": self.id,
            "state": format!("{:?}", m.state).to_lowercase(),
            "term": m.current_term,
            "leader": self.leader().map(|(id, n)| serde_json::json!({"node_id": id, "api_url": n.api_url, "peer_url": n.peer_url})),
            "voters": vs,
            "learners": ls,
            "last_log_index": m.last_log_index,
            "first_log_index": first,
            "commit_index": commit.or(m.last_applied.map(|l| l.index)),
            "applied_index": m.last_applied.map(|l| l.index),
            "snapshot_index": m.snapshot.map(|l| l.index),
            "purged_index": m.purged.map(|l| l.index),
        })
    }

    /// Stops Raft and closes the engine.
    ///
    /// # Errors
    /// The engine's close.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let _ = self.raft.shutdown().await;
        let sm = self.sm.clone();
        tokio::task::spawn_blocking(move || sm.close())
            .await
            .map_err(|e| anyhow!("closing the engine: {e}"))?
            .context("final sync at shutdown")
    }
}

/// Opens the log and the engine, starts Raft and the peer listener, then initializes or joins
/// as the options say. Returns once this node is a member (or known to be one).
///
/// # Errors
/// Opening storage or binding fails; joining is refused (wrong secret, id clash).
pub async fn start(opts: ClusterOptions, shutdown: Shutdown) -> anyhow::Result<Arc<Node>> {
    let log = LogStore::open(&opts.data_dir.join("raft"))
        .with_context(|| format!("opening the raft log in {}", opts.data_dir.display()))?;
    let (dir, eo) = (opts.data_dir.clone(), opts.engine.clone());
    let sm = tokio::task::spawn_blocking(move || StateMachine::open(&dir, &eo))
        .await
        .map_err(|e| anyhow!("opening the engine: {e}"))??;
    let hb = opts.heartbeat.as_millis().max(10) as u64;
    let config = openraft::Config {
        cluster_name: "hoardhaven".into(),
        heartbeat_interval: hb,
        election_timeout_min: hb * 6,
        election_timeout_max: hb * 12,
        install_snapshot_timeout: 30_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every),
        max_in_snapshot_log_to_keep: 100,
        snapshot_max_chunk_size: 4 * 1024 * 1024,
        ..Default::default()
    }
    .validate()
    .context("raft settings")?;
    let client_tls = match &opts.tls {
        Some(t) => t.client.clone(),
        // No TLS here: an `https://` peer (of a mixed cluster) is refused at its handshake.
        None => crate::tls::peer_client_config(rustls::RootCertStore::empty())?,
    };
    let client = PeerClient::new(opts.secret.clone(), client_tls);
    let raft = Raft::new(
        opts.node_id,
        Arc::new(config),
        Factory {
            client: client.clone(),
        },
        log.clone(),
        sm.clone(),
    )
    .await
    .context("starting raft")?;
    let info = NodeInfo {
        peer_url: opts.peer_url.clone(),
        api_url: opts.api_url.clone(),
    };
    let node = Arc::new(Node {
        id: opts.node_id,
        info: info.clone(),
        raft: raft.clone(),
        sm,
        log,
        proposer: Proposer::start(raft.clone(), opts.timeout),
        reads: ReadIndex::new(raft.clone(), opts.timeout),
        client,
        secret: opts.secret.clone(),
        timeout: opts.timeout,
    });
    let listener = tokio::net::TcpListener::bind(opts.peer_listen)
        .await
        .with_context(|| format!("cannot listen on {} (peer_listen)", opts.peer_listen))?;
    let transport = Transport {
        header_read_timeout: PEER_IDLE,
        max_head_bytes: 64 * 1024,
        tls: match &opts.tls {
            Some(t) => Some(crate::tls::acceptor(Arc::clone(&t.certs), false)?),
            None => None,
        },
        http2: None,
    };
    let app = super::peer::router(Arc::clone(&node));
    let sd = shutdown.clone();
    tokio::spawn(async move {
        let r =
            crate::transport::serve(listener, app, transport, async move { sd.wait().await }).await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "peer listener ended");
        }
    });
    tracing::info!(node_id = opts.node_id, peer = %opts.peer_listen, "raft peer listener up");
    tokio::spawn(super::metrics::watch(raft.clone()));
    let initialized = raft.is_initialized().await.map_err(|e| anyhow!("{e}"))?;
    if opts.init && !initialized {
        node.init()
            .await
            .map_err(|e| anyhow!("cluster init: {e}"))?;
        tracing::info!(node_id = opts.node_id, "initialized a one-voter cluster");
    }
    if let Some(url) = &opts.join
        && !initialized
    {
        join(&node, url, &shutdown).await?;
    }
    Ok(node)
}

async fn join(node: &Node, url: &str, shutdown: &Shutdown) -> anyhow::Result<()> {
    let op = AdminOp::Join {
        id: node.id,
        info: node.info.clone(),
    };
    let mut target = url.to_string();
    loop {
        let r: Result<Result<String, AdminError>, PeerError> = node
            .client
            .call(&target, "admin", &op, node.timeout * 13)
            .await;
        match r {
            Ok(Ok(msg)) => {
                tracing::info!(via = %target, "{msg}");
                return Ok(());
            }
            Ok(Err(AdminError::NotLeader {
                leader: Some((_, info)),
            })) => target = info.peer_url,
            Ok(Err(AdminError::Conflict(m))) | Ok(Err(AdminError::NotFound(m))) => {
                return Err(anyhow!("joining the cluster through {url}: {m}"));
            }
            // A wrong secret or a certificate this node does not trust will not fix itself.
            Err(e @ (PeerError::Unauthorized { .. } | PeerError::Tls { .. })) => {
                return Err(anyhow!("joining the cluster through {url}: {e}"));
            }
            Ok(Err(e)) => {
                tracing::warn!(via = %target, error = %e, "join not accepted yet; retrying");
                target = url.to_string();
            }
            Err(e) => {
                tracing::warn!(via = %target, error = %e, "join not accepted yet; retrying");
                target = url.to_string();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = shutdown.wait() => return Err(anyhow!("stopped before joining the cluster")),
        }
    }
}

/// Waits until this node knows a leader (for tests and start-up logs).
pub async fn wait_leader(raft: &Raft, timeout: Duration) -> bool {
    raft.wait(Some(timeout))
        .metrics(
            |m| m.current_leader.is_some() && m.state != ServerState::Candidate,
            "leader",
        )
        .await
        .is_ok()
}
