//! Drives one phase of a load-tool run: N workers, each with its own HTTP/1.1 keep-alive
//! connection (like wrk: no pool, no connection sharing), sending requests back to back until a
//! deadline or a request budget is reached, each recording latencies in its own histogram.
//!
//! Owns connections and timing; what to send comes from [`super::workload`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::report::new_histogram;
use super::workload::{Rng, Test, Workload};

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
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when the sender is dropped or the server closes it; a worker
        // notices a closed connection through its sender and reconnects.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Consecutive failures after which a worker gives up (the server is gone).
const MAX_CONSECUTIVE_FAILURES: u32 = 200;

async fn worker(
    wl: Arc<Workload>,
    addr: Arc<str>,
    phase: Phase,
    seed: u64,
    deadline: Instant,
    live: Arc<Live>,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut hist = new_histogram()?;
    let mut errors = 0u64;
    let mut failures = 0u32;
    let mut rng = Rng::new(seed);
    let mut sender = connect(&addr).await?;
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
        let ok = match sender.ready().await {
            Ok(()) => match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.into_body().collect().await;
                    body.is_ok() && status.is_success()
                }
                Err(_) => false,
            },
            Err(_) => false,
        };
        let micros = t0.elapsed().as_micros().max(1) as u64;
        live.done.fetch_add(1, Ordering::Relaxed);
        if ok {
            failures = 0;
            hist.saturating_record(micros);
            continue;
        }
        errors += 1;
        failures += 1;
        if failures >= MAX_CONSECUTIVE_FAILURES {
            live.abort.store(true, Ordering::Relaxed);
            return Err(anyhow!(
                "{failures} requests in a row failed against {addr}; giving up"
            ));
        }
        if sender.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Ok(s) = connect(&addr).await {
                sender = s;
            }
        }
    }
    Ok((hist, errors))
}

/// Runs one phase to its end and merges what the workers measured.
///
/// # Errors
/// When no connection can be made, or a worker sees only failures for a long stretch.
pub async fn run_phase(
    wl: Arc<Workload>,
    addr: Arc<str>,
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
            addr.clone(),
            phase.clone(),
            seed.wrapping_mul(1_000_003).wrapping_add(w as u64),
            deadline,
            live.clone(),
        )));
    }
    let mut hist = new_histogram()?;
    let mut errors = 0u64;
    let mut first_error = None;
    for h in handles {
        match h.await {
            Ok(Ok((wh, we))) => {
                hist.add(&wh)
                    .map_err(|e| anyhow!("merging histograms: {e}"))?;
                errors += we;
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
    })
}
