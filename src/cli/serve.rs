//! `hoardhaven serve`: flags, configuration layering, logging, and the runtime.
//!
//! Owns the last steps before serving: layering the configuration file under the flags and
//! environment ([`crate::config::layered`]; the flags themselves are [`crate::config::Settings`]),
//! validation, logging ([`crate::logging`]) and trace export ([`crate::telemetry`]), and the tokio runtime that runs [`crate::server::run`].

use anyhow::Context;
use clap::ArgMatches;

use crate::config::{self, Settings};
use crate::shutdown::Shutdown;
use crate::telemetry::Telemetry;

/// Runs `hoardhaven serve` to the end.
///
/// # Errors
/// Configuration, binding, opening the engine, or the final sync.
pub fn run(settings: Settings, matches: &ArgMatches) -> anyhow::Result<()> {
    let cfg = config::layered(settings, matches)?.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hoardhaven")
        .build()
        .context("starting the async runtime")?;
    // Exports run on the runtime, so it outlives the exporter (flushed below).
    let telemetry = match &cfg.otel {
        Some(o) => Some(Telemetry::start(o, rt.handle().clone())?),
        None => None,
    };
    crate::logging::init(cfg.log_format, &cfg.log_level, telemetry.as_ref());
    if let Some(o) = &cfg.otel {
        tracing::info!(url = %o.traces_url, sample_ratio = o.sample_ratio, "exporting traces over OTLP/HTTP");
    }
    let result = rt.block_on(async {
        let shutdown = Shutdown::new();
        shutdown.listen_for_signals();
        crate::server::run(cfg, shutdown).await
    });
    if let Some(t) = telemetry {
        t.shutdown();
    }
    result
}
