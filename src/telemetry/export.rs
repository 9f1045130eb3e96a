//! The HTTP client the OTLP exporter posts spans with.
//!
//! Owns [`RuntimeClient`]. The SDK's batch span processor runs on a thread of its own and
//! drives the exporter's future with a plain executor, outside tokio, where hyper's sockets
//! cannot be polled. So each export is spawned onto the server's tokio runtime (a handle taken
//! at start-up) and the processor's thread only awaits its result. One HTTP/1.1 connection per
//! export (a batch every few seconds at most), plain `http://` only: collectors normally sit
//! on loopback or in the same cluster, and a TLS collector is reached through a local agent.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use tokio::net::TcpStream;

/// Longest time one export may take, connection included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from the collector.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// An [`HttpClient`] whose requests run on a tokio runtime, called from any thread.
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    rt: tokio::runtime::Handle,
}

impl RuntimeClient {
    /// A client running its requests on `rt`.
    pub fn new(rt: tokio::runtime::Handle) -> Self {
        RuntimeClient { rt }
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let task = self
            .rt
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, post(request)).await });
        match task.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("OTLP export timed out".into()),
            Err(e) => Err(format!("OTLP export task: {e}").into()),
        }
    }
}

async fn post(request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("http") {
        return Err(format!("{uri}: only http:// collectors are supported").into());
    }
    let host = uri.host().ok_or("the OTLP endpoint has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host, port)).await?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (mut parts, body) = request.into_parts();
    if let Some(a) = uri.authority()
        && let Ok(v) = hyper::header::HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(hyper::header::HOST, v);
    }
    // The connection is to the collector itself: the request target is the path.
    if let Some(pq) = uri.path_and_query()
        && let Ok(target) = pq.as_str().parse()
    {
        parts.uri = target;
    }
    let answer = sender
        .send_request(hyper::Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = answer.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the collector's answer: {e}"))?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}
