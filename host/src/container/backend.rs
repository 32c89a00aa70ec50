//! Containers as a [`Backend`]: each instance is one runc container (through
//! the [`Shim`]), reached by a keep-alive HTTP connection pool.

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_wasm::networks::AllowedNetworks;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::RwLock;

use super::{Container, ContainerLimits, ImageConfig, InstanceSpec, Probe, Shim};
use crate::backend::{Backend, ColdStartSplit, Instance, Kind, ServeError};
use crate::config::{AppSpec, NetworkMode};
use crate::http::{Body, BoxError, DeadlineBody, ReqBody, RequestInfo};
use crate::logs::AppLog;
use crate::metrics::Metrics;
use crate::secrets::SecretStore;

/// Starts runc containers of one revision.
pub struct ContainerBackend {
    shim: Arc<Shim>,
    rootfs: PathBuf,
    image: ImageConfig,
    app: String,
    revision: String,
    spec: AppSpec,
    log: Arc<AppLog>,
    secrets: Arc<SecretStore>,
    metrics: Option<Arc<Metrics>>,
    nonce: u32,
}

impl fmt::Debug for ContainerBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerBackend")
            .field("revision", &self.revision)
            .field("rootfs", &self.rootfs)
            .finish_non_exhaustive()
    }
}

impl ContainerBackend {
    /// A backend running `image` over the unpacked `rootfs`; `secrets`
    /// gives the values of the app's secrets at each instance start.
    #[expect(clippy::too_many_arguments, reason = "one per piece of a revision")]
    pub fn new(
        shim: Arc<Shim>,
        rootfs: PathBuf,
        image: ImageConfig,
        app: &str,
        revision: &str,
        spec: AppSpec,
        log: Arc<AppLog>,
        secrets: Arc<SecretStore>,
    ) -> Self {
        Self {
            shim,
            rootfs,
            image,
            app: app.into(),
            revision: revision.into(),
            spec,
            log,
            secrets,
            metrics: None,
            nonce: {
                use std::hash::BuildHasher;
                std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32
            },
        }
    }
}

impl ContainerBackend {
    /// Meters each instance's CPU and memory from its cgroup into `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// A free loopback port for a host-network instance.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[async_trait::async_trait]
impl Backend for ContainerBackend {
    fn kind(&self) -> Kind {
        Kind::Container
    }

    async fn start_instance(&self, id: u64) -> anyhow::Result<Arc<dyn Instance>> {
        let network = self.spec.container.network;
        // Isolated instances have a namespace each: Cloud Run's default port.
        let port = match network {
            NetworkMode::Host => free_port()?,
            NetworkMode::Isolated | NetworkMode::None => 8080,
        };
        let c = &self.spec.container;
        let spec = InstanceSpec {
            // Unique across berth processes too: cgroup paths are machine-wide.
            id: {
                let suffix = format!("-{id}-{:08x}", self.nonce);
                let keep = self
                    .revision
                    .len()
                    .min(super::spec::MAX_ID_LEN - suffix.len());
                format!("{}{suffix}", &self.revision[..keep])
            },
            app: self.app.clone(),
            revision: self.revision.clone(),
            image: self.image.clone(),
            env: {
                let mut env = self.spec.env.clone();
                for (var, value) in self.secrets.resolve(&self.spec.secrets)? {
                    env.insert(var, value.expose().to_string());
                }
                env
            },
            port,
            limits: ContainerLimits {
                memory: Some(self.spec.limits.memory),
                cpus: c.cpu,
                pids: c.pids,
            },
            network,
            seccomp: c.seccomp,
            readiness: match &c.readiness_path {
                Some(path) => Probe::Http { path: path.clone() },
                None => Probe::Tcp,
            },
            startup_timeout: c.startup_timeout,
            stop_grace: c.shutdown_grace,
            // Checked at deploy (AppSpec::validate): IPv4, bounded.
            allowed_networks: AllowedNetworks::parse(&self.spec.allowed_networks)
                .map_err(anyhow::Error::msg)?
                .networks()
                .to_vec(),
        };
        let container = self
            .shim
            .start(&self.rootfs, spec, self.log.clone())
            .await?;
        // The cgroupsPath the shim gives every container (`start.rs`).
        let metering = self.metrics.clone().map(|metrics| {
            let cgroup = Path::new("/berth").join(container.id());
            metrics.track_cgroup(&self.app, &cgroup);
            (metrics, cgroup)
        });
        let timings = container.start_timings();
        // No network phase on the host's network (nothing is made).
        let mut phases = vec![("prepare", timings.prepare)];
        if network != NetworkMode::Host {
            phases.push(("network", timings.network));
        }
        phases.extend([("run", timings.run), ("ready", timings.ready)]);
        let split = ColdStartSplit { phases };
        tracing::info!(
            app = %self.app,
            instance = container.id(),
            port,
            cold_start = %split,
            "container ready"
        );
        let container = Arc::new(RwLock::new(Some(container)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(Dial {
                container: container.clone(),
            });
        Ok(Arc::new(ContainerInstance {
            container,
            client,
            metering,
            split,
            log: self.log.clone(),
            timeout: self.spec.limits.timeout,
        }))
    }
}

/// Makes connections to one container (inside its namespace if isolated).
#[derive(Clone)]
struct Dial {
    container: Arc<RwLock<Option<Container>>>,
}

impl tower_service::Service<Uri> for Dial {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let container = self.container.clone();
        Box::pin(async move {
            let guard = container.read().await;
            let c = guard.as_ref().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotConnected, "the instance is stopped")
            })?;
            Ok(TokioIo::new(c.connect().await?))
        })
    }
}

