//! `berth new NAME --template rust|container`: the projects build with
//! plain cargo, and the component serves.

use std::path::Path;
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

fn cargo_build(project: &Path, extra: &[&str]) {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet"])
        .args(extra)
        .current_dir(project)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build in {}", project.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_template_builds_a_component_that_serves() {
    let dir = tempfile::tempdir().unwrap();
    berth_new(dir.path(), "demo", "rust");
    let project = dir.path().join("demo");
    cargo_build(&project, &[]);
    let wasm = project.join("target/wasm32-wasip2/release/demo.wasm");
    let host = TestHost::builder()
        .app("demo", AppSpec::wasm(wasm.to_str().unwrap()))
        .start()
        .await
        .unwrap();
    let (status, body) = get(&host, "demo", "/?name=Ferris").await;
    assert_eq!((status, body.as_str()), (200, "hello, Ferris!\n"));
    host.stop().await;
}

#[test]
fn the_container_template_builds_a_static_server() {
    let dir = tempfile::tempdir().unwrap();
    berth_new(dir.path(), "web-demo", "container");
    let project = dir.path().join("web-demo");
    cargo_build(&project, &["--target", "x86_64-unknown-linux-musl"]);
    assert!(
        project
            .join("target/x86_64-unknown-linux-musl/release/web-demo")
            .is_file()
    );
    let check = Command::new("bash")
        .arg("-n")
        .arg(project.join("build-and-push.sh"))
        .status()
        .unwrap();
    assert!(check.success());
}
