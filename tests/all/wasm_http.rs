//! Wasm components served over HTTP: routing, bodies, concurrency, failures
//! and limits, outbound HTTP, the compile cache.

use std::time::Duration;

use berth::config::AppSpec;
use berth::testing::TestHost;
use berth_test_artifacts as art;

use crate::support::{app_url, client, routed, status, upstream, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_by_host_and_by_path_route() {
    let host = TestHost::builder()
        .app("hello", routed(art::HELLO, "/hello"))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["hello"]);

    let r = c
        .get(app_url(host.addr, "hello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-berth-request-id"));
    assert_eq!(r.text().await.unwrap(), "hello from hello");

    let r = c.get(host.url("/hello/there")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from hello");

    // A prefix matches on a path-segment boundary only.
    let r = c.get(host.url("/helloworld")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_route_wins_and_h2c_works() {
    let host = TestHost::builder()
        .app("hello", routed(art::HELLO, "/api"))
        .app("echo", routed(art::ECHO, "/api/echo"))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &[]);
    let r = c.get(host.url("/api/echo/x?y=1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-echo-path"], "/api/echo/x?y=1");
    assert_eq!(r.headers()["x-echo-scheme"], "http");
    let r = c.get(host.url("/api/other")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from hello");

    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(host.url("/api")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from hello");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_app_is_404_naming_what_was_asked() {
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["nope"]);
    let r = c
        .get(app_url(host.addr, "nope", "/some/path"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(body.contains("nope.localhost"), "{body}");
    assert!(body.contains("/some/path"), "{body}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trips_a_mebibyte_byte_exact() {
    let host = TestHost::builder()
        .wasm_app("echo", art::ECHO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["echo"]);
    let body: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = c
        .post(app_url(host.addr, "echo", "/upload?x=1"))
        .header("x-custom", "value-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-echo-method"], "POST");
    assert_eq!(r.headers()["x-echo-path"], "/upload?x=1");
    assert_eq!(r.headers()["x-echo-header-x-custom"], "value-1");
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got[..] == body[..], "echoed body differs");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_all_succeed() {
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["hello"]);
    let url = app_url(host.addr, "hello", "/");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "hello from hello");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_config_reaches_the_guest() {
    let mut spec = AppSpec::wasm(art::ENV);
    spec.env.insert("GREETING".into(), "hi there".into());
    let host = TestHost::builder().app("env", spec).start().await.unwrap();
    let c = client(host.addr, &["env"]);
    let body = c
        .get(app_url(host.addr, "env", "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.lines().any(|l| l == "GREETING=hi there"), "{body}");
    assert!(body.lines().any(|l| l == "BERTH_APP=env"), "{body}");
    host.stop().await;
}

/// Starts a host with every misbehaving component plus hello.
async fn failing_apps(timeout: Duration) -> TestHost {
    let mut b = TestHost::builder().wasm_app("hello", art::HELLO);
    for (name, path) in [
        ("trap", art::TRAP),
        ("panic", art::PANIC),
        ("spin", art::SPIN_FOREVER),
        ("bomb", art::ALLOC_BOMB),
    ] {
        let mut spec = AppSpec::wasm(path);
        spec.limits.timeout = timeout;
        spec.limits.memory = 64 * 1024 * 1024;
        b = b.app(name, spec);
    }
    b.start().await.unwrap()
}

async fn assert_hello_ok(c: &reqwest::Client, host: &TestHost) {
    let r = c
        .get(app_url(host.addr, "hello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_panic_and_memory_bomb_are_500_and_the_host_goes_on() {
    let host = failing_apps(Duration::from_secs(20)).await;
    let c = client(host.addr, &["hello", "trap", "panic", "bomb"]);
    for (app, expect) in [
        ("trap", "trapped"),
        ("panic", "trapped"),
        ("bomb", "memory limit of 64"),
    ] {
        let r = c.get(app_url(host.addr, app, "/")).send().await.unwrap();
        assert_eq!(r.status(), 500, "{app}");
        let body = r.text().await.unwrap();
        assert!(body.contains(expect), "{app}: {body}");
        assert!(body.len() < 300, "{app}: body should be short: {body}");
        assert_hello_ok(&c, &host).await;
    }
    // The panic message went to the app's log, tagged with the request id.
    let log = berth::logs::read_all(&host.data_dir().join("logs"), "panic").unwrap();
    assert!(log.contains("guest panicked on purpose"), "{log}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_forever_hits_the_deadline_with_504_while_others_are_served() {
    let timeout = Duration::from_secs(2);
    let host = failing_apps(timeout).await;
    let c = client(host.addr, &["hello", "spin"]);
    let spin = {
        let c = c.clone();
        let url = app_url(host.addr, "spin", "/");
        tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    // Two spinning guests on a two-core machine must not starve others.
    let spin2 = {
        let c = c.clone();
        let url = app_url(host.addr, "spin", "/");
        tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
    };
    wait_until("both guests spinning", Duration::from_secs(10), || {
        let s = status(&host, "spin");
        if s.in_flight == 2 { Ok(()) } else { Err(s) }
    })
    .await;
    // Served while both still spin (they run until their deadline).
    assert_hello_ok(&c, &host).await;
    assert!(
        !spin.is_finished() && !spin2.is_finished(),
        "hello waited behind the spinning guests"
    );
    let (code, body) = spin.await.unwrap();
    assert_eq!(code, 504, "{body}");
    assert!(
        body.contains(&format!("did not answer within its timeout of {timeout:?}")),
        "{body}"
    );
    assert_eq!(spin2.await.unwrap(), 504);
    assert_hello_ok(&c, &host).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_guest_sleeping_past_the_deadline_gets_504() {
    let mut spec = AppSpec::wasm(art::SLOW);
    spec.limits.timeout = Duration::from_secs(1);
    let host = TestHost::builder().app("slow", spec).start().await.unwrap();
    let c = client(host.addr, &["slow"]);
    let r = c
        .get(app_url(host.addr, "slow", "/?ms=50"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "slept 50 ms");
    // Sleeping a minute past a one-second deadline: ended by the deadline.
    let r = c
        .get(app_url(host.addr, "slow", "/?ms=60000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.text().await.unwrap().contains("timeout of 1s"));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_only_to_allowed_hosts() {
    let up = upstream("upstream ok").await;
    let mut allowed = AppSpec::wasm(art::OUTBOUND);
    allowed.allowed_outbound_hosts = vec![format!("127.0.0.1:{}", up.port())];
    let host = TestHost::builder()
        .app("out", allowed)
        .wasm_app("closed", art::OUTBOUND)
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

    // Same URL from an app without that host in its list: denied in the guest.
    let r = c
        .get(app_url(host.addr, "closed", &target))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // Another port on an allowed host is not allowed either.
    let r = c
        .get(app_url(
            host.addr,
            "out",
            &format!("/?url=http://127.0.0.1:{}/", up.port().wrapping_add(1)),
        ))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("HttpRequestDenied"));
    host.stop().await;
}

/// The allow-list is checked again where the request connects: a name that
/// resolves to loopback, `*`, or the cloud metadata address cannot reach
/// the host's own ports (the admin API among them); only an entry naming
/// the literal address can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_to_internal_addresses_needs_the_literal_address() {
    let up = upstream("upstream ok").await;
    let port = up.port();
    let app = |entries: &[String]| {
        let mut spec = AppSpec::wasm(art::OUTBOUND);
        spec.allowed_outbound_hosts = entries.to_vec();
        spec
    };
    let host = TestHost::builder()
        .app("by-name", app(&[format!("localhost:{port}")]))
        .app("anything", app(&["*".to_string()]))
        .app("literal", app(&[format!("127.0.0.1:{port}")]))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["by-name", "anything", "literal"]);
    let call = |app: &'static str, url: String| {
        let c = c.clone();
        let target = app_url(host.addr, app, &format!("/?url={url}"));
        async move {
            let r = c.get(target).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // `localhost` resolves to 127.0.0.1: refused where it would connect.
    let (status, body) = call("by-name", format!("http://localhost:{port}/")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("DestinationIpProhibited"), "{body}");
    // `*` allows any name, not the host's addresses: the upstream, the
    // admin API, the metadata address (refused before any packet is sent).
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{}/v1/apps", host.admin_addr.port()),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let (status, body) = call("anything", url.clone()).await;
        assert_eq!(status, 502, "{url}: {body}");
        assert!(body.contains("DestinationIpProhibited"), "{url}: {body}");
    }
    // The literal address, named in the list, is reached.
    let (status, body) = call("literal", format!("http://127.0.0.1:{port}/y")).await;
    assert_eq!((status, body.as_str()), (200, "upstream 200: upstream ok"));
    host.stop().await;
}

/// The host's own addresses, whatever their range, are refused to a guest
/// allowed `*` unless listed literally (issue 21, case 3: a listener on
/// 203.0.113.77 assigned to a local interface answered such a guest),
/// including an address assigned after berth started; a private network
/// off the host is reached only when `allowed_networks` lists it, and the
/// host's own address in that network still is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_to_the_hosts_own_addresses_needs_the_literal_address() {
    use crate::support::internet::{FakeInternet, HostAddrs};
    use crate::support::upstream_on;
    use std::net::SocketAddr;

    let own_iface = HostAddrs::new();
    let mine = own_iface.add();
    let up = upstream_on(SocketAddr::from((mine, 0)), "the host itself").await;
    let lan = FakeInternet::start_private("a private network\n");
    let lan_net = format!(
        "{}/30",
        lan.host_ip() & std::net::Ipv4Addr::new(255, 255, 255, 252)
    );
    let app = |hosts: &[String], nets: &[String]| {
        let mut spec = AppSpec::wasm(art::OUTBOUND);
        spec.allowed_outbound_hosts = hosts.to_vec();
        spec.allowed_networks = nets.to_vec();
        spec
    };
    let any = || vec!["*".to_string()];
    let host = TestHost::builder()
        .app("anything", app(&any(), &[]))
        .app("literal", app(&[up.to_string()], &[]))
        .app("lan", app(&any(), std::slice::from_ref(&lan_net)))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["anything", "literal", "lan"]);
    let call = |app: &'static str, url: String| {
        let c = c.clone();
        let target = app_url(host.addr, app, &format!("/?url={url}"));
        async move {
            let r = c.get(target).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let refused = |(status, body): (u16, String), what: &str| {
        assert_eq!(status, 502, "{what}: {body}");
        assert!(body.contains("DestinationIpProhibited"), "{what}: {body}");
    };
    // The listener answers whoever reaches it: the refusal is berth's.
    let direct = {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(up).await.unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    };
    assert!(direct.ends_with("the host itself"), "{direct}");
    refused(
        call("anything", format!("http://{up}/")).await,
        "own address",
    );
    refused(
        call("anything", format!("http://[::ffff:{mine}]:{}/", up.port())).await,
        "own address, IPv4-mapped",
    );
    refused(
        call("lan", format!("http://{up}/")).await,
        "own address, another app",
    );
    assert_eq!(
        call("literal", format!("http://{up}/x")).await,
        (200, "upstream 200: the host itself".to_string())
    );
    // Assigned now, after berth started and served: refused too.
    let later = own_iface.add();
    let up_later = upstream_on(SocketAddr::from((later, 0)), "the host itself").await;
    refused(
        call("anything", format!("http://{up_later}/")).await,
        "own address added after start",
    );
    // A private network off the host: refused by range, unless listed.
    refused(
        call("anything", format!("http://{}/", lan.addr)).await,
        "a private network",
    );
    assert_eq!(
        call("lan", format!("http://{}/", lan.addr)).await,
        (200, "upstream 200: a private network\n".to_string())
    );
    // The host's own end of that network stays refused.
    let host_end = upstream_on(SocketAddr::from((lan.host_ip(), 0)), "the host itself").await;
    refused(
        call("lan", format!("http://{host_end}/")).await,
        "own address in a listed network",
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_data_dir_compiles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        TestHost::builder()
            .data_dir(dir.path())
            .wasm_app("hello", art::HELLO)
            .wasm_app("echo", art::ECHO)
            .start()
    };
    let first = start().await.unwrap();
    assert_eq!(first.apps().runtime().stats().compiled(), 2);
    assert_eq!(first.apps().runtime().stats().cache_hits(), 0);
    first.stop().await;

    let second = start().await.unwrap();
    assert_eq!(second.apps().runtime().stats().compiled(), 0);
    assert_eq!(second.apps().runtime().stats().cache_hits(), 2);
    let c = client(second.addr, &["hello"]);
    assert_hello_ok(&c, &second).await;
    second.stop().await;

    // A torn or foreign artifact is not trusted: it is compiled again.
    for entry in std::fs::read_dir(dir.path().join("compiled")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = start().await.unwrap();
    assert_eq!(third.apps().runtime().stats().compiled(), 2);
    let c = client(third.addr, &["hello"]);
    assert_hello_ok(&c, &third).await;
    third.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_components_are_refused_at_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("module.wasm");
    std::fs::write(&module, wat::parse_str("(module)").unwrap()).unwrap();
    let err = TestHost::builder()
        .wasm_app("m", &module)
        .start()
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("core Wasm module, not a component"), "{msg}");
    assert!(msg.contains("app `m`"), "{msg}");

    let not_http = dir.path().join("empty-component.wasm");
    std::fs::write(&not_http, wat::parse_str("(component)").unwrap()).unwrap();
    let err = TestHost::builder()
        .wasm_app("c", &not_http)
        .start()
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("exports neither wasi:http/incoming-handler@0.2 nor wasi:http/handler@0.3")
            && msg.contains("it exports nothing"),
        "{msg}"
    );

    // A Spin app reading a variable imports Spin's own interface: refused
    // naming it, not with wasmtime's "function implementation is missing".
    let err = TestHost::builder()
        .wasm_app("spin-vars", berth_test_artifacts::FOREIGN_IMPORT)
        .start()
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot be instantiated by berth: it imports `spin:variables/variables@3.0.0`, which berth does not provide")
            && msg.contains("Spin's own")
            && !msg.contains("implementation is missing"),
        "{msg}"
    );

    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let err = TestHost::builder()
        .wasm_app("j", &junk)
        .start()
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not a WebAssembly binary"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_error_names_the_imports_berth_does_not_provide_and_no_others() {
    // Spin's variables (not provided) beside a wasi:keyvalue interface
    // (provided, though not of this shape): only the first is named. It
    // exports a handler by name (an empty instance), as far as berth looks
    // before linking.
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("spin2.wasm");
    let component = r#"(component
        (import "fermyon:spin/variables@2.0.0" (instance
            (export "get" (func (param "name" string) (result string)))))
        (import "wasi:keyvalue/store@0.2.0-draft" (instance
            (export "open" (func (param "identifier" string)))))
        (instance $handler)
        (export "wasi:http/incoming-handler@0.2.0" (instance $handler))
    )"#;
    std::fs::write(&wasm, wat::parse_str(component).unwrap()).unwrap();
    let host = TestHost::builder().start().await.unwrap();
    let (status, body) = crate::support::admin::put_json(
        &host,
        "/v1/apps/spin2",
        &serde_json::json!({ "wasm": wasm }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.starts_with("cannot deploy app `spin2`: ")
            && msg.contains(
                "cannot be instantiated by berth: it imports `fermyon:spin/variables@2.0.0`, which berth does not provide"
            )
            && msg.contains("Spin's own")
            && !msg.contains("`wasi:keyvalue")
            && !msg.contains("implementation is missing"),
        "{msg}"
    );
    assert!(host.apps().status().is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health_endpoints() {
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    let c = client(host.admin_addr, &[]);
    for path in ["/healthz", "/readyz"] {
        let r = c
            .get(format!("http://{}{path}", host.admin_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = c
        .get(format!("http://{}/nope", host.admin_addr))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    host.stop().await;
}
