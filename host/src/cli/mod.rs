//! The `berth` command line: one module per subcommand.

pub mod logs;
pub mod pull;
pub mod push;
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
    /// Push a Wasm component to an OCI registry (CNCF Wasm artifact layout).
    Push(push::PushArgs),
    /// Pull an artifact into the local store; print its digest and kind.
    Pull(pull::PullArgs),
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
            Command::Push(args) => push::run(args),
            Command::Pull(args) => pull::run(args),
        }
    }
}
