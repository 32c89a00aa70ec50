//! Containers as a [`Backend`]: each instance is one runc container (through
//! the [`Shim`]), reached by a keep-alive HTTP connection pool.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use berth_wasm::networks::AllowedNetworks;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::RwLock;

use super::{Container, ContainerLimits, ImageConfig, InstanceSpec, Network, Probe, Seccomp, Shim};
use crate::backend::{Backend, ColdStartSplit, Instance, Kind, ServeError};
use crate::config::spec::SeccompMode;
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
    #[allow(clippy::too_many_arguments)] // One per piece of a revision.
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
        let network = match self.spec.container.network {
            NetworkMode::Host => Network::Host,
            NetworkMode::Isolated => Network::Isolated,
            NetworkMode::None => Network::None,
        };
        // Isolated instances have a namespace each: Cloud Run's default port.
        let port = match network {
            Network::Host => free_port()?,
            Network::Isolated | Network::None => 8080,
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
            seccomp: match c.seccomp {
                SeccompMode::Default => Seccomp::Default,
                SeccompMode::Unconfined => Seccomp::Unconfined,
            },
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
        let container = self.shim.start(&self.rootfs, spec).await?;
        // The cgroupsPath the shim gives every container (see instance.rs).
        let metering = self.metrics.clone().map(|metrics| {
            let cgroup = Path::new("/berth").join(container.id());
            metrics.track_cgroup(&self.app, &cgroup);
            (metrics, cgroup)
        });
        let timings = container.start_timings();
        // No network phase on the host's network (nothing is made).
        let mut phases = vec![("prepare", timings.prepare)];
        if network != Network::Host {
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
        let done = Arc::new(AtomicBool::new(false));
        let (stdout, stderr) = container.log_paths();
        let logs = Arc::new(LogForwarder {
            log: self.log.clone(),
            instance: container.id().to_string(),
            tails: std::sync::Mutex::new((OutputTail::new(stdout), OutputTail::new(stderr))),
        });
        tokio::spawn(forward_logs(logs.clone(), done.clone()));
        let container = Arc::new(RwLock::new(Some(container)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(Dial {
                container: container.clone(),
            });
        Ok(Arc::new(ContainerInstance {
            container,
            client,
            logs_done: done,
            metering,
            logs,
            split,
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
    logs_done: Arc<AtomicBool>,
    /// Where its usage is metered, and its cgroup.
    metering: Option<(Arc<Metrics>, PathBuf)>,
    logs: Arc<LogForwarder>,
    /// Where its cold start spent its time.
    split: ColdStartSplit,
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
        match tokio::time::timeout_at(deadline, self.client.request(req)).await {
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
        }
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
        self.logs_done.store(true, Ordering::Release);
        // What the container wrote while stopping; then the raw files go:
        // everything in them is in the app log.
        self.logs.pump(true);
        self.logs.remove();
    }
}

/// Most bytes of a container's raw stdout (and, apart, stderr) file that wait
/// to be forwarded: a container writing faster than its log is forwarded
/// (up to 1 MiB every 200 ms, 5 MiB/s a stream) loses
/// the oldest of what waits beyond this, with a marker line saying how much.
pub const MAX_LOG_BACKLOG: u64 = 4 << 20;

/// What one pump forwards at most, per stream.
const FORWARD_CHUNK: u64 = 1 << 20;

/// How often a running instance's output is forwarded.
const FORWARD_EVERY: Duration = Duration::from_millis(200);

/// Copies a container's stdout and stderr files into the app log, line by
/// line, tagged with the instance id, and frees what it has copied.
///
/// The files are the container's own stdout and stderr (opened `O_APPEND`
/// by the shim, removed once the instance has stopped and they are
/// forwarded), so they cannot be rotated under it:
/// forwarded bytes are instead punched out (`fallocate(PUNCH_HOLE)`), which
/// frees their blocks and keeps every offset valid (the file's size goes on
/// growing, sparse). What waits is bounded by [`MAX_LOG_BACKLOG`] at each
/// pump: a raw log holds at most that on disk, plus what the container
/// writes between two pumps.
struct LogForwarder {
    log: Arc<AppLog>,
    instance: String,
    tails: std::sync::Mutex<(OutputTail, OutputTail)>,
}

impl LogForwarder {
    /// Removes the raw files (once the instance has stopped and everything
    /// was pumped).
    fn remove(&self) {
        let tails = self.tails.lock().unwrap_or_else(|e| e.into_inner());
        for tail in [&tails.0, &tails.1] {
            match std::fs::remove_file(&tail.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %tail.path.display(), "cannot remove a raw container log: {e}");
                }
            }
        }
    }

    fn pump(&self, finish: bool) {
        let mut tails = self.tails.lock().unwrap_or_else(|e| e.into_inner());
        let (out, err) = &mut *tails;
        for (tail, stream) in [(out, "stdout"), (err, "stderr")] {
            let mut read = tail.pump(&self.log, &self.instance, stream);
            // At the end, everything that waits (at most the backlog cap).
            while finish && read > 0 {
                read = tail.pump(&self.log, &self.instance, stream);
            }
            if finish {
                tail.flush(&self.log, &self.instance, stream);
            }
        }
    }
}

/// Forwards every [`FORWARD_EVERY`] until the instance has stopped.
async fn forward_logs(logs: Arc<LogForwarder>, done: Arc<AtomicBool>) {
    while !done.load(Ordering::Acquire) {
        logs.pump(false);
        tokio::time::sleep(FORWARD_EVERY).await;
    }
}

/// One raw output file and how far it has been forwarded.
struct OutputTail {
    path: PathBuf,
    /// The next byte to forward.
    pos: u64,
    /// Bytes before this are punched out.
    freed: u64,
    partial: Vec<u8>,
    /// Punching failed once (e.g. a filesystem without it): said, not again.
    cannot_free: bool,
}

impl OutputTail {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            pos: 0,
            freed: 0,
            partial: Vec::new(),
            cannot_free: false,
        }
    }

    /// Forwards what was written since the last pump (up to
    /// [`FORWARD_CHUNK`]), first dropping what waits beyond
    /// [`MAX_LOG_BACKLOG`]; frees what it forwarded. Returns how many bytes
    /// it read.
    fn pump(&mut self, log: &AppLog, instance: &str, stream: &str) -> u64 {
        let Ok(mut file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
        else {
            return 0;
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return 0;
        };
        if len.saturating_sub(self.pos) > MAX_LOG_BACKLOG {
            // The line in progress loses its end: forward its start apart.
            self.flush(log, instance, stream);
            let skip_to = len - MAX_LOG_BACKLOG;
            let dropped = skip_to - self.pos;
            self.pos = skip_to;
            let marker = format!(
                "berth: dropped {dropped} bytes of {stream}: the container wrote faster than its \
                 output is forwarded (at most {MAX_LOG_BACKLOG} bytes wait)"
            );
            log.line(instance, stream, marker.as_bytes());
        }
        let bytes = read_from(&mut file, self.pos, len).unwrap_or_default();
        self.pos += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            log.line(instance, stream, &line);
        }
        if self.partial.len() > crate::logs::MAX_LINE_BYTES {
            let line = std::mem::take(&mut self.partial);
            log.line(instance, stream, &line);
        }
        self.free(&file);
        bytes.len() as u64
    }

    /// Punches out the whole 4 KiB blocks before `pos`, all forwarded (or
    /// dropped). The partial line kept in memory is past them or copied.
    fn free(&mut self, file: &std::fs::File) {
        use rustix::fs::FallocateFlags;
        let end = self.pos - self.pos % 4096;
        if end <= self.freed || self.cannot_free {
            return;
        }
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(file, flags, self.freed, end - self.freed) {
            Ok(()) => self.freed = end,
            Err(e) => {
                self.cannot_free = true;
                tracing::warn!(path = %self.path.display(), error = %e, "cannot free forwarded container output; the file keeps growing");
            }
        }
    }

    fn flush(&mut self, log: &AppLog, instance: &str, stream: &str) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            log.line(instance, stream, &line);
        }
    }
}

