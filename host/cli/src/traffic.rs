//! `berth traffic NAME --latest N`: move an app's split between its latest
//! revision and the one before it (100 retires the older one).

use http::Method;

use super::client::{AdminArgs, AdminClient, block_on, print_json, write_stdout};
use berth::api::AppView;

/// Arguments of `berth traffic`.
#[derive(Debug, clap::Args)]
pub struct TrafficArgs {
    /// The app.
    pub name: String,
    /// The latest revision's share of new requests, in percent; the
    /// revision before it takes the rest (100 retires it).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub latest: u32,
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Moves the split and prints each serving revision's share.
///
/// # Errors
/// An unknown app, an app with one revision and a share under 100, or the
/// server unreachable.
pub fn run(args: TrafficArgs) -> anyhow::Result<()> {
    block_on(async move {
        berth::config::validate_label(&args.name).map_err(|r| anyhow::anyhow!("{r}"))?;
        let client = AdminClient::new(&args.admin)?;
        let body = serde_json::json!({ "latest_percent": args.latest });
        let (_, app): (_, AppView) = client
            .send(
                Method::POST,
                &format!("/v1/apps/{}/traffic", args.name),
                &body,
            )
            .await?;
        if args.json {
            return print_json(&app);
        }
        let shares: Vec<String> = app
            .revisions
            .iter()
            .map(|r| format!("{} ({}) {} %", r.id, r.kind, r.traffic_percent))
            .collect();
        write_stdout(format!("{}: {}\n", app.name, shares.join(", ")).as_bytes())
    })
}
