//! Black-box tests of the HTTP API: the real binary on a loopback port, over each engine.
//!
//! Every test starts its own server over a fresh temporary data directory (see
//! `common/mod.rs`) and drives it with reqwest. Tests that depend on the engine run once per
//! engine in [`common::ENGINES`] through the `per_engine!` macro.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::tools::{external, show};
use common::{Server, copy_dir, enc, run_to_exit};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use serde_json::{Value, json};

/// Generates one `#[tokio::test]` per engine for each named `async fn name(engine: &str)`.
macro_rules! per_engine {
    ($($name:ident),* $(,)?) => {
        mod bitcask {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("bitcask").await
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("memory").await
                }
            )*
        }
    };
}

per_engine!(
    put_get_head_delete,
    byte_keys_and_values,
    conditional_requests,
    cas_race_has_one_winner_per_version,
    ttl_and_expiry,
    listing_pages_by_prefix,
    batch_is_all_or_nothing,
    mget_answers_in_order,
    limits_are_enforced,
    errors_are_problem_json,
    admin_jobs_and_stats,
    snapshot_is_a_data_directory,
    metrics_are_exposed,
    openapi_docs_and_probes,
    graceful_stop_keeps_data,
    second_process_is_refused,
);

fn etag_of(r: &reqwest::Response) -> String {
    r.headers()
        .get(ETAG)
        .expect("ETag header")
        .to_str()
        .expect("ascii")
        .to_owned()
}

