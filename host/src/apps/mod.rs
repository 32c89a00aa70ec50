//! The app table: every deployed app, its revisions and their traffic
//! shares, and the operations that change them (deploy, canary, traffic,
//! remove, garbage collection). The front door reads an immutable
//! [`RouteTable`] that this module publishes whole after each change.
//!
//! # Layout
//! - this file: [`Apps`], [`Deployed`], [`AppStatus`];
//! - `gc`: [`Apps::collect_garbage`] ([`Collected`]) and what an
//!   interrupted pull or unpack left behind;
//! - [`routes`]: [`RouteTable`] and [`RoutedApp`] (weighted pick of a
//!   revision);
//! - [`build`]: building a revision: pull, unpack or compile, start its
//!   initial instances;
//! - [`ops`]: the operations the admin API and the console share (typed
//!   requests, [`OpError`]), and the read views;
//! - [`view`]: the views: [`AppView`], [`AppList`], [`KeyvalueView`].
//!
//! The table itself is a `BTreeMap` under a mutex, not a `DashMap`: every
//! change (a deploy checks route conflicts across all apps, then persists,
//! then publishes routes) needs the whole table at once, and changes are
//! rare; the request path never touches it, only the published
//! [`RouteTable`] behind an atomic swap.

pub mod batch;
pub mod build;
pub mod error;
mod gc;
pub mod ops;
pub mod retry;
pub mod routes;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

pub use error::{DeployError, DeployFailure, RouteConflict};
pub use gc::Collected;
pub use ops::{OpError, Put, PutRequest, ScaleRequest, TrafficRequest};
pub use retry::FailedApp;
pub use routes::{RouteTable, RoutedApp};
pub use view::{AppList, AppState, AppView, KeyvalueView};

use crate::backend::Kind;
use crate::config::{AppSpec, Config};
use crate::container::{BridgeOptions, Shim};
use crate::metrics::{self, Metrics};
use crate::oci::{Puller, RegistryClient};
use crate::revision::{Revision, RevisionStatus, Tasks};
use crate::secrets::{SecretError, SecretStore};
use crate::state::{Origin, Record, StateError, StateStore, StoredApp};
use crate::wasm::{EngineOptions, WasmRuntime};

