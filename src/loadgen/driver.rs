//! Drives one phase of a load-tool run: N workers, each with its own HTTP/1.1 keep-alive
//! connection (like wrk: no pool, no connection sharing), sending requests back to back until a
//! deadline or a request budget is reached, each recording latencies in its own histogram.
//!
//! Owns connections (plain TCP or TLS, [`Dialer`]) and timing; what to send comes from
//! [`super::workload`]. A worker that cannot connect gives up with exit status 6
//! (unreachable); a 401 or 403 stops the run at once with status 4 (no later request can
//! succeed with the same token); a long run of other failures ends it naming the last one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::report::new_histogram;
use super::workload::{Rng, Test, Workload};
use crate::cli::client::wire::{Sniff, speaks_tls};
use crate::cli::exit::{self, Exit};

/// How a phase picks keys.
#[derive(Clone, Copy, Debug)]
pub enum KeyOrder {
    /// Uniformly at random over the key space.
    Random,
    /// Every key once, in order, shared out among the workers (used to preload).
    EachOnce,
}

/// One phase: what to send, for how long, through how many connections.
#[derive(Clone, Debug)]
pub struct Phase {
    /// The test whose operations are sent.
    pub test: Test,
    /// Concurrent connections.
    pub connections: usize,
    /// Stop after this long (ignored when `requests` is set).
    pub duration: Duration,
    /// Stop after this many requests in all.
    pub requests: Option<u64>,
    /// Key order.
    pub order: KeyOrder,
}

/// Counters the progress bar reads while a phase runs.
#[derive(Debug, Default)]
pub struct Live {
    /// Requests finished (successful or not).
    pub done: AtomicU64,
    /// Requests handed out (for request budgets and `EachOnce`).
    issued: AtomicU64,
    /// Set when any worker gives up, so the others stop too.
    abort: AtomicBool,
}

/// What a phase measured: the merged histogram, the error count and the wall-clock time.
pub struct Outcome {
    /// Latencies of successful requests, in µs.
    pub hist: Histogram<u64>,
    /// Failed requests.
    pub errors: u64,
    /// Wall-clock length of the phase.
    pub elapsed: Duration,
    /// The last failure, when there was one: the exit status it maps to and what it was.
    pub last_error: Option<(u8, String)>,
}

type Sender = SendRequest<Full<Bytes>>;

/// How workers reach the server: `host:port`, and TLS for `https://`.
#[derive(Clone)]
pub struct Dialer {
    /// `host:port` to connect to (brackets of an IPv6 literal removed).
    pub addr: String,
    /// The connector and the name the certificate must carry, for `https://`.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Dialer {
    /// Plain TCP to `addr`.
    pub fn plain(addr: impl Into<String>) -> Self {
        Dialer {
            addr: addr.into(),
            tls: None,
        }
    }

    /// A connection; for plain HTTP also the cell saying what the server sent first.
    async fn connect(&self) -> Result<(Sender, Option<Arc<AtomicU16>>), Exit> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            Exit::new(exit::UNREACHABLE, format!("{what} {}: {e}", self.addr))
        };
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| unreachable("cannot connect to", &e))?;
        let _ = stream.set_nodelay(true);
        let (sender, first) = match &self.tls {
            None => {
                let (io, first) = Sniff::new(stream);
                (handshake(io).await, Some(first))
            }
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| unreachable("TLS handshake failed with", &e))?;
                (handshake(tls).await, None)
            }
        };
        let sender = sender.map_err(|e| unreachable("HTTP handshake failed with", &e))?;
        Ok((sender, first))
    }
}

/// An HTTP/1.1 client connection over `io`, driven by its own task.
async fn handshake<S>(io: S) -> Result<Sender, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        // The connection ends when the sender is dropped or the server closes it; a worker
        // notices a closed connection through its sender and reconnects.
        let _ = conn.await;
    });
    Ok(sender)
}

/// How one request failed.
enum Failure {
    /// The server answered with this status.
    Status(StatusCode),
    /// No answer: the connection failed.
    Transport(String),
}

/// Consecutive failures after which a worker gives up (the server is gone).
const MAX_CONSECUTIVE_FAILURES: u32 = 200;

