//! HTTP/2 on the shared listener: the protocol choice, the limits, and the idle guard.
//!
//! Owns [`Http2Limits`] (streams per connection, flow-control windows), [`builder`] (hyper's
//! HTTP/2 server with those limits and the same header-block cap as HTTP/1.1), [`sniff`] (h2c
//! "prior knowledge": the 24-byte connection preface, peeked without consuming it) and
//! [`Activity`] (requests in flight on one connection and when the last one ended, which the
//! accept loop in [`super`] uses to send GOAWAY to a connection that sits idle).
//!
//! Left at hyper's defaults on purpose: the cap on streams reset by the client before they are
//! served (20: the "rapid reset" attack, CVE-2023-44487) and on streams the server had to reset
//! for the client's errors (1,024), after which the connection is closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::ServiceExt;

/// The HTTP/2 connection preface a client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often [`sniff`] looks again while the bytes so far are a strict prefix of the preface
/// (a client that split its first write; bounded by the caller's header-read timeout).
const SNIFF_POLL: Duration = Duration::from_millis(5);

/// Limits of an HTTP/2 connection (settings `http2.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Limits {
    /// Streams a client may have open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Flow-control window of each stream in bytes (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window_bytes: u32,
    /// Flow-control window of the whole connection in bytes.
    pub connection_window_bytes: u32,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 128,
            stream_window_bytes: 1 << 20,
            connection_window_bytes: 4 << 20,
        }
    }
}

/// The protocol of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (also HTTP/1.0).
    Http1,
    /// HTTP/2, by ALPN or prior knowledge.
    Http2,
}

/// hyper's HTTP/2 server with `limits`; `max_head_bytes` caps the decoded header block
/// (SETTINGS_MAX_HEADER_LIST_SIZE), as `max_header_size` caps an HTTP/1.1 head.
pub fn builder(limits: Http2Limits, max_head_bytes: usize) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.connection_window_bytes)
        .max_header_list_size(u32::try_from(max_head_bytes).unwrap_or(u32::MAX));
    b
}

/// Which protocol a clear-text connection speaks, judged from its first bytes without
/// consuming them: the preface means HTTP/2, any byte that departs from it means HTTP/1.1.
/// `None` when the client closed before sending anything.
///
/// # Errors
/// The socket's error.
pub async fn sniff(tcp: &TcpStream) -> io::Result<Option<Protocol>> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(Some(Protocol::Http1));
        }
        if n == PREFACE.len() {
            return Ok(Some(Protocol::Http2));
        }
        // A strict prefix of the preface: `peek` would return the same bytes at once, so wait
        // a little for the rest.
        tokio::time::sleep(SNIFF_POLL).await;
    }
}

/// Requests in flight on one HTTP/2 connection and when the connection was last busy.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// A connection that has just opened (its idle time starts now).
    pub fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    /// Nothing in flight and nothing ended for `limit`.
    pub fn is_idle(&self, limit: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.last.lock().elapsed() >= limit
    }

    /// When the connection would become idle if nothing happened until then.
    pub fn idle_deadline(&self, limit: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + limit;
        }
        *self.last.lock() + limit
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

/// One request in flight; dropping it marks the connection busy until now.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The hyper service of one HTTP/2 connection: `app`, counting requests in `activity` until
/// their answer's head is sent (a request that times out or is shed ends too).
pub fn tracked(
    app: Router,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
             + Send
             + 'static,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = activity.begin();
        let call = app.clone().oneshot(req.map(axum::body::Body::new));
        async move {
            let answer = call.await;
            drop(guard);
            answer
        }
    })
}

/// A hyper server connection that can be asked to finish gracefully (HTTP/1.1 or HTTP/2).
pub trait Graceful: Future<Output = Result<(), hyper::Error>> {
    /// Finish the current request (HTTP/1.1) or send GOAWAY and finish open streams (HTTP/2).
    fn begin_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self);
    }
}

impl<I, S, B, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_means_http2_and_anything_else_http1() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        for (first, want) in [
            (&PREFACE[..], Some(Protocol::Http2)),
            (&b"PUT /kv/a HTTP/1.1\r\n"[..], Some(Protocol::Http1)),
            (&b"GET / HTTP/1.1\r\n"[..], Some(Protocol::Http1)),
        ] {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            let (server, _) = listener.accept().await.expect("accept");
            client.write_all(first).await.expect("write");
            assert_eq!(sniff(&server).await.ok().flatten(), want);
            // Peeked, not consumed: hyper still reads every byte.
            let mut again = vec![0u8; first.len()];
            assert_eq!(server.peek(&mut again).await.ok(), Some(first.len()));
        }
    }

    #[test]
    fn a_connection_is_idle_only_with_nothing_in_flight() {
        let a = Arc::new(Activity::new());
        let guard = a.begin();
        assert!(!a.is_idle(Duration::ZERO));
        drop(guard);
        assert!(a.is_idle(Duration::ZERO));
        assert!(!a.is_idle(Duration::from_secs(3600)));
    }
}