/// What the app table needs from the host.
#[derive(Debug, Clone)]
pub struct AppsOptions {
    /// Where compiled artifacts, logs, blobs, rootfs and state live.
    pub data_dir: PathBuf,
    /// Engine-wide Wasm settings.
    pub engine: EngineOptions,
    /// How `image = "REF"` apps are pulled.
    pub registry: RegistryClient,
    /// Show pull progress bars (only ever drawn on a terminal).
    pub progress: bool,
    /// The runc binary (default: `runc` on `PATH`, then `/usr/sbin/runc`).
    pub runc: Option<PathBuf>,
    /// The secrets' key file (default: `<data-dir>/secrets.key`).
    pub secrets_key: Option<PathBuf>,
    /// The isolated container network (bridge, subnet).
    pub bridge: BridgeOptions,
    /// Caps on unpacking one container image.
    pub unpack: crate::container::rootfs::UnpackLimits,
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
    /// sha256 of the component (or image manifest) that serves.
    pub sha256: String,
    /// For a component, the wasi:http world it exports (`wasi:http@0.2` or
    /// `wasi:http@0.3`), told at deploy.
    pub world: Option<String>,
    /// Bytes pulled from a registry for this deploy (0 when all was local).
    pub pulled_bytes: u64,
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

impl AppStatus {
    /// The gauges `metrics` reports for this app.
    pub fn snapshot(&self) -> metrics::AppSnapshot {
        metrics::AppSnapshot {
            deploy_failed: false,
            name: self.deployed.name.clone(),
            revisions: self
                .revisions
                .iter()
                .map(|(r, percent)| metrics::RevisionSnapshot {
                    id: r.id.clone(),
                    kind: r.kind.as_str(),
                    traffic_percent: *percent,
                    ready: r.ready,
                    starting: r.starting,
                    desired: r.desired,
                    queued: r.queued,
                    in_flight: r.in_flight,
                    stock: r.stock.as_deref().map(|s| metrics::StockSnapshot {
                        hits: s.hits,
                        misses: s.misses,
                        stocked: s.stocked,
                        live: s.live,
                    }),
                    outbound: r.outbound.as_deref().map(|o| metrics::OutboundSnapshot {
                        opened: o.opened,
                        reused: o.reused,
                        refused: o.refused,
                        idle: o.idle,
                    }),
                })
                .collect(),
        }
    }
}

#[derive(Debug)]
struct AppEntry {
    routed: Arc<RoutedApp>,
    routes: Vec<String>,
    deployed: Deployed,
}

/// Deployed apps by name.
type AppTable = BTreeMap<String, AppEntry>;

/// Every deployed app of this host.
#[derive(Debug)]
pub struct Apps {
    options: AppsOptions,
    domain: String,
    runtime: Arc<WasmRuntime>,
    puller: Puller,
    /// The runc shim, or why containers are unavailable on this host.
    shim: Result<Arc<Shim>, String>,
    /// The deployed apps as persisted in the data dir.
    state: StateStore,
    /// Serialises read-modify-write changes of one app ([`ops`]).
    locks: crate::state::AppLocks,
    /// The values apps get from their `secrets`.
    secrets: Arc<SecretStore>,
    /// `wasi:config` values set through the API.
    live_config: Arc<crate::wasm::config::LiveConfig>,
    metrics: Arc<Metrics>,
    table: Mutex<AppTable>,
    /// What the front door routes by; replaced whole after each change.
    routes: ArcSwap<RouteTable>,
    revisions: AtomicU64,
    /// Background stops of retired revisions: [`Apps::stop_all`] waits
    /// for them.
    retiring: Tasks,
    /// The host's one shutdown signal, cancelled when it begins to stop:
    /// long-lived streams end, image unpacks under way stop, retries end,
    /// the listeners' connections drain.
    shutdown: CancellationToken,
    /// Image unpacks under way (on blocking threads, which outlive a deploy
    /// that is cancelled): [`Apps::stop_all`] waits for them.
    unpacking: Arc<AtomicUsize>,
    /// Apps that could not be deployed at start, retried in the background.
    failed: Mutex<BTreeMap<String, retry::Failed>>,
    /// Each app's one open log, shared by its revisions and its followers
    /// (so a follower sees every revision's lines, and rotation has one
    /// owner).
    logs: Mutex<HashMap<String, std::sync::Weak<crate::logs::AppLog>>>,
}

/// A dropped host is a stopped one: whatever follows its shutdown token
/// (log followers, retries) ends.
impl Drop for Apps {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Apps {
    /// Opens the data directory (engine, blob store, state, runc shim) with
    /// no app deployed yet; [`Apps::restore`] deploys them.
    ///
    /// # Errors
    /// A data directory, engine or state file that cannot be used.
    pub async fn open(
        domain: &str,
        options: AppsOptions,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        crate::files::create_private_dir(&options.data_dir).with_context(|| {
            format!(
                "cannot create data directory `{}`",
                options.data_dir.display()
            )
        })?;
        // Key-value stores whose URL is a secret: resolved before the
        // engine starts (the value never leaves the engine's store).
        let mut engine = options.engine.clone();
        let kv_secrets = SecretStore::open(&options.data_dir, options.secrets_key.as_deref())?;
        for (name, store) in &mut engine.keyvalue_stores {
            if let berth_wasm::keyvalue::StoreConfig::RedisFromSecret { secret } = store {
                let url = kv_secrets
                    .get(secret)
                    .with_context(|| format!("keyvalue.stores.{name}.url_secret"))?;
                *store = berth_wasm::keyvalue::StoreConfig::Redis {
                    url: url.expose().to_string(),
                };
            }
        }
        let runtime = Arc::new(
            WasmRuntime::new(&options.data_dir, &engine)
                .context("cannot set up the Wasm engine")?,
        );
        let store =
            crate::oci::BlobStore::open(&options.data_dir).context("cannot open the blob store")?;
        gc::remove_leftovers(&store, &options.data_dir.join("rootfs"));
        let puller = Puller::new(options.registry.clone(), store).with_progress(options.progress);
        let state = StateStore::open(&options.data_dir)?;
        let secrets = Arc::new(SecretStore::open(
            &options.data_dir,
            options.secrets_key.as_deref(),
        )?);
        let live_config = Arc::new(crate::wasm::config::LiveConfig::open(&options.data_dir)?);
        let shim = build::open_shim(&options).await;
        Ok(Self {
            live_config,
            domain: domain.to_string(),
            runtime,
            puller,
            shim,
            revisions: AtomicU64::new(state.last_revision()),
            state,
            locks: crate::state::AppLocks::default(),
            secrets,
            metrics,
            table: Mutex::new(BTreeMap::new()),
            routes: ArcSwap::from_pointee(RouteTable::new(domain, Vec::new())),
            retiring: Tasks::default(),
            shutdown: CancellationToken::new(),
            unpacking: Arc::new(AtomicUsize::new(0)),
            failed: Mutex::new(BTreeMap::new()),
            logs: Mutex::default(),
            options,
        })
    }

