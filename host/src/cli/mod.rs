//! The `berth` command line: one module per subcommand.

pub mod logs;
pub mod serve;

use clap::{Parser, Subcommand};

/// berth: a WebAssembly-first serverless host.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the apps of a config file over HTTP.
    Serve(serve::ServeArgs),
    /// Print an app's captured guest output.
    Logs(logs::LogsArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    ///
    /// # Errors
    /// Whatever the subcommand reports.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve(args) => serve::run(args),
            Command::Logs(args) => logs::run(args),
        }
    }
}
