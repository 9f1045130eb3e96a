//! The command line: subcommands and their flags (clap).
//!
//! Owns [`Cli`] and the dispatch to each subcommand. Today there is `serve` (the default when
//! no subcommand is given); client subcommands (get, put, ...) and offline tools will sit
//! beside it as further modules.

pub mod serve;

use clap::{Parser, Subcommand};

/// hoardhaven: a persistent key-value store served over HTTP/JSON.
#[derive(Debug, Parser)]
#[command(name = "hoardhaven", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(serve::ServeArgs),
    /// Load-test a running server over HTTP (throughput, latency percentiles, ratio to /healthz).
    Bench(crate::loadgen::BenchArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    ///
    /// # Errors
    /// Whatever the subcommand fails with; `main` prints it on one line and exits non-zero.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            None => serve::run(serve::ServeArgs::default()),
            Some(Command::Serve(args)) => serve::run(args),
            Some(Command::Bench(args)) => crate::loadgen::run(args),
        }
    }
}
