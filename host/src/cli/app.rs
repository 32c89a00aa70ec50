//! `berth app NAME`: one app of a running server in detail.

use std::fmt::Write as _;

use super::apps::source;
use super::client::{AdminArgs, AdminClient, block_on, or_dash, print_json, table};
use crate::api::{AppView, KeyvalueView};

/// Arguments of `berth app`.
#[derive(Debug, clap::Args)]
pub struct AppArgs {
    /// The app.
    pub name: String,
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the app (or its JSON with `--json`).
///
/// # Errors
/// An unknown app, or the server unreachable or refusing the request.
pub fn run(args: AppArgs) -> anyhow::Result<()> {
    block_on(async move {
        crate::config::validate_label(&args.name).map_err(|r| anyhow::anyhow!("{r}"))?;
        let client = AdminClient::new(&args.admin)?;
        let app: AppView = client.get(&format!("/v1/apps/{}", args.name)).await?;
        if args.json {
            return print_json(&app);
        }
        let mut text = describe(&app);
        if !app.config.keyvalue.is_empty() {
            let kv: KeyvalueView = client
                .get(&format!("/v1/apps/{}/keyvalue", args.name))
                .await?;
            text.push_str(&describe_buckets(&kv));
        }
        super::client::write_stdout(text.as_bytes())
    })
}

/// One `bucket:` line per key-value bucket: name, store, keys, bytes.
fn describe_buckets(kv: &KeyvalueView) -> String {
    let mut s = String::new();
    for b in &kv.buckets {
        let usage = match (&b.error, b.keys, b.bytes) {
            (Some(e), _, _) => format!("unknown ({e})"),
            (None, Some(k), Some(n)) => format!("{k} keys, {n} bytes"),
            _ => "-".into(),
        };
        let label = "bucket:";
        let _ = writeln!(s, "{label:<13}{} ({}): {usage}", b.bucket, b.store);
    }
    s
}

/// `850µs`, `12.3ms`, `1.20s`.
fn format_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// The human description of an app.
pub fn describe(app: &AppView) -> String {
    let mut s = String::new();
    let mut field = |k: &str, v: String| {
        let _ = writeln!(s, "{:<13}{v}", format!("{k}:"));
    };
    field("name", app.name.clone());
    field("state", app.state.as_str().to_string());
    field("kind", app.kind_name().to_string());
    field("revision", app.revision.clone());
    field("source", source(app));
    if app.config.image.is_some() {
        field("image", or_dash(app.config.image.as_deref()));
    }
    field("sha256", app.sha256.clone());
    if let Some(world) = &app.world {
        field("world", world.clone());
    }
    field("routes", or_dash(Some(&app.routes.join(", "))));
    field("origin", app.origin.as_str().to_string());
    field("deployed", or_dash(Some(&app.deployed_at)));
    field(
        "instances",
        format!(
            "{} ready, {} starting, {} desired (min {}, max {})",
            app.instances.ready,
            app.instances.starting,
            app.instances.desired,
            app.config.min_scale.unwrap_or(0),
            app.config.max_scale.map_or_else(
                || format!("{} (default)", crate::autoscale::config::DEFAULT_MAX_SCALE),
                |m| m.to_string()
            ),
        ),
    );
    field(
        "requests",
        format!("{} in flight, {} queued", app.in_flight, app.queued),
    );
    field(
        "cold starts",
        format!(
            "{}{}",
            app.cold_starts,
            if app.panicking { " (panic mode)" } else { "" }
        ),
    );
    field("last error", or_dash(app.last_error.as_deref()));
    if !app.revisions.is_empty() {
        s.push('\n');
        let rows: Vec<Vec<String>> = app
            .revisions
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    format!("{}%", r.traffic_percent),
                    r.instances.ready.to_string(),
                    r.instances.starting.to_string(),
                    r.instances.desired.to_string(),
                    r.in_flight.to_string(),
                    r.queued.to_string(),
                    r.cold_starts.to_string(),
                    r.last_cold_start_ms
                        .map_or_else(|| "-".to_string(), format_ms),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "REVISION",
                "TRAFFIC",
                "READY",
                "STARTING",
                "DESIRED",
                "IN-FLIGHT",
                "QUEUED",
                "COLD-STARTS",
                "LAST-COLD-START",
            ],
            &rows,
        ));
    }
    s
}
