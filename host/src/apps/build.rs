//! Building a revision: resolve the app's code (a local component, or an
//! image pulled and pinned), prepare it (compile or map a component; unpack
//! a container image once per digest), choose the backend, and start the
//! revision's initial instances.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;

use super::{Apps, AppsOptions, DeployFailure, Deployed};
use crate::backend::{Backend, Kind};
use crate::config::{AppSpec, Source};
use crate::container::accounts::image_user;
use crate::container::backend::ContainerBackend;
use crate::container::rootfs::{self, Compression};
use crate::container::{ImageConfig, Shim};
use crate::logs::AppLog;
use crate::oci::{ArtifactKind, ContainerImage, Pulled};
use crate::revision::Revision;
use crate::wasm::WasmApp;
use crate::wasm::backend::WasmBackend;

/// The runc shim for this data dir, with the containers a crashed run left
/// behind removed; or why containers are unavailable.
pub(super) async fn open_shim(options: &AppsOptions) -> Result<Arc<Shim>, String> {
    let Some(runc) = crate::container::runc::find_runc(options.runc.as_deref()) else {
        return Err("runc was not found (install it, or pass --runc PATH)".to_string());
    };
    let shim = Shim::new(&options.data_dir.join("containers"), runc)
        .map_err(|e| e.to_string())?
        .with_bridge(options.bridge.clone());
    match shim.reap_leftovers().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(count = n, "removed containers left by an earlier run"),
        Err(e) => tracing::warn!("cannot reap leftover containers: {e}"),
    }
    Ok(Arc::new(shim))
}

impl Apps {
    /// Builds and activates revision `revision_id` of app `name`. `known`:
    /// the sha256 of its component when the caller has just resolved it (a
    /// batch deploy, for every app after the first of one file): the
    /// resident component is then shared without reading or hashing the
    /// `.wasm` again (a file that changed since is refused, naming both
    /// digests).
    pub(super) async fn build_revision(
        &self,
        name: &str,
        revision_id: &str,
        spec: &AppSpec,
        known: Option<&str>,
    ) -> Result<(Arc<Revision>, Deployed), DeployFailure> {
        let (path, pinned, pulled_bytes) = match &spec.source {
            Source::Wasm(path) => (path.clone(), None, 0),
            Source::Image(reference) => {
                let pulled =
                    self.puller
                        .pull(reference)
                        .await
                        .map_err(|error| DeployFailure::Pull {
                            reference: reference.clone(),
                            error,
                        })?;
                tracing::info!(
                    app = name,
                    image = %reference,
                    pinned = %pulled.pinned,
                    kind = %pulled.kind,
                    pulled_bytes = pulled.pulled_bytes,
                    "image resolved and pinned"
                );
                match (&pulled.wasm, &pulled.kind) {
                    (Some(path), _) => (path.clone(), Some(pulled.pinned), pulled.pulled_bytes),
                    (None, ArtifactKind::Container(image)) => {
                        return self
                            .build_container_revision(name, revision_id, spec, &pulled, image)
                            .await;
                    }
                    (None, other) => {
                        return Err(DeployFailure::NotRunnable {
                            reference: reference.clone(),
                            kind: other.to_string(),
                        });
                    }
                }
            }
        };
        let log = self.open_log(name)?;
        let loaded = self.load_component(name, spec, &path, known, &log).await?;
        let config: Arc<dyn berth_wasm::keyvalue::ConfigSource> =
            Arc::new(self.live_config.source(name, spec, self.secrets.clone()));
        let loaded = Arc::new(
            loaded
                .with_metrics(self.metrics.clone())
                .with_config(config.clone()),
        );
        let info = Deployed {
            name: name.to_string(),
            revision: revision_id.to_string(),
            kind: Kind::Wasm,
            pinned,
            sha256: loaded.sha256().to_string(),
            world: Some(loaded.world().to_string()),
            pulled_bytes,
        };
        let backend = Arc::new(
            WasmBackend::new(
                self.runtime.clone(),
                name,
                path,
                spec.clone(),
                log,
                self.secrets.clone(),
                &loaded,
            )
            .with_metrics(self.metrics.clone())
            .with_config(config),
        );
        let revision = self.activate(&info, spec, backend).await?;
        drop(loaded);
        Ok((revision, info))
    }

