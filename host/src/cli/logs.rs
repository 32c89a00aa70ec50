//! `berth logs NAME`: print an app's captured guest output.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::config;
use crate::logs;

/// Arguments of `berth logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The app.
    pub name: String,
    /// berth's data directory [default: $XDG_DATA_HOME/berth].
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep printing new lines as they arrive.
    #[arg(long, short)]
    pub follow: bool,
    /// Read the log through a server's admin API (e.g.
    /// http://127.0.0.1:8081) instead of the data dir; the token comes from
    /// BERTH_ADMIN_TOKEN.
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    pub admin: Option<String>,
}

/// Prints the log.
///
/// # Errors
/// When the app has no log.
pub fn run(args: LogsArgs) -> anyhow::Result<()> {
    config::validate_label(&args.name).map_err(|r| anyhow::anyhow!("{r}"))?;
    if let Some(admin) = &args.admin {
        let client = super::client::AdminClient::new(&super::client::AdminArgs {
            admin: admin.clone(),
            token: std::env::var(crate::api::TOKEN_ENV).ok(),
            data_dir: None,
            json: false,
        })?;
        let follow = if args.follow { "?follow=true" } else { "" };
        let path = format!("/v1/apps/{}/logs{follow}", args.name);
        return super::client::block_on(async move {
            client.stream(&path, &mut std::io::stdout().lock()).await
        });
    }
    let dir = args
        .data_dir
        .unwrap_or_else(config::default_data_dir)
        .join("logs");
    let text = logs::read_all(&dir, &args.name)
        .with_context(|| format!("no logs for app `{}` in `{}`", args.name, dir.display()))?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    if args.follow {
        let path = logs::log_path(&dir, &args.name);
        let mut pos = std::fs::metadata(&path)?.len();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let mut f = std::fs::File::open(&path)?;
            let len = f.metadata()?.len();
            if len < pos {
                pos = 0; // rotated
            }
            if len > pos {
                f.seek(SeekFrom::Start(pos))?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                out.write_all(&buf)?;
                out.flush()?;
                pos = len;
            }
        }
    }
    Ok(())
}
