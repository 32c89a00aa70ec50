//! The admin API and the CLI that talks to it: round trips through the
//! `berth` binary, errors, the token every call needs, state kept
//! across restarts (and merged with the config file), logs, and `/metrics`
//! checked with a strict Prometheus text parser.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth::api::{AppList, AppState, AppView};
use berth::config::{AppSpec, Config};
use berth::oci::{self, RegistryClient};
use berth::state::Origin;
use berth::testing::TestHost;
use berth_test_artifacts as art;
use serde_json::{Value, json};

use crate::support::image::{Image, ImageExt as _};
use crate::support::registry::{Registry, free_addr};
use crate::support::{admin, app_url, client, routed, wait_for};

/// Runs the `berth` binary against `host`'s admin API (off the async
/// workers: it blocks).
async fn berth(host: &TestHost, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    // The token is found where the server wrote it, as on a single machine.
    cmd.args(args)
        .arg("--admin")
        .arg(admin::url(host, ""))
        .env("BERTH_DATA_DIR", host.data_dir())
        .env_remove("BERTH_ADMIN_TOKEN")
        .env_remove("BERTH_ADMIN");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_round_trip_deploy_apps_app_scale_delete() {
    let host = TestHost::builder().start().await.unwrap();
    let c = client(host.addr, &["hello"]);

    let out = berth(
        &host,
        &[
            "deploy",
            "hello",
            "--wasm",
            art::HELLO,
            "--route",
            "/hi",
            "--env",
            "GREETING=hey",
        ],
    )
    .await;
    let text = stdout(&out);
    assert!(text.starts_with("created hello: revision hello-"), "{text}");
    let r = c.get(host.url("/hi")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from hello");

    // The table, then the same as JSON.
    let text = stdout(&berth(&host, &["apps"]).await);
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATE"),
        "{text}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["hello", "ready", "wasm"], "{text}");
    let list: AppList =
        serde_json::from_str(&stdout(&berth(&host, &["apps", "--json"]).await)).unwrap();
    assert_eq!(list.apps.len(), 1);

    let app: AppView =
        serde_json::from_str(&stdout(&berth(&host, &["app", "hello", "--json"]).await)).unwrap();
    assert_eq!(app.kind, Some(berth::backend::Kind::Wasm));
    assert_eq!(app.state, AppState::Ready);
    assert_eq!(app.origin, Origin::Api);
    assert_eq!(app.routes, ["/hi"]);
    assert_eq!(
        app.config.wasm.as_deref(),
        Some(std::path::Path::new(art::HELLO))
    );
    assert_eq!(app.config.env["GREETING"], "hey");
    assert_eq!(app.pinned, None);
    assert_eq!(app.sha256.len(), 64);
    assert!(app.instances.ready >= 1, "{app:?}");
    let first_revision = app.revision.clone();
    let text = stdout(&berth(&host, &["app", "hello"]).await);
    assert!(
        text.contains(&format!("revision:    {first_revision}")),
        "{text}"
    );

    // Scale: a new revision of the same code with the new bounds.
    let text = stdout(&berth(&host, &["scale", "hello", "--min", "2", "--max", "3"]).await);
    assert!(text.starts_with("scaled hello: min 2, max 3"), "{text}");
    let app = wait_for("two ready instances", Duration::from_secs(20), async || {
        let (_, app) = admin::get_json(&host, "/v1/apps/hello").await;
        let app: AppView = serde_json::from_value(app).unwrap();
        if app.instances.ready == 2 {
            Ok(app)
        } else {
            Err(app)
        }
    })
    .await;
    assert_ne!(app.revision, first_revision);
    assert_eq!(
        (app.config.min_scale, app.config.max_scale),
        (Some(2), Some(3))
    );
    assert_eq!(app.config.env["GREETING"], "hey", "other settings are kept");
    let out = berth(&host, &["scale", "hello", "--min", "5", "--max", "3"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("min_scale"), "{err}");

    let text = stdout(&berth(&host, &["delete", "hello"]).await);
    assert_eq!(text.trim(), "deleted hello");
    assert_eq!(c.get(host.url("/hi")).send().await.unwrap().status(), 404);
    let out = berth(&host, &["app", "hello"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no app `hello`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&berth(&host, &["apps"]).await).trim(), "no apps");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_json_with_the_status_and_the_key() {
    let host = TestHost::builder()
        .app("owner", routed(art::HELLO, "/taken"))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &[]);
    let cases = [
        (json!({"wasm": "relative.wasm"}), 400, Some("wasm")),
        (json!({"wasm": "/no/such/file.wasm"}), 400, Some("wasm")),
        (
            json!({"wasm": art::HELLO, "limits": {"memory": "lots"}}),
            400,
            Some("limits.memory"),
        ),
        (json!({"wasm": art::HELLO, "limitz": {}}), 400, None),
        (json!({"wasm": art::HELLO, "image": "r/x:1"}), 400, None),
        (
            json!({"wasm": art::HELLO, "min_scale": 3, "max_scale": 1}),
            400,
            Some("min_scale"),
        ),
        // Once accepted, and the app doubled every decision.
        (
            json!({"wasm": art::HELLO, "autoscale": {"max_scale_down_rate": 0.5}}),
            400,
            Some("autoscale.max_scale_down_rate"),
        ),
        (
            json!({"wasm": art::HELLO, "max_scale": 0}),
            400,
            Some("max_scale"),
        ),
        (
            json!({"wasm": art::HELLO, "routes": ["/taken"]}),
            409,
            Some("routes"),
        ),
        (json!({"image": "not a reference"}), 400, Some("image")),
        (
            json!({"image": format!("{}/x:1", free_addr())}),
            502,
            Some("image"),
        ),
    ];
    for (body, status, key) in cases {
        let (got, err) = admin::put_json(&host, "/v1/apps/app", &body).await;
        assert_eq!(got, status, "{body}: {err}");
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{err}"
        );
        if let Some(key) = key {
            assert_eq!(err["key"], key, "{body}: {err}");
        }
    }
    // Not JSON at all; a bad name; an unknown app; wrong methods.
    let r = c
        .put(admin::url(&host, "/v1/apps/app"))
        .bearer_auth(host.admin_token())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let (status, err) =
        admin::put_json(&host, "/v1/apps/Bad_Name", &json!({"wasm": art::HELLO})).await;
    assert_eq!((status, err["key"].as_str()), (400, Some("name")));
    assert_eq!(admin::get_json(&host, "/v1/apps/nope").await.0, 404);
    assert_eq!(admin::delete(&host, "/v1/apps/nope").await, 404);
    assert_eq!(
        admin::post_json(&host, "/v1/apps/nope/scale", &json!({"min_scale": 1}))
            .await
            .0,
        404
    );
    assert_eq!(
        admin::post_json(&host, "/v1/apps/owner/scale", &json!({}))
            .await
            .0,
        400
    );
    let r = c
        .post(admin::url(&host, "/v1/apps"))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    let r = c
        .get(admin::url(&host, "/v2/nothing"))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .put(admin::url(&host, "/v1/apps/big"))
        .bearer_auth(host.admin_token())
        .body(vec![b' '; berth::api::MAX_BODY_BYTES + 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Nothing failed changed anything: the app list is what it was.
    let (_, list) = admin::get_json(&host, "/v1/apps").await;
    let names: Vec<&str> = list["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["owner"]);
    // A new app is 201 with its location, a replacement 200.
    let r = c
        .put(admin::url(&host, "/v1/apps/second"))
        .bearer_auth(host.admin_token())
        .json(&json!({"wasm": art::HELLO}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/v1/apps/second");
    let (status, app) =
        admin::put_json(&host, "/v1/apps/second", &json!({"wasm": art::ECHO})).await;
    assert_eq!(status, 200, "{app}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_always_needs_the_token() {
    // On any bind, loopback included: the token is written to the data dir
    // at first start (mode 0600) and every API call needs it.
    use std::os::unix::fs::PermissionsExt as _;
    let host = TestHost::builder().start().await.unwrap();
    let token_file = host.data_dir().join("admin-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    let dir_mode = std::fs::metadata(host.data_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "the data dir is private");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.trim(), host.admin_token());
    let c = client(host.addr, &[]);
    for path in ["/v1/apps", "/metrics", "/v1/apps/x/logs", "/v1/secrets"] {
        let r = c.get(admin::url(&host, path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert!(r.json::<Value>().await.unwrap()["error"].is_string());
        let r = c
            .get(admin::url(&host, path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = c
        .put(admin::url(&host, "/v1/apps/hello"))
        .json(&json!({"wasm": art::HELLO}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "nothing is deployed without the token");
    assert!(host.apps().status().is_empty());
    // Health checks stay open to probes.
    for path in ["/healthz", "/readyz"] {
        let r = c.get(admin::url(&host, path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The CLI finds the token in the data dir (same machine)...
    let text = stdout(&berth(&host, &["deploy", "hello", "--wasm", art::HELLO]).await);
    assert!(text.starts_with("created hello"), "{text}");
    // Tenants' output is private too.
    let log = host.data_dir().join("logs/hello.log");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "app logs are private");
    // ...and says what to do when it has none.
    let out = tokio::task::spawn_blocking({
        let admin = admin::url(&host, "");
        let empty = tempfile::tempdir().unwrap();
        move || {
            Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["apps", "--admin", &admin, "--data-dir"])
                .arg(empty.path())
                .env_remove("BERTH_ADMIN_TOKEN")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Bearer") && err.contains("--token"), "{err}");
    host.stop().await;

    // A given token (file or BERTH_ADMIN_TOKEN) replaces the generated one,
    // also on a non-loopback bind.
    let host = TestHost::builder()
        .admin_bind("0.0.0.0:0".parse().unwrap())
        .admin_token("s3cret-token-of-32-characters-at-least")
        .start()
        .await
        .unwrap();
    assert!(host.admin_addr.ip().is_unspecified(), "{}", host.admin_addr);
    let r = c
        .get(admin::url(&host, "/v1/apps"))
        .bearer_auth("s3cret-token-of-32-characters-at-least")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out = berth(
        &host,
        &["apps", "--token", "s3cret-token-of-32-characters-at-least"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_brings_api_apps_back_serving_at_once_without_compiling() {
    let data = tempfile::tempdir().unwrap();
    let first = TestHost::builder()
        .data_dir(data.path())
        .start()
        .await
        .unwrap();
    let (status, app) = admin::put_json(
        &first,
        "/v1/apps/hello",
        &json!({"wasm": art::HELLO, "routes": ["/hello"], "limits": {"memory": "64MiB"}}),
    )
    .await;
    assert_eq!(status, 201, "{app}");
    let revision = app["revision"].as_str().unwrap().to_string();
    first.stop().await;
    assert!(data.path().join("state.json").is_file());

    let second = TestHost::builder()
        .data_dir(data.path())
        .start()
        .await
        .unwrap();
    // The first request after start is served: no re-deploy needed.
    let c = client(second.addr, &[]);
    let r = c.get(second.url("/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from hello");
    assert_eq!(second.apps().runtime().stats().compiled(), 0);
    let app: AppView =
        serde_json::from_value(admin::get_json(&second, "/v1/apps/hello").await.1).unwrap();
    assert_eq!(
        app.revision, revision,
        "same settings and code: same revision"
    );
    assert_eq!(app.origin, Origin::Api);
    assert_eq!(
        serde_json::to_value(&app.config.limits).unwrap(),
        json!({"memory": "64MiB"}),
        "settings come back as written"
    );
    // A new deploy after the restart never reuses a revision number.
    let (_, again) = admin::put_json(&second, "/v1/apps/hello", &json!({"wasm": art::HELLO})).await;
    assert!(
        again["revision"].as_str().unwrap() > revision.as_str(),
        "{again}"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_cannot_be_restored_is_shown_and_can_be_deleted() {
    let data = tempfile::tempdir().unwrap();
    let wasm = data.path().join("gone.wasm");
    std::fs::copy(art::HELLO, &wasm).unwrap();
    let start = || TestHost::builder().data_dir(data.path()).start();
    let first = start().await.unwrap();
    let (status, app) = admin::put_json(&first, "/v1/apps/gone", &json!({"wasm": wasm})).await;
    assert_eq!(status, 201, "{app}");
    let deployed_at = app["deployed_at"].clone();
    first.stop().await;

    // The host starts anyway; the app is listed as failed (and retried),
    // with why and what was deployed.
    std::fs::remove_file(&wasm).unwrap();
    let second = start().await.unwrap();
    let c = client(second.addr, &["gone"]);
    let (status, app) = admin::get_json(&second, "/v1/apps/gone").await;
    assert_eq!(status, 200);
    assert_eq!(app["state"], "failed", "{app}");
    assert!(
        app["last_error"].as_str().unwrap().contains("gone.wasm"),
        "{app}"
    );
    assert_eq!(app["deployed_at"], deployed_at);
    // Its callers hear why (a 503 naming the missing file), not a 404.
    let r = c
        .get(app_url(second.addr, "gone", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body = r.text().await.unwrap();
    assert!(
        body.starts_with("app `gone` is not serving") && body.contains("gone.wasm"),
        "{body}"
    );
    // Deploying it again brings it back; deleting it forgets it.
    std::fs::copy(art::HELLO, &wasm).unwrap();
    let (status, app) = admin::put_json(&second, "/v1/apps/gone", &json!({"wasm": wasm})).await;
    assert_eq!(
        (status, app["state"].as_str()),
        (200, Some("ready")),
        "{app}"
    );
    assert_eq!(admin::delete(&second, "/v1/apps/gone").await, 204);
    second.stop().await;
    let third = start().await.unwrap();
    assert!(third.apps().status().is_empty());
    assert!(third.apps().state().apps().is_empty());
    third.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_an_image_app_needs_no_registry() {
    let registry = Registry::start();
    let reference = registry.reference("api-hello:v1");
    let bytes = std::fs::read(art::HELLO).unwrap();
    let digest = oci::push_component(&RegistryClient::anonymous(), &reference, &bytes)
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let first = TestHost::builder()
        .data_dir(data.path())
        .start()
        .await
        .unwrap();
    let (status, app) =
        admin::put_json(&first, "/v1/apps/imghello", &json!({"image": reference})).await;
    assert_eq!(status, 201, "{app}");
    let pinned = format!("{}/api-hello@{digest}", registry.host());
    assert_eq!(app["pinned"], pinned.as_str());
    assert_eq!(
        app["config"]["image"],
        reference.as_str(),
        "the tag is kept"
    );
    first.stop().await;
    drop(registry);

    let second = TestHost::builder()
        .data_dir(data.path())
        .start()
        .await
        .unwrap();
    let c = client(second.addr, &["imghello"]);
    let r = c
        .get(app_url(second.addr, "imghello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from imghello");
    assert_eq!(second.apps().runtime().stats().compiled(), 0);
    // Scaling keeps the pinned digest: still no registry needed.
    let (status, body) =
        admin::post_json(&second, "/v1/apps/imghello/scale", &json!({"min_scale": 1})).await;
    assert_eq!(status, 200, "{body}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_wins_and_owns_its_apps() {
    let data = tempfile::tempdir().unwrap();
    let with = |apps: &[&str]| {
        let mut config = Config {
            domain: "localhost".into(),
            ..Config::default()
        };
        for a in apps {
            config.apps.insert((*a).into(), AppSpec::wasm(art::HELLO));
        }
        TestHost::builder().data_dir(data.path()).config(config)
    };
    let host = with(&["filed", "kept"]).start().await.unwrap();
    let (status, _) = admin::put_json(&host, "/v1/apps/made", &json!({"wasm": art::ECHO})).await;
    assert_eq!(status, 201);
    // Scaled through the API: the file's settings come back at restart.
    assert_eq!(
        admin::post_json(&host, "/v1/apps/kept/scale", &json!({"min_scale": 2}))
            .await
            .0,
        200
    );
    // Deleted through the API while the file still declares it.
    assert_eq!(admin::delete(&host, "/v1/apps/filed").await, 204);
    host.stop().await;

    // `filed` is back (the file declares it); `kept` has the file's bounds.
    let host = with(&["filed", "kept"]).start().await.unwrap();
    let list: AppList = serde_json::from_value(admin::get_json(&host, "/v1/apps").await.1).unwrap();
    let by_name: BTreeMap<_, _> = list.apps.iter().map(|a| (a.name.as_str(), a)).collect();
    assert_eq!(
        by_name.keys().copied().collect::<Vec<_>>(),
        ["filed", "kept", "made"]
    );
    assert_eq!(by_name["filed"].origin, Origin::Config);
    assert_eq!(by_name["kept"].config.min_scale, None);
    assert_eq!(by_name["made"].origin, Origin::Api);
    host.stop().await;

    // Apps dropped from the file are forgotten; API apps stay.
    let host = with(&[]).start().await.unwrap();
    let names: Vec<String> = host
        .apps()
        .status()
        .into_iter()
        .map(|a| a.deployed.name)
        .collect();
    assert_eq!(names, ["made"]);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_served_and_followed() {
    let host = TestHost::builder()
        .wasm_app("logger", art::LOGGER)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["logger"]);
    let call = || async {
        let r = c
            .get(app_url(host.addr, "logger", "/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-berth-request-id"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let id = call().await;
    let r = c
        .get(admin::url(&host, "/v1/apps/logger/logs"))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.ends_with(&format!("{id} - stdout stdout line"))),
        "{text}"
    );

    // Follow: what is there, then what comes.
    let mut follow = c
        .get(admin::url(&host, "/v1/apps/logger/logs?follow=true"))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let mut seen = String::from_utf8(follow.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(seen.contains(&id), "{seen}");
    let later = call().await;
    let t = Instant::now();
    while !seen.contains(&format!("{later} - stderr stderr line")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), follow.chunk())
            .await
            .expect("a followed log delivers new lines")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        assert!(t.elapsed() < Duration::from_secs(10), "{seen}");
    }
    assert_eq!(admin::get_json(&host, "/v1/apps/nope/logs").await.0, 404);
    // Shutdown ends a follow instead of waiting for it: the stream ends
    // while the host drains (its drain timeout is 10 s).
    let stopping = tokio::spawn(host.stop());
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(8), follow.chunk())
            .await
            .expect("shutdown ends the followed log before the drain timeout");
        match chunk {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["hello", "nothing"]);
    let scrape = || async {
        let r = c
            .get(admin::url(&host, "/metrics"))
            .bearer_auth(host.admin_token())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        prometheus::parse(&r.text().await.unwrap()).unwrap_or_else(|e| panic!("{e}"))
    };
    let before = scrape().await;
    let ok = r#"berth_requests_total{app="hello",status="200"}"#;
    let count = r#"berth_request_duration_seconds_count{app="hello"}"#;
    let metered = r#"berth_app_requests_total{app="hello"}"#;
    for _ in 0..7 {
        let r = c
            .get(app_url(host.addr, "hello", "/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "hello from hello");
    }
    // A request no app answers is not an app's.
    let r = c
        .get(app_url(host.addr, "nothing", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let after = scrape().await;
    let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(get(&after, ok) - get(&before, ok), 7.0, "{after:#?}");
    assert_eq!(get(&after, count) - get(&before, count), 7.0);
    assert_eq!(get(&after, metered) - get(&before, metered), 7.0);
    assert!(get(&after, r#"berth_cold_starts_total{kind="wasm"}"#) >= 1.0);
    assert_eq!(
        get(
            &after,
            r#"berth_instances{app="hello",revision="hello-00001",state="ready"}"#
        ),
        1.0,
        "{after:#?}"
    );
    assert!(after.contains_key(r#"berth_queue_depth{app="hello"}"#));
    assert!(!after.keys().any(|k| k.contains("nothing")), "{after:#?}");
    // Instance-seconds grow while the instance is ready.
    let key = r#"berth_instance_seconds_total{app="hello",kind="wasm"}"#;
    wait_for(
        "instance-seconds to grow",
        Duration::from_secs(20),
        async || {
            let later = scrape().await;
            if get(&later, key) > get(&after, key) {
                Ok(())
            } else {
                Err(later)
            }
        },
    )
    .await;

    // OpenMetrics on request.
    let r = c
        .get(admin::url(&host, "/metrics"))
        .bearer_auth(host.admin_token())
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_app_is_metered_from_its_cgroup() {
    let registry = Registry::start();
    let reference = registry.reference("metered:v1");
    Image::httpd().push(&reference);
    let host = TestHost::builder().start().await.unwrap();
    let c = client(host.addr, &["web"]);
    let (status, app) = admin::put_json(
        &host,
        "/v1/apps/web",
        &json!({"image": reference, "startup_timeout": "20s", "shutdown_grace": "2s"}),
    )
    .await;
    assert_eq!(status, 201, "{app}");
    assert_eq!(app["kind"], "container");
    assert!(
        app["pinned"].as_str().unwrap().contains("@sha256:"),
        "{app}"
    );
    for _ in 0..5 {
        let r = c
            .get(app_url(host.addr, "web", "/cgi-bin/env"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("K_SERVICE=web"));
    }
    // Every scrape samples the cgroup: wait until the CPU the requests
    // used shows. A request is counted once its response body has ended,
    // which the server sees a moment after the client has read it.
    let m = wait_for(
        "the cgroup's usage in /metrics",
        Duration::from_secs(20),
        async || {
            let text = admin::metrics(&host).await;
            let m = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}"));
            let used = |k: &str| m.get(k).copied().unwrap_or(0.0) > 0.0;
            if used(r#"berth_cpu_seconds_total{app="web"}"#)
                && used(r#"berth_memory_gb_seconds_total{app="web"}"#)
                && used(r#"berth_instance_seconds_total{app="web",kind="container"}"#)
                && m.get(r#"berth_requests_total{app="web",status="200"}"#) == Some(&5.0)
            {
                Ok(m)
            } else {
                Err(text)
            }
        },
    )
    .await;
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert!(get(r#"berth_cold_starts_total{kind="container"}"#) >= 1.0);
    assert_eq!(get(r#"berth_requests_total{app="web",status="200"}"#), 5.0);
    assert_eq!(admin::delete(&host, "/v1/apps/web").await, 204);
    host.stop().await;
}

/// A strict parser of the Prometheus text format, version 0.0.4.
mod prometheus {
    use std::collections::{BTreeMap, HashMap};

    /// Parses an exposition; returns each series (`name{labels}` as
    /// written, labels in their order) with its value. Refuses anything the
    /// format does not allow: a malformed line, a sample without a `# TYPE`
    /// before it, a family declared twice or split, a duplicate series, a
    /// histogram whose buckets are not cumulative or whose `+Inf` bucket is
    /// not its count.
    pub fn parse(text: &str) -> Result<BTreeMap<String, f64>, String> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut finished: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        let mut series = BTreeMap::new();
        let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts: BTreeMap<String, f64> = BTreeMap::new();
        if !text.ends_with('\n') {
            return Err("the exposition does not end with a newline".into());
        }
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let kind = parts.next().unwrap_or("");
                let name = parts.next().ok_or(format!("line {n}: no metric name"))?;
                check_name(name).map_err(|e| format!("line {n}: {e}"))?;
                match kind {
                    "HELP" => {}
                    "TYPE" => {
                        let t = parts.next().ok_or(format!("line {n}: no type"))?;
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                            return Err(format!("line {n}: unknown type {t}"));
                        }
                        if types.insert(name.to_string(), t.to_string()).is_some() {
                            return Err(format!("line {n}: {name} typed twice"));
                        }
                    }
                    _ => {}
                }
                if current.as_deref() != Some(name) {
                    if let Some(prev) = current.replace(name.to_string()) {
                        finished.push(prev);
                    }
                    if finished.iter().any(|f| f == name) {
                        return Err(format!("line {n}: family {name} is split"));
                    }
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, labels, value) = sample(line).map_err(|e| format!("line {n}: {e}"))?;
            let family = family_of(&name, &types)
                .ok_or(format!("line {n}: {name} has no # TYPE before it"))?;
            if current.as_deref() != Some(family.as_str()) {
                return Err(format!("line {n}: {name} is outside its family's block"));
            }
            let key = if labels.is_empty() {
                name.clone()
            } else {
                let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                format!("{name}{{{}}}", l.join(","))
            };
            if series.insert(key.clone(), value).is_some() {
                return Err(format!("line {n}: duplicate series {key}"));
            }
            if types[&family] == "histogram" {
                let rest: Vec<String> = labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let id = format!("{family}|{}", rest.join(","));
                if name.ends_with("_bucket") {
                    let le = labels
                        .iter()
                        .find(|(k, _)| k == "le")
                        .ok_or(format!("line {n}: a bucket without le"))?;
                    buckets
                        .entry(id)
                        .or_default()
                        .push((number(&le.1).map_err(|e| format!("line {n}: {e}"))?, value));
                } else if name.ends_with("_count") {
                    counts.insert(id, value);
                }
            }
        }
        for (id, list) in &buckets {
            if list.windows(2).any(|w| w[1].0 <= w[0].0 || w[1].1 < w[0].1) {
                return Err(format!("histogram {id}: buckets not cumulative: {list:?}"));
            }
            match list.last() {
                Some((le, v)) if le.is_infinite() && Some(v) == counts.get(id) => {}
                _ => return Err(format!("histogram {id}: +Inf bucket is not the count")),
            }
        }
        Ok(series)
    }

    fn family_of(name: &str, types: &HashMap<String, String>) -> Option<String> {
        if types.contains_key(name) {
            return Some(name.to_string());
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && types
                    .get(base)
                    .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return Some(base.to_string());
            }
        }
        None
    }

    fn check_name(name: &str) -> Result<(), String> {
        let ok = name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
        if ok && !name.is_empty() {
            Ok(())
        } else {
            Err(format!("bad metric name {name:?}"))
        }
    }

    type Sample = (String, Vec<(String, String)>, f64);

    fn sample(line: &str) -> Result<Sample, String> {
        let name_end = line
            .find(['{', ' '])
            .ok_or(format!("no value in {line:?}"))?;
        let name = &line[..name_end];
        check_name(name)?;
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            loop {
                let Some(&(start, c)) = chars.peek() else {
                    return Err(format!("unterminated labels in {line:?}"));
                };
                if c == '}' {
                    rest = &inner[start + 1..];
                    break;
                }
                let eq = inner[start..]
                    .find('=')
                    .ok_or(format!("label without = in {line:?}"))?;
                let key = &inner[start..start + eq];
                if key.is_empty()
                    || key.starts_with(|c: char| c.is_ascii_digit())
                    || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(format!("bad label name {key:?}"));
                }
                while chars.peek().is_some_and(|&(i, _)| i <= start + eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(format!("label value not quoted in {line:?}"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(format!("bad escape {other:?} in {line:?}")),
                        },
                        Some((_, '"')) => break,
                        Some((_, '\n')) | None => {
                            return Err(format!("unterminated label value in {line:?}"));
                        }
                        Some((_, c)) => value.push(c),
                    }
                }
                if labels.iter().any(|(k, _): &(String, String)| k == key) {
                    return Err(format!("label {key} twice in {line:?}"));
                }
                labels.push((key.to_string(), value));
                match chars.peek() {
                    Some(&(_, ',')) => {
                        chars.next();
                        if chars.peek().is_some_and(|&(_, c)| c == '}') {
                            return Err(format!("trailing comma in {line:?}"));
                        }
                    }
                    Some(&(_, '}')) => {}
                    _ => return Err(format!("expected , or }} in {line:?}")),
                }
            }
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or(format!("no space before the value in {line:?}"))?;
        let mut parts = rest.split(' ');
        let value = number(parts.next().unwrap_or(""))?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp in {line:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("trailing text in {line:?}"));
        }
        Ok((name.to_string(), labels, value))
    }

    fn number(s: &str) -> Result<f64, String> {
        match s {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => s.parse().map_err(|_| format!("bad number {s:?}")),
        }
    }

    #[test]
    fn the_parser_refuses_what_the_format_does_not_allow() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 2\n";
        assert_eq!(parse(good).unwrap()["a_total{x=\"1\",y=\"q\"\"}"], 2.0);
        for bad in [
            "a_total 1\n",
            "# TYPE a counter\na{x=1} 1\n",
            "# TYPE a counter\na{x=\"1\",} 1\n",
            "# TYPE a counter\na 1\na 2\n",
            "# TYPE a counter\na one\n",
            "# TYPE a counter\n# TYPE b counter\nb 1\n# TYPE a gauge\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
            "# TYPE a counter\na 1",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}

/// A deploy naming a component file that is not there says which file, and
/// where berth looked: on the host it runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_component_file_is_named_as_missing_on_the_host() {
    let host = TestHost::builder().start().await.unwrap();
    let (status, err) = admin::put_json(
        &host,
        "/v1/apps/app",
        &json!({"wasm": "/no/such/file.wasm"}),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        err["error"], "no file `/no/such/file.wasm` on the host",
        "{err}"
    );
    assert_eq!(err["key"], "wasm", "{err}");
    host.stop().await;
}

/// The operations the admin API and the console share answer with typed
/// views and typed errors: a caller matches on what went wrong instead of
/// reading a status back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_operations_answer_typed() {
    use berth::apps::{OpError, PutRequest, ScaleRequest, TrafficRequest};
    use berth::backend::Kind;
    use berth::config::AppConfig;

    let host = TestHost::builder().start().await.unwrap();
    let apps = host.apps();
    let req = PutRequest {
        config: AppConfig {
            wasm: Some(art::HELLO.into()),
            routes: vec!["/hi".into()],
            ..AppConfig::default()
        },
        traffic_percent: 100,
    };
    let put = apps.put("hello", req.clone()).await.unwrap();
    assert!(put.created);
    assert_eq!(put.app.kind, Some(Kind::Wasm));
    assert_eq!(put.app.routes, ["/hi"]);
    assert!(!apps.put("hello", req.clone()).await.unwrap().created);
    let relative = PutRequest {
        config: AppConfig {
            wasm: Some("hello.wasm".into()),
            ..AppConfig::default()
        },
        ..req
    };
    match apps.put("other", relative).await {
        Err(OpError::Invalid { key, message }) => {
            assert_eq!(key.as_deref(), Some("wasm"));
            assert!(message.contains("relative path"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    let scale = ScaleRequest {
        min_scale: Some(1),
        max_scale: Some(3),
    };
    let scaled = apps.scale("hello", scale).await.unwrap();
    assert_eq!(
        (scaled.config.min_scale, scaled.config.max_scale),
        (Some(1), Some(3))
    );
    assert!(matches!(
        apps.scale("nope", scale).await,
        Err(OpError::UnknownApp(name)) if name == "nope"
    ));
    assert!(matches!(
        apps.scale("hello", ScaleRequest::default()).await,
        Err(OpError::Invalid { key: None, .. })
    ));
    let single = apps.set_traffic("hello", TrafficRequest { latest_percent: 50 });
    assert!(
        matches!(&single, Err(OpError::Invalid { message, .. }) if message.contains("single revision")),
        "{single:?}"
    );
    let all = apps.set_traffic(
        "hello",
        TrafficRequest {
            latest_percent: 100,
        },
    );
    assert_eq!(all.unwrap().revisions.len(), 1);

    assert_eq!(apps.list().apps.len(), 1);
    assert!(apps.buckets("hello").await.unwrap().buckets.is_empty());
    assert!(matches!(
        apps.buckets("nope").await,
        Err(OpError::UnknownApp(_))
    ));
    apps.delete("hello").await.unwrap();
    assert!(matches!(
        apps.delete("hello").await,
        Err(OpError::UnknownApp(_))
    ));
    assert!(matches!(apps.view("hello"), Err(OpError::UnknownApp(_))));
    assert!(apps.list().apps.is_empty());
    host.stop().await;
}