/// Up to [`FORWARD_CHUNK`] bytes of `file` from `pos` (its length `len`).
fn read_from(file: &mut std::fs::File, pos: u64, len: u64) -> std::io::Result<Vec<u8>> {
    if len <= pos {
        return Ok(Vec::new());
    }
    file.seek(SeekFrom::Start(pos))?;
    let mut buf = Vec::with_capacity((len - pos).min(FORWARD_CHUNK) as usize);
    file.take(FORWARD_CHUNK).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn forwarded_output_is_freed_and_a_flood_is_capped() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let log = AppLog::open(&dir.path().join("logs"), "app").unwrap();
        let raw = dir.path().join("x.stdout.log");
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&raw)
            .unwrap();
        let mut tail = OutputTail::new(raw.clone());

        // Forwarded, then freed; the writer's appends still land at the end.
        let line = format!("{}\n", "a".repeat(1023));
        for _ in 0..256 {
            writer.write_all(line.as_bytes()).unwrap();
        }
        assert!(blocks(&raw) >= 256 << 10);
        while tail.pump(&log, "i", "stdout") > 0 {}
        assert_eq!(tail.pos, 256 << 10);
        assert!(blocks(&raw) < 8 << 10, "freed: {}", blocks(&raw));
        writer.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::metadata(&raw).unwrap().len(), (256 << 10) + 6);
        tail.pump(&log, "i", "stdout");
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 257);
        assert!(
            text.ends_with(" i stdout after\n"),
            "{}",
            &text[text.len() - 100..]
        );

        // A flood: what waits beyond the cap is dropped, with a marker.
        let flood = 3 * MAX_LOG_BACKLOG;
        for i in 0..flood / 1024 {
            writer.write_all(format!("{i:>1023}\n").as_bytes()).unwrap();
        }
        writer.write_all(b"last\n").unwrap();
        tail.pump(&log, "i", "stdout");
        assert!(
            blocks(&raw) <= MAX_LOG_BACKLOG + (8 << 10),
            "capped: {}",
            blocks(&raw)
        );
        while tail.pump(&log, "i", "stdout") > 0 {}
        assert!(blocks(&raw) < 8 << 10, "freed: {}", blocks(&raw));
        let text = std::fs::read_to_string(log.path()).unwrap();
        let marker = format!(
            "berth: dropped {} bytes of stdout",
            flood + 5 - MAX_LOG_BACKLOG
        );
        assert!(text.contains(&marker), "{marker}");
        let after: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains(&marker))
            .skip(1)
            .collect();
        // The newest 4 MiB are forwarded in order: the end of the line the
        // cut fell in (line 8192, less its first 5 bytes), the lines after
        // it, `last`.
        assert_eq!(after.len(), (MAX_LOG_BACKLOG / 1024) as usize + 1);
        assert!(after.last().unwrap().ends_with(" i stdout last"));
        let number = |l: &str| -> u64 { l.rsplit(' ').next().unwrap().parse().unwrap() };
        assert_eq!(number(after[0]), (flood + 5 - MAX_LOG_BACKLOG) / 1024);
        assert_eq!(number(after[1]), number(after[0]) + 1);
    }
}
