//! Black-box tests of what the HTTP layer promises beyond the basic API: the TTL cap, a
//! damaged record met at read time, early refusals that reach the client (lingering close),
//! and metrics exported from start.
//!
//! Each test starts the real binary over a fresh temporary directory (see `common/mod.rs`).

mod common;

use std::path::{Path, PathBuf};

use common::Server;
use serde_json::{Value, json};

async fn problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    r.json().await.expect("problem json")
}

async fn json_of(s: &Server, path: &str) -> Value {
    s.client
        .get(s.url(path))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn text_of(s: &Server, path: &str) -> String {
    s.client
        .get(s.url(path))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

async fn put(s: &Server, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    s.client
        .put(s.url(path))
        .body(body)
        .send()
        .await
        .expect("put")
}

async fn post(s: &Server, path: &str, body: &Value) -> reqwest::Response {
    s.client
        .post(s.url(path))
        .json(body)
        .send()
        .await
        .expect("post")
}

async fn get(s: &Server, path: &str) -> reqwest::Response {
    s.client.get(s.url(path)).send().await.expect("get")
}

/// A 400 whose detail names the TTL cap.
async fn names_the_cap(r: reqwest::Response) {
    let p = problem(r, 400).await;
    let detail = p["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("3155760000"), "names the limit: {p}");
}

/// TTLs above 100 years (3155760000 s) are refused with a 400 naming the limit, in the query
/// and in batch operations; the cap itself and a whole number written as a float are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_capped_at_100_years() {
    let s = Server::start("memory", &[]).await;
    for bad in ["ttl=18446744073709551615", "ttl=3155760001"] {
        let r = put(&s, &format!("/kv/k?{bad}"), "x").await;
        names_the_cap(r).await;
    }
    let r = put(&s, "/kv/k?ttl=3155760000", "x").await;
    assert_eq!(r.status(), 201);
    for ttl in [
        json!(18446744073709551615_u64),
        json!(3155760001_u64),
        json!(1e300),
    ] {
        let r = post(
            &s,
            "/batch",
            &json!({"ops": [{"op": "put", "key": "b", "value": "v", "ttl": ttl}]}),
        )
        .await;
        names_the_cap(r).await;
    }
    let r = post(
        &s,
        "/batch",
        &json!({"ops": [{"op": "put", "key": "b", "value": "v", "ttl": 12625.0}]}),
    )
    .await;
    assert_eq!(
        r.status(),
        200,
        "a whole float is an integer in JSON Schema"
    );
    let r = get(&s, "/kv/b").await;
    assert!(r.headers().get("x-ttl").is_some());
    let doc = json_of(&s, "/openapi.json").await;
    let ttl = doc
        .pointer("/paths/~1kv~1{key}/put/parameters")
        .and_then(Value::as_array)
        .and_then(|ps| ps.iter().find(|p| p["name"] == "ttl"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ttl["schema"]["maximum"], 3155760000_u64, "{ttl}");
}

/// The sealed data files of `dir` that have a hint file beside them.
fn sealed_with_hint(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .filter(|p| p.with_extension("hint").exists())
        .collect();
    out.sort();
    out
}

/// A sealed bitcask file damaged behind an intact hint file: the server starts (the hint is
/// good), and a GET of the damaged key answers a `corrupted` problem, counted in `/metrics`,
/// `/admin/stats` and `/readyz`, with file and offset in the log. Other keys still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_record_is_a_corrupted_problem() {
    let s = Server::start("bitcask", &["--bitcask-max-file-size", "4096"]).await;
    for i in 0..60 {
        let value = format!("value-{i:03}-{}", "x".repeat(200));
        let r = put(&s, &format!("/kv/key-{i:03}"), value).await;
        assert_eq!(r.status(), 201);
    }
    let dir = s.data_dir.clone();
    let mut s = s;
    assert!(s.terminate().await.success());
    let sealed = sealed_with_hint(&dir);
    let file = sealed.first().expect("a sealed data file with a hint");
    let mut bytes = std::fs::read(file).expect("read data file");
    let at = bytes
        .windows(10)
        .position(|w| w == b"value-000-")
        .expect("key-000's value is in the first sealed file");
    bytes[at + 12] ^= 0x01;
    std::fs::write(file, &bytes).expect("write damaged file");

    let t = Server::start_in(&dir, "bitcask", &[]).await;
    assert_eq!(json_of(&t, "/readyz").await["status"], "ready");
    let r = get(&t, "/kv/key-000").await;
    let p = problem(r, 500).await;
    assert_eq!(p["type"], "urn:hoardhaven:problem:corrupted", "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("checksum"),
        "{p}"
    );
    let r = get(&t, "/kv/key-059").await;
    assert_eq!(r.status(), 200, "undamaged keys still read");

    let metrics = text_of(&t, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "hoardhaven_corrupt_reads_total 1"),
        "{metrics}"
    );
    let stats = json_of(&t, "/admin/stats").await;
    assert_eq!(stats["corrupt_reads"], 1, "{stats}");
    assert_eq!(stats["damaged"], true, "{stats}");
    let ready = t.client.get(t.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200, "still serving the other keys");
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["status"], "damaged", "{ready}");
    assert_eq!(ready["corrupt_reads"], 1, "{ready}");

    // A merge meets the damaged record: it fails, and says why.
    let r = t
        .client
        .post(t.url("/admin/merge?wait=true"))
        .send()
        .await
        .expect("merge");
    let p = problem(r, 500).await;
    assert_eq!(p["type"], "urn:hoardhaven:problem:corrupted", "{p}");
    let merge = json_of(&t, "/admin/merge").await;
    assert_eq!(merge["state"], "failed", "{merge}");
    // Rewriting the damaged key stores a good record.
    let r = put(&t, "/kv/key-000", "fresh").await;
    assert_eq!(r.status(), 200, "the key still exists in the index");
    let r = get(&t, "/kv/key-000").await;
    assert_eq!(r.text().await.expect("text"), "fresh");

    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name")
        .to_owned();
    let log = t.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("corrupt") && l.contains(&name) && l.contains("offset")),
        "the log names file and offset: {log}"
    );
    // The one error-logging middleware logs the 500 at error, with its problem type.
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("request failed")
            && l.contains("corrupted")
            && l.contains(&name)),
        "the failed request is logged: {log}"
    );
}

