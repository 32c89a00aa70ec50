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

use crate::support::{app_url, client, fast_scaling, status, upstream, wait_status};

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
    reused(ReuseMode::Serial, max_requests)
}

/// The counter app reused in `mode`, retired after `max_requests`.
fn reused(mode: ReuseMode, max_requests: u32) -> AppSpec {
    let mut spec = AppSpec::wasm(art::P3_COUNTER);
    spec.instances = Some(InstanceReuse {
        max_requests_per_instance: max_requests,
        idle_timeout: Duration::from_secs(30),
        ..mode.defaults()
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
    serves_in_turn_and_retires_after_max_requests(serial(3)).await;
}

/// Concurrent reuse, one request after another: the same as serial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_concurrent_reuse_retires_after_max_requests() {
    serves_in_turn_and_retires_after_max_requests(reused(ReuseMode::Concurrent, 3)).await;
}

async fn serves_in_turn_and_retires_after_max_requests(spec: AppSpec) {
    let host = TestHost::builder()
        .app("counter", spec)
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
    a_failed_request_retires_its_instance(serial(128)).await;
}

/// The same rule under concurrent reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_a_failed_request_retires_its_concurrently_used_instance() {
    a_failed_request_retires_its_instance(reused(ReuseMode::Concurrent, 128)).await;
}

async fn a_failed_request_retires_its_instance(spec: AppSpec) {
    let host = TestHost::builder()
        .app("counter", spec)
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
                max_concurrent_per_instance: Some(0),
                ..RawInstances::default()
            },
            "instances.max_concurrent_per_instance",
            "outside 1..=1000",
        ),
        (
            RawInstances {
                reuse: Some("concurrent".into()),
                max_concurrent_per_instance: Some(1001),
                ..RawInstances::default()
            },
            "instances.max_concurrent_per_instance",
            "outside 1..=1000",
        ),
        (
            RawInstances {
                reuse: Some("serial".into()),
                max_concurrent_per_instance: Some(4),
                ..RawInstances::default()
            },
            "instances.max_concurrent_per_instance",
            "must be 1 (or left out) unless reuse = \"concurrent\"",
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
        let e = AppSpec::from_config("a", &with(raw), base).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.reason.contains(says), "{e}");
    }
    // `concurrent` alone takes `wasmtime serve`'s counts.
    let spec = AppSpec::from_config(
        "a",
        &with(RawInstances {
            reuse: Some("concurrent".into()),
            ..RawInstances::default()
        }),
        base,
    )
    .unwrap();
    assert_eq!(spec.instances, Some(InstanceReuse::CONCURRENT));
    assert_eq!(
        (
            InstanceReuse::CONCURRENT.max_concurrent_per_instance,
            InstanceReuse::CONCURRENT.max_requests_per_instance
        ),
        (16, 128)
    );
    // A WASIp2 component cannot be reused: refused at deploy, named.
    for reuse in [InstanceReuse::SERIAL, InstanceReuse::CONCURRENT] {
        let mut spec = AppSpec::wasm(art::COUNTER);
        spec.instances = Some(reuse);
        let err = TestHost::builder()
            .app("p2", spec)
            .start()
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        let says = format!(
            "instances.reuse = \"{}\" needs a wasi:http@0.3 component",
            reuse.mode.as_str()
        );
        assert!(msg.contains(&says), "{msg}");
    }
}

/// The loop app (a slow handler that yields, or spins) with concurrent
/// reuse: `at_once` requests per instance, `timeout` each.
fn concurrent_loop(at_once: u32, timeout: Duration) -> AppSpec {
    let mut spec = fast_scaling(art::P3_LOOP);
    spec.instances = Some(InstanceReuse {
        max_concurrent_per_instance: at_once,
        ..InstanceReuse::CONCURRENT
    });
    spec.limits.timeout = timeout;
    spec
}

