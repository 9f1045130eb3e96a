//! `hoardhaven serve`: flags, configuration layering, logging, and the runtime.
//!
//! Owns the last steps before serving: layering the configuration file under the flags and
//! environment ([`crate::config::layered`]; the flags themselves are [`crate::config::Settings`]),
//! the set-up of `tracing` (human or JSON), and the tokio runtime that runs
//! [`crate::server::run`].

use std::io::IsTerminal;

use anyhow::Context;
use clap::ArgMatches;

use crate::config::{self, LogFormat, ServeConfig, Settings};
use crate::shutdown::Shutdown;

fn init_logging(cfg: &ServeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs `hoardhaven serve` to the end.
///
/// # Errors
/// Configuration, binding, opening the engine, or the final sync.
pub fn run(settings: Settings, matches: &ArgMatches) -> anyhow::Result<()> {
    let cfg = config::layered(settings, matches)?.validate()?;
    init_logging(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hoardhaven")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let shutdown = Shutdown::new();
        shutdown.listen_for_signals();
        crate::server::run(cfg, shutdown).await
    })
}
