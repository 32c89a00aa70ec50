//! Hostile images from a real registry: crafted layers (the deep path and
//! the decompression bomb of issue 13) pushed with skopeo to a real
//! `docker-registry` and deployed through a TestHost. Each deploy fails
//! naming the limit and the layer, the host keeps serving its other app, and
//! nothing is left in the data dir. Garbage collection removes unpacked
//! images no app uses and what interrupted pulls and unpacks left.

use std::path::Path;
use std::time::Duration;

use berth::config::AppSpec;
use berth::testing::TestHost;
use berth_test_artifacts as art;

use crate::support::dir_names as names;
use crate::support::image::{Image, ImageExt as _, Layer, RawLayer};
use crate::support::registry::Registry;
use crate::support::{admin, get, wait_for};

fn container_app(reference: &str) -> AppSpec {
    let mut spec = AppSpec::image(reference);
    spec.container.shutdown_grace = Duration::from_secs(2);
    spec.container.startup_timeout = Duration::from_secs(20);
    spec
}

/// A one-directory layer, then `layer` as it is (zstd).
pub(crate) fn crafted(layer: Vec<u8>) -> Image {
    Image {
        layers: vec![Layer::default().dir("etc")],
        raw_layers: vec![RawLayer {
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            bytes: layer,
        }],
        entrypoint: vec!["/bin/true".into()],
        cmd: Vec::new(),
        env: Vec::new(),
        user: None,
        working_dir: "/".into(),
    }
}

/// The layer of the report: one path 256 KiB deep (131,072 components), as
/// a pax record, zstd-compressed.
fn deep_path_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let path = "a/".repeat(128 * 1024) + "x";
    b.append_pax_extensions([("path", path.as_bytes())])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("x").unwrap();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"deep"[..]).unwrap();
    zstd::encode_all(&b.into_inner().unwrap()[..], 19).unwrap()
}

/// A zstd layer of a few hundred KB that decompresses to one 9 GiB file of
/// zeros: the tar header in a first frame, the zeros in a second one made of
/// run-length blocks by hand (compressing 9 GiB here would take minutes).
fn bomb_layer() -> Vec<u8> {
    zero_file_layer(9 << 30)
}

