//! Every Prometheus metric of the service: names, help texts, buckets, recording.
//!
//! Owns the metric names (constants, one place), their `describe_*` help texts, the
//! process-wide recorder ([`install`]; a global recorder can be installed only once per
//! process, so it is kept in a `OnceLock`), the per-request middleware that counts requests by
//! method, route template and status, and the refresh of engine gauges from
//! [`Engine::stats`](crate::engine::Engine::stats) at scrape time.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::engine::{JobState, Stats};

/// Requests answered, by `method`, `route` (matched template) and `status`.
pub const HTTP_REQUESTS: &str = "hoardhaven_http_requests_total";
/// Time to answer a request, by `method` and `route`.
pub const HTTP_DURATION: &str = "hoardhaven_http_request_duration_seconds";
/// Requests being served now.
pub const HTTP_IN_FLIGHT: &str = "hoardhaven_http_requests_in_flight";
/// 1 when the store is open and accepting writes.
pub const READY: &str = "hoardhaven_ready";
/// Live keys.
pub const ENGINE_KEYS: &str = "hoardhaven_engine_keys";
/// Bytes of live records.
pub const ENGINE_LIVE_BYTES: &str = "hoardhaven_engine_live_bytes";
/// Bytes of dead records.
pub const ENGINE_DEAD_BYTES: &str = "hoardhaven_engine_dead_bytes";
/// Bytes of the engine's files on disk.
pub const ENGINE_DISK_BYTES: &str = "hoardhaven_engine_disk_bytes";
/// Bytes of the in-memory index.
pub const ENGINE_INDEX_BYTES: &str = "hoardhaven_engine_index_bytes";
/// Data files (bitcask) or log + snapshot files (memory).
pub const ENGINE_DATA_FILES: &str = "hoardhaven_engine_data_files";
/// `dead / (live + dead)`.
pub const ENGINE_FRAGMENTATION: &str = "hoardhaven_engine_fragmentation_ratio";
/// Bytes appended since start.
pub const ENGINE_BYTES_WRITTEN: &str = "hoardhaven_engine_written_bytes_total";
/// Corrupt records found since start.
pub const ENGINE_CORRUPT: &str = "hoardhaven_engine_corrupt_records_total";
/// Requests whose engine call met a record failing its checksum, since start.
pub const CORRUPT_READS: &str = "hoardhaven_corrupt_reads_total";
/// Merges (log rewrites) finished since start.
pub const ENGINE_MERGES: &str = "hoardhaven_engine_merges_total";
/// Snapshots finished since start.
pub const ENGINE_SNAPSHOTS: &str = "hoardhaven_engine_snapshots_total";
/// Duration of the last finished merge.
pub const ENGINE_MERGE_LAST_DURATION: &str = "hoardhaven_engine_merge_last_duration_seconds";
/// Duration of the last finished snapshot.
pub const ENGINE_SNAPSHOT_LAST_DURATION: &str = "hoardhaven_engine_snapshot_last_duration_seconds";
/// 1 while a merge runs.
pub const ENGINE_MERGE_RUNNING: &str = "hoardhaven_engine_merge_running";
/// 1 while a snapshot runs.
pub const ENGINE_SNAPSHOT_RUNNING: &str = "hoardhaven_engine_snapshot_running";
/// fsync latency; recorded by the engines when they sync (described here with the others).
pub const ENGINE_FSYNC_DURATION: &str = crate::engine::FSYNC_DURATION_METRIC;

/// Latency buckets (seconds) for HTTP requests: 50 µs to 10 s.
const HTTP_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Latency buckets (seconds) for fsync: 10 µs to 1 s.
const FSYNC_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder the first time, describes every metric, and
/// returns its handle (the same one on every call). `None` when another recorder was
/// installed first (then `/metrics` answers an empty document).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), HTTP_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(ENGINE_FSYNC_DURATION.into()),
                        FSYNC_BUCKETS,
                    )
                });
            let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    return None;
                }
            };
            describe();
            export_from_start();
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from receiving a request to its response head, by method and route template."
    );
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being served now.");
    describe_gauge!(
        super::watch::WATCHERS_ACTIVE,
        "Watchers (GET /watch) connected now."
    );
    describe_counter!(
        super::watch::WATCH_EVENTS,
        "Change, progress and end events sent to watchers."
    );
    describe_counter!(
        super::watch::WATCH_SLOW_CUT,
        "Watchers closed because they fell behind the change history kept."
    );
    describe_gauge!(
        READY,
        "1 when the store is open and accepts writes, else 0."
    );
    describe_gauge!(ENGINE_KEYS, "Live keys in the store.");
    describe_gauge!(ENGINE_LIVE_BYTES, Unit::Bytes, "Bytes of live records.");
    describe_gauge!(
        ENGINE_DEAD_BYTES,
        Unit::Bytes,
        "Bytes of overwritten, deleted or expired records not yet reclaimed."
    );
    describe_gauge!(
        ENGINE_DISK_BYTES,
        Unit::Bytes,
        "Bytes of the store's files on disk."
    );
    describe_gauge!(
        ENGINE_INDEX_BYTES,
        Unit::Bytes,
        "Bytes of the in-memory index."
    );
    describe_gauge!(
        ENGINE_DATA_FILES,
        "Data files (bitcask) or log and snapshot files (memory)."
    );
    describe_gauge!(
        ENGINE_FRAGMENTATION,
        "Dead bytes as a fraction of live plus dead bytes."
    );
    describe_counter!(
        ENGINE_BYTES_WRITTEN,
        Unit::Bytes,
        "Bytes appended by the engine since the server started."
    );
    describe_counter!(
        ENGINE_CORRUPT,
        "Records found corrupt (failed checksum) since the server started."
    );
    describe_counter!(
        CORRUPT_READS,
        "Reads that met a stored record failing its checksum (answered 500 corrupted) since start."
    );
    describe_counter!(ENGINE_MERGES, "Merges (log rewrites) finished since start.");
    describe_counter!(ENGINE_SNAPSHOTS, "Snapshots finished since start.");
    describe_gauge!(
        ENGINE_MERGE_LAST_DURATION,
        Unit::Seconds,
        "Duration of the last finished merge."
    );
    describe_gauge!(
        ENGINE_SNAPSHOT_LAST_DURATION,
        Unit::Seconds,
        "Duration of the last finished snapshot."
    );
    describe_gauge!(ENGINE_MERGE_RUNNING, "1 while a merge runs, else 0.");
    describe_gauge!(ENGINE_SNAPSHOT_RUNNING, "1 while a snapshot runs, else 0.");
    describe_histogram!(
        ENGINE_FSYNC_DURATION,
        Unit::Seconds,
        "Latency of the engine's fsync / fdatasync calls."
    );
}

