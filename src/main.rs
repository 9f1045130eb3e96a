//! The `hoardhaven` binary: parse the command line, run the subcommand, and report a failure
//! on one line with a non-zero exit status.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = hoardhaven::cli::Cli::parse();
    match cli.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            if !msg.is_empty() {
                // Not eprintln!: it panics (exit 101) when stderr is a closed pipe.
                hoardhaven::logging::line(&format!("hoardhaven: {msg}"));
            }
            std::process::ExitCode::from(hoardhaven::cli::exit::code_of(&e))
        }
    }
}
