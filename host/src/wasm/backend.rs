//! Wasm as a [`Backend`], the adaptor from berth's backend contract to the
//! engine (`berth_wasm`). An instance is a unit of capacity backed by the
//! revision's loaded app ([`WasmApp`]: its context around a compiled
//! component shared by sha256). The first instance builds the app (the Wasm
//! cold start): with the component still resident (see
//! [`berth_wasm::resident`]) that is a lookup by the sha256 the revision knows,
//! else its artifact is mapped from the on-disk cache on a blocking thread.
//! Further instances share the app; when the last one stops, the app and its
//! stock go, and the component stays resident within the budget. The
//! autoscaler's desired count sizes the app's stock ([`berth_wasm::stock`]).
//! Every request still gets its own wasmtime instance that no other request
//! touched.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt as _;

use berth_wasm::logs::AppLog;
use berth_wasm::outbound::pool::OutboundCounters;
use berth_wasm::reuse::ReuseMode;
use berth_wasm::stock::StockCounters;
use berth_wasm::{AppSettings, GuestError, UsageMeter, WasmApp, WasmRuntime};

use crate::backend::{Backend, Instance, Kind, OutboundStatus, ServeError, StockStatus};
use crate::config::AppSpec;
use crate::http::{Body, BodyTooLarge, BoxError, ReqBody, RequestInfo};
use crate::metrics::Metrics;
use crate::secrets::SecretStore;

/// Starts Wasm "instances": shares of one resident compiled component.
pub struct WasmBackend {
    runtime: Arc<WasmRuntime>,
    name: String,
    path: PathBuf,
    spec: AppSpec,
    log: Arc<AppLog>,
    secrets: Arc<SecretStore>,
    resident: Mutex<Weak<WasmApp>>,
    metrics: Option<Arc<Metrics>>,
    /// The component's sha256, known since deploy: a later load needs
    /// neither the `.wasm`'s bytes nor its hash.
    sha256: String,
    /// The autoscaler's last desired count (sizes the stock).
    desired: AtomicU32,
    counters: Arc<StockCounters>,
    /// Its outbound connections, counted across scale to zero.
    outbound: Arc<OutboundCounters>,
    /// Requests one wasmtime instance takes at once, with instance reuse.
    capacity: Option<u32>,
    /// Where its guests read `wasi:config`.
    config: Option<Arc<dyn berth_wasm::keyvalue::ConfigSource>>,
}

impl fmt::Debug for WasmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmBackend")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WasmBackend {
    /// A backend for the component at `path`; `loaded` is the component as
    /// checked and compiled at deploy (kept resident while instances use it);
    /// `secrets` gives the values of the app's secrets when it is loaded
    /// again after a scale to zero.
    pub fn new(
        runtime: Arc<WasmRuntime>,
        name: &str,
        path: PathBuf,
        spec: AppSpec,
        log: Arc<AppLog>,
        secrets: Arc<SecretStore>,
        loaded: &Arc<WasmApp>,
    ) -> Self {
        Self {
            runtime,
            name: name.into(),
            path,
            spec,
            log,
            secrets,
            resident: Mutex::new(Arc::downgrade(loaded)),
            metrics: None,
            sha256: loaded.sha256().to_string(),
            desired: AtomicU32::new(0),
            counters: loaded.stock_counters().clone(),
            outbound: loaded.outbound_counters().clone(),
            capacity: match loaded.reuse().mode {
                ReuseMode::None => None,
                ReuseMode::Serial | ReuseMode::Concurrent => Some(loaded.reuse().capacity()),
            },
            config: None,
        }
    }

    /// Meters the components this backend loads (after a scale from zero).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves `wasi:config` to the components this backend loads.
    #[must_use]
    pub fn with_config(mut self, config: Arc<dyn berth_wasm::keyvalue::ConfigSource>) -> Self {
        self.config = Some(config);
        self
    }

    /// Whether an instance holds the app's loaded component.
    pub fn is_resident(&self) -> bool {
        self.app().is_some()
    }

    fn app(&self) -> Option<Arc<WasmApp>> {
        self.resident
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()
    }
}

#[async_trait::async_trait]
impl Backend for WasmBackend {
    fn kind(&self) -> Kind {
        Kind::Wasm
    }

    fn scale_hint(&self, desired: u32) {
        self.desired.store(desired, Ordering::Release);
        if let Some(app) = self.app() {
            app.scale_to(desired);
        }
    }

    fn instance_capacity(&self) -> Option<u32> {
        self.capacity
    }

    fn stock(&self) -> Option<StockStatus> {
        Some(match self.app() {
            Some(app) => app.stock_status(),
            None => self.counters.status(),
        })
    }

    fn outbound(&self) -> Option<OutboundStatus> {
        Some(self.outbound.status())
    }

