//! A started task: a wasi:http proxy served until stopped, or a wasi:cli
//! command run to its end. Either way the result is the task's exit status.
//!
//! Stopping (the `Kill` RPC) follows the container contract Knative and Cloud
//! Run use: `SIGTERM` (or `SIGINT`) stops accepting connections, lets the
//! requests in flight finish (at most [`DRAIN_TIMEOUT`]) and exits 0;
//! `SIGKILL` ends everything at once, 137. A command has no handler to run
//! on `SIGTERM`: it ends at once with 128 + the signal, as a process
//! without one would.
//!
//! A pod's sandbox runs nothing: it waits for the `Kill`, then ends as
//! Kubernetes' `pause` does: 0 on `SIGTERM` or `SIGINT`, 128 + the signal
//! otherwise (137 on `SIGKILL`).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_wasm::logs::AppLog;
use berth_wasm::standalone::{CommandExit, CommandRun, ComponentKind};
use berth_wasm::{GuestError, RequestInfo, WasmApp, WasmRuntime};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::conns::{ACCEPT_BACKOFF, Body, BoxError, Conns};
use crate::container::{Prepared, Sandbox};
use crate::netns;

/// How long a graceful stop waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// The exit status of a component that trapped (128 + SIGABRT, as the
/// wasmtime CLI reports a trap).
pub const TRAP_STATUS: u32 = 134;

/// What the `Kill` RPC asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep running.
    No,
    /// Stop accepting, drain, exit 0 (a server); 128 + signal (a command).
    Graceful(u32),
    /// End now with 128 + signal.
    Now(u32),
}

/// Binds the listener of a wasi:http task (in `Start`, so that a taken port
/// or a bad namespace fails the start, not silently later).
///
/// # Errors
/// When binding fails.
pub fn bind(prepared: &Prepared) -> anyhow::Result<Option<std::net::TcpListener>> {
    // The guest's outbound connections leave from the pod's namespace too
    // (its address, its network policy): one shim serves one pod.
    if let netns::NetNamespace::Path(ns) = &prepared.network {
        berth_wasm::outbound::connect_from_namespace(ns).map_err(|set| {
            anyhow::anyhow!(
                "this shim's outbound connections leave from {}, not {}: one shim serves one pod",
                set.display(),
                ns.display()
            )
        })?;
    }
    if prepared.loaded.kind != ComponentKind::Http {
        return Ok(None);
    }
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, prepared.port));
    let listener = netns::bind(&prepared.network, addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// Runs the task to its end; returns its exit status.
pub async fn run(
    runtime: Arc<WasmRuntime>,
    prepared: Prepared,
    listener: Option<std::net::TcpListener>,
    stop: watch::Receiver<Stop>,
) -> u32 {
    match (prepared.loaded.kind, listener) {
        (ComponentKind::Http, Some(listener)) => serve(runtime, prepared, listener, stop).await,
        _ => command(runtime, prepared, stop).await,
    }
}

async fn serve(
    runtime: Arc<WasmRuntime>,
    prepared: Prepared,
    listener: std::net::TcpListener,
    mut stop: watch::Receiver<Stop>,
) -> u32 {
    let Prepared {
        loaded,
        name,
        settings,
        stdout,
        stderr,
        ..
    } = prepared;
    let request_body = settings.limits.request_body;
    let (stdout, stderr) = match (open_or_null(stdout), open_or_null(stderr)) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot set up the task's output: {e}");
            return TRAP_STATUS;
        }
    };
    let log = match AppLog::stdio(stdout, stderr) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            tracing::error!("cannot set up the task's output: {e}");
            return TRAP_STATUS;
        }
    };
    let app = match runtime.http_app(&name, &loaded, settings, log.clone()) {
        Ok(app) => Arc::new(app),
        Err(e) => {
            log.line("-", "berth", e.to_string().as_bytes());
            return TRAP_STATUS;
        }
    };
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log.line("-", "berth", format!("cannot listen: {e}").as_bytes());
            return TRAP_STATUS;
        }
    };
    let addr = listener.local_addr().ok();
    tracing::info!(
        app = %name,
        ?addr,
        sha256 = %app.sha256(),
        world = app.world().as_str(),
        reuse = app.reuse().mode.as_str(),
        "serving the wasi:http component"
    );
    let conns = Conns::new();
    let counter = Arc::new(AtomicU64::new(0));
    let prefix = format!("{:08x}", std::process::id());
    let signal = loop {
        tokio::select! {
            changed = stop.changed() => {
                let now = *stop.borrow_and_update();
                match (changed, now) {
                    (Err(_), _) => break Stop::Now(9),
                    (Ok(()), Stop::No) => continue,
                    (Ok(()), s) => break s,
                }
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let app = app.clone();
                let counter = counter.clone();
                let prefix = prefix.clone();
                conns.serve(stream, move |req: Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let info = RequestInfo::new(&format!("{prefix}-{n:08x}"));
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle(&app, req, &info, request_body).await) }
                });
            }
        }
    };
    drop(listener);
    match signal {
        Stop::Graceful(sig) => {
            tracing::info!(app = %name, signal = sig, "stopping: no new connections, draining in-flight requests");
            let open = conns.open();
            let drained = tokio::select! {
                drained = conns.drain(DRAIN_TIMEOUT) => drained,
                () = wait_for_now(&mut stop) => {
                    tracing::warn!(app = %name, "killed while draining");
                    return 137;
                }
            };
            if drained {
                tracing::info!(app = %name, "drained; exiting 0");
            } else {
                tracing::warn!(app = %name, timeout = ?DRAIN_TIMEOUT, open_at_start = open, "drain timeout (DRAIN_TIMEOUT) passed; closing the rest");
            }
            0
        }
        Stop::Now(sig) => 128 + sig,
        Stop::No => 137,
    }
}

