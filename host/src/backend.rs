//! The contract every instance kind honours, and the Wasm implementation.
//!
//! A [`Backend`] starts instances of one revision (each start is a cold
//! start); an [`Instance`] serves requests and stops gracefully. The revision
//! (see [`crate::revision`]) admits at most `concurrency` requests to each
//! instance and asks the autoscaler how many instances to keep.
//!
//! For Wasm, an instance is a unit of capacity backed by the revision's
//! resident compiled component ([`WasmApp`]): the first instance maps the
//! compiled artifact from the on-disk cache and pre-links it (the Wasm cold
//! start); further instances share it; when the last one stops, the
//! component is dropped and only the on-disk artifact remains. Every request
//! still gets its own fresh wasmtime instance.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};

use crate::config::AppSpec;
use crate::gateway::{Body, BoxError};
use crate::logs::AppLog;
use crate::wasm::{GuestError, RequestInfo, WasmApp, WasmRuntime};

/// The body of a request handed to an instance.
pub type ReqBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// What runs an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Wasm component, in-process.
    Wasm,
    /// A container, through runc.
    Container,
}

impl Kind {
    /// `wasm` or `container`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Wasm => "wasm",
            Kind::Container => "container",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an instance did not produce a response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The Wasm guest failed.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The container could not be reached or broke the connection.
    #[error("the instance did not answer: {0}")]
    Upstream(String),
}

impl ServeError {
    /// Whether the instance is unusable afterwards.
    pub fn instance_broken(&self) -> bool {
        matches!(self, ServeError::Upstream(_))
    }
}

/// Starts instances of one revision.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Wasm or container.
    fn kind(&self) -> Kind;
    /// Starts one instance; returns when it is ready to serve.
    ///
    /// # Errors
    /// Why the instance could not start (shown to waiting clients).
    async fn start_instance(&self, id: u64) -> anyhow::Result<Arc<dyn Instance>>;
}

/// One running instance.
#[async_trait::async_trait]
pub trait Instance: Send + Sync + fmt::Debug {
    /// Serves one request.
    ///
    /// # Errors
    /// [`ServeError`] when there is no response to send.
    async fn serve(
        &self,
        req: Request<ReqBody>,
        info: &RequestInfo,
    ) -> Result<Response<Body>, ServeError>;
    /// Whether the instance can still serve (a container may have exited).
    fn is_alive(&self) -> bool {
        true
    }
    /// Stops the instance, giving in-flight work up to `grace`.
    async fn stop(&self, grace: Duration);
    /// Where this instance's cold start spent its time, for kinds that
    /// time its phases (containers).
    fn cold_start_split(&self) -> Option<crate::container::ColdStartSplit> {
        None
    }
}

/// Starts Wasm "instances": shares of one resident compiled component.
pub struct WasmBackend {
    runtime: Arc<WasmRuntime>,
    name: String,
    path: PathBuf,
    spec: AppSpec,
    log: Arc<AppLog>,
    resident: Mutex<Weak<WasmApp>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
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
    /// checked and compiled at deploy (kept resident while instances use it).
    pub fn new(
        runtime: Arc<WasmRuntime>,
        name: &str,
        path: PathBuf,
        spec: AppSpec,
        log: Arc<AppLog>,
        loaded: &Arc<WasmApp>,
    ) -> Self {
        Self {
            runtime,
            name: name.into(),
            path,
            spec,
            log,
            resident: Mutex::new(Arc::downgrade(loaded)),
            metrics: None,
        }
    }

    /// Meters the components this backend loads (after a scale from zero).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether the compiled component is in memory.
    pub fn is_resident(&self) -> bool {
        self.resident
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .strong_count()
            > 0
    }
}

#[async_trait::async_trait]
impl Backend for WasmBackend {
    fn kind(&self) -> Kind {
        Kind::Wasm
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
        let (name, path, spec, log) = (
            self.name.clone(),
            self.path.clone(),
            self.spec.clone(),
            self.log.clone(),
        );
        let mut app =
            tokio::task::spawn_blocking(move || runtime.load_app(&name, &path, &spec, log))
                .await??;
        if let Some(metrics) = &self.metrics {
            app = app.with_metrics(metrics.clone());
        }
        let app = Arc::new(app);
        let mut resident = self.resident.lock().unwrap_or_else(|e| e.into_inner());
        // Another start may have won the race; share its component.
        let app = resident.upgrade().unwrap_or(app);
        *resident = Arc::downgrade(&app);
        Ok(Arc::new(WasmInstance { app }))
    }
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
        let resp = self.app.handle(req, info).await?;
        Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
    }

    async fn stop(&self, _grace: Duration) {}
}
