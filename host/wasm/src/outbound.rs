//! Outbound HTTP from guests, checked twice.
//!
//! 1. **By name**: a guest may only send requests to hosts its app lists in
//!    `allowed_outbound_hosts`. Anything else fails *in the guest* with
//!    `HTTP-request-denied`, at once, without a DNS lookup or a connection.
//! 2. **Where it connects**: berth resolves the name itself and refuses
//!    every address that points back into the host or its private networks
//!    ([`is_internal`]: loopback, link-local including the cloud metadata
//!    address 169.254.169.254, private, shared, unspecified, multicast and
//!    reserved ranges) unless the allow-list names that literal address
//!    (`"127.0.0.1:9000"`). The guest gets `destination-IP-prohibited`. The
//!    connection then goes to the very address that was checked, so a name
//!    that resolves differently a moment later (DNS rebinding) gains
//!    nothing. TLS still verifies the certificate for the name.
//!
//! Redirects are never followed: a `3xx` is handed to the guest as is.
//!
//! 3. **How many at once**: [`caps`] bounds the connections a request, an
//!    app and the whole host hold, and the DNS lookups in flight; past a cap
//!    the guest gets `connection-limit-reached` at once.
//!
//! Errors handed to a guest are wasi:http error codes, and where a code
//! carries text it is berth's own words: never a host path, a backtrace or
//! another error's debug output.

pub mod caps;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::pattern::HostPattern;
use caps::{CapReached, ConnectionPermit, OutboundCaps};

/// How long a name may take to resolve.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect timeout when the guest sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// First-byte timeout when the guest sets none (the request's own deadline
/// usually ends it first).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether `ip` is an address of the host itself or of a network no guest
/// should reach by name: unspecified, loopback, link-local (169.254/16,
/// fe80::/10), private (10/8, 172.16/12, 192.168/16, fc00::/7), shared
/// (100.64/10), "this network" (0/8), IETF protocol assignments
/// (192.0.0/24), benchmarking (198.18/15), multicast, broadcast and
/// reserved (240/4). IPv4-mapped, -compatible and NAT64 IPv6 addresses are
/// judged by the IPv4 address they carry.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // ::a.b.c.d (deprecated IPv4-compatible) and 64:ff9b::/96 (NAT64).
            let embedded = (seg[..6] == [0; 6] && (seg[6] != 0 || seg[7] > 1))
                || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if embedded {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return is_internal(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xfe00) == 0xfc00
        }
    }
}

/// The allow-list and connection caps of one app, shared by all its
/// requests ([`for_request`](Self::for_request) gives each request its own
/// connection count).
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    allowed: Arc<[HostPattern]>,
    caps: OutboundCaps,
}

impl OutboundPolicy {
    /// Builds the policy from config entries and the app's caps.
    ///
    /// # Errors
    /// The first entry that is not a host pattern.
    pub fn new(entries: &[String], caps: OutboundCaps) -> Result<Self, String> {
        let allowed = entries
            .iter()
            .map(|e| HostPattern::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            allowed: allowed.into(),
            caps,
        })
    }

    /// The policy as one request holds it: the app's allow-list and caps,
    /// and a connection count of the request's own.
    #[must_use]
    pub fn for_request(&self) -> Self {
        Self {
            allowed: self.allowed.clone(),
            caps: self.caps.for_request(),
        }
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

    /// Whether a connection to `addr` may be made: an outside address, or
    /// one the allow-list names literally.
    pub fn allows_addr(&self, scheme: &str, addr: SocketAddr) -> bool {
        !is_internal(addr.ip())
            || self.allowed.iter().any(|p| {
                p.names_literal_ip() && p.allows(scheme, &addr.ip().to_string(), addr.port())
            })
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
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: ErrFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        if !self.allows_uri(request.uri()) {
            tracing::debug!(uri = %request.uri(), "outbound request denied by allow-list");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let permit = match self.caps.connection() {
            Ok(permit) => permit,
            Err(cap) => return Box::new(async move { Err(refused(cap)) }),
        };
        let policy = self.clone();
        Box::new(async move { policy.send(request, options, permit).await })
    }
}

/// What a guest over a cap gets (and berth's debug log says which).
fn refused(cap: CapReached) -> HttpError {
    tracing::debug!(%cap, "outbound request refused");
    HttpError::ConnectionLimitReached
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl OutboundPolicy {
    async fn send(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        permit: ConnectionPermit,
    ) -> SendResult {
        let target = Target::of(request.uri()).ok_or(HttpError::HttpRequestUriInvalid)?;
        let addrs = resolve(&target, &self.caps).await?;
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.allows_addr(target.scheme, *a))
            .collect();
        if allowed.is_empty() {
            tracing::debug!(
                host = %target.host,
                addrs = ?addrs,
                "outbound request refused: the name resolves only to internal addresses"
            );
            return Err(HttpError::DestinationIpProhibited);
        }
        let connect_timeout = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(CONNECT_TIMEOUT);
        let first_byte_timeout = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(FIRST_BYTE_TIMEOUT);
        let tcp = connect(&allowed, connect_timeout).await?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if target.scheme == "https" {
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
        // The driver holds the permit: the connection counts until it ends.
        let driver = tokio::spawn(async move {
            let ended = conn.await;
            drop(permit);
            ended
        });
        // The request line carries the path only (no proxy is addressed).
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)??;
        let io: ErrFuture = Box::new(async move {
            match driver.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(HttpError::from(e)),
                Err(_) => Err(HttpError::InternalError(Some(
                    "berth: the connection's task ended abnormally".into(),
                ))),
            }
        });
        Ok((
            response.map(|b| b.map_err(HttpError::from).boxed_unsync()),
            io,
        ))
    }
}

