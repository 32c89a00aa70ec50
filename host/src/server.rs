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

use crate::config::{Config, Source};
use crate::gateway::{self, Backend, Body, Gateway, RouteTable, RoutedApp};
use crate::logs::AppLog;
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
}

impl ServerOptions {
    /// Defaults with the given data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            engine: EngineOptions::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A loaded host, ready to serve.
#[derive(Debug)]
pub struct Server {
    options: ServerOptions,
    runtime: Arc<WasmRuntime>,
    gateway: Arc<Gateway>,
    ready: AtomicBool,
}

impl Server {
    /// Creates the data directory and engine and loads every app of `config`.
    ///
    /// # Errors
    /// The first app that cannot be loaded, named, with the reason.
    pub fn start(config: &Config, options: ServerOptions) -> anyhow::Result<Self> {
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
        let logs_dir = options.data_dir.join("logs");
        let mut apps = Vec::new();
        for (name, spec) in &config.apps {
            let log = Arc::new(
                AppLog::open(&logs_dir, name)
                    .with_context(|| format!("cannot open the log of app `{name}`"))?,
            );
            let backend = match &spec.source {
                Source::Wasm(path) => Backend::Wasm(Arc::new(
                    runtime
                        .load_app(name, path, spec, log)
                        .with_context(|| format!("cannot deploy app `{name}`"))?,
                )),
                Source::Image(reference) => anyhow::bail!(
                    "cannot deploy app `{name}`: image `{reference}`: OCI images are not supported by this build"
                ),
            };
            let app = Arc::new(RoutedApp {
                name: name.clone(),
                backend,
            });
            apps.push((app, spec.routes.clone()));
        }
        let gateway = Arc::new(Gateway::new(RouteTable::new(&config.domain, apps)));
        Ok(Self {
            options,
            runtime,
            gateway,
            ready: AtomicBool::new(false),
        })
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
