//! The `berth` command line: one module per subcommand.

pub mod app;
pub mod apps;
pub mod bench;
pub mod client;
pub mod completions;
pub mod delete;
pub mod deploy;
pub mod logs;
pub mod new;
pub mod pull;
pub mod push;
pub mod scale;
pub mod secret;
pub mod serve;
pub mod traffic;

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
    /// Deploy or replace an app on a running server (admin API).
    Deploy(deploy::DeployArgs),
    /// List the apps of a running server.
    Apps(apps::AppsArgs),
    /// Show one app of a running server.
    App(app::AppArgs),
    /// Remove an app from a running server.
    Delete(delete::DeleteArgs),
    /// Change an app's minimum and maximum instances.
    Scale(scale::ScaleArgs),
    /// Set, list or delete the secrets apps name in their `secrets` table.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Measure berth: Wasm and container cold starts side by side.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Move an app's traffic between its latest revision and the one before.
    Traffic(traffic::TrafficArgs),
    /// Create a project: a Wasm component (rust) or a container image.
    New(new::NewArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print berth's man page (roff).
    Man,
}

impl Cli {
    /// The log filter when `BERTH_LOG` is not set: berth's own info lines
    /// for the server and the client commands; only warnings during a
    /// benchmark, whose output is its table.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Bench(_) => "warn",
            // wasmtime-wasi-http logs each failed guest outbound connection
            // at warn: a guest could fill the host's log with them.
            _ => "berth=info,wasmtime_wasi_http=error,warn",
        }
    }

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
            Command::Deploy(args) => deploy::run(args),
            Command::Apps(args) => apps::run(args),
            Command::App(args) => app::run(args),
            Command::Delete(args) => delete::run(args),
            Command::Scale(args) => scale::run(args),
            Command::Secret(cmd) => secret::run(cmd),
            Command::Bench(cmd) => bench::run(cmd),
            Command::Traffic(args) => traffic::run(args),
            Command::New(args) => new::run(args),
            Command::Completions(args) => completions::run(args),
            Command::Man => completions::man(),
        }
    }
}
