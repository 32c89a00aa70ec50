//! `berth completions SHELL` and `berth man`: generated from the clap
//! definitions, so they never drift from the real flags.

use std::io::Write as _;

use clap::CommandFactory as _;

/// Arguments of `berth completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for (bash, zsh, fish, elvish, powershell).
    /// Bash: `berth completions bash > /etc/bash_completion.d/berth`.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script for `args.shell` to stdout.
///
/// # Errors
/// Never in practice; the signature matches the other subcommands.
pub fn run(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "berth", &mut std::io::stdout());
    Ok(())
}

/// Prints berth's man page (roff) to stdout:
/// `berth man > /usr/local/share/man/man1/berth.1`.
///
/// # Errors
/// When stdout cannot be written.
pub fn man() -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(super::Cli::command()).render(&mut page)?;
    std::io::stdout().lock().write_all(&page)?;
    Ok(())
}
