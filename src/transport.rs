//! The accept loop: TCP connections, optional TLS, HTTP/1.1 through hyper, graceful stop.
//!
//! Owns [`Transport`] (connection-level settings) and [`serve`]. It replaces `axum::serve`
//! because that exposes neither a header-read timeout nor a cap on the request head, and
//! cannot terminate TLS. Each connection runs in its own task: a slow TLS handshake or a
//! client dribbling its headers (slowloris) holds only its own task, and is closed when the
//! header-read timeout passes. The same timeout closes keep-alive connections left idle
//! between requests. On stop, the listener is dropped at once and open connections finish
//! their current request, then close.
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
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Connection-level settings.
#[derive(Clone)]
pub struct Transport {
    /// Longest time to receive a request's head (and a TLS handshake, and the idle time
    /// between keep-alive requests).
    pub header_read_timeout: Duration,
    /// Hard cap on the request head in bytes (request line and headers); hyper answers 431
    /// above it before the router sees anything. The router's finer limits sit below it.
    pub max_head_bytes: usize,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
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
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(transport.header_read_timeout)
        .max_header_size(transport.max_head_bytes.max(1024))
        .keep_alive(true);
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
        let tcp = Lingering::new(tcp);
        let watcher = graceful.watcher();
        let service = TowerToHyperService::new(app.clone());
        let http = http.clone();
        match transport.tls.clone() {
            None => {
                tokio::spawn(async move {
                    let conn = http.serve_connection(TokioIo::new(tcp), service);
                    log_end(watcher.watch(conn).await);
                });
            }
            Some(tls) => {
                let limit = transport.header_read_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(limit, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            log_end(watcher.watch(conn).await);
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn log_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        // Timeouts, resets and malformed requests are the client's doing: debug, not warn.
        tracing::debug!(error = %e, "connection ended");
    }
}
