//! `completions <shell>`: a shell completion script for every subcommand and flag, generated
//! by `clap_complete` from the same [`Cli`](super::Cli) definition the parser uses, so it
//! cannot drift from the real command line.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Flags of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    pub shell: Shell,
}

/// Writes the completion script for `args.shell` to stdout. A closed pipe
/// (`completions bash | head`) ends it quietly with status 0; another write error (`>
/// /dev/full`) ends the process with [`LOCAL`](super::exit::LOCAL) and a message.
pub fn run(args: &CompletionsArgs) {
    if let Err(e) = try_run(args)
        && e.code != super::exit::OK
    {
        crate::logging::line(&format!("hoardhaven: {e}"));
        std::process::exit(i32::from(e.code));
    }
}

/// [`run`], returning the failure.
///
/// # Errors
/// As [`super::exit::stdout`].
pub fn try_run(args: &CompletionsArgs) -> Result<(), super::exit::Exit> {
    let mut cmd = super::Cli::command();
    // Into memory first: `generate` panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "hoardhaven", &mut script);
    super::exit::stdout(&script)
}
