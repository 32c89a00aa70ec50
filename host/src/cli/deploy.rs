//! `berth deploy NAME`: deploy or replace an app on a running server.
//!
//! The app's settings come from `--file` (the keys of one `[apps.NAME]`
//! table, as TOML, or the same as JSON for a `.json` file) and from flags,
//! which override the file. A relative `wasm` path is made absolute here
//! (against the current directory for `--wasm`, against the file's directory
//! for `--file`): the server reads it from its own file system, so the path
//! must exist on the server's machine.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use http::{Method, StatusCode};

use super::client::{AdminArgs, AdminClient, block_on, print_json, write_stdout};
use crate::api::AppView;
use crate::config::AppConfig;

/// Arguments of `berth deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The app's name (its host is `<name>.<domain>`).
    pub name: String,
    /// A Wasm component file (made absolute; it must exist on the server).
    #[arg(long, value_name = "PATH", conflicts_with = "image")]
    pub wasm: Option<PathBuf>,
    /// An OCI reference (`registry/repo:tag` or `registry/repo@sha256:…`).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// The app's settings: an `[apps.NAME]` table's keys as TOML, or JSON
    /// for a `.json` file. Flags override it.
    #[arg(long, short, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A path prefix routed to the app (repeat for more; replaces the file's).
    #[arg(long = "route", value_name = "PREFIX")]
    pub routes: Vec<String>,
    /// An environment variable for the app (repeat for more).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// An environment variable set from a secret at instance start (repeat
    /// for more): `DB_PASSWORD=db-password` (see `berth secret set`).
    #[arg(long = "secret", value_name = "KEY=SECRET", value_parser = parse_env)]
    pub secrets: Vec<(String, String)>,
    /// A host the app may send HTTP requests to (repeat for more; replaces
    /// the file's).
    #[arg(long = "allow-outbound", value_name = "HOST")]
    pub allowed_outbound_hosts: Vec<String>,
    /// Instances kept even when idle.
    #[arg(long, value_name = "N")]
    pub min_scale: Option<u32>,
    /// Most instances (1 to 10,000; default 100).
    #[arg(long, value_name = "N")]
    pub max_scale: Option<u32>,
    /// Requests one instance serves at once (0 = unbounded).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Deploy as a canary taking N % of new requests (the revision before
    /// it keeps the rest; `berth traffic` moves the split later).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub traffic: Option<u32>,
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `/v1/apps/NAME`, with `?traffic=N` for a canary.
fn deploy_path(name: &str, traffic: Option<u32>) -> String {
    match traffic {
        Some(n) => format!("/v1/apps/{name}?traffic={n}"),
        None => format!("/v1/apps/{name}"),
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Deploys the app and prints what the server resolved.
///
/// # Errors
/// An unreadable or invalid `--file`, no code given, settings the server
/// refuses (naming the key), a pull or start failure, or the server
/// unreachable.
pub fn run(args: DeployArgs) -> anyhow::Result<()> {
    let config = app_config(&args)?;
    block_on(async move {
        let client = AdminClient::new(&args.admin)?;
        let (status, app): (_, AppView) = client
            .send(Method::PUT, &deploy_path(&args.name, args.traffic), &config)
            .await?;
        if args.json {
            return print_json(&app);
        }
        let verb = if status == StatusCode::CREATED {
            "created"
        } else {
            "updated"
        };
        let code = match &app.pinned {
            Some(pinned) => format!("pinned {pinned}"),
            None => format!("sha256 {}", app.sha256.get(..12).unwrap_or(&app.sha256)),
        };
        let text = format!(
            "{verb} {}: revision {} ({}, {code}), {}\n",
            app.name,
            app.revision,
            app.kind_name(),
            app.state.as_str()
        );
        write_stdout(text.as_bytes())
    })
}

/// The deploy body: the file, then the flags over it.
///
/// # Errors
/// An unreadable or invalid file, or no code given.
pub fn app_config(args: &DeployArgs) -> anyhow::Result<AppConfig> {
    crate::config::validate_label(&args.name).map_err(|r| anyhow::anyhow!("{r}"))?;
    let mut config = match &args.file {
        Some(file) => read_file(file)?,
        None => AppConfig::default(),
    };
    if let Some(wasm) = &args.wasm {
        config.wasm = Some(absolute(wasm)?);
        config.image = None;
    }
    if let Some(image) = &args.image {
        config.image = Some(image.clone());
        config.wasm = None;
    }
    anyhow::ensure!(
        config.wasm.is_some() || config.image.is_some(),
        "give the app's code: --wasm PATH, --image REF, or a --file with `wasm` or `image`"
    );
    if !args.routes.is_empty() {
        config.routes.clone_from(&args.routes);
    }
    config.env.extend(args.env.iter().cloned());
    config.secrets.extend(args.secrets.iter().cloned());
    if !args.allowed_outbound_hosts.is_empty() {
        config
            .allowed_outbound_hosts
            .clone_from(&args.allowed_outbound_hosts);
    }
    if args.min_scale.is_some() {
        config.min_scale = args.min_scale;
    }
    if args.max_scale.is_some() {
        config.max_scale = args.max_scale;
    }
    if args.concurrency.is_some() {
        config.concurrency = args.concurrency;
    }
    Ok(config)
}

/// Reads an app table from `file` (JSON for `.json`, else TOML); a relative
/// `wasm` path is resolved against the file's directory.
fn read_file(file: &Path) -> anyhow::Result<AppConfig> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read `{}`", file.display()))?;
    let shown = file.display();
    let mut config: AppConfig = if file.extension().is_some_and(|e| e == "json") {
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| anyhow::anyhow!("`{shown}`: key `{}`: {}", e.path(), e.inner()))?
    } else {
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("`{shown}`: {e}"))?;
        serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("`{shown}`: key `{}`: {}", e.path(), e.inner()))?
    };
    if let Some(wasm) = &config.wasm
        && !wasm.is_absolute()
    {
        let dir = file.parent().unwrap_or(Path::new("."));
        config.wasm = Some(absolute(&dir.join(wasm))?);
    }
    Ok(config)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make `{}` absolute", path.display()))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        deploy: DeployArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<AppConfig> {
        let cli = Cli::try_parse_from(std::iter::once("deploy").chain(args.iter().copied()))?;
        app_config(&cli.deploy)
    }

    #[test]
    fn flags_build_the_body_with_an_absolute_path() {
        let c = parse(&[
            "hello",
            "--wasm",
            "x.wasm",
            "--route",
            "/a",
            "--env",
            "K=V=W",
            "--min-scale",
            "1",
        ])
        .unwrap();
        let wasm = c.wasm.unwrap();
        assert!(wasm.is_absolute() && wasm.ends_with("x.wasm"), "{wasm:?}");
        assert_eq!(c.routes, ["/a"]);
        assert_eq!(c.env["K"], "V=W");
        assert_eq!(c.min_scale, Some(1));
        assert!(parse(&["hello"]).is_err(), "no code");
        assert!(parse(&["hello", "--env", "novalue"]).is_err());
        assert!(parse(&["hello", "--wasm", "a", "--image", "r/x:1"]).is_err());
    }

    #[test]
    fn a_file_is_read_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let toml_file = dir.path().join("app.toml");
        std::fs::write(
            &toml_file,
            "wasm = \"app.wasm\"\nroutes = [\"/x\"]\nenv = { A = \"1\" }\n[limits]\nmemory = \"64MiB\"\n",
        )
        .unwrap();
        let f = toml_file.to_str().unwrap();
        let c = parse(&["app", "--file", f, "--env", "B=2", "--max-scale", "3"]).unwrap();
        assert_eq!(c.wasm.unwrap(), dir.path().join("app.wasm"));
        assert_eq!(c.routes, ["/x"]);
        assert_eq!((c.env["A"].as_str(), c.env["B"].as_str()), ("1", "2"));
        assert_eq!(c.max_scale, Some(3));
        let c = parse(&["app", "--file", f, "--image", "r/x:1"]).unwrap();
        assert_eq!((c.wasm, c.image.as_deref()), (None, Some("r/x:1")));

        let json_file = dir.path().join("app.json");
        std::fs::write(&json_file, r#"{"image": "r/x:1", "limits": {"memry": 1}}"#).unwrap();
        let msg = parse(&["app", "--file", json_file.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("limits") && msg.contains("memry"), "{msg}");
    }
}
