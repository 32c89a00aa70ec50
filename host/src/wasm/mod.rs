//! Wasm components on wasmtime: one engine, compiled once, a fresh instance
//! per request.
//!
//! # Layout
//! - [`WasmRuntime`]: the single [`Engine`] (pooling allocator, copy-on-write
//!   memory images, epoch interruption), its [`Linker`] with WASI and
//!   wasi:http, the [`cache::CompileCache`], and the one epoch ticker thread.
//! - [`WasmApp`]: one app's resident component as a [`ProxyPre`]; every request
//!   gets a new [`Store`] and instance, limits and captured stdio.
//! - [`outbound`]: the outbound HTTP allow-list.
//! - [`cache`]: the on-disk compile cache.
//!
//! # Limits
//! Memory: each linear memory of a request's instance may grow to the app's
//! `limits.memory`; growing beyond traps. Time: the ticker bumps the engine's
//! epoch every [`EPOCH_TICK`]; at each tick a running guest yields to the
//! async runtime (so a spinning guest cannot hog a worker thread) and traps
//! once its deadline has passed. A guest parked in a host call (a sleep, an
//! outbound request) is stopped by the same deadline on the tokio side.

pub mod cache;
pub mod outbound;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, PoolingAllocationConfig, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::config::{AppSpec, Limits};
use crate::logs::AppLog;
use cache::{CompileCache, LoadedFrom};
use outbound::OutboundPolicy;

/// How often the engine's epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Instances that may exist at once across all apps (pool size).
    pub max_instances: u32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_instances: 1000,
        }
    }
}

/// Counters of what the runtime did, for tests, logs and metrics.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    compiled: AtomicU64,
    cache_hits: AtomicU64,
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
    /// A component that is not a wasi:http proxy.
    #[error(
        "`{path}` does not export wasi:http/incoming-handler (not a wasi:http proxy component): {reason}"
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
    /// Compilation or the compile cache failed.
    #[error("cannot compile `{path}`: {reason}")]
    Compile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// What ended a request that produced no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuestError {
    /// The guest trapped (unreachable, panic, out of bounds, …).
    #[error("the component trapped: {0}")]
    Trap(String),
    /// A linear memory tried to grow past `limits.memory`.
    #[error("the component exceeded its memory limit of {0}")]
    MemoryLimit(String),
    /// The deadline passed.
    #[error("the component did not answer within its timeout of {0:?}")]
    Deadline(Duration),
    /// The guest returned without setting a response.
    #[error("the component returned without sending a response")]
    NoResponse,
    /// The guest set an error code instead of a response.
    #[error("the component answered with an error: {0:?}")]
    ErrorCode(ErrorCode),
    /// All instance slots are in use.
    #[error("all {0} Wasm instance slots are busy")]
    Overloaded(u32),
    /// Something failed in berth itself.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Marker error: the epoch callback found the deadline passed.
#[derive(Debug)]
struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline exceeded")
    }
}
impl std::error::Error for DeadlineExceeded {}

/// Marker error: memory growth past the limit.
#[derive(Debug)]
struct MemoryLimitExceeded(u64);

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory limit of {} exceeded",
            bytesize::ByteSize::b(self.0).display().iec()
        )
    }
}
impl std::error::Error for MemoryLimitExceeded {}

/// Per-request resource limits; also tracks the linear memory in use.
struct Limiter {
    memory: u64,
    /// Bytes of linear memory across the instance's memories.
    in_use: u64,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory {
            return Err(MemoryLimitExceeded(self.memory).into());
        }
        self.in_use += (desired - current) as u64;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// What a request's [`Store`] holds.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundPolicy,
    limiter: Limiter,
    deadline: Instant,
}

