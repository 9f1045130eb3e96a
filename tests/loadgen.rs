//! The load tool against tiny stand-in servers on loopback: one speaking hoardhaven's KV routes,
//! one speaking etcd's gateway. Checks that every test runs, preload fills the key space,
//! results carry percentiles and ratios, and the JSON report is written. No timing thresholds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use hoardhaven::loadgen::{self, BenchArgs, Target, Test};

type Map = Arc<Mutex<HashMap<String, Bytes>>>;

async fn kv_get(State(m): State<Map>, Path(k): Path<String>) -> Result<Bytes, StatusCode> {
    let m = m.lock().map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    m.get(&k).cloned().ok_or(StatusCode::NOT_FOUND)
}

async fn kv_put(State(m): State<Map>, Path(k): Path<String>, body: Bytes) -> StatusCode {
    match m.lock() {
        Ok(mut m) => match m.insert(k, body) {
            None => StatusCode::CREATED,
            Some(_) => StatusCode::OK,
        },
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn serve(app: Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

fn args(url: String, target: Target) -> BenchArgs {
    BenchArgs {
        url,
        target,
        connections: 4,
        keys: 100,
        requests: Some(300),
        quiet: true,
        ..BenchArgs::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_hoardhaven_routes() -> anyhow::Result<()> {
    let map: Map = Arc::default();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/kv/{key}", get(kv_get).put(kv_put))
        .with_state(map.clone());
    let url = serve(app).await?;
    let mut a = args(url, Target::Hoardhaven);
    a.rounds = 3; // three slices of 100 requests per test, the tests taking turns
    let report = loadgen::measure(&a).await?;
    let names: Vec<&str> = report.results.iter().map(|r| r.test.as_str()).collect();
    assert_eq!(names, ["healthz", "get", "put", "mixed"]);
    for r in &report.results {
        assert_eq!(r.errors, 0, "{r:?}");
        assert_eq!(r.requests, 300);
        assert!(r.latency_us.p50 <= r.latency_us.p99);
        assert!(r.latency_us.p99 <= r.latency_us.max);
        assert!(r.ratio_to_healthz.is_some());
    }
    assert_eq!(map.lock().map(|m| m.len()).unwrap_or(0), 100);
    Ok(())
}

/// `GET /kv?prefix=&limit=`: 200 when the prefix covers exactly `limit` stored keys (a full
/// page), 500 otherwise, so a listing that names no page shows as an error.
async fn kv_list(
    State(m): State<Map>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> StatusCode {
    let (Some(prefix), Some(limit)) = (q.get("prefix"), q.get("limit")) else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(m) = m.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    let covered = m.keys().filter(|k| k.starts_with(prefix.as_str())).count();
    if limit.parse() == Ok(covered) {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_full_pages_by_prefix() -> anyhow::Result<()> {
    let map: Map = Arc::default();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/kv", get(kv_list))
        .route("/kv/{key}", get(kv_get).put(kv_put))
        .with_state(map.clone());
    let url = serve(app).await?;
    let mut a = args(url, Target::Hoardhaven);
    a.keys = 1000;
    a.tests = vec![Test::List];
    let report = loadgen::measure(&a).await?;
    let names: Vec<&str> = report.results.iter().map(|r| r.test.as_str()).collect();
    assert_eq!(names, ["healthz", "list"]);
    for r in &report.results {
        assert_eq!(r.errors, 0, "{r:?}");
        assert_eq!(r.requests, 300);
    }
    // `list` preloads the key space like `get`.
    assert_eq!(map.lock().map(|m| m.len()).unwrap_or(0), 1000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_etcd_gateway_and_counts_errors() -> anyhow::Result<()> {
    let app = Router::new()
        .route("/health", get(|| async { r#"{"health":"true"}"# }))
        .route("/v3/kv/put", post(|| async { "{}" }))
        .route("/v3/kv/range", post(|| async { "{}" }));
    let url = serve(app).await?;
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("out.json");
    let mut a = args(url.clone(), Target::Etcd);
    a.tests = vec![Test::Get, Test::Put];
    a.json = Some(json.clone());
    let report = loadgen::measure(&a).await?;
    assert!(report.results.iter().all(|r| r.errors == 0));

    // The same routes answered as hoardhaven's are absent: every request is an error, and
    // the tool says so instead of hanging.
    let mut h = args(url, Target::Hoardhaven);
    h.tests = vec![Test::Put];
    h.no_baseline = true;
    let res = loadgen::measure(&h).await;
    assert!(res.is_err() || res.is_ok_and(|r| r.results[0].errors > 0));
    Ok(())
}

#[test]
fn run_writes_json() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let url = rt.block_on(serve(
        Router::new().route("/healthz", get(|| async { "ok" })),
    ))?;
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("report.json");
    let mut a = args(url, Target::Hoardhaven);
    a.tests = vec![];
    a.json = Some(json.clone());
    a.threads = Some(1);
    loadgen::run(a)?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    assert_eq!(v["results"][0]["test"], "healthz");
    assert!(v["results"][0]["latency_us"]["p999"].is_u64());
    Ok(())
}