/// Registers the series that would otherwise appear only at their first event, at zero: the
/// counters of rare events, the last job durations (0 until a job finishes), the fsync
/// histogram (no observations yet). Dashboards then show 0, not "No data", and `absent()`
/// alerts do not fire on a healthy fresh server. The engine gauges are set at every scrape
/// once the store is open; the per-request series (labelled by route and status) appear with
/// the first request.
fn export_from_start() {
    for c in [
        ENGINE_BYTES_WRITTEN,
        ENGINE_CORRUPT,
        CORRUPT_READS,
        ENGINE_MERGES,
        ENGINE_SNAPSHOTS,
    ] {
        counter!(c).absolute(0);
    }
    for g in [
        READY,
        HTTP_IN_FLIGHT,
        ENGINE_MERGE_RUNNING,
        ENGINE_SNAPSHOT_RUNNING,
        ENGINE_MERGE_LAST_DURATION,
        ENGINE_SNAPSHOT_LAST_DURATION,
    ] {
        gauge!(g).set(0.0);
    }
    // Registering is enough: the exporter renders a registered histogram with zero counts.
    let _ = metrics::histogram!(ENGINE_FSYNC_DURATION);
}

/// Registers the per-request series of every documented route at zero (answered `200` zero
/// times, no latency observed), so request-rate and latency panels show 0 from the first
/// scrape. `routes` are (method, matched route template) pairs.
pub fn export_routes<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (method, route) in routes {
        let (m, r) = (method.to_ascii_uppercase(), route.to_owned());
        counter!(HTTP_REQUESTS, "method" => m.clone(), "route" => r.clone(), "status" => "200")
            .absolute(0);
        let _ = metrics::histogram!(HTTP_DURATION, "method" => m, "route" => r);
    }
}

/// Sets the engine gauges and counters from a stats snapshot.
pub fn record_engine(s: &Stats) {
    gauge!(ENGINE_KEYS).set(s.keys as f64);
    gauge!(ENGINE_LIVE_BYTES).set(s.live_bytes as f64);
    gauge!(ENGINE_DEAD_BYTES).set(s.dead_bytes as f64);
    gauge!(ENGINE_DISK_BYTES).set(s.disk_bytes as f64);
    gauge!(ENGINE_INDEX_BYTES).set(s.index_bytes as f64);
    gauge!(ENGINE_DATA_FILES).set(s.data_files as f64);
    gauge!(ENGINE_FRAGMENTATION).set(s.fragmentation);
    counter!(ENGINE_BYTES_WRITTEN).absolute(s.bytes_written);
    counter!(ENGINE_CORRUPT).absolute(s.corrupt_records);
    counter!(ENGINE_MERGES).absolute(s.jobs.merges_completed);
    counter!(ENGINE_SNAPSHOTS).absolute(s.jobs.snapshots_completed);
    let running = |b: bool| if b { 1.0 } else { 0.0 };
    gauge!(ENGINE_MERGE_RUNNING).set(running(matches!(s.jobs.merge, JobState::Running { .. })));
    gauge!(ENGINE_SNAPSHOT_RUNNING)
        .set(running(matches!(s.jobs.snapshot, JobState::Running { .. })));
    if let JobState::Done(r) = &s.jobs.merge {
        gauge!(ENGINE_MERGE_LAST_DURATION).set(r.duration.as_secs_f64());
    }
    if let JobState::Done(r) = &s.jobs.snapshot {
        gauge!(ENGINE_SNAPSHOT_LAST_DURATION).set(r.duration.as_secs_f64());
    }
}

/// Counts one read that met damaged data.
pub fn record_corrupt_read() {
    counter!(CORRUPT_READS).increment(1);
}

/// Sets the readiness gauge.
pub fn record_ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

/// The route template a request matched, passed from the inner (route) layer to the outer one
/// through the response extensions, so that unmatched requests are counted too.
#[derive(Clone, Debug)]
struct RouteLabel(String);

/// Inner middleware (a `route_layer`): tags the response with the matched route template.
pub async fn tag_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let mut resp = next.run(req).await;
    if let Some(r) = route {
        resp.extensions_mut().insert(RouteLabel(r));
    }
    resp
}

/// Counts a request in flight until dropped (also when the client goes away mid-request).
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter() -> Self {
        let g = gauge!(HTTP_IN_FLIGHT);
        g.increment(1.0);
        InFlight(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Outer middleware: counts every request and times it, by method, route template and status.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let guard = InFlight::enter();
    let resp = next.run(req).await;
    drop(guard);
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map_or_else(|| "unmatched".to_owned(), |r| r.0.clone());
    let status = resp.status().as_u16().to_string();
    let elapsed = start.elapsed().as_secs_f64();
    counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route).record(elapsed);
    resp
}
