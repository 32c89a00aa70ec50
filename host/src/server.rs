//! `berth serve`: loads the apps, then runs the front door and the admin
//! listener until told to stop.
//!
//! [`Server::start`] does everything that can fail because of the user's input
//! (reading and compiling components) before anything listens, so a bad app
//! is refused at start with a clear message. [`Server::run`] then serves until
//! the shutdown future resolves, stops accepting, and lets in-flight requests
//! finish up to [`ServerOptions::drain_timeout`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::api::AdminAuth;
use crate::backend::{Kind, WasmBackend};
use crate::config::{AppSpec, Config, Source};
use crate::container::backend::ContainerBackend;
use crate::container::rootfs::{self, Compression};
use crate::container::{ImageConfig, Shim};
use crate::gateway::{self, Body, Gateway, RouteTable, RoutedApp};
use crate::logs::AppLog;
use crate::metrics::Metrics;
use crate::oci::{ArtifactKind, BlobStore, ContainerImage, Pulled, Puller, RegistryClient};
use crate::revision::{Revision, RevisionStatus};
use crate::state::{Origin, Record, StateStore, StoredApp};
use crate::wasm::{EngineOptions, WasmRuntime};

/// Settings of a running host that are not part of the app config.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where compiled artifacts, logs and pulled blobs live.
    pub data_dir: PathBuf,
    /// Engine-wide Wasm settings.
    pub engine: EngineOptions,
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// How `image = "REF"` apps are pulled.
    pub registry: RegistryClient,
    /// Show pull progress bars (only ever drawn on a terminal).
    pub progress: bool,
    /// Who may use the admin API (a token is required off loopback).
    pub admin_auth: AdminAuth,
    /// Serve the front door over TLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The runc binary (default: `runc` on `PATH`, then `/usr/sbin/runc`).
    pub runc: Option<PathBuf>,
}

impl ServerOptions {
    /// Defaults with the given data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            engine: EngineOptions::default(),
            drain_timeout: Duration::from_secs(30),
            registry: RegistryClient::anonymous(),
            progress: false,
            admin_auth: AdminAuth::none(),
            tls: None,
            runc: None,
        }
    }
}

/// What a deploy resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The app.
    pub name: String,
    /// For an image, `registry/repo@sha256:…`: the digest the tag resolved to.
    pub pinned: Option<String>,
    /// The revision this deploy created.
    pub revision: String,
    /// Wasm or container.
    pub kind: Kind,
    /// sha256 of the component that serves.
    pub sha256: String,
    /// Bytes pulled from a registry for this deploy (0 when all was local).
    pub pulled_bytes: u64,
}

/// Deployed apps by name, with their path routes.
type AppTable = BTreeMap<String, AppEntry>;

#[derive(Debug)]
struct AppEntry {
    routed: Arc<RoutedApp>,
    routes: Vec<String>,
    deployed: Deployed,
}

/// An app as the API shows it.
#[derive(Debug, Clone)]
pub struct AppStatus {
    /// What its latest deploy resolved.
    pub deployed: Deployed,
    /// Its path routes.
    pub routes: Vec<String>,
    /// Its revisions with their traffic percentages.
    pub revisions: Vec<(RevisionStatus, u32)>,
}

/// A deploy asked for a path route that another app serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route `{route}` is taken by app `{owner}`")]
pub struct RouteConflict {
    /// The route.
    pub route: String,
    /// The app serving it.
    pub owner: String,
}

