//! `berth pull REF`: fetch an artifact into the data dir's blob store.
//!
//! Prints what the reference resolved to on stdout:
//! ```text
//! digest: sha256:…
//! kind: wasm-component
//! ```

use std::path::PathBuf;

use anyhow::Context as _;

use super::push::RegistryArgs;
use berth::oci::{BlobStore, Puller};

/// Arguments of `berth pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// What to pull: `HOST[:PORT]/REPO[:TAG]` or `HOST[:PORT]/REPO@sha256:…`.
    pub reference: String,
    /// Where blobs are stored [default: $XDG_DATA_HOME/berth].
    #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Runs `berth pull` on a runtime of its own.
///
/// # Errors
/// A registry error, content that fails verification, an artifact that is
/// neither a Wasm component nor a container image, or an unwritable store.
pub fn run(args: PullArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run_async(args))
}

/// `berth pull`, for callers already on a runtime.
///
/// # Errors
/// As [`run`].
pub async fn run_async(args: PullArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(berth::config::default_data_dir);
    let store = BlobStore::open(&data_dir)?;
    let puller = Puller::new(args.registry.client()?, store);
    let pulled = puller
        .pull(&args.reference)
        .await
        .with_context(|| format!("cannot pull {}", args.reference))?;
    println!("digest: {}", pulled.digest);
    println!("kind: {}", pulled.kind);
    if let Some(path) = &pulled.wasm {
        println!("path: {}", path.display());
    }
    Ok(())
}
