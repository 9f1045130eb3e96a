//! The `hoardhaven` binary: parse the command line, run the subcommand, and report a failure
//! on one line with a non-zero exit status.

/// mimalloc rather than glibc's malloc: see docs/benchmarks.md, "The write path".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let (cli, matches) = hoardhaven::cli::Cli::parse_args();
    match cli.run(&matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = one_line(&e);
            if !msg.is_empty() {
                // Not eprintln!: it panics (exit 101) when stderr is a closed pipe.
                hoardhaven::logging::line(&format!("hoardhaven: {msg}"));
            }
            std::process::ExitCode::from(hoardhaven::cli::exit::code_of(&e))
        }
    }
}

/// The error and its causes joined by `: `, each said once: many errors already end with
/// their source's text (`creating data directory D: File exists (os error 17)` over the
/// `io::Error` itself), which `{:#}` would print twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.ends_with(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}
