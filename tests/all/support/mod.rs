//! Shared helpers for the integration tests.

pub mod admin;
pub mod containerd;
pub mod cri;
pub mod fake_registry;
pub mod image;
pub mod internet;
pub mod registry;
pub mod serve;
pub mod wasmtime_serve;

use std::net::SocketAddr;
use std::time::Duration;

use berth::config::AppSpec;

/// A client that resolves `*.localhost` names to `addr` and never proxies.
pub fn client(addr: SocketAddr, apps: &[&str]) -> reqwest::Client {
    berth::tls::install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60));
    for app in apps {
        b = b.resolve(&format!("{app}.localhost"), addr);
    }
    b.build().expect("client")
}

/// The status of the (first) revision of `app`.
pub fn status(host: &berth::testing::TestHost, app: &str) -> berth::revision::RevisionStatus {
    host.apps()
        .status()
        .into_iter()
        .find(|a| a.deployed.name == app)
        .expect("app deployed")
        .revisions[0]
        .0
        .clone()
}

/// `--container-bridge` and `--container-subnet` of their own for a `berth
/// serve` a test runs, so that it shares nothing with other hosts (or a
/// `make run` on the same machine); and the bridge's name.
pub fn bridge_args() -> (Vec<String>, String) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let bridge = format!("bc{:x}-{n}", pid % 0xffff);
    let slot = (pid.wrapping_mul(31).wrapping_add(n)) % 256;
    let args = vec![
        "--container-bridge".to_string(),
        bridge.clone(),
        "--container-subnet".to_string(),
        format!("10.230.{slot}.0/24"),
    ];
    (args, bridge)
}

/// Whether anything of the bridge `bridge` is left on the host: the
/// device, or a firewall chain named after it. Empty when clean.
pub fn bridge_leftovers(bridge: &str) -> Vec<String> {
    let mut left = Vec::new();
    if std::path::Path::new("/sys/class/net").join(bridge).exists() {
        left.push(format!("bridge {bridge}"));
    }
    for (tool, table) in [
        ("iptables", "filter"),
        ("ip6tables", "filter"),
        ("iptables", "nat"),
    ] {
        let out = std::process::Command::new(tool)
            .args(["-w", "-t", table, "-S"])
            .output()
            .expect("iptables");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.contains(&format!("BERTH-{bridge}-")) {
                left.push(format!("{tool}: {line}"));
            }
        }
    }
    left
}

/// The most checks one [`poll`] makes, whatever its time limit: a bound
/// that does not rest on the clock.
pub const MAX_CHECKS: u32 = 50_000;

/// A [`poll`] whose condition never held: what `check` saw last, after how
/// many checks and how long.
#[derive(Debug)]
pub struct TimedOut<E> {
    /// The last `Err` of `check`.
    pub last: E,
    /// How many times `check` ran.
    pub checks: u32,
    /// How long the poll took.
    pub elapsed: Duration,
}

/// Runs `check` every `every` until it returns `Ok`, for at most `limit`
/// and at most [`MAX_CHECKS`] times; `Err` carries what it saw last. The
/// one polling loop of the tests: [`wait_for`] and [`wait_until`] panic on
/// `Err`, naming what they waited for.
pub async fn poll<T, E>(
    limit: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, TimedOut<E>> {
    let start = tokio::time::Instant::now();
    let mut checks = 0;
    loop {
        checks += 1;
        match check().await {
            Ok(done) => return Ok(done),
            Err(last) if checks >= MAX_CHECKS || start.elapsed() >= limit => {
                return Err(TimedOut {
                    last,
                    checks,
                    elapsed: start.elapsed(),
                });
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// [`poll`]s `check` every 20 ms until it returns `Ok`; panics naming
/// `what` (and the last state `check` saw) if it does not within `limit`.
/// The limit is a safety net for a broken build, not a measurement.
pub async fn wait_for<T, E: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    match poll(limit, Duration::from_millis(20), check).await {
        Ok(done) => done,
        Err(t) => panic!(
            "timed out waiting for {what} ({} checks in {:?}); last seen: {:?}",
            t.checks, t.elapsed, t.last
        ),
    }
}

/// [`wait_for`] with a check that does not wait.
pub async fn wait_until<T, E: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    wait_for(what, limit, async || check()).await
}

/// Waits (up to 20 s) until the status of `app`'s first revision
/// satisfies `f`, naming `what` if it does not; returns that status.
pub async fn wait_status(
    host: &berth::testing::TestHost,
    app: &str,
    what: &str,
    f: impl Fn(&berth::revision::RevisionStatus) -> bool,
) -> berth::revision::RevisionStatus {
    wait_until(what, Duration::from_secs(20), || {
        let s = status(host, app);
        if f(&s) { Ok(s) } else { Err(s) }
    })
    .await
}

/// A Wasm app whose autoscaler acts within a second or so: a 1 s stable
/// window, no grace before zero, a 100 ms tick.
pub fn fast_scaling(path: &str) -> AppSpec {
    let mut spec = AppSpec::wasm(path);
    let a = &mut spec.scaling.autoscale;
    a.stable_window = Duration::from_secs(1);
    a.scale_to_zero_grace = Duration::ZERO;
    a.tick = Duration::from_millis(100);
    spec
}

/// GET `path` of `app` by its host name: (status, body).
pub async fn get(host: &berth::testing::TestHost, app: &str, path: &str) -> (u16, String) {
    let c = client(host.addr, &[app]);
    let r = c.get(app_url(host.addr, app, path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `http://<app>.localhost:PORT{path}`.
pub fn app_url(addr: SocketAddr, app: &str, path: &str) -> String {
    format!("http://{app}.localhost:{}{path}", addr.port())
}

/// An app spec for a component path with a route.
pub fn routed(path: &str, route: &str) -> AppSpec {
    let mut spec = AppSpec::wasm(path);
    spec.routes = vec![route.to_string()];
    spec
}

/// Starts a plain HTTP server on loopback that answers every request with
/// `body`; returns its address. It stops when the test's runtime ends.
pub async fn upstream(body: &'static str) -> SocketAddr {
    upstream_on(SocketAddr::from(([127, 0, 0, 1], 0)), body).await
}

/// [`upstream`] on a chosen address of the host.
pub async fn upstream_on(addr: SocketAddr, body: &'static str) -> SocketAddr {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        bytes::Bytes::from_static(body.as_bytes()),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The names in `dir`, sorted (none when it does not exist).
pub fn dir_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
