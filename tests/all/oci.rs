//! OCI: pulling and pushing against a real distribution registry, with oras-py
//! for interop. Each test starts its own `docker-registry` on a free port
//! (see `support::registry`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth::oci::{
    self, ArtifactKind, Auth, BlobStore, ClientOptions, Credentials, Digest, DockerConfig,
    OciError, Puller, RegistryClient, media_type,
};
use tempfile::TempDir;

use crate::support::fake_registry::{FakeRegistry, Serve};
use crate::support::registry::{Registry, docker_config_json, free_addr, python_helper};

fn hello() -> Vec<u8> {
    std::fs::read(hello_path()).expect("read the hello component (build the components first)")
}

fn hello_path() -> PathBuf {
    PathBuf::from(berth_test_artifacts::HELLO)
}

/// A puller with its own data dir, drawing no progress bars.
fn puller(client: RegistryClient) -> (TempDir, Puller) {
    let data = tempfile::tempdir().expect("data dir");
    let store = BlobStore::open(data.path()).expect("open store");
    (data, Puller::new(client, store).with_progress(false))
}

fn anonymous_puller() -> (TempDir, Puller) {
    puller(RegistryClient::anonymous())
}

/// `oras push REF FILE:TYPE...`; returns the manifest digest.
fn oras_push(reference: &str, files: &[String], config_media_type: Option<&str>) -> String {
    let mut args: Vec<&str> = vec![reference];
    args.extend(files.iter().map(String::as_str));
    if let Some(t) = config_media_type {
        args.extend(["--config-media-type", t]);
    }
    python_helper("oras_push.py", &args).trim().to_owned()
}

