//! Traces, checked against a real OTLP/HTTP receiver this test starts on
//! loopback: it decodes each export request with the OpenTelemetry proto
//! definitions (`opentelemetry-proto`) and keeps the spans.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth::config::AppSpec;
use berth::testing::TestHost;
use berth::trace::{SamplerSetting, TraceSettings};
use berth_test_artifacts as art;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::support::{app_url, client, poll};

/// Spans the receiver got, with the service name of their resource.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().unwrap().clone()
    }

    /// The spans of trace `trace_id` once `n` of them came (10 s at most).
    async fn trace(&self, trace_id: &[u8], n: usize) -> Vec<Span> {
        let got = poll(
            Duration::from_secs(10),
            Duration::from_millis(20),
            async || {
                let spans: Vec<Span> = self
                    .spans()
                    .into_iter()
                    .map(|(_, s)| s)
                    .filter(|s| s.trace_id == trace_id)
                    .collect();
                if spans.len() >= n {
                    Ok(spans)
                } else {
                    Err(spans)
                }
            },
        )
        .await;
        match got {
            Ok(spans) => spans,
            Err(t) => panic!(
                "expected {n} spans of the trace, got {}: {:#?}",
                t.last.len(),
                names(&t.last)
            ),
        }
    }
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

/// An OTLP/HTTP receiver on a free loopback port: `POST /v1/traces` with a
/// protobuf `ExportTraceServiceRequest`.
async fn receiver() -> (SocketAddr, Received) {
    use http_body_util::{BodyExt as _, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let keep = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let keep = keep.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let keep = keep.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(
                            req.headers()["content-type"],
                            "application/x-protobuf",
                            "OTLP/HTTP protobuf"
                        );
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        let mut spans = keep.0.lock().unwrap();
                        for rs in export.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|kv| kv.key == "service.name")
                                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                                .map(|v| match v {
                                    Value::StringValue(s) => s.clone(),
                                    other => format!("{other:?}"),
                                })
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for span in ss.spans {
                                    spans.push((service.clone(), span));
                                }
                            }
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, received)
}

fn settings(endpoint: SocketAddr) -> TraceSettings {
    TraceSettings {
        endpoint: Some(format!("http://{endpoint}/v1/traces")),
        service_name: "berth-test".into(),
        sampler: SamplerSetting::ParentBasedOn,
        queue: 2048,
        delay: Duration::from_millis(50),
    }
}

/// A Wasm app at zero until its first request.
fn at_zero(path: &str) -> AppSpec {
    let mut spec = AppSpec::wasm(path);
    spec.scaling.autoscale.initial_scale = 0;
    spec
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

fn bool_attr(span: &Span, key: &str) -> Option<bool> {
    match attr(span, key) {
        Some(Value::BoolValue(b)) => Some(*b),
        _ => None,
    }
}

/// The one span named `name` whose attribute `berth.app` (own or of the
/// server span above it) is `app`.
fn find<'a>(spans: &'a [Span], name: &str, app: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == name && s.kind != 3 && app_of(spans, s) == Some(app))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one `{name}` span of app `{app}` in {:#?}",
        names(spans)
    );
    found[0]
}

/// The one server span of `app`.
fn server_of<'a>(spans: &'a [Span], app: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == 2 && str_attr(s, "berth.app") == Some(app))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one server span of `{app}` in {:#?}",
        names(spans)
    );
    found[0]
}

