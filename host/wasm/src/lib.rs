//! berth's Wasm engine: wasmtime components, compiled once, a fresh
//! instance per request. The berth host and the containerd shim
//! (`containerd-shim-berth-v1`) both run it; it knows nothing of either's
//! front door, API, autoscaler or containers.
//!
//! # Layout
//! - [`WasmRuntime`]: the single [`Engine`] (pooling allocator, copy-on-write
//!   memory images, epoch interruption), its [`Linker`] with WASI and
//!   wasi:http, the [`cache::CompileCache`], and the one epoch ticker thread.
//!   [`AppSettings`]: what an app's guests get (env, limits, allow-list);
//!   [`UsageMeter`]: where each request's CPU and memory use is reported.
//! - [`app`]: [`WasmApp`], one app's context (env, limits, log, outbound
//!   policy, stock) around a compiled component; a request gets a `Store`
//!   and instance of its own, limits and captured stdio, or with
//!   [`reuse`] one that served others before it (`serial`) or serves
//!   others beside it (`concurrent`: `concurrent`, [`tasks`]).
//! - [`resident`]: compiled components ([`ProxyPre`]) by sha256, shared by
//!   every app of the same code, kept at zero within a budget (LRU).
//! - [`stock`]: instances made ahead of their requests on the
//!   `berth-stock` thread.
//! - [`guest`]: what a request's store holds (WASI, wasi:http, limiter,
//!   deadline) and [`GuestError`], what ended a request without a response.
//! - [`outbound`]: the outbound HTTP allow-list, caps and per-app connection
//!   pool; [`pattern`]: its entries
//!   ([`HostPattern`]).
//! - [`cache`]: the on-disk compile cache.
//! - [`standalone`]: entry points for the containerd shim (a component from
//!   bytes, proxy or command).
//! - Leaves shared with the host: [`limits`] ([`Limits`], their ranges and
//!   parsers), [`setting`] ([`InvalidSetting`], the one error of every
//!   settings check), [`request`] ([`RequestInfo`]), [`logs`] (guest output: an
//!   app's log file, or a task's stdout/stderr), [`files`] (atomic writes),
//!   [`trace`] ([`Trace`]: a request's place in an OpenTelemetry trace).
//!
//! # Limits
//! Memory: each linear memory of a request's instance may grow to the app's
//! `limits.memory`; growing beyond traps. Time: the ticker bumps the engine's
//! epoch every [`EPOCH_TICK`]; at each tick a running guest yields to the
//! async runtime (so a spinning guest cannot hog a worker thread) and traps
//! once its deadline has passed. A guest parked in a host call (a sleep, an
//! outbound request) is stopped by the same deadline on the tokio side.

pub mod app;
pub mod cache;
mod concurrent;
mod engine;
pub mod files;
pub mod guest;
pub mod keyvalue;
pub mod limits;
pub mod logs;
pub mod networks;
pub mod outbound;
pub mod own_addrs;
pub mod pattern;
pub mod request;
pub mod resident;
pub mod reuse;
pub mod setting;
pub mod standalone;
pub mod stock;
pub mod tasks;
pub mod trace;
mod world;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::handler::ProxyPre;

pub use app::{ColdStart, DrivenBody, GuestBody, WasmApp};
use engine::engine_config;
pub use engine::{LINEAR_MEMORY_KEEP_RESIDENT, LINEAR_MEMORY_MEMSET, SlotReset};
pub use guest::{GuestError, GuestState};
pub use limits::Limits;
pub use pattern::HostPattern;
pub use request::{RequestInfo, TIMING_REQUEST_HEADER};
pub use setting::InvalidSetting;
pub use trace::Trace;
pub use world::World;
pub(crate) use world::world_of;

use cache::{CompileCache, LoadedFrom};
use logs::AppLog;
use outbound::OutboundPolicy;