impl fmt::Debug for GuestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestState").finish_non_exhaustive()
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
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
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            // A component built by wit-component holds a few core instances
            // (the main module plus shims) and may have an adapter's memory.
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(32)
            .max_memory_size(crate::config::MAX_MEMORY_LIMIT as usize)
            // Reset small memories with memset rather than madvise: cheaper
            // for the many-tiny-requests case.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16);

        let mut config = wasmtime::Config::new();
        config
            .allocation_strategy(pool)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .wasm_component_model(true)
            .parallel_compilation(true);
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;

        let cache = CompileCache::new(data_dir.join("compiled"), &engine)?;
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Self {
            engine,
            linker,
            cache,
            stats: Arc::default(),
            max_instances: n,
            _ticker: ticker,
        })
    }

    /// What this runtime compiled and loaded so far.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads the component at `path` for app `name`: checks it is a wasi:http
    /// component, compiles it or maps its cached artifact, and pre-links it.
    ///
    /// # Errors
    /// [`LoadError`] saying what is wrong with the file.
    pub fn load_app(
        &self,
        name: &str,
        path: &Path,
        spec: &AppSpec,
        log: Arc<AppLog>,
    ) -> Result<WasmApp, LoadError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: shown.clone(),
            source,
        })?;
        check_component(&bytes, &shown)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (component, from) = self
            .cache
            .load(&self.engine, &bytes, &sha256)
            .map_err(|e| LoadError::Compile {
                path: shown.clone(),
                reason: format!("{e:#}"),
            })?;
        match from {
            LoadedFrom::Compiled => {
                self.stats.compiled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(app = name, sha256 = %sha256, "compiled component");
            }
            LoadedFrom::Cache => {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                tracing::info!(app = name, sha256 = %sha256, "loaded compiled component from cache");
            }
        }
        let pre = self.pre(&component, &shown)?;
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("BERTH_APP".into(), name.into()));
        let outbound = OutboundPolicy::new(&spec.allowed_outbound_hosts).map_err(|reason| {
            LoadError::Link {
                path: shown.clone(),
                reason,
            }
        })?;
        Ok(WasmApp {
            name: name.into(),
            pre,
            env: env.into(),
            limits: spec.limits,
            outbound,
            log,
            sha256,
            loaded_from: from,
            max_instances: self.max_instances,
            metrics: None,
        })
    }

    fn pre(&self, component: &Component, shown: &str) -> Result<ProxyPre<GuestState>, LoadError> {
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link {
                path: shown.into(),
                reason: format!("{e:#}"),
            })?;
        ProxyPre::new(instance_pre).map_err(|e| LoadError::NotHttp {
            path: shown.into(),
            reason: format!("{e:#}"),
        })
    }
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

/// One request's identity and arrival time.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Unique id, echoed in `x-berth-request-id` and in the app log.
    pub id: Arc<str>,
    /// When the front door had the request's head.
    pub accepted: Instant,
}

/// How long the host spent before the guest's handler was entered.
#[derive(Debug, Clone, Copy)]
pub struct ColdStart {
    /// From acceptance to a ready instance (store, WASI context, instantiation).
    pub host: Duration,
    /// Instantiation alone.
    pub instantiate: Duration,
}

/// One app's resident compiled component.
pub struct WasmApp {
    name: String,
    pre: ProxyPre<GuestState>,
    env: Arc<[(String, String)]>,
    limits: Limits,
    outbound: OutboundPolicy,
    log: Arc<AppLog>,
    sha256: String,
    loaded_from: LoadedFrom,
    max_instances: u32,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl fmt::Debug for WasmApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmApp")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The body of a guest's response.
pub type GuestBody = HyperOutgoingBody;

impl WasmApp {
    /// Meters each request's guest CPU time and memory × time into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// sha256 (hex) of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether this load compiled the component or used the cache.
    pub fn loaded_from(&self) -> LoadedFrom {
        self.loaded_from
    }

