//! Black-box tests of the change feed: `GET /watch` (Server-Sent Events) and blocking reads,
//! against the real binary on a loopback port, over each engine.
//!
//! Every wait is for an event (an SSE event, a status, an exit) and bounded by
//! `common::STEP_TIMEOUT`; none depends on the machine's speed.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{STEP_TIMEOUT, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    ordered_without_gaps_across_concurrent_writers_and_batches,
    resumes_after_a_dropped_connection_and_after_a_restart,
    gone_after_a_merge_dropped_the_history,
    limits_cap_timeout_auth_and_shutdown,
    blocking_read_returns_on_change_or_304,
    slow_consumer_is_cut_without_affecting_others,
    a_key_range_filters_the_feed,
);

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Ev {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// A reader of an SSE response.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(s: &Server, query: &str, last_id: Option<u64>) -> Sse {
        let r = Self::request(s, query, last_id).await;
        assert_eq!(r.status(), 200, "watch {query}");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        Sse {
            resp: r,
            buf: String::new(),
        }
    }

    async fn request(s: &Server, query: &str, last_id: Option<u64>) -> reqwest::Response {
        let mut req = s.client.get(s.url(&format!("/watch?{query}")));
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        req.send().await.expect("watch")
    }

    /// The next event, `None` at the end of the stream.
    async fn next(&mut self) -> Option<Ev> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Ev {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a comment or keep-alive
                }
                ev.data = serde_json::from_str(&data).expect("event data is JSON");
                return Some(ev);
            }
            let chunk = tokio::time::timeout(STEP_TIMEOUT, self.resp.chunk())
                .await
                .expect("an event within the step timeout")
                .expect("read the stream")?;
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }

    /// The next change event (progress events skipped).
    async fn change(&mut self) -> Ev {
        loop {
            let ev = self.next().await.expect("stream open");
            if ev.event != "progress" {
                return ev;
            }
        }
    }
}

async fn put(s: &Server, key: &str, value: &str) -> u64 {
    let r = s
        .client
        .put(s.url(&format!("/kv/{key}")))
        .body(value.to_string())
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success(), "put {key}: {}", r.status());
    version_of(r.headers()["etag"].to_str().expect("etag"))
}

fn version_of(etag: &str) -> u64 {
    etag.trim_matches('"').parse().expect("version etag")
}

async fn batch(s: &Server, ops: Value) -> Vec<u64> {
    let r = s
        .client
        .post(s.url("/batch"))
        .json(&json!({ "ops": ops }))
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.expect("json");
    out["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| version_of(r["etag"].as_str().expect("etag")))
        .collect()
}

/// The current version, from a listing's header.
async fn listed_version(s: &Server) -> u64 {
    let r = s.client.get(s.url("/kv")).send().await.expect("list");
    assert_eq!(r.status(), 200);
    r.headers()["x-hoardhaven-version"]
        .to_str()
        .expect("header")
        .parse()
        .expect("version")
}

async fn ordered_without_gaps_across_concurrent_writers_and_batches(engine: &str) {
    let s = Server::start(engine, &[]).await;
    let since = listed_version(&s).await;
    let mut w = Sse::open(&s, &format!("prefix=w%2F&since={since}"), None).await;
    let mut writers = Vec::new();
    for t in 0..4 {
        let client = s.client.clone();
        let base = s.base.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let key = if i % 2 == 0 { "w" } else { "x" };
                let r = client
                    .put(format!("{base}/kv/{key}/{t}-{i}"))
                    .body(format!("v{i}"))
                    .send()
                    .await
                    .expect("put");
                assert!(r.status().is_success());
                if key == "w" {
                    acked.push(version_of(r.headers()["etag"].to_str().expect("etag")));
                }
            }
            acked
        }));
    }
    let mut expected = BTreeSet::new();
    let mut batches = Vec::new();
    for b in 0..8 {
        let v = batch(
            &s,
            json!([
                {"op": "put", "key": format!("w/b{b}-1"), "value": "1"},
                {"op": "put", "key": format!("x/b{b}"), "value": "x"},
                {"op": "put", "key": format!("w/b{b}-2"), "value": "2"},
                {"op": "delete", "key": format!("w/b{b}-1")},
            ]),
        )
        .await;
        expected.extend([v[0], v[2], v[3]]);
        batches.push(vec![v[0], v[2], v[3]]);
    }
    for h in writers {
        expected.extend(h.await.expect("writer"));
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let ev = w.change().await;
        let v = ev.id.expect("id");
        assert_eq!(ev.data["version"], v);
        assert!(ev.data["key"].as_str().expect("key").starts_with("w/"));
        assert!(["put", "delete"].contains(&ev.event.as_str()), "{ev:?}");
        got.push(v);
    }
    assert!(
        got.windows(2).all(|p| p[0] < p[1]),
        "in version order: {got:?}"
    );
    let got_set: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(got_set, expected, "exactly the acknowledged writes, no gap");
    for b in batches {
        let at = got.iter().position(|v| *v == b[0]).expect("batch seen");
        assert_eq!(&got[at..at + 3], &b[..], "a batch's events arrive together");
    }
}

