//! `berth new NAME --template rust|rust-p3|container`: the projects build
//! with plain cargo, and the components serve (the WASIp3 one as
//! `wasi:http@0.3`, its instance reused).

use std::path::{Path, PathBuf};
use std::process::Command;

use berth::config::AppSpec;
use berth::testing::TestHost;

use crate::support::get;

fn berth_new(dir: &Path, name: &str, template: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["new", name, "--template", template, "--dir"])
        .arg(dir)
        .output()
        .expect("berth runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["new", name, "--template", template, "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(!again.status.success(), "an existing directory is kept");
}

/// Builds `project` into a target directory the template tests share (the
/// dependencies are the same crates: built once) and returns that directory.
fn cargo_build(project: &Path, extra: &[&str]) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("berth-new-templates");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet"])
        .args(extra)
        .current_dir(project)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build in {}", project.display());
    target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_template_builds_a_component_that_serves() {
    let dir = tempfile::tempdir().unwrap();
    berth_new(dir.path(), "demo", "rust");
    let project = dir.path().join("demo");
    let wasm = cargo_build(&project, &[]).join("wasm32-wasip2/release/demo.wasm");
    let host = TestHost::builder()
        .app("demo", AppSpec::wasm(wasm.to_str().unwrap()))
        .start()
        .await
        .unwrap();
    let (status, body) = get(&host, "demo", "/?name=Ferris").await;
    assert_eq!((status, body.as_str()), (200, "hello, Ferris!\n"));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_p3_template_builds_a_wasip3_component_that_serves() {
    let dir = tempfile::tempdir().unwrap();
    berth_new(dir.path(), "demo3", "rust-p3");
    let project = dir.path().join("demo3");
    let wasm = cargo_build(&project, &[]).join("wasm32-wasip2/release/demo3.wasm");
    let host = TestHost::builder()
        .app("demo3", AppSpec::wasm(wasm.to_str().unwrap()))
        .start()
        .await
        .unwrap();
    let world = host
        .apps()
        .status()
        .into_iter()
        .find(|s| s.deployed.name == "demo3")
        .and_then(|s| s.deployed.world);
    assert_eq!(world.as_deref(), Some("wasi:http@0.3"));
    let (status, body) = get(&host, "demo3", "/?name=Ferris").await;
    assert_eq!((status, body.as_str()), (200, "hello, Ferris!\n"));
    // Serial reuse (WASIp3's default): the second request meets the
    // instance the first one left.
    let (status, body) = get(&host, "demo3", "/api/instance").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"app":"demo3","served":2}"#)
    );
    host.stop().await;
}

#[test]
fn the_container_template_builds_a_static_server() {
    let dir = tempfile::tempdir().unwrap();
    berth_new(dir.path(), "web-demo", "container");
    let project = dir.path().join("web-demo");
    let target = cargo_build(&project, &["--target", "x86_64-unknown-linux-musl"]);
    assert!(
        target
            .join("x86_64-unknown-linux-musl/release/web-demo")
            .is_file()
    );
    let check = Command::new("bash")
        .arg("-n")
        .arg(project.join("build-and-push.sh"))
        .status()
        .unwrap();
    assert!(check.success());
}
