//! Readiness: probing `127.0.0.1:PORT` (from inside the instance's network
//! namespace when isolated) until it answers, the process exits,
//! `startup_timeout` passes or the shim closes (the host is stopping: it does
//! not wait out a start that cannot matter any more).
//!
//! The first probe goes out at once; after a failed one the pause starts at
//! 250 µs and doubles up to 20 ms (a server that listens within a few
//! milliseconds is seen within a fraction of one). [`Probe::Tcp`] is ready when a
//! connection is accepted; [`Probe::Http`] when a `GET` (hyper's HTTP/1
//! client, over the connection just made) answers 2xx or 3xx.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitStatus;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, Either};
use http::Request;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::netns::Netns;
use super::process::{ExitWatch, wait_exit};
use super::running::Endpoint;
use super::spec::{InstanceSpec, Probe};

/// First and longest pause between readiness probes.
const PROBE_INTERVAL: (Duration, Duration) =
    (Duration::from_micros(250), Duration::from_millis(20));
/// Longest single probe attempt.
const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an instance did not become ready.
pub(super) enum ReadyError {
    /// Its process exited first (with this status, if it could be collected).
    Exited(Option<ExitStatus>),
    /// `startup_timeout` passed; what the last completed probe saw.
    Timeout(String),
    /// The shim closed (the host is stopping) while it waited.
    Closing,
}

/// Probes until ready, exited, `startup_timeout` or the shim closing.
pub(super) async fn wait_ready(
    spec: &InstanceSpec,
    endpoint: &Endpoint,
    exit: &mut ExitWatch,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ReadyError> {
    let deadline = tokio::time::Instant::now() + spec.startup_timeout;
    // What the last completed attempt saw; an attempt cut short by the
    // deadline does not overwrite it.
    let mut last = String::from("no probe completed: the connection or the HTTP exchange hung");
    let mut pause = PROBE_INTERVAL.0;
    let probing = async {
        loop {
            match tokio::time::timeout(PROBE_ATTEMPT_TIMEOUT, probe(spec, endpoint)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {PROBE_ATTEMPT_TIMEOUT:?}"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(PROBE_INTERVAL.1);
        }
    };
    let exited = wait_exit(exit);
    tokio::select! {
        biased;
        status = exited => Err(ReadyError::Exited(status)),
        Ok(_) = closing.wait_for(|c| *c) => Err(ReadyError::Closing),
        r = tokio::time::timeout_at(deadline, probing) => match r {
            Ok(()) => Ok(()),
            Err(_) => Err(ReadyError::Timeout(last)),
        },
    }
}

/// One readiness probe.
async fn probe(spec: &InstanceSpec, endpoint: &Endpoint) -> Result<(), String> {
    let stream = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect to {endpoint}: {e}"))?;
    match &spec.readiness {
        Probe::Tcp => Ok(()),
        Probe::Http { path } => http_ready(stream, path, &endpoint.authority()).await,
    }
}

/// `GET path` over `stream`, already connected to the instance (`authority`
/// is what the `Host` header says) (inside
/// the instance's namespace when isolated), with hyper's HTTP/1 client: ready
/// on a 2xx or 3xx status. The body is not read; the connection is closed.
async fn http_ready(stream: TcpStream, path: &str, authority: &str) -> Result<(), String> {
    let failed = |e: &dyn std::error::Error| format!("HTTP GET {path}: {}", error_chain(e));
    let request = Request::get(path)
        .header(HOST, authority)
        .header(USER_AGENT, "berth-probe")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(&e))?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    let response = std::pin::pin!(sender.send_request(request));
    // Drive the connection until the response head is in. Should the
    // connection end first, it has handed the response (or the error that
    // ended it) over already; dropping it cancels a request never sent.
    let response = match future::select(response, Box::pin(conn)).await {
        Either::Left((response, _conn)) => response,
        Either::Right((Ok(()), response)) => response.await,
        Either::Right((Err(e), _)) => Err(e),
    }
    .map_err(|e| failed(&e))?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("HTTP GET {path}: status {}", status.as_u16()))
    }
}

/// An error and its sources, `: `-separated (hyper's own message names only
/// the kind of failure).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A TCP connection to `addr` from the host, with `TCP_NODELAY`.
pub(super) async fn connect_direct(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A connection to `127.0.0.1:port` inside `netns`.
pub(super) async fn connect_inside(netns: &Netns, port: u16) -> io::Result<TcpStream> {
    netns
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves one connection: reads the request head, answers `response`
    /// (raw bytes), closes. Returns the port and the request it saw.
    async fn serve_once(response: &'static [u8]) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut chunk = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&chunk[..n]);
            }
            s.write_all(response).await.unwrap();
            s.shutdown().await.unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        (port, seen)
    }

    async fn probe_answer(response: &'static [u8]) -> Result<(), String> {
        let (port, seen) = serve_once(response).await;
        let stream = connect_direct(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .unwrap();
        let result = http_ready(stream, "/healthz", &format!("127.0.0.1:{port}")).await;
        let request = seen.await.unwrap();
        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request:?}"
        );
        let request = request.to_ascii_lowercase();
        assert!(
            request.contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{request:?}"
        );
        assert!(
            request.contains("user-agent: berth-probe\r\n"),
            "{request:?}"
        );
        result
    }

    #[tokio::test]
    async fn status_lines() {
        probe_answer(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        probe_answer(b"HTTP/1.0 302 Found\r\nLocation: /\r\n\r\n")
            .await
            .unwrap();
        let e = probe_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap_err();
        assert_eq!(e, "HTTP GET /healthz: status 404");
        let e = probe_answer(b"HTTP/1.1 503 Service Unavailable\r\n\r\nwait")
            .await
            .unwrap_err();
        assert!(e.contains("status 503"), "{e}");
        for not_http in [&b"SSH-2.0-OpenSSH\r\n"[..], b"HTTP/1.1 20", b""] {
            let e = probe_answer(not_http).await.unwrap_err();
            eprintln!("{:?}: {e}", String::from_utf8_lossy(not_http));
            assert!(e.starts_with("HTTP GET /healthz: "), "{e}");
            assert!(!e.contains("status"), "{e}");
        }
    }
}
