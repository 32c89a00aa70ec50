//! Docker credential helpers (`credHelpers`, `credsStore` in
//! `config.json`), run by the real `berth push` against a registry that
//! needs a password.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use berth_test_artifacts as art;

use crate::support::registry::Registry;

/// A `docker-credential-berthtest` that knows `alice` for `host` only.
fn write_helper(dir: &Path, host: &str) {
    let script = format!(
        "#!/bin/sh\n\
         [ \"$1\" = get ] || exit 1\n\
         read -r server\n\
         if [ \"$server\" = \"{host}\" ]; then\n\
           printf '{{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}}' \"$server\"\n\
         else\n\
           echo 'credentials not found in native keychain'; exit 1\n\
         fi\n"
    );
    let path = dir.join("docker-credential-berthtest");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn push(docker_dir: &Path, bin_dir: &Path, reference: &str) -> (bool, String) {
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["push", reference, art::HELLO])
        .env("DOCKER_CONFIG", docker_dir)
        .env("PATH", path)
        .env_remove("BERTH_REGISTRY_USERNAME")
        .env_remove("BERTH_REGISTRY_PASSWORD")
        .output()
        .expect("berth runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn credential_helpers_named_per_registry_or_as_the_store_are_run() {
    let registry = Registry::start_with_htpasswd("alice", "s3cret");
    let host = registry.host();
    let bin = tempfile::tempdir().unwrap();
    write_helper(bin.path(), &host);
    let docker = tempfile::tempdir().unwrap();
    let config = docker.path().join("config.json");

    // No credentials anywhere: refused.
    std::fs::write(&config, "{}").unwrap();
    let (ok, err) = push(docker.path(), bin.path(), &registry.reference("a/hello:v1"));
    assert!(!ok, "an anonymous push to a password registry: {err}");

    // credHelpers names the helper for this registry.
    let per_registry = serde_json::json!({ "credHelpers": { &host: "berthtest" } });
    std::fs::write(&config, per_registry.to_string()).unwrap();
    let (ok, err) = push(docker.path(), bin.path(), &registry.reference("a/hello:v1"));
    assert!(ok, "credHelpers: {err}");

    // credsStore serves every registry without an entry of its own.
    std::fs::write(&config, r#"{"credsStore": "berthtest"}"#).unwrap();
    let (ok, err) = push(docker.path(), bin.path(), &registry.reference("b/hello:v1"));
    assert!(ok, "credsStore: {err}");

    // A helper that is not installed: no credentials, a clear refusal.
    let missing = serde_json::json!({ "credHelpers": { &host: "not-installed" } });
    std::fs::write(&config, missing.to_string()).unwrap();
    let (ok, err) = push(docker.path(), bin.path(), &registry.reference("c/hello:v1"));
    assert!(!ok);
    assert!(err.contains("authentication failed"), "{err}");
}
