//! The `berth` command line: one module per subcommand, over the server
//! library (crate `berth`) and, for `berth bench`, the benchmark harness
//! (crate `berth-bench`), which the server library does not link.
//! `main.rs` only parses the command line.

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
    /// How berth writes its own log (stderr): `text`, or `json` (one JSON
    /// object a line: timestamp, level, target, fields).
    #[arg(long, global = true, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The format of berth's own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value, parsed once at start: boxing `serve`'s flags buys nothing"
)]
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Every leaf subcommand, with its path (`secret set`).
    fn leaves(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        if cmd.get_subcommands().next().is_none() {
            out.push((path.trim().to_string(), cmd.clone()));
        }
        for sub in cmd.get_subcommands() {
            leaves(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_command_that_talks_to_the_api_takes_the_same_admin_and_token_pair() {
        let mut all = Vec::new();
        leaves(&Cli::command(), "", &mut all);
        let help = |cmd: &clap::Command, id: &str| {
            cmd.get_arguments().find(|a| a.get_id() == id).map(|a| {
                (
                    a.get_long().map(str::to_string),
                    a.get_help().map(|h| h.to_string()),
                )
            })
        };
        let reference = help(
            &Cli::command().find_subcommand("apps").unwrap().clone(),
            "token",
        );
        let mut talking = Vec::new();
        for (path, cmd) in &all {
            let has = |id| help(cmd, id).is_some();
            // Both or neither, and the very same flags (one struct).
            assert_eq!(has("admin"), has("token"), "{path}");
            if has("admin") {
                assert_eq!(help(cmd, "token"), reference, "{path}");
                assert!(has("data_dir"), "{path}");
                talking.push(path.clone());
            }
        }
        talking.sort();
        assert_eq!(
            talking,
            [
                "app",
                "apps",
                "delete",
                "deploy",
                "logs",
                "scale",
                "secret delete",
                "secret list",
                "secret set",
                "traffic"
            ]
        );
        // And each parses the pair.
        let extra: &[(&str, &[&str])] = &[
            ("app", &["x"]),
            ("delete", &["x"]),
            ("deploy", &["x", "--wasm", "a.wasm"]),
            ("logs", &["x"]),
            ("scale", &["x", "--min", "1"]),
            ("secret delete", &["x"]),
            ("secret set", &["x"]),
            ("traffic", &["x", "--latest", "50"]),
        ];
        for path in &talking {
            let mut argv: Vec<&str> = vec!["berth"];
            argv.extend(path.split(' '));
            if let Some((_, more)) = extra.iter().find(|(p, _)| p == path) {
                argv.extend(*more);
            }
            argv.extend(["--admin", "http://127.0.0.1:9", "--token", "t"]);
            if let Err(e) = Cli::try_parse_from(argv.iter().copied()) {
                panic!("{argv:?}: {e}");
            }
        }
    }
}
