//! One listener's connections, under abuse: a cap on how many are open,
//! in all and per client address, timeouts on slow, silent and idle
//! clients, HTTP/2 stream and keep-alive limits, and a graceful drain at
//! shutdown.
//!
//! - **Connection cap**: each connection holds one of the listener's
//!   `max_connections` slots, and one of its client address's
//!   `max_connections_per_client` (an IPv6 client is its /64, the block one
//!   host is usually given). With none left, a plain-HTTP connection gets
//!   an immediate `503` with `Retry-After` that names the cap (one
//!   non-blocking write, so a client that does not read costs nothing) and
//!   is closed; a TLS one is closed. The close lingers: the write side is
//!   shut and what the client sent is read and dropped for up to
//!   [`REFUSAL_LINGER`], so the client's request does not make the kernel
//!   answer with a reset that discards the `503` (nginx's lingering close).
//!   At most [`MAX_LINGERING`] refusals linger at once; past that they close
//!   at once.
//! - **The admin listener** ([`Role::Admin`]) has its own slots
//!   ([`ADMIN_MAX_CONNECTIONS`], [`ADMIN_MAX_CONNECTIONS_PER_CLIENT`]) and its
//!   own words. At its cap a new connection does not wait for a slot: it
//!   takes the one of the connection that has had nothing in flight for
//!   longest (silent sockets first), which is closed. Only requests in
//!   flight hold admin slots, so silent or idle sockets, however many, never
//!   lock a token holder out.
//! - **Slow and silent clients**: a connection's first request head must be
//!   in within `header_read_timeout` of accept (a TLS handshake and an
//!   HTTP/2 preface included), or the connection is closed. After that,
//!   hyper's header-read timeout closes an HTTP/1.1 connection whose next
//!   request head is not in within it, idle keep-alive included.
//! - **Idle connections** of either protocol with no request in flight for
//!   `idle_timeout` are shut down gracefully (HTTP/2 sends GOAWAY).
//! - **HTTP/2**: at most `h2_max_streams` concurrent streams per
//!   connection; keep-alive pings find dead peers.
//! - **Requests with more than one `Host` header** get a `400`: which one
//!   routes would be a guess, and a proxy in front may have guessed the
//!   other.
//! - **Accept errors** (`EMFILE`, `ENFILE`: out of descriptors) are
//!   back-pressure: the listener pauses [`ACCEPT_PAUSE`] and retries, with a
//!   warning at most once a second ([`AcceptErrors`]).
//! - **Drain**: at shutdown every connection is told to finish gracefully;
//!   [`Listener::drain`] waits until all slots are back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::http::{Body, ClientAddr, ClientKey, GuardBody, plain_text};

/// How a listener treats its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; the next is refused.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) keeps open at once;
    /// `None`: [`ConnectionLimits::per_client`]'s default.
    pub max_connections_per_client: Option<usize>,
    /// Time from accept for the first request head to arrive (TLS
    /// handshake included), and for each later one on HTTP/1.1.
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
            max_connections_per_client: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            h2_max_streams: 100,
            h2_keep_alive: Duration::from_secs(20),
        }
    }
}

/// The admin listener's connection slots, whatever the front door has: the
/// API, the console and the probes need few, and silent ones give theirs up
/// (see the module docs).
pub const ADMIN_MAX_CONNECTIONS: usize = 256;
/// The admin listener's slots one client address may hold.
pub const ADMIN_MAX_CONNECTIONS_PER_CLIENT: usize = 64;

impl ConnectionLimits {
    /// Connections one client address may hold: the setting, or by default
    /// a sixteenth of `max_connections` and at least 8 (a browser opens six
    /// per host), so one address never holds more than a sixteenth of the
    /// front door and it takes sixteen to fill it, while hundreds of users
    /// behind one NAT address still fit (625 at the default cap).
    pub fn per_client(&self) -> usize {
        self.max_connections_per_client
            .unwrap_or((self.max_connections / 16).max(8))
            .min(self.max_connections)
    }