    /// Deploys the config file's apps, then the apps of the state made
    /// through the API; forgets the config file's former apps (see
    /// [`crate::state`] for how they merge). An app that cannot be deployed
    /// is listed as failed and retried in the background ([`retry`]), while
    /// the others serve; with `strict`, the first such app of the config file
    /// fails the start instead.
    ///
    /// # Errors
    /// A state file that cannot be written, or (with `strict`) the first app
    /// of the config file that cannot be deployed, named, with the reason.
    pub async fn restore(self: &Arc<Self>, config: &Config, strict: bool) -> anyhow::Result<()> {
        let plan = self.state.plan(config);
        self.state.forget_many(&plan.forget)?;
        for name in &plan.forget {
            tracing::info!(app = %name, "forgotten: no longer in the config file");
        }
        // One batch for the file's apps, then one for the API's (see
        // [`batch`]); with `strict`, the first of the file's apps that
        // failed (in name order) fails the start before the second.
        let outcomes = self.deploy_batch(&plan.config).await;
        let mut failed = Vec::new();
        for (app, outcome) in plan.config.into_iter().zip(outcomes) {
            if let Err(e) = outcome {
                if strict {
                    return Err(e.into());
                }
                failed.push((app, e));
            }
        }
        let outcomes = self.deploy_batch(&plan.restore).await;
        for (app, outcome) in plan.restore.into_iter().zip(outcomes) {
            if let Err(e) = outcome {
                failed.push((app, e));
            }
        }
        for (app, e) in failed {
            self.fail(&app.name, &app.spec, app.record, e.to_string());
        }
        let file = self.state.path().display();
        for app in plan.unrestorable {
            tracing::error!(app = %app.name, "cannot restore the app from {file}: {}", app.reason);
            self.state.set_restore_error(&app.name, app.reason);
        }
        Ok(())
    }

    /// The routing table the front door uses now.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.load_full()
    }

    /// The app that answers `host` and `path` now (one lock-free read of
    /// the route table; see [`RouteTable::route`]).
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<Arc<RoutedApp>> {
        self.routes.load().route(host, path).cloned()
    }

    /// The Wasm runtime (for its counters).
    pub fn runtime(&self) -> &Arc<WasmRuntime> {
        &self.runtime
    }

