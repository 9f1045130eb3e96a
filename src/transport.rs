//! The accept loop: TCP connections, optional TLS, HTTP/1.1 and HTTP/2 through hyper,
//! graceful stop.
//!
//! Owns [`Transport`] (connection-level settings) and [`serve`]. It replaces `axum::serve`
//! because that exposes neither a header-read timeout nor a cap on the request head, and
//! cannot terminate TLS. Each connection runs in its own task: a slow TLS handshake or a
//! client dribbling its headers (slowloris) holds only its own task, and is closed when the
//! header-read timeout passes. The same timeout closes keep-alive connections left idle
//! between requests. On stop, the listener is dropped at once and open connections finish
//! their current request, then close.
//!
//! HTTP/2 ([`crate::transport::h2`]): over TLS when ALPN picks `h2`, and in clear text (h2c)
//! when the first 24 bytes are the HTTP/2 connection preface ("prior knowledge"); anything
//! else is HTTP/1.1. Both run on the same listener. HTTP/2 gets the same protections: the
//! preface must arrive within the header-read timeout, the header block is capped at the same
//! head size, streams per connection and flow-control windows are bounded ([`Http2Limits`]),
//! and a connection with no request in flight for the header-read timeout is sent GOAWAY and
//! closed (hyper has no header-read timeout for HTTP/2, so this is what stops a client that
//! opens a connection, or starts a header block, and then dribbles). The router's load
//! shedding and request timeout apply to every stream as to every HTTP/1.1 request.
//!
//! Lingering close: every connection's socket is wrapped in a [`Lingering`] stream. When
//! hyper lets go of it (after an early refusal such as 431, 414, 413 or 400, when the client
//! may still be sending the request it refused), the write side is shut (FIN) and the input
//! is read and discarded for at most [`LINGER_TIME`] or [`LINGER_BYTES`], until the client
//! closes. Closing a socket with unread input makes the kernel send a reset, which can destroy
//! the answer before the client reads it; draining first is what nginx's `lingering_close`
//! does.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

pub mod h2;

pub use h2::Http2Limits;
use h2::{Graceful, Protocol};

/// Connection-level settings.
#[derive(Clone)]
pub struct Transport {
    /// Longest time to receive a request's head (and a TLS handshake, and the idle time
    /// between keep-alive requests).
    pub header_read_timeout: Duration,
    /// Hard cap on the request head in bytes (request line and headers); hyper answers 431
    /// above it before the router sees anything. The router's finer limits sit below it.
    pub max_head_bytes: usize,
    /// TLS, when configured (its ALPN list decides whether `h2` is offered).
    pub tls: Option<TlsAcceptor>,
    /// HTTP/2 limits; `None` = HTTP/1.1 only.
    pub http2: Option<Http2Limits>,
}

/// Longest time a closed connection's input is drained.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes drained from a closed connection's input before it is reset anyway.
pub const LINGER_BYTES: usize = 4 << 20;

/// A TCP stream that, when dropped, drains its input before closing (see the module doc).
pub struct Lingering {
    inner: Option<TcpStream>,
}

impl Lingering {
    /// Wraps `tcp`.
    pub fn new(tcp: TcpStream) -> Self {
        Lingering { inner: Some(tcp) }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(tcp) = self.inner.take() else {
            return;
        };
        // No runtime (the process is exiting): close at once.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(drain(tcp));
        }
    }
}

/// Shuts the write side (the answer is sent, then FIN), then reads and discards until the
/// client closes, [`LINGER_TIME`] passes or [`LINGER_BYTES`] were read.
async fn drain(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0usize;
    while read < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => break, // EOF, error or time up
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

/// Accept errors that concern one connection, not the listener.
fn per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset
    )
}

/// What every connection task gets: the protocol builders and the stop signal.
#[derive(Clone)]
struct Shared {
    app: Router,
    http1: http1::Builder,
    http2: Option<http2::Builder<TokioExecutor>>,
    idle: Duration,
    tls: Option<TlsAcceptor>,
    /// Turns `true` when the server stops.
    stop: watch::Receiver<bool>,
    /// Never sent on: the server waits until every clone is dropped (every connection ended).
    _alive: mpsc::Sender<()>,
}

