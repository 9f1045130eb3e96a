//! The command line: subcommands and their flags (clap).
//!
//! Owns [`Cli`] and the dispatch to each subcommand: `serve` (the default when no subcommand
//! is given), the client subcommands ([`client`]: get, put, ...), the offline tools over a
//! data directory ([`offline`]: check, export, ...) and shell [`completions`]. Exit statuses
//! are fixed in [`exit`].

pub mod client;
pub mod completions;
pub mod exit;
pub mod offline;
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
// Parsed once per process: the size of the largest variant (serve's flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(serve::ServeArgs),
    /// Client subcommands (get, put, del, list, batch, merge, snapshot, stats).
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Offline tools over a data directory (check, export, import, compact, info).
    #[command(flatten)]
    Offline(offline::OfflineCommand),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
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
            Some(Command::Client(c)) => client::run(c),
            Some(Command::Offline(c)) => offline::run(c),
            Some(Command::Completions(a)) => {
                completions::run(&a);
                Ok(())
            }
        }
    }
}