    /// The persisted apps.
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// The secrets apps may name.
    pub fn secrets(&self) -> &Arc<SecretStore> {
        &self.secrets
    }

    /// The `wasi:config` values set through the API.
    pub fn live_config(&self) -> &Arc<crate::wasm::config::LiveConfig> {
        &self.live_config
    }

    /// The apps (running or remembered) whose settings name secret `name`.
    pub fn secret_users(&self, name: &str) -> Vec<String> {
        self.state
            .apps()
            .into_iter()
            .filter(|(_, app)| app.config.secrets.values().any(|s| s == name))
            .map(|(app, _)| app)
            .collect()
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.options.data_dir
    }

    /// Deploys (or replaces) app `name` as a new revision: pulls its image
    /// if it has one, compiles or maps its component, starts its initial
    /// instances, then switches routing to it; the previous revision drains
    /// its in-flight requests and stops. On error nothing changes and every
    /// other app keeps serving.
    ///
    /// # Errors
    /// Why the app cannot be deployed, naming it.
    pub async fn deploy(&self, name: &str, spec: &AppSpec) -> Result<Deployed, DeployError> {
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
    ) -> Result<Deployed, DeployError> {
        self.deploy_with_traffic(name, spec, record, 100).await
    }

    /// Deploys a new revision of app `name` that receives `percent` of new
    /// requests (a canary); the revision that served most traffic so far keeps
    /// the rest, and any other revision is retired. `percent = 100` is a
    /// plain deploy. The split lasts until [`Apps::set_traffic`] or the next
    /// deploy; a restart comes back on the latest revision alone.
    ///
    /// Steps: check, number, build, commit (persist and route), retire the
    /// revisions that no longer serve. A failure after numbering gives the
    /// number back.
    ///
    /// # Errors
    /// As [`Apps::deploy_recorded`]; also a percentage above 100.
    pub async fn deploy_with_traffic(
        &self,
        name: &str,
        spec: &AppSpec,
        record: Record,
        percent: u32,
    ) -> Result<Deployed, DeployError> {
        let fail = |failure: DeployFailure| DeployError::new(name, failure);
        if percent > 100 {
            return Err(fail(DeployFailure::Traffic(percent)));
        }
        self.check_deploy(name, spec).map_err(fail)?;
        self.check_routes(name, spec)
            .map_err(|conflict| fail(conflict.into()))?;
        let revision_id = self.revision_id(name, &record);
        let (revision, info) = match self.build_revision(name, &revision_id, spec, None).await {
            Ok(built) => built,
            Err(failure) => {
                self.give_back_revision_id(&revision_id, &record);
                return Err(fail(failure));
            }
        };
        let retired = match self.commit(name, spec, &record, &revision, &info, percent) {
            Ok(retired) => retired,
            Err(e) => {
                revision.shutdown().await;
                self.give_back_revision_id(&revision_id, &record);
                return Err(fail(e.into()));
            }
        };
        self.retire(retired);
        // Deployed: whatever retry waited for this name is moot.
        self.forget_failed(name);
        tracing::info!(app = name, revision = %revision_id, "deployed");
        Ok(info)
    }

    /// Persists a deploy of `name` (built as `revision`, which `info`
    /// describes), then routes `percent` of its requests to it, under the
    /// app table's lock: the state file and the running apps agree on the
    /// last deploy of each app. With a canary share the busiest old
    /// revision keeps the rest. Returns the revisions that no longer serve.
    fn commit(
        &self,
        name: &str,
        spec: &AppSpec,
        record: &Record,
        revision: &Arc<Revision>,
        info: &Deployed,
        percent: u32,
    ) -> Result<Vec<Arc<Revision>>, StateError> {
        let mut table = self.lock_table();
        let stored = StoredApp::new(
            record,
            info.pinned.clone(),
            info.revision.clone(),
            info.sha256.clone(),
            info.kind,
        );
        self.state.record(name, stored)?;
        let keep = (percent < 100)
            .then(|| table.get(name))
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
        let old = table.insert(
            name.to_string(),
            AppEntry {
                routed: Arc::new(routed),
                routes: spec.routes.clone(),
                deployed: info.clone(),
            },
        );
        self.publish(&table);
        let retired = old.map(|old| {
            old.routed
                .traffic
                .iter()
                .filter(|(r, _)| !keep.as_ref().is_some_and(|k| Arc::ptr_eq(k, r)))
                .map(|(r, _)| r.clone())
                .collect()
        });
        Ok(retired.unwrap_or_default())
    }