/// Runs a pod's sandbox until it is killed: the `Kill`'s signal goes to
/// its holder process, whose end is the task's exit status.
pub async fn pause(mut sandbox: Sandbox, mut stop: watch::Receiver<Stop>) -> u32 {
    let mut stopped = false;
    let ended = loop {
        tokio::select! {
            ended = sandbox.holder.wait() => break ended,
            changed = stop.changed(), if !stopped => {
                let sig = match (changed, *stop.borrow_and_update()) {
                    (Err(_), _) => {
                        stopped = true;
                        9
                    }
                    (Ok(()), Stop::No) => continue,
                    (Ok(()), Stop::Graceful(sig) | Stop::Now(sig)) => sig,
                };
                let signal = i32::try_from(sig)
                    .ok()
                    .and_then(rustix::process::Signal::from_named_raw)
                    .unwrap_or(rustix::process::Signal::KILL);
                if let Err(e) = sandbox.holder.signal(signal) {
                    tracing::warn!("cannot signal the sandbox's holder: {e}");
                }
            }
        }
    };
    tracing::info!(
        holder = sandbox.holder.pid(),
        exit_status = ended.status,
        path = ended.path,
        "the sandbox's holder ended"
    );
    // Its stdio closes as the process's would at its exit.
    drop(sandbox);
    ended.status
}

/// Resolves once a `Stop::Now` arrives (or the sender is gone).
async fn wait_for_now(stop: &mut watch::Receiver<Stop>) {
    loop {
        if matches!(*stop.borrow_and_update(), Stop::Now(_)) {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// One request: body bounded by `limits.request_body`, then the guest.
async fn handle(
    app: &Arc<WasmApp>,
    req: Request<Incoming>,
    info: &RequestInfo,
    limit: u64,
) -> Response<Body> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes (BERTH_REQUEST_BODY_LIMIT)\n"),
        );
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let req = req.map(|b| {
        Limited::new(b, limit_usize).map_err(move |e: BoxError| {
            if e.is::<http_body_util::LengthLimitError>() {
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit))
            } else {
                match e.downcast::<hyper::Error>() {
                    Ok(h) => wasmtime_wasi_http::Error::from(*h),
                    Err(other) => wasmtime_wasi_http::Error::InternalError(Some(other.to_string())),
                }
            }
        })
    });
    match app.handle(req, info).await {
        Ok(resp) => resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
        Err(e) => {
            let status = match &e {
                GuestError::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
                GuestError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
                GuestError::ErrorCode(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            text(status, format!("{e}\n"))
        }
    }
}

async fn command(
    runtime: Arc<WasmRuntime>,
    prepared: Prepared,
    mut stop: watch::Receiver<Stop>,
) -> u32 {
    let Prepared {
        loaded,
        args,
        env,
        settings,
        stdout,
        stderr,
        rootfs,
        ..
    } = prepared;
    let mut diag = stderr.as_ref().and_then(|f| f.try_clone().ok());
    let mut limits = settings.limits;
    // A command runs as long as it runs unless BERTH_TIMEOUT says otherwise.
    if !env.iter().any(|(k, _)| k == "BERTH_TIMEOUT") {
        limits.timeout = Duration::MAX;
    }
    let run = CommandRun {
        args,
        env,
        stdout,
        stderr,
        root: Some(rootfs),
        limits,
        allowed_outbound_hosts: settings.allowed_outbound_hosts,
        allowed_networks: settings.allowed_networks,
    };
    let outcome = tokio::select! {
        outcome = runtime.run_command(&loaded, run) => outcome,
        signal = async {
            loop {
                if stop.changed().await.is_err() { break 9; }
                match *stop.borrow_and_update() {
                    Stop::No => continue,
                    Stop::Graceful(s) | Stop::Now(s) => break s,
                }
            }
        } => return 128 + signal,
    };
    match outcome {
        Ok(CommandExit::Code(code)) => code as u32,
        Err(e) => {
            if let Some(f) = diag.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(f, "berth: {e}");
            }
            tracing::warn!("command component failed: {e}");
            TRAP_STATUS
        }
    }
}

/// A `text/plain` response of `status` with `body`.
fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn open_or_null(f: Option<std::fs::File>) -> std::io::Result<std::fs::File> {
    match f {
        Some(f) => Ok(f),
        None => std::fs::OpenOptions::new().write(true).open("/dev/null"),
    }
}
