//! Faults at start and stop: an app that cannot be deployed never keeps
//! the host or the other apps down; it is listed as failed with its reason
//! and retried with backoff.

use std::time::Duration;

use berth::config::{AppSpec, Config};
use berth::testing::TestHost;
use berth_test_artifacts as art;
use serde_json::Value;

use crate::support::registry::free_addr;
use crate::support::{get, wait_until};

async fn admin_json(host: &TestHost, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("http://{}{path}", host.admin_addr))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_cannot_deploy_is_listed_failed_and_retried_while_others_serve() {
    let mut needs_secret = AppSpec::wasm(art::ENV);
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
    let list = admin_json(&host, "/v1/apps").await;
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
    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", host.admin_addr))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let r = reqwest::Client::new()
        .delete(format!("http://{}/v1/apps/unpullable", host.admin_addr))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(host.apps().failed().is_empty());
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