/// `start` (inclusive) and `end` (exclusive) narrow the feed as they narrow a listing, also
/// for history replayed from before the watch began.
async fn a_key_range_filters_the_feed(engine: &str) {
    let s = Server::start(engine, &[]).await;
    let since = listed_version(&s).await;
    let mut inside = Vec::new();
    for key in ["g/a", "g/b", "g/c", "g/d", "h/b"] {
        let v = put(&s, key, "x").await;
        if ["g/b", "g/c"].contains(&key) {
            inside.push(v);
        }
    }
    let mut w = Sse::open(
        &s,
        &format!("prefix=g%2F&start=g%2Fb&end=g%2Fd&since={since}"),
        None,
    )
    .await;
    for want in &inside {
        assert_eq!(
            w.change().await.id,
            Some(*want),
            "{engine}: history in range"
        );
    }
    // Live: the next in-range change comes next, nothing out of range in between.
    put(&s, "g/d", "y").await;
    put(&s, "g/a", "y").await;
    let live = put(&s, "g/bb", "y").await;
    let ev = w.change().await;
    assert_eq!(ev.id, Some(live), "{engine}: {ev:?}");
    assert_eq!(ev.data["key"], "g/bb");
}

async fn resumes_after_a_dropped_connection_and_after_a_restart(engine: &str) {
    let mut s = Server::start(engine, &["--watch-history-events", "8"]).await;
    let since = listed_version(&s).await;
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(put(&s, &format!("r/{i}"), &format!("v{i}")).await);
    }
    let mut w = Sse::open(&s, &format!("prefix=r%2F&since={since}&values=true"), None).await;
    let first = w.change().await;
    assert_eq!(first.id, Some(all[0]));
    assert_eq!(first.data["value"], "v0");
    let second = w.change().await;
    drop(w);
    for i in 5..20 {
        all.push(put(&s, &format!("r/{i}"), &format!("v{i}")).await);
    }
    // Last-Event-ID wins over since; resumption is exclusive. 20 writes > the ring of 8:
    // the first part comes from the data files / log.
    let mut w = Sse::open(&s, "prefix=r%2F&since=0", second.id).await;
    for want in &all[2..] {
        assert_eq!(w.change().await.id, Some(*want));
    }
    // Live now: the next change comes next (nothing repeated, nothing skipped).
    all.push(put(&s, "r/20", "v20").await);
    assert_eq!(w.change().await.id, all.last().copied());
    drop(w);
    // A resume inside the ring is exclusive too.
    let mut w = Sse::open(&s, "prefix=r%2F", Some(all[17])).await;
    assert_eq!(w.change().await.id, Some(all[18]));
    drop(w);
    s.terminate().await;
    let dir = s.data_dir.clone();
    let s = Server::start_in(&dir, engine, &["--watch-history-events", "8"]).await;
    let mut w = Sse::open(&s, "prefix=r%2F", Some(all[9])).await;
    for (i, want) in all.iter().enumerate().skip(10) {
        let ev = w.change().await;
        assert_eq!(ev.id, Some(*want), "after restart, change {i}");
        assert_eq!(ev.data["key"], format!("r/{i}"));
    }
    let next = put(&s, "r/new", "n").await;
    assert_eq!(w.change().await.id, Some(next));
}

