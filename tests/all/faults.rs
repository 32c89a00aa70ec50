//! Faults at start and stop: an app that cannot be deployed never keeps
//! the host or the other apps down; it is listed as failed with its reason
//! and retried with backoff; a host stopped at any stage of a deploy leaves
//! nothing behind; a second host on a data directory in use is refused.

use std::time::Duration;

use berth::config::{AppSpec, Config};
use berth::testing::TestHost;
use berth_test_artifacts as art;
use serde_json::Value;

use crate::support::dir_names as names;
use crate::support::fake_registry::{FakeRegistry, Serve};
use crate::support::image::{Image, ImageExt as _, busybox_base};
use crate::support::registry::{Registry, free_addr};
use crate::support::serve::Served;
use crate::support::{admin, bridge_leftovers, client, get, poll, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_cannot_deploy_is_listed_failed_and_retried_while_others_serve() {
    let mut needs_secret = AppSpec::wasm(art::ENV);
    needs_secret.routes = vec!["/needs".into()];
    needs_secret
        .secrets
        .insert("API_TOKEN".into(), "later".into());
    let mut config = Config {
        domain: "localhost".into(),
        ..Config::default()
    };
    config
        .apps
        .insert("hello".into(), AppSpec::wasm(art::HELLO));
    config.apps.insert("needs-secret".into(), needs_secret);
    config.apps.insert(
        "unpullable".into(),
        AppSpec::image(format!("{}/nothing:v1", free_addr())),
    );
    let host = TestHost::builder()
        .config(config)
        .lenient()
        .start()
        .await
        .unwrap();
    // The good app serves.
    assert_eq!(
        get(&host, "hello", "/").await,
        (200, "hello from hello".into())
    );
    // The others are listed as failed, with why.
    let (_, list) = admin::get_json(&host, "/v1/apps").await;
    let state = |name: &str| {
        list["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {list}"))
    };
    assert_eq!(state("hello")["state"], "ready");
    let failed = state("unpullable");
    assert_eq!(failed["state"], "failed", "{failed}");
    let why = failed["last_error"].as_str().unwrap();
    assert!(
        why.contains("unreachable") && why.contains("attempt"),
        "{why}"
    );
    let failed = state("needs-secret");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("secret `later` does not exist"),
        "{failed}"
    );
    // Its callers hear why, not a 404: by host, and by route prefix.
    let (code, body) = get(&host, "unpullable", "/").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with("app `unpullable` is not serving: it could not be deployed (")
            && body.contains("unreachable"),
        "{body}"
    );
    let c = client(host.addr, &[]);
    let r = c
        .get(format!("http://{}/needs/x", host.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    let body = r.text().await.unwrap();
    assert!(body.contains("secret `later` does not exist"), "{body}");
    // An app nobody deployed is still a 404.
    assert_eq!(get(&host, "nobody", "/").await.0, 404);
    let metrics = admin::metrics(&host).await;
    assert!(
        metrics.contains("berth_app_deploy_failed{app=\"unpullable\"} 1"),
        "{metrics}"
    );
    // What was missing arrives: the retry deploys it.
    host.apps().secrets().set("later", "t0k3n").unwrap();
    wait_until(
        "the retry to deploy the app",
        Duration::from_secs(30),
        || match host
            .apps()
            .status()
            .iter()
            .any(|a| a.deployed.name == "needs-secret")
        {
            true => Ok(()),
            false => Err(host.apps().failed_app("needs-secret").map(|f| f.attempts)),
        },
    )
    .await;
    let (code, body) = get(&host, "needs-secret", "/").await;
    assert_eq!(code, 200);
    assert!(body.contains("API_TOKEN=t0k3n"), "{body}");
    // A failed app can be deleted: no more retries.
    assert_eq!(admin::delete(&host, "/v1/apps/unpullable").await, 204);
    assert!(host.apps().failed().is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_does_not_link_answers_503_naming_the_import_and_its_failures_take_no_revision_number()
 {
    // A Spin app, as a new user deploys it: its component imports Spin's
    // own variables interface, so it compiles but never links.
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("spin-vars.wasm");
    std::fs::copy(art::FOREIGN_IMPORT, &wasm).unwrap();
    let mut spec = AppSpec::wasm(&wasm);
    spec.routes = vec!["/vars".into()];
    let host = TestHost::builder()
        .app("spin-vars", spec)
        .lenient()
        .start()
        .await
        .unwrap();
    // Its callers hear why (by host and by route), with when to try again;
    // not "404 no app answers host".
    let c = client(host.addr, &["spin-vars"]);
    for url in [
        crate::support::app_url(host.addr, "spin-vars", "/"),
        format!("http://{}/vars/x", host.addr),
    ] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 503, "{url}");
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=300).contains(&wait), "{wait}");
        let body = r.text().await.unwrap();
        assert!(
            body.starts_with("app `spin-vars` is not serving: it could not be deployed (")
                && body.contains(
                    "it imports `spin:variables/variables@3.0.0`, which berth does not provide"
                )
                // The whole reason, not its first 200 characters.
                && body.contains("`fermyon:` interfaces are Spin")
                && !body.contains("implementation is missing"),
            "{body}"
        );
    }
    // Retried with backoff (1 s, then 2 s): two more failed deploys.
    wait_until("two failed retries", Duration::from_secs(30), || match host
        .apps()
        .failed_app("spin-vars")
        .map(|f| f.attempts)
    {
        Some(n) if n >= 3 => Ok(()),
        other => Err(other),
    })
    .await;
    // Fixed: the next retry deploys it as the first revision there is.
    std::fs::copy(art::HELLO, &wasm).unwrap();
    let revision = wait_until(
        "the retry to deploy the fixed app",
        Duration::from_secs(30),
        || {
            host.apps()
                .status()
                .into_iter()
                .find(|a| a.deployed.name == "spin-vars")
                .map(|a| a.deployed.revision)
                .ok_or_else(|| host.apps().failed_app("spin-vars").map(|f| f.reason))
        },
    )
    .await;
    assert_eq!(revision, "spin-vars-00001");
    assert_eq!(get(&host, "spin-vars", "/").await.0, 200);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_keeps_the_fail_fast_start() {
    let err = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .app(
            "unpullable",
            AppSpec::image(format!("{}/x:v1", free_addr())),
        )
        .start()
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("app `unpullable`"), "{err:#}");
}

