//! The `hoardhaven` binary: parse the command line, run the subcommand, and report a failure
//! on one line with a non-zero exit status.

fn main() -> std::process::ExitCode {
    let (cli, matches) = hoardhaven::cli::Cli::parse_args();
    match cli.run(&matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            if !msg.is_empty() {
                eprintln!("hoardhaven: {msg}");
            }
            std::process::ExitCode::from(hoardhaven::cli::exit::code_of(&e))
        }
    }
}
