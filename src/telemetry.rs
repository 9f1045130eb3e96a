//! OpenTelemetry traces: which spans exist, what they carry, and their export over OTLP.
//!
//! Owns [`OtelConfig`] (the validated `otel.*` settings), [`Telemetry`] (the tracer provider,
//! flushed at shutdown), the `tracing` layer that turns spans into OpenTelemetry spans
//! ([`Telemetry::layer`]), the W3C `traceparent` of an incoming request ([`adopt_parent`]) and
//! the server's own spans ([`engine_call`]). Spans are ordinary `tracing` spans, bridged by
//! `tracing-opentelemetry`; the engine crate knows nothing of OpenTelemetry.
//!
//! The spans:
//! - `request` (made in [`crate::http`], kind server): `http.request.method`, `http.route`,
//!   `http.response.status_code`, `network.protocol.version`, `hh.key_len` (single-key routes);
//!   named `METHOD ROUTE`; its parent is the caller's span when a valid `traceparent` came in.
//! - `engine` (child of `request`, one per engine call): `hh.engine`, `hh.call` (read/write),
//!   `hh.sync` (the sync policy) and `hh.queue_us` (time waiting for a thread of the engine
//!   pool). A write's own time is its sync wait: under `sync=always` the call returns once its
//!   fdatasync (shared with concurrent writers, group commit) is done.
//! - `job` (made by the engine's job runner, `hoardhaven_engine::jobs`): `job` = `merge`,
//!   `rewrite` or `snapshot`, from start to end on the job's thread; a child of the request
//!   that started it (`POST /admin/merge`), a root span for jobs the engine starts itself.
//!
//! Off by default: with no `otel.endpoint` no layer is installed, [`adopt_parent`] returns at
//! once, and the `engine` and `job` spans are at DEBUG level, which the default log filter
//! disables (a disabled span costs one relaxed load). With an endpoint, spans are batched
//! (the SDK's batch processor, on its own thread) and posted as OTLP/HTTP protobuf to
//! `<endpoint>/v1/traces` ([`export`]).

pub mod export;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::exec::CallKind;

/// The target of the server's trace-only spans (DEBUG level: off unless exported).
pub const TARGET: &str = "hoardhaven::trace";

/// Set once an exporter is installed: only then is `traceparent` read.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// What the `engine` spans say about the store: its engine and sync policy.
static STORE: OnceLock<(String, String)> = OnceLock::new();

/// Validated trace export settings.
#[derive(Clone, Debug, PartialEq)]
pub struct OtelConfig {
    /// Where spans are posted (`.../v1/traces`).
    pub traces_url: String,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Fraction of new traces sampled.
    pub sample_ratio: f64,
}

/// The OTLP/HTTP traces URL for a configured endpoint: the base URL gains `/v1/traces` (as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` does) unless it already ends with it.
///
/// # Errors
/// A message for a URL that is not `http://host[:port][/path]`.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let uri: axum::http::Uri = endpoint
        .parse()
        .map_err(|e| format!("`{endpoint}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "scheme `{other}` is not supported: give the collector's http:// OTLP/HTTP address (port 4318)"
            ));
        }
        None => {
            return Err(format!(
                "`{endpoint}` has no scheme: write http://{endpoint}"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{endpoint}` has no host"));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    })
}

/// An installed exporter: keep it until the server has stopped, then [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Builds the exporter and tracer provider; exports run on `rt`.
    ///
    /// # Errors
    /// When the exporter cannot be built (a URL the exporter refuses).
    pub fn start(cfg: &OtelConfig, rt: tokio::runtime::Handle) -> anyhow::Result<Self> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(export::RuntimeClient::new(rt))
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.traces_url.clone())
            .build()
            .context("building the OTLP exporter")?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Telemetry { provider })
    }

    /// The `tracing` layer exporting this server's spans (and WARN/ERROR events inside them
    /// as span events); nothing else of the log filter's choice goes to the collector.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.provider.tracer("hoardhaven");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                let ours = m.target().starts_with("hoardhaven");
                ours && (m.is_span() || *m.level() <= tracing::Level::WARN)
            }))
    }

    /// Exports what is still buffered and stops the exporter (blocks up to its timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing the last spans failed");
        }
    }
}

/// True once an exporter is installed.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Records the store's engine and sync policy for the `engine` spans.
pub fn set_store(engine: impl ToString, sync: impl ToString) {
    let _ = STORE.set((engine.to_string(), sync.to_string()));
}

/// Makes `span` a child of the caller's span when `headers` carry a valid W3C `traceparent`
/// (and `tracestate`); does nothing when export is off.
pub fn adopt_parent(span: &Span, headers: &HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    // Fails only when the span is disabled, and then there is nothing to link.
    let _ = span.set_parent(cx);
}

/// Names `span` (its OpenTelemetry name; the bridge ignores `otel.name` recorded after the
/// span has started, which a child span or an adopted parent makes happen early).
pub fn rename(span: &Span, name: String) {
    use opentelemetry::trace::TraceContextExt as _;
    if enabled() && !span.is_disabled() {
        span.context().span().update_name(name);
    }
}

/// The span of one engine call (a child of the current request span).
pub fn engine_call(kind: CallKind) -> Span {
    let call = match kind {
        CallKind::Read => "read",
        CallKind::Write => "write",
    };
    let span = tracing::debug_span!(target: TARGET, "engine",
        otel.name = tracing::field::Empty,
        hh.call = call,
        hh.engine = tracing::field::Empty,
        hh.sync = tracing::field::Empty,
        hh.queue_us = tracing::field::Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("engine {call}"));
        if let Some((engine, sync)) = STORE.get() {
            span.record("hh.engine", engine.as_str());
            span.record("hh.sync", sync.as_str());
        }
    }
    span
}

/// Records on an `engine` span how long the call waited before it started.
pub fn record_queue(span: &Span, since: Option<std::time::Instant>) {
    if let Some(t) = since {
        span.record(
            "hh.queue_us",
            u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX),
        );
    }
}

/// `Some(now)` when `span` is recorded (so a disabled span costs no clock read).
pub fn clock(span: &Span) -> Option<std::time::Instant> {
    (!span.is_disabled()).then(std::time::Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_gain_the_traces_path_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").as_deref(),
            Ok("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://tempo:4318/").as_deref(),
            Ok("http://tempo:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces").as_deref(),
            Ok("http://c:4318/v1/traces")
        );
        assert!(traces_url("https://c:4318").is_err());
        assert!(traces_url("c:4318").is_err());
    }
}