    /// The app's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs one request in a fresh instance. The response head is returned as
    /// soon as the guest sets it; the body streams while the guest runs, until
    /// the deadline.
    ///
    /// # Errors
    /// [`GuestError`] when the guest produced no response.
    pub async fn handle<B>(
        self: &Arc<Self>,
        req: Request<B>,
        info: &RequestInfo,
    ) -> Result<Response<GuestBody>, GuestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let deadline = info.accepted + self.limits.timeout;
        let mut wasi = WasiCtx::builder();
        wasi.envs(&self.env)
            .stdout(self.log.sink(info.id.clone(), "stdout"))
            .stderr(self.log.sink(info.id.clone(), "stderr"));
        let mut store = Store::new(
            self.pre.engine(),
            GuestState {
                wasi: wasi.build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                hooks: self.outbound.clone(),
                limiter: Limiter {
                    memory: self.limits.memory,
                    in_use: 0,
                },
                deadline,
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(DeadlineExceeded.into())
            } else {
                // `yield_now` lets the runtime poll for I/O before this guest
                // runs again, so spinning guests cannot starve the front door.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (incoming, outparam) = {
            let mut http = store.data_mut().http();
            let incoming = http
                .new_incoming_request(Scheme::Http, req)
                .map_err(|e| GuestError::Internal(format!("{e:#}")))?;
            let outparam = http
                .new_response_outparam(sender)
                .map_err(|e| GuestError::Internal(format!("{e:#}")))?;
            (incoming, outparam)
        };

        let app = self.clone();
        let accepted = info.accepted;
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<ColdStart>();
        let task = tokio::spawn(async move {
            let run = async {
                let t = Instant::now();
                let proxy = app.pre.instantiate_async(&mut store).await?;
                let now = Instant::now();
                let _ = started_tx.send(ColdStart {
                    host: now - accepted,
                    instantiate: now - t,
                });
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
            };
            let started = Instant::now();
            let mut busy = Busy::new(run);
            let outcome = tokio::time::timeout_at(deadline.into(), &mut busy).await;
            let busy_time = busy.busy;
            drop(busy);
            if let Some(metrics) = &app.metrics {
                // CPU: the time this request's future spent being polled (the
                // guest and the host calls it made); memory: the instance's
                // linear memory for the request's wall time.
                let memory = store.data().limiter.in_use as f64;
                metrics.record_usage(
                    &app.name,
                    busy_time,
                    memory * started.elapsed().as_secs_f64() / 1e9,
                );
            }
            match outcome {
                Ok(result) => result.map_err(|e| classify(e, &app.limits, app.max_instances)),
                Err(_) => Err(GuestError::Deadline(app.limits.timeout)),
            }
        });
        // If the client goes away before the response head, stop the guest.
        let mut guard = AbortOnDrop(Some(task));

        let outcome = receiver.await;
        let cold = started_rx.await.ok();
        match outcome {
            Ok(Ok(mut resp)) => {
                // The guest keeps running to stream the body; detach it.
                if let Some(task) = guard.0.take() {
                    let app = self.clone();
                    let id = info.id.clone();
                    tokio::spawn(async move {
                        if let Ok(Err(e)) = task.await {
                            app.log_failure(&id, &e);
                        }
                    });
                }
                if let Some(cold) = cold {
                    resp.extensions_mut().insert(cold);
                    if let Ok(v) = HeaderValue::from_str(&format!(
                        "berth-host;dur={:.3}, berth-instantiate;dur={:.3}",
                        cold.host.as_secs_f64() * 1e3,
                        cold.instantiate.as_secs_f64() * 1e3
                    )) {
                        resp.headers_mut().append("server-timing", v);
                    }
                }
                Ok(resp)
            }
            Ok(Err(code)) => {
                let err = GuestError::ErrorCode(code);
                self.log_failure(&info.id, &err);
                Err(err)
            }
            Err(_) => {
                let task = guard.0.take().expect("task present until taken");
                let err = match task.await {
                    Ok(Ok(())) => GuestError::NoResponse,
                    Ok(Err(e)) => e,
                    Err(join) => GuestError::Internal(format!("guest task failed: {join}")),
                };
                self.log_failure(&info.id, &err);
                Err(err)
            }
        }
    }

    fn log_failure(&self, id: &str, err: &GuestError) {
        tracing::warn!(app = %self.name, request_id = id, "request failed: {err}");
        self.log
            .line(id, "berth", format!("request failed: {err}").as_bytes());
    }
}

/// A future that adds up the time spent polling the one it wraps.
struct Busy<F> {
    inner: std::pin::Pin<Box<F>>,
    busy: Duration,
}

impl<F> Busy<F> {
    fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            busy: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for Busy<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let t = Instant::now();
        let out = self.inner.as_mut().poll(cx);
        self.busy += t.elapsed();
        out
    }
}

/// Aborts a spawned task when dropped while still armed.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

/// Turns a wasmtime error into what the gateway reports.
fn classify(e: wasmtime::Error, limits: &Limits, pool: u32) -> GuestError {
    if e.downcast_ref::<DeadlineExceeded>().is_some() {
        return GuestError::Deadline(limits.timeout);
    }
    if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
        return GuestError::MemoryLimit(bytesize::ByteSize::b(m.0).display().iec().to_string());
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return GuestError::Overloaded(pool);
    }
    let msg = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("{trap}"),
        None => format!("{e:#}"),
    };
    GuestError::Trap(first_line(&msg))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}
