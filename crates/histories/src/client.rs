//! The clients: each runs reads, writes of values written once in the whole run, and
//! compare-and-sets (`If-Match` with an ETag it saw) against one node's URL, recording every
//! invocation and completion in the [`Recorder`].
//!
//! How a response becomes an event is decided here and nowhere else ([`classify`]):
//! 2xx is `ok`; 412 on a CAS is `fail` with [`PRECONDITION_FAILED`]; any other 4xx is `fail`
//! (refused, no effect); a 503 whose problem type is [`NOT_APPLIED`] is `fail` (the server
//! says the write was applied nowhere); any other 5xx, a timeout or a connection lost after
//! the request was sent is `info` (unknown); a connection refused is `fail` (nothing was
//! sent).
//!
//! Keys rotate as Jepsen's independent keys do: the clients share a few active keys and move to
//! fresh ones every `ops_per_key` operations or so, which keeps each key's history small enough
//! for the checker. Every key used is read once more at the end ([`final_reads`]), so a write a
//! crash took away is seen even on a key the clients had left.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;

use crate::history::{Draft, F, Kind, PRECONDITION_FAILED, Recorder};

/// What the clients do.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Concurrent clients (5-10 in the issue).
    pub clients: usize,
    /// Keys in use at once.
    pub active_keys: usize,
    /// Operations on a group of active keys before the clients move to fresh keys.
    pub ops_per_key: u64,
    /// Per-request timeout; a request past it has an unknown outcome.
    pub request_timeout: Duration,
    /// Random seed (key and operation choices).
    pub seed: u64,
    /// A query string for the clients' reads (`consistency=stale` asks a cluster node for its
    /// local copy: the stale-read mutant). The final reads never use it.
    pub read_query: Option<String>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            clients: 8,
            active_keys: 4,
            ops_per_key: 250,
            request_timeout: Duration::from_millis(1000),
            seed: 1,
            read_query: None,
        }
    }
}

/// State the clients share.
pub(crate) struct Shared {
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) stop: AtomicBool,
    /// Operations started (drives key rotation).
    pub(crate) started: AtomicU64,
    /// Highest key index used.
    pub(crate) max_key: AtomicU64,
}

/// How an operation ended.
#[derive(Debug)]
pub enum Done {
    /// It took effect: the value read (reads) and the ETag returned.
    Ok {
        /// Body of a read; `None` for absent or for writes.
        value: Option<String>,
        /// The `ETag` header.
        etag: Option<String>,
    },
    /// It certainly took no effect.
    Fail(String),
    /// Unknown.
    Info(String),
}

/// The problem type of a 503 that says the write was applied nowhere (a `fail`, not `info`).
pub const NOT_APPLIED: &str = "urn:hoardhaven:problem:not-applied";

/// Builds a client with the run's timeout.
///
/// # Errors
/// reqwest's builder error.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(1)
        .build()
}

/// Runs one client until `stop`.
pub(crate) async fn client_loop(id: usize, url: String, w: Workload, shared: Arc<Shared>) {
    let Ok(http) = http_client(w.request_timeout) else {
        return;
    };
    let mut rng = fastrand::Rng::with_seed(w.seed.wrapping_mul(1000).wrapping_add(id as u64));
    // Renamed after each unknown outcome (its request may still be in flight).
    let mut process = id;
    let mut seq = 0u64;
    // The last value and ETag this client saw per key (the CAS expectations).
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let n = shared.started.fetch_add(1, Ordering::Relaxed);
        let group = n / (w.ops_per_key * w.active_keys as u64);
        let k = group * w.active_keys as u64 + rng.u64(0..w.active_keys as u64);
        shared.max_key.fetch_max(k, Ordering::Relaxed);
        let key = format!("k{k}");
        let pname = format!("c{process}");
        seq += 1;
        let new_value = format!("{id}-{seq}");
        let roll = rng.u8(0..10);
        let (f, draft) = if roll < 4 {
            (F::Read, Draft::new(&pname, Kind::Invoke, F::Read, &key))
        } else if let (true, Some((expect, etag))) = (roll >= 7, seen.get(&key)) {
            let mut d = Draft::new(&pname, Kind::Invoke, F::Cas, &key);
            d.value = Some(new_value.clone());
            d.expect = Some(expect.clone());
            d.etag = Some(etag.clone());
            (F::Cas, d)
        } else {
            let mut d = Draft::new(&pname, Kind::Invoke, F::Write, &key);
            d.value = Some(new_value.clone());
            (F::Write, d)
        };
        let mut done_draft = draft.clone();
        shared.recorder.record(draft.clone());
        let done = perform(&http, &url, &draft, w.read_query.as_deref()).await;
        let kind = match &done {
            Done::Ok { value, etag } => {
                match (f, value, etag) {
                    (F::Read, Some(v), Some(e)) => {
                        seen.insert(key.clone(), (v.clone(), e.clone()));
                    }
                    (F::Read, None, _) => {
                        seen.remove(&key);
                    }
                    (F::Write | F::Cas, _, Some(e)) => {
                        seen.insert(key.clone(), (new_value.clone(), e.clone()));
                    }
                    _ => {}
                }
                if f == F::Read {
                    done_draft.value = value.clone();
                }
                done_draft.etag = etag.clone();
                Kind::Ok
            }
            Done::Fail(why) => {
                done_draft.error = Some(why.clone());
                Kind::Fail
            }
            Done::Info(why) => {
                done_draft.error = Some(why.clone());
                Kind::Info
            }
        };
        done_draft.kind = kind;
        shared.recorder.record(done_draft);
        match kind {
            Kind::Info => {
                process += w.clients;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Kind::Fail if f != F::Cas => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => {}
        }
    }
}