/// A loaded host, ready to serve.
#[derive(Debug)]
pub struct Server {
    options: ServerOptions,
    domain: String,
    runtime: Arc<WasmRuntime>,
    puller: Puller,
    gateway: Arc<Gateway>,
    /// Deployed apps with their routes; the route table is rebuilt from this.
    apps: Mutex<AppTable>,
    revisions: AtomicU64,
    /// Background stops of retired revisions.
    retiring: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The runc shim, or why containers are unavailable on this host.
    shim: Result<Arc<Shim>, String>,
    ready: AtomicBool,
    /// The deployed apps as persisted in the data dir.
    state: StateStore,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Creates the data directory and engine, and deploys every app of
    /// `config` and every app the data dir's state remembers (see
    /// [`crate::state`] for how they merge). Nothing listens yet.
    ///
    /// # Errors
    /// An unusable state file, or the first app of `config` that cannot be
    /// deployed, named, with the reason. An app of the state that cannot be
    /// deployed again is logged and shown by the admin API instead.
    pub async fn start(config: &Config, options: ServerOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.data_dir).with_context(|| {
            format!(
                "cannot create data directory `{}`",
                options.data_dir.display()
            )
        })?;
        let runtime = Arc::new(
            WasmRuntime::new(&options.data_dir, &options.engine)
                .context("cannot set up the Wasm engine")?,
        );
        let store = BlobStore::open(&options.data_dir).context("cannot open the blob store")?;
        let puller = Puller::new(options.registry.clone(), store).with_progress(options.progress);
        let state = StateStore::open(&options.data_dir)?;
        let metrics = Arc::new(Metrics::new());
        let shim = match find_runc(options.runc.as_deref()) {
            Some(runc) => match Shim::new(&options.data_dir.join("containers"), runc) {
                Ok(shim) => {
                    // Containers left by a crashed run are found and removed.
                    match shim.reap_leftovers().await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::warn!(count = n, "removed containers left by an earlier run")
                        }
                        Err(e) => tracing::warn!("cannot reap leftover containers: {e}"),
                    }
                    Ok(Arc::new(shim))
                }
                Err(e) => Err(format!("{e}")),
            },
            None => Err("runc was not found (install it, or pass --runc PATH)".to_string()),
        };
        let server = Self {
            shim,
            domain: config.domain.clone(),
            runtime,
            puller,
            gateway: Arc::new(Gateway::new(
                RouteTable::new(&config.domain, Vec::new()),
                metrics.clone(),
            )),
            apps: Mutex::new(BTreeMap::new()),
            revisions: AtomicU64::new(state.last_revision()),
            retiring: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            state,
            metrics,
            options,
        };
        server.restore(config).await?;
        Ok(server)
    }

    /// Deploys the config file's apps, then the apps of the state made
    /// through the API; forgets the config file's former apps.
    async fn restore(&self, config: &Config) -> anyhow::Result<()> {
        let plan = self.state.plan(config);
        for name in &plan.forget {
            self.state.forget(name)?;
            tracing::info!(app = %name, "forgotten: no longer in the config file");
        }
        for app in plan.config {
            self.deploy_recorded(&app.name, &app.spec, app.record)
                .await?;
        }
        let file = self.state.path().display();
        for app in plan.restore {
            if let Err(e) = self.deploy_recorded(&app.name, &app.spec, app.record).await {
                tracing::error!(app = %app.name, "cannot restore the app from {file}: {e:#}");
                self.state.set_restore_error(&app.name, format!("{e:#}"));
            }
        }
        for app in plan.unrestorable {
            tracing::error!(app = %app.name, "cannot restore the app from {file}: {}", app.reason);
            self.state.set_restore_error(&app.name, app.reason);
        }
        Ok(())
    }

    /// Deploys (or replaces) app `name` as a new revision: pulls its image
    /// if it has one, compiles or maps its component, starts its initial
    /// instances, then switches routing to it; the previous revision drains
    /// its in-flight requests and stops. On error nothing changes and every
    /// other app keeps serving.
    ///
    /// # Errors
    /// Why the app cannot be deployed, naming it.
    pub async fn deploy(&self, name: &str, spec: &AppSpec) -> anyhow::Result<Deployed> {
        self.deploy_recorded(name, spec, Record::from_spec(spec, Origin::Api))
            .await
    }

    /// [`deploy`](Self::deploy), persisting `record` in the state (the
    /// admin API passes the settings as the user wrote them; a restart
    /// passes the revision id to keep).
    ///
    /// # Errors
    /// Why the app cannot be deployed, naming it: a [`RouteConflict`], a
    /// pull or load failure, or a state file that cannot be written.
    pub async fn deploy_recorded(
        &self,
        name: &str,
        spec: &AppSpec,
        record: Record,
    ) -> anyhow::Result<Deployed> {
        self.deploy_with_traffic(name, spec, record, 100).await
    }

    /// Deploys a new revision of app `name` that receives `percent` of new
    /// requests (a canary); the revision that served most traffic so far keeps
    /// the rest, and any other revision is retired. `percent = 100` is a
    /// plain deploy. The split lasts until [`Server::set_traffic`] or the next
    /// deploy; a restart comes back on the latest revision alone.
    ///
    /// # Errors
    /// As [`Server::deploy`]; also a percentage above 100.
    pub async fn deploy_canary(
        &self,
        name: &str,
        spec: &AppSpec,
        percent: u32,
    ) -> anyhow::Result<Deployed> {
        anyhow::ensure!(
            percent <= 100,
            "a traffic share is at most 100 percent, not {percent}"
        );
        self.deploy_with_traffic(name, spec, Record::from_spec(spec, Origin::Api), percent)
            .await
    }

    /// Moves the traffic split of app `name`: the latest revision gets
    /// `latest_percent`, the one before it the rest; at 100 the older one is
    /// retired.
    ///
    /// # Errors
    /// Unknown app, or an app with one revision and a share below 100.
    pub fn set_traffic(&self, name: &str, latest_percent: u32) -> anyhow::Result<()> {
        anyhow::ensure!(
            latest_percent <= 100,
            "a traffic share is at most 100 percent, not {latest_percent}"
        );
        let retired = {
            let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
            let entry = apps
                .get_mut(name)
                .ok_or_else(|| anyhow::anyhow!("no app `{name}`"))?;
            let traffic = &entry.routed.traffic;
            let latest = traffic
                .last()
                .map(|(r, _)| r.clone())
                .ok_or_else(|| anyhow::anyhow!("app `{name}` has no revision"))?;
            let (split, retired) = if latest_percent == 100 {
                let retired: Vec<_> = traffic[..traffic.len() - 1]
                    .iter()
                    .map(|(r, _)| r.clone())
                    .collect();
                (vec![(latest, 100)], retired)
            } else {
                anyhow::ensure!(
                    traffic.len() >= 2,
                    "app `{name}` has a single revision; deploy a canary first"
                );
                let previous = traffic[traffic.len() - 2].0.clone();
                (
                    vec![(previous, 100 - latest_percent), (latest, latest_percent)],
                    Vec::new(),
                )
            };
            entry.routed = Arc::new(RoutedApp::split(name, split));
            self.publish(&apps);
            retired
        };
        self.retire(retired);
        Ok(())
    }

    /// [`deploy_recorded`](Self::deploy_recorded) with the new revision
    /// getting `percent` of new requests (see [`Server::deploy_canary`]).
    ///
    /// # Errors
    /// As [`Server::deploy_recorded`].
    pub async fn deploy_with_traffic(
        &self,
        name: &str,
        spec: &AppSpec,
        record: Record,
        percent: u32,
    ) -> anyhow::Result<Deployed> {
        crate::config::validate_label(name).map_err(|r| anyhow::anyhow!("app name: {r}"))?;
        {
            let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
            let taken = spec.routes.iter().find_map(|r| {
                apps.iter()
                    .find(|(other, entry)| *other != name && entry.routes.contains(r))
                    .map(|(other, _)| (r, other))
            });
            if let Some((route, owner)) = taken {
                return Err(anyhow::Error::new(RouteConflict {
                    route: route.clone(),
                    owner: owner.clone(),
                })
                .context(format!("cannot deploy app `{name}`")));
            }
        }
        let revision_id = match &record.revision {
            Some(id) => id.clone(),
            None => {
                let number = self.revisions.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{name}-{number:05}")
            }
        };
        let (revision, info) = self
            .build_revision(name, &revision_id, spec)
            .await
            .with_context(|| format!("cannot deploy app `{name}`"))?;
        // Persist, then route, under the app table's lock: the state file
        // and the running apps agree on the last deploy of each app.
        let swapped = {
            let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
            self.state
                .record(name, StoredApp::new(&record, &info))
                .map(|()| {
                    // With a canary share, the busiest old revision stays.
                    let keep = (percent < 100)
                        .then(|| apps.get(name))
                        .flatten()
                        .and_then(|e| e.routed.traffic.iter().max_by_key(|(_, p)| *p))
                        .map(|(r, _)| r.clone());
                    let routed = match &keep {
                        Some(primary) => RoutedApp::split(
                            name,
                            vec![
                                (primary.clone(), 100 - percent),
                                (revision.clone(), percent),
                            ],
                        ),
                        None => RoutedApp::single(name, revision.clone()),
                    };
                    let old = apps.insert(
                        name.to_string(),
                        AppEntry {
                            routed: Arc::new(routed),
                            routes: spec.routes.clone(),
                            deployed: info.clone(),
                        },
                    );
                    self.publish(&apps);
                    (old, keep)
                })
        };
        let (old, keep) = match swapped {
            Ok(old) => old,
            Err(e) => {
                revision.shutdown().await;
                return Err(anyhow::Error::new(e).context(format!("cannot deploy app `{name}`")));
            }
        };
        if let Some(old) = old {
            self.retire(
                old.routed
                    .traffic
                    .iter()
                    .filter(|(r, _)| !keep.as_ref().is_some_and(|k| Arc::ptr_eq(k, r)))
                    .map(|(r, _)| r.clone())
                    .collect(),
            );
        }
        tracing::info!(app = name, revision = %revision_id, "deployed");
        Ok(info)
    }

    /// Removes app `name`; its in-flight requests finish, then its instances
    /// stop.
    ///
    /// Returns whether the app existed.
    pub fn remove(&self, name: &str) -> bool {
        let old = {
            let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
            let old = apps.remove(name);
            if old.is_some()
                && let Err(e) = self.state.forget(name)
            {
                tracing::error!(
                    app = name,
                    "removed, but it will come back at the next start: {e}"
                );
            }
            self.publish(&apps);
            old
        };
        match old {
            Some(entry) => {
                self.retire(
                    entry
                        .routed
                        .traffic
                        .iter()
                        .map(|(r, _)| r.clone())
                        .collect(),
                );
                true
            }
            None => false,
        }
    }

    /// Removes blobs of the store that no app references: roots are the
    /// pinned digests of the running apps' revisions and of every app in the
    /// state file. Returns how many blobs were removed.
    ///
    /// # Errors
    /// When the store cannot be read or a blob cannot be removed.
    pub fn collect_garbage(&self) -> anyhow::Result<usize> {
        let mut roots = Vec::new();
        let pinned = |p: &str| {
            p.rsplit_once('@')
                .and_then(|(_, d)| crate::oci::Digest::parse(d).ok())
        };
        {
            let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
            for entry in apps.values() {
                roots.extend(entry.deployed.pinned.as_deref().and_then(pinned));
                for (r, _) in &entry.routed.traffic {
                    roots.extend(r.pinned().and_then(pinned));
                }
            }
        }
        for stored in self.state.apps().values() {
            roots.extend(stored.pinned.as_deref().and_then(pinned));
        }
        let store = self.puller.store();
        let referenced = store.closure(&roots)?;
        let removed = store.gc(&referenced)?;
        tracing::info!(
            removed,
            kept = referenced.len(),
            "collected unreferenced blobs"
        );
        Ok(removed)
    }

    /// The revisions serving app `name`.
    pub fn revisions(&self, name: &str) -> Vec<Arc<Revision>> {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        apps.get(name)
            .map(|e| e.routed.traffic.iter().map(|(r, _)| r.clone()).collect())
            .unwrap_or_default()
    }

    /// The deployed apps with their revision status.
    pub fn apps(&self) -> Vec<AppStatus> {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        apps.values()
            .map(|e| AppStatus {
                deployed: e.deployed.clone(),
                routes: e.routes.clone(),
                revisions: e
                    .routed
                    .traffic
                    .iter()
                    .map(|(r, pct)| (r.status(), *pct))
                    .collect(),
            })
            .collect()
    }

    /// Stops every app's instances (used at shutdown).
    pub async fn stop_all(&self) {
        let entries: Vec<_> = {
            let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
            let all = std::mem::take(&mut *apps);
            self.publish(&apps);
            all.into_values().collect()
        };
        let stops = entries.into_iter().flat_map(|e| {
            e.routed
                .traffic
                .iter()
                .map(|(r, _)| r.clone())
                .collect::<Vec<_>>()
        });
        futures::future::join_all(stops.map(|r| async move { r.shutdown().await })).await;
        // And the revisions retired by a redeploy or removal still stopping.
        let retiring =
            std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|e| e.into_inner()));
        for task in retiring {
            let _ = task.await;
        }
    }

    /// Lets old revisions finish their requests, then stops their instances,
    /// in the background; [`Server::stop_all`] waits for these too, so a host
    /// that exits right after a redeploy leaves no instance behind.
    fn retire(&self, revisions: Vec<Arc<Revision>>) {
        if revisions.is_empty() {
            return;
        }
        let task = tokio::spawn(async move {
            for revision in revisions {
                revision.shutdown().await;
            }
        });
        let mut retiring = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
        retiring.retain(|t| !t.is_finished());
        retiring.push(task);
    }

    fn publish(&self, apps: &AppTable) {
        let entries = apps
            .values()
            .map(|e| (e.routed.clone(), e.routes.clone()))
            .collect();
        self.gateway
            .set_table(RouteTable::new(&self.domain, entries));
    }

    async fn build_container_revision(
        &self,
        name: &str,
        revision_id: &str,
        spec: &AppSpec,
        pulled: &Pulled,
        image: &ContainerImage,
    ) -> anyhow::Result<(Arc<Revision>, Deployed)> {
        let shim = match &self.shim {
            Ok(shim) => shim.clone(),
            Err(why) => anyhow::bail!(
                "image `{}` is a container image, but containers are unavailable: {why}",
                pulled.reference
            ),
        };
        let store = self.puller.store();
        let config = store
            .read(&image.config.digest)
            .context("cannot read the image config")?;
        let image_config = ImageConfig::from_json(&config).context("bad image config")?;
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
                    anyhow::anyhow!(
                        "layer {} has unsupported media type `{}`",
                        layer.digest,
                        layer.media_type
                    )
                })?;
            layers.push((store.path(&layer.digest), compression));
        }
        // Unpacked once per image digest, atomically; shared by all instances.
        let digest_hex = pulled.digest.trim_start_matches("sha256:").to_string();
        let rootfs = self.options.data_dir.join("rootfs").join(&digest_hex);
        let dest = rootfs.clone();
        tokio::task::spawn_blocking(move || rootfs::unpack_image(&layers, &dest))
            .await
            .context("unpack task failed")?
            .context("cannot unpack the image")?;
        let log = Arc::new(
            AppLog::open(&self.options.data_dir.join("logs"), name)
                .with_context(|| format!("cannot open the log of app `{name}`"))?,
        );
        let backend = Arc::new(
            ContainerBackend::new(
                shim,
                rootfs,
                image_config,
                name,
                revision_id,
                spec.clone(),
                log,
            )
            .with_metrics(self.metrics.clone()),
        );
        let info = Deployed {
            name: name.to_string(),
            revision: revision_id.to_string(),
            kind: Kind::Container,
            pinned: Some(pulled.pinned.clone()),
            sha256: pulled.digest.clone(),
            pulled_bytes: pulled.pulled_bytes,
        };
        let mut revision = Revision::new(
            revision_id.to_string(),
            name,
            spec.clone(),
            backend,
            self.metrics.clone(),
        );
        revision.set_pinned(info.pinned.clone());
        revision.activate().await?;
        Ok((revision, info))
    }

    async fn build_revision(
        &self,
        name: &str,
        revision_id: &str,
        spec: &AppSpec,
    ) -> anyhow::Result<(Arc<Revision>, Deployed)> {
        let (path, pinned, pulled_bytes) = match &spec.source {
            Source::Wasm(path) => (path.clone(), None, 0),
            Source::Image(reference) => {
                let pulled = self
                    .puller
                    .pull(reference)
                    .await
                    .with_context(|| format!("cannot pull image `{reference}`"))?;
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
                        anyhow::bail!("image `{reference}` is a {other}, which berth cannot run")
                    }
                }
            }
        };
        let logs_dir = self.options.data_dir.join("logs");
        let log = Arc::new(
            AppLog::open(&logs_dir, name)
                .with_context(|| format!("cannot open the log of app `{name}`"))?,
        );
        let runtime = self.runtime.clone();
        let (name_owned, spec_owned, path_owned, log_owned) =
            (name.to_string(), spec.clone(), path.clone(), log.clone());
        // Compiling is CPU-bound: keep it off the async workers.
        let loaded = tokio::task::spawn_blocking(move || {
            runtime.load_app(&name_owned, &path_owned, &spec_owned, log_owned)
        })
        .await
        .context("compile task failed")??;
        let loaded = Arc::new(loaded.with_metrics(self.metrics.clone()));
        let info = Deployed {
            name: name.to_string(),
            revision: revision_id.to_string(),
            kind: Kind::Wasm,
            pinned,
            sha256: loaded.sha256().to_string(),
            pulled_bytes,
        };
        let backend = Arc::new(
            WasmBackend::new(self.runtime.clone(), name, path, spec.clone(), log, &loaded)
                .with_metrics(self.metrics.clone()),
        );
        let mut revision = Revision::new(
            revision_id.to_string(),
            name,
            spec.clone(),
            backend,
            self.metrics.clone(),
        );
        revision.set_pinned(info.pinned.clone());
        revision.activate().await?;
        drop(loaded);
        Ok((revision, info))
    }

    /// The Wasm runtime (for its counters).
    pub fn runtime(&self) -> &Arc<WasmRuntime> {
        &self.runtime
    }

    /// The front door.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The settings it runs with.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The persisted apps.
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether it serves (false before [`run`](Self::run) and once shutdown
    /// begins).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Serves the front door on `listener` and the admin endpoints on `admin`
    /// until `shutdown` resolves; then drains.
    ///
    /// # Errors
    /// When accepting connections fails persistently.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let graceful = GracefulShutdown::new();
        let front = listener.local_addr()?;
        let admin_addr = admin.local_addr()?;
        self.options
            .admin_auth
            .ensure_listener_allowed(admin_addr)?;
        let sampler = {
            let server = Arc::downgrade(&self);
            self.metrics.spawn_sampler(Duration::from_secs(1), move || {
                server.upgrade().map(|s| s.apps())
            })
        };
        tracing::info!(%front, admin = %admin_addr, apps = self.gateway.table().len(), "berth is serving");
        self.ready.store(true, Ordering::Release);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Some(stream) = accept_ok(accepted).await else { continue };
                    let _ = stream.set_nodelay(true);
                    let gw = self.gateway.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let gw = gw.clone();
                        async move { gw.handle(req).await }
                    });
                    match &self.options.tls {
                        None => self.serve_conn(&graceful, stream, svc),
                        Some(tls) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                            let watcher = graceful.watcher();
                            tokio::spawn(async move {
                                let handshake = tokio::time::timeout(
                                    Duration::from_secs(10),
                                    acceptor.accept(stream),
                                );
                                match handshake.await {
                                    Ok(Ok(tls_stream)) => {
                                        let conn = auto::Builder::new(TokioExecutor::new())
                                            .serve_connection(TokioIo::new(tls_stream), svc)
                                            .into_owned();
                                        if let Err(e) = watcher.watch(conn).await {
                                            tracing::debug!("TLS connection ended with error: {e}");
                                        }
                                    }
                                    Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                                    Err(_) => tracing::debug!("TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                accepted = admin.accept() => {
                    let Some(stream) = accept_ok(accepted).await else { continue };
                    let me = self.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.admin(req).await) }
                    });
                    self.serve_conn(&graceful, stream, svc);
                }
            }
        }
        self.ready.store(false, Ordering::Release);
        sampler.abort();
        drop(listener);
        drop(admin);
        tracing::info!("shutting down: draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(self.options.drain_timeout) => {
                tracing::warn!(timeout = ?self.options.drain_timeout, "drain timeout passed; closing remaining connections");
            }
        }
        self.stop_all().await;
        Ok(())
    }

    fn serve_conn<S>(&self, graceful: &GracefulShutdown, stream: tokio::net::TcpStream, svc: S)
    where
        S: hyper::service::Service<
                Request<Incoming>,
                Response = Response<Body>,
                Error = Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended with error: {e}");
            }
        });
    }

    /// `/healthz` and `/readyz` (open to probes); everything else is the
    /// admin API ([`crate::api`]).
    async fn admin(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/healthz" => gateway::error(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                gateway::error(StatusCode::OK, "ready\n")
            }
            "/readyz" => gateway::error(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            _ => crate::api::handle(self, req).await,
        }
    }
}

/// Accept errors (EMFILE and the like) are logged and slowed down, not fatal.
async fn accept_ok(
    accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
) -> Option<tokio::net::TcpStream> {
    match accepted {
        Ok((stream, _)) => Some(stream),
        Err(e) => {
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// The runc binary to use: the one given, else `runc` on `PATH`, else
/// `/usr/sbin/runc`.
fn find_runc(given: Option<&std::path::Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("runc"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/sbin/runc");
        p.is_file().then_some(p)
    })
}
