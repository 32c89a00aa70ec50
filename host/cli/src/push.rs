//! `berth push REF FILE`: push a Wasm component to an OCI registry.
//!
//! The component is pushed as a CNCF Wasm artifact (see
//! [`berth::oci::push_component`]), or with `--image` as an index of that
//! artifact and two images for containerd
//! ([`berth::oci::push_component_image`]); the digest is printed on stdout.
//! [`RegistryArgs`] are the registry flags shared with `berth pull`.

use std::path::PathBuf;

use anyhow::Context as _;

use berth::oci::{self, Auth, ClientOptions, Credentials, RegistryClient};

/// Arguments of `berth push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Where to push, with a tag, e.g. `127.0.0.1:5000/hello:v1`.
    pub reference: String,
    /// The Wasm component to push.
    pub file: PathBuf,
    /// Push an image index holding three packagings: the CNCF Wasm artifact
    /// (`wasip2/wasm`, what berth pulls), a `wasi/wasm` image whose one
    /// layer is the component (runwasi's form: containerd >= 1.7.7 pulls
    /// it with `--platform wasi/wasm`, and `containerd-shim-berth-v1` reads
    /// the layer from containerd's content store), and an ordinary linux
    /// image whose rootfs holds the component as `/app.wasm` and whose
    /// entrypoint names it (what containerd, 1.6 included, runs with the
    /// `io.containerd.berth.v1` runtime).
    #[arg(long)]
    pub image: bool,
    /// Registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// How to reach and authenticate to a registry (`berth push` and `berth pull`).
///
/// Without `--username`/`--password`, credentials come from the docker
/// `config.json` (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`),
/// and otherwise the registry is accessed anonymously.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryArgs {
    /// A registry (`HOST` or `HOST:PORT`) to reach over plain HTTP; loopback
    /// registries always are. Repeat, or separate with commas.
    #[arg(
        long = "insecure-registry",
        env = "BERTH_INSECURE_REGISTRY",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,
    /// User name for the registry.
    #[arg(long, env = "BERTH_REGISTRY_USERNAME", requires = "password")]
    pub username: Option<String>,
    /// Password or access token for the registry.
    #[arg(
        long,
        env = "BERTH_REGISTRY_PASSWORD",
        requires = "username",
        hide_env_values = true
    )]
    pub password: Option<String>,
}

impl RegistryArgs {
    /// A registry client for these arguments.
    ///
    /// # Errors
    /// An unreadable or malformed docker config.
    pub fn client(&self) -> anyhow::Result<RegistryClient> {
        let auth = match (&self.username, &self.password) {
            (Some(user), Some(pass)) => {
                Auth::anonymous().with_credentials(Credentials::new(user, pass))
            }
            _ => Auth::from_docker_config()?,
        };
        let options =
            ClientOptions::default().with_insecure_registries(self.insecure_registry.clone());
        Ok(RegistryClient::new(auth, options))
    }
}

/// Runs `berth push` on a runtime of its own.
///
/// # Errors
/// An unreadable file, a file that is not a component, or a registry error.
pub fn run(args: PushArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run_async(args))
}

/// `berth push`, for callers already on a runtime.
///
/// # Errors
/// As [`run`].
pub async fn run_async(args: PushArgs) -> anyhow::Result<()> {
    let wasm = tokio::fs::read(&args.file)
        .await
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let client = args.registry.client()?;
    let pushed = if args.image {
        oci::push_component_image(&client, &args.reference, &wasm).await
    } else {
        oci::push_component(&client, &args.reference, &wasm).await
    };
    let digest = pushed
        .with_context(|| format!("cannot push {} to {}", args.file.display(), args.reference))?;
    println!("pushed: {}", args.reference);
    println!("digest: {digest}");
    Ok(())
}