/// The `/mget` answer for a found and an absent key is the same in the README, in the OpenAPI
/// document's example and in what the server sends (ETag values aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_readme_openapi_and_server_agree() {
    let s = Server::start("memory", &[]).await;
    let r = put(&s, "/kv/a", "1").await;
    assert_eq!(r.status(), 201);
    let mut live: Value = post(&s, "/mget", &json!({"keys": ["a", "c"]}))
        .await
        .json()
        .await
        .expect("json");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let example: String = readme
        .lines()
        .skip_while(|l| !l.contains("Many reads at once"))
        .skip(1)
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .filter(|l| l.starts_with('{'))
        .collect();
    let mut readme_answer: Value = serde_json::from_str(&example)
        .unwrap_or_else(|e| panic!("README's mget answer is JSON ({e}): {example}"));
    let doc = json_of(&s, "/openapi.json").await;
    let mut doc_example = doc
        .pointer("/components/schemas/MgetResponse/example")
        .cloned()
        .expect("MgetResponse has an example");
    for v in [&mut live, &mut readme_answer, &mut doc_example] {
        if let Some(tag) = v.pointer_mut("/values/0/etag") {
            assert!(tag.as_str().is_some_and(|t| t.starts_with('"')), "{tag}");
            *tag = json!("ETAG");
        }
    }
    assert_eq!(live, readme_answer, "README vs server");
    assert_eq!(live, doc_example, "OpenAPI example vs server");
}

/// One oversize exchange over raw TCP, as a naive client does it: write the whole request,
/// then read the answer. `Ok(status line)`, or what went wrong.
fn oversize_exchange(addr: std::net::SocketAddr, request: &[u8]) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    // In small pieces, as a client building its request does: the refusal comes while the
    // request is still being written.
    for piece in request.chunks(1024) {
        tcp.write_all(piece).map_err(|e| format!("write: {e}"))?;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) => return Err(format!("read: {e} after {} bytes", got.len())),
        }
    }
    let text = String::from_utf8_lossy(&got);
    match text.split("\r\n").next() {
        Some(line) if line.starts_with("HTTP/1.1 ") => Ok(line.to_owned()),
        _ => Err(format!(
            "no status line in {:?}",
            &text[..text.len().min(80)]
        )),
    }
}

