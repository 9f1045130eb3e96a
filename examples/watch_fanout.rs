//! Fan-out benchmark of `GET /watch`: N watchers on one prefix while writers PUT under it at a
//! paced rate. Reports the write throughput and ack latency without watchers, then with them,
//! and the delivery latency (write acknowledged -> event received by a watcher, p50/p99),
//! events received and watchers cut as slow consumers.
//!
//! Run against a running server (see docs/benchmarks.md, "Watch fan-out"):
//! `cargo run --release --example watch_fanout -- 127.0.0.1:8080 1000 5000 20`
//! (address, watchers, target writes/s, seconds per phase).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WRITERS: usize = 32;
/// Delivery latency is sampled on versions divisible by this.
const SAMPLE_EVERY: u64 = 16;

struct Phase {
    writes: u64,
    secs: f64,
    ack: Vec<u64>,
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn write_phase(
    addr: &str,
    rate: u64,
    secs: u64,
    acked: Option<Arc<Mutex<HashMap<u64, Instant>>>>,
) -> Phase {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(WRITERS)
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, stop, count, acked) =
            (client.clone(), stop.clone(), count.clone(), acked.clone());
        let url = format!("http://{addr}/kv/f/");
        let per = Duration::from_secs_f64(WRITERS as f64 / rate as f64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut ack = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = Instant::now();
                let r = client
                    .put(format!("{url}{w}-{}", i % 1000))
                    .body("v".repeat(100))
                    .send()
                    .await
                    .expect("put");
                let done = Instant::now();
                i += 1;
                if let Some(v) = r
                    .headers()
                    .get("etag")
                    .and_then(|e| e.to_str().ok())
                    .and_then(|e| e.trim_matches('"').parse::<u64>().ok())
                    && v % SAMPLE_EVERY == 0
                    && let Some(a) = &acked
                {
                    a.lock().insert(v, done);
                }
                ack.push(done.duration_since(t).as_micros() as u64);
                count.fetch_add(1, Ordering::Relaxed);
            }
            ack
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ack = Vec::new();
    for t in tasks {
        ack.extend(t.await.expect("writer"));
    }
    Phase {
        writes: count.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
        ack,
    }
}

/// One watcher on a raw connection: (sampled version, receive time) pairs, and whether it
/// was cut.
async fn watcher(
    addr: String,
    ready: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> (Vec<(u64, Instant)>, u64, bool) {
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(b"GET /watch?prefix=f%2F HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    let mut seen = Vec::new();
    let mut events = 0u64;
    let mut cut = false;
    let mut head_done = false;
    while !stop.load(Ordering::Relaxed) {
        let n = match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => continue,
        };
        let now = Instant::now();
        carry.extend_from_slice(&buf[..n]);
        if !head_done {
            if let Some(p) = carry.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(carry.starts_with(b"HTTP/1.1 200"), "watch refused");
                carry.drain(..p + 4);
                head_done = true;
                ready.fetch_add(1, Ordering::Relaxed);
            } else {
                continue;
            }
        }
        // Lines: `id: N` starts an event; `event: error` means cut.
        let mut start = 0;
        while let Some(off) = carry[start..].iter().position(|b| *b == b'\n') {
            let line = &carry[start..start + off];
            if let Some(id) = line.strip_prefix(b"id: ") {
                if let Some(v) = std::str::from_utf8(id)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                {
                    events += 1;
                    if v % SAMPLE_EVERY == 0 {
                        seen.push((v, now));
                    }
                }
            } else if line == b"event: error" {
                cut = true;
            }
            start += off + 1;
        }
        carry.drain(..start);
    }
    (seen, events, cut)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let watchers: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rate: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let secs: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(20);

    let mut base = write_phase(&addr, rate, secs, None).await;
    println!(
        "no watchers:   {:.0} writes/s (target {rate}), ack p50 {} us p99 {} us",
        base.writes as f64 / base.secs,
        pct(&mut base.ack, 0.5),
        pct(&mut base.ack, 0.99)
    );

    let ready = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut ws = Vec::new();
    for _ in 0..watchers {
        ws.push(tokio::spawn(watcher(
            addr.clone(),
            ready.clone(),
            stop.clone(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Relaxed) < watchers as u64 {
        assert!(Instant::now() < deadline, "watchers did not all connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let mut with = write_phase(&addr, rate, secs, Some(acked.clone())).await;
    // Let the watchers drain what was written.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = acked.lock().clone();
    let mut lat = Vec::new();
    let (mut events, mut cut) = (0u64, 0u64);
    for w in ws {
        let (seen, n, c) = w.await.expect("watcher");
        events += n;
        cut += u64::from(c);
        for (v, at) in seen {
            if let Some(t) = acked.get(&v) {
                // An event may arrive before its writer read the ack: count that as 0.
                lat.push(at.saturating_duration_since(*t).as_micros() as u64);
            }
        }
    }
    println!(
        "{watchers} watchers: {:.0} writes/s (target {rate}), ack p50 {} us p99 {} us",
        with.writes as f64 / with.secs,
        pct(&mut with.ack, 0.5),
        pct(&mut with.ack, 0.99)
    );
    println!(
        "delivery (ack -> event): p50 {} us, p99 {} us over {} samples; events received {events} \
         (expected {}), watchers cut as slow {cut}",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        lat.len(),
        with.writes * watchers as u64
    );
}
