//! Outbound HTTP from guests, checked twice.
//!
//! 1. **By name**: a guest may only send requests to hosts its app lists in
//!    `allowed_outbound_hosts`. Anything else fails *in the guest* with
//!    `HTTP-request-denied`, at once, without a DNS lookup or a connection.
//! 2. **Where it connects**: berth resolves the name itself and refuses
//!    (the guest gets `destination-IP-prohibited`) every address that is
//!    the host's own ([`OwnAddrs`]: any address of any interface, kept
//!    current, the container bridge's included) or in a refused range
//!    ([`crate::networks::REFUSED`]: loopback, link-local including the
//!    cloud metadata address 169.254.169.254, private, shared, ULA,
//!    unspecified, multicast and reserved), unless the allow-list names that
//!    literal address (`"127.0.0.1:9000"`); an address in a refused range
//!    (not the host's own) also passes when the app's `allowed_networks`
//!    holds it. The connection then goes to the very address that was
//!    checked, so a name that resolves differently a moment later (DNS
//!    rebinding) gains nothing. TLS still verifies the certificate for the
//!    name.
//!
//! Redirects are never followed: a `3xx` is handed to the guest as is.
//!
//! 3. **How many at once**: [`caps`] bounds the connections a request, an
//!    app and the whole host hold, and the DNS lookups in flight; past a cap
//!    the guest gets `connection-limit-reached` at once.
//!
//! Connections are HTTP/1.1 and kept for the app's next requests
//! ([`pool`]): under the checked address and the verified name, so the two
//! checks above hold for a reused connection exactly as for a new one.
//!
//! Errors handed to a guest are wasi:http error codes, and where a code
//! carries text it is berth's own words: never a host path, a backtrace or
//! another error's debug output.

pub mod caps;
pub mod pool;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::networks::{AllowedNetworks, is_internal};
use crate::own_addrs::OwnAddrs;
use crate::pattern::HostPattern;
use crate::setting::InvalidSetting;
use caps::{CapReached, HeldConnection, OutboundCaps, RequestPermit};
use pool::{Conn, ConnHold, OutboundCounters, OutboundPool, PoolKey, PoolSettings};

/// How long a name may take to resolve.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect timeout when the guest sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// First-byte timeout when the guest sets none (the request's own deadline
/// usually ends it first).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(600);

/// The allow-list, address rule and connection caps of one app, shared by
/// all its requests ([`for_request`](Self::for_request) gives each request
/// its own connection count).
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    allowed: Arc<[HostPattern]>,
    networks: AllowedNetworks,
    own: Arc<OwnAddrs>,
    caps: OutboundCaps,
    /// The app's idle connections.
    pool: OutboundPool,
    /// Set for a concurrently used instance: each connection counts
    /// against the request whose task opens it.
    tasks: Option<Arc<crate::tasks::Tasks>>,
    /// The trace of the request this store serves (set when the request
    /// takes the store): each outbound request is a client span under it.
    trace: crate::trace::Trace,
}

impl OutboundPolicy {
    /// Builds the policy from config entries: `allowed_outbound_hosts`,
    /// `allowed_networks`; the host's own addresses come from the
    /// process's tracker ([`OwnAddrs::get`]); `caps` are the app's; its
    /// connections are pooled as `pool` says.
    ///
    /// # Errors
    /// The key of the first entry refused, and why.
    pub fn new(
        hosts: &[String],
        networks: &[String],
        caps: OutboundCaps,
        pool: PoolSettings,
    ) -> Result<Self, InvalidSetting> {
        Self::with_own(hosts, networks, OwnAddrs::get(), caps).map(|p| p.pooled(pool))
    }

    /// The same policy with a new, empty pool of connections as `settings`
    /// say (counting into the pool's counters so far).
    #[must_use]
    pub fn pooled(self, settings: PoolSettings) -> Self {
        let counters = self.pool.counters().clone();
        self.with_pool(settings, counters)
    }

    /// The same policy with a new, empty pool as `settings` say, counting
    /// into `counters` (an app's, kept across scale to zero).
    #[must_use]
    pub fn with_pool(self, settings: PoolSettings, counters: Arc<OutboundCounters>) -> Self {
        let pool = OutboundPool::new(settings, counters, self.caps.host());
        Self { pool, ..self }
    }

    /// The app's pool of idle connections.
    pub fn pool(&self) -> &OutboundPool {
        &self.pool
    }