    /// Limits for the admin listener: the same timeouts, its own slots.
    pub fn admin(&self) -> Self {
        Self {
            max_connections: ADMIN_MAX_CONNECTIONS,
            max_connections_per_client: Some(ADMIN_MAX_CONNECTIONS_PER_CLIENT),
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
        if let Some(n) = self.max_connections_per_client
            && !(1..=self.max_connections).contains(&n)
        {
            return Err(format!(
                "--max-connections-per-client must be from 1 to --max-connections ({}) (got {n})",
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
/// The pause after an accept error before the next accept.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Which listener: what it calls itself in refusals, and how it treats a
/// full house.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Tenants' traffic: at the cap, new connections are refused.
    FrontDoor,
    /// The admin API, console and probes: at the cap, a new connection
    /// displaces the longest-idle one.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::FrontDoor => "the front door",
            Self::Admin => "the admin listener",
        }
    }
}

/// Which cap a refused connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// The listener's `max_connections`.
    Listener,
    /// Its client address's `max_connections_per_client`.
    Client(ClientKey),
}

/// One open connection, as the listener sees it.
#[derive(Debug)]
struct Conn {
    key: ClientKey,
    activity: Arc<Activity>,
    /// Told when an admin connection takes this one's slot.
    displace: Notify,
}

/// The listener's open connections.
#[derive(Debug, Default)]
struct Slots {
    per_client: HashMap<ClientKey, usize>,
    conns: HashMap<u64, Arc<Conn>>,
    next_id: u64,
}

impl Slots {
    /// One connection of `key` fewer.
    fn release(&mut self, key: ClientKey) {
        if let Some(n) = self.per_client.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&key);
            }
        }
    }
}

/// A connection's slot; given back when dropped.
struct Slot {
    listener: Arc<Listener>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let open = {
            let mut slots = self.listener.lock_slots();
            // A displaced connection gave its slot away already.
            if slots.conns.remove(&self.id).is_some() {
                slots.release(self.conn.key);
            }
            slots.conns.len()
        };
        self.listener.open.send_replace(open);
    }
}

/// A listener's shared state: the caps, the shutdown signal, the counters.
pub struct Listener {
    role: Role,
    limits: ConnectionLimits,
    slots: Mutex<Slots>,
    /// Connections open now (mirrors `slots`, for [`Listener::drain`]).
    open: watch::Sender<usize>,
    /// Cancelled when the connections are to finish (see
    /// [`Listener::drain`]).
    shutdown: CancellationToken,
    refused: AtomicU64,
    displaced: AtomicU64,
    lingering: Arc<AtomicUsize>,
    accept_errors: AcceptErrors,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("role", &self.role)
            .field("limits", &self.limits)
            .field("open", &self.open())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener in `role` with `limits`, speaking TLS with `tls` when
    /// given.
    pub fn new(
        role: Role,
        limits: ConnectionLimits,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        Self {
            role,
            limits,
            slots: Mutex::new(Slots::default()),
            open: watch::channel(0).0,
            shutdown: CancellationToken::new(),
            refused: AtomicU64::new(0),
            displaced: AtomicU64::new(0),
            lingering: Arc::new(AtomicUsize::new(0)),
            accept_errors: AcceptErrors::default(),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
        }
    }

    /// The connections finish when `token` is cancelled (the host's
    /// shutdown, a child of its token) or at [`Listener::drain`].
    #[must_use]
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        // The critical sections only count; a panic in one leaves the
        // counts usable.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Connections refused at a cap so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Idle admin connections closed to make room for new ones so far.
    pub fn displaced(&self) -> u64 {
        self.displaced.load(Ordering::Relaxed)
    }