/// GET `path` of the loop app: status, request id, body.
async fn get_loop(c: &reqwest::Client, host: &TestHost, path: &str) -> (u16, String, String) {
    let r = c
        .get(app_url(host.addr, "loop", path))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let id = r.headers()["x-berth-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    (status, id, r.text().await.unwrap())
}

/// The lines of the loop app's log: (request id, stream, text).
fn log_lines(host: &TestHost) -> Vec<(String, String, String)> {
    let text = berth::logs::read_all(&host.data_dir().join("logs"), "loop").unwrap();
    text.lines()
        .filter_map(|l| {
            // `time request-id trace-id stream text`
            let mut parts = l.splitn(5, ' ');
            let (_ts, id, _trace, stream, rest) = (
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next()?,
            );
            Some((id.to_string(), stream.to_string(), rest.to_string()))
        })
        .collect()
}

/// Concurrent reuse: eight slow requests at once share one instance (they
/// number 1 to 8 in it) and every line each writes carries its own
/// request's id, though their lines interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_concurrent_requests_share_an_instance_and_keep_their_own_ids() {
    let host = TestHost::builder()
        .app("loop", concurrent_loop(16, Duration::from_secs(20)))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["loop"]);
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let (c, host_addr) = (c.clone(), host.addr);
            tokio::spawn(async move {
                let r = c
                    .get(app_url(
                        host_addr,
                        "loop",
                        &format!("/?sleep_ms=700&mark=m{i}"),
                    ))
                    .send()
                    .await
                    .unwrap();
                let id = r.headers()["x-berth-request-id"]
                    .to_str()
                    .unwrap()
                    .to_string();
                (i, r.status().as_u16(), id, r.text().await.unwrap())
            })
        })
        .collect();
    let mut ids = std::collections::HashMap::new();
    for call in calls {
        let (i, code, id, body) = call.await.unwrap();
        assert_eq!((code, body.as_str()), (200, "ok"), "m{i}");
        ids.insert(format!("m{i}"), id);
    }
    let lines = log_lines(&host);
    let mut numbers = Vec::new();
    for (mark, id) in &ids {
        let mine: Vec<_> = lines
            .iter()
            .filter(|(_, _, t)| t.split(' ').nth(1) == Some(mark.as_str()))
            .collect();
        assert_eq!(mine.len(), 2, "{mark}: {lines:?}");
        for (line_id, stream, text) in &mine {
            assert_eq!((line_id, stream.as_str()), (id, "stdout"), "{mark}: {text}");
        }
        let start = mine
            .iter()
            .find(|(_, _, t)| t.starts_with("start "))
            .unwrap();
        numbers.push(start.2.rsplit(' ').next().unwrap().parse::<u32>().unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=8).collect::<Vec<_>>(),
        "one instance took all eight"
    );
    // The lines did interleave: every start came before the first end.
    let first_end = lines
        .iter()
        .position(|(_, _, t)| t.starts_with("end "))
        .unwrap();
    let last_start = lines
        .iter()
        .rposition(|(_, _, t)| t.starts_with("start "))
        .unwrap();
    assert!(last_start < first_end, "{lines:?}");
    let stock = status(&host, "loop").stock.unwrap();
    assert_eq!(stock.live, 1, "{stock:?}");
    host.stop().await;
}

/// Concurrent reuse: a request that overruns its deadline while waiting
/// ends with 504 while the others on its instance finish; the instance then
/// takes no more requests (the next one starts a fresh instance). A guest
/// that spins past its deadline poisons the instance: it gets 504 and every
/// other request in flight on that instance finishes or gets a 503 naming
/// the retirement and its cause; none hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_a_late_request_on_a_shared_instance_is_504_and_the_others_finish_or_get_503() {
    let timeout = Duration::from_secs(2);
    let host = TestHost::builder()
        .app("loop", concurrent_loop(16, timeout))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["loop"]);
    let bounded = Duration::from_secs(30);
    let spawn = |path: String| {
        let (c, addr) = (c.clone(), host.addr);
        tokio::spawn(async move {
            let r = tokio::time::timeout(bounded, c.get(app_url(addr, "loop", &path)).send())
                .await
                .expect("answered")
                .unwrap();
            let id = r.headers()["x-berth-request-id"]
                .to_str()
                .unwrap()
                .to_string();
            (r.status().as_u16(), id, r.text().await.unwrap())
        })
    };
    // Waiting past the deadline: 504; the others finish.
    let late = spawn("/?sleep_ms=60000&mark=late".into());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quick: Vec<_> = (0..3)
        .map(|i| spawn(format!("/?sleep_ms=500&mark=q{i}")))
        .collect();
    for q in quick {
        let (code, _, body) = q.await.unwrap();
        assert_eq!((code, body.as_str()), (200, "ok"));
    }
    let (code, _, body) = late.await.unwrap();
    assert_eq!(code, 504, "{body}");
    assert!(
        body.contains(&format!("did not answer within its timeout of {timeout:?}")),
        "{body}"
    );
    // The instance that had a late request takes no more: a fresh one.
    let (code, _, _) = get_loop(&c, &host, "/?mark=after").await;
    assert_eq!(code, 200);
    let after = log_lines(&host)
        .into_iter()
        .find(|(_, _, t)| t.starts_with("start after "))
        .unwrap();
    assert_eq!(after.2, "start after 1", "a fresh instance");

    // Spinning past the deadline: 504 for it, the others finish or 503.
    let spin = spawn("/spin".into());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let others: Vec<_> = (0..3)
        .map(|i| spawn(format!("/?sleep_ms=100&mark=s{i}")))
        .collect();
    let (code, spin_id, body) = spin.await.unwrap();
    assert_eq!(code, 504, "{body}");
    let mut outcomes = Vec::new();
    for o in others {
        let (code, _, body) = o.await.unwrap();
        match code {
            200 => assert_eq!(body, "ok"),
            503 => {
                assert!(
                    body.contains("the instance serving it was retired"),
                    "{body}"
                );
                assert!(
                    body.contains(&format!("request {spin_id} on it failed")),
                    "{body}"
                );
                assert!(body.contains("did not answer within its timeout"), "{body}");
            }
            other => panic!("{other}: {body}"),
        }
        outcomes.push(code);
    }
    eprintln!("requests beside the spinning one: {outcomes:?}");
    // And the app still serves.
    assert_eq!(get_loop(&c, &host, "/").await.0, 200);
    host.stop().await;
}