/// What a stopped host left in its data dir or on the machine: temporary
/// blob files and rootfs trees, unpacked images no app holds (`rootfs` is
/// false when the stage had not finished unpacking), runc containers,
/// instance directories, mounts under the data dir, its bridge and
/// firewall chains. Empty when clean.
fn leftovers(served_data: &std::path::Path, bridge: &str, rootfs: bool) -> Vec<String> {
    let mut left = Vec::new();
    for name in names(&served_data.join("blobs/sha256")) {
        if name.starts_with(".tmp") {
            left.push(format!("temporary blob {name}"));
        }
    }
    for name in names(&served_data.join("rootfs")) {
        if name.contains(".tmp-") || !rootfs {
            left.push(format!("rootfs {name}"));
        }
    }
    for name in names(&served_data.join("containers/runc")) {
        left.push(format!("runc container {name}"));
    }
    for name in names(&served_data.join("containers/instances")) {
        left.push(format!("instance directory {name}"));
    }
    let data = std::fs::canonicalize(served_data).unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mountinfo.lines() {
        if line
            .split(' ')
            .nth(4)
            .is_some_and(|m| m.starts_with(data.to_str().unwrap()))
        {
            left.push(format!("mount {line}"));
        }
    }
    left.extend(bridge_leftovers(bridge));
    left
}