    /// Compiles or maps the component at `path` for app `name` (on a
    /// blocking thread unless `known` names a resident one).
    async fn load_component(
        &self,
        name: &str,
        spec: &AppSpec,
        path: &std::path::Path,
        known: Option<&str>,
        log: &Arc<AppLog>,
    ) -> Result<WasmApp, DeployFailure> {
        let runtime = self.runtime.clone();
        let secret_env = crate::wasm::backend::secret_env(&self.secrets, spec)?;
        let (name_owned, spec_owned, path_owned, log_owned, known_owned) = (
            name.to_string(),
            spec.clone(),
            path.to_path_buf(),
            log.clone(),
            known.map(str::to_string),
        );
        let load = move || {
            runtime.load_app_known(
                &name_owned,
                &path_owned,
                known_owned.as_deref(),
                &spec_owned,
                &secret_env,
                log_owned,
            )
        };
        let loaded = if known.is_some_and(|sha| self.runtime.resident().contains(sha)) {
            // Resident: no file, no hash, no compile; no thread needed.
            load()
        } else {
            // Compiling is CPU-bound: keep it off the async workers.
            let bar = spinner(self.options.progress, format!("compiling {name}"));
            let loaded = tokio::task::spawn_blocking(load)
                .await
                .context("compile task failed")
                .map_err(DeployFailure::Host)?;
            finish(bar, loaded.is_ok());
            loaded
        };
        loaded.map_err(DeployFailure::from)
    }

    async fn build_container_revision(
        &self,
        name: &str,
        revision_id: &str,
        spec: &AppSpec,
        pulled: &Pulled,
        image: &ContainerImage,
    ) -> Result<(Arc<Revision>, Deployed), DeployFailure> {
        let shim = match &self.shim {
            Ok(shim) => shim.clone(),
            Err(why) => {
                return Err(DeployFailure::NoContainers {
                    reference: pulled.reference.clone(),
                    why: why.clone(),
                });
            }
        };
        // The container network is made when the first app that needs it
        // is deployed (a host with only Wasm apps never touches the host's
        // network); should that fail, the instances' starts say why.
        if spec.container.network == crate::config::NetworkMode::Isolated {
            let _ = shim.open_network().await;
        }
        let store = self.puller.store();
        let config = store
            .read(&image.config.digest)
            .context("cannot read the image config")
            .map_err(DeployFailure::Host)?;
        let image_config = ImageConfig::from_json(&config)
            .context("bad image config")
            .map_err(DeployFailure::Image)?;
        let layers = layers(store, image)?;
        // Unpacked once per image digest, atomically; shared by all instances.
        let digest_hex = pulled.digest.trim_start_matches("sha256:").to_string();
        let rootfs = self.options.data_dir.join("rootfs").join(&digest_hex);
        let dest = rootfs.clone();
        // The lease keeps garbage collection off the rootfs until the revision
        // (and its first instances) is in place: held to the end of this function.
        // Counted while it runs, so that a host stopping mid-unpack (the
        // deploy future dropped) waits for the blocking thread to see the
        // flag and remove its temporary tree.
        let stop = self.shutdown.clone();
        let limits = self.options.unpack;
        let unpacking = UnpackGuard::enter(&self.unpacking);
        let bar = spinner(self.options.progress, format!("unpacking {name}"));
        let unpacked = tokio::task::spawn_blocking(move || {
            let _unpacking = unpacking;
            rootfs::unpack_image_until(&layers, &dest, &limits, &stop)
        })
        .await
        .context("unpack task failed")
        .map_err(DeployFailure::Host)?;
        finish(bar, unpacked.is_ok());
        let _lease = unpacked
            .inspect_err(|e| {
                if matches!(e, rootfs::UnpackError::Stopped) {
                    tracing::info!(app = %name, "unpack stopped: the host is stopping");
                }
            })
            .context("cannot unpack the image")
            .map_err(DeployFailure::Image)?;
        // The `User` each instance start resolves, resolved once now.
        let (root, user) = (rootfs.clone(), image_config.user.clone());
        tokio::task::spawn_blocking(move || image_user(&root, user.as_deref()))
            .await
            .context("user task failed")
            .map_err(DeployFailure::Image)?
            .context("bad image config")
            .map_err(DeployFailure::Image)?;
        let log = self.open_log(name)?;
        let backend = Arc::new(
            ContainerBackend::new(
                shim,
                rootfs,
                image_config,
                name,
                revision_id,
                spec.clone(),
                log,
                self.secrets.clone(),
            )
            .with_metrics(self.metrics.clone()),
        );
        let info = Deployed {
            name: name.to_string(),
            revision: revision_id.to_string(),
            kind: Kind::Container,
            pinned: Some(pulled.pinned.clone()),
            sha256: pulled.digest.clone(),
            world: None,
            pulled_bytes: pulled.pulled_bytes,
        };
        let revision = self.activate(&info, spec, backend).await?;
        Ok((revision, info))
    }