/// How often the engine's epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// What an app's guests get: environment, per-request limits and the
/// outbound allow-list (the part of an app's settings the engine uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSettings {
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// `allowed_outbound_hosts` entries ([`HostPattern`]s).
    pub allowed_outbound_hosts: Vec<String>,
    /// `allowed_networks` entries ([`networks::AllowedNetworks`]).
    pub allowed_networks: Vec<String>,
    /// Per-request limits.
    pub limits: Limits,
    /// `[instances]`: how requests share instances; `None` = the world's
    /// default ([`reuse::InstanceReuse::NONE`] for WASIp2,
    /// [`reuse::InstanceReuse::SERIAL`] for WASIp3).
    pub reuse: Option<reuse::InstanceReuse>,
    /// `keyvalue`: the buckets the app's guests may open
    /// ([`keyvalue`]); empty = none.
    pub keyvalue: Vec<String>,
    /// `[keyvalue_limits]`: the app's key-value quotas.
    pub keyvalue_limits: keyvalue::KvQuota,
    /// The store every one of the app's buckets lives in, in place of the
    /// host's (the shim's `BERTH_KEYVALUE_REDIS_URL`); `None`: the host's
    /// stores ([`keyvalue::KvStores`]).
    pub keyvalue_store: Option<keyvalue::StoreConfig>,
}

impl AppSettings {
    /// Checks the limits' ranges, every allow-list entry and every listed
    /// network.
    ///
    /// # Errors
    /// The key (`limits.memory`, `allowed_outbound_hosts`,
    /// `allowed_networks`, …) and the reason.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.limits.validate()?;
        if let Some(reuse) = &self.reuse {
            reuse.validate()?;
        }
        for host in &self.allowed_outbound_hosts {
            HostPattern::parse(host)
                .map_err(|r| InvalidSetting::new("allowed_outbound_hosts", r))?;
        }
        networks::AllowedNetworks::parse(&self.allowed_networks)
            .map_err(|r| InvalidSetting::new("allowed_networks", r))?;
        keyvalue::validate_buckets(&self.keyvalue)
            .map_err(|r| InvalidSetting::new("keyvalue", r))?;
        self.keyvalue_limits.validate()?;
        Ok(())
    }
}

/// Where the engine reports what each request's guest used (the host's
/// metrics; the shim reports nowhere).
pub trait UsageMeter: Send + Sync {
    /// `app`'s request used `cpu` (time its guest task was polled) and
    /// `memory_gb_seconds` (its linear memory × its wall time).
    fn record_usage(&self, app: &str, cpu: Duration, memory_gb_seconds: f64);
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Instances that may exist at once across all apps (pool size).
    pub max_instances: u32,
    /// Instances one app may have at once (its share of the pool), so no
    /// app takes every slot; `None` = half the pool.
    pub max_instances_per_app: Option<u32>,
    /// Linear memory all guests may hold together; `None` = half the
    /// machine's memory. A guest growing past it traps, answered `503`.
    pub memory_budget: Option<u64>,
    /// Mapped bytes of compiled components kept in memory, idle ones
    /// included (apps at zero); `None` = [`resident::DEFAULT_RESIDENT_BUDGET`].
    pub resident_budget: Option<u64>,
    /// Instances stocked ahead per instance the autoscaler wants; `None` =
    /// [`stock::DEFAULT_STOCK_PER_INSTANCE`], 0 = no stock.
    pub stock_per_instance: Option<u32>,
    /// Outbound connections all guests may hold at once; `None` =
    /// [`outbound::caps::default_host_connections`] (a quarter of the
    /// open-files limit).
    pub max_outbound_connections: Option<u32>,
    /// `[keyvalue.stores.NAME]`: stores other than the embedded one; a
    /// bucket of the same name lives there.
    pub keyvalue_stores: std::collections::BTreeMap<String, keyvalue::StoreConfig>,
    /// How a pool slot is reset for its next instance.
    pub slot_reset: SlotReset,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            max_instances_per_app: None,
            memory_budget: None,
            resident_budget: None,
            stock_per_instance: None,
            max_outbound_connections: None,
            keyvalue_stores: std::collections::BTreeMap::new(),
            slot_reset: SlotReset::default(),
        }
    }
}

impl EngineOptions {
    /// One app's share of the pool.
    pub fn per_app(&self) -> u32 {
        self.max_instances_per_app
            .unwrap_or(self.max_instances / 2)
            .clamp(1, self.max_instances.max(1))
    }

