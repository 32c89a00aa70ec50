//! `berth serve`: the listeners (`conn`: connection limits and timeouts;
//! `lock`: one host per data directory). `berth serve` binds both
//! listeners first (a port in use fails the start at once, before any app
//! is pulled or compiled); [`Server::open`] then opens the data directory
//! and [`Server::restore`] deploys every app (see [`crate::apps`]) before
//! anything is served, so a bad app is refused at start with a clear
//! message ([`Server::start`] does both). [`Server::run`] then serves the
//! front door ([`crate::gateway`]) and the admin listener ([`crate::api`],
//! `/healthz`, `/readyz`) until the shutdown future resolves; then the
//! host's one shutdown token ([`Apps::shutdown_token`]) is cancelled: it
//! stops accepting, lets in-flight requests finish up to
//! [`ServerOptions::drain_timeout`], and stops every instance.

pub mod conn;
pub mod lock;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

pub use conn::ConnectionLimits;
use conn::{Listener, Role};
pub use lock::DataDirLock;

use crate::api::AdminAuth;
use crate::apps::{Apps, AppsOptions};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::http::{Body, plain_text};
use crate::metrics::Metrics;
use crate::oci::RegistryClient;
use crate::wasm::EngineOptions;

/// Settings of a running host that are not part of the app config.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where compiled artifacts, logs and pulled blobs live.
    pub data_dir: PathBuf,
    /// Engine-wide Wasm settings.
    pub engine: EngineOptions,
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// How the front door treats connections (caps, timeouts).
    pub connections: ConnectionLimits,
    /// Fail the start when an app of the config file cannot be deployed,
    /// instead of serving the others and retrying it.
    pub strict: bool,
    /// How `image = "REF"` apps are pulled.
    pub registry: RegistryClient,
    /// Show pull progress bars (only ever drawn on a terminal).
    pub progress: bool,
    /// The admin API's token; `None`: the data directory's `admin-token`
    /// file, created at first start.
    pub admin_auth: Option<AdminAuth>,
    /// Serve the front door over TLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The runc binary (default: `runc` on `PATH`, then `/usr/sbin/runc`).
    pub runc: Option<PathBuf>,
    /// The secrets' key file (default: `<data-dir>/secrets.key`, created at
    /// first use); keep it apart from the data directory.
    pub secrets_key: Option<PathBuf>,
    /// The isolated container network (bridge, subnet).
    pub bridge: crate::container::BridgeOptions,
    /// Caps on unpacking one container image.
    pub unpack: crate::container::rootfs::UnpackLimits,
    /// Where traces go (nowhere by default).
    pub traces: crate::trace::TraceSettings,
    /// Write an access log line per front-door request.
    pub access_log: bool,
}

impl ServerOptions {
    /// Defaults with the given data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            engine: EngineOptions::default(),
            drain_timeout: Duration::from_secs(30),
            connections: ConnectionLimits::default(),
            strict: false,
            registry: RegistryClient::anonymous(),
            progress: false,
            admin_auth: None,
            tls: None,
            runc: None,
            secrets_key: None,
            bridge: crate::container::BridgeOptions::default(),
            unpack: crate::container::rootfs::UnpackLimits::default(),
            traces: crate::trace::TraceSettings::default(),
            access_log: false,
        }
    }
}

/// A loaded host, ready to serve.
#[derive(Debug)]
pub struct Server {
    options: ServerOptions,
    admin_auth: AdminAuth,
    apps: Arc<Apps>,
    gateway: Arc<Gateway>,
    console: crate::console::Console,
    /// Set when [`Server::run`] begins to serve; readiness ends with the
    /// host's shutdown token ([`Apps::shutdown_token`]).
    serving: OnceLock<()>,
}

impl Server {
    /// Creates the data directory and engine, and deploys every app of
    /// `config` and every app the data dir's state remembers (see
    /// [`crate::state`] for how they merge). Nothing listens yet.
    ///
    /// # Errors
    /// An unusable data directory or state file, or the first app of
    /// `config` that cannot be deployed, named, with the reason.
    pub async fn start(config: &Config, options: ServerOptions) -> anyhow::Result<Self> {
        let server = Self::open(config, options).await?;
        server.restore(config).await?;
        Ok(server)
    }