/// Early refusals reach a client that writes its whole oversize request before reading: a
/// 100 KB path and a 100 KB header field (431 from the head cap), a 100 KB value over a 64 KiB
/// limit (413) and a bad key with a 100 KB body (400), each refused before it was all read.
///
/// 10,000 tries (2,500 of each kind), as the issue asks. With the drain disabled (the
/// mutation: `Lingering`'s drop closes at once), 58-72 of 10,000 ended in a broken pipe here,
/// spread over every kind (e.g. 431: 20, 413: 25, 400: 27), so a pass by chance is below
/// e^-50; the test takes 5-20 s in a debug build on 2 busy cores.
const TRIES: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusals_reach_the_client() {
    let s = Server::start("memory", &["--max-value-bytes", "65536"]).await;
    let addr = s.addr;
    let body = "v".repeat(100 * 1024);
    // Each refused before the server has read all of it: (request, expected status).
    let kinds: Vec<(Vec<u8>, &str)> = vec![
        (
            format!(
                "GET /kv/{} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(100 * 1024)
            )
            .into_bytes(),
            "431",
        ),
        (
            format!(
                "GET /kv/a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(100 * 1024)
            )
            .into_bytes(),
            "431",
        ),
        (
            format!(
                "PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            "413",
        ),
        (
            format!(
                "PUT /kv/%ZZ HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            "400",
        ),
    ];
    let workers: Vec<_> = kinds
        .into_iter()
        .map(|(req, want)| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for _ in 0..TRIES / 4 {
                    match oversize_exchange(addr, &req) {
                        Ok(line) if line.starts_with(&format!("HTTP/1.1 {want}")) => {}
                        Ok(line) => failures.push(format!("expected {want}, got {line}")),
                        Err(e) => failures.push(format!("{want}: {e}")),
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.join().expect("worker"));
    }
    let mut by_kind = std::collections::BTreeMap::new();
    for f in &failures {
        *by_kind.entry(f.get(..3).unwrap_or_default()).or_insert(0) += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {TRIES} refusals lost ({by_kind:?}), e.g. {:?}",
        failures.len(),
        failures.first()
    );
}

/// Every series a dashboard or an `absent()` alert uses is in the first scrape of a fresh
/// server, at zero where nothing happened yet, for both engines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exported_from_start() {
    for engine in common::ENGINES {
        let s = Server::start(engine, &["--sync", "never"]).await;
        let body = text_of(&s, "/metrics").await;
        let has = |series: &str| {
            body.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(series))
        };
        for (series, zero) in [
            ("hoardhaven_engine_merges_total ", true),
            ("hoardhaven_engine_snapshots_total ", true),
            ("hoardhaven_engine_corrupt_records_total ", true),
            ("hoardhaven_corrupt_reads_total ", true),
            ("hoardhaven_engine_written_bytes_total ", true),
            ("hoardhaven_engine_merge_last_duration_seconds ", true),
            ("hoardhaven_engine_snapshot_last_duration_seconds ", true),
            ("hoardhaven_engine_merge_running ", true),
            ("hoardhaven_engine_snapshot_running ", true),
            ("hoardhaven_engine_fsync_duration_seconds_count ", true),
            (
                "hoardhaven_engine_fsync_duration_seconds_bucket{le=\"+Inf\"} ",
                true,
            ),
            (
                "hoardhaven_http_requests_total{method=\"POST\",route=\"/admin/merge\",status=\"200\"} ",
                true,
            ),
            (
                "hoardhaven_http_request_duration_seconds_count{method=\"POST\",route=\"/batch\"} ",
                true,
            ),
            ("hoardhaven_http_requests_in_flight ", false),
            ("hoardhaven_ready ", false),
            ("hoardhaven_engine_keys ", true),
            ("hoardhaven_engine_fragmentation_ratio ", false),
        ] {
            assert!(has(series), "{engine}: `{series}` missing:\n{body}");
            if zero {
                assert!(
                    body.lines().any(|l| l == format!("{series}0")),
                    "{engine}: `{series}` is not 0:\n{body}"
                );
            }
        }
    }
}