    /// The guests' memory budget in bytes.
    pub fn budget(&self) -> u64 {
        self.memory_budget.unwrap_or_else(|| physical_memory() / 2)
    }
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), or 4 GiB when it
/// cannot be read.
fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib * 1024)
}

/// Counters of what the runtime did, for tests, logs and metrics.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    compiled: AtomicU64,
    cache_hits: AtomicU64,
    shared: AtomicU64,
}

impl RuntimeStats {
    /// Components compiled by this runtime.
    pub fn compiled(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }
    /// Components loaded from the on-disk cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }
    /// Loads that found the compiled component already in memory (another
    /// app or revision of the same sha256, or one kept at zero).
    pub fn shared(&self) -> u64 {
        self.shared.load(Ordering::Relaxed)
    }
}

/// Why a component cannot be deployed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not Wasm at all.
    #[error("`{0}` is not a WebAssembly binary")]
    NotWasm(String),
    /// A core module where a component is needed.
    #[error(
        "`{0}` is a core Wasm module, not a component; build for wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    CoreModule(String),
    /// A component that exports neither wasi:http handler.
    #[error(
        "`{path}` exports neither wasi:http/incoming-handler@0.2 nor wasi:http/handler@0.3 (not a wasi:http component): {reason}"
    )]
    NotHttp {
        /// The file.
        path: String,
        /// What wasmtime said.
        reason: String,
    },
    /// A component that needs imports berth does not provide.
    #[error("`{path}` cannot be instantiated by berth: {reason}")]
    Link {
        /// The file.
        path: String,
        /// What wasmtime said.
        reason: String,
    },
    /// `[instances]` settings the component cannot have.
    #[error("`{path}`: {reason}")]
    Reuse {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file no longer has the bytes the revision was deployed with.
    #[error("`{path}` changed since it was deployed: sha256 {found}, deployed {deployed}")]
    Changed {
        /// The file.
        path: String,
        /// The sha256 the revision was deployed with.
        deployed: String,
        /// The sha256 of the file now.
        found: String,
    },
    /// Compilation or the compile cache failed.
    #[error("cannot compile `{path}`: {reason}")]
    Compile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// What the `wasi:keyvalue` and `wasi:config` bindings see of a store.
fn kv_view(s: &mut GuestState) -> keyvalue::KvView<'_> {
    keyvalue::KvView::new(&mut s.table, &mut s.kv)
}

/// Bumps the engine epoch from one thread until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("berth-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The Wasm side of berth: one engine for every app.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: CompileCache,
    stats: Arc<RuntimeStats>,
    max_instances: u32,
    per_app: u32,
    budget: Arc<guest::MemoryBudget>,
    resident: Arc<resident::Resident>,
    stocker: Arc<stock::Stocker>,
    reset: SlotReset,
    outbound: Arc<outbound::caps::HostOutbound>,
    kv: Arc<keyvalue::KvStores>,
    _ticker: EpochTicker,
}

