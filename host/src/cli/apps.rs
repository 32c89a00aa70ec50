//! `berth apps`: list the apps of a running server.

use super::client::{
    AdminArgs, AdminClient, block_on, or_dash, print_json, print_table, write_stdout,
};
use crate::api::{AppList, AppView};

/// Arguments of `berth apps`.
#[derive(Debug, clap::Args)]
pub struct AppsArgs {
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the apps as a table (or JSON with `--json`).
///
/// # Errors
/// The server unreachable or refusing the request.
pub fn run(args: AppsArgs) -> anyhow::Result<()> {
    block_on(async move {
        let client = AdminClient::new(&args.admin)?;
        let list: AppList = client.get("/v1/apps").await?;
        if args.json {
            return print_json(&list);
        }
        if list.apps.is_empty() {
            return write_stdout(b"no apps\n");
        }
        let rows: Vec<Vec<String>> = list.apps.iter().map(row).collect();
        print_table(
            &[
                "NAME",
                "STATE",
                "KIND",
                "REVISION",
                "READY",
                "DESIRED",
                "IN-FLIGHT",
                "QUEUED",
                "ROUTES",
                "SOURCE",
            ],
            &rows,
        )
    })
}

fn row(app: &AppView) -> Vec<String> {
    vec![
        app.name.clone(),
        app.state.as_str().to_string(),
        app.kind_name().to_string(),
        app.revision.clone(),
        app.instances.ready.to_string(),
        app.instances.desired.to_string(),
        app.in_flight.to_string(),
        app.queued.to_string(),
        or_dash(Some(&app.routes.join(","))),
        source(app),
    ]
}

/// Where the code comes from: the image (pinned digest when known) or the
/// file.
pub fn source(app: &AppView) -> String {
    match (&app.config.image, &app.pinned, &app.config.wasm) {
        (Some(_), Some(pinned), _) => pinned.clone(),
        (Some(image), None, _) => image.clone(),
        (None, _, Some(path)) => path.display().to_string(),
        (None, _, None) => "-".to_string(),
    }
}
