//! `berth logs NAME`: print an app's captured guest output.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::Context as _;

use super::client::{AdminArgs, AdminClient};
use berth::config;
use berth::logs;

/// Arguments of `berth logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The app.
    pub name: String,
    /// Keep printing new lines as they arrive.
    #[arg(long, short)]
    pub follow: bool,
    /// Where the log is read: through the admin API when `--admin` or
    /// `--token` is given, else straight from the data directory's files
    /// (`--data-dir`), which needs no running server; `--follow` then
    /// streams from the admin API of the server holding that directory,
    /// when one runs and takes the directory's token, and else watches
    /// the file.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the tenant's bytes as they are, control characters included
    /// (for a pipe or a file); without it, control characters are escaped.
    #[arg(long)]
    pub raw: bool,
}

/// Where the log goes: standard output, with tenant control characters
/// escaped unless `raw`. Escaped by default even into a pipe or a file: a
/// saved log is read later with `cat` or `less -R` on a terminal, so only an
/// explicit `--raw` gets the bytes as they are.
fn output(raw: bool) -> Box<dyn Write> {
    let out = std::io::stdout().lock();
    if raw {
        Box::new(out)
    } else {
        Box::new(berth::http::EscapingWriter::new(out))
    }
}

/// Prints the log.
///
/// # Errors
/// When the app has no log.
pub fn run(args: LogsArgs) -> anyhow::Result<()> {
    config::validate_label(&args.name).map_err(|r| anyhow::anyhow!("{r}"))?;
    if args.admin.admin.is_some() || args.admin.token.is_some() {
        let client = AdminClient::new(&args.admin)?;
        let follow = if args.follow { "?follow=true" } else { "" };
        let path = format!("/v1/apps/{}/logs{follow}", args.name);
        let raw = args.raw;
        return super::client::block_on(
            async move { client.stream(&path, &mut output(raw)).await },
        );
    }
    let data_dir = args.admin.data_dir.unwrap_or_else(config::default_data_dir);
    if args.follow && follow_server(&data_dir, &args.name, args.raw)? {
        return Ok(());
    }
    let dir = data_dir.join("logs");
    let text = logs::read_all(&dir, &args.name)
        .with_context(|| format!("no logs for app `{}` in `{}`", args.name, dir.display()))?;
    let mut out = output(args.raw);
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

/// Follows the log through the admin API of the `berth serve` holding
/// `data_dir` (it names its admin URL there, [`super::serve::ADMIN_URL_FILE`];
/// the directory's token authenticates). `false` when there is no such
/// server to ask or it does not answer with the log: the caller reads the
/// files then. Once the stream is open, until the server ends it.
///
/// # Errors
/// The stream broke off, or standard output could not be written.
fn follow_server(data_dir: &std::path::Path, app: &str, raw: bool) -> anyhow::Result<bool> {
    let Some(url) = super::serve::read_admin_url(data_dir) else {
        return Ok(false);
    };
    let client = match AdminClient::new(&AdminArgs {
        admin: Some(url),
        token: None,
        data_dir: Some(data_dir.to_path_buf()),
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("not following through the admin API: {e:#}");
            return Ok(false);
        }
    };
    let path = format!("/v1/apps/{app}/logs?follow=true");
    super::client::block_on(async move {
        match client.open_stream(&path).await {
            Ok(body) => super::client::copy_body(body, &mut output(raw))
                .await
                .map(|()| true),
            Err(e) => {
                tracing::debug!("not following through the admin API: {e:#}");
                Ok(false)
            }
        }
    })
}