fn file_with_type(path: &Path, media_type: &str) -> String {
    format!("{}:{media_type}", path.display())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

fn wasm_path(pulled: &oci::Pulled) -> &Path {
    match &pulled.kind {
        ArtifactKind::Wasm(_) => pulled.wasm.as_deref().expect("a Wasm pull has a path"),
        other => panic!("expected a Wasm component, got {other:?}"),
    }
}

/// Files in the store directory (blobs and anything left behind).
fn store_entries(puller: &Puller) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(puller.store().dir())
        .expect("list store")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The registry writes its access-log line just after answering: wait (up to
/// 5 s) until `count` reaches `at_least`, then a little longer for any
/// straggler, and return it.
fn logged(count: impl Fn() -> usize, at_least: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    while count() < at_least && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    count()
}

#[tokio::test]
async fn oras_push_then_pull_by_tag_and_by_digest() {
    let registry = Registry::start();
    let reference = registry.reference("hello:v1");
    let digest = oras_push(
        &reference,
        &[file_with_type(&hello_path(), media_type::WASM_LAYER)],
        None,
    );

    let (_data, puller) = anonymous_puller();
    let pulled = puller.pull(&reference).await.expect("pull by tag");
    assert_eq!(pulled.digest, digest);
    assert_eq!(pulled.reference, reference);
    assert_eq!(pulled.pinned, format!("{}/hello@{digest}", registry.host()));
    match &pulled.kind {
        ArtifactKind::Wasm(w) => {
            assert!(w.is_cncf(), "{w:?}");
            assert_eq!(w.layer.digest, Digest::of(&hello()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(wasm_path(&pulled)).unwrap(), hello());
    assert!(
        pulled.pulled_bytes > hello().len() as u64,
        "{}",
        pulled.pulled_bytes
    );

    let (_data, puller) = anonymous_puller();
    let by_digest = format!("{}/hello@{digest}", registry.host());
    let pulled = puller.pull(&by_digest).await.expect("pull by digest");
    assert_eq!(pulled.digest, digest);
    assert_eq!(std::fs::read(wasm_path(&pulled)).unwrap(), hello());
}

#[tokio::test]
async fn berth_push_then_oras_pull_is_byte_identical() {
    let registry = Registry::start();
    let reference = registry.reference("apps/hello:1.0");
    let digest = oci::push_component(&RegistryClient::anonymous(), &reference, &hello())
        .await
        .expect("push");
    Digest::parse(&digest).expect("push returns a sha256 digest");

    let out = tempfile::tempdir().unwrap();
    let pulled_file = out.path().join("pulled.wasm");
    let seen = python_helper("oras_pull.py", &[&reference, pulled_file.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&pulled_file).unwrap(),
        hello(),
        "oras-py got other bytes"
    );
    // What another OCI tool sees: the CNCF Wasm layout.
    let layer_digest = Digest::of(&hello()).to_string();
    for needle in [
        format!(r#""mediaType": "{}""#, media_type::OCI_MANIFEST),
        format!(r#""config_media_type": "{}""#, media_type::WASM_CONFIG),
        format!(r#""mediaType": "{}""#, media_type::WASM_LAYER),
        r#""architecture": "wasm""#.to_owned(),
        r#""os": "wasip2""#.to_owned(),
        format!(r#""layerDigests": ["{layer_digest}"]"#),
        r#""wasi:http/incoming-handler@0.2."#.to_owned(),
        r#""target": null"#.to_owned(),
    ] {
        assert!(seen.contains(&needle), "{needle} not in {seen}");
    }

    // And berth pulls back exactly what it pushed.
    let (_data, puller) = anonymous_puller();
    let pulled = puller.pull(&reference).await.expect("pull");
    assert_eq!(pulled.digest, digest);
    assert_eq!(std::fs::read(wasm_path(&pulled)).unwrap(), hello());

    // Pushing the same component again uploads no blob and keeps it pullable.
    oci::push_component(
        &RegistryClient::anonymous(),
        &registry.reference("apps/hello:1.1"),
        &hello(),
    )
    .await
    .expect("second push");
}

#[tokio::test]
async fn a_second_pull_of_the_same_digest_transfers_nothing() {
    let registry = Registry::start();
    let reference = registry.reference("hello:v1");
    let digest = oras_push(
        &reference,
        &[file_with_type(&hello_path(), media_type::WASM_LAYER)],
        None,
    );

    let (data, puller) = anonymous_puller();
    let first = puller.pull(&reference).await.expect("first pull");
    let gets = logged(|| registry.blob_gets(), 1);
    assert_eq!(
        gets,
        1,
        "one blob (the layer) is fetched:\n{}",
        registry.log_text()
    );
    assert!(first.pulled_bytes > 0);

    let again = puller.pull(&reference).await.expect("second pull by tag");
    let pinned = puller.pull(&first.pinned).await.expect("pull by digest");
    // A fresh client on the same data dir, as after a restart.
    let store = BlobStore::open(data.path()).unwrap();
    let restarted = Puller::new(RegistryClient::anonymous(), store)
        .with_progress(false)
        .pull(&reference)
        .await
        .expect("pull after restart");
    for pulled in [&again, &pinned, &restarted] {
        assert_eq!(pulled.digest, digest);
        assert_eq!(pulled.pulled_bytes, 0, "{pulled:?}");
        assert_eq!(pulled.wasm, first.wasm);
    }
    assert_eq!(
        logged(|| registry.blob_gets(), gets),
        gets,
        "{}",
        registry.log_text()
    );
}

#[tokio::test]
async fn a_blob_corrupted_in_the_registry_is_refused_and_not_stored() {
    let registry = Registry::start();
    let reference = registry.reference("hello:v1");
    oras_push(
        &reference,
        &[file_with_type(&hello_path(), media_type::WASM_LAYER)],
        None,
    );
    let layer = Digest::of(&hello());
    let on_disk = registry.blob_data_path(&layer.to_string());
    let mut bytes = std::fs::read(&on_disk).expect("the registry stores the layer here");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&on_disk, &bytes).unwrap();

    let (_data, puller) = anonymous_puller();
    let err = puller
        .pull(&reference)
        .await
        .expect_err("a corrupt blob must be refused");
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(err.to_string().contains(&layer.to_string()), "{err}");
    assert!(!puller.store().contains(&layer));
    assert!(
        store_entries(&puller)
            .iter()
            .all(|name| !name.starts_with(".tmp") && name != layer.hex()),
        "{:?}",
        store_entries(&puller)
    );
    assert_eq!(
        logged(|| registry.blob_gets_of(&layer.to_string()), 1),
        1,
        "a digest mismatch is not retried:\n{}",
        registry.log_text()
    );
}

#[tokio::test]
async fn an_htpasswd_registry_needs_credentials() {
    let registry = Registry::start_with_htpasswd("alice", "s3cret");
    let reference = registry.reference("private/hello:v1");
    let alice = || Auth::anonymous().with_credentials(Credentials::new("alice", "s3cret"));

    let err = oci::push_component(&RegistryClient::anonymous(), &reference, &hello())
        .await
        .expect_err("anonymous push");
    assert!(
        matches!(err, OciError::AuthenticationFailed { .. }),
        "{err:?}"
    );

    let client = RegistryClient::new(alice(), ClientOptions::default());
    let digest = oci::push_component(&client, &reference, &hello())
        .await
        .expect("push as alice");

    let expected = format!("authentication failed for {}", registry.host());
    let (_data, puller) = anonymous_puller();
    let err = puller.pull(&reference).await.expect_err("anonymous pull");
    assert!(err.to_string().starts_with(&expected), "{err}");

    let wrong = Auth::anonymous().with_credentials(Credentials::new("alice", "wrong"));
    let (_data, puller) = puller_with(wrong);
    let err = puller.pull(&reference).await.expect_err("wrong password");
    assert!(err.to_string().starts_with(&expected), "{err}");

    // Credentials from a docker config.json, as `docker login` leaves them.
    let docker_dir = tempfile::tempdir().unwrap();
    let config = docker_dir.path().join("config.json");
    std::fs::write(
        &config,
        docker_config_json(&registry.host(), "alice", "s3cret"),
    )
    .unwrap();
    let docker = DockerConfig::load(&config).expect("parse").expect("exists");
    let (_data, puller) = puller_with(Auth::anonymous().with_docker_config(docker));
    let pulled = puller
        .pull(&reference)
        .await
        .expect("pull with docker config");
    assert_eq!(pulled.digest, digest);
    assert_eq!(std::fs::read(wasm_path(&pulled)).unwrap(), hello());
}

fn puller_with(auth: Auth) -> (TempDir, Puller) {
    puller(RegistryClient::new(auth, ClientOptions::default()))
}

#[tokio::test]
async fn a_registry_that_is_down_fails_fast_and_clearly() {
    let addr = free_addr(); // nothing listens there
    let (_data, puller) = anonymous_puller();
    // Fails rather than hangs (the deadline is a safety net: connects time
    // out after 5 s and retries are bounded).
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        puller.pull(&format!("{addr}/hello:v1")),
    )
    .await
    .expect("the pull ends")
    .expect_err("nothing listens");
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("registry {addr} is unreachable: ")),
        "{msg}"
    );
}

#[tokio::test]
async fn a_registry_that_accepts_but_never_answers_fails_within_bounds() {
    // Connections complete (the kernel accepts them into the backlog) but no
    // byte ever comes back.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (_data, puller) = anonymous_puller();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        puller.pull(&format!("{addr}/hello:v1")),
    )
    .await
    .expect("the pull ends")
    .expect_err("nothing answers");
    assert!(matches!(err, OciError::Unreachable { .. }), "{err:?}");
    // Ended by berth's own request timeout, which it names.
    assert!(err.to_string().contains("no answer within"), "{err}");
    drop(listener);
}

#[tokio::test]
async fn a_missing_tag_is_not_found() {
    let registry = Registry::start();
    let (_data, puller) = anonymous_puller();
    let reference = registry.reference("nothing:here");
    let err = puller.pull(&reference).await.expect_err("no such tag");
    assert!(matches!(err, OciError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&reference), "{err}");
}

#[tokio::test]
async fn a_manifest_whose_layer_is_not_wasm_is_refused() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "notes.txt", b"not a component\n");
    let reference = registry.reference("notes:v1");
    oras_push(&reference, &[file_with_type(&text, "text/plain")], None);

    let (_data, puller) = anonymous_puller();
    let err = puller
        .pull(&reference)
        .await
        .expect_err("text/plain is not Wasm");
    assert!(
        matches!(err, OciError::UnsupportedArtifact { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("text/plain") && msg.contains(media_type::WASM_CONFIG),
        "{msg}"
    );
}

#[tokio::test]
async fn a_manifest_with_two_wasm_layers_is_refused() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let second = write(dir.path(), "second.wasm", &hello());
    let reference = registry.reference("two:v1");
    oras_push(
        &reference,
        &[
            file_with_type(&hello_path(), media_type::WASM_LAYER),
            file_with_type(&second, media_type::WASM_LAYER),
        ],
        None,
    );

    let (_data, puller) = anonymous_puller();
    let err = puller.pull(&reference).await.expect_err("two Wasm layers");
    assert!(
        matches!(err, OciError::MultipleWasmLayers { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("2 Wasm layers"), "{err}");
}

#[tokio::test]
async fn a_core_module_is_refused_on_pull_and_on_push() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let core = write(dir.path(), "core.wasm", b"\0asm\x01\0\0\0");
    let reference = registry.reference("core:v1");
    oras_push(
        &reference,
        &[file_with_type(&core, media_type::WASM_LAYER)],
        None,
    );

    let (_data, puller) = anonymous_puller();
    let err = puller.pull(&reference).await.expect_err("a core module");
    assert!(
        err.to_string()
            .contains("is a core Wasm module, not a component"),
        "{err}"
    );

    let err = oci::push_component(
        &RegistryClient::anonymous(),
        &registry.reference("core:v2"),
        b"\0asm\x01\0\0\0",
    )
    .await
    .expect_err("push a core module");
    assert!(
        err.to_string()
            .contains("is a core Wasm module, not a component"),
        "{err}"
    );
}

#[tokio::test]
async fn a_container_image_is_recognised() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    // Not a real tarball: classification goes by media types only.
    let layer = write(dir.path(), "rootfs.tar.gz", b"\x1f\x8b fake layer");
    let reference = registry.reference("busybox:1");
    let digest = oras_push(
        &reference,
        &[file_with_type(
            &layer,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )],
        Some(media_type::OCI_IMAGE_CONFIG),
    );

    let (_data, puller) = anonymous_puller();
    let pulled = puller.pull(&reference).await.expect("pull an image");
    assert_eq!(pulled.digest, digest);
    assert_eq!(pulled.kind.name(), "container-image");
    assert!(pulled.wasm.is_none());
    match &pulled.kind {
        ArtifactKind::Container(image) => {
            assert_eq!(image.layers.len(), 1);
            assert!(puller.store().contains(&image.config.digest));
        }
        other => panic!("{other:?}"),
    }
}

// Registries that lie or drip, from the fake registry of
// `support::fake_registry` (the real one cannot misbehave on demand).

/// A puller with `options` and quick retries, its own data dir.
fn fake_puller(options: ClientOptions) -> (TempDir, Puller) {
    puller(RegistryClient::new(
        Auth::anonymous(),
        options.with_retries(3, Duration::from_millis(10), Duration::from_secs(8)),
    ))
}

/// An image whose layer is `layer` sent as `serve` and declared `size`
/// bytes long; its config is honest. Returns (reference, layer digest).
fn lying_image(registry: &FakeRegistry, layer: &[u8], serve: Serve, size: u64) -> (String, String) {
    let config = registry.blob(b"{}", Serve::Whole);
    let layer_digest = registry.blob(layer, serve);
    registry.image("img", "v1", (&config, 2), &[(&layer_digest, size)]);
    (registry.reference("img:v1"), layer_digest)
}

/// Nothing in the store but complete blobs; in particular no temp file.
#[track_caller]
fn assert_no_temp(puller: &Puller) {
    let entries = store_entries(puller);
    assert!(
        entries.iter().all(|n| !n.starts_with(".tmp")),
        "{entries:?}"
    );
}

#[tokio::test]
async fn an_honest_fake_registry_serves_a_pull() {
    let registry = FakeRegistry::start().await;
    let layer = vec![7u8; 10_000];
    let (reference, digest) = lying_image(&registry, &layer, Serve::Chunked, 10_000);
    let (_data, puller) = fake_puller(ClientOptions::default());
    let pulled = puller.pull(&reference).await.expect("pull");
    assert_eq!(pulled.kind.name(), "container-image");
    let digest = Digest::parse(&digest).unwrap();
    assert_eq!(std::fs::read(puller.store().path(&digest)).unwrap(), layer);
    assert_no_temp(&puller);
}

#[tokio::test]
async fn a_config_over_4_mib_is_refused_before_it_is_fetched() {
    let registry = FakeRegistry::start().await;
    let config = vec![b' '; 5 * 1024 * 1024];
    let config_digest = registry.blob(&config, Serve::Whole);
    let layer = registry.blob(b"layer", Serve::Whole);
    registry.image(
        "img",
        "v1",
        (&config_digest, config.len() as u64),
        &[(&layer, 5)],
    );
    let (_data, puller) = fake_puller(ClientOptions::default());
    let err = puller
        .pull(&registry.reference("img:v1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::TooLarge { limit, .. } if limit == 4 * 1024 * 1024),
        "{err:?}"
    );
    assert!(err.to_string().contains(&config_digest), "{err}");
    assert_eq!(registry.blob_gets(&config_digest), 0);
    assert_no_temp(&puller);
}

#[tokio::test]
async fn a_blob_longer_than_its_descriptor_is_cut_off_at_the_first_byte_too_many() {
    let registry = FakeRegistry::start().await;
    let layer = vec![1u8; 4_000];
    let (reference, digest) = lying_image(
        &registry,
        &layer,
        Serve::WithExtra(vec![2u8; 100_000]),
        4_000,
    );
    let (_data, puller) = fake_puller(ClientOptions::default());
    let err = puller.pull(&reference).await.unwrap_err();
    assert!(
        matches!(err, OciError::TooLarge { limit: 4_000, .. }),
        "{err:?}"
    );
    assert!(!puller.store().contains(&Digest::parse(&digest).unwrap()));
    assert_no_temp(&puller);
    assert_eq!(registry.blob_gets(&digest), 1, "not retried");
}

#[tokio::test]
async fn a_blob_shorter_than_its_descriptor_is_refused() {
    let registry = FakeRegistry::start().await;
    let layer = vec![3u8; 1_000];
    // The bytes hash to the digest, but the manifest says 1,500 of them.
    let (reference, digest) = lying_image(&registry, &layer, Serve::Chunked, 1_500);
    let (_data, puller) = fake_puller(ClientOptions::default());
    let err = puller.pull(&reference).await.unwrap_err();
    match &err {
        OciError::SizeMismatch {
            what,
            expected: 1_500,
            actual: 1_000,
            ..
        } => assert_eq!(*what, "the body the registry sent"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&digest), "{err}");
    assert!(!puller.store().contains(&Digest::parse(&digest).unwrap()));
    assert_no_temp(&puller);
}

#[tokio::test]
async fn a_content_length_that_disagrees_is_refused_before_the_body() {
    for (serve, announced) in [(Serve::Whole, 1_000), (Serve::Announced(9_999), 9_999)] {
        let registry = FakeRegistry::start().await;
        let layer = vec![4u8; 1_000];
        let size = if announced == 1_000 { 1_200 } else { 1_000 };
        let (reference, digest) = lying_image(&registry, &layer, serve, size);
        let (_data, puller) = fake_puller(ClientOptions::default());
        let err = puller.pull(&reference).await.unwrap_err();
        match &err {
            OciError::SizeMismatch { what, actual, .. } => {
                assert_eq!(*what, "the Content-Length the registry announced");
                assert_eq!(*actual, announced);
            }
            other => panic!("{other:?}"),
        }
        assert!(!puller.store().contains(&Digest::parse(&digest).unwrap()));
        assert_no_temp(&puller);
    }
}

#[tokio::test]
async fn a_dripping_registry_is_cut_off_with_a_clear_error() {
    let registry = FakeRegistry::start().await;
    let layer = vec![5u8; 64 * 1024];
    let (reference, digest) = lying_image(
        &registry,
        &layer,
        Serve::Drip {
            chunk: 16,
            every: Duration::from_millis(100),
        },
        layer.len() as u64,
    );
    // 160 bytes/s against a minimum of 4 KiB/s over 1 s.
    let options =
        ClientOptions::default().with_transfer_limits(4096, Duration::from_secs(1), 1 << 30);
    let (_data, puller) = fake_puller(options);
    let err = tokio::time::timeout(Duration::from_secs(60), puller.pull(&reference))
        .await
        .expect("a safety net: the pull ends")
        .unwrap_err();
    assert!(matches!(err, OciError::TooSlow { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&digest) && text.contains("min_transfer_rate"),
        "{text}"
    );
    assert_no_temp(&puller);
    assert_eq!(
        registry.blob_gets(&digest),
        1,
        "a slow registry is not retried"
    );
}

#[tokio::test]
async fn the_image_size_cap_holds_for_declared_and_received_bytes() {
    // Declared: two layers of 600 bytes against a 1,000-byte cap; nothing is
    // fetched.
    let registry = FakeRegistry::start().await;
    let config = registry.blob(b"{}", Serve::Whole);
    let a = registry.blob(&[1u8; 600], Serve::Whole);
    let b = registry.blob(&[2u8; 600], Serve::Whole);
    registry.image("img", "v1", (&config, 2), &[(&a, 600), (&b, 600)]);
    let options = ClientOptions::default().with_transfer_limits(1, Duration::from_secs(30), 1_000);
    let (_data, puller) = fake_puller(options);
    let err = puller
        .pull(&registry.reference("img:v1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::ImageTooLarge { limit: 1_000, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("declare"), "{err}");
    assert_eq!(registry.blob_gets(&a) + registry.blob_gets(&b), 0);

    // Received: the layer breaks off after 700 of its 1,000 bytes, and each
    // retry counts; the declared sizes fit, the second attempt goes over.
    let registry = FakeRegistry::start().await;
    let config = registry.blob(b"{}", Serve::Whole);
    let layer = registry.blob(&[3u8; 1_000], Serve::BreakAfter(700));
    registry.image("img", "v1", (&config, 2), &[(&layer, 1_000)]);
    let limit = registry.manifest_len("img/v1") + 2 + 1_000 + 100;
    let options = ClientOptions::default().with_transfer_limits(1, Duration::from_secs(30), limit);
    let (_data, puller) = fake_puller(options);
    let err = puller
        .pull(&registry.reference("img:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::ImageTooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("received"), "{err}");
    assert_no_temp(&puller);
}

#[tokio::test]
async fn a_digest_naming_a_huge_stored_blob_is_not_read_as_a_manifest() {
    // A layer of 5 MiB is in the store; a reference pinned to its digest
    // makes berth look for a manifest there. It is measured, never read.
    let (_data, puller) = anonymous_puller();
    let layer = vec![0u8; 5 * 1024 * 1024];
    let digest = Digest::of(&layer);
    puller.store().put_bytes(&digest, &layer).unwrap();
    let addr = free_addr();
    let err = puller
        .pull(&format!("{addr}/img@{digest}"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::TooLarge { limit, .. } if limit == 4 * 1024 * 1024),
        "{err:?}"
    );
}