async fn worker(
    wl: Arc<Workload>,
    dialer: Arc<Dialer>,
    phase: Phase,
    seed: u64,
    deadline: Instant,
    live: Arc<Live>,
) -> anyhow::Result<(Histogram<u64>, u64, Option<(u8, String)>)> {
    let mut hist = new_histogram()?;
    let mut errors = 0u64;
    let mut failures = 0u32;
    let mut rng = Rng::new(seed);
    let mut last_error = None;
    let (mut sender, mut first) = dialer.connect().await?;
    let budget = match phase.order {
        KeyOrder::EachOnce => Some(wl.keys),
        KeyOrder::Random => phase.requests,
    };
    loop {
        if live.abort.load(Ordering::Relaxed) {
            break;
        }
        let n = match budget {
            Some(b) => {
                let n = live.issued.fetch_add(1, Ordering::Relaxed);
                if n >= b {
                    break;
                }
                n
            }
            None if Instant::now() >= deadline => break,
            None => 0,
        };
        let key = match phase.order {
            KeyOrder::EachOnce => n,
            KeyOrder::Random => rng.next_u64() % wl.keys,
        };
        let op = wl.pick(phase.test, &mut rng);
        let req = wl.request(op, key)?;
        let t0 = Instant::now();
        let outcome = match sender.ready().await {
            Ok(()) => match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.into_body().collect().await {
                        Ok(_) if status.is_success() => Ok(()),
                        Ok(_) => Err(Failure::Status(status)),
                        Err(e) => Err(Failure::Transport(e.to_string())),
                    }
                }
                Err(e) => Err(Failure::Transport(e.to_string())),
            },
            Err(e) => Err(Failure::Transport(e.to_string())),
        };
        let micros = t0.elapsed().as_micros().max(1) as u64;
        live.done.fetch_add(1, Ordering::Relaxed);
        let failure = match outcome {
            Ok(()) => {
                failures = 0;
                hist.saturating_record(micros);
                continue;
            }
            Err(f) => f,
        };
        if let Failure::Status(s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)) = failure {
            live.abort.store(true, Ordering::Relaxed);
            let hint = if s == StatusCode::UNAUTHORIZED {
                "unauthorized: check the token (--token or HOARDHAVEN_TOKEN)"
            } else {
                "forbidden: the token's role may not do this"
            };
            return Err(Exit::new(
                exit::REFUSED,
                format!(
                    "server {} answered {s} to {}: {hint}",
                    dialer.addr,
                    op.name()
                ),
            )
            .into());
        }
        if matches!(failure, Failure::Transport(_)) && first.as_deref().is_some_and(speaks_tls) {
            live.abort.store(true, Ordering::Relaxed);
            return Err(Exit::new(
                exit::UNREACHABLE,
                format!(
                    "{}: this port speaks TLS: use https:// (and --ca-cert FILE for a private CA)",
                    dialer.addr
                ),
            )
            .into());
        }
        errors += 1;
        failures += 1;
        let (code, last) = match &failure {
            Failure::Status(s) if s.is_server_error() => (exit::SERVER, s.to_string()),
            Failure::Status(s) => (exit::REFUSED, s.to_string()),
            Failure::Transport(e) => (exit::UNREACHABLE, e.clone()),
        };
        if failures >= MAX_CONSECUTIVE_FAILURES {
            live.abort.store(true, Ordering::Relaxed);
            return Err(Exit::new(
                code,
                format!(
                    "{failures} requests in a row failed against {}; giving up (last: {last})",
                    dialer.addr
                ),
            )
            .into());
        }
        last_error = Some((code, last));
        if sender.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Ok((s, f)) = dialer.connect().await {
                sender = s;
                first = f;
            }
        }
    }
    Ok((hist, errors, last_error))
}

/// Runs one phase to its end and merges what the workers measured.
///
/// # Errors
/// When no connection can be made, or a worker sees only failures for a long stretch.
pub async fn run_phase(
    wl: Arc<Workload>,
    dialer: Arc<Dialer>,
    phase: Phase,
    seed: u64,
    live: Arc<Live>,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    // A preload has no deadline (Duration::MAX): a year stands in for "never".
    let deadline = start
        .checked_add(phase.duration)
        .unwrap_or_else(|| start + Duration::from_secs(365 * 86_400));
    let mut handles = Vec::with_capacity(phase.connections);
    for w in 0..phase.connections.max(1) {
        handles.push(tokio::spawn(worker(
            wl.clone(),
            dialer.clone(),
            phase.clone(),
            seed.wrapping_mul(1_000_003).wrapping_add(w as u64),
            deadline,
            live.clone(),
        )));
    }
    let mut hist = new_histogram()?;
    let mut errors = 0u64;
    let mut last_error = None;
    let mut first_error = None;
    for h in handles {
        match h.await {
            Ok(Ok((wh, we, wl))) => {
                hist.add(&wh)
                    .map_err(|e| anyhow!("merging histograms: {e}"))?;
                errors += we;
                if wl.is_some() {
                    last_error = wl;
                }
            }
            Ok(Err(e)) => {
                live.abort.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow!("worker task failed: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Outcome {
        hist,
        errors,
        elapsed: start.elapsed(),
        last_error,
    })
}
