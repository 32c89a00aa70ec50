//! WASIp3 components (`wasi:http/handler@0.3`) served over HTTP with the
//! same behaviours as WASIp2 ones: status and headers, a streaming body,
//! trailers, a trap answered 500, a spinning guest 504, the outbound
//! allow-list, and a fresh instance per request when nothing else is asked.

use std::time::Duration;

use berth::config::AppSpec;
use berth::testing::TestHost;
use berth_test_artifacts as art;
use bytes::Bytes;
use http_body_util::BodyExt;

use berth::config::spec::{InstanceReuse, ReuseMode};

use crate::support::{app_url, client, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_hello_is_served_and_its_world_is_detected() {
    let host = TestHost::builder()
        .wasm_app("hello3", art::P3_HELLO)
        .wasm_app("hello2", art::HELLO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["hello3"]);
    let r = c
        .get(app_url(host.addr, "hello3", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-berth-request-id"));
    assert_eq!(r.headers()["content-length"], "17");
    assert_eq!(r.text().await.unwrap(), "hello from hello3");
    let world = |app: &str| {
        host.apps()
            .status()
            .into_iter()
            .find(|s| s.deployed.name == app)
            .and_then(|s| s.deployed.world)
    };
    assert_eq!(world("hello3").as_deref(), Some("wasi:http@0.3"));
    assert_eq!(world("hello2").as_deref(), Some("wasi:http@0.2"));
    host.stop().await;
}

/// A chunked request body with trailers, over h2c: the guest echoes each
/// chunk as it arrives (the first comes back before the second is sent),
/// then answers with trailers of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_echo_streams_the_body_and_sends_trailers() {
    let host = TestHost::builder()
        .wasm_app("echo3", art::P3_ECHO)
        .start()
        .await
        .unwrap();
    let stream = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);

    let (tx, rx) = tokio::sync::mpsc::channel::<hyper::body::Frame<Bytes>>(4);
    let body = http_body_util::StreamBody::new(Box::pin(
        tokio_stream_of(rx).map(Ok::<_, std::convert::Infallible>),
    ));
    let req = http::Request::post(format!(
        "http://echo3.localhost:{}/up?status=201",
        host.addr.port()
    ))
    .header("x-custom", "v1")
    .body(body)
    .unwrap();
    tx.send(hyper::body::Frame::data(Bytes::from_static(b"first ")))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), send.send_request(req))
        .await
        .expect("the head comes before the body ends")
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-echo-method"], "POST");
    assert_eq!(resp.headers()["x-echo-path"], "/up?status=201");
    assert_eq!(resp.headers()["x-echo-header-x-custom"], "v1");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(20), body.frame())
        .await
        .expect("the first chunk is echoed while the request still streams")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first ");
    tx.send(hyper::body::Frame::data(Bytes::from_static(b"second")))
        .await
        .unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-sent", "yes".parse().unwrap());
    tx.send(hyper::body::Frame::trailers(trailers))
        .await
        .unwrap();
    drop(tx);
    let rest = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = rest.trailers().cloned().expect("the guest's trailers");
    assert_eq!(rest.to_bytes(), "second");
    assert_eq!(trailers["x-echo-bytes"], "12");
    assert_eq!(trailers["x-echo-trailer-x-sent"], "yes");
    host.stop().await;
}

