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

use std::ffi::OsString;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

/// hoardhaven: a persistent key-value store served over HTTP/JSON.
#[derive(Debug, Parser)]
#[command(name = "hoardhaven", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `serve` when omitted (`hoardhaven --listen ADDR` = `hoardhaven serve --listen ADDR`).
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size of the largest variant (serve's flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default). Every flag is also a TOML key and a `HOARDHAVEN_*`
    /// environment variable; flags win over the environment, which wins over the file.
    Serve(crate::config::Settings),
    /// Client subcommands (get, put, del, list, batch, merge, snapshot, stats, watch).
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

/// The process arguments with `serve` put in when no subcommand is given: nothing at all, or a
/// first argument that is a flag other than the top-level `--help` / `--version`.
fn with_default_serve(mut argv: Vec<OsString>) -> Vec<OsString> {
    let top_level = ["-h", "--help", "-V", "--version"];
    let needs_serve = match argv.get(1).and_then(|a| a.to_str()) {
        None => argv.len() <= 1,
        Some(first) => first.starts_with('-') && !top_level.contains(&first),
    };
    if needs_serve {
        argv.insert(1.min(argv.len()), OsString::from("serve"));
    }
    argv
}

/// The environment variable behind a refused setting value, when the flag itself was not given.
fn blamed_env(e: &clap::Error, argv: &[OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let cmd = crate::config::command();
    let arg = cmd.get_arguments().find(|a| {
        a.get_long()
            .is_some_and(|l| shown.split([' ', '=']).next() == Some(&format!("--{l}")))
    })?;
    let flag = format!("--{}", arg.get_long()?);
    let given = argv.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
    });
    let var = arg.get_env()?.to_str()?;
    (!given && std::env::var_os(var).is_some()).then(|| var.to_owned())
}

impl Cli {
    /// Parses the process arguments (`serve` when no subcommand is given); exits with clap's
    /// usage message on bad flags. The matches are kept: `serve` layers its configuration
    /// file under exactly the settings that were not given.
    pub fn parse_args() -> (Cli, ArgMatches) {
        Self::parse_from_args(std::env::args_os().collect())
    }

    /// [`Cli::parse_args`] over given arguments (the first is the program name).
    pub fn parse_from_args(argv: Vec<OsString>) -> (Cli, ArgMatches) {
        let argv = with_default_serve(argv);
        let matches = match Cli::command().try_get_matches_from(&argv) {
            Ok(m) => m,
            Err(e) => {
                if let Some(var) = blamed_env(&e, &argv) {
                    // clap names the flag; the operator set the variable.
                    let _ = e.print();
                    eprintln!("note: the value comes from the environment variable {var}");
                    std::process::exit(e.exit_code());
                }
                e.exit()
            }
        };
        match Cli::from_arg_matches(&matches) {
            Ok(cli) => (cli, matches),
            Err(e) => e.exit(),
        }
    }

    /// Runs the chosen subcommand; `matches` are what [`Cli::parse_args`] returned.
    ///
    /// # Errors
    /// Whatever the subcommand fails with; `main` prints it on one line and exits non-zero.
    pub fn run(self, matches: &ArgMatches) -> anyhow::Result<()> {
        match self.command {
            Command::Serve(settings) => {
                let sub = matches.subcommand_matches("serve").unwrap_or(matches);
                serve::run(settings, sub)
            }
            Command::Bench(args) => crate::loadgen::run(args),
            Command::Client(c) => client::run(c),
            Command::Offline(c) => offline::run(c),
            Command::Completions(a) => {
                completions::run(&a);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn serve_is_the_default_subcommand() {
        let with = |a: &[&str]| with_default_serve(argv(a));
        assert_eq!(with(&["hh"]), argv(&["hh", "serve"]));
        assert_eq!(
            with(&["hh", "--listen", "x"]),
            argv(&["hh", "serve", "--listen", "x"])
        );
        assert_eq!(with(&["hh", "--help"]), argv(&["hh", "--help"]));
        assert_eq!(with(&["hh", "get", "k"]), argv(&["hh", "get", "k"]));
        let (cli, _) = Cli::parse_from_args(argv(&["hh", "--engine", "memory"]));
        match cli.command {
            Command::Serve(s) => assert_eq!(s.engine, crate::engine::EngineKind::Memory),
            other => panic!("expected serve, got {other:?}"),
        }
    }
}
