//! Guests' outbound connections are pooled per app: sequential requests to
//! one destination share one connection (WASIp2 and WASIp3), pooling off
//! opens one per request, an idle connection is closed after its timeout,
//! a `Connection: close` response is never reused, two apps never share a
//! connection, and the caps still refuse (idle connections count against
//! the app's cap and are closed first when it needs a new one). A real
//! upstream on loopback counts the TCP connections it accepts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth::config::AppSpec;
use berth::testing::TestHost;
use berth_test_artifacts as art;

use crate::support::{admin, app_url, client, status, wait_until};

/// A loopback HTTP/1.1 upstream that counts the connections it accepted
/// and those open now. `/slow` answers after 1 s, `/close` with
/// `Connection: close`; anything else at once.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Self {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (a, o) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut resp =
                            hyper::Response::new(Full::new(bytes::Bytes::from_static(b"pooled")));
                        match req.uri().path() {
                            "/slow" => tokio::time::sleep(Duration::from_secs(1)).await,
                            "/close" => {
                                resp.headers_mut()
                                    .insert("connection", "close".parse().unwrap());
                            }
                            _ => {}
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            open,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The guest path that makes the outbound component GET `path` here.
    fn via(&self, path: &str) -> String {
        format!("/?url=http%3A%2F%2F{}{path}", self.addr)
    }
}

/// An outbound app (`component`) allowed to reach `ups`, with `limits`
/// applied to its default limits.
fn app(
    component: &str,
    ups: &[&Upstream],
    limits: impl FnOnce(&mut berth::config::Limits),
) -> AppSpec {
    let mut spec = AppSpec::wasm(component);
    spec.allowed_outbound_hosts = ups.iter().map(|u| u.addr.to_string()).collect();
    limits(&mut spec.limits);
    spec
}

