//! 507 on a full disk and 503 after a failed write, end to end over HTTP, on both engines.
//!
//! The server here is the real router (`hoardhaven::http::router`) on a real TCP socket in
//! this process, so the engine's fault seam can fail its writes: ENOSPC on every write that
//! needs new space (a full disk), or EIO on an fsync. What a client sees:
//!
//! - full disk: `507 disk-full`; reads go on; both engines take writes again once space is
//!   back, without a restart;
//! - failed fsync: the write fails (`500`, in doubt), every later write gets
//!   `503 write-refused`, reads go on, `/readyz` says not ready (a balancer stops sending).
//!
//! `a_real_full_tmpfs_answers_507` runs the real binary on a small tmpfs the test mounts (as
//! root; skipped with a message otherwise, failing instead under `HOARDHAVEN_REQUIRE_TOOLS`).

mod claims_support;
mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;

use claims_support::{ENGINES, open, wait_until};
use hoardhaven::engine::fault::{self, Fault, Op, Plan};
use hoardhaven::engine::{Engine, SyncPolicy};
use hoardhaven::http::{AppState, Limits};

async fn serve(engine: Arc<dyn Engine>) -> String {
    let app = hoardhaven::http::router(AppState::with_engine(engine, Limits::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}")
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn put(&self, key: &str, value: &'static [u8]) -> (u16, String) {
        let r = self
            .http
            .put(format!("{}/kv/{key}", self.base))
            .body(value)
            .send()
            .await
            .expect("put");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    async fn get(&self, key: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}/kv/{key}", self.base))
            .send()
            .await
            .expect("get");
        (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
    }

    async fn ready(&self) -> u16 {
        self.http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .expect("readyz")
            .status()
            .as_u16()
    }
}

fn client(base: String) -> Client {
    Client {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .expect("client"),
        base,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_and_reads_go_on() {
    for kind in ENGINES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let e = open(kind, &dir, SyncPolicy::Always);
        let c = client(serve(e.clone()).await);
        assert_eq!(
            c.put("kept", b"before the disk filled").await.0,
            201,
            "{kind}"
        );
        // Bitcask preallocates its active file: fill that, so the next write needs space.
        e.sync().expect("sync");
        let mut plan = Plan::new(&dir, &[Op::Write], 1);
        plan.fault = Fault::Error(28);
        plan.sticky = true;
        let full = fault::arm(plan);
        let mut status = 0;
        let mut body = String::new();
        for i in 0..2000 {
            (status, body) = c.put(&format!("fill-{i}"), &[b'x'; 4096]).await;
            if status != 201 {
                break;
            }
        }
        assert!(full.fired() > 0, "{kind}: no write met the full disk");
        assert_eq!(status, 507, "{kind}: {body}");
        assert!(body.contains("disk-full"), "{kind}: {body}");
        assert_eq!(
            c.get("kept").await,
            (200, b"before the disk filled".to_vec()),
            "{kind}"
        );
        full.heal();
        // Both engines take writes again once space is back, without a restart.
        let (status, body) = c.put("after", b"space is back").await;
        assert_eq!(
            status, 201,
            "{kind}: writes again once space is back: {body}"
        );
        assert_eq!(c.ready().await, 200, "{kind}");
        assert_eq!(c.get("kept").await.0, 200, "{kind}: reads go on");
        drop(full);
        let _ = e.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_answers_500_then_503_for_every_write() {
    for kind in ENGINES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let e = open(kind, &dir, SyncPolicy::Always);
        let c = client(serve(e.clone()).await);
        assert_eq!(c.put("kept", b"durable").await.0, 201, "{kind}");
        let broken = fault::arm(Plan::new(&dir, &[Op::Sync], 1));
        let (status, body) = c.put("in-doubt", b"its fsync fails").await;
        assert_eq!(broken.fired(), 1, "{kind}: the fsync failed");
        assert_eq!(status, 500, "{kind}: {body}");
        assert_eq!(c.ready().await, 200, "{kind}: not yet known to refuse");
        for key in ["next", "and-the-next"] {
            let (status, body) = c.put(key, b"refused").await;
            assert_eq!(status, 503, "{kind}: {key}: {body}");
            assert!(body.contains("write-refused"), "{kind}: {body}");
        }
        assert_eq!(c.get("kept").await, (200, b"durable".to_vec()), "{kind}");
        assert_eq!(
            c.get("next").await.0,
            404,
            "{kind}: a refused write never appears"
        );
        assert_eq!(c.ready().await, 503, "{kind}: /readyz reports the refusal");
        drop(broken);
        let _ = e.close();
    }
}

#[test]
fn a_real_full_tmpfs_answers_507() {
    real_full_tmpfs("bitcask");
}

#[test]
fn a_real_full_tmpfs_answers_507_memory_engine_recovers_without_restart() {
    real_full_tmpfs("memory");
}

/// The real binary on a 4 MiB tmpfs: fill it, see 507, free space, see writes taken again by
/// the same process, then kill -9 and restart: every acknowledged write is there, no refused
/// one is.
fn real_full_tmpfs(engine: &str) {
    let Some(fs) = common::SmallFs::mount("4m") else {
        return;
    };
    let data = fs.dir.join("data");
    let scratch = tempfile::tempdir().expect("tempdir");
    let http = reqwest::blocking::Client::new();
    let (mut child, base) = spawn_server(engine, &data, scratch.path(), &http);
    let put = |base: &str, k: &str, v: Vec<u8>| {
        let r = http
            .put(format!("{base}/kv/{k}"))
            .body(v)
            .send()
            .expect("put");
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    let get = |base: &str, k: &str| {
        let r = http.get(format!("{base}/kv/{k}")).send().expect("get");
        (r.status().as_u16(), r.bytes().expect("body").to_vec())
    };
    assert_eq!(put(&base, "kept", b"before".to_vec()).0, 201, "{engine}");
    fs.fill(0);
    let mut acked = Vec::new();
    let mut last = (0, String::new());
    let mut refused = String::new();
    for i in 0..2000 {
        let key = format!("fill-{i}");
        last = put(&base, &key, vec![b'y'; 64 * 1024]);
        if last.0 != 201 {
            refused = key;
            break;
        }
        acked.push(key);
    }
    assert_eq!(last.0, 507, "{engine}: {}", last.1);
    assert!(last.1.contains("disk-full"), "{engine}: {}", last.1);
    assert_eq!(get(&base, "kept").0, 200, "{engine}");
    std::fs::remove_file(fs.dir.join("filler")).expect("free space");
    assert_eq!(
        put(&base, "after", b"space is back".to_vec()).0,
        201,
        "{engine}: writes taken again without a restart"
    );
    child.kill().expect("kill");
    child.wait().expect("wait");
    // Reopen: nothing acknowledged lost, the refused write absent.
    let scratch = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = spawn_server(engine, &data, scratch.path(), &http);
    assert_eq!(get(&base, "kept"), (200, b"before".to_vec()), "{engine}");
    assert_eq!(
        get(&base, "after"),
        (200, b"space is back".to_vec()),
        "{engine}"
    );
    for key in &acked {
        assert_eq!(
            get(&base, key),
            (200, vec![b'y'; 64 * 1024]),
            "{engine}: {key}"
        );
    }
    assert_eq!(get(&base, &refused).0, 404, "{engine}: refused {refused}");
    child.kill().expect("kill");
    child.wait().expect("wait");
}

fn spawn_server(
    engine: &str,
    data: &std::path::Path,
    scratch: &std::path::Path,
    http: &reqwest::blocking::Client,
) -> (std::process::Child, String) {
    let port_file = scratch.join("port");
    let log = scratch.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hoardhaven"))
        .arg("serve")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--engine",
            engine,
            "--sync",
            "always",
        ])
        .arg("--data-dir")
        .arg(data)
        .arg("--port-file")
        .arg(&port_file)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let mut base = String::new();
    wait_until("server ready", || {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "server exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let Ok(a) = std::fs::read_to_string(&port_file) else {
            return false;
        };
        base = format!("http://{}", a.trim());
        http.get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    (child, base)
}
