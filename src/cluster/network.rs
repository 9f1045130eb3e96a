//! Raft RPCs to other nodes over HTTP (the client side), and the calls a node makes to the
//! leader (forwarded writes, read index, membership changes, join).
//!
//! Owns [`PeerClient`]: one pooled reqwest client per node, separate from client traffic,
//! that POSTs postcard-encoded bodies to `<peer_url>/raft/<rpc>` with the cluster secret as a
//! bearer token; and [`Network`], openraft's per-target connection made from it. The routes
//! answering these calls are in [`super::peer`].

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{NodeId, NodeInfo, TypeConfig};

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made: the request was certainly not delivered.
    #[error("peer {url} not reached: {reason}")]
    NotSent {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The connection broke or timed out after the request may have been delivered.
    #[error("peer {url} unreachable: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The peer refused the cluster secret.
    #[error("peer {url} refused the cluster secret (HTTP {status})")]
    Unauthorized {
        /// The URL called.
        url: String,
        /// Status.
        status: u16,
    },
    /// The peer answered something else than a body of ours.
    #[error("peer {url} answered HTTP {status}: {body}")]
    Status {
        /// The URL called.
        url: String,
        /// Status.
        status: u16,
        /// Body text.
        body: String,
    },
    /// The body did not decode.
    #[error("peer {url}: undecodable answer: {reason}")]
    Decode {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
}

/// The HTTP client between peers.
#[derive(Clone, Debug)]
pub struct PeerClient {
    http: reqwest::Client,
    secret: Option<String>,
}

impl PeerClient {
    /// A client presenting `secret` (when set).
    ///
    /// # Errors
    /// The client cannot be built.
    pub fn new(secret: Option<String>) -> Result<PeerClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(PeerClient { http, secret })
    }

    /// POSTs `body` (postcard) to `<base>/raft/<rpc>` and decodes the answer.
    ///
    /// # Errors
    /// [`PeerError`].
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        base: &str,
        rpc: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let url = format!("{}/raft/{rpc}", base.trim_end_matches('/'));
        let bytes = postcard::to_allocvec(body).map_err(|e| PeerError::Decode {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let mut req = self
            .http
            .post(&url)
            .timeout(timeout)
            .header("content-type", "application/octet-stream")
            .body(bytes);
        if let Some(s) = &self.secret {
            req = req.header("authorization", format!("Bearer {s}"));
        }
        let resp = req.send().await.map_err(|e| {
            let reason = e.to_string();
            if e.is_connect() {
                PeerError::NotSent {
                    url: url.clone(),
                    reason,
                }
            } else {
                PeerError::Unreachable {
                    url: url.clone(),
                    reason,
                }
            }
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| PeerError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        match status {
            200 => postcard::from_bytes(&body).map_err(|e| PeerError::Decode {
                url,
                reason: e.to_string(),
            }),
            401 | 403 => Err(PeerError::Unauthorized { url, status }),
            _ => Err(PeerError::Status {
                url,
                status,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            }),
        }
    }
}

/// openraft's network factory.
pub struct Factory {
    /// The shared client.
    pub client: PeerClient,
}

/// A connection to one target.
pub struct Network {
    client: PeerClient,
    target: NodeId,
    node: NodeInfo,
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Network {
        Network {
            client: self.client.clone(),
            target,
            node: node.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>;

impl Network {
    async fn rpc<Req, Resp, E>(
        &self,
        name: &str,
        req: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let r: Result<Result<Resp, RaftError<NodeId, E>>, PeerError> = self
            .client
            .call(&self.node.peer_url, name, req, timeout)
            .await;
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
            Err(e @ (PeerError::Unreachable { .. } | PeerError::NotSent { .. })) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.rpc("append", &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        super::metrics::snapshot_chunk_sent();
        // The last chunk makes the receiver rebuild its engine before answering: allow for it.
        let ttl = if rpc.done {
            option.hard_ttl().max(Duration::from_secs(600))
        } else {
            option.hard_ttl()
        };
        self.rpc("snapshot", &rpc, ttl).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.rpc("vote", &rpc, option.hard_ttl()).await
    }
}
