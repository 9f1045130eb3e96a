//! OpenTelemetry traces end to end: the real server exports to an OTLP/HTTP receiver started
//! here on loopback (hyper, decoding the protobuf with the exporter's own message types), and
//! the spans it receives have the structure docs/operations.md promises: a request span that
//! continues the caller's W3C `traceparent`, an `engine` child per engine call, and a `job`
//! child for a merge started by a request.

mod common;

use bytes::Bytes;
use common::{STEP_TIMEOUT, Server};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A span as received, with the resource's `service.name`.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                other => format!("{other:?}"),
            })
    }
}

/// Starts an OTLP/HTTP receiver on loopback; every span posted to `/v1/traces` comes out of
/// the channel. Anything else is answered 404 (and would leave the test waiting, visibly).
async fn receiver() -> (String, mpsc::UnboundedReceiver<Got>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let ok = req.uri().path() == "/v1/traces"
                            && req.headers().get("content-type").map(|v| v.as_bytes())
                                == Some(&b"application/x-protobuf"[..]);
                        let body = req.into_body().collect().await?.to_bytes();
                        let status = match ExportTraceServiceRequest::decode(body) {
                            Ok(export) if ok => {
                                for rs in export.resource_spans {
                                    let service = rs
                                        .resource
                                        .iter()
                                        .flat_map(|r| r.attributes.iter())
                                        .find(|kv| kv.key == "service.name")
                                        .and_then(|kv| kv.value.as_ref())
                                        .and_then(|v| v.value.as_ref())
                                        .map(|v| match v {
                                            Value::StringValue(s) => s.clone(),
                                            _ => String::new(),
                                        })
                                        .unwrap_or_default();
                                    for ss in rs.scope_spans {
                                        for span in ss.spans {
                                            let _ = tx.send(Got {
                                                service: service.clone(),
                                                span,
                                            });
                                        }
                                    }
                                }
                                200
                            }
                            _ => 404,
                        };
                        Ok::<_, hyper::Error>(
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::new()))
                                .expect("response"),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    (format!("http://{addr}"), rx)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const TRACE_PUT: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_PUT: &str = "00f067aa0ba902b7";
const TRACE_MERGE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_MERGE: &str = "b7ad6b7169203331";

/// Receives spans until `done` says the collection is complete (bounded).
async fn collect(rx: &mut mpsc::UnboundedReceiver<Got>, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while !done(&got) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(g)) => got.push(g),
            _ => {
                let names: Vec<_> = got
                    .iter()
                    .map(|g| (g.span.name.clone(), hex(&g.span.trace_id)))
                    .collect();
                panic!("spans incomplete after {STEP_TIMEOUT:?}; received {names:?}");
            }
        }
    }
    got
}

fn find<'a>(got: &'a [Got], trace: &str, name: &str) -> Option<&'a Got> {
    got.iter()
        .find(|g| hex(&g.span.trace_id) == trace && g.span.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_their_parents() {
    let (endpoint, mut rx) = receiver().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    // A short batch delay so the spans leave soon after the requests.
    let s = Server::start_with(
        scratch,
        data,
        "bitcask",
        &[
            "--otel-endpoint",
            &endpoint,
            "--otel-service-name",
            "hh-test",
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;

    let put = s
        .client
        .put(s.url("/kv/abc"))
        .header("traceparent", format!("00-{TRACE_PUT}-{CALLER_PUT}-01"))
        .body("v")
        .send()
        .await
        .expect("PUT");
    assert!(put.status().is_success());
    let merge = s
        .client
        .post(s.url("/admin/merge?wait=true"))
        .header("traceparent", format!("00-{TRACE_MERGE}-{CALLER_MERGE}-01"))
        .send()
        .await
        .expect("merge");
    assert_eq!(merge.status(), 200);
    let get = s.client.get(s.url("/kv/abc")).send().await.expect("GET");
    assert_eq!(get.status(), 200);

    let got = collect(&mut rx, |got| {
        find(got, TRACE_PUT, "PUT /kv/{*key}").is_some()
            && find(got, TRACE_PUT, "engine write").is_some()
            && find(got, TRACE_MERGE, "POST /admin/merge").is_some()
            && find(got, TRACE_MERGE, "merge").is_some()
            && got.iter().any(|g| g.span.name == "GET /kv/{*key}")
    })
    .await;

    // The PUT continues the caller's trace: same trace id, the caller's span as parent.
    let req = find(&got, TRACE_PUT, "PUT /kv/{*key}").expect("PUT span");
    assert_eq!(req.service, "hh-test");
    assert_eq!(hex(&req.span.parent_span_id), CALLER_PUT);
    assert_eq!(req.span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(req.attr("http.route").as_deref(), Some("/kv/{*key}"));
    assert_eq!(req.attr("http.request.method").as_deref(), Some("PUT"));
    assert_eq!(
        req.attr("http.response.status_code"),
        Some(put.status().as_u16().to_string())
    );
    assert_eq!(req.attr("hh.key_len").as_deref(), Some("3"));
    assert_eq!(req.attr("network.protocol.version").as_deref(), Some("1.1"));

    // Its engine call is its child, and says which engine and sync policy.
    let write = find(&got, TRACE_PUT, "engine write").expect("engine span");
    assert_eq!(write.span.parent_span_id, req.span.span_id);
    assert_eq!(write.attr("hh.engine").as_deref(), Some("bitcask"));
    assert_eq!(write.attr("hh.sync").as_deref(), Some("always"));
    assert_eq!(write.attr("hh.call").as_deref(), Some("write"));

    // The merge job runs on the engine's own thread, as a child of the request that started it.
    let admin = find(&got, TRACE_MERGE, "POST /admin/merge").expect("merge request span");
    assert_eq!(hex(&admin.span.parent_span_id), CALLER_MERGE);
    let job = find(&got, TRACE_MERGE, "merge").expect("job span");
    assert_eq!(job.span.parent_span_id, admin.span.span_id);
    assert_eq!(job.attr("job").as_deref(), Some("merge"));
    assert!(job.span.end_time_unix_nano >= job.span.start_time_unix_nano);

    // No traceparent: a new trace, a root span.
    let root = got
        .iter()
        .find(|g| g.span.name == "GET /kv/{*key}")
        .expect("GET span");
    assert!(root.span.parent_span_id.is_empty());
    assert_ne!(hex(&root.span.trace_id), TRACE_PUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_the_exporter_cannot_use_is_refused_at_start() {
    let (status, stderr) = common::run_to_exit(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--otel-endpoint",
            "https://collector:4318",
        ],
        &[],
    )
    .await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("otel.endpoint"), "{stderr}");
}
