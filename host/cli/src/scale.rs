//! `berth scale NAME [--min N] [--max M]`: change an app's instance bounds.
//!
//! The server redeploys the same code (an image stays on its pinned digest)
//! as a new revision with the new bounds.

use http::Method;

use super::client::{AdminArgs, AdminClient, block_on, print_json, write_stdout};
use berth::api::{AppView, ScaleRequest};

/// Arguments of `berth scale`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("bounds").required(true).multiple(true).args(["min", "max"])))]
pub struct ScaleArgs {
    /// The app.
    pub name: String,
    /// Instances kept even when idle (0 = scale to zero).
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,
    /// Most instances (1 to 10,000; default 100).
    #[arg(long, value_name = "M")]
    pub max: Option<u32>,
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Changes the bounds.
///
/// # Errors
/// An unknown app, bounds the server refuses (min above max), or the server
/// unreachable.
pub fn run(args: ScaleArgs) -> anyhow::Result<()> {
    block_on(async move {
        berth::config::validate_label(&args.name).map_err(|r| anyhow::anyhow!("{r}"))?;
        let client = AdminClient::new(&args.admin)?;
        let body = ScaleRequest {
            min_scale: args.min,
            max_scale: args.max,
        };
        let (_, app): (_, AppView) = client
            .send(
                Method::POST,
                &format!("/v1/apps/{}/scale", args.name),
                &body,
            )
            .await?;
        if args.json {
            return print_json(&app);
        }
        let text = format!(
            "scaled {}: min {}, max {} (revision {})\n",
            app.name,
            app.config.min_scale.unwrap_or(0),
            app.config.max_scale.map_or_else(
                || format!("{} (default)", berth::autoscale::config::DEFAULT_MAX_SCALE),
                |m| m.to_string()
            ),
            app.revision
        );
        write_stdout(text.as_bytes())
    })
}