/// A zstd tar layer of one file, `size` bytes of zeros, written as
/// run-length blocks (a few bytes per 128 KiB).
pub(crate) fn zero_file_layer(size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("bomb").unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    let mut out = zstd::encode_all(&h.as_bytes()[..], 3).unwrap();
    // Frame: magic, no content size, no checksum, a 128 KiB window.
    out.extend([0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3]);
    const BLOCK: u64 = 128 * 1024;
    // The file, then the two zero blocks that end the archive.
    let mut left = size + 1024;
    while left > 0 {
        let n = left.min(BLOCK);
        left -= n;
        // Block header: last flag, type 1 (RLE), size; then the byte.
        let header = u32::from(left == 0) | (1 << 1) | ((n as u32) << 3);
        out.extend(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

/// Nothing unpacked, and no temporary file or directory, in the data dir.
#[track_caller]
fn assert_nothing_left(data: &Path) {
    assert_eq!(names(&data.join("rootfs")), Vec::<String>::new());
    let blobs = names(&data.join("blobs/sha256"));
    assert!(blobs.iter().all(|n| !n.starts_with(".tmp")), "{blobs:?}");
}

/// Pushes `image`, deploys it beside a serving Wasm app, and returns the
/// deploy's error text after checking the other app still serves and
/// nothing is left behind.
async fn deploy_refused(image: Image, layer_digest: &str) -> String {
    let registry = Registry::start();
    let reference = registry.reference("hostile:v1");
    image.push(&reference);
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    assert_eq!(get(&host, "hello", "/").await.0, 200);
    let err = tokio::time::timeout(
        Duration::from_secs(120),
        host.apps().deploy("hostile", &container_app(&reference)),
    )
    .await
    .expect("a safety net: the deploy ends")
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("cannot unpack the image"), "{text}");
    let hex = layer_digest.trim_start_matches("sha256:");
    assert!(text.contains("layer 1 (") && text.contains(hex), "{text}");
    assert!(text.len() < 1_000, "{} bytes: {text}", text.len());
    assert_eq!(
        get(&host, "hello", "/").await,
        (200, "hello from hello".into())
    );
    assert!(
        host.apps()
            .status()
            .iter()
            .all(|a| a.deployed.name != "hostile")
    );
    assert_nothing_left(host.data_dir());
    host.stop().await;
    text
}

fn digest_of(bytes: &[u8]) -> String {
    berth::oci::Digest::of(bytes).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deep_path_layer_is_refused_at_its_length() {
    let layer = deep_path_layer();
    let digest = digest_of(&layer);
    let text = deploy_refused(crafted(layer), &digest).await;
    assert!(text.contains("max_path_bytes"), "{text}");
    assert!(text.contains("262145 bytes long"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decompression_bomb_is_refused_at_its_header() {
    let layer = bomb_layer();
    assert!(layer.len() < 400 * 1024, "{}", layer.len());
    let digest = digest_of(&layer);
    let text = deploy_refused(crafted(layer), &digest).await;
    assert!(
        text.contains("more than 8589934592 bytes (8.0 GiB, max_bytes)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_unused_rootfs_and_leftover_temp_files() {
    let registry = Registry::start();
    let v1 = registry.reference("web:v1");
    let v2 = registry.reference("web:v2");
    Image::httpd().push(&v1);
    let mut second = Image::httpd();
    second
        .layers
        .push(Layer::default().file("www/v", 0o644, "2\n"));
    second.push(&v2);
    let host = TestHost::builder()
        .app("web", container_app(&v1))
        .start()
        .await
        .unwrap();
    let data = host.data_dir().to_owned();
    let first = host.apps().status()[0].deployed.sha256.clone();
    let first_rootfs = data
        .join("rootfs")
        .join(first.trim_start_matches("sha256:"));
    assert!(first_rootfs.is_dir());
    // Nothing to collect while v1 serves.
    let collected = host.apps().collect_garbage().unwrap();
    assert_eq!((collected.rootfs, collected.temp), (0, 0));
    assert!(first_rootfs.is_dir());

    let deployed = host
        .apps()
        .deploy("web", &container_app(&v2))
        .await
        .unwrap();
    let second_rootfs = data
        .join("rootfs")
        .join(deployed.sha256.trim_start_matches("sha256:"));
    // Left by a crashed unpack and a killed pull.
    let leftover_dir = data.join(format!("rootfs/{}.tmp-crashed", "0".repeat(64)));
    std::fs::create_dir_all(leftover_dir.join("etc")).unwrap();
    std::fs::write(data.join("blobs/sha256/.tmp-killed"), b"partial").unwrap();

    // v1's rootfs goes once its last instance (draining) has unmounted it.
    let mut total = (0, 0);
    let removed = wait_for(
        "v1's rootfs to be collected",
        Duration::from_secs(60),
        async || {
            let (status, removed) =
                admin::call_json(&host, reqwest::Method::POST, "/v1/gc", None).await;
            assert_eq!(status, 200);
            total.0 += removed["removed_rootfs"].as_u64().unwrap();
            total.1 += removed["removed_temp"].as_u64().unwrap();
            if first_rootfs.exists() {
                Err(removed)
            } else {
                Ok(removed)
            }
        },
    )
    .await;
    assert!(removed["removed_blobs"].is_u64(), "{removed}");
    assert_eq!(total, (1, 2), "{removed}");
    assert!(!leftover_dir.exists());
    assert!(!data.join("blobs/sha256/.tmp-killed").exists());
    assert!(second_rootfs.is_dir(), "the rootfs in use stays");
    assert_eq!(get(&host, "web", "/v").await, (200, "2\n".into()));
    host.stop().await;
}