impl fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("cache", &self.cache)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl WasmRuntime {
    /// Builds the engine and linker; compiled artifacts go under
    /// `data_dir/compiled`.
    ///
    /// # Errors
    /// When the engine cannot be configured (e.g. not enough address space for
    /// the pool) or the cache directory cannot be created.
    pub fn new(data_dir: &Path, opts: &EngineOptions) -> anyhow::Result<Self> {
        let n = opts.max_instances.max(1);
        // With PAGEMAP_SCAN when asked for and the kernel has it, or else
        // the plain reset.
        let (engine, reset) = match opts.slot_reset {
            SlotReset::DirtyPages => match Engine::new(&engine_config(n, SlotReset::DirtyPages)) {
                Ok(engine) => (engine, SlotReset::DirtyPages),
                Err(e) => {
                    tracing::info!(
                        "PAGEMAP_SCAN unavailable ({e:#}): Wasm pool slots are reset with \
                         memset and madvise"
                    );
                    let config = engine_config(n, SlotReset::Madvise);
                    (
                        Engine::new(&config).map_err(anyhow::Error::from)?,
                        SlotReset::Madvise,
                    )
                }
            },
            SlotReset::Madvise => (
                Engine::new(&engine_config(n, SlotReset::Madvise)).map_err(anyhow::Error::from)?,
                SlotReset::Madvise,
            ),
        };

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        keyvalue::add_to_linker(&mut linker, kv_view).map_err(anyhow::Error::from)?;
        let kv = Arc::new(keyvalue::KvStores::new(
            data_dir.join("keyvalue").join("embedded.redb"),
            &opts.keyvalue_stores,
        )?);

        let cache = CompileCache::new(data_dir.join("compiled"), &engine)?;
        let ticker = EpochTicker::start(engine.clone())?;
        let stocker = stock::Stocker::start(
            n,
            opts.stock_per_instance
                .unwrap_or(stock::DEFAULT_STOCK_PER_INSTANCE),
        )?;
        Ok(Self {
            engine,
            linker,
            cache,
            stats: Arc::default(),
            max_instances: n,
            per_app: opts.per_app(),
            budget: Arc::new(guest::MemoryBudget::new(opts.budget())),
            resident: Arc::new(resident::Resident::new(
                opts.resident_budget
                    .unwrap_or(resident::DEFAULT_RESIDENT_BUDGET),
            )),
            stocker,
            reset,
            outbound: outbound::caps::HostOutbound::new(
                opts.max_outbound_connections
                    .unwrap_or_else(outbound::caps::default_host_connections),
            ),
            kv,
            _ticker: ticker,
        })
    }

    /// How the engine resets a pool slot for its next instance.
    pub fn slot_reset(&self) -> SlotReset {
        self.reset
    }

    /// Linear memory all guests hold now, and the budget.
    pub fn memory(&self) -> (u64, u64) {
        (self.budget.in_use(), self.budget.budget)
    }

    /// What this runtime compiled and loaded so far.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// The compiled components kept in memory.
    pub fn resident(&self) -> &resident::Resident {
        &self.resident
    }

    /// The stock keeper (its engine-wide count and cap, the per-app size).
    pub fn stocker(&self) -> &stock::Stocker {
        &self.stocker
    }

    /// The outbound connections guests hold now, and the host's budget.
    pub fn outbound_connections(&self) -> (u32, u32) {
        (self.outbound.in_use(), self.outbound.limit())
    }

    /// An app's outbound caps, within the host's budget.
    fn outbound_caps(&self, limits: &Limits) -> outbound::caps::OutboundCaps {
        outbound::caps::OutboundCaps::new(
            self.outbound.clone(),
            limits.outbound_connections,
            limits.outbound_connections_per_request,
        )
    }