    /// [`OutboundPolicy::new`] with the host's addresses taken from `own`.
    ///
    /// # Errors
    /// As [`OutboundPolicy::new`].
    pub fn with_own(
        hosts: &[String],
        networks: &[String],
        own: Arc<OwnAddrs>,
        caps: OutboundCaps,
    ) -> Result<Self, InvalidSetting> {
        let allowed = hosts
            .iter()
            .map(|e| HostPattern::parse(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|r| InvalidSetting::new("allowed_outbound_hosts", r))?;
        let networks = AllowedNetworks::parse(networks)
            .map_err(|r| InvalidSetting::new("allowed_networks", r))?;
        let pool = OutboundPool::new(PoolSettings::default(), Arc::default(), caps.host());
        Ok(Self {
            allowed: allowed.into(),
            networks,
            own,
            pool,
            caps,
            tasks: None,
            trace: crate::trace::Trace::default(),
        })
    }

    /// The policy as one request holds it: the app's allow-list and caps,
    /// and a connection count of the request's own.
    #[must_use]
    pub fn for_request(&self) -> Self {
        Self {
            caps: self.caps.for_request(),
            ..self.clone()
        }
    }

    /// The app's caps with a connection count for one more request.
    pub(crate) fn request_caps(&self) -> OutboundCaps {
        self.caps.for_request()
    }

    /// The request this store now serves is in `trace`.
    pub fn set_trace(&mut self, trace: crate::trace::Trace) {
        self.trace = trace;
    }

    /// This store's policy serves the requests of `tasks`, each with its
    /// own connection count.
    pub(crate) fn serve_tasks(&mut self, tasks: Arc<crate::tasks::Tasks>) {
        self.tasks = Some(tasks);
    }

    /// Whether the request URI may be sent, by its name.
    pub fn allows_uri(&self, uri: &http::Uri) -> bool {
        let Some(target) = Target::of(uri) else {
            return false;
        };
        self.allowed
            .iter()
            .any(|p| p.allows(target.scheme, &target.host, target.port))
    }

    /// Whether a connection to `addr` may be made: one the allow-list names
    /// literally; otherwise never the host's own address, and an address in
    /// a refused range only when `allowed_networks` holds it.
    pub fn allows_addr(&self, scheme: &str, addr: SocketAddr) -> bool {
        let literal = || {
            self.allowed.iter().any(|p| {
                p.names_literal_ip() && p.allows(scheme, &addr.ip().to_string(), addr.port())
            })
        };
        let ip = addr.ip();
        let open = if self.own.contains(ip) {
            false
        } else {
            !is_internal(ip) || self.networks.contains(ip)
        };
        open || literal()
    }
}

/// Where a request goes.
struct Target {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl Target {
    fn of(uri: &http::Uri) -> Option<Self> {
        let host = uri.host()?;
        let scheme = if uri.scheme_str() == Some("https") {
            "https"
        } else {
            "http"
        };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

type ErrFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendResult = Result<(http::Response<WasiBody>, ErrFuture), HttpError>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: ErrFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        if !self.allows_uri(request.uri()) {
            tracing::debug!(uri = %request.uri(), "outbound request denied by allow-list");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let slot = match &self.tasks {
            Some(tasks) => tasks.request_slot(&mut self.caps),
            None => self.caps.request_slot(),
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(cap) => return refusal(cap, self.pool.counters()),
        };
        // The app's and the host's places for a new connection. When they
        // are full but idle connections hold some, the request may still
        // reuse one of its destination or close another to make room:
        // decided once the destination is known.
        let held = match self.caps.hold() {
            Ok(held) => Some(held),
            Err(CapReached::App(_)) if self.pool.idle_count() > 0 => None,
            Err(CapReached::Host(_)) if self.caps.host().has_idle() => None,
            Err(cap) => return refusal(cap, self.pool.counters()),
        };
        let trace = match &self.tasks {
            Some(tasks) => tasks.current_trace(),
            None => self.trace.clone(),
        };
        let span = crate::trace::ClientSpan::start(&trace, &mut request);
        let policy = self.clone();
        Box::new(async move {
            let sent = policy.send(request, options, slot, held).await;
            if let Some(span) = span {
                span.finish(match &sent {
                    Ok((resp, _)) => Ok(resp.status().as_u16()),
                    Err(e) => Err(e.to_string()),
                });
            }
            sent
        })
    }
}

/// What a guest over a cap gets (and berth's debug log says which).
fn refused(cap: CapReached, counters: &OutboundCounters) -> HttpError {
    tracing::debug!(%cap, "outbound request refused");
    counters.refused();
    HttpError::ConnectionLimitReached
}

/// [`refused`] as the future [`WasiHttpHooks::send_request`] returns.
fn refusal(
    cap: CapReached,
    counters: &OutboundCounters,
) -> Box<dyn Future<Output = SendResult> + Send> {
    let refused = refused(cap, counters);
    Box::new(async move { Err(refused) })
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl OutboundPolicy {
    async fn send(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        slot: RequestPermit,
        held: Option<HeldConnection>,
    ) -> SendResult {
        let target = Target::of(request.uri()).ok_or(HttpError::HttpRequestUriInvalid)?;
        let addrs = resolve(&target, &self.caps, self.pool.counters()).await?;
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.allows_addr(target.scheme, *a))
            .collect();
        if allowed.is_empty() {
            tracing::debug!(
                host = %target.host,
                addrs = ?addrs,
                "outbound request refused: the name resolves only to the host's own or refused addresses"
            );
            return Err(HttpError::DestinationIpProhibited);
        }
        let connect_timeout = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(CONNECT_TIMEOUT);
        let first_byte_timeout = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(FIRST_BYTE_TIMEOUT);
        // The request line carries the path only (no proxy is addressed).
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let https = target.scheme == "https";
        let key = |addr: SocketAddr| PoolKey {
            https,
            addr,
            server_name: https.then(|| Arc::from(target.host.as_str())),
        };

        // A pooled connection to a checked address, most recent first. One
        // the peer closed before the request went out gives the request
        // back, to try the next (or a new connection).
        for addr in &allowed {
            let key = key(*addr);
            while let Some(mut conn) = self.pool.take(&key) {
                let sent =
                    tokio::time::timeout(first_byte_timeout, conn.sender.try_send_request(request))
                        .await
                        .map_err(|_| HttpError::ConnectionReadTimeout)?;
                match sent {
                    Ok(response) => {
                        self.pool.counters().reused();
                        return Ok(self.respond(response, slot, conn, key));
                    }
                    Err(mut e) => match e.take_message() {
                        Some(back) => request = back,
                        None => return Err(HttpError::from(e.into_error())),
                    },
                }
            }
        }

        // A new connection, with the places it holds for its whole life.
        let held = match held {
            Some(held) => held,
            None => self.hold_by_evicting()?,
        };
        let (tcp, addr) = connect(&allowed, connect_timeout).await?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if https {
            Box::new(tls(tcp, &target.host).await?)
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;
        self.pool.counters().opened();
        // The connection counts until it ends (or the pool closes it).
        let hold = ConnHold::new(held);
        let ends = hold.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "outbound connection ended");
            }
            ends.release();
        });
        let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)??;
        Ok(self.respond(response, slot, Conn { sender, hold }, key(addr)))
    }

    /// The app's and the host's places for a new connection when the
    /// request found them full: each idle connection closed makes room for
    /// one (the app's own at its cap, any app's at the host's budget).
    fn hold_by_evicting(&self) -> Result<HeldConnection, HttpError> {
        loop {
            let cap = match self.caps.hold() {
                Ok(held) => return Ok(held),
                Err(cap) => cap,
            };
            let evicted = match cap {
                CapReached::App(_) => self.pool.evict_oldest(),
                CapReached::Host(_) => self.caps.host().evict_idle(),
                _ => false,
            };
            if !evicted {
                return Err(refused(cap, self.pool.counters()));
            }
        }
    }

    /// The guest's response: its body holds the request's place in its
    /// count until read or dropped, and gives the connection back to the
    /// pool when read to the end.
    fn respond(
        &self,
        response: http::Response<Incoming>,
        slot: RequestPermit,
        conn: Conn,
        key: PoolKey,
    ) -> (http::Response<WasiBody>, ErrFuture) {
        let (done, io) = tokio::sync::oneshot::channel();
        let back = self.pool.enabled().then(|| (self.pool.clone(), key));
        let (parts, inner) = response.into_parts();
        let mut body = PooledBody {
            inner,
            after: Some(AfterBody {
                _slot: slot,
                conn,
                back,
                done,
            }),
        };
        if body.inner.is_end_stream() {
            body.finish(Ok(()));
        }
        let io: ErrFuture = Box::new(async move { io.await.unwrap_or(Ok(())) });
        (http::Response::from_parts(parts, body.boxed_unsync()), io)
    }
}