async fn get(c: &reqwest::Client, host: &TestHost, app: &str, path: &str) -> (u16, String) {
    let r = c.get(app_url(host.addr, app, path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_one_connection_on_wasip2_and_wasip3() {
    let (up2, up3) = (Upstream::start().await, Upstream::start().await);
    let host = TestHost::builder()
        .app("p2", app(art::OUTBOUND, &[&up2], |_| {}))
        .app("p3", app(art::P3_OUTBOUND, &[&up3], |_| {}))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["p2", "p3"]);
    for (name, up) in [("p2", &up2), ("p3", &up3)] {
        for _ in 0..6 {
            assert_eq!(
                get(&c, &host, name, &up.via("/x")).await,
                (200, "upstream 200: pooled".into()),
                "{name}"
            );
        }
        assert_eq!(up.accepted(), 1, "{name}: six requests, one connection");
        let outbound = status(&host, name).outbound.expect("a Wasm app counts");
        assert_eq!((outbound.opened, outbound.reused), (1, 5), "{name}");
        assert_eq!(outbound.idle, 1, "{name}");
    }
    let metrics = admin::metrics(&host).await;
    for line in [
        "berth_outbound_connections_opened_total{app=\"p2\"} 1",
        "berth_outbound_connections_reused_total{app=\"p3\"} 5",
        "berth_outbound_idle_connections{app=\"p2\"} 1",
        "berth_outbound_requests_refused_total{app=\"p3\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pooling_each_request_opens_its_own_connection() {
    let up = Upstream::start().await;
    let host = TestHost::builder()
        .app(
            "off",
            app(art::OUTBOUND, &[&up], |l| l.outbound_pool_idle_per_host = 0),
        )
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["off"]);
    for _ in 0..5 {
        assert_eq!(get(&c, &host, "off", &up.via("/x")).await.0, 200);
    }
    assert_eq!(up.accepted(), 5);
    // Each is closed after its response.
    wait_until(
        "the upstream to see its connections closed",
        Duration::from_secs(5),
        || (up.open() == 0).then_some(()).ok_or(up.open()),
    )
    .await;
    let outbound = status(&host, "off").outbound.unwrap();
    assert_eq!((outbound.opened, outbound.reused, outbound.idle), (5, 0, 0));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_its_timeout_and_close_is_honoured() {
    let up = Upstream::start().await;
    let host = TestHost::builder()
        .app(
            "short",
            app(art::OUTBOUND, &[&up], |l| {
                l.outbound_pool_idle_timeout = Duration::from_secs(1);
            }),
        )
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["short"]);
    assert_eq!(get(&c, &host, "short", &up.via("/x")).await.0, 200);
    assert_eq!((up.accepted(), up.open()), (1, 1), "kept idle");
    wait_until(
        "the upstream to see its connections closed",
        Duration::from_secs(5),
        || (up.open() == 0).then_some(()).ok_or(up.open()),
    )
    .await;
    assert_eq!(status(&host, "short").outbound.unwrap().idle, 0);
    assert_eq!(get(&c, &host, "short", &up.via("/x")).await.0, 200);
    assert_eq!(up.accepted(), 2, "the timed-out connection is not reused");
    wait_until(
        "the second idle connection to time out",
        Duration::from_secs(5),
        || (up.open() == 0).then_some(()).ok_or(up.open()),
    )
    .await;

    // A response with `Connection: close` ends its connection.
    for _ in 0..3 {
        assert_eq!(get(&c, &host, "short", &up.via("/close")).await.0, 200);
    }
    assert_eq!(up.accepted(), 5, "each closed after its response");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_never_share_a_connection() {
    let up = Upstream::start().await;
    let host = TestHost::builder()
        .app("a", app(art::OUTBOUND, &[&up], |_| {}))
        .app("b", app(art::OUTBOUND, &[&up], |_| {}))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["a", "b"]);
    for _ in 0..4 {
        for name in ["a", "b"] {
            assert_eq!(get(&c, &host, name, &up.via("/x")).await.0, 200);
        }
    }
    assert_eq!(up.accepted(), 2, "one connection per app");
    for name in ["a", "b"] {
        let outbound = status(&host, name).outbound.unwrap();
        assert_eq!((outbound.opened, outbound.reused), (1, 3), "{name}");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_still_refuse_and_idle_connections_make_room() {
    let (up, other) = (Upstream::start().await, Upstream::start().await);
    let host = TestHost::builder()
        .app(
            "one",
            app(art::OUTBOUND, &[&up, &other], |l| {
                l.outbound_connections = 1;
                l.outbound_connections_per_request = 1;
            }),
        )
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["one"]);
    assert_eq!(get(&c, &host, "one", &up.via("/x")).await.0, 200);
    assert_eq!(
        up.open(),
        1,
        "idle in the pool, holding the app's one place"
    );

    // Another destination: the idle connection is closed to make room.
    assert_eq!(get(&c, &host, "one", &other.via("/x")).await.0, 200);
    wait_until(
        "the upstream to see its connections closed",
        Duration::from_secs(5),
        || (up.open() == 0).then_some(()).ok_or(up.open()),
    )
    .await;
    assert_eq!(other.open(), 1);

    // Two at once with a cap of one: one is served (on the pooled
    // connection), the other refused at once.
    let slow = other.via("/slow");
    let (first, second) = tokio::join!(get(&c, &host, "one", &slow), get(&c, &host, "one", &slow));
    let mut outcomes = [first, second];
    outcomes.sort();
    assert_eq!(outcomes[0].0, 200, "{outcomes:?}");
    assert_eq!(outcomes[1].0, 502, "{outcomes:?}");
    assert!(
        outcomes[1].1.contains("ConnectionLimitReached"),
        "{outcomes:?}"
    );
    assert_eq!(
        other.accepted(),
        1,
        "the served one reused the idle connection"
    );
    let outbound = status(&host, "one").outbound.unwrap();
    assert_eq!(outbound.refused, 1);
    assert_eq!(outbound.opened, 2);
    host.stop().await;
}
