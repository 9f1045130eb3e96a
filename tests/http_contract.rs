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

/// TTLs above 100 years (3155760000 s) are refused with a 400 naming the limit, in the query
/// and in batch operations; the cap itself and a whole number written as a float are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_capped_at_100_years() {
    let s = Server::start("memory", &[]).await;
    for bad in ["ttl=18446744073709551615", "ttl=3155760001"] {
        let r = s
            .client
            .put(s.url(&format!("/kv/k?{bad}")))
            .body("x")
            .send()
            .await
            .expect("put");
        let p = problem(r, 400).await;
        let detail = p["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("3155760000"), "names the limit: {p}");
    }
    let r = s
        .client
        .put(s.url("/kv/k?ttl=3155760000"))
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    for ttl in [
        json!(18446744073709551615_u64),
        json!(3155760001_u64),
        json!(1e300),
    ] {
        let r = s
            .client
            .post(s.url("/batch"))
            .json(&json!({"ops": [{"op": "put", "key": "b", "value": "v", "ttl": ttl}]}))
            .send()
            .await
            .expect("batch");
        let p = problem(r, 400).await;
        let detail = p["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("3155760000"), "names the limit: {p}");
    }
    let r = s
        .client
        .post(s.url("/batch"))
        .json(&json!({"ops": [{"op": "put", "key": "b", "value": "v", "ttl": 12625.0}]}))
        .send()
        .await
        .expect("batch");
    assert_eq!(
        r.status(),
        200,
        "a whole float is an integer in JSON Schema"
    );
    let r = s.client.get(s.url("/kv/b")).send().await.expect("get");
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
        let r = s
            .client
            .put(s.url(&format!("/kv/key-{i:03}")))
            .body(value)
            .send()
            .await
            .expect("put");
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
    let r = t
        .client
        .get(t.url("/kv/key-000"))
        .send()
        .await
        .expect("get");
    let p = problem(r, 500).await;
    assert_eq!(p["type"], "urn:hoardhaven:problem:corrupted", "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("checksum"),
        "{p}"
    );
    let r = t
        .client
        .get(t.url("/kv/key-059"))
        .send()
        .await
        .expect("get");
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
    let r = t
        .client
        .put(t.url("/kv/key-000"))
        .body("fresh")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200, "the key still exists in the index");
    let r = t
        .client
        .get(t.url("/kv/key-000"))
        .send()
        .await
        .expect("get");
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
}

/// The `/mget` answer for a found and an absent key is the same in the README, in the OpenAPI
/// document's example and in what the server sends (ETag values aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_readme_openapi_and_server_agree() {
    let s = Server::start("memory", &[]).await;
    let r = s
        .client
        .put(s.url("/kv/a"))
        .body("1")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    let mut live: Value = s
        .client
        .post(s.url("/mget"))
        .json(&json!({"keys": ["a", "c"]}))
        .send()
        .await
        .expect("mget")
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