/// A `Stream` over an mpsc receiver (tokio-stream is not a dependency).
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_trap_is_500_and_a_spinning_guest_504_while_others_are_served() {
    let timeout = Duration::from_secs(2);
    let mut b = TestHost::builder().wasm_app("hello", art::P3_HELLO);
    for (name, path) in [("trap", art::P3_TRAP), ("loop", art::P3_LOOP)] {
        let mut spec = AppSpec::wasm(path);
        spec.limits.timeout = timeout;
        b = b.app(name, spec);
    }
    let host = b.start().await.unwrap();
    let c = client(host.addr, &["hello", "trap", "loop"]);
    let r = c.get(app_url(host.addr, "trap", "/")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let body = r.text().await.unwrap();
    assert!(body.contains("trapped"), "{body}");

    let spin = {
        let c = c.clone();
        let url = app_url(host.addr, "loop", "/spin");
        tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    // A yielding p3 guest waits on the host's clock and answers.
    let r = c
        .get(app_url(host.addr, "loop", "/?sleep_ms=50"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = c
        .get(app_url(host.addr, "hello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from hello");
    let (code, body) = spin.await.unwrap();
    assert_eq!(code, 504, "{body}");
    assert!(
        body.contains(&format!("did not answer within its timeout of {timeout:?}")),
        "{body}"
    );
    // Sleeping past the deadline in a host call: 504 too.
    let r = c
        .get(app_url(host.addr, "loop", "/?sleep_ms=60000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_outbound_only_to_allowed_hosts() {
    let up = upstream("upstream ok").await;
    let mut allowed = AppSpec::wasm(art::P3_OUTBOUND);
    allowed.allowed_outbound_hosts = vec![format!("127.0.0.1:{}", up.port())];
    let host = TestHost::builder()
        .app("out", allowed)
        .wasm_app("closed", art::P3_OUTBOUND)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["out", "closed"]);
    let target = format!("/?url=http://127.0.0.1:{}/x", up.port());
    let r = c
        .get(app_url(host.addr, "out", &target))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "upstream 200: upstream ok");

    let r = c
        .get(app_url(host.addr, "closed", &target))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("HttpRequestDenied"), "{body}");
    host.stop().await;
}

/// With `reuse = "none"`, a request never sees another's memory: the
/// counter that would count across requests on one instance always starts
/// over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_without_reuse_no_request_sees_another_s_state() {
    let mut spec = AppSpec::wasm(art::P3_COUNTER);
    spec.instances = Some(InstanceReuse::NONE);
    let host = TestHost::builder()
        .app("counter", spec)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["counter"]);
    for i in 0..5 {
        let r = c
            .get(app_url(host.addr, "counter", &format!("/?mark=m{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "count 1 previous none");
    }
    host.stop().await;
}

/// The answer of the counter app to `query`: status and body.
async fn count(c: &reqwest::Client, host: &TestHost, query: &str) -> (u16, String) {
    let r = c
        .get(app_url(host.addr, "counter", &format!("/?{query}")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn serial(max_requests: u32) -> AppSpec {
    let mut spec = AppSpec::wasm(art::P3_COUNTER);
    spec.instances = Some(InstanceReuse {
        mode: ReuseMode::Serial,
        max_requests_per_instance: max_requests,
        idle_timeout: Duration::from_secs(30),
    });
    spec.limits.timeout = Duration::from_secs(2);
    spec.limits.memory = 32 << 20;
    spec
}

/// Serial reuse: one instance serves requests one after another (its
/// memory carries over, by design) and is retired after
/// `max_requests_per_instance` of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_serial_reuse_serves_in_turn_and_retires_after_max_requests() {
    let host = TestHost::builder()
        .app("counter", serial(3))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["counter"]);
    let mut got = Vec::new();
    for i in 0..4 {
        got.push(count(&c, &host, &format!("mark=m{i}")).await.1);
    }
    assert_eq!(
        got,
        [
            "count 1 previous none",
            "count 2 previous m0",
            "count 3 previous m1",
            "count 1 previous none",
        ]
    );
    host.stop().await;
}

/// A trap, a deadline overrun and a memory-limit hit each retire the
/// reused instance: the request after it starts on a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_a_failed_request_retires_its_reused_instance() {
    let host = TestHost::builder()
        .app("counter", serial(128))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["counter"]);
    for (fail, status, says) in [
        ("trap", 500, "trapped"),
        ("spin", 504, "did not answer within its timeout"),
        ("grow", 500, "memory limit of 32"),
    ] {
        assert_eq!(count(&c, &host, "mark=a").await.1, "count 1 previous none");
        assert_eq!(count(&c, &host, "mark=b").await.1, "count 2 previous a");
        let (code, body) = count(&c, &host, &format!("fail={fail}")).await;
        assert_eq!(code, status, "{fail}: {body}");
        assert!(body.contains(says), "{fail}: {body}");
        assert_eq!(
            count(&c, &host, "mark=c").await.1,
            "count 1 previous none",
            "after {fail}, a fresh instance"
        );
        // Retire that one too before the next round: a fresh start.
        let _ = count(&c, &host, "fail=trap").await;
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_settings_are_validated_with_named_errors() {
    use berth::config::AppConfig;
    use berth::config::file::RawInstances;
    let base = std::path::Path::new("/");
    let with = |raw: RawInstances| AppConfig {
        wasm: Some("/x.wasm".into()),
        instances: raw,
        ..AppConfig::default()
    };
    for (raw, key, says) in [
        (
            RawInstances {
                reuse: Some("concurrent".into()),
                ..RawInstances::default()
            },
            "instances.reuse",
            "not supported yet",
        ),
        (
            RawInstances {
                reuse: Some("sometimes".into()),
                ..RawInstances::default()
            },
            "instances.reuse",
            "not one of",
        ),
        (
            RawInstances {
                max_requests_per_instance: Some(0),
                ..RawInstances::default()
            },
            "instances.max_requests_per_instance",
            "outside 1..=",
        ),
        (
            RawInstances {
                idle_timeout: Some("2h".into()),
                ..RawInstances::default()
            },
            "instances.idle_timeout",
            "longer than the maximum",
        ),
    ] {
        let (k, reason) = AppSpec::from_config("a", &with(raw), base).unwrap_err();
        assert_eq!(k, key, "{reason}");
        assert!(reason.contains(says), "{key}: {reason}");
    }
    // A WASIp2 component cannot be reused: refused at deploy, named.
    let mut spec = AppSpec::wasm(art::COUNTER);
    spec.instances = Some(InstanceReuse::SERIAL);
    let err = TestHost::builder()
        .app("p2", spec)
        .start()
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("instances.reuse = \"serial\" needs a wasi:http@0.3 component"),
        "{msg}"
    );
}
