//! The accept loop: TCP connections, optional TLS, HTTP/1.1 through hyper, graceful stop.
//!
//! Owns [`Transport`] (connection-level settings) and [`serve`]. It replaces `axum::serve`
//! because that exposes neither a header-read timeout nor a cap on the request head, and
//! cannot terminate TLS. Each connection runs in its own task: a slow TLS handshake or a
//! client dribbling its headers (slowloris) holds only its own task, and is closed when the
//! header-read timeout passes. The same timeout closes keep-alive connections left idle
//! between requests. On stop, the listener is dropped at once and open connections finish
//! their current request, then close.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
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