/// The `berth.app` of `span` or of its nearest ancestor that has one.
fn app_of<'a>(spans: &'a [Span], span: &'a Span) -> Option<&'a str> {
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (&s.span_id[..], s)).collect();
    let mut at = span;
    loop {
        if let Some(app) = str_attr(at, "berth.app") {
            return Some(app);
        }
        at = by_id.get(&at.parent_span_id[..])?;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request to a Wasm app that calls a second app over outbound HTTP is one
/// trace under the caller's `traceparent`: server span → queue → cold start
/// and the guest's handler → its client span → the second app's server span
/// → …; the cold start is there on the first request only, and the second
/// app's guest sees its own handler span as its caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_across_two_apps_is_one_trace() {
    let (otlp, received) = receiver().await;
    let mut front = at_zero(art::OUTBOUND);
    front.allowed_outbound_hosts = vec!["127.0.0.1".into()];
    let mut echo = at_zero(art::ECHO);
    echo.routes = vec!["/echo".into()];
    let host = TestHost::builder()
        .traces(settings(otlp))
        .app("front", front)
        .app("echo", echo)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["front"]);
    let url = app_url(
        host.addr,
        "front",
        &format!("/?url=http://127.0.0.1:{}/echo/x", host.addr.port()),
    );
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let r = c
        .get(&url)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "upstream 200: ");

    let trace_id = (0..16)
        .map(|i| u8::from_str_radix(&caller_trace[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    // front: server, queue, cold_start, wasm.handle, client;
    // echo: server, queue, cold_start, wasm.handle.
    let spans = received.trace(&trace_id, 9).await;
    assert!(
        received.spans().iter().all(|(svc, _)| svc == "berth-test"),
        "service.name"
    );

    let server = server_of(&spans, "front");
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(hex(&server.parent_span_id), caller_span, "under the caller");
    assert_eq!(int_attr(server, "http.response.status_code"), Some(200));
    assert_eq!(str_attr(server, "http.request.method"), Some("GET"));
    assert_eq!(str_attr(server, "url.path"), Some("/"));
    assert_eq!(str_attr(server, "url.scheme"), Some("http"));
    assert_eq!(bool_attr(server, "berth.cold_start"), Some(true));
    assert!(str_attr(server, "berth.request_id").is_some());

    let queue = find(&spans, "activator.queue", "front");
    assert_eq!(queue.parent_span_id, server.span_id);
    assert_eq!(bool_attr(queue, "berth.cold_start"), Some(true));
    let cold = find(&spans, "cold_start", "front");
    assert_eq!(cold.parent_span_id, queue.span_id);
    assert_eq!(str_attr(cold, "berth.kind"), Some("wasm"));
    assert!(
        str_attr(cold, "berth.revision").is_some_and(|r| r.starts_with("front-")),
        "{:?}",
        str_attr(cold, "berth.revision")
    );
    assert_eq!(int_attr(cold, "berth.instance"), Some(1));

    let handle = find(&spans, "wasm.handle", "front");
    assert_eq!(handle.parent_span_id, server.span_id);
    assert_eq!(bool_attr(handle, "berth.cold_start"), Some(true));
    assert_eq!(int_attr(handle, "berth.instance"), Some(1));
    assert_eq!(str_attr(handle, "berth.kind"), Some("wasm"));
    assert!(str_attr(handle, "berth.wasm.instance").is_some());

    let client_span = spans
        .iter()
        .find(|s| s.kind == 3)
        .expect("a SPAN_KIND_CLIENT span for the outbound request");
    assert_eq!(client_span.parent_span_id, handle.span_id);
    assert_eq!(
        int_attr(client_span, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        str_attr(client_span, "url.full"),
        Some(format!("http://127.0.0.1:{}/echo/x", host.addr.port()).as_str())
    );

    // The second app's server span hangs under the first app's client span:
    // the guest's outbound request carried `traceparent`.
    let echo_server = server_of(&spans, "echo");
    assert_eq!(echo_server.parent_span_id, client_span.span_id);
    let echo_handle = find(&spans, "wasm.handle", "echo");
    assert_eq!(echo_handle.parent_span_id, echo_server.span_id);
    find(&spans, "cold_start", "echo");

    // Again: an instance is ready now, so no queue and no cold start.
    let second_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = c
        .get(&url)
        .header(
            "traceparent",
            format!("00-{second_trace}-b7ad6b7169203331-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let trace_id = (0..16)
        .map(|i| u8::from_str_radix(&second_trace[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    let spans = received.trace(&trace_id, 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans_later: Vec<Span> = received
        .spans()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s.trace_id == trace_id)
        .collect();
    assert_eq!(
        names(&spans_later).len(),
        5,
        "server, handler and client of front, server and handler of echo: {:#?}",
        names(&spans_later)
    );
    assert!(
        spans
            .iter()
            .all(|s| s.name != "cold_start" && s.name != "activator.queue"),
        "{:#?}",
        names(&spans)
    );
    assert_eq!(
        bool_attr(find(&spans, "wasm.handle", "front"), "berth.cold_start"),
        Some(false)
    );
    host.stop().await;
}

/// The guest sees `traceparent` naming berth's handler span in the caller's
/// trace, and the caller's `tracestate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_sees_its_handler_span_as_caller() {
    let (otlp, received) = receiver().await;
    let host = TestHost::builder()
        .traces(settings(otlp))
        .wasm_app("echo", art::ECHO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["echo"]);
    let caller_trace = "11112222333344445555666677778888";
    let r = c
        .get(app_url(host.addr, "echo", "/"))
        .header(
            "traceparent",
            format!("00-{caller_trace}-1111222233334444-01"),
        )
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = r.headers()["x-echo-header-traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        r.headers()["x-echo-header-tracestate"],
        "vendor=opaque",
        "tracestate travels on"
    );
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", caller_trace, "01"));
    let trace_id = (0..16)
        .map(|i| u8::from_str_radix(&caller_trace[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    let spans = received.trace(&trace_id, 2).await;
    let handle = find(&spans, "wasm.handle", "echo");
    assert_eq!(hex(&handle.span_id), parts[2], "the guest's caller");
    host.stop().await;
}

/// With tracing off nothing is added: the guest gets the caller's headers
/// as they came, and nothing is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_means_untouched_headers() {
    let host = TestHost::builder()
        .wasm_app("echo", art::ECHO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["echo"]);
    let parent = "00-11112222333344445555666677778888-1111222233334444-01";
    let r = c
        .get(app_url(host.addr, "echo", "/"))
        .header("traceparent", parent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-echo-header-traceparent"], parent);
    let r = c.get(app_url(host.addr, "echo", "/")).send().await.unwrap();
    assert!(!r.headers().contains_key("x-echo-header-traceparent"));
    host.stop().await;
}

/// The endpoint down: requests are served as before, and the spans that
/// could not be sent are counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_costs_requests_nothing_and_drops_are_counted() {
    // A port nothing listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let host = TestHost::builder()
        .traces(settings(down))
        .wasm_app("echo", art::ECHO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["echo"]);
    for _ in 0..20 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.get(app_url(host.addr, "echo", "/")).send(),
        )
        .await
        .expect("a request is not held up by the exporter")
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    let admin = reqwest::Client::new();
    let url = format!("http://{}/metrics", host.admin_addr);
    let token = host.admin_token().to_owned();
    let dropped = poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || {
            {
                let text = admin
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let n = text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("berth_trace_spans_dropped_total{reason=\"export_failed\"} ")
                    })
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                // 20 requests × (server + handler) spans at least.
                if n >= 40 { Ok(n) } else { Err(text) }
            }
        },
    )
    .await;
    if let Err(t) = dropped {
        panic!("drops not counted:\n{}", t.last);
    }
    host.stop().await;
}

/// The trace id of a W3C `traceparent`, as bytes.
fn trace_bytes(hex_id: &str) -> Vec<u8> {
    (0..16)
        .map(|i| u8::from_str_radix(&hex_id[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// A container app at zero: its first request is one trace, server span →
/// `activator.queue` → `cold_start` with a span per phase of the container's
/// start, and `container.proxy` (a client span) under the server span; the
/// container sees a `traceparent` naming that proxy span in the caller's
/// trace, and the caller's `tracestate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_request_is_one_trace_and_the_container_sees_it() {
    use crate::support::image::{Image, ImageExt as _, Layer};
    use crate::support::registry::Registry;

    let (otlp, received) = receiver().await;
    let registry = Registry::start();
    let reference = registry.reference("traced:v1");
    let mut image = Image::httpd();
    image.layers.push(Layer::default().file(
        "www/cgi-bin/trace",
        0o755,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"traceparent=$HTTP_TRACEPARENT\"\necho \"tracestate=$HTTP_TRACESTATE\"\n",
    ));
    image.push(&reference);
    let mut spec = AppSpec::image(&reference);
    spec.container.shutdown_grace = Duration::from_secs(2);
    spec.container.startup_timeout = Duration::from_secs(20);
    spec.scaling.autoscale.initial_scale = 0;
    let host = TestHost::builder()
        .traces(settings(otlp))
        .app("web", spec)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["web"]);
    let caller_trace = "aaaabbbbccccddddeeeeffff00001111";
    let caller_span = "2222333344445555";
    let r = c
        .get(app_url(host.addr, "web", "/cgi-bin/trace"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let seen = body
        .lines()
        .find_map(|l| l.strip_prefix("traceparent="))
        .unwrap_or_default()
        .to_owned();
    assert!(
        body.lines().any(|l| l == "tracestate=vendor=opaque"),
        "{body}"
    );
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{body}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", caller_trace, "01"));

    // server, queue, cold_start, its phases (prepare, network, run,
    // ready), container.proxy.
    let spans = received.trace(&trace_bytes(caller_trace), 8).await;
    let server = server_of(&spans, "web");
    assert_eq!(hex(&server.parent_span_id), caller_span, "under the caller");
    assert_eq!(int_attr(server, "http.response.status_code"), Some(200));
    assert_eq!(str_attr(server, "url.path"), Some("/cgi-bin/trace"));
    assert_eq!(bool_attr(server, "berth.cold_start"), Some(true));

    let queue = find(&spans, "activator.queue", "web");
    assert_eq!(queue.parent_span_id, server.span_id);
    let cold = find(&spans, "cold_start", "web");
    assert_eq!(cold.parent_span_id, queue.span_id);
    assert_eq!(str_attr(cold, "berth.kind"), Some("container"));
    assert_eq!(int_attr(cold, "berth.instance"), Some(1));
    let phases: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == cold.span_id)
        .collect();
    let mut phase_names: Vec<&str> = phases.iter().map(|s| s.name.as_str()).collect();
    phase_names.sort_unstable();
    assert_eq!(phase_names, ["network", "prepare", "ready", "run"]);
    for p in &phases {
        assert!(
            p.start_time_unix_nano >= cold.start_time_unix_nano
                && p.end_time_unix_nano <= cold.end_time_unix_nano,
            "phase `{}` within the cold start",
            p.name
        );
    }
    let at = |name: &str| phases.iter().find(|s| s.name == name).unwrap();
    assert!(
        at("prepare").end_time_unix_nano <= at("run").start_time_unix_nano
            && at("run").end_time_unix_nano <= at("ready").start_time_unix_nano,
        "prepare, run and ready one after the other"
    );

    // A client span (which `find` leaves out: those are a guest's calls).
    let proxy = spans
        .iter()
        .find(|s| s.name == "container.proxy")
        .expect("a container.proxy span");
    assert_eq!(str_attr(proxy, "berth.app"), Some("web"));
    assert_eq!(proxy.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(proxy.parent_span_id, server.span_id);
    assert_eq!(str_attr(proxy, "berth.kind"), Some("container"));
    assert_eq!(bool_attr(proxy, "berth.cold_start"), Some(true));
    assert_eq!(int_attr(proxy, "http.response.status_code"), Some(200));
    assert_eq!(hex(&proxy.span_id), parts[2], "the container's caller");
    assert!(
        proxy.start_time_unix_nano >= cold.end_time_unix_nano,
        "proxied once the instance is ready"
    );
    host.stop().await;
}

/// A caller's malformed `traceparent` is ignored: the request starts a new
/// trace, and the guest is handed berth's `traceparent`, never the bad one,
/// nor the `tracestate` beside it; a `tracestate` past the W3C bounds (more
/// than 32 members, longer than 512 bytes) is dropped and the valid parent
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_oversized_trace_context_is_not_passed_on() {
    let (otlp, received) = receiver().await;
    let host = TestHost::builder()
        .traces(settings(otlp))
        .wasm_app("echo", art::ECHO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["echo"]);
    let send = async |headers: &[(&str, String)]| {
        let mut req = c.get(app_url(host.addr, "echo", "/"));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        (
            h("x-echo-header-traceparent").expect("berth hands a traceparent"),
            h("x-echo-header-tracestate"),
            h("x-berth-request-id").unwrap(),
        )
    };
    let bad_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    for bad in [
        format!("00-{}-00f067aa0ba902b7-01", bad_trace.to_uppercase()),
        format!("ff-{bad_trace}-00f067aa0ba902b7-01"),
        format!("00-{bad_trace}-0000000000000000-01"),
        format!("00-{bad_trace}-00f067aa0ba902b7-01-extra"),
        format!("00-{bad_trace}-00f067aa0ba902b7"),
        "x".repeat(1000),
    ] {
        let (seen, state, id) = send(&[
            ("traceparent", bad.clone()),
            ("tracestate", "vendor=opaque".into()),
        ])
        .await;
        assert_ne!(seen, bad);
        let parts: Vec<&str> = seen.split('-').collect();
        assert_eq!(parts.len(), 4, "{seen}");
        assert_ne!(parts[1], bad_trace, "a new trace for {bad}");
        assert_eq!(state, None, "no tracestate without a valid parent");
        // The new trace's server span is a root.
        let spans = received.trace(&trace_bytes(parts[1]), 2).await;
        let server = server_of(&spans, "echo");
        assert!(
            server.parent_span_id.iter().all(|b| *b == 0),
            "a root for {bad}"
        );
        assert_eq!(str_attr(server, "berth.request_id"), Some(id.as_str()));
    }

    let caller_trace = "0123456789abcdef0123456789abcdef";
    let parent = format!("00-{caller_trace}-0123456789abcdef-01");
    let members = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (seen, state, _) =
        send(&[("traceparent", parent.clone()), ("tracestate", members(32))]).await;
    assert_eq!(seen.split('-').nth(1), Some(caller_trace));
    assert_eq!(state, Some(members(32)), "32 members pass");
    for oversized in [members(33), format!("k={}", "v".repeat(600))] {
        let (seen, state, _) = send(&[
            ("traceparent", parent.clone()),
            ("tracestate", oversized.clone()),
        ])
        .await;
        assert_eq!(
            seen.split('-').nth(1),
            Some(caller_trace),
            "the parent is kept"
        );
        assert_eq!(state, None, "dropped: {} bytes", oversized.len());
    }
    host.stop().await;
}

/// A traced request's lines in the app log carry its request id and trace
/// id; a request that is sampled out carries `-` for the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_log_lines_carry_the_trace_id() {
    let (otlp, _received) = receiver().await;
    let host = TestHost::builder()
        .traces(settings(otlp))
        .wasm_app("logger", art::LOGGER)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["logger"]);
    let call = async |flags: &str| {
        let trace = if flags == "01" {
            "feedfacefeedfacefeedfacefeedface"
        } else {
            "0badcafe0badcafe0badcafe0badcafe"
        };
        let r = c
            .get(app_url(host.addr, "logger", "/"))
            .header(
                "traceparent",
                format!("00-{trace}-1111222233334444-{flags}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-berth-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(r.text().await.unwrap(), "logged");
        (id, trace)
    };
    let (sampled, trace) = call("01").await;
    let (sampled_out, _) = call("00").await;
    let dir = host.data_dir().join("logs");
    let want = [
        format!(" {sampled} {trace} stdout stdout line"),
        format!(" {sampled} {trace} stderr stderr line"),
        format!(" {sampled_out} - stdout stdout line"),
    ];
    let text = poll(
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || {
            let text = berth::logs::read_all(&dir, "logger").unwrap_or_default();
            if want
                .iter()
                .all(|w| text.lines().any(|l| l.ends_with(w.as_str())))
            {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    if let Err(t) = text {
        panic!("{want:#?} not all in:\n{}", t.last);
    }
    host.stop().await;
}
