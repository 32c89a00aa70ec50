//! `berth delete NAME`: remove an app from a running server.

use super::client::{AdminArgs, AdminClient, block_on, print_json, write_stdout};

/// Arguments of `berth delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The app.
    pub name: String,
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Deletes the app; its in-flight requests finish first.
///
/// # Errors
/// An unknown app, or the server unreachable or refusing the request.
pub fn run(args: DeleteArgs) -> anyhow::Result<()> {
    block_on(async move {
        berth::config::validate_label(&args.name).map_err(|r| anyhow::anyhow!("{r}"))?;
        let client = AdminClient::new(&args.admin)?;
        client.delete(&format!("/v1/apps/{}", args.name)).await?;
        if args.json {
            print_json(&serde_json::json!({ "deleted": args.name }))
        } else {
            write_stdout(format!("deleted {}\n", args.name).as_bytes())
        }
    })
}
