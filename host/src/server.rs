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
use std::sync::atomic::{AtomicBool, Ordering};
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

use crate::config::{AppSpec, Config, Source};
use crate::gateway::{self, Backend, Body, Gateway, RouteTable, RoutedApp};
use crate::logs::AppLog;
use crate::oci::{BlobStore, Puller, RegistryClient};
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
    /// sha256 of the component that serves.
    pub sha256: String,
    /// Bytes pulled from a registry for this deploy (0 when all was local).
    pub pulled_bytes: u64,
}

/// Deployed apps by name, with their path routes.
type AppTable = BTreeMap<String, (Arc<RoutedApp>, Vec<String>)>;

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
    ready: AtomicBool,
}

impl Server {
    /// Creates the data directory and engine and deploys every app of
    /// `config`. Nothing listens yet.
    ///
    /// # Errors
    /// The first app that cannot be deployed, named, with the reason.
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
        let server = Self {
            domain: config.domain.clone(),
            runtime,
            puller,
            gateway: Arc::new(Gateway::new(RouteTable::new(&config.domain, Vec::new()))),
            apps: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            options,
        };
        for (name, spec) in &config.apps {
            server.deploy(name, spec).await?;
        }
        Ok(server)
    }

    /// Deploys (or replaces) app `name`: pulls its image if it has one,
    /// compiles or maps its component, and switches routing to it. On error
    /// nothing changes and every other app keeps serving.
    ///
    /// # Errors
    /// Why the app cannot be deployed, naming it.
    pub async fn deploy(&self, name: &str, spec: &AppSpec) -> anyhow::Result<Deployed> {
        crate::config::validate_label(name).map_err(|r| anyhow::anyhow!("app name: {r}"))?;
        let deployed = self
            .load(name, spec)
            .await
            .with_context(|| format!("cannot deploy app `{name}`"))?;
        let (app, info) = deployed;
        {
            let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(route) = spec.routes.iter().find(|r| {
                apps.iter()
                    .any(|(other, (_, routes))| other != name && routes.contains(r))
            }) {
                anyhow::bail!(
                    "cannot deploy app `{name}`: route `{route}` is taken by another app"
                );
            }
            apps.insert(name.to_string(), (app, spec.routes.clone()));
            self.publish(&apps);
        }
        Ok(info)
    }

    /// Removes app `name`; its in-flight requests finish.
    ///
    /// Returns whether the app existed.
    pub fn remove(&self, name: &str) -> bool {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let existed = apps.remove(name).is_some();
        self.publish(&apps);
        existed
    }

    fn publish(&self, apps: &AppTable) {
        let entries = apps
            .values()
            .map(|(app, routes)| (app.clone(), routes.clone()))
            .collect();
        self.gateway
            .set_table(RouteTable::new(&self.domain, entries));
    }

    async fn load(&self, name: &str, spec: &AppSpec) -> anyhow::Result<(Arc<RoutedApp>, Deployed)> {
        let (path, pinned, pulled_bytes) = match &spec.source {
            Source::Wasm(path) => (path.clone(), None, 0),
            Source::Image(reference) => {
                let pulled = self
                    .puller
                    .pull(reference)
                    .await
                    .with_context(|| format!("cannot pull image `{reference}`"))?;
                let Some(path) = pulled.wasm.clone() else {
                    anyhow::bail!(
                        "image `{reference}` is a {}; this host runs Wasm components only",
                        pulled.kind
                    );
                };
                tracing::info!(
                    app = name,
                    image = %reference,
                    pinned = %pulled.pinned,
                    pulled_bytes = pulled.pulled_bytes,
                    "image resolved and pinned"
                );
                (path, Some(pulled.pinned), pulled.pulled_bytes)
            }
        };
        let logs_dir = self.options.data_dir.join("logs");
        let log = Arc::new(
            AppLog::open(&logs_dir, name)
                .with_context(|| format!("cannot open the log of app `{name}`"))?,
        );
        let runtime = self.runtime.clone();
        let (name_owned, spec_owned) = (name.to_string(), spec.clone());
        // Compiling is CPU-bound: keep it off the async workers.
        let wasm = tokio::task::spawn_blocking(move || {
            runtime.load_app(&name_owned, &path, &spec_owned, log)
        })
        .await
        .context("compile task failed")??;
        let info = Deployed {
            name: name.to_string(),
            pinned,
            sha256: wasm.sha256().to_string(),
            pulled_bytes,
        };
        let app = Arc::new(RoutedApp {
            name: name.to_string(),
            backend: Backend::Wasm(Arc::new(wasm)),
        });
        Ok((app, info))
    }

    /// The Wasm runtime (for its counters).
    pub fn runtime(&self) -> &Arc<WasmRuntime> {
        &self.runtime
    }

    /// The front door.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
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
        tracing::info!(%front, admin = %admin_addr, apps = self.gateway.table().len(), "berth is serving");
        self.ready.store(true, Ordering::Release);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Some(stream) = accept_ok(accepted).await else { continue };
                    let gw = self.gateway.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let gw = gw.clone();
                        async move { gw.handle(req).await }
                    });
                    self.serve_conn(&graceful, stream, svc);
                }
                accepted = admin.accept() => {
                    let Some(stream) = accept_ok(accepted).await else { continue };
                    let me = self.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let me = me.clone();
                        async move { me.admin(req) }
                    });
                    self.serve_conn(&graceful, stream, svc);
                }
            }
        }
        self.ready.store(false, Ordering::Release);
        drop(listener);
        drop(admin);
        tracing::info!("shutting down: draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(self.options.drain_timeout) => {
                tracing::warn!(timeout = ?self.options.drain_timeout, "drain timeout passed; closing remaining connections");
            }
        }
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
        let _ = stream.set_nodelay(true);
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended with error: {e}");
            }
        });
    }

    fn admin(&self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        Ok(match req.uri().path() {
            "/healthz" => gateway::error(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                gateway::error(StatusCode::OK, "ready\n")
            }
            "/readyz" => gateway::error(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            other => gateway::error(
                StatusCode::NOT_FOUND,
                format!("no admin endpoint `{other}`\n"),
            ),
        })
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