/// Sends the request an invoke event describes (a read with `read_query` appended, when
/// given) and classifies the answer.
pub async fn perform(
    http: &reqwest::Client,
    url: &str,
    d: &crate::history::Draft,
    read_query: Option<&str>,
) -> Done {
    let target = format!("{url}/kv/{}", d.key);
    let req = match d.f {
        F::Read => match read_query {
            Some(q) => http.get(format!("{target}?{q}")),
            None => http.get(&target),
        },
        F::Write => http.put(&target).body(d.value.clone().unwrap_or_default()),
        F::Cas => http
            .put(&target)
            .header("If-Match", d.etag.clone().unwrap_or_default())
            .body(d.value.clone().unwrap_or_default()),
        _ => return Done::Fail("not a client operation".into()),
    };
    match req.send().await {
        Err(e) => transport_error(&e),
        Ok(resp) => {
            let status = resp.status();
            let etag = resp
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if d.f == F::Read && status == StatusCode::OK {
                return match resp.text().await {
                    Ok(body) => Done::Ok {
                        value: Some(body),
                        etag,
                    },
                    Err(e) => Done::Info(format!("body: {e}")),
                };
            }
            match classify(d.f, status, etag) {
                // The problem's detail says why (a person reading the history wants it).
                Done::Info(why) if status.is_server_error() => {
                    let body = resp.text().await.unwrap_or_default();
                    let problem = serde_json::from_str::<serde_json::Value>(&body).ok();
                    let field = |k: &str| {
                        problem
                            .as_ref()
                            .and_then(|v| v[k].as_str().map(str::to_owned))
                    };
                    let detail = field("detail").unwrap_or(body);
                    if field("type").as_deref() == Some(NOT_APPLIED) {
                        Done::Fail(format!("{why}: {detail}"))
                    } else {
                        Done::Info(format!("{why}: {detail}"))
                    }
                }
                done => done,
            }
        }
    }
}

/// The event a status makes (module documentation).
pub fn classify(f: F, status: StatusCode, etag: Option<String>) -> Done {
    match status.as_u16() {
        404 if f == F::Read => Done::Ok { value: None, etag },
        200..=299 => Done::Ok { value: None, etag },
        412 if f == F::Cas => Done::Fail(PRECONDITION_FAILED.into()),
        400..=499 => Done::Fail(format!("status {status}")),
        _ => Done::Info(format!("status {status}")),
    }
}

fn transport_error(e: &reqwest::Error) -> Done {
    if e.is_connect() {
        Done::Fail(format!("not sent: {}", root_cause(e)))
    } else if e.is_timeout() {
        Done::Info("timeout".into())
    } else {
        Done::Info(root_cause(e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Reads every key `k0..=max_key` once, after the faults are healed, as process `final`
/// (retrying a read that got no answer, a bounded number of times). These reads are what
/// shows a write lost on a key the clients had moved away from.
pub async fn final_reads(url: &str, max_key: u64, timeout: Duration, recorder: &Recorder) {
    let Ok(http) = http_client(timeout) else {
        return;
    };
    for k in 0..=max_key {
        let key = format!("k{k}");
        for _attempt in 0..20 {
            let d = Draft::new("final", Kind::Invoke, F::Read, &key);
            recorder.record(d.clone());
            let done = perform(&http, url, &d, None).await;
            let mut r = d;
            let ok = match done {
                Done::Ok { value, etag } => {
                    r.kind = Kind::Ok;
                    r.value = value;
                    r.etag = etag;
                    true
                }
                Done::Fail(why) => {
                    r.kind = Kind::Fail;
                    r.error = Some(why);
                    false
                }
                Done::Info(why) => {
                    r.kind = Kind::Info;
                    r.error = Some(why);
                    false
                }
            };
            recorder.record(r);
            if ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
