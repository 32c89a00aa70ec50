//! Revisions: zero-downtime redeploys, traffic splits, graceful SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth::config::AppSpec;
use berth::testing::TestHost;
use berth_test_artifacts as art;

use crate::support::{admin, app_url, client};

fn env_app(version: &str) -> AppSpec {
    let mut spec = AppSpec::wasm(art::ENV);
    spec.env.insert("VERSION".into(), version.into());
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploys_under_a_steady_request_stream_drop_nothing() {
    let host = TestHost::builder()
        .app("env", env_app("1"))
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["env"]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut streams = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        let url = app_url(host.addr, "env", "/");
        let stop = stop.clone();
        streams.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let r = c.get(&url).send().await.unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                if status == 200 {
                    ok += 1;
                } else {
                    bad.push((status, body));
                }
            }
            (ok, bad)
        }));
    }
    for v in 2..=5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        host.apps()
            .deploy("env", &env_app(&v.to_string()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for s in streams {
        let (ok, bad) = s.await.unwrap();
        assert!(bad.is_empty(), "non-2xx during redeploys: {bad:?}");
        total += ok;
    }
    assert!(total > 50, "the stream kept going: {total} requests");
    let body = c
        .get(app_url(host.addr, "env", "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.lines().any(|l| l == "VERSION=5"), "{body}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_through_the_api_lands_within_five_percent() {
    let host = TestHost::builder().start().await.unwrap();
    let put = async |version: &str, query: &str| {
        let body = serde_json::json!({ "wasm": art::ENV, "env": { "VERSION": version } });
        admin::put_json(&host, &format!("/v1/apps/env{query}"), &body).await
    };
    assert!((200..300).contains(&put("1", "").await.0));
    let (status, body) = put("2", "?traffic=10").await;
    assert!((200..300).contains(&status), "{body}");

    let c = client(host.addr, &["env"]);
    let url = app_url(host.addr, "env", "/");
    let mut v2 = 0;
    for _ in 0..1000 {
        let body = c.get(&url).send().await.unwrap().text().await.unwrap();
        if body.lines().any(|l| l == "VERSION=2") {
            v2 += 1;
        } else {
            assert!(body.lines().any(|l| l == "VERSION=1"), "{body}");
        }
    }
    assert!((50..=150).contains(&v2), "10 % ± 5 % of 1000, got {v2}");

    // Promote the canary.
    let (status, body) = admin::post_json(
        &host,
        "/v1/apps/env/traffic",
        &serde_json::json!({ "latest_percent": 100 }),
    )
    .await;
    assert!((200..300).contains(&status), "{body}");
    for _ in 0..20 {
        let body = c.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(body.lines().any(|l| l == "VERSION=2"), "{body}");
    }
    let (status, _) = admin::post_json(
        &host,
        "/v1/apps/env/traffic",
        &serde_json::json!({ "latest_percent": 50 }),
    )
    .await;
    assert_eq!(status, 400, "one revision left: nothing to split with");
    let (status, body) = admin::post_json(
        &host,
        "/v1/apps/env/traffic",
        &serde_json::json!({ "latest_percent": 101 }),
    )
    .await;
    assert_eq!(
        (status, body["key"].as_str()),
        (400, Some("latest_percent")),
        "{body}"
    );
    assert_eq!(
        body["error"], "a traffic share is at most 100 percent, not 101",
        "{body}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_slow_requests_finish_then_exits() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("berth.toml");
    std::fs::write(&cfg, format!("[apps.slow]\nwasm = \"{}\"\n", art::SLOW)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while !lines.next().unwrap().unwrap().contains("berth: serving") {}
    std::thread::spawn(move || for _ in lines {});

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let c = client(addr, &["slow"]);
    let inflight: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            let url = app_url(addr, "slow", "/?ms=1500");
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    for r in inflight {
        assert_eq!(r.await.unwrap(), (200, "slept 1500 ms".to_string()));
    }
    // New connections are refused once draining began.
    assert!(c.get(app_url(addr, "slow", "/?ms=1")).send().await.is_err());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_requests_are_metered_for_cpu_and_memory() {
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["hello"]);
    for _ in 0..20 {
        let r = c
            .get(app_url(host.addr, "hello", "/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    let text = host.apps().metrics().render(&host.apps().snapshots());
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{app=\"hello\"}} ")))
            .unwrap_or_else(|| panic!("no {name} for hello in:\n{text}"))
            .parse()
            .unwrap()
    };
    let cpu = value("berth_cpu_seconds_total");
    let mem = value("berth_memory_gb_seconds_total");
    // 20 requests: some microseconds each, far less than a second.
    assert!(cpu > 0.0 && cpu < 5.0, "{cpu}");
    // At least one 64 KiB page for some microseconds.
    assert!(mem > 0.0 && mem < 1.0, "{mem}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deploys_use_up_no_revision_numbers() {
    let host = TestHost::builder().start().await.unwrap();
    // A component that does not link (it imports Spin's variables), as a
    // user deploys it before learning that, then a registry that is down.
    let unlinkable = serde_json::json!({ "wasm": art::FOREIGN_IMPORT });
    let unreachable = serde_json::json!({
        "image": format!("{}/nothing:v1", crate::support::registry::free_addr())
    });
    for (attempt, bad) in [&unlinkable, &unreachable].into_iter().enumerate() {
        let (status, body) = admin::put_json(&host, "/v1/apps/x", bad).await;
        assert!(status >= 400, "attempt {attempt}: {status} {body}");
    }
    let (status, body) = admin::put_json(
        &host,
        "/v1/apps/x",
        &serde_json::json!({ "wasm": art::HELLO }),
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let revision = |host: &TestHost| {
        host.apps()
            .status()
            .into_iter()
            .find(|a| a.deployed.name == "x")
            .map(|a| a.deployed.revision)
    };
    assert_eq!(revision(&host).as_deref(), Some("x-00001"));
    // A bad redeploy leaves the number for the next good one.
    let (status, _) = admin::put_json(&host, "/v1/apps/x", &unlinkable).await;
    assert!(status >= 400);
    let (status, body) = admin::put_json(
        &host,
        "/v1/apps/x",
        &serde_json::json!({ "wasm": art::ENV }),
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    assert_eq!(revision(&host).as_deref(), Some("x-00002"));
    host.stop().await;
}