    /// The revision `info` describes, served by `backend`, with its initial
    /// instances started.
    async fn activate(
        &self,
        info: &Deployed,
        spec: &AppSpec,
        backend: Arc<dyn Backend>,
    ) -> Result<Arc<Revision>, DeployFailure> {
        let revision = Revision::new(
            info.revision.clone(),
            &info.name,
            info.pinned.clone(),
            spec.clone(),
            backend,
            self.metrics.clone(),
        );
        revision.activate().await.map_err(DeployFailure::Start)?;
        Ok(revision)
    }

    fn open_log(&self, name: &str) -> Result<Arc<AppLog>, DeployFailure> {
        self.app_log(name).map_err(DeployFailure::Host)
    }
}

/// The image's layer files with their compression (by media type, else
/// sniffed from the first bytes).
fn layers(
    store: &crate::oci::BlobStore,
    image: &ContainerImage,
) -> Result<Vec<(std::path::PathBuf, Compression)>, DeployFailure> {
    let mut layers = Vec::new();
    for layer in &image.layers {
        let compression = Compression::from_media_type(&layer.media_type)
            .or_else(|| {
                let mut head = [0u8; 512];
                let n = std::fs::File::open(store.path(&layer.digest))
                    .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
                    .unwrap_or(0);
                Compression::detect(&head[..n])
            })
            .ok_or_else(|| {
                DeployFailure::Image(anyhow::anyhow!(
                    "layer {} has unsupported media type `{}`",
                    layer.digest,
                    layer.media_type
                ))
            })?;
        layers.push((store.path(&layer.digest), compression));
    }
    Ok(layers)
}

/// One unpack under way, counted in [`Apps`]'s `unpacking` until dropped.
struct UnpackGuard(Arc<AtomicUsize>);

impl UnpackGuard {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for UnpackGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A spinner with the elapsed time for a step that reports no progress of
/// its own (compiling a component, unpacking an image), like the pull's
/// bars: drawn only when `show` and stderr is a terminal.
fn spinner(show: bool, message: String) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal as _;
    if !show || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(message);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    Some(bar)
}

/// Ends a [`spinner`]: kept with "done" on success, cleared otherwise (the
/// error is reported by the caller).
fn finish(bar: Option<indicatif::ProgressBar>, ok: bool) {
    if let Some(bar) = bar {
        if ok {
            bar.finish_with_message(format!("{} done", bar.message()));
        } else {
            bar.finish_and_clear();
        }
    }
}