/// One runc container serving requests through a connection pool.
pub struct ContainerInstance {
    container: Arc<RwLock<Option<Container>>>,
    client: Client<Dial, ReqBody>,
    /// Where its usage is metered, and its cgroup.
    metering: Option<(Arc<Metrics>, PathBuf)>,
    /// Where its cold start spent its time.
    split: ColdStartSplit,
    /// The app's log, for the requests berth failed on.
    log: Arc<AppLog>,
    /// The app's `limits.timeout`: from the request's arrival to the end of
    /// the response.
    timeout: Duration,
}

/// Removes the hop-by-hop fields of a message berth forwards (RFC 9110
/// §7.6.1): `Connection`, the fields it names, and the classic ones. Passed
/// through, an instance's `Connection: close` would close the client's
/// keep-alive connection to the front door after every response.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<http::HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

impl fmt::Debug for ContainerInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerInstance").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Instance for ContainerInstance {
    async fn serve(
        &self,
        req: Request<ReqBody>,
        info: &RequestInfo,
    ) -> Result<Response<Body>, ServeError> {
        let (mut parts, body) = req.into_parts();
        // The pool keys connections by authority; the dialer ignores it.
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = format!("http://instance{path}")
            .parse()
            .map_err(|e| ServeError::Internal(format!("bad request URI: {e}")))?;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        let req = Request::from_parts(parts, body);
        let deadline = tokio::time::Instant::from_std(info.accepted + self.timeout);
        let result = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Err(_) => Err(ServeError::Timeout(self.timeout)),
            Ok(Ok(mut resp)) => {
                strip_hop_by_hop(resp.headers_mut());
                Ok(resp.map(|b| {
                    let body = b.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
                    DeadlineBody::wrap(body, deadline, self.timeout)
                }))
            }
            Ok(Err(e)) if e.is_connect() || !self.is_alive() => {
                Err(ServeError::Crashed(format!("{e}")))
            }
            Ok(Err(e)) => Err(ServeError::BadUpstream(format!("{e}"))),
        };
        // What the container printed cannot be told apart by request; a
        // request berth failed on can: its line carries the request's tag.
        if let Err(e) = &result {
            self.log.line(
                &info.log_tag,
                "berth",
                format!("request failed: {e}").as_bytes(),
            );
        }
        result
    }

    fn cold_start_split(&self) -> Option<ColdStartSplit> {
        Some(self.split.clone())
    }

    fn is_alive(&self) -> bool {
        match self.container.try_read() {
            Ok(guard) => guard.as_ref().is_some_and(|c| !c.has_exited()),
            // Being stopped.
            Err(_) => false,
        }
    }

    async fn stop(&self, grace: Duration) {
        let container = self.container.write().await.take();
        if let Some(c) = container {
            // The last reading, before the cgroup goes with the container.
            if let Some((metrics, cgroup)) = &self.metering {
                metrics.untrack_cgroup(cgroup);
            }
            let id = c.id().to_string();
            if let Err(e) = c.stop(grace).await {
                tracing::warn!(instance = %id, "stopping the container: {e}");
            }
        }
    }
}
