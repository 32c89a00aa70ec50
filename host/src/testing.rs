//! Test helpers: start a real host on loopback and stop it cleanly.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use berth::testing::TestHost;
//! let host = TestHost::builder()
//!     .wasm_app("hello", "/path/to/hello.wasm")
//!     .start()
//!     .await?;
//! let url = host.url("/");
//! host.stop().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::config::{AppSpec, Config};
use crate::oci::RegistryClient;
use crate::server::{Server, ServerOptions};

/// A host running in this process on `127.0.0.1:0`.
#[derive(Debug)]
pub struct TestHost {
    /// Front door address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// The server (counters, gateway).
    pub server: Arc<Server>,
    admin_token: String,
    data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Builds a [`TestHost`].
#[derive(Debug, Default)]
pub struct TestHostBuilder {
    config: Config,
    data_dir: Option<PathBuf>,
    registry: Option<RegistryClient>,
    tls: Option<Arc<rustls::ServerConfig>>,
    admin_token: Option<String>,
    engine: Option<crate::wasm::EngineOptions>,
    connections: Option<crate::server::ConnectionLimits>,
    lenient: bool,
    admin_bind: Option<SocketAddr>,
    traces: Option<crate::trace::TraceSettings>,
}

impl TestHost {
    /// A builder with no apps and a fresh temporary data dir.
    pub fn builder() -> TestHostBuilder {
        crate::tls::install_crypto_provider();
        TestHostBuilder {
            config: Config {
                domain: crate::config::DEFAULT_DOMAIN.into(),
                ..Config::default()
            },
            data_dir: None,
            registry: None,
            tls: None,
            admin_token: None,
            engine: None,
            connections: None,
            lenient: false,
            admin_bind: None,
            traces: None,
        }
    }

    /// The host's apps (deploy, remove, status, the Wasm runtime's counters).
    pub fn apps(&self) -> &Arc<crate::apps::Apps> {
        self.server.apps()
    }

    /// The isolated container network the host runs its containers on.
    pub fn bridge(&self) -> &crate::container::BridgeOptions {
        &self.server.options().bridge
    }

    /// The admin API's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The data directory in use.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops accepting, drains and waits for the server to finish.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestHost {
    /// A host dropped without [`TestHost::stop`] is stopped all the same
    /// (instances, bridge, firewall chains), waiting for it where the
    /// runtime allows (a multi-threaded one); else it is only told to stop.
    fn drop(&mut self) {
        let Some(tx) = self.stop.take() else { return };
        let _ = tx.send(());
        let Some(task) = self.task.take() else { return };
        if let Ok(handle) = tokio::runtime::Handle::try_current()
            && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(|| {
                let _ = handle.block_on(task);
            });
        }
    }
}

/// A bridge and a /24 of its own for each test host of this process (and,
/// by the pid, apart from other test processes), so that hosts running side
/// by side never share a bridge, its addresses or its firewall chains.
fn test_bridge() -> crate::container::BridgeOptions {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let slot = (std::process::id().wrapping_mul(7919).wrapping_add(n)) % 4096;
    crate::container::BridgeOptions {
        bridge: format!("bt{:x}-{n}", std::process::id() % 0xffff),
        subnet: format!("10.{}.{}.0/24", 214 + slot / 256, slot % 256),
        ..crate::container::BridgeOptions::default()
    }
}

impl TestHostBuilder {
    /// Exports traces as `settings` say.
    pub fn traces(mut self, settings: crate::trace::TraceSettings) -> Self {
        self.traces = Some(settings);
        self
    }

    /// Adds an app serving a component file with default settings.
    pub fn wasm_app(self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.app(name, AppSpec::wasm(path))
    }

    /// Adds an app.
    pub fn app(mut self, name: &str, spec: AppSpec) -> Self {
        self.config.apps.insert(name.into(), spec);
        self
    }

    /// Uses a whole config.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Pulls images with this client (default: anonymous).
    pub fn registry(mut self, client: RegistryClient) -> Self {
        self.registry = Some(client);
        self
    }

    /// Serves the front door over TLS.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Uses this bearer token for the admin API (default: the one the host
    /// writes into its data dir).
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_string());
        self
    }

    /// Binds the admin listener here instead of `127.0.0.1:0` (for instance
    /// `0.0.0.0:0`; connect through 127.0.0.1 and the port).
    pub fn admin_bind(mut self, addr: SocketAddr) -> Self {
        self.admin_bind = Some(addr);
        self
    }

    /// Runs the Wasm engine with these settings (default: a pool of 300,
    /// 250 per app).
    pub fn engine(mut self, engine: crate::wasm::EngineOptions) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Serves the apps that deploy and retries the others in the background
    /// (`berth serve`'s default). Test hosts default to `--strict`: an app
    /// that cannot be deployed fails [`start`](Self::start).
    pub fn lenient(mut self) -> Self {
        self.lenient = true;
        self
    }

    /// Uses these connection limits on the front door.
    pub fn connections(mut self, limits: crate::server::ConnectionLimits) -> Self {
        self.connections = Some(limits);
        self
    }

    /// Uses this data dir instead of a temporary one (to test restarts).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Loads the apps and starts serving on loopback.
    ///
    /// # Errors
    /// Whatever [`Server::start`] refuses, or a failure to bind.
    pub async fn start(self) -> anyhow::Result<TestHost> {
        let (data_dir, temp) = match self.data_dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut options = ServerOptions::new(&data_dir);
        options.engine.max_instances = 300;
        options.engine.max_instances_per_app = Some(250);
        options.engine = self.engine.unwrap_or(options.engine);
        if let Some(limits) = self.connections {
            options.connections = limits;
        }
        options.drain_timeout = std::time::Duration::from_secs(10);
        if let Some(registry) = self.registry {
            options.registry = registry;
        }
        options.tls = self.tls;
        if let Some(traces) = self.traces {
            options.traces = traces;
        }
        options.bridge = test_bridge();
        options.strict = !self.lenient;
        if let Some(token) = &self.admin_token {
            options.admin_auth = Some(crate::api::AdminAuth::with_token(token)?);
        }
        let server = Arc::new(Server::start(&self.config, options).await?);
        let admin_token = match self.admin_token {
            Some(token) => token,
            None => crate::api::read_token_file(&data_dir)?
                .ok_or_else(|| anyhow::anyhow!("the host wrote no admin token"))?,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin_bind = self.admin_bind.unwrap_or(([127, 0, 0, 1], 0).into());
        let admin = tokio::net::TcpListener::bind(admin_bind).await?;
        let addr = listener.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.clone().run(listener, admin, async {
            let _ = rx.await;
        }));
        Ok(TestHost {
            addr,
            admin_addr,
            server,
            admin_token,
            data_dir,
            _temp: temp,
            stop: Some(tx),
            task: Some(task),
        })
    }
}
