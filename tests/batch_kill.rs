//! A batch in flight at a real kill -9 is applied whole or not at all, on both engines.
//!
//! The real `hoardhaven` binary runs with `--sync always`; three client threads send
//! `POST /batch` requests in a loop, each putting the same sequence number (in self-checking
//! values) into the eight keys of its own group. Once every client has had batches
//! acknowledged, the server gets SIGKILL with requests still being sent, and is restarted on
//! the same data directory. Each group must hold one batch: all keys equal, at least the last
//! acknowledged batch, at most the last one sent. Three kills per engine.

mod claims_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use claims_support::{check, value, wait_until};

const CLIENTS: usize = 3;
const GROUP: usize = 8;
const KILLS: usize = 3;

fn key(c: usize, i: usize) -> String {
    format!("c{c}-k{i}")
}

struct Server {
    child: Child,
    base: String,
}

fn start(engine: &str, data: &Path, scratch: &Path, run: usize) -> Server {
    let port_file = scratch.join(format!("port-{run}"));
    let stderr = std::fs::File::create(scratch.join(format!("stderr-{run}.log"))).expect("log");
    let mut cmd = common::serve_command(engine, data, &port_file);
    cmd.args(["--sync", "always"]).stderr(stderr);
    let mut child = cmd.spawn().expect("spawn hoardhaven");
    let mut addr = String::new();
    wait_until(&format!("{engine}: server {run} listening"), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{engine}: server {run} exited: {status}; stderr: {}",
                std::fs::read_to_string(scratch.join(format!("stderr-{run}.log")))
                    .unwrap_or_default()
            );
        }
        match std::fs::read_to_string(&port_file) {
            Ok(s) if s.trim().parse::<std::net::SocketAddr>().is_ok() => {
                addr = s.trim().to_string();
                true
            }
            _ => false,
        }
    });
    let base = format!("http://{addr}");
    let http = client();
    wait_until(&format!("{engine}: server {run} ready"), || {
        http.get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    Server { child, base }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Sends batches until the server is gone; returns the last acknowledged and last sent.
fn send_batches(
    base: String,
    c: usize,
    mut n: u64,
    acked: Arc<AtomicU64>,
    gone: Arc<AtomicBool>,
) -> (u64, u64) {
    let http = client();
    let mut last_acked = acked.load(Ordering::Acquire);
    loop {
        n += 1;
        let ops: Vec<serde_json::Value> = (0..GROUP)
            .map(|i| {
                let k = key(c, i);
                let v = String::from_utf8(value(k.as_bytes(), n, 50)).expect("utf8");
                serde_json::json!({"op": "put", "key": k, "value": v})
            })
            .collect();
        let r = http
            .post(format!("{base}/batch"))
            .json(&serde_json::json!({ "ops": ops }))
            .send();
        match r {
            Ok(resp) if resp.status().is_success() => {
                last_acked = n;
                acked.store(n, Ordering::Release);
            }
            Ok(resp) if gone.load(Ordering::Acquire) => {
                // An answer cut short by the kill.
                let _ = resp.status();
                return (last_acked, n);
            }
            Ok(resp) => panic!("batch {n}: {}", resp.status()),
            Err(_) if gone.load(Ordering::Acquire) => return (last_acked, n),
            Err(e) => panic!("batch {n}: {e}"),
        }
    }
}

fn read_group(base: &str, c: usize) -> Vec<Option<u64>> {
    let http = client();
    (0..GROUP)
        .map(|i| {
            let k = key(c, i);
            let resp = http
                .get(format!("{base}/kv/{k}"))
                .send()
                .expect("get after restart");
            match resp.status().as_u16() {
                404 => None,
                200 => {
                    let body = resp.bytes().expect("body");
                    Some(check(k.as_bytes(), &body).unwrap_or_else(|e| panic!("{k}: {e}")))
                }
                s => panic!("{k}: status {s}"),
            }
        })
        .collect()
}

fn kill_during_batches(engine: &str) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data: PathBuf = scratch.path().join("data");
    let mut sent = [0u64; CLIENTS];
    for run in 0..KILLS {
        let mut s = start(engine, &data, scratch.path(), run);
        let gone = Arc::new(AtomicBool::new(false));
        let acked: Vec<Arc<AtomicU64>> =
            sent.iter().map(|&n| Arc::new(AtomicU64::new(n))).collect();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (base, acked, gone) = (s.base.clone(), acked[c].clone(), gone.clone());
                let from = sent[c];
                std::thread::spawn(move || send_batches(base, c, from, acked, gone))
            })
            .collect();
        let floor: Vec<u64> = sent.iter().map(|n| n + 10).collect();
        wait_until(
            &format!("{engine}: run {run}: batches acknowledged"),
            || {
                clients.iter().any(|c| c.is_finished())
                    || (0..CLIENTS).all(|c| acked[c].load(Ordering::Acquire) >= floor[c])
            },
        );
        assert!(
            !clients.iter().any(|c| c.is_finished()),
            "{engine}: run {run}: a client stopped before the kill"
        );
        gone.store(true, Ordering::Release);
        s.child.kill().expect("SIGKILL");
        s.child.wait().expect("wait");
        let results: Vec<(u64, u64)> = clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect();
        let r = start(engine, &data, scratch.path(), run + 100);
        for (c, (last_acked, last_sent)) in results.iter().enumerate() {
            let got = read_group(&r.base, c);
            let n = got[0].unwrap_or(0);
            assert!(
                got.iter().all(|g| *g == got[0]),
                "{engine}: run {run}: group {c} holds parts of different batches: {got:?}"
            );
            assert!(
                (*last_acked..=*last_sent).contains(&n),
                "{engine}: run {run}: group {c} holds batch {n}; acknowledged up to \
                 {last_acked}, sent up to {last_sent}"
            );
            // Continue above everything sent, so a later run's check stays exact.
            sent[c] = *last_sent;
        }
        let mut r = r;
        r.child.kill().expect("kill restarted server");
        r.child.wait().expect("wait");
    }
}

#[test]
fn bitcask_batches_survive_kill_9_whole_or_not_at_all() {
    kill_during_batches("bitcask");
}

#[test]
fn memory_batches_survive_kill_9_whole_or_not_at_all() {
    kill_during_batches("memory");
}