    /// The key-value stores (the embedded one and the configured ones).
    pub fn keyvalue(&self) -> &Arc<keyvalue::KvStores> {
        &self.kv
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads the component at `path` for app `name`: checks it is a wasi:http
    /// component, compiles it or maps its cached artifact, and pre-links it.
    /// Its guests see `settings.env`, then `extra_env` (the app's secrets),
    /// then `BERTH_APP`.
    ///
    /// # Errors
    /// [`LoadError`] saying what is wrong with the file.
    pub fn load_app(
        &self,
        name: &str,
        path: &Path,
        settings: impl Into<AppSettings>,
        extra_env: &[(String, String)],
        log: Arc<AppLog>,
    ) -> Result<WasmApp, LoadError> {
        self.load_app_known(name, path, None, settings, extra_env, log)
    }

    /// [`WasmRuntime::load_app`] for a component whose sha256 the caller
    /// knows (a revision loading it again after a scale to zero): a resident
    /// component, or its on-disk artifact, is used without reading or
    /// hashing the `.wasm`; a file that changed since is refused.
    ///
    /// # Errors
    /// [`LoadError`] saying what is wrong with the file.
    pub fn load_app_known(
        &self,
        name: &str,
        path: &Path,
        sha256: Option<&str>,
        settings: impl Into<AppSettings>,
        extra_env: &[(String, String)],
        log: Arc<AppLog>,
    ) -> Result<WasmApp, LoadError> {
        let shown = path.display().to_string();
        let compiled = self.compiled(name, path, sha256)?;
        self.app(name, compiled, settings.into(), extra_env, log, &shown)
    }

    /// An app's context around `compiled`: its guests see `settings.env`,
    /// then `extra_env`, then `BERTH_APP`.
    pub(crate) fn app(
        &self,
        name: &str,
        compiled: Arc<resident::Compiled>,
        settings: AppSettings,
        extra_env: &[(String, String)],
        log: Arc<AppLog>,
        shown: &str,
    ) -> Result<WasmApp, LoadError> {
        let world = compiled.world();
        let reuse = match (settings.reuse, world) {
            (Some(r), World::P2) if r.mode != reuse::ReuseMode::None => {
                return Err(LoadError::Reuse {
                    path: shown.into(),
                    reason: format!(
                        "instances.reuse = \"{}\" needs a wasi:http@0.3 component; this one exports wasi:http@0.2 and gets a fresh instance per request",
                        r.mode.as_str()
                    ),
                });
            }
            (Some(r), _) => r,
            (None, World::P2) => reuse::InstanceReuse::NONE,
            (None, World::P3) => reuse::InstanceReuse::SERIAL,
        };
        let mut env = settings.env;
        env.extend(extra_env.iter().cloned());
        env.push(("BERTH_APP".into(), name.into()));
        let caps = self.outbound_caps(&settings.limits);
        let outbound = OutboundPolicy::new(
            &settings.allowed_outbound_hosts,
            &settings.allowed_networks,
            caps,
            settings.limits.outbound_pool(),
        )
        .map_err(|e| LoadError::Link {
            path: shown.into(),
            reason: format!("{}: {}", e.key, e.reason),
        })?;
        let kv = self
            .kv
            .for_app(
                name,
                &settings.keyvalue,
                settings.keyvalue_limits,
                settings.keyvalue_store.as_ref(),
            )
            .map_err(|reason| LoadError::Link {
                path: shown.into(),
                reason: format!("keyvalue: {reason}"),
            })?;
        Ok(WasmApp {
            name: name.into(),
            kv,
            config: None,
            compiled,
            resident: self.resident.clone(),
            stock: stock::Stock::new(Arc::default()),
            stocker: self.stocker.clone(),
            env: env.into(),
            limits: settings.limits,
            outbound,
            log,
            max_instances: self.max_instances,
            slots: Arc::new(tokio::sync::Semaphore::new(self.per_app as usize)),
            per_app: self.per_app,
            budget: self.budget.clone(),
            metrics: None,
            reuse,
            idle: reuse::Idle::default(),
            workers: concurrent::Workers::default(),
        })
    }

    /// The compiled component of the file at `path`: resident already,
    /// mapped from the compile cache, or compiled now.
    fn compiled(
        &self,
        name: &str,
        path: &Path,
        known: Option<&str>,
    ) -> Result<Arc<resident::Compiled>, LoadError> {
        let shown = path.display().to_string();
        if let Some(sha256) = known {
            if let Some(c) = self.resident.get(sha256) {
                self.stats.shared.fetch_add(1, Ordering::Relaxed);
                return Ok(c);
            }
            if let Some(component) = self.cache.load_cached(&self.engine, sha256) {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                tracing::info!(app = name, sha256, "mapped compiled component from cache");
                return self.keep(component, sha256, LoadedFrom::Cache, &shown);
            }
        }
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: shown.clone(),
            source,
        })?;
        check_component(&bytes, &shown)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(deployed) = known
            && deployed != sha256
        {
            return Err(LoadError::Changed {
                path: shown,
                deployed: deployed.into(),
                found: sha256,
            });
        }
        if let Some(c) = self.resident.get(&sha256) {
            self.stats.shared.fetch_add(1, Ordering::Relaxed);
            tracing::info!(app = name, sha256 = %sha256, "sharing the resident compiled component");
            return Ok(c);
        }
        let (component, from) = self.compile(name, &shown, &bytes, &sha256)?;
        self.keep(component, &sha256, from, &shown)
    }

    /// The component of `bytes` (whose sha256 is `sha256`) from the compile
    /// cache, or compiled now and cached; counted and logged for `name`.
    fn compile(
        &self,
        name: &str,
        shown: &str,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, LoadedFrom), LoadError> {
        let (component, from) =
            self.cache
                .load(&self.engine, bytes, sha256)
                .map_err(|e| LoadError::Compile {
                    path: shown.into(),
                    reason: format!("{e:#}"),
                })?;
        let (counter, what) = match from {
            LoadedFrom::Compiled => (&self.stats.compiled, "compiled component"),
            LoadedFrom::Cache => (
                &self.stats.cache_hits,
                "loaded compiled component from cache",
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::info!(app = name, sha256, "{what}");
        Ok((component, from))
    }

    /// Pre-links `component` and keeps it resident.
    fn keep(
        &self,
        component: Component,
        sha256: &str,
        from: LoadedFrom,
        shown: &str,
    ) -> Result<Arc<resident::Compiled>, LoadError> {
        let range = component.image_range();
        let bytes = (range.end as usize).saturating_sub(range.start as usize) as u64;
        let pre = self.pre(&component, shown)?;
        Ok(self.resident.insert(resident::Compiled {
            pre,
            sha256: sha256.into(),
            loaded_from: from,
            bytes,
        }))
    }

    /// Pre-links `component` as the world it exports.
    fn pre(&self, component: &Component, shown: &str) -> Result<ProxyPre<GuestState>, LoadError> {
        let world = world_of(component, &self.engine).map_err(|reason| LoadError::NotHttp {
            path: shown.into(),
            reason,
        })?;
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link {
                path: shown.into(),
                reason: link_reason(component, &self.engine, &e),
            })?;
        let not_http = |e: wasmtime::Error| LoadError::NotHttp {
            path: shown.into(),
            reason: format!("{e:#}"),
        };
        Ok(match world {
            World::P2 => ProxyPre::P2(
                wasmtime_wasi_http::p2::bindings::ProxyPre::new(instance_pre).map_err(not_http)?,
            ),
            World::P3 => ProxyPre::P3(
                wasmtime_wasi_http::p3::bindings::ServicePre::new(instance_pre)
                    .map_err(not_http)?,
            ),
        })
    }
}

