//! `hoardhaven serve`: flags, configuration layering, logging, and the runtime.
//!
//! Owns the last steps before serving: layering the configuration file under the flags and
//! environment ([`crate::config::layered`]; the flags themselves are [`crate::config::Settings`]),
//! validation, logging ([`crate::logging`]), and the tokio runtime that runs [`crate::server::run`].

use anyhow::Context;
use clap::ArgMatches;

use crate::config::{self, Settings};
use crate::shutdown::Shutdown;

/// Runs `hoardhaven serve` to the end.
///
/// # Errors
/// Configuration, binding, opening the engine, or the final sync.
pub fn run(settings: Settings, matches: &ArgMatches) -> anyhow::Result<()> {
    let cfg = config::layered(settings, matches)?.validate()?;
    crate::logging::init(cfg.log_format, &cfg.log_level);
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