/// The autoscaler counts capacity: with concurrent reuse an instance takes
/// `max_concurrent_per_instance` requests, so 32 slow requests at once ask
/// for 2 instances of 16 (utilization 100 %), and 2 wasmtime instances
/// serve them; with serial reuse each instance takes one, so the same load
/// asks for as many instances as `max_scale` allows. Both go back to zero,
/// live instances included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_the_autoscaler_counts_instances_in_capacity_units() {
    let mut shared = concurrent_loop(16, Duration::from_secs(20));
    shared.scaling.autoscale.utilization = 1.0;
    let mut serial = fast_scaling(art::P3_LOOP);
    serial.instances = Some(InstanceReuse::SERIAL);
    serial.limits.timeout = Duration::from_secs(20);
    serial.scaling.autoscale.utilization = 1.0;
    serial.scaling.autoscale.max_scale = 8;
    let host = TestHost::builder()
        .app("loop", shared)
        .app("serial", serial)
        .start()
        .await
        .unwrap();
    for (app, n, want) in [("loop", 32, 2), ("serial", 16, 8)] {
        // A client of its own: a keep-alive connection left idle by the
        // first app's load could be closed by the host's header-read
        // timeout just as this one reuses it.
        let c = client(host.addr, &[app]);
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let url = app_url(host.addr, app, "/?sleep_ms=4000");
                let c = c.clone();
                tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
            })
            .collect();
        // As many requests in flight as the capacity takes (on a loaded
        // machine the last ones can reach the host after the scale-up; the
        // serial app queues the other 8), then the instances
        // the autoscaler asked for and the wasmtime instances serving them.
        let per = if app == "loop" { 16 } else { 1 };
        wait_status(&host, app, "a full capacity in flight", |s| {
            s.in_flight as u32 == want * per
        })
        .await;
        let s = wait_status(&host, app, "the capacity asked for", |s| {
            s.desired == want && s.ready == want && s.stock.as_ref().is_some_and(|k| k.live == want)
        })
        .await;
        assert_eq!(s.in_flight as u32, want * per, "{s:?}");
        for call in calls {
            assert_eq!(call.await.unwrap(), 200);
        }
        let s = status(&host, app);
        assert!(
            s.desired <= want,
            "never more than the load asks for: {s:?}"
        );
        // Idle: to zero, and no wasmtime instance stays alive.
        wait_status(&host, app, "zero instances", |s| {
            s.desired == 0 && s.ready == 0 && s.stock.as_ref().is_some_and(|k| k.live == 0)
        })
        .await;
    }
    host.stop().await;
}

/// An upstream that answers `slow ok` after `delay`, and the most
/// connections it held at once.
async fn slow_upstream(
    delay: Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (open, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let held = peak.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (open, peak) = (open.clone(), peak.clone());
            tokio::spawn(async move {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nslow ok",
                    )
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, held)
}

/// Outbound connections count against their own request under concurrent
/// reuse: four requests sharing one instance, each allowed one connection
/// (`limits.outbound_connections_per_request = 1`), reach a slow upstream
/// at the same time; one count for the whole instance would refuse three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_concurrent_requests_each_have_their_own_outbound_connection_count() {
    let (up, peak) = slow_upstream(Duration::from_millis(800)).await;
    let mut spec = AppSpec::wasm(art::P3_OUTBOUND);
    spec.allowed_outbound_hosts = vec![format!("127.0.0.1:{}", up.port())];
    spec.limits.outbound_connections_per_request = 1;
    spec.instances = Some(InstanceReuse::CONCURRENT);
    let host = TestHost::builder().app("out", spec).start().await.unwrap();
    let c = client(host.addr, &["out"]);
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let url = app_url(
                host.addr,
                "out",
                &format!("/?url=http://127.0.0.1:{}/x", up.port()),
            );
            let c = c.clone();
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap(),
            (200, "upstream 200: slow ok".to_string())
        );
    }
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(peak >= 2, "the connections overlapped: {peak} at most");
    assert_eq!(status(&host, "out").stock.unwrap().live, 1, "one instance");
    host.stop().await;
}