/// Launches `berth serve` with `config` (TOML) from `dir`, waits until
/// `stage` holds (polled; it must not have started serving yet), sends
/// SIGTERM, and returns what was left once it exited.
async fn kill_during(
    dir: &tempfile::TempDir,
    config: &str,
    stage: &str,
    at_stage: impl Fn(&std::path::Path) -> bool,
    rootfs_may_stay: bool,
) -> Vec<String> {
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, config).unwrap();
    let data = dir.path().join("data");
    let (served, serving) = Served::launch(&data, &["--config", file.to_str().unwrap()]);
    let reached = poll(
        Duration::from_secs(120),
        Duration::from_millis(5),
        async || match at_stage(&data) {
            true => Ok(()),
            false => {
                assert!(
                    serving.try_recv().is_err(),
                    "served before reaching the stage `{stage}`:\n{}",
                    served.stderr()
                );
                Err(())
            }
        },
    )
    .await;
    if let Err(t) = reached {
        panic!(
            "never reached the stage `{stage}` ({} checks in {:?}):\n{}",
            t.checks,
            t.elapsed,
            served.stderr()
        );
    }
    let bridge = served.bridge.clone();
    // Generous: the figure that matters is printed, and what is left.
    let (status, took) = served.terminate_within(Duration::from_secs(60));
    assert!(status.success(), "{stage}: exit {status:?}");
    eprintln!("{stage}: exited {took:?} after SIGTERM");
    leftovers(&data, &bridge, rootfs_may_stay)
}

fn image_app(reference: &str) -> String {
    format!(
        "[apps.victim]\nimage = \"{reference}\"\nstartup_timeout = \"60s\"\nshutdown_grace = \"2s\"\n"
    )
}