async fn problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    assert_eq!(
        r.headers()[CONTENT_TYPE],
        "application/problem+json",
        "problem content type"
    );
    let p: Value = r.json().await.expect("problem json");
    assert_eq!(p["status"], status);
    assert!(p["type"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
    p
}

async fn put(s: &Server, key: &str, value: impl Into<reqwest::Body>) -> reqwest::Response {
    s.client
        .put(s.url(&format!("/kv/{key}")))
        .body(value)
        .send()
        .await
        .expect("put")
}

async fn get(s: &Server, key: &str) -> reqwest::Response {
    s.client
        .get(s.url(&format!("/kv/{key}")))
        .send()
        .await
        .expect("get")
}

async fn post_json(s: &Server, path: &str, body: &Value) -> reqwest::Response {
    s.client
        .post(s.url(path))
        .json(body)
        .send()
        .await
        .expect("post")
}

async fn put_get_head_delete(engine: &str) {
    let s = Server::start(engine, &[]).await;
    let r = put(&s, "greeting", "hello").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let e1 = etag_of(&r);
    assert!(e1.starts_with('"') && e1.ends_with('"'), "{e1}");
    let r = put(&s, "greeting", "hello again").await;
    assert_eq!(r.status(), StatusCode::OK);
    let e2 = etag_of(&r);
    assert_ne!(e1, e2);

    let r = get(&s, "greeting").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(etag_of(&r), e2);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/octet-stream");
    assert!(r.headers().get("x-ttl").is_none());
    assert!(r.headers().get("x-request-id").is_some());
    assert_eq!(r.bytes().await.expect("body"), "hello again");

    let r = s
        .client
        .head(s.url("/kv/greeting"))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(etag_of(&r), e2);
    assert_eq!(r.headers()["content-length"], "11");

    let r = s
        .client
        .delete(s.url("/kv/greeting"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    problem(get(&s, "greeting").await, 404).await;
    let r = s
        .client
        .head(s.url("/kv/greeting"))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .client
        .delete(s.url("/kv/greeting"))
        .send()
        .await
        .expect("delete");
    problem(r, 404).await;
    // Recreated after delete: 201 again.
    assert_eq!(put(&s, "greeting", "x").await.status(), StatusCode::CREATED);
}

async fn byte_keys_and_values(engine: &str) {
    let s = Server::start(engine, &[]).await;
    // %FF is the byte 0xFF; the value holds every byte value.
    let value: Vec<u8> = (0..=255u8).collect();
    assert_eq!(put(&s, "%FF", value.clone()).await.status(), 201);
    let r = get(&s, "%FF").await;
    assert_eq!(r.bytes().await.expect("body").to_vec(), value);
    // Slashes are part of the key, raw or encoded.
    assert_eq!(put(&s, "a/b/c", "abc").await.status(), 201);
    assert_eq!(get(&s, "a%2Fb%2Fc").await.text().await.expect("t"), "abc");
    assert_eq!(put(&s, "a%2Fb%2Fc", "abc2").await.status(), 200);
    // Empty values are values.
    assert_eq!(put(&s, "empty", Vec::new()).await.status(), 201);
    let r = get(&s, "empty").await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.expect("body").is_empty());
    // `+`, spaces, unicode.
    assert_eq!(put(&s, "1+1%20%E2%82%AC", "sum").await.status(), 201);
    let list: Value = s
        .client
        .get(s.url("/kv"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let keys = list["keys"].as_array().expect("keys");
    assert!(keys.contains(&json!({"key": "a/b/c"})), "{list}");
    assert!(keys.contains(&json!({"key": "1+1 €"})), "{list}");
    assert!(keys.contains(&json!({"key_base64": "/w=="})), "{list}");
    // Every byte value in a key.
    let all: Vec<u8> = (1..=255u8).rev().collect();
    assert_eq!(put(&s, &enc(&all), "all").await.status(), 201);
    assert_eq!(get(&s, &enc(&all)).await.text().await.expect("t"), "all");
    // Bad escapes and the empty key are 400, never 500.
    problem(get(&s, "%G0").await, 400).await;
    problem(get(&s, "abc%F").await, 400).await;
    problem(put(&s, "", "x").await, 400).await;
}

async fn conditional_requests(engine: &str) {
    let s = Server::start(engine, &[]).await;
    let url = s.url("/kv/c");
    let send = |m: reqwest::Method, h: Option<(&'static str, String)>| {
        let mut rb = s.client.request(m, &url).body("v");
        if let Some((k, v)) = h {
            rb = rb.header(k, v);
        }
        rb.send()
    };
    use reqwest::Method as M;
    // If-Match on an absent key fails, also `*`.
    problem(
        send(M::PUT, Some(("if-match", "\"1\"".into())))
            .await
            .expect("r"),
        412,
    )
    .await;
    problem(
        send(M::PUT, Some(("if-match", "*".into())))
            .await
            .expect("r"),
        412,
    )
    .await;
    // Create-only.
    let r = send(M::PUT, Some(("if-none-match", "*".into())))
        .await
        .expect("r");
    assert_eq!(r.status(), 201);
    let v1 = etag_of(&r);
    problem(
        send(M::PUT, Some(("if-none-match", "*".into())))
            .await
            .expect("r"),
        412,
    )
    .await;
    // Compare-and-set.
    let r = send(M::PUT, Some(("if-match", v1.clone())))
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let v2 = etag_of(&r);
    let r = send(M::PUT, Some(("if-match", v1.clone())))
        .await
        .expect("r");
    assert_eq!(r.headers()[ETAG], v2.as_str(), "412 tells the current ETag");
    problem(r, 412).await;
    // A list of tags matches any of them; weak tags never match.
    let r = send(M::PUT, Some(("if-match", format!("\"999999\", {v2}"))))
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let v3 = etag_of(&r);
    problem(
        send(M::PUT, Some(("if-match", format!("W/{v3}"))))
            .await
            .expect("r"),
        412,
    )
    .await;
    assert_eq!(
        send(M::PUT, Some(("if-match", "*".into())))
            .await
            .expect("r")
            .status(),
        200
    );
    let r = get(&s, "c").await;
    let cur = etag_of(&r);
    // If-None-Match on GET and HEAD: 304 when current.
    let r = s
        .client
        .get(&url)
        .header(IF_NONE_MATCH, &cur)
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag_of(&r), cur);
    let r = s
        .client
        .head(&url)
        .header(IF_NONE_MATCH, &cur)
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = s
        .client
        .get(&url)
        .header(IF_NONE_MATCH, &v1)
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    // Malformed tags are 400.
    problem(
        send(M::PUT, Some(("if-match", "12".into())))
            .await
            .expect("r"),
        400,
    )
    .await;
    // Conditional delete.
    let r = s
        .client
        .delete(&url)
        .header(IF_MATCH, &v1)
        .send()
        .await
        .expect("r");
    problem(r, 412).await;
    let r = s
        .client
        .delete(&url)
        .header(IF_MATCH, &cur)
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 204);
}

async fn cas_race_has_one_winner_per_version(engine: &str) {
    let s = Arc::new(Server::start(engine, &[]).await);
    let r = put(&s, "counter", "0").await;
    let mut current = etag_of(&r);
    for round in 0..5 {
        let mut tasks = Vec::new();
        for writer in 0..24 {
            let s = Arc::clone(&s);
            let tag = current.clone();
            tasks.push(tokio::spawn(async move {
                let r = s
                    .client
                    .put(s.url("/kv/counter"))
                    .header(IF_MATCH, tag)
                    .body(format!("{round}-{writer}"))
                    .send()
                    .await
                    .expect("put");
                let status = r.status().as_u16();
                (
                    status,
                    r.headers()
                        .get(ETAG)
                        .map(|v| v.to_str().expect("a").to_owned()),
                )
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (status, tag) = t.await.expect("task");
            match status {
                200 => winners.push(tag.expect("etag")),
                412 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins");
        current = winners.pop().expect("winner");
        assert_eq!(etag_of(&get(&s, "counter").await), current);
    }
}

async fn ttl_and_expiry(engine: &str) {
    let s = Server::start(engine, &[]).await;
    let r = s
        .client
        .put(s.url("/kv/session?ttl=100"))
        .body("s")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    let r = get(&s, "session").await;
    let ttl: u64 = r.headers()["x-ttl"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    // X-TTL is the seconds left, rounded to the nearest: never more than asked.
    assert!((1..=100).contains(&ttl), "{ttl}");
    let r = s
        .client
        .head(s.url("/kv/session"))
        .send()
        .await
        .expect("head");
    assert!(r.headers().get("x-ttl").is_some());
    // Expiry: a 1-second TTL turns into 404 (polled, bounded), and leaves the listing.
    let r = s
        .client
        .put(s.url("/kv/brief?ttl=1"))
        .body("b")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    let deadline = tokio::time::Instant::now() + common::STEP_TIMEOUT;
    loop {
        let r = get(&s, "brief").await;
        if r.status() == 404 {
            problem(r, 404).await;
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let list: Value = s
        .client
        .get(s.url("/kv"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["keys"], json!([{"key": "session"}]));
    // An expired key is created anew.
    assert_eq!(put(&s, "brief", "again").await.status(), 201);
    for bad in ["ttl=0", "ttl=abc", "ttl=-1", "bogus=1"] {
        let r = s
            .client
            .put(s.url(&format!("/kv/k?{bad}")))
            .body("x")
            .send()
            .await
            .expect("put");
        problem(r, 400).await;
    }
}

async fn listing_pages_by_prefix(engine: &str) {
    let s = Server::start(engine, &[]).await;
    let ops: Vec<Value> = (0..25)
        .map(|i| json!({"op": "put", "key": format!("p/{i:02}"), "value": "v"}))
        .chain([json!({"op": "put", "key": "q/1", "value": "v"})])
        .collect();
    assert_eq!(
        post_json(&s, "/batch", &json!({"ops": ops})).await.status(),
        200
    );
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = s.url("/kv?prefix=p%2F&limit=10");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = s
            .client
            .get(url)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        pages += 1;
        for k in page["keys"].as_array().expect("keys") {
            seen.push(k["key"].as_str().expect("utf8 key").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p/{i:02}")).collect();
    assert_eq!(seen, expected, "ascending, complete, no duplicates");
    assert_eq!(pages, 3);
    let all: Value = s
        .client
        .get(s.url("/kv?limit=100000"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(all["keys"].as_array().expect("keys").len(), 26);
    // A [start, end) range (end exclusive, as etcd), alone and with a prefix, paged.
    let keys_of = |v: &Value| -> Vec<String> {
        v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["key"].as_str().expect("utf8 key").to_owned())
            .collect()
    };
    let get_page = |q: String| {
        let url = s.url(&format!("/kv?{q}"));
        let client = s.client.clone();
        async move {
            let r = client.get(url).send().await.expect("list");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")
        }
    };
    let first = get_page("start=p%2F05&end=p%2F12&limit=4".into()).await;
    assert_eq!(keys_of(&first), ["p/05", "p/06", "p/07", "p/08"]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more follow")
        .to_owned();
    let second = get_page(format!("start=p%2F05&end=p%2F12&limit=4&cursor={cursor}")).await;
    assert_eq!(keys_of(&second), ["p/09", "p/10", "p/11"]);
    assert!(second["next_cursor"].is_null());
    let open_end = get_page("prefix=p%2F&start=p%2F23".into()).await;
    assert_eq!(keys_of(&open_end), ["p/23", "p/24"]);
    let past_prefix = get_page("start=p%2F24&end=r".into()).await;
    assert_eq!(keys_of(&past_prefix), ["p/24", "q/1"]);
    let empty = get_page("start=q&end=p".into()).await;
    assert!(keys_of(&empty).is_empty());
    for bad in [
        "limit=0",
        "limit=x",
        "cursor=%21%21",
        "nope=1",
        "start=%zz",
        "end=%4",
    ] {
        let r = s
            .client
            .get(s.url(&format!("/kv?{bad}")))
            .send()
            .await
            .expect("list");
        problem(r, 400).await;
    }
    // Versions past the document's int64 are refused, not wrapped or ignored (schemathesis
    // found `?version=` past it ignored behind an `If-None-Match: *` 304).
    for bad in [
        "/kv/p%2F05?version=9223372036854775808",
        "/kv/p%2F05?wait=1s&version=18446744073709551615",
        "/watch?since=9223372036854775808",
        "/watch?progress=9223372036854775808",
    ] {
        let r = s
            .client
            .get(s.url(bad))
            .header("if-none-match", "*")
            .send()
            .await
            .expect("get");
        problem(r, 400).await;
    }
}

async fn batch_is_all_or_nothing(engine: &str) {
    let s = Server::start(engine, &["--max-batch-ops", "5"]).await;
    assert_eq!(put(&s, "gone", "x").await.status(), 201);
    let body = json!({"ops": [
        {"op": "put", "key": "t", "value": "text"},
        {"op": "put", "key_base64": STANDARD.encode([0xFFu8, 0]), "value_base64": STANDARD.encode([0u8, 159, 146, 150])},
        {"op": "put", "key": "ttl", "value": "x", "ttl": 100},
        {"op": "delete", "key": "gone"},
        {"op": "delete", "key": "never-was"},
    ]});
    let r = post_json(&s, "/batch", &body).await;
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.expect("json");
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["created"], true);
    assert_eq!(results[3]["deleted"], true);
    assert_eq!(results[4]["deleted"], false);
    assert_eq!(get(&s, "t").await.text().await.expect("t"), "text");
    let r = get(&s, "%FF%00").await;
    assert_eq!(
        r.bytes().await.expect("b").to_vec(),
        vec![0u8, 159, 146, 150]
    );
    assert!(get(&s, "ttl").await.headers().get("x-ttl").is_some());
    assert_eq!(get(&s, "gone").await.status(), 404);
    // One bad operation: nothing is applied.
    for (bad, status) in [
        (json!({"op": "put", "key": "z1", "value": "1"}), 400),
        (json!({"op": "put", "key": "", "value": "1"}), 400),
        (
            json!({"op": "put", "key": "z3", "value": "1", "value_base64": "MQ=="}),
            400,
        ),
        (
            json!({"op": "put", "key": "z4", "value_base64": "not base64!"}),
            400,
        ),
        (json!({"op": "frobnicate", "key": "z5"}), 400),
        (
            json!({"op": "put", "key": "z6", "value": "1", "ttl": 0}),
            400,
        ),
    ] {
        let ops = json!({"ops": [{"op": "put", "key": "partial", "value": "p"}, bad, {"op": "put", "key": "z1"}]});
        problem(post_json(&s, "/batch", &ops).await, status).await;
        assert_eq!(get(&s, "partial").await.status(), 404, "nothing applied");
    }
    let six: Vec<Value> = (0..6)
        .map(|i| json!({"op": "put", "key": format!("m{i}"), "value": "v"}))
        .collect();
    problem(post_json(&s, "/batch", &json!({"ops": six})).await, 413).await;
    assert_eq!(get(&s, "m0").await.status(), 404);
    // JSON required, and well-formed.
    let r = s
        .client
        .post(s.url("/batch"))
        .body("{\"ops\": []}")
        .send()
        .await
        .expect("r");
    problem(r, 415).await;
    let r = s
        .client
        .post(s.url("/batch"))
        .header(CONTENT_TYPE, "application/json")
        .body("{\"ops\": [")
        .send()
        .await
        .expect("r");
    let p = problem(r, 400).await;
    assert!(
        p["detail"].as_str().expect("detail").contains("JSON"),
        "{p}"
    );
    let r = post_json(&s, "/batch", &json!({"ops": []})).await;
    assert_eq!(r.status(), 200);
}

async fn mget_answers_in_order(engine: &str) {
    let s = Server::start(engine, &[]).await;
    put(&s, "a", "1").await;
    put(&s, "bin", vec![0xFFu8, 0xFE]).await;
    put(&s, "%FF", "ff").await;
    let r = post_json(
        &s,
        "/mget",
        &json!({"keys": ["bin", "missing", "a", {"key_base64": "/w=="}, {"key": "a"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.expect("json");
    let v = out["values"].as_array().expect("values");
    assert_eq!(v.len(), 5);
    assert_eq!(v[0]["key"], "bin");
    assert_eq!(v[0]["value"], Value::Null);
    assert_eq!(v[0]["value_base64"], STANDARD.encode([0xFFu8, 0xFE]));
    assert_eq!(
        v[1],
        json!({"key": "missing", "found": false, "value": null})
    );
    assert_eq!(v[2]["value"], "1");
    assert!(v[2]["etag"].as_str().is_some());
    assert_eq!(v[3]["key_base64"], "/w==");
    assert_eq!(v[3]["value"], "ff");
    assert_eq!(v[4]["value"], "1");
    problem(post_json(&s, "/mget", &json!({"keys": [""]})).await, 400).await;
    problem(
        post_json(
            &s,
            "/mget",
            &json!({"keys": [{"key": "a", "key_base64": "YQ=="}]}),
        )
        .await,
        400,
    )
    .await;
    problem(post_json(&s, "/mget", &json!({"nokeys": []})).await, 400).await;
}

async fn limits_are_enforced(engine: &str) {
    let s = Server::start(
        engine,
        &[
            "--max-key-bytes",
            "16",
            "--max-value-bytes",
            "64",
            "--max-body-bytes",
            "512",
            "--max-batch-ops",
            "3",
        ],
    )
    .await;
    let key16 = "k".repeat(16);
    assert_eq!(put(&s, &key16, "v").await.status(), 201);
    let p = problem(put(&s, &"k".repeat(17), "v").await, 414).await;
    assert!(p["detail"].as_str().expect("d").contains("16"), "{p}");
    problem(get(&s, &"%FF".repeat(17)).await, 414).await;
    assert_eq!(put(&s, "v64", vec![7u8; 64]).await.status(), 201);
    problem(put(&s, "v65", vec![7u8; 65]).await, 413).await;
    // Over-limit bodies are refused from Content-Length, before they are read: the server
    // answers 413 to the headers alone, without waiting for the 4 MiB it was promised.
    let head = raw_exchange(
        &s,
        "PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert_eq!(get(&s, "v65").await.status(), 404);
    // Keys and values inside JSON bodies.
    let r = post_json(
        &s,
        "/batch",
        &json!({"ops": [{"op": "put", "key": "k".repeat(17), "value": "v"}]}),
    )
    .await;
    problem(r, 413).await;
    let r = post_json(
        &s,
        "/batch",
        &json!({"ops": [{"op": "put", "key": "k", "value": "v".repeat(65)}]}),
    )
    .await;
    problem(r, 413).await;
    let r = post_json(&s, "/mget", &json!({"keys": ["a", "b", "c", "d"]})).await;
    problem(r, 413).await;
    let r = post_json(&s, "/mget", &json!({"keys": ["x".repeat(600)]})).await;
    problem(r, 413).await;
}

/// Sends raw bytes on a fresh connection and reads the answer until the server closes or the
/// head and a little body have arrived.
async fn raw_exchange(s: &Server, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = conn.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n")
                && text.len() > end + 4
            {
                break;
            }
        }
    };
    tokio::time::timeout(common::STEP_TIMEOUT, read)
        .await
        .expect("answer before the timeout");
    String::from_utf8_lossy(&buf).into_owned()
}

async fn errors_are_problem_json(engine: &str) {
    let s = Server::start(engine, &[]).await;
    let r = s.client.get(s.url("/nope")).send().await.expect("r");
    problem(r, 404).await;
    let r = s
        .client
        .patch(s.url("/kv/x"))
        .body("x")
        .send()
        .await
        .expect("r");
    let allow = r
        .headers()
        .get("allow")
        .map(|v| v.to_str().expect("a").to_owned());
    problem(r, 405).await;
    let allow = allow.expect("Allow header on 405");
    for m in ["GET", "PUT", "DELETE", "HEAD"] {
        assert!(allow.contains(m), "{allow}");
    }
    let r = s.client.delete(s.url("/healthz")).send().await.expect("r");
    problem(r, 405).await;
    let r = s.client.get(s.url("/mget")).send().await.expect("r");
    problem(r, 405).await;
    // A request id is made when absent and kept when given.
    let r = s
        .client
        .get(s.url("/healthz"))
        .header("x-request-id", "test-id-42")
        .send()
        .await
        .expect("r");
    assert_eq!(r.headers()["x-request-id"], "test-id-42");
}

async fn admin_jobs_and_stats(engine: &str) {
    let s = Server::start(engine, &[]).await;
    for i in 0..50 {
        put(&s, &format!("k{i}"), "value").await;
        put(&s, &format!("k{i}"), "value2").await;
    }
    let r = s.client.get(s.url("/admin/merge")).send().await.expect("r");
    assert_eq!(r.status(), 200);
    let idle: Value = r.json().await.expect("json");
    assert_eq!(idle["state"], "idle");
    let r = s
        .client
        .post(s.url("/admin/merge?wait=true"))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.expect("json");
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["completed"], 1);
    assert!(done["report"]["duration_seconds"].is_number());
    let r = s
        .client
        .post(s.url("/admin/merge"))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["location"], "/admin/merge");
    let started: Value = r.json().await.expect("json");
    assert!(
        ["running", "done"].contains(&started["state"].as_str().expect("state")),
        "{started}"
    );
    // Bounded poll until the background merge is done.
    let deadline = tokio::time::Instant::now() + common::STEP_TIMEOUT;
    loop {
        let st: Value = s
            .client
            .get(s.url("/admin/merge"))
            .send()
            .await
            .expect("r")
            .json()
            .await
            .expect("json");
        if st["state"] == "done" && st["completed"] == 2 {
            break;
        }
        assert_ne!(st["state"], "failed", "{st}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "merge never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    problem(
        s.client
            .post(s.url("/admin/merge?wait=maybe"))
            .send()
            .await
            .expect("r"),
        400,
    )
    .await;
    let stats: Value = s
        .client
        .get(s.url("/admin/stats"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["engine"], engine);
    assert_eq!(stats["keys"], 50);
    assert_eq!(stats["sync"], "always");
    assert_eq!(stats["merge"]["completed"], 2);
    assert!(stats["live_bytes"].as_u64().expect("live") > 0);
    assert!(stats["files"].is_array());
    for k in [
        "dead_bytes",
        "disk_bytes",
        "data_files",
        "fragmentation",
        "bytes_written",
    ] {
        assert!(stats[k].is_number(), "{k}: {stats}");
    }
}

async fn snapshot_is_a_data_directory(engine: &str) {
    let s = Server::start(engine, &[]).await;
    put(&s, "snap/1", "one").await;
    put(&s, "%FFsnap", "two").await;
    let r = s
        .client
        .post(s.url("/admin/snapshot?wait=true"))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.expect("json");
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["report"]["keys"], 2);
    let path = done["report"]["path"].as_str().expect("path").to_owned();
    let listed: Value = s
        .client
        .get(s.url("/admin/snapshot"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    let kept = listed["snapshots"].as_array().expect("snapshots");
    assert!(kept.iter().any(|k| k["path"] == path.as_str()), "{listed}");
    let r = s
        .client
        .post(s.url("/admin/snapshot"))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 202);
    if engine == "bitcask" {
        // A bitcask snapshot is a data directory: serve it. (Copy it first: the source server
        // may prune it while the second server has it open.)
        let copy = s.scratch.path().join("snapshot-copy");
        copy_dir(std::path::Path::new(&path), &copy);
        let t = Server::start_in(&copy, engine, &[]).await;
        assert_eq!(get(&t, "snap/1").await.text().await.expect("t"), "one");
        assert_eq!(get(&t, "%FFsnap").await.text().await.expect("t"), "two");
    }
}

async fn metrics_are_exposed(engine: &str) {
    let s = Server::start(engine, &[]).await;
    put(&s, "m", "v").await;
    get(&s, "m").await;
    get(&s, "absent").await;
    s.client.get(s.url("/nowhere")).send().await.expect("r");
    let r = s.client.get(s.url("/metrics")).send().await.expect("r");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    let text = r.text().await.expect("text");
    for needle in [
        r#"hoardhaven_http_requests_total{method="PUT",route="/kv/{*key}",status="201"} 1"#,
        r#"hoardhaven_http_requests_total{method="GET",route="/kv/{*key}",status="200"} 1"#,
        r#"hoardhaven_http_requests_total{method="GET",route="/kv/{*key}",status="404"} 1"#,
        r#"hoardhaven_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        "# TYPE hoardhaven_http_request_duration_seconds histogram",
        "hoardhaven_http_request_duration_seconds_bucket{",
        "# HELP hoardhaven_engine_keys ",
        "hoardhaven_engine_keys 1",
        "hoardhaven_engine_live_bytes ",
        "hoardhaven_engine_dead_bytes ",
        "hoardhaven_engine_data_files ",
        "hoardhaven_engine_written_bytes_total ",
        "hoardhaven_engine_corrupt_records_total 0",
        "hoardhaven_engine_merges_total 0",
        "hoardhaven_engine_snapshots_total 0",
        "hoardhaven_ready 1",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }
    // Every metric has help text (what `promtool check metrics` insists on).
    let mut typed = BTreeSet::new();
    let mut helped = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name)) => {
                typed.insert(name.to_owned());
            }
            (Some("#"), Some("HELP"), Some(name)) => {
                helped.insert(name.to_owned());
            }
            _ => {}
        }
    }
    assert!(!typed.is_empty());
    assert_eq!(typed, helped, "every metric is described");
    // promtool (Debian's `prometheus` package) must accept the document.
    if let Some(out) = external(
        "promtool",
        std::process::Command::new("promtool").args(["check", "metrics"]),
        Some(text.as_bytes()),
    ) {
        assert!(
            out.status.success(),
            "promtool check metrics: {}",
            show(&out)
        );
    }
}

async fn openapi_docs_and_probes(engine: &str) {
    let s = Server::start(engine, &[]).await;
    let r = s.client.get(s.url("/healthz")).send().await.expect("r");
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"status": "ok"})
    );
    let r = s.client.get(s.url("/readyz")).send().await.expect("r");
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"status": "ready"})
    );
    let r = s
        .client
        .get(s.url("/openapi.json"))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let served = r.text().await.expect("text");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi")).expect("mkdir");
        std::fs::write(path, &served).expect("write openapi.json");
    }
    let committed = std::fs::read_to_string(path).expect(
        "openapi/openapi.json (create it with UPDATE_OPENAPI=1 cargo test --test http_api)",
    );
    let pretty = |s: &str| {
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(s).expect("json"))
            .expect("pretty")
    };
    assert!(
        pretty(&served) == pretty(&committed),
        "served /openapi.json differs from openapi/openapi.json; regenerate with UPDATE_OPENAPI=1 cargo test --test http_api"
    );
    let doc: Value = serde_json::from_str(&served).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    for (p, methods) in [
        ("/kv/{key}", &["get", "put", "head", "delete"][..]),
        ("/kv", &["get"]),
        ("/batch", &["post"]),
        ("/mget", &["post"]),
        ("/admin/merge", &["get", "post"]),
        ("/admin/snapshot", &["get", "post"]),
        ("/admin/stats", &["get"]),
        ("/metrics", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
    ] {
        for m in methods {
            assert!(doc["paths"][p][m].is_object(), "{m} {p} documented");
        }
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    // The document validates (openapi-spec-validator from PyPI).
    if let Some(out) = external(
        "openapi-spec-validator",
        std::process::Command::new("python3").args(["-m", "openapi_spec_validator", path]),
        None,
    ) {
        assert!(
            out.status.success(),
            "openapi-spec-validator: {}",
            show(&out)
        );
    }
    assert_eq!(doc["info"]["x-limits"]["max_key_bytes"], 1024);
    // Swagger UI, served from vendored assets.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = no_redirect.get(s.url("/docs")).send().await.expect("r");
    assert!(r.status().is_redirection());
    let r = s.client.get(s.url("/docs/")).send().await.expect("r");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("html").contains("swagger"));
    let r = s
        .client
        .get(s.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .expect("r");
    assert!(r.text().await.expect("js").contains("/openapi.json"));
    // A real browser renders the page offline and lists every operation.
    let url = s.url("/docs/");
    if let Some(out) = external(
        "chromium",
        std::process::Command::new("timeout").args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--virtual-time-budget=8000",
            "--dump-dom",
            &url,
        ]),
        None,
    ) {
        // `timeout` answers 127 when chromium is not installed.
        if out.status.code() == Some(127) {
            assert!(
                std::env::var_os("HOARDHAVEN_REQUIRE_TOOLS").is_none(),
                "chromium is required (HOARDHAVEN_REQUIRE_TOOLS is set)"
            );
            eprintln!("note: chromium not installed; check skipped");
            return;
        }
        let dom = String::from_utf8_lossy(&out.stdout);
        for p in [
            "/kv/{key}",
            "/kv",
            "/batch",
            "/mget",
            "/admin/merge",
            "/admin/snapshot",
            "/admin/stats",
            "/metrics",
            "/healthz",
            "/readyz",
        ] {
            assert!(
                dom.contains(&format!("data-path=\"{p}\"")),
                "Swagger UI lists {p}: {}",
                show(&out)
            );
        }
    }
}

async fn graceful_stop_keeps_data(engine: &str) {
    // sync=never: only the final sync at shutdown makes these durable.
    let s = Server::start(engine, &["--sync", "never"]).await;
    for i in 0..100 {
        assert_eq!(
            put(&s, &format!("d{i}"), format!("v{i}")).await.status(),
            201
        );
    }
    let dir = s.data_dir.clone();
    let mut s = s;
    let status = s.terminate().await;
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(
        s.stderr().contains("data durable"),
        "closed cleanly: {}",
        s.stderr()
    );
    let t = Server::start_in(&dir, engine, &[]).await;
    for i in [0, 42, 99] {
        assert_eq!(
            get(&t, &format!("d{i}")).await.text().await.expect("t"),
            format!("v{i}")
        );
    }
    let stats: Value = t
        .client
        .get(t.url("/admin/stats"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["keys"], 100);
}

async fn second_process_is_refused(engine: &str) {
    let s = Server::start(engine, &[]).await;
    let dir = s.data_dir.display().to_string();
    let (status, stderr) = run_to_exit(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--engine",
            engine,
            "--data-dir",
            &dir,
        ],
        &[],
    )
    .await;
    assert!(!status.success());
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&dir),
        "last line names the directory: {stderr}"
    );
    // The first server is unharmed.
    assert_eq!(put(&s, "still", "here").await.status(), 201);
}

#[tokio::test]
async fn bad_settings_are_named_and_refused() {
    let (status, stderr) = run_to_exit(&["serve", "--sync", "sometimes"], &[]).await;
    assert!(!status.success());
    assert!(stderr.contains("--sync"), "{stderr}");
    let (status, stderr) = run_to_exit(&["serve"], &[("HOARDHAVEN_ENGINE", "rocks")]).await;
    assert!(!status.success());
    assert!(
        stderr.contains("--engine") && stderr.contains("HOARDHAVEN_ENGINE"),
        "names the flag and the variable that set it: {stderr}"
    );
    let (status, stderr) = run_to_exit(&["serve"], &[("HOARDHAVEN_SYNCC", "never")]).await;
    assert!(!status.success());
    assert!(
        stderr.contains("HOARDHAVEN_SYNCC"),
        "a typo is refused: {stderr}"
    );
    let (status, stderr) = run_to_exit(&["serve"], &[("HOARDHAVEN_MAX_KEY_BYTES", "0")]).await;
    assert!(!status.success());
    assert!(stderr.contains("max_key_bytes"), "{stderr}");
    let (status, stderr) = run_to_exit(&["serve", "--config", "/no/such/file.toml"], &[]).await;
    assert!(!status.success());
    assert!(stderr.contains("/no/such/file.toml"), "{stderr}");
    let (status, stderr) =
        run_to_exit(&["serve"], &[("HOARDHAVEN_BITCASK__READ_MODE", "mmmap")]).await;
    assert!(!status.success());
    assert!(
        stderr.contains("--bitcask-read-mode") && stderr.contains("HOARDHAVEN_BITCASK__READ_MODE"),
        "{stderr}"
    );
}

#[tokio::test]
async fn settings_layer_file_env_flags() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let file = scratch.path().join("hoardhaven.toml");
    std::fs::write(&file, "max_key_bytes = 8\nmax_value_bytes = 8\n").expect("write");
    let data = scratch.path().join("data");
    let file_arg = file.display().to_string();
    // File says 8/8, environment raises the value limit to 10, a flag raises the key limit.
    let s = Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        data,
        "bitcask",
        &["--config", &file_arg, "--max-key-bytes", "9"],
        &[("HOARDHAVEN_MAX_VALUE_BYTES", "10")],
    )
    .await;
    assert_eq!(put(&s, "123456789", "x").await.status(), 201);
    assert_eq!(put(&s, "1234567890", "x").await.status(), 414);
    assert_eq!(put(&s, "v", "0123456789").await.status(), 201);
    assert_eq!(put(&s, "w", "0123456789A").await.status(), 413);
}
