//! Secrets through the real binary: set with the CLI (stdin), named by a
//! Wasm app and a container app, seen by their guests as environment
//! variables, and never shown anywhere else: not by the API, the CLI, the
//! server's log, the apps' logs, nor written in the clear to the data dir.

use berth_test_artifacts as art;

use crate::support::image::{Image, ImageExt as _, Layer};
use crate::support::registry::Registry;
use crate::support::serve::Served;
use crate::support::{app_url, client};

const VALUE: &str = "hunter2-s3cr3t-value-7f3a";

/// Every file under `dir`, recursively (no symlinks followed).
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Reads every file under `dir` and fails if one holds [`VALUE`]; returns
/// (files read, files that cannot be read: pinned network namespaces).
fn scan_for_value(dir: &std::path::Path) -> (usize, usize) {
    let (mut read, mut skipped) = (0, 0);
    for f in files(dir) {
        let Ok(bytes) = std::fs::read(&f) else {
            skipped += 1;
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(VALUE),
            "{} holds the value in the clear",
            f.display()
        );
        read += 1;
    }
    (read, skipped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_guest_and_nothing_else() {
    let registry = Registry::start();
    let reference = registry.reference("secret-env:v1");
    let mut image = Image::httpd();
    image.layers.push(Layer::default().file(
        "www/cgi-bin/secret",
        0o755,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"DB_PASSWORD=$DB_PASSWORD\"\n",
    ));
    image.push(&reference);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let host = Served::start(&data, &[]);

    // Set from stdin (the trailing newline of `echo` dropped).
    let (ok, out, err) = host.cli(
        &["secret", "set", "db-password"],
        format!("{VALUE}\n").as_bytes(),
    );
    assert!(ok, "{err}");
    assert_eq!(out, "created secret db-password\n");

    // A deploy naming a secret that does not exist is refused, naming it.
    let (ok, _, err) = host.cli(
        &[
            "deploy",
            "nope",
            "--wasm",
            art::ENV,
            "--secret",
            "DB_PASSWORD=no-such-secret",
        ],
        b"",
    );
    assert!(!ok);
    assert!(
        err.contains("secret `no-such-secret` does not exist"),
        "{err}"
    );

    let (ok, _, err) = host.cli(
        &[
            "deploy",
            "wasm-app",
            "--wasm",
            art::ENV,
            "--secret",
            "DB_PASSWORD=db-password",
        ],
        b"",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = host.cli(
        &[
            "deploy",
            "ctr-app",
            "--image",
            &reference,
            "--secret",
            "DB_PASSWORD=db-password",
        ],
        b"",
    );
    assert!(ok, "{err}");

    // The guests see it.
    let c = client(host.addr, &["wasm-app", "ctr-app"]);
    let body = c
        .get(app_url(host.addr, "wasm-app", "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.lines().any(|l| l == format!("DB_PASSWORD={VALUE}")),
        "{body}"
    );
    let body = c
        .get(app_url(host.addr, "ctr-app", "/cgi-bin/secret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), format!("DB_PASSWORD={VALUE}"));

    // Nothing else shows it: the API and CLI name the secret only.
    for args in [
        &["app", "wasm-app"][..],
        &["app", "ctr-app", "--json"],
        &["apps", "--json"],
        &["secret", "list"],
        &["secret", "list", "--json"],
    ] {
        let (ok, out, err) = host.cli(args, b"");
        assert!(ok, "{args:?}: {err}");
        assert!(
            !out.contains(VALUE) && !err.contains(VALUE),
            "{args:?} shows it:\n{out}"
        );
    }
    let (_, list, _) = host.cli(&["secret", "list"], b"");
    assert!(
        list.contains("db-password") && list.contains("ctr-app,wasm-app"),
        "{list}"
    );
    let (_, app, _) = host.cli(&["app", "ctr-app", "--json"], b"");
    assert!(app.contains("\"DB_PASSWORD\": \"db-password\""), "{app}");

    // While the container runs, the value is nowhere in the data dir, the
    // instance's tmpfs (its bundle) and runc's state included: `config.json`
    // was removed once runc had read it.
    let instances = data.join("containers/instances");
    let running = crate::support::dir_names(&instances);
    assert_eq!(running.len(), 1, "{running:?}");
    let scratch = std::fs::canonicalize(instances.join(&running[0]).join("scratch")).unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(scratch.to_str().unwrap())
                && l.contains(" - tmpfs ")),
        "the bundle's tmpfs is mounted at {}",
        scratch.display()
    );
    assert!(
        scratch.join("bundle/rootfs/www").is_dir(),
        "the rootfs is in the bundle"
    );
    let (read, skipped) = scan_for_value(&data);
    assert!(read > 20, "{read} files read, {skipped} skipped");
    let configs: Vec<_> = files(&data)
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "config.json"))
        .collect();
    assert_eq!(
        configs,
        Vec::<std::path::PathBuf>::new(),
        "a runc config.json is left"
    );

    // In use: cannot be deleted.
    let (ok, _, err) = host.cli(&["secret", "delete", "db-password"], b"");
    assert!(!ok);
    assert!(err.contains("used by app(s) ctr-app, wasm-app"), "{err}");

    let log = host.stderr();
    let bridge = host.bridge.clone();
    host.stop();
    assert_eq!(
        crate::support::bridge_leftovers(&bridge),
        Vec::<String>::new()
    );
    assert!(!log.contains(VALUE), "the server log shows it:\n{log}");
    // On disk, the value is only in the encrypted store; the instance's
    // tmpfs is gone with it.
    assert_eq!(crate::support::dir_names(&instances), Vec::<String>::new());
    let (checked, skipped) = scan_for_value(&data);
    assert!(
        checked > 5 && skipped == 0,
        "{checked} files, {skipped} skipped"
    );
    let store = std::fs::read_to_string(data.join("secrets.json")).unwrap();
    assert!(
        store.contains("db-password") && store.contains("ciphertext"),
        "{store}"
    );
}