/// Serves `app` on `listener` until `stop` resolves, then lets open connections finish.
///
/// # Errors
/// None today (accept errors are logged and retried); the `Result` keeps the caller's shape.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    transport: Transport,
    stop: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(transport.header_read_timeout)
        .max_header_size(transport.max_head_bytes.max(1024))
        .keep_alive(true);
    let shared = Shared {
        app,
        http1,
        http2: transport
            .http2
            .map(|l| h2::builder(l, transport.max_head_bytes.max(1024))),
        idle: transport.header_read_timeout,
        tls: transport.tls.clone(),
        stop: stop_rx,
        _alive: alive_tx,
    };
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(e) if per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        tokio::spawn(connection(tcp, shared.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(shared);
    // Every connection task holds a sender; `None` once the last one ended.
    let _ = alive_rx.recv().await;
    Ok(())
}

/// One connection: TLS handshake or preface sniffing (both bounded by the header-read
/// timeout), then HTTP/1.1 or HTTP/2 until it ends or the server stops.
async fn connection(tcp: TcpStream, shared: Shared) {
    let limit = shared.idle;
    match shared.tls.clone() {
        None => {
            let proto = match &shared.http2 {
                Some(_) => match tokio::time::timeout(limit, h2::sniff(&tcp)).await {
                    Ok(Ok(Some(p))) => p,
                    Ok(Ok(None)) => return, // closed before sending anything
                    Ok(Err(e)) => return tracing::debug!(error = %e, "connection failed"),
                    Err(_) => return tracing::debug!("no request within the header-read timeout"),
                },
                None => Protocol::Http1,
            };
            run(Lingering::new(tcp), proto, shared).await;
        }
        Some(tls) => match tokio::time::timeout(limit, tls.accept(Lingering::new(tcp))).await {
            Ok(Ok(stream)) => {
                let proto = match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") if shared.http2.is_some() => Protocol::Http2,
                    _ => Protocol::Http1,
                };
                run(stream, proto, shared).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        },
    }
}

/// Serves one connection in `proto`.
async fn run<I>(io: I, proto: Protocol, shared: Shared)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stop = shared.stop.clone();
    match (proto, &shared.http2) {
        (Protocol::Http2, Some(builder)) => {
            let activity = std::sync::Arc::new(h2::Activity::new());
            let service = h2::tracked(shared.app.clone(), std::sync::Arc::clone(&activity));
            let conn = builder.serve_connection(TokioIo::new(io), service);
            drive(conn, stop, Some((activity, shared.idle))).await;
        }
        _ => {
            let service = TowerToHyperService::new(shared.app.clone());
            let conn = shared.http1.serve_connection(TokioIo::new(io), service);
            drive(conn, stop, None).await;
        }
    }
}

/// Runs `conn` to its end. When the server stops, or (HTTP/2) when nothing was in flight for
/// the idle limit, the connection is asked to finish gracefully (HTTP/1.1: after the current
/// request; HTTP/2: GOAWAY, open streams finish); an idle HTTP/2 connection that still has not
/// ended one idle limit after its GOAWAY is dropped.
async fn drive<C: Graceful>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    idle: Option<(std::sync::Arc<h2::Activity>, Duration)>,
) {
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().begin_shutdown();
    }
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let mut hard_deadline = far;
    let next_check = |idle: &Option<(std::sync::Arc<h2::Activity>, Duration)>| match idle {
        Some((a, limit)) => a.idle_deadline(*limit),
        None => far,
    };
    let check = tokio::time::sleep_until(next_check(&idle));
    tokio::pin!(check);
    loop {
        tokio::select! {
            r = conn.as_mut() => return log_end(r),
            changed = stop.changed(), if !stopping => {
                // A closed channel means the server is gone too.
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    conn.as_mut().begin_shutdown();
                }
            }
            () = &mut check, if hard_deadline == far => {
                match &idle {
                    Some((a, limit)) if a.is_idle(*limit) => {
                        tracing::debug!("HTTP/2 connection idle: GOAWAY");
                        conn.as_mut().begin_shutdown();
                        hard_deadline = tokio::time::Instant::now() + *limit;
                    }
                    _ => check.as_mut().reset(next_check(&idle)),
                }
            }
            () = tokio::time::sleep_until(hard_deadline), if hard_deadline != far => {
                tracing::debug!("HTTP/2 connection still open after GOAWAY: closed");
                return;
            }
        }
    }
}

fn log_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        // Timeouts, resets and malformed requests are the client's doing: debug, not warn.
        tracing::debug!(error = %e, "connection ended");
    }
}
