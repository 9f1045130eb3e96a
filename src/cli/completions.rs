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

/// Writes the completion script for `args.shell` to stdout.
pub fn run(args: &CompletionsArgs) {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "hoardhaven", &mut std::io::stdout());
}