    async fn start_instance(&self, _id: u64) -> anyhow::Result<Arc<dyn Instance>> {
        if let Some(app) = self
            .resident
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()
        {
            return Ok(Arc::new(WasmInstance { app }));
        }
        let runtime = self.runtime.clone();
        let secret_env = secret_env(&self.secrets, &self.spec)?;
        let (name, path, spec, log) = (
            self.name.clone(),
            self.path.clone(),
            self.spec.clone(),
            self.log.clone(),
        );
        let sha256 = self.sha256.clone();
        let load =
            move || runtime.load_app_known(&name, &path, Some(&sha256), &spec, &secret_env, log);
        let mut app = if self.runtime.resident().contains(&self.sha256) {
            // Resident: no file, no hash, no mapping; as cheap as a warm start.
            load()?
        } else {
            tokio::task::spawn_blocking(load).await??
        }
        .with_stock_counters(self.counters.clone())
        .with_outbound_counters(self.outbound.clone());
        if let Some(metrics) = &self.metrics {
            app = app.with_metrics(metrics.clone());
        }
        if let Some(config) = &self.config {
            app = app.with_config(config.clone());
        }
        let app = Arc::new(app);
        let mut resident = self.resident.lock().unwrap_or_else(|e| e.into_inner());
        // Another start may have won the race; share its component.
        let app = resident.upgrade().unwrap_or(app);
        *resident = Arc::downgrade(&app);
        drop(resident);
        app.scale_to(self.desired.load(Ordering::Acquire));
        Ok(Arc::new(WasmInstance { app }))
    }
}

/// The part of an app's settings its guests get.
impl From<&AppSpec> for AppSettings {
    fn from(spec: &AppSpec) -> Self {
        Self {
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            allowed_outbound_hosts: spec.allowed_outbound_hosts.clone(),
            allowed_networks: spec.allowed_networks.clone(),
            limits: spec.limits,
            reuse: spec.instances,
            keyvalue: spec.keyvalue.clone(),
            keyvalue_limits: spec.keyvalue_limits,
            keyvalue_store: None,
        }
    }
}

/// The engine meters each request's guest into berth's metrics.
impl UsageMeter for Metrics {
    fn record_usage(&self, app: &str, cpu: Duration, memory_gb_seconds: f64) {
        Metrics::record_usage(self, app, cpu, memory_gb_seconds);
    }
}

/// The values of `spec`'s secrets as environment variables.
///
/// # Errors
/// A secret that no longer exists or cannot be decrypted, named.
pub fn secret_env(
    secrets: &SecretStore,
    spec: &AppSpec,
) -> Result<Vec<(String, String)>, crate::secrets::SecretError> {
    Ok(secrets
        .resolve(&spec.secrets)?
        .into_iter()
        .map(|(var, value)| (var, value.expose().to_string()))
        .collect())
}

/// A share of a resident component.
#[derive(Debug)]
pub struct WasmInstance {
    app: Arc<WasmApp>,
}

#[async_trait::async_trait]
impl Instance for WasmInstance {
    async fn serve(
        &self,
        req: Request<ReqBody>,
        info: &RequestInfo,
    ) -> Result<Response<Body>, ServeError> {
        let req = req.map(|b| b.map_err(wasi_body_error));
        let resp = self.app.handle(req, info).await.map_err(serve_error)?;
        if info.trace.is_sampled()
            && let Some(cold) = resp.extensions().get::<berth_wasm::ColdStart>()
        {
            trace_instantiation(info, cold);
        }
        Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
    }

    async fn stop(&self, _grace: Duration) {}
}

/// How the request got its wasm instance, on its `wasm.handle` span
/// (`berth.wasm.instance`: `stock` (made ahead), `new` (instantiated on
/// the request's path) or `reused`), and the instantiation as a
/// `wasm.instantiate` span when it happened on the request's path.
fn trace_instantiation(info: &RequestInfo, cold: &berth_wasm::ColdStart) {
    use opentelemetry::KeyValue;
    let how = if cold.reused {
        "reused"
    } else if cold.stock_hit {
        "stock"
    } else {
        "new"
    };
    info.trace
        .set_attribute(KeyValue::new("berth.wasm.instance", how));
    info.trace
        .set_attribute(KeyValue::new("berth.wasm.stock_hit", cold.stock_hit));
    if how == "new" {
        // Instantiation ended when the host part ended; times are turned
        // from the monotonic clock into wall time once.
        let since_ready = info.accepted.elapsed().saturating_sub(cold.host);
        let end = std::time::SystemTime::now() - since_ready;
        info.trace
            .record("wasm.instantiate", Vec::new(), end - cold.instantiate, end);
    }
}

/// A request body's error as wasi:http reports it to the guest.
fn wasi_body_error(e: BoxError) -> wasmtime_wasi_http::Error {
    let e = match e.downcast::<BodyTooLarge>() {
        Ok(too_large) => return wasmtime_wasi_http::Error::HttpRequestBodySize(Some(too_large.0)),
        Err(e) => e,
    };
    match e.downcast::<hyper::Error>() {
        Ok(hyper) => wasmtime_wasi_http::Error::from(*hyper),
        Err(other) => wasmtime_wasi_http::Error::InternalError(Some(other.to_string())),
    }
}

/// What a guest failure means to the caller.
fn serve_error(e: GuestError) -> ServeError {
    match e {
        GuestError::Trap(reason) => ServeError::GuestTrap { reason },
        GuestError::MemoryLimit(limit) => ServeError::MemoryLimit { limit },
        GuestError::Deadline(timeout) => ServeError::Timeout(timeout),
        GuestError::NoResponse => ServeError::NoResponse,
        GuestError::ErrorCode(code) => ServeError::BadUpstream(code),
        e @ (GuestError::Overloaded(_) | GuestError::Retired(_)) => {
            ServeError::Overloaded(e.to_string())
        }
        GuestError::Internal(why) => ServeError::Internal(why),
        // `GuestError` is the engine's (non-exhaustive): a kind added there
        // is an internal error here until it is mapped.
        other => ServeError::Internal(other.to_string()),
    }
}