async fn gone_after_a_merge_dropped_the_history(engine: &str) {
    let s = Server::start(engine, &["--watch-history-events", "4"]).await;
    let since = listed_version(&s).await;
    let mut acked = Vec::new();
    for i in 0..12 {
        acked.push(put(&s, &format!("g/{}", i % 3), &format!("v{i}")).await);
    }
    // Older than the ring, still on disk: served.
    let mut w = Sse::open(&s, &format!("since={since}"), None).await;
    for want in &acked {
        assert_eq!(w.change().await.id, Some(*want));
    }
    drop(w);
    let r = s
        .client
        .post(s.url("/admin/merge?wait=true"))
        .send()
        .await
        .expect("merge");
    assert_eq!(r.status(), 200);
    let current = listed_version(&s).await;
    let r = Sse::request(&s, &format!("since={since}"), None).await;
    assert_eq!(r.status(), StatusCode::GONE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.expect("problem");
    assert_eq!(p["type"], "urn:hoardhaven:problem:history-gone");
    assert_eq!(p["current_version"], current);
    let oldest = p["oldest_version"].as_u64().expect("oldest_version");
    assert!(oldest > since && oldest <= current, "{p}");
    // From the named oldest version on it works. No write may land before the watcher's first
    // read: the ring is 4 changes long, so one more change could push `oldest` out of it (the
    // memory engine's log holds nothing older after the rewrite) and the watch would end
    // `history-gone`, rightly. So a change is written only when none is above `oldest` yet.
    let mut w = Sse::open(&s, &format!("since={oldest}"), None).await;
    let upto = if oldest < current {
        current
    } else {
        put(&s, "g/after", "x").await
    };
    let ev = w.change().await;
    let id = ev
        .id
        .unwrap_or_else(|| panic!("{engine}: a change, not {ev:?} ({p})"));
    assert!(
        id > oldest && id <= upto,
        "{engine}: {ev:?} after the 410's oldest version {oldest}, up to {upto} ({p})"
    );
}

async fn limits_cap_timeout_auth_and_shutdown(engine: &str) {
    let mut s = Server::start(
        engine,
        &[
            "--watch-max-watchers",
            "2",
            "--request-timeout-secs",
            "1",
            "--auth-tokens",
            "read:rtoken-0123456789abcdef,write:wtoken-0123456789abcdef",
        ],
    )
    .await;
    let auth = |req: reqwest::RequestBuilder, t: &str| req.bearer_auth(t);
    let r = s.client.get(s.url("/watch")).send().await.expect("watch");
    assert_eq!(r.status(), 401, "not exempt from auth");
    let open = |t: &'static str| {
        let req = auth(s.client.get(s.url("/watch?progress=2")), t);
        async move { req.send().await.expect("watch") }
    };
    let a = open("rtoken-0123456789abcdef").await;
    assert_eq!(a.status(), 200, "the read role may watch");
    let b = open("rtoken-0123456789abcdef").await;
    assert_eq!(b.status(), 200);
    let c = open("rtoken-0123456789abcdef").await;
    assert_eq!(c.status(), 503, "past the watcher cap");
    assert!(c.headers().contains_key("retry-after"));
    let p: Value = c.json().await.expect("problem");
    assert_eq!(p["type"], "urn:hoardhaven:problem:too-many-watchers");
    // A progress event after 2 s on a server whose request timeout is 1 s: watches are exempt.
    let mut a = Sse {
        resp: a,
        buf: String::new(),
    };
    let ev = a.next().await.expect("progress");
    assert_eq!(ev.event, "progress");
    // Releasing a slot lets the next watcher in (bounded poll on the gauge).
    drop(b);
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let r = open("rtoken-0123456789abcdef").await;
        if r.status() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Shutdown ends the watch with an `end` event and the stream closes.
    let status = s.terminate().await;
    assert!(status.success(), "clean exit: {status}");
    let mut ended = false;
    while let Some(ev) = a.next().await {
        if ev.event == "end" {
            ended = true;
        }
    }
    assert!(ended, "an end event before the stream closed");
}

async fn blocking_read_returns_on_change_or_304(engine: &str) {
    let s = Server::start(engine, &[]).await;
    let v = put(&s, "b", "one").await;
    let r = s
        .client
        .get(s.url(&format!("/kv/b?wait=1s&version={v}")))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 304, "unchanged within the wait");
    assert_eq!(r.headers()["etag"], format!("\"{v}\""));
    let client = s.client.clone();
    let url = s.url(&format!("/kv/b?wait=60s&version={v}"));
    let waiting = tokio::spawn(async move { client.get(url).send().await.expect("get") });
    // The blocked read must not answer before the write; the write wakes it.
    tokio::task::yield_now().await;
    let v2 = put(&s, "b", "two").await;
    let r = waiting.await.expect("join");
    assert_eq!(r.status(), 200);
    let etag = version_of(r.headers()["etag"].to_str().expect("etag"));
    assert!(etag >= v2 || etag > v, "a newer version");
    assert_eq!(r.text().await.expect("body"), "two");
    let r = s
        .client
        .get(s.url("/kv/b?wait=soon&version=1"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
}

async fn slow_consumer_is_cut_without_affecting_others(engine: &str) {
    let s = Server::start(
        engine,
        &[
            "--watch-history-events",
            "512",
            "--watch-buffer-events",
            "8",
        ],
    )
    .await;
    // The slow client asks for a watch and never reads.
    let mut slow = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /watch?prefix=s%2F&values=true HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut head = [0u8; 12];
    slow.read_exact(&mut head).await.expect("status line");
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut fast = Sse::open(&s, "prefix=s%2F&values=true", None).await;
    let value = "v".repeat(8 * 1024);
    let mut acked = Vec::new();
    // Far more than socket buffers, the channel and the ring hold for the slow client. (Half
    // the step timeout: the fast client's request is bounded by the whole of it.)
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT / 2;
    let mut n = 0;
    while s.metric("hoardhaven_watch_slow_consumers_cut_total").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow consumer never cut"
        );
        let ops: Vec<Value> = (0..16)
            .map(|i| json!({"op": "put", "key": format!("s/{n}-{i}"), "value": value}))
            .collect();
        acked.extend(batch(&s, json!(ops)).await);
        n += 1;
        // The fast client keeps up.
        while let Some(want) = acked.first().copied() {
            let ev = fast.change().await;
            assert_eq!(
                ev.id,
                Some(want),
                "the fast watcher sees every change in order"
            );
            assert_eq!(ev.data["value"].as_str().map(str::len), Some(8 * 1024));
            acked.remove(0);
        }
    }
    // The slow client, reading now, finds the final error event and the end of the stream.
    let mut rest = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, slow.read_to_end(&mut rest))
        .await
        .expect("the stream ends")
        .expect("read");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("event: error"), "a final error event");
    assert!(text.contains("slow-consumer"));
    // The fast one is still served.
    let v = put(&s, "s/after", "x").await;
    assert_eq!(fast.change().await.id, Some(v));
}