/// A registry whose image `slow:v1` has a 2 MiB layer dripped at 20 KiB/s
/// (above the minimum transfer rate): its pull takes minutes. Returns the
/// layer's digest.
fn slow_image(registry: &FakeRegistry) -> String {
    let layer: Vec<u8> = (0..2u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let layer_digest = registry.blob(
        &layer,
        Serve::Drip {
            chunk: 1024,
            every: Duration::from_millis(50),
        },
    );
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = registry.blob(&config, Serve::Whole);
    registry.image(
        "slow",
        "v1",
        (&config_digest, config.len() as u64),
        &[(&layer_digest, layer.len() as u64)],
    );
    layer_digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_during_a_pull_leaves_nothing_behind() {
    let registry = FakeRegistry::start().await;
    let layer_digest = slow_image(&registry);
    let dir = tempfile::tempdir().unwrap();
    let left = kill_during(
        &dir,
        &image_app(&registry.reference("slow:v1")),
        "pulling",
        |data| {
            registry.blob_gets(&layer_digest) > 0
                && names(&data.join("blobs/sha256"))
                    .iter()
                    .any(|n| n.starts_with(".tmp"))
        },
        false,
    )
    .await;
    assert_eq!(left, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_during_an_unpack_leaves_nothing_behind() {
    // One file of 3 GiB of zeros (a few hundred KB of zstd): the unpack
    // takes seconds; SIGTERM must end it early and remove its tree.
    let registry = Registry::start();
    let reference = registry.reference("big:v1");
    crate::hostile::crafted(crate::hostile::zero_file_layer(3 << 30)).push(&reference);
    let dir = tempfile::tempdir().unwrap();
    let left = kill_during(
        &dir,
        &image_app(&reference),
        "unpacking",
        // The file is being written (so the unpack is past its set-up and
        // not yet syncing).
        |data| {
            names(&data.join("rootfs"))
                .iter()
                .filter(|n| n.contains(".tmp-"))
                .any(|n| {
                    std::fs::metadata(data.join("rootfs").join(n).join("bomb"))
                        .is_ok_and(|m| m.len() > 0 && m.len() < 3 << 30)
                })
        },
        false,
    )
    .await;
    assert_eq!(left, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_while_a_container_starts_leaves_nothing_behind() {
    // A container that never listens: the start waits for readiness (up to
    // a minute) and the host is stopped while it does.
    let registry = Registry::start();
    let reference = registry.reference("mute:v1");
    Image {
        layers: vec![busybox_base()],
        raw_layers: Vec::new(),
        entrypoint: vec!["/bin/sleep".into(), "600".into()],
        cmd: Vec::new(),
        env: vec!["PATH=/bin".into()],
        user: None,
        working_dir: "/".into(),
    }
    .push(&reference);
    let dir = tempfile::tempdir().unwrap();
    let left = kill_during(
        &dir,
        &image_app(&reference),
        "starting a container",
        |data| !names(&data.join("containers/runc")).is_empty(),
        true,
    )
    .await;
    assert_eq!(left, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_sigkilled_host_left_is_removed_at_the_next_start() {
    let registry = FakeRegistry::start().await;
    let layer_digest = slow_image(&registry);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, image_app(&registry.reference("slow:v1"))).unwrap();
    let data = dir.path().join("data");
    let temp_blobs = || {
        names(&data.join("blobs/sha256"))
            .into_iter()
            .filter(|n| n.starts_with(".tmp"))
            .collect::<Vec<_>>()
    };
    let (served, _) = Served::launch(&data, &["--config", file.to_str().unwrap()]);
    wait_until(
        "the pull to be under way",
        Duration::from_secs(60),
        || match registry.blob_gets(&layer_digest) > 0 && !temp_blobs().is_empty() {
            true => Ok(()),
            false => Err(()),
        },
    )
    .await;
    // SIGKILL: the temporary file stays; so does a half-made rootfs tree.
    served.kill();
    assert_eq!(temp_blobs().len(), 1);
    std::fs::create_dir_all(data.join("rootfs/0123.tmp-abcdef/etc")).unwrap();
    // The next start (without the app) removes both.
    let served = Served::start(&data, &[]);
    assert_eq!(temp_blobs(), Vec::<String>::new());
    assert_eq!(names(&data.join("rootfs")), Vec::<String>::new());
    assert!(
        served
            .stderr()
            .contains("removed temporary files of interrupted pulls")
    );
    served.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_size_caps_are_flags_and_name_themselves() {
    let registry = Registry::start();
    let reference = registry.reference("busybox:v1");
    Image::httpd().push(&reference);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, image_app(&reference)).unwrap();
    // busybox is about 1.1 MB compressed and 2 MB unpacked.
    for (flag, size, named) in [
        ("--max-image-size", "100KiB", "max_image_bytes"),
        ("--max-unpacked-size", "1MiB", "max_bytes"),
    ] {
        let data = dir.path().join(flag.trim_start_matches('-'));
        let served = Served::start(&data, &["--config", file.to_str().unwrap(), flag, size]);
        let (ok, out, err) = served.cli(&["app", "victim", "--json"], b"");
        assert!(ok, "{err}");
        let app: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(app["state"], "failed", "{app}");
        let why = app["last_error"].as_str().unwrap();
        assert!(why.contains(named), "{flag}: {why}");
        assert_eq!(
            names(&data.join("rootfs")),
            Vec::<String>::new(),
            "{flag}: nothing unpacked"
        );
        served.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_a_data_dir_in_use_is_refused_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Served::start(&data, &[]);
    let (second, _) = Served::launch(&data, &[]);
    let (status, stderr) = second.exit_within(Duration::from_secs(30));
    assert!(!status.success(), "{stderr}");
    let refusal = format!(
        "data directory {} is in use by another berth serve (pid {})",
        data.display(),
        first.pid()
    );
    assert!(stderr.contains(&refusal), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains("error")).count(),
        1,
        "one line: {stderr}"
    );
    let ready = |admin| async move {
        client(admin, &[])
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(ready(first.admin).await, 200, "the first still serves");
    // SIGKILL: the lock goes with the process; nothing stale is left.
    first.kill();
    let third = Served::start(&data, &[]);
    assert_eq!(ready(third.admin).await, 200);
    third.stop();
}
