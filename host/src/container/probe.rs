//! Readiness: probing `127.0.0.1:PORT` (from inside the instance's network
//! namespace when isolated) until it answers, the process exits or
//! `startup_timeout` passes.
//!
//! The first probe goes out at once; after a failed one the pause starts at
//! 2 ms and grows by half up to 20 ms. [`Probe::Tcp`] is ready when a
//! connection is accepted; [`Probe::Http`] when a `GET` answers 2xx or 3xx.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::netns::Netns;
use super::process::{ExitWatch, wait_exit};
use super::spec::{InstanceSpec, Probe};

/// First and longest pause between readiness probes.
const PROBE_INTERVAL: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(20));
/// Longest single probe attempt.
const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an instance did not become ready.
pub(super) enum ReadyError {
    /// Its process exited first (with this status, if it could be collected).
    Exited(Option<ExitStatus>),
    /// `startup_timeout` passed; what the last completed probe saw.
    Timeout(String),
}

/// Probes until ready, exited or `startup_timeout`.
pub(super) async fn wait_ready(
    spec: &InstanceSpec,
    netns: Option<&Netns>,
    exit: &mut ExitWatch,
) -> Result<(), ReadyError> {
    let deadline = tokio::time::Instant::now() + spec.startup_timeout;
    // What the last completed attempt saw; an attempt cut short by the
    // deadline does not overwrite it.
    let mut last = String::from("no probe completed: the connection or the HTTP exchange hung");
    let mut pause = PROBE_INTERVAL.0;
    let probing = async {
        loop {
            match tokio::time::timeout(PROBE_ATTEMPT_TIMEOUT, probe(spec, netns)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {PROBE_ATTEMPT_TIMEOUT:?}"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(PROBE_INTERVAL.1);
        }
    };
    let exited = wait_exit(exit);
    tokio::select! {
        biased;
        status = exited => Err(ReadyError::Exited(status)),
        r = tokio::time::timeout_at(deadline, probing) => match r {
            Ok(()) => Ok(()),
            Err(_) => Err(ReadyError::Timeout(last)),
        },
    }
}

/// One readiness probe.
async fn probe(spec: &InstanceSpec, netns: Option<&Netns>) -> Result<(), String> {
    let mut stream = connect(spec.port, netns)
        .await
        .map_err(|e| format!("connect to port {}: {e}", spec.port))?;
    let Probe::Http { path } = &spec.readiness else {
        return Ok(());
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: berth-probe\r\nConnection: close\r\n\r\n",
        spec.port
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("HTTP GET {path}: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("HTTP GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    match http_status(&buf) {
        Some(code) if (200..=399).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP GET {path}: status {code}")),
        None => Err(format!(
            "HTTP GET {path}: not an HTTP response: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(64)])
        )),
    }
}

/// The status code of an HTTP/1.x status line.
fn http_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok())?
}

/// A connection to `127.0.0.1:port`, from inside `netns` when given.
pub(super) async fn connect(port: u16, netns: Option<&Netns>) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match netns {
        Some(ns) => ns.connect(addr).await,
        None => {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(http_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(
            http_status(b"HTTP/1.0 302 Found\r\nLocation: /\r\n"),
            Some(302)
        );
        assert_eq!(http_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(http_status(b"HTTP/1.1 20"), None);
        assert_eq!(http_status(b""), None);
    }
}
