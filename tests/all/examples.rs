//! The examples in `examples/` serve as their READMEs say. They are built by
//! `scripts/build-examples.sh` (which `make test` runs first): the plain-cargo
//! `berth-sdk` example and the cargo-component example.

use std::path::PathBuf;

use berth::config::AppSpec;
use berth::testing::TestHost;

use crate::support::{app_url, client};

fn built(rel: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
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
