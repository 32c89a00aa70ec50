//! The task's listener's connections: HTTP/1.1 and h2c (hyper-util's auto
//! builder), at most [`MAX_CONNECTIONS`] open (the next is closed at once),
//! hyper's header-read timeout (which also ends an idle HTTP/1.1
//! keep-alive), HTTP/2 stream and keep-alive limits, and a graceful drain.
//!
//! berth's own front door does more (a lingering `503` at the cap, TLS, idle
//! timeouts for HTTP/2); a pod is reached through Knative's queue-proxy or
//! a Service, so the shim keeps only what a task needs and does not link
//! berth's server for it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the task sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Time for a request head to arrive.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent HTTP/2 streams per connection.
pub const H2_MAX_STREAMS: u32 = 100;
/// HTTP/2 keep-alive ping interval (and how long to wait for the answer).
pub const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// The pause after a failed `accept` (EMFILE and the like).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The connections of one listener.
pub struct Conns {
    builder: auto::Builder<TokioExecutor>,
    permits: Arc<Semaphore>,
    graceful: GracefulShutdown,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("open", &self.open())
            .finish_non_exhaustive()
    }
}

impl Conns {
    /// No connection yet.
    pub fn new() -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .keep_alive_interval(H2_KEEP_ALIVE)
            .keep_alive_timeout(H2_KEEP_ALIVE);
        Self {
            builder,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            graceful: GracefulShutdown::new(),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        MAX_CONNECTIONS - self.permits.available_permits()
    }

    /// Serves `stream` with `svc` on its own task, or closes it at the cap.
    pub fn serve<S, F>(&self, stream: TcpStream, svc: S)
    where
        S: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!(
                max = MAX_CONNECTIONS,
                "connection closed: the task is at its connection limit"
            );
            return;
        };
        let _ = stream.set_nodelay(true);
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), hyper::service::service_fn(svc))
            .into_owned();
        let conn = self.graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended with error: {e}");
            }
            drop(permit);
        });
    }

    /// Tells every connection to finish (requests in flight complete, then
    /// it closes) and waits up to `timeout` for all of them. Returns whether
    /// all closed in time.
    pub async fn drain(self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.graceful.shutdown())
            .await
            .is_ok()
    }
}
