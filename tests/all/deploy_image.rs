//! Apps deployed by `image = "REF"`: pulled from a real registry, pinned,
//! served; failures leave the running host alone.

use std::path::Path;
use std::time::Duration;

use berth::config::{AppSpec, Source};
use berth::oci::{self, RegistryClient};
use berth::testing::TestHost;
use berth_test_artifacts as art;

use crate::support::get;
use crate::support::registry::{Registry, free_addr, python_helper};

fn image_app(reference: &str) -> AppSpec {
    let mut spec = AppSpec::wasm("unused");
    spec.source = Source::Image(reference.to_string());
    spec
}

async fn push_hello(registry: &Registry, repo_tag: &str) -> (String, String) {
    let reference = registry.reference(repo_tag);
    let bytes = std::fs::read(art::HELLO).unwrap();
    let digest = oci::push_component(&RegistryClient::anonymous(), &reference, &bytes)
        .await
        .unwrap();
    (reference, digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_push_then_deploy_by_tag_and_by_digest() {
    let registry = Registry::start();
    let (reference, digest) = push_hello(&registry, "hello:v1").await;
    let by_digest = format!("{}/hello@{digest}", registry.host());
    let host = TestHost::builder()
        .app("bytag", image_app(&reference))
        .app("bydigest", image_app(&by_digest))
        .start()
        .await
        .unwrap();
    assert_eq!(
        get(&host, "bytag", "/").await,
        (200, "hello from bytag".into())
    );
    assert_eq!(
        get(&host, "bydigest", "/").await,
        (200, "hello from bydigest".into())
    );

    // A redeploy of the same tag resolves to the pinned digest and pulls,
    // compiles nothing.
    let gets = registry.blob_gets();
    let compiled = host.apps().runtime().stats().compiled();
    let deployed = host
        .apps()
        .deploy("bytag", &image_app(&reference))
        .await
        .unwrap();
    assert_eq!(deployed.pinned.as_deref(), Some(by_digest.as_str()));
    assert_eq!(deployed.pulled_bytes, 0);
    assert_eq!(registry.blob_gets(), gets, "no blob was fetched again");
    assert_eq!(host.apps().runtime().stats().compiled(), compiled);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_pulls_and_compiles_nothing() {
    let registry = Registry::start();
    let (reference, _) = push_hello(&registry, "hello:v1").await;
    let data = tempfile::tempdir().unwrap();
    let start = || {
        TestHost::builder()
            .data_dir(data.path())
            .app("hello", image_app(&reference))
            .start()
    };
    let first = start().await.unwrap();
    assert_eq!(first.apps().runtime().stats().compiled(), 1);
    first.stop().await;
    let gets = registry.blob_gets();
    let second = start().await.unwrap();
    assert_eq!(second.apps().runtime().stats().compiled(), 0);
    assert_eq!(registry.blob_gets(), gets);
    assert_eq!(get(&second, "hello", "/").await.0, 200);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oras_push_deploys_and_serves() {
    let registry = Registry::start();
    let reference = registry.reference("oras-hello:v1");
    // CNCF media types: config application/vnd.wasm.config.v0+json, one
    // application/wasm layer.
    python_helper(
        "oras_push.py",
        &[&reference, &format!("{}:application/wasm", art::HELLO)],
    );
    let host = TestHost::builder()
        .app("orashello", image_app(&reference))
        .start()
        .await
        .unwrap();
    assert_eq!(
        get(&host, "orashello", "/").await,
        (200, "hello from orashello".into())
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_blob_or_a_dead_registry_fails_the_deploy_not_the_host() {
    let registry = Registry::start();
    let (_, _) = push_hello(&registry, "good:v1").await;
    // A second, distinct component so that its blob is not already local.
    let reference = registry.reference("bad:v1");
    let echo = std::fs::read(art::ECHO).unwrap();
    oci::push_component(&RegistryClient::anonymous(), &reference, &echo)
        .await
        .unwrap();
    let layer = oci::Digest::of(&echo).to_string();
    let blob = registry.blob_data_path(&layer);
    let mut corrupt = std::fs::read(&blob).unwrap();
    corrupt[100] ^= 0xff;
    std::fs::write(&blob, corrupt).unwrap();

    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    let err = host
        .apps()
        .deploy("bad", &image_app(&reference))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("digest mismatch"), "{msg}");
    assert!(msg.contains("app `bad`"), "{msg}");
    assert!(
        !blob_store_has(host.data_dir(), &layer),
        "a corrupt blob must not be cached"
    );
    assert_eq!(get(&host, "hello", "/").await.0, 200);
    assert_eq!(get(&host, "bad", "/").await.0, 404);

    // A registry that is down: a clear error, not a hang (the deadline is
    // a safety net: connects time out after 5 s, retries are bounded).
    let dead = format!("{}/hello:v1", free_addr());
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        host.apps().deploy("dead", &image_app(&dead)),
    )
    .await
    .expect("a deploy from a registry that is down ends")
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("unreachable"), "{msg}");
    assert_eq!(get(&host, "hello", "/").await.0, 200);
    host.stop().await;
}

fn blob_store_has(data_dir: &Path, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    data_dir.join("blobs/sha256").join(hex).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_blobs_are_collected() {
    let registry = Registry::start();
    let (hello_ref, _) = push_hello(&registry, "hello:v1").await;
    let echo_ref = registry.reference("echo:v1");
    let echo = std::fs::read(art::ECHO).unwrap();
    oci::push_component(&RegistryClient::anonymous(), &echo_ref, &echo)
        .await
        .unwrap();
    let hello_layer = oci::Digest::of(&std::fs::read(art::HELLO).unwrap()).to_string();
    let echo_layer = oci::Digest::of(&echo).to_string();

    let host = TestHost::builder()
        .app("x", image_app(&hello_ref))
        .start()
        .await
        .unwrap();
    assert!(blob_store_has(host.data_dir(), &hello_layer));
    host.apps()
        .deploy("x", &image_app(&echo_ref))
        .await
        .unwrap();
    let removed = host.apps().collect_garbage().unwrap().blobs;
    assert!(
        removed >= 2,
        "manifest, config and layer of hello: {removed}"
    );
    assert!(!blob_store_has(host.data_dir(), &hello_layer));
    assert!(blob_store_has(host.data_dir(), &echo_layer));
    assert_eq!(
        host.apps().collect_garbage().unwrap().blobs,
        0,
        "nothing left to collect"
    );
    let c = crate::support::client(host.addr, &["x"]);
    let r = c
        .post(crate::support::app_url(host.addr, "x", "/"))
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "still here");
    host.stop().await;
}

/// `berth push --image`'s index holds three forms of one component; berth
/// deploys the `wasi/wasm` one (runwasi's form: an ordinary image config,
/// the component as its one layer) as it deploys the CNCF artifact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasi_wasm_image_of_berth_push_image_deploys_and_serves() {
    let registry = Registry::start();
    let reference = registry.reference("hello:v1");
    let bytes = std::fs::read(art::HELLO).unwrap();
    oci::push_component_image(&RegistryClient::anonymous(), &reference, &bytes)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let fetch = |what: String, accept: &'static str| {
        let http = http.clone();
        let url = format!("http://{}/v2/hello/manifests/{what}", registry.host());
        async move {
            http.get(url)
                .header("accept", accept)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let index = fetch("v1".into(), oci::media_type::OCI_INDEX).await;
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}/{}", e["platform"]["os"], e["platform"]["architecture"]))
        .collect();
    assert_eq!(
        platforms[..2],
        [r#""wasip2"/"wasm""#, r#""wasi"/"wasm""#],
        "{index}"
    );
    let wasi = index["manifests"][1]["digest"].as_str().unwrap().to_owned();
    let manifest = fetch(wasi.clone(), oci::media_type::OCI_MANIFEST).await;
    assert_eq!(
        manifest["config"]["mediaType"],
        oci::media_type::OCI_IMAGE_CONFIG
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        oci::media_type::BYTECODEALLIANCE_COMPONENT_LAYER
    );
    assert_eq!(
        layers[0]["digest"].as_str(),
        Some(oci::Digest::of(&bytes).to_string().as_str()),
        "the layer is the component's bytes"
    );

    let by_digest = format!("{}/hello@{wasi}", registry.host());
    let host = TestHost::builder()
        .app("wasi", image_app(&by_digest))
        .start()
        .await
        .unwrap();
    assert_eq!(
        get(&host, "wasi", "/").await,
        (200, "hello from wasi".into())
    );
    host.stop().await;
}
