//! Raft RPCs to other nodes over HTTP (the client side), and the calls a node makes to the
//! leader (forwarded writes, read index, membership changes, join).
//!
//! Owns [`PeerClient`]: one pooled HTTP/1.1 client per node (hyper-util's, with hyper-rustls
//! for `https://` peers), separate from client traffic, that POSTs postcard-encoded bodies to
//! `<peer_url>/raft/<rpc>` with the cluster secret as a bearer token; and [`Network`],
//! openraft's per-target connection made from it. The routes answering these calls are in
//! [`super::peer`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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
    /// The TLS handshake failed (the peer's certificate is not trusted, names another host,
    /// or the peer does not speak TLS): nothing was sent.
    #[error("peer {url}: TLS failed: {reason}")]
    Tls {
        /// The URL called.
        url: String,
        /// Why (rustls' words).
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

/// The HTTP client between peers: HTTP/1.1 over a connection pool, `https://` peer URLs
/// through rustls (see [`PeerClient::new`]).
#[derive(Clone, Debug)]
pub struct PeerClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    secret: Option<String>,
}

impl PeerClient {
    /// A client presenting `secret` (when set) that calls `http://` peer URLs in clear text
    /// and `https://` ones through TLS set up by `tls` ([`crate::tls::peer_client_config`]).
    pub fn new(secret: Option<String>, tls: rustls::ClientConfig) -> PeerClient {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_secs(2)));
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
        PeerClient { http, secret }
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
        let mut req = Request::post(&url).header(CONTENT_TYPE, "application/octet-stream");
        if let Some(s) = &self.secret {
            req = req.header(AUTHORIZATION, format!("Bearer {s}"));
        }
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| PeerError::NotSent {
                url: url.clone(),
                reason: format!("bad peer URL: {e}"),
            })?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| sent_error(&url, &e))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| PeerError::Unreachable {
                    url: url.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, PeerError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| PeerError::Unreachable {
                url: url.clone(),
                reason: format!("no answer within {timeout:?}"),
            })??;
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

/// `NotSent` when the request certainly did not leave (no connection, or a TLS handshake
/// that failed: the peer's certificate refused), `Tls` naming the certificate problem,
/// `Unreachable` otherwise.
fn sent_error(url: &str, e: &hyper_util::client::legacy::Error) -> PeerError {
    if let Some(tls) = rustls_error(e) {
        return PeerError::Tls {
            url: url.to_owned(),
            reason: tls.to_string(),
        };
    }
    let reason = error_chain(e);
    if e.is_connect() {
        PeerError::NotSent {
            url: url.to_owned(),
            reason,
        }
    } else {
        PeerError::Unreachable {
            url: url.to_owned(),
            reason,
        }
    }
}

/// The rustls error somewhere under `e`. hyper-rustls wraps it in an `io::Error` inside
/// another, and an `io::Error`'s `source()` skips what it wraps, so both ways down are tried.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let wrapped = e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .and_then(|inner| rustls_error(inner));
    wrapped.or_else(|| e.source().and_then(rustls_error))
}

/// An error and its causes, `: `-separated (hyper's own message is only "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        s.push_str(": ");
        s.push_str(&err.to_string());
        source = err.source();
    }
    s
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
            Err(
                e @ (PeerError::Unreachable { .. }
                | PeerError::NotSent { .. }
                | PeerError::Tls { .. }),
            ) => Err(RPCError::Unreachable(Unreachable::new(&e))),
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