/// The packages whose interfaces berth links for guests: WASI 0.2 and 0.3
/// (`wasmtime_wasi`, `wasmtime_wasi_http`) and [`keyvalue::add_to_linker`]'s
/// `wasi:keyvalue` and `wasi:config`. Keep in step with the linker built in
/// [`WasmRuntime::new`]: an import of a package listed here that does not
/// link is reported as a mismatch, any other as not provided.
const PROVIDED_PACKAGES: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:config/",
    "wasi:filesystem/",
    "wasi:http/",
    "wasi:io/",
    "wasi:keyvalue/",
    "wasi:random/",
    "wasi:sockets/",
];

/// Why `component` does not link, in a user's words: the imports berth
/// does not provide by name, else wasmtime's account of the one that does
/// not match (a WASI interface of a shape or version berth lacks).
pub(crate) fn link_reason(component: &Component, engine: &Engine, e: &wasmtime::Error) -> String {
    let foreign: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !PROVIDED_PACKAGES.iter().any(|p| name.starts_with(p)))
        .map(|name| format!("`{name}`"))
        .collect();
    if foreign.is_empty() {
        return format!("one of its WASI imports does not match what berth provides: {e:#}");
    }
    let spin = foreign
        .iter()
        .any(|n| n.starts_with("`spin:") || n.starts_with("`fermyon:"));
    format!(
        "it imports {}, which berth does not provide (berth links WASI 0.2 and 0.3: cli, clocks, filesystem, http, io, random, sockets; and wasi:keyvalue, wasi:config){}",
        foreign.join(", "),
        if spin {
            "; `spin:` and `fermyon:` interfaces are Spin's own (variables, key-value, databases, ...)"
        } else {
            ""
        }
    )
}

/// Refuses anything but a component by its header.
fn check_component(bytes: &[u8], shown: &str) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm(shown.into()));
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(LoadError::CoreModule(shown.into())),
        [_, _, 1, 0] => Ok(()),
        _ => Err(LoadError::NotWasm(shown.into())),
    }
}