    /// Accept errors so far (see [`Listener::accept_failed`]).
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.count.load(Ordering::Relaxed)
    }

    /// A slot for a connection from `key`, or the cap that is full. On the
    /// admin listener, a full cap first hands over the slot of the
    /// connection within its reach that has had nothing in flight for
    /// longest (told to close; it no longer counts), under the same lock,
    /// so no other newcomer can take it meanwhile.
    fn admit(self: &Arc<Self>, key: ClientKey) -> Result<Slot, Full> {
        let (slot, open) = {
            let mut slots = self.lock_slots();
            loop {
                let full = if slots.conns.len() >= self.limits.max_connections {
                    Full::Listener
                } else if slots.per_client.get(&key).copied().unwrap_or(0)
                    >= self.limits.per_client()
                {
                    Full::Client(key)
                } else {
                    break;
                };
                if self.role != Role::Admin || !self.displace_idle(&mut slots, full) {
                    return Err(full);
                }
            }
            let of_client = slots.per_client.entry(key).or_insert(0);
            *of_client += 1;
            let id = slots.next_id;
            slots.next_id += 1;
            let conn = Arc::new(Conn {
                key,
                activity: Arc::new(Activity::new()),
                displace: Notify::new(),
            });
            slots.conns.insert(id, conn.clone());
            let slot = Slot {
                listener: Arc::clone(self),
                id,
                conn,
            };
            (slot, slots.conns.len())
        };
        self.open.send_replace(open);
        Ok(slot)
    }

    /// Takes the slot of the connection within `full`'s reach that has had
    /// nothing in flight for longest, and tells it to close. Returns
    /// whether there was one.
    fn displace_idle(&self, slots: &mut Slots, full: Full) -> bool {
        let victim = slots
            .conns
            .iter()
            .filter(|(_, c)| match full {
                Full::Listener => true,
                Full::Client(key) => c.key == key,
            })
            .filter_map(|(id, c)| c.activity.idle_for().map(|idle| (idle, *id)))
            .max_by_key(|(idle, _)| *idle);
        let Some((_, id)) = victim else {
            return false;
        };
        let Some(conn) = slots.conns.remove(&id) else {
            return false;
        };
        slots.release(conn.key);
        conn.displace.notify_one();
        self.displaced.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Serves one accepted connection with `svc` on its own task, or refuses
    /// it when a cap is reached.
    pub fn accept<S, F>(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, svc: S)
    where
        S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        let accepted = Instant::now();
        let key = ClientKey::of(peer.ip());
        let _ = stream.set_nodelay(true);
        match self.admit(key) {
            Ok(slot) => {
                let me = Arc::clone(self);
                tokio::spawn(async move { me.serve(stream, peer, svc, slot, accepted).await });
            }
            Err(full) => self.refuse(stream, peer, full),
        }
    }

    /// A connection that has its slot: the TLS handshake if any, then HTTP.
    async fn serve<S, F>(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        svc: S,
        slot: Slot,
        accepted: Instant,
    ) where
        S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        let first_head_by = accepted + self.limits.header_read_timeout;
        match &self.tls {
            None => self.drive(stream, peer, svc, slot, first_head_by).await,
            Some(acceptor) => {
                match tokio::time::timeout_at(first_head_by, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => self.drive(tls, peer, svc, slot, first_head_by).await,
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    }

    /// At a cap: one attempt to say which, then a lingering close.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr, full: Full) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed);
        let body = refusal(self.role, &self.limits, full);
        if n.is_power_of_two() {
            tracing::warn!(%peer, refused = n + 1, "connection refused: {}", body.trim_start_matches("berth: ").trim_end());
        }
        if self.tls.is_none() {
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

    async fn drive<I, S, F>(
        &self,
        io: I,
        peer: SocketAddr,
        svc: S,
        slot: Slot,
        first_head_by: Instant,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        let activity = slot.conn.activity.clone();
        let tracked = {
            let activity = activity.clone();
            hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let svc = svc.clone();
                let busy = activity.begin();
                req.extensions_mut().insert(ClientAddr(peer));
                async move {
                    let resp = if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
                        plain_text(
                            StatusCode::BAD_REQUEST,
                            "berth: the request has more than one Host header\n",
                        )
                    } else {
                        svc(req).await?
                    };
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
        let shutdown = self.shutdown.clone();
        let mut closing = shutdown.is_cancelled();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        let tick = (self.limits.idle_timeout / 4).max(Duration::from_millis(50));
        let mut idle_check = tokio::time::interval(tick);
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let first_head = tokio::time::sleep_until(first_head_by);
        tokio::pin!(first_head);
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "connection ended with error: {e}");
                    }
                    break;
                }
                // Silent, or a preface and nothing more: hyper's own timer
                // starts only once the protocol is known.
                () = &mut first_head, if !activity.started() => {
                    tracing::debug!(%peer, "closed: no request head within the header-read timeout of accept");
                    break;
                }
                () = slot.conn.displace.notified() => {
                    // Its slot is gone: close, even if a request just began.
                    tracing::debug!(%peer, "closed: an idle admin connection gave its slot to a new one");
                    break;
                }
                () = shutdown.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = idle_check.tick(), if !closing => {
                    if activity.idle_for().is_some_and(|idle| idle >= self.limits.idle_timeout) {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        drop(slot);
    }

    /// Tells every connection to finish (in-flight requests complete, then
    /// the connection closes), and waits up to `timeout` for all of them.
    /// Returns whether all closed in time.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.shutdown.cancel();
        let mut open = self.open.subscribe();
        tokio::time::timeout(timeout, open.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// An accept error: out of descriptors (`EMFILE`, `ENFILE`) or of
    /// kernel memory, or a connection that died in the backlog. Logged at
    /// most once a second (with how many there were), counted, and
    /// followed by a pause of [`ACCEPT_PAUSE`], so a full descriptor table
    /// is back-pressure (the backlog holds the clients meanwhile), never a
    /// loop of errors.
    pub async fn accept_failed(&self, error: std::io::Error) {
        self.accept_errors.record(self.role, &error);
        tokio::time::sleep(ACCEPT_PAUSE).await;
    }
}

/// The body of a refusal: which listener, which cap, its number.
fn refusal(role: Role, limits: &ConnectionLimits, full: Full) -> String {
    let name = role.name();
    match full {
        Full::Listener => format!(
            "berth: {name} is at its limit of {} connections\n",
            limits.max_connections
        ),
        Full::Client(_) => format!(
            "berth: {name} allows {} connections per client address, and this address has them all open\n",
            limits.per_client()
        ),
    }
}

/// A listener's accept errors and when one was last logged.
#[derive(Debug, Default)]
struct AcceptErrors {
    count: AtomicU64,
    /// `count` when a warning was last logged.
    logged: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl AcceptErrors {
    fn record(&self, role: Role, error: &std::io::Error) {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self
            .last_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        *last = Some(now);
        let since = count - self.logged.swap(count, Ordering::Relaxed);
        let out_of_files = matches!(
            rustix::io::Errno::from_io_error(error),
            Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
        );
        tracing::warn!(
            listener = role.name(),
            errors = since,
            total = count,
            pause = ?ACCEPT_PAUSE,
            out_of_files,
            "accept failed: {error}; pausing before the next accept"
        );
    }
}

/// Requests in flight on a connection and when it last changed.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Whether a request has begun.
    started: AtomicBool,
    /// Milliseconds since `origin` at the last change.
    last: AtomicU64,
    origin: Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            last: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.started.store(true, Ordering::Release);
        self.touch();
        Busy(self.clone())
    }

    fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// How long nothing has been in flight; `None` while something is.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        Some(self.origin.elapsed().saturating_sub(last))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_client_cap_defaults_to_a_sixteenth_and_at_least_eight() {
        let with = |max| ConnectionLimits {
            max_connections: max,
            ..ConnectionLimits::default()
        };
        assert_eq!(ConnectionLimits::default().per_client(), 625);
        assert_eq!(with(64).per_client(), 8);
        assert_eq!(with(4).per_client(), 4);
        let mut set = with(100);
        set.max_connections_per_client = Some(100);
        assert!(set.validate().is_ok());
        set.max_connections_per_client = Some(101);
        let e = set.validate().unwrap_err();
        assert!(e.contains("--max-connections-per-client"), "{e}");
        let admin = ConnectionLimits::default().admin();
        assert_eq!(
            (admin.max_connections, admin.per_client()),
            (ADMIN_MAX_CONNECTIONS, ADMIN_MAX_CONNECTIONS_PER_CLIENT)
        );
    }

    #[test]
    fn each_listener_refuses_in_its_own_words() {
        let front = ConnectionLimits::default();
        let admin = front.admin();
        let key = ClientKey::of("127.0.0.1".parse().unwrap());
        assert_eq!(
            refusal(Role::Admin, &admin, Full::Listener),
            "berth: the admin listener is at its limit of 256 connections\n"
        );
        assert_eq!(
            refusal(Role::Admin, &admin, Full::Client(key)),
            "berth: the admin listener allows 64 connections per client address, and this address has them all open\n"
        );
        assert_eq!(
            refusal(Role::FrontDoor, &front, Full::Listener),
            "berth: the front door is at its limit of 10000 connections\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_pause_and_are_logged_at_most_once_a_second() {
        let listener = Listener::new(Role::FrontDoor, ConnectionLimits::default(), None);
        let start = Instant::now();
        for _ in 0..30 {
            listener
                .accept_failed(std::io::Error::from_raw_os_error(24))
                .await;
        }
        assert_eq!(start.elapsed(), ACCEPT_PAUSE * 30);
        assert_eq!(listener.accept_errors(), 30);
        // Three seconds of errors: the first, then one a second.
        assert_eq!(listener.accept_errors.logged.load(Ordering::Relaxed), 21);
    }
}
