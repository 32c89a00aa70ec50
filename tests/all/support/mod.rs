//! Shared helpers for the integration tests.

pub mod fake_registry;
pub mod image;
pub mod registry;
pub mod serve;

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

/// Polls `check` every 20 ms until it holds; panics naming `what` (and the
/// last state `check` saw) if it does not within `limit`. The limit is a
/// safety net for a broken build, not a measurement.
pub async fn wait_until<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<(), T>,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last seen: {last:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
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
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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