/// A response body from the upstream, with what its end settles.
struct PooledBody {
    inner: Incoming,
    after: Option<AfterBody>,
}

struct AfterBody {
    /// The request's place in its own count.
    _slot: RequestPermit,
    conn: Conn,
    /// Where the connection goes back to (pooling on).
    back: Option<(OutboundPool, PoolKey)>,
    /// The connection's outcome for wasi:http.
    done: tokio::sync::oneshot::Sender<Result<(), HttpError>>,
}

impl PooledBody {
    /// The body ended (`Ok`: read to its end) or failed.
    fn finish(&mut self, outcome: Result<(), HttpError>) {
        let Some(after) = self.after.take() else {
            return;
        };
        let read = outcome.is_ok();
        let _ = after.done.send(outcome);
        match after.back {
            Some((pool, key)) if read && tokio::runtime::Handle::try_current().is_ok() => {
                let mut conn = after.conn;
                // hyper takes the next request once it has seen the end of
                // this exchange (at once, or after its own task ran).
                if conn.sender.is_ready() {
                    pool.put(key, conn);
                } else {
                    tokio::spawn(async move {
                        match tokio::time::timeout(RETURN_TIMEOUT, conn.sender.ready()).await {
                            Ok(Ok(())) => pool.put(key, conn),
                            _ => conn.hold.release(),
                        }
                    });
                }
            }
            // Not pooled: the connection ends after this exchange (hyper
            // closes it once its sender is gone).
            _ => drop(after.conn.sender),
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let polled = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        match polled {
            Some(Ok(frame)) => {
                if self.inner.is_end_stream() {
                    self.finish(Ok(()));
                }
                std::task::Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                self.finish(Err(HttpError::ConnectionTerminated));
                std::task::Poll::Ready(Some(Err(HttpError::from(e))))
            }
            None => {
                self.finish(Ok(()));
                std::task::Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Dropped at its end (a reader that stopped at `is_end_stream`)
        // it was read; dropped before, the connection is not reused.
        if self.inner.is_end_stream() {
            self.finish(Ok(()));
        } else if let Some(after) = self.after.take() {
            let _ = after.done.send(Ok(()));
        }
    }
}

/// How long a connection whose response was read may take to be ready for
/// the next request before it is closed instead of pooled.
const RETURN_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses of `target`: its literal IP, or what its name resolves to
/// (a lookup counted against the app's and the host's caps).
async fn resolve(
    target: &Target,
    caps: &OutboundCaps,
    counters: &OutboundCounters,
) -> Result<Vec<SocketAddr>, HttpError> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let _lookup = caps.lookup().map_err(|cap| refused(cap, counters))?;
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    match tokio::time::timeout(DNS_TIMEOUT, lookup).await {
        Err(_) => Err(HttpError::DnsTimeout),
        Ok(Err(_)) => Err(HttpError::DnsError {
            rcode: Some("address not available".into()),
            info_code: None,
        }),
        Ok(Ok(addrs)) => Ok(addrs.collect()),
    }
}

/// The network namespace this process's outbound connections are made
/// from, when it is not the process's own (see [`connect_from_namespace`]).
static CONNECT_NAMESPACE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Makes every outbound connection of this process from the network
/// namespace at `path` (a namespace file: `/proc/<pid>/ns/net`, a bind
/// mount) instead of the process's own: the containerd shim serves one pod,
/// and a pod's traffic leaves from the pod's address, under its network
/// policy. Names are still resolved by the process's resolver. The first
/// call wins; `berth serve` never calls it.
///
/// # Errors
/// When a namespace was already set to another path.
pub fn connect_from_namespace(path: &std::path::Path) -> Result<(), std::path::PathBuf> {
    let set = CONNECT_NAMESPACE.get_or_init(|| path.to_path_buf());
    if set == path {
        Ok(())
    } else {
        Err(set.clone())
    }
}

/// A connection to the first of `addrs` that accepts, and its address.
async fn connect(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), HttpError> {
    let mut last = HttpError::ConnectionRefused;
    for addr in addrs {
        let attempt = async {
            match CONNECT_NAMESPACE.get() {
                None => TcpStream::connect(addr).await,
                Some(ns) => socket_in(ns, *addr).await?.connect(*addr).await,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(s)) => return Ok((s, *addr)),
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    Err(last)
}

/// A TCP socket for `addr`'s family made inside the namespace at `ns`. A
/// socket belongs for its whole life to the namespace of the thread that
/// created it, so it is made on a short-lived OS thread that joined the
/// namespace (never a tokio worker or a pooled blocking thread, which would
/// stay there).
async fn socket_in(
    ns: &std::path::Path,
    addr: SocketAddr,
) -> std::io::Result<tokio::net::TcpSocket> {
    use std::os::fd::AsFd as _;
    let ns = ns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-outbound-netns".into())
        .spawn(move || {
            let made = (|| {
                let file = std::fs::File::open(&ns)?;
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                }
            })();
            let _ = tx.send(made);
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("the namespace thread ended without a socket"))?
}

/// TLS over `tcp`, verifying the certificate for `host` against the
/// webpki roots.
async fn tls(
    tcp: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| HttpError::HttpRequestUriInvalid)?,
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(HttpError::Tls)
}

#[cfg(test)]
mod tests;