/// The addresses of `target`: its literal IP, or what its name resolves to
/// (a lookup counted against the app's and the host's caps).
async fn resolve(target: &Target, caps: &OutboundCaps) -> Result<Vec<SocketAddr>, HttpError> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let _lookup = caps.lookup().map_err(refused)?;
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

/// A connection to the first of `addrs` that accepts.
async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, HttpError> {
    let mut last = HttpError::ConnectionRefused;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    Err(last)
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
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        let caps = OutboundCaps::new(caps::HostOutbound::new(8), 8, 8);
        OutboundPolicy::new(&entries, caps).unwrap()
    }

    fn allows(entries: &[&str], uri: &str) -> bool {
        policy(entries).allows_uri(&uri.parse().unwrap())
    }

    #[test]
    fn patterns() {
        assert!(!allows(&[], "http://example.com/"));
        assert!(allows(&["example.com"], "http://example.com/x"));
        assert!(allows(&["example.com"], "https://EXAMPLE.com:8443/x"));
        assert!(!allows(&["example.com"], "http://evil-example.com/"));
        assert!(allows(&["127.0.0.1:9000"], "http://127.0.0.1:9000/"));
        assert!(!allows(&["127.0.0.1:9000"], "http://127.0.0.1:9001/"));
        assert!(allows(&["*.example.com"], "http://api.example.com/"));
        assert!(!allows(&["*.example.com"], "http://example.com/"));
        assert!(!allows(&["*.example.com"], "http://badexample.com/"));
        assert!(allows(&["*"], "http://anything:1/"));
        assert!(allows(&["*:443"], "https://x/"));
        assert!(!allows(&["*:443"], "http://x/"));
        assert!(allows(&["https://x"], "https://x/"));
        assert!(!allows(&["https://x"], "http://x/"));
        assert!(allows(&["[::1]:80"], "http://[::1]/"));
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::7f00:1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "203.0.113.7",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "2606:4700::1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn internal_addresses_need_a_literal_entry() {
        let p = policy;
        let lo: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        assert!(!p(&["*"]).allows_addr("http", lo));
        assert!(!p(&["localhost:9000"]).allows_addr("http", lo));
        assert!(p(&["127.0.0.1:9000"]).allows_addr("http", lo));
        assert!(p(&["127.0.0.1"]).allows_addr("http", lo));
        assert!(!p(&["127.0.0.1:9001"]).allows_addr("http", lo));
        let meta: SocketAddr = "169.254.169.254:80".parse().unwrap();
        assert!(!p(&["*", "*.internal"]).allows_addr("http", meta));
        let public: SocketAddr = "203.0.113.7:443".parse().unwrap();
        assert!(p(&["*"]).allows_addr("https", public));
    }
}