    /// Refuses a deploy of `name` whose name, settings or secrets are wrong.
    fn check_deploy(&self, name: &str, spec: &AppSpec) -> Result<(), DeployFailure> {
        crate::config::validate_label(name).map_err(DeployFailure::Name)?;
        spec.validate().map_err(|e| DeployFailure::Invalid {
            key: e.key,
            reason: e.reason,
        })?;
        for (var, secret) in &spec.secrets {
            if !self.secrets.contains(secret) {
                return Err(DeployFailure::Secret {
                    var: Some(var.clone()),
                    error: SecretError::Missing(secret.clone()),
                });
            }
        }
        Ok(())
    }

    /// The revision id of a deploy of `name`: the one `record` keeps, else
    /// the next number.
    fn revision_id(&self, name: &str, record: &Record) -> String {
        match &record.revision {
            Some(id) => id.clone(),
            None => {
                let number = self.revisions.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{name}-{number:05}")
            }
        }
    }

    /// Gives back the number of a revision whose deploy failed, so that
    /// revision numbers count revisions that existed: only while no later
    /// deploy has taken one (else it stays a gap). A number that `record`
    /// carried (a restore) is not this host's to give back.
    pub(super) fn give_back_revision_id(&self, id: &str, record: &Record) {
        if record.revision.is_some() {
            return;
        }
        if let Some(n) = crate::state::revision_number(id)
            && n > 0
        {
            let _ = self
                .revisions
                .compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Refuses a deploy of `name` whose routes another app serves.
    fn check_routes(&self, name: &str, spec: &AppSpec) -> Result<(), RouteConflict> {
        route_conflict(&self.lock_table(), &HashMap::new(), name, &spec.routes)
    }

    /// Removes app `name`; its in-flight requests finish, then its instances
    /// stop. Returns whether the app existed.
    pub fn remove(&self, name: &str) -> bool {
        let was_failed = self.forget_failed(name);
        let old = {
            let mut table = self.lock_table();
            let old = table.remove(name);
            if old.is_some()
                && let Err(e) = self.state.forget(name)
            {
                tracing::error!(
                    app = name,
                    "removed, but it will come back at the next start: {e}"
                );
            }
            self.publish(&table);
            old
        };
        match old {
            Some(entry) => {
                self.retire(entry.routed.revisions().cloned().collect());
                true
            }
            None => was_failed,
        }
    }

    /// The revisions serving app `name`.
    pub fn revisions(&self, name: &str) -> Vec<Arc<Revision>> {
        self.lock_table()
            .get(name)
            .map(|e| e.routed.revisions().cloned().collect())
            .unwrap_or_default()
    }

    /// The deployed apps with their revision status.
    pub fn status(&self) -> Vec<AppStatus> {
        self.lock_table()
            .values()
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

    /// The gauges of every app, for `metrics` (failed apps with no
    /// revision, marked as failing to deploy).
    pub fn snapshots(&self) -> Vec<metrics::AppSnapshot> {
        let mut all: Vec<_> = self.status().iter().map(AppStatus::snapshot).collect();
        all.extend(self.failed().into_iter().map(|f| metrics::AppSnapshot {
            name: f.name,
            revisions: Vec::new(),
            deploy_failed: true,
        }));
        all
    }

    /// The open log of app `name` (opened, creating its file, when no
    /// revision or follower holds it).
    ///
    /// # Errors
    /// The log file cannot be opened.
    pub fn app_log(&self, name: &str) -> anyhow::Result<Arc<crate::logs::AppLog>> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = logs.get(name).and_then(std::sync::Weak::upgrade) {
            return Ok(log);
        }
        logs.retain(|_, w| w.strong_count() > 0);
        let log = Arc::new(
            crate::logs::AppLog::open(&self.options.data_dir.join("logs"), name)
                .with_context(|| format!("cannot open the log of app `{name}`"))?,
        );
        logs.insert(name.to_owned(), Arc::downgrade(&log));
        Ok(log)
    }

    /// Marks the host as shutting down (cancels
    /// [`shutdown_token`](Self::shutdown_token)): followers of logs stop
    /// following so that connections can drain.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Whether [`Apps::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// The host's one shutdown signal, cancelled by
    /// [`begin_shutdown`](Self::begin_shutdown) (and so by
    /// [`stop_all`](Self::stop_all)).
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Stops every app's instances (used at shutdown), and waits for the
    /// revisions retired by a redeploy or removal to finish stopping, so a
    /// host that exits right after a redeploy leaves no instance behind.
    pub async fn stop_all(&self) {
        self.begin_shutdown();
        self.lock_failed_all_clear();
        self.wait_for_unpacks().await;
        let entries: Vec<_> = {
            let mut table = self.lock_table();
            let all = std::mem::take(&mut *table);
            self.publish(&table);
            all.into_values().collect()
        };
        let stops = entries
            .iter()
            .flat_map(|e| e.routed.revisions().cloned().collect::<Vec<_>>());
        futures::future::join_all(stops.map(|r| async move { r.shutdown().await })).await;
        self.retiring.wait().await;
        // Every instance is gone: what the shim added to the host goes too.
        if let Ok(shim) = &self.shim {
            shim.close().await;
        }
    }

    /// Waits (bounded) until the unpacks under way have seen the shutdown
    /// flag and removed their temporary trees.
    async fn wait_for_unpacks(&self) {
        let limit = Duration::from_secs(30);
        let start = std::time::Instant::now();
        while self.unpacking.load(Ordering::Acquire) > 0 {
            if start.elapsed() > limit {
                tracing::warn!(?limit, "image unpacks did not stop in time");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets old revisions finish their requests, then stops their instances,
    /// in the background; [`Apps::stop_all`] waits for these too.
    fn retire(&self, revisions: Vec<Arc<Revision>>) {
        if revisions.is_empty() {
            return;
        }
        self.retiring.spawn(async move {
            for revision in revisions {
                revision.shutdown().await;
            }
        });
    }

    fn lock_failed_all_clear(&self) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn publish(&self, table: &AppTable) {
        let entries = table
            .values()
            .map(|e| (e.routed.clone(), e.routes.clone()))
            .collect();
        self.routes
            .store(Arc::new(RouteTable::new(&self.domain, entries)));
    }

    fn lock_table(&self) -> std::sync::MutexGuard<'_, AppTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one route-conflict check: the first of `routes` (asked for by app
/// `name`) that another app claims, one earlier in a batch (`claimed`,
/// route to app) first, else a deployed one.
fn route_conflict(
    table: &AppTable,
    claimed: &HashMap<&str, &str>,
    name: &str,
    routes: &[String],
) -> Result<(), RouteConflict> {
    for route in routes {
        let owner = claimed.get(route.as_str()).map(|o| (*o).to_string());
        let owner = owner.or_else(|| {
            table
                .iter()
                .find(|(other, entry)| *other != name && entry.routes.contains(route))
                .map(|(other, _)| other.clone())
        });
        if let Some(owner) = owner {
            return Err(RouteConflict {
                route: route.clone(),
                owner,
            });
        }
    }
    Ok(())
}
