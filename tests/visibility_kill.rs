//! No reader ever sees a write that kill -9 then takes away (`sync=always`, both engines).
//!
//! The real `hoardhaven` binary runs with every fdatasync slowed to 20 ms
//! (`HOARDHAVEN_TEST_SYNC_DELAY_MS`, a test hook), so at any moment many writes are appended
//! in the process but not yet durable. Writers overwrite their own keys with rising counters;
//! readers GET the keys and record the highest counter they saw per key. Once readers have seen
//! enough, the server gets SIGKILL with requests still in flight and is restarted on the same
//! data directory: every key must hold at least the highest counter any reader saw. Three
//! kills per engine.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{ENGINES, Server};
use parking_lot::Mutex;

const WRITERS: u64 = 4;
const READERS: usize = 4;
const KILLS: u64 = 3;
/// Reads that saw a value before each kill.
const READS: u64 = 300;

type Seen = Arc<Mutex<HashMap<u64, u64>>>;

async fn start(data: &std::path::Path, engine: &str) -> Server {
    Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        data.to_path_buf(),
        engine,
        &["--sync", "always"],
        &[("HOARDHAVEN_TEST_SYNC_DELAY_MS", "20")],
    )
    .await
}

async fn counter_of(s: &Server, w: u64) -> Option<u64> {
    let r = s
        .client
        .get(s.url(&format!("/kv/w{w}")))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    String::from_utf8(r.bytes().await.ok()?.to_vec())
        .ok()?
        .parse()
        .ok()
}

async fn check(s: &Server, engine: &str, seen: &Seen) {
    let want: Vec<(u64, u64)> = seen.lock().iter().map(|(k, v)| (*k, *v)).collect();
    for (w, max) in want {
        let got = counter_of(s, w).await;
        assert!(
            got.is_some_and(|g| g >= max),
            "{engine}: key w{w} holds {got:?} after kill -9, but a reader saw {max} before it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_read_before_kill_9_is_there_after_it() {
    for kind in ENGINES {
        let engine = kind.to_string();
        let scratch = tempfile::tempdir().expect("tempdir");
        let data = scratch.path().join("data");
        let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
        for round in 0..KILLS {
            let mut s = start(&data, &engine).await;
            check(&s, &engine, &seen).await;
            let stop = Arc::new(AtomicBool::new(false));
            let reads = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for w in 0..WRITERS {
                let (client, url, stop) =
                    (s.client.clone(), s.url(&format!("/kv/w{w}")), stop.clone());
                tasks.push(tokio::spawn(async move {
                    // Rising across rounds: each round starts above everything before it.
                    let mut n = (round + 1) * 1_000_000_000;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        if client.put(&url).body(n.to_string()).send().await.is_err() {
                            return;
                        }
                    }
                }));
            }
            for r in 0..READERS {
                let (client, base) = (s.client.clone(), s.base.clone());
                let (stop, reads, seen) = (stop.clone(), reads.clone(), seen.clone());
                tasks.push(tokio::spawn(async move {
                    let mut w = r as u64;
                    while !stop.load(Ordering::Relaxed) {
                        w = (w + 1) % WRITERS;
                        let Ok(resp) = client.get(format!("{base}/kv/w{w}")).send().await else {
                            return;
                        };
                        if resp.status() != 200 {
                            continue;
                        }
                        let Ok(body) = resp.bytes().await else { return };
                        let Some(n) = std::str::from_utf8(&body).ok().and_then(|b| b.parse().ok())
                        else {
                            panic!("w{w} holds {body:?}");
                        };
                        let mut m = seen.lock();
                        let e = m.entry(w).or_insert(0);
                        *e = (*e).max(n);
                        drop(m);
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            let enough = async {
                while reads.load(Ordering::Relaxed) < READS {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            };
            tokio::time::timeout(common::STEP_TIMEOUT, enough)
                .await
                .unwrap_or_else(|_| panic!("{engine}: readers stalled: {}", s.stderr()));
            // Requests are in flight: kill -9 now.
            s.kill().await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                t.await.expect("client task");
            }
            eprintln!(
                "{engine}: round {round}: killed after {} reads",
                reads.load(Ordering::Relaxed)
            );
        }
        let s = start(&data, &engine).await;
        check(&s, &engine, &seen).await;
    }
}
