//! An HTTP/1.1 client (hyper) that times each exchange at the socket: from
//! the first byte of the request written to the first byte of the response
//! read.
//!
//! The clock starts when the request's first byte is handed to `write` and
//! stops when a `read` first returns response bytes, so neither the client's
//! request encoding before the write nor its response parsing after the
//! read is counted, and nothing of the connection set-up is either (the
//! connection is made before [`TimedClient::get`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long one exchange may take before the bench gives up.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Marks {
    /// A request is out and its response has not started.
    awaiting: bool,
    sent: Option<Instant>,
    first_byte: Option<Instant>,
}

/// A TCP stream that marks the first write of a request and the first read
/// of its response.
#[derive(Debug)]
struct TimedStream {
    inner: TcpStream,
    marks: Arc<Mutex<Marks>>,
}

impl AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = Instant::now();
            let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
            if m.awaiting {
                m.awaiting = false;
                m.first_byte = Some(now);
            }
        }
        polled
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        {
            let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
            if !m.awaiting && !buf.is_empty() {
                m.awaiting = true;
                m.sent = Some(Instant::now());
                m.first_byte = None;
            }
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One timed exchange.
#[derive(Debug)]
pub struct Timed {
    /// First request byte written → first response byte read.
    pub first_byte: Duration,
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole response body.
    pub body: Bytes,
    /// When the client began to connect (for [`TimedClient::connect`]ed
    /// clients, used by [`TimedClient::get_fresh`]).
    pub connect_started: Instant,
    /// When the first response byte arrived.
    pub first_byte_at: Instant,
}

/// One HTTP/1.1 connection whose exchanges are timed at the socket.
#[derive(Debug)]
pub struct TimedClient {
    sender: http1::SendRequest<Empty<Bytes>>,
    marks: Arc<Mutex<Marks>>,
    host: String,
    connect_started: Instant,
    _conn: tokio::task::JoinHandle<()>,
}

impl TimedClient {
    /// Connects to `addr` (TCP_NODELAY, as the front door sets) and performs
    /// the HTTP/1.1 handshake; requests will carry `Host: host`.
    ///
    /// # Errors
    /// When the connection cannot be made.
    pub async fn connect(addr: SocketAddr, host: &str) -> anyhow::Result<Self> {
        let connect_started = Instant::now();
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let marks = Arc::new(Mutex::new(Marks::default()));
        let io = TokioIo::new(TimedStream {
            inner: stream,
            marks: marks.clone(),
        });
        let (sender, conn) = http1::handshake(io)
            .await
            .context("HTTP/1.1 handshake failed")?;
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("bench client connection ended: {e}");
            }
        });
        Ok(Self {
            sender,
            marks,
            host: host.to_owned(),
            connect_started,
            _conn: conn,
        })
    }

    /// Waits until the connection can take a request; `false` when the
    /// server closed it (it sent `Connection: close`, or went away).
    pub async fn ready(&mut self) -> bool {
        self.sender.ready().await.is_ok()
    }

    /// Sends `GET path`, reads the whole response, and times it.
    ///
    /// # Errors
    /// When the exchange fails or takes longer than [`EXCHANGE_TIMEOUT`].
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Timed> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(path))
            .await
            .with_context(|| format!("no response within {EXCHANGE_TIMEOUT:?}"))?
    }

    async fn exchange(&mut self, path: &str) -> anyhow::Result<Timed> {
        self.sender.ready().await.context("the connection closed")?;
        let req = http::Request::get(path)
            .header(http::header::HOST, &self.host)
            .header(http::header::USER_AGENT, "berth-bench")
            .header(berth::http::TIMING_REQUEST_HEADER, "1")
            .body(Empty::<Bytes>::new())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .context("the request failed")?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .context("reading the response body")?
            .to_bytes();
        let m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(sent), Some(first_byte_at)) = (m.sent, m.first_byte) else {
            anyhow::bail!("the exchange was not seen on the socket");
        };
        Ok(Timed {
            first_byte: first_byte_at.saturating_duration_since(sent),
            status: parts.status,
            headers: parts.headers,
            body,
            connect_started: self.connect_started,
            first_byte_at,
        })
    }

    /// Connects to `addr`, sends `GET path` and times it from the start of
    /// the TCP connect to the first response byte (for servers that close
    /// the connection after every response, where a connect is part of every
    /// request).
    ///
    /// # Errors
    /// As [`TimedClient::connect`] and [`TimedClient::get`].
    pub async fn get_fresh(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<Timed> {
        let mut client = Self::connect(addr, host).await?;
        let mut timed = client.get(path).await?;
        timed.first_byte = timed
            .first_byte_at
            .saturating_duration_since(timed.connect_started);
        Ok(timed)
    }
}

