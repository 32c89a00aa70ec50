//! One listener's connections, under abuse: a cap on how many are open,
//! timeouts on slow and idle clients, HTTP/2 stream and keep-alive limits,
//! and a graceful drain at shutdown.
//!
//! - **Connection cap**: each connection holds a permit of the listener's
//!   semaphore. With none left, a plain-HTTP connection gets an immediate
//!   `503` with `Retry-After` (one non-blocking write, so a client that does
//!   not read costs nothing) and is closed; a TLS one is closed. The close
//!   lingers: the write side is shut and what the client sent is read and
//!   dropped for up to [`REFUSAL_LINGER`], so the client's request does not
//!   make the kernel answer with a reset that discards the `503` (nginx's
//!   lingering close). At most [`MAX_LINGERING`] refusals linger at once;
//!   past that they close at once.
//! - **Slow clients**: hyper's header-read timeout (with a timer) closes a
//!   connection whose request head is not in within it; hyper also starts it
//!   as soon as a keep-alive connection goes idle, so an idle HTTP/1.1
//!   connection is closed after it too. A TLS handshake has the same time.
//! - **Idle connections** of either protocol with no request in flight for
//!   `idle_timeout` are shut down gracefully (HTTP/2 sends GOAWAY).
//! - **HTTP/2**: at most `h2_max_streams` concurrent streams per
//!   connection; keep-alive pings find dead peers.
//! - **Drain**: at shutdown every connection is told to finish gracefully;
//!   [`Listener::drain`] waits until all permits are back.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::http::{Body, GuardBody};

/// How the front door treats its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; the next is refused.
    pub max_connections: usize,
    /// Time for a request head (and for a TLS handshake) to arrive.
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_streams: u32,
    /// HTTP/2 keep-alive ping interval (and how long to wait for the answer).
    pub h2_keep_alive: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            h2_max_streams: 100,
            h2_keep_alive: Duration::from_secs(20),
        }
    }
}

impl ConnectionLimits {
    /// Limits for the admin listener: the same timeouts, fewer connections.
    pub fn admin(&self) -> Self {
        Self {
            max_connections: self.max_connections.min(256),
            ..self.clone()
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// The setting out of range, named.
    pub fn validate(&self) -> Result<(), String> {
        let secs = |d: Duration| d.as_secs_f64();
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(format!(
                "--max-connections must be from 1 to 1000000 (got {})",
                self.max_connections
            ));
        }
        for (name, d) in [
            ("--header-read-timeout", self.header_read_timeout),
            ("--idle-timeout", self.idle_timeout),
        ] {
            if !(0.1..=3600.0).contains(&secs(d)) {
                return Err(format!("{name} must be from 100ms to 1h (got {d:?})"));
            }
        }
        if !(1..=10_000).contains(&self.h2_max_streams) {
            return Err(format!(
                "the HTTP/2 stream limit must be from 1 to 10000 (got {})",
                self.h2_max_streams
            ));
        }
        Ok(())
    }
}

/// How long a refused connection is read and drained before it is closed.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Refused connections lingering at once (each holds a socket).
pub const MAX_LINGERING: usize = 64;
/// What a lingering refusal reads and drops at most.
const LINGER_BYTES: usize = 64 * 1024;

/// A listener's shared state: the cap, the shutdown signal, the counters.
pub struct Listener {
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
    refused: AtomicU64,
    lingering: Arc<AtomicUsize>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("limits", &self.limits)
            .field("open", &self.open())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener with `limits`, speaking TLS with `tls` when given.
    pub fn new(limits: ConnectionLimits, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            shutdown: watch::channel(false).0,
            refused: AtomicU64::new(0),
            lingering: Arc::new(AtomicUsize::new(0)),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.max_connections - self.permits.available_permits()
    }

    /// Connections refused at the cap so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Serves one accepted connection with `svc` on its own task, or refuses
    /// it when the cap is reached.
    pub fn accept<S, F>(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, svc: S)
    where
        S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.refuse(stream, peer);
            return;
        };
        let _ = stream.set_nodelay(true);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            match &me.tls {
                None => me.drive(stream, svc, permit).await,
                Some(acceptor) => {
                    match tokio::time::timeout(
                        me.limits.header_read_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => me.drive(tls, svc, permit).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }

    /// At the cap: one attempt to say so, then a lingering close.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed);
        if n.is_power_of_two() {
            tracing::warn!(%peer, max = self.limits.max_connections, refused = n + 1, "connection refused: the listener is at its connection limit");
        }
        if self.tls.is_none() {
            let body = format!(
                "berth: the front door is at its limit of {} connections\n",
                self.limits.max_connections
            );
            let msg = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.try_write(msg.as_bytes());
        }
        if self.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let lingering = Arc::clone(&self.lingering);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_LINGER, linger(stream)).await;
            lingering.fetch_sub(1, Ordering::AcqRel);
        });
    }

    async fn drive<I, S, F>(&self, io: I, svc: S, permit: OwnedSemaphorePermit)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let tracked = {
            let activity = activity.clone();
            hyper::service::service_fn(move |req| {
                let svc = svc.clone();
                let busy = activity.begin();
                async move {
                    let resp = svc(req).await?;
                    // In flight until the body is done (or dropped).
                    Ok::<_, Infallible>(resp.map(|b| GuardBody::wrap(b, busy)))
                }
            })
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.limits.h2_max_streams)
            .keep_alive_interval(self.limits.h2_keep_alive)
            .keep_alive_timeout(self.limits.h2_keep_alive);
        let conn = builder.serve_connection(TokioIo::new(io), tracked);
        tokio::pin!(conn);
        let mut shutdown = self.shutdown.subscribe();
        let mut closing = *shutdown.borrow();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        let tick = (self.limits.idle_timeout / 4).max(Duration::from_millis(50));
        let mut idle_check = tokio::time::interval(tick);
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("connection ended with error: {e}");
                    }
                    break;
                }
                changed = shutdown.changed(), if !closing => {
                    if changed.is_err() || *shutdown.borrow() {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                _ = idle_check.tick(), if !closing => {
                    if activity.idle_for() >= self.limits.idle_timeout {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        drop(permit);
    }

    /// Tells every connection to finish (in-flight requests complete, then
    /// the connection closes), and waits up to `timeout` for all of them.
    /// Returns whether all closed in time.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let _ = self.shutdown.send(true);
        let all = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout(timeout, self.permits.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Requests in flight on a connection and when it last changed.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `origin` at the last change.
    last: AtomicU64,
    origin: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self.clone())
    }

    /// How long nothing has been in flight (zero while something is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// One request in flight; ends when dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// Accept errors (EMFILE and the like) are logged and slowed down, not fatal.
pub async fn accept_ok(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok(pair) => Some(pair),
        Err(e) => {
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// The lingering close of a refused connection: shut the write side (after
/// the `503`), then read and drop what the client sends until it closes or
/// [`LINGER_BYTES`] have come; the caller bounds the time.
async fn linger(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while read < LINGER_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
}

/// Raises this process's soft limit of open files to its hard limit, so the
/// connection cap, not `EMFILE`, is what refuses connections. Returns the
/// limit in effect.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