    /// [`start`](Self::start) without deploying: the data directory, the
    /// engine, the shim. Call [`restore`](Self::restore) next.
    ///
    /// # Errors
    /// An unusable data directory or state file.
    pub async fn open(config: &Config, options: ServerOptions) -> anyhow::Result<Self> {
        crate::files::create_private_dir(&options.data_dir).with_context(|| {
            format!(
                "cannot create data directory `{}`",
                options.data_dir.display()
            )
        })?;
        let admin_auth = match &options.admin_auth {
            Some(auth) => auth.clone(),
            None => {
                let (auth, created) = AdminAuth::for_data_dir(&options.data_dir)?;
                if created {
                    tracing::info!(
                        file = %options.data_dir.join(crate::api::TOKEN_FILE).display(),
                        "created the admin API token"
                    );
                }
                auth
            }
        };
        // Before any app is deployed: each keeps its log file open, so the
        // default soft limit (often 1,024) would cap a host at about a
        // thousand apps.
        conn::raise_open_files_limit();
        let metrics = Arc::new(Metrics::new());
        let apps = Arc::new(
            Apps::open(
                &config.domain,
                AppsOptions {
                    data_dir: options.data_dir.clone(),
                    engine: options.engine.clone(),
                    registry: options.registry.clone(),
                    progress: options.progress,
                    runc: options.runc.clone(),
                    secrets_key: options.secrets_key.clone(),
                    bridge: options.bridge.clone(),
                    unpack: options.unpack,
                },
                metrics.clone(),
            )
            .await?,
        );
        let tracing = Arc::new(crate::trace::Tracing::start(&options.traces, &metrics)?);
        let gateway = Arc::new(
            Gateway::new(apps.clone(), metrics, options.tls.is_some())
                .with_tracing(tracing)
                .with_access_log(options.access_log),
        );
        let console = crate::console::Console::new(apps.clone(), admin_auth.clone());
        Ok(Self {
            options,
            admin_auth,
            apps,
            gateway,
            console,
            serving: OnceLock::new(),
        })
    }

    /// Deploys the config file's apps and those the state remembers (see
    /// [`Apps::restore`]).
    ///
    /// # Errors
    /// As [`Apps::restore`].
    pub async fn restore(&self, config: &Config) -> anyhow::Result<()> {
        self.apps.restore(config, self.options.strict).await
    }

    /// The deployed apps.
    pub fn apps(&self) -> &Arc<Apps> {
        &self.apps
    }

    /// The front door.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The settings it runs with.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// Whether it serves (false before [`run`](Self::run) and once shutdown
    /// begins).
    pub fn is_ready(&self) -> bool {
        self.serving.get().is_some() && !self.apps.is_shutting_down()
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
        let front_addr = listener.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let open_files = conn::raise_open_files_limit();
        let mut limits = self.options.connections.clone();
        // Keep files for everything else (instances, the store), one per
        // app (its open log) and the Wasm guests' outbound budget.
        let (_, outbound) = self.apps.runtime().outbound_connections();
        let fit = usize::try_from(open_files.saturating_sub(1024))
            .unwrap_or(usize::MAX)
            .saturating_sub(self.apps.routes().len())
            .saturating_sub(outbound as usize);
        if limits.max_connections > fit.max(64) {
            tracing::warn!(
                max_connections = limits.max_connections,
                open_files,
                "lowering the connection cap to fit the open-files limit"
            );
            limits.max_connections = fit.max(64);
        }
        // Both drain when the host's one shutdown token is cancelled.
        let shutdown_token = self.apps.shutdown_token();
        let front = Arc::new(
            Listener::new(Role::FrontDoor, limits.clone(), self.options.tls.clone())
                .with_shutdown(shutdown_token.child_token()),
        );
        let back = Arc::new(
            Listener::new(Role::Admin, limits.admin(), None)
                .with_shutdown(shutdown_token.child_token()),
        );
        let sampler = {
            let apps = Arc::downgrade(&self.apps);
            self.apps
                .metrics()
                .spawn_sampler(Duration::from_secs(1), move || {
                    apps.upgrade().map(|a| a.snapshots())
                })
        };
        tracing::info!(front = %front_addr, admin = %admin_addr, apps = self.apps.routes().len(), max_connections = limits.max_connections, max_connections_per_client = limits.per_client(), "berth is serving");
        let _ = self.serving.set(());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => { front.accept_failed(e).await; continue }
                    };
                    let gw = self.gateway.clone();
                    front.accept(stream, peer, move |req: Request<Incoming>| {
                        let gw = gw.clone();
                        async move { gw.handle(req).await }
                    });
                }
                accepted = admin.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => { back.accept_failed(e).await; continue }
                    };
                    let me = self.clone();
                    back.accept(stream, peer, move |req: Request<Incoming>| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.admin(req).await) }
                    });
                }
            }
        }
        // Not ready any more, log followers end, connections drain.
        self.apps.begin_shutdown();
        sampler.abort();
        drop(listener);
        drop(admin);
        tracing::info!("shutting down: draining in-flight requests");
        let timeout = self.options.drain_timeout;
        let (front_done, admin_done) = tokio::join!(front.drain(timeout), back.drain(timeout));
        if front_done && admin_done {
            tracing::info!("all connections closed");
        } else {
            tracing::warn!(
                ?timeout,
                open = front.open() + back.open(),
                "drain timeout passed; closing remaining connections"
            );
        }
        self.apps.stop_all().await;
        self.gateway.tracing().shutdown().await;
        Ok(())
    }

    /// `/healthz` and `/readyz` (open to probes), the console under `/ui`
    /// ([`crate::console`]); everything else is the admin API
    /// ([`crate::api`]).
    async fn admin(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/healthz" => plain_text(StatusCode::OK, "ok\n"),
            "/readyz" if self.is_ready() => plain_text(StatusCode::OK, "ready\n"),
            "/readyz" => plain_text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            path if crate::console::is_console_path(path) => self.console.handle(req).await,
            _ => crate::api::handle(&self.apps, &self.admin_auth, req).await,
        }
    }
}