/// A keep-alive connection that is made again, untimed, when the server
/// closed it; counts how often that happened.
#[derive(Debug)]
pub struct Reconnecting {
    addr: SocketAddr,
    host: String,
    client: Option<TimedClient>,
    /// Connections the server closed after a response.
    pub reconnects: usize,
    /// Responses that carried `Connection: close`.
    pub close_headers: usize,
}

impl Reconnecting {
    /// Connects to `addr` with `Host: host`.
    ///
    /// # Errors
    /// As [`TimedClient::connect`].
    pub async fn connect(addr: SocketAddr, host: &str) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            host: host.to_owned(),
            client: Some(TimedClient::connect(addr, host).await?),
            reconnects: 0,
            close_headers: 0,
        })
    }

    /// [`TimedClient::get`] on an open connection.
    ///
    /// # Errors
    /// As [`TimedClient::get`].
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Timed> {
        let client = match self.client.take() {
            Some(mut c) => {
                if c.ready().await {
                    c
                } else {
                    self.reconnects += 1;
                    TimedClient::connect(self.addr, &self.host).await?
                }
            }
            None => TimedClient::connect(self.addr, &self.host).await?,
        };
        let client = self.client.insert(client);
        let timed = client.get(path).await?;
        let close = timed
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("close"));
        self.close_headers += usize::from(close);
        Ok(timed)
    }
}

/// The `dur` (milliseconds) of metric `name` in a `Server-Timing` header, as
/// a duration.
pub fn server_timing(headers: &HeaderMap, name: &str) -> Option<Duration> {
    headers
        .get_all("server-timing")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|metric| {
            let mut params = metric.trim().split(';');
            if params.next()?.trim() != name {
                return None;
            }
            params.find_map(|p| {
                let ms: f64 = p.trim().strip_prefix("dur=")?.parse().ok()?;
                (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1e3))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_server_timing() {
        let mut h = HeaderMap::new();
        h.append(
            "server-timing",
            "berth-host;dur=0.012, berth-instantiate;dur=0.008"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            server_timing(&h, "berth-host"),
            Some(Duration::from_secs_f64(0.012e-3))
        );
        assert_eq!(
            server_timing(&h, "berth-instantiate"),
            Some(Duration::from_secs_f64(0.008e-3))
        );
        assert_eq!(server_timing(&h, "other"), None);
    }

    #[tokio::test]
    async fn times_an_exchange_at_the_socket() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for _ in 0..2 {
                let mut buf = vec![0u8; 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                assert!(String::from_utf8_lossy(&got).contains("host: x.localhost"));
                tokio::time::sleep(Duration::from_millis(30)).await;
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")
                    .await
                    .unwrap();
            }
        });
        let mut c = TimedClient::connect(addr, "x.localhost").await.unwrap();
        for _ in 0..2 {
            let t = c.get("/").await.unwrap();
            assert_eq!(t.status, StatusCode::OK);
            assert_eq!(&t.body[..], b"hi");
            assert!(t.first_byte >= Duration::from_millis(30), "{t:?}");
            assert!(t.first_byte < Duration::from_secs(5), "{t:?}");
        }
    }
}
