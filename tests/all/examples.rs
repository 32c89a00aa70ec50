//! The examples in `examples/` serve as their READMEs say. They are built by
//! `scripts/build-examples.sh` (which `make test` runs first): the plain-cargo
//! `berth-sdk` examples (`counter` keeping its count across restarts), the
//! cargo-component example, and two WASIp3 apps made
//! by other projects' toolchains (`spin-sdk` 7 and componentize-py 0.25.1),
//! which must answer on berth as they do on `wasmtime serve`.

use std::path::PathBuf;

use berth::config::AppSpec;
use berth::testing::TestHost;

use crate::support::serve::Served;
use crate::support::wasmtime_serve::WasmtimeServe;
use crate::support::{app_url, client};

pub(crate) fn built(rel: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-examples.sh (make test does)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_and_cargo_component_examples_serve() {
    let mut sdk = AppSpec::wasm(built(
        "examples/target/wasm32-wasip2/release/sdk-hello.wasm",
    ));
    sdk.env.insert("GREETING".into(), "howdy".into());
    let host = TestHost::builder()
        .app("sdk-hello", sdk)
        .wasm_app(
            "cc-hello",
            built("examples/cargo-component-hello/target/wasm32-wasip1/release/cargo_component_hello.wasm"),
        )
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["sdk-hello", "cc-hello"]);

    let r = c
        .get(app_url(host.addr, "sdk-hello", "/?name=Ferris"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "howdy, Ferris!\n");

    let r = c
        .get(app_url(host.addr, "sdk-hello", "/api/info"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let info: serde_json::Value = r.json().await.unwrap();
    assert_eq!(info["app"], "sdk-hello");
    assert_eq!(info["path"], "/api/info");

    let r = c
        .post(app_url(host.addr, "sdk-hello", "/api/greet"))
        .body(r#"{"name":"Ferris","excited":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["greeting"], "HOWDY, FERRIS!");

    let r = c
        .get(app_url(host.addr, "cc-hello", "/some/path"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert_eq!(
        body,
        "hello from cc-hello (cargo-component): GET /some/path\n"
    );
    host.stop().await;
}

/// One request: method, path and an optional body.
type Call = (&'static str, &'static str, Option<&'static str>);

/// What a test compares: status, content type and body.
async fn answer(r: reqwest::RequestBuilder) -> (u16, Option<String>, String) {
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii content-type").to_owned());
    (status, content_type, r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_sdk_and_componentize_py_apps_answer_as_on_wasmtime_serve() {
    let spin = built("examples/spin-hello/target/wasm32-wasip2/release/spin_hello.wasm");
    let python = built("examples/python-hello/target/python-hello.wasm");
    let host = TestHost::builder()
        .wasm_app("spin-hello", spin.clone())
        .wasm_app("python-hello", python.clone())
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["spin-hello", "python-hello"]);
    // Both are WASIp3 components, whatever toolchain made them.
    for app in ["spin-hello", "python-hello"] {
        let world = host
            .apps()
            .status()
            .into_iter()
            .find(|s| s.deployed.name == app)
            .and_then(|s| s.deployed.world);
        assert_eq!(world.as_deref(), Some("wasi:http@0.3"), "{app}");
    }
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let cases: [(&str, &std::path::Path, &[Call]); 2] = [
        (
            "spin-hello",
            &spin,
            &[("GET", "/some/path?x=1", None), ("DELETE", "/", None)],
        ),
        (
            "python-hello",
            &python,
            &[
                ("GET", "/some/path?x=1", None),
                ("POST", "/echo", Some("streamed back as it arrives\n")),
                ("PUT", "/other", Some("ignored")),
            ],
        ),
    ];
    for (app, component, requests) in cases {
        let anchor = WasmtimeServe::start(component);
        for &(method, path, body) in requests {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let on_berth = c.request(method.clone(), app_url(host.addr, app, path));
            let on_wasmtime =
                plain.request(method.clone(), format!("http://{}{path}", anchor.addr));
            let (on_berth, on_wasmtime) = match body {
                Some(b) => (on_berth.body(b), on_wasmtime.body(b)),
                None => (on_berth, on_wasmtime),
            };
            let got = answer(on_berth).await;
            let want = answer(on_wasmtime).await;
            assert_eq!(got, want, "{app}: {method} {path}");
            assert_eq!(got.0, 200, "{app}: {method} {path}: {got:?}");
        }
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_service_example_is_a_wasip3_app_that_streams_and_keeps_its_instance() {
    let mut spec = AppSpec::wasm(built(
        "examples/target/wasm32-wasip2/release/sdk-service.wasm",
    ));
    spec.env.insert("GREETING".into(), "howdy".into());
    let host = TestHost::builder()
        .app("sdk-service", spec)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["sdk-service"]);
    let url = |path: &str| app_url(host.addr, "sdk-service", path);

    let r = c.get(url("/?name=Ferris")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "howdy, Ferris!\n");

    let r = c
        .post(url("/api/greet"))
        .body(r#"{"name":"Ferris","excited":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["greeting"], "HOWDY, FERRIS!");
    // Over the SDK's JSON limit: refused, not buffered.
    let r = c
        .post(url("/api/greet"))
        .body(vec![b' '; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A 2 MiB body goes back out as it arrives.
    let big: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = c.post(url("/echo")).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == big, "the echo differs");

    // Serial reuse: one instance served all of the above, in order.
    let r = c.get(url("/api/instance")).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["app"], "sdk-service");
    assert_eq!(v["served"], 5, "{v}");
    host.stop().await;
}

/// `examples/counter`: each GET adds to a count in `wasi:keyvalue` (through
/// `berth_sdk::kv`) and the count carries on after berth is killed and
/// started again on the same data dir; each visit reads the app's `step`
/// (through `berth_sdk::config`), and two apps of the one component count
/// apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_example_counts_across_restarts() {
    let wasm = built("examples/target/wasm32-wasip2/release/counter.wasm");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"[apps.counter]
wasm = "{wasm}"
keyvalue = ["default"]

[apps.by-ten]
wasm = "{wasm}"
keyvalue = ["default"]
config = {{ step = "10" }}
"#,
            wasm = wasm.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let get = |host: &Served, app: &str, path: &str| {
        let c = client(host.addr, &["counter", "by-ten"]);
        let url = app_url(host.addr, app, path);
        async move {
            let r = c.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, 200, "{text}");
            text
        }
    };

    let host = Served::start(&data, &["--config", cfg]);
    assert_eq!(get(&host, "counter", "/peek").await, "0\n");
    for want in 1..=3 {
        assert_eq!(get(&host, "counter", "/").await, format!("{want}\n"));
    }
    assert_eq!(get(&host, "by-ten", "/").await, "10\n");
    host.kill();

    let host = Served::start(&data, &["--config", cfg]);
    assert_eq!(get(&host, "counter", "/peek").await, "3\n");
    assert_eq!(get(&host, "counter", "/").await, "4\n");
    assert_eq!(get(&host, "by-ten", "/").await, "20\n");
    host.stop();

    let host = Served::start(&data, &["--config", cfg]);
    assert_eq!(get(&host, "counter", "/").await, "5\n");
    host.stop();
}
