//! A host's start with many apps: they are deployed as one batch (each
//! distinct component compiled once, the state file written once, routes
//! published once), every app serves, a bad app is still reported with its
//! reason, and a restart brings them all back the same way.

use std::collections::BTreeMap;

use berth::config::{AppSpec, Config};
use berth::testing::TestHost;
use berth_test_artifacts as art;

use crate::support::{app_url, client};

/// 150 apps of `hello`, 50 of `env` (two distinct components), one with a
/// path route, and `broken`, whose file is no component.
fn many(broken: &std::path::Path) -> Config {
    let mut config = Config {
        domain: "localhost".into(),
        ..Config::default()
    };
    for i in 0..200 {
        let (name, wasm) = if i < 150 {
            (format!("h{i:03}"), art::HELLO)
        } else {
            (format!("e{i:03}"), art::ENV)
        };
        let mut spec = AppSpec::wasm(wasm);
        if i == 7 {
            spec.routes = vec!["/seven".into()];
        }
        config.apps.insert(name, spec);
    }
    config
        .apps
        .insert("broken".into(), AppSpec::wasm(broken.to_path_buf()));
    config
}

/// Every app answers as itself (`e…` apps run `env`, the others `hello`).
async fn all_answer(host: &TestHost, names: &[String]) {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let c = client(host.addr, &refs);
    for name in names {
        let r = c.get(app_url(host.addr, name, "/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let body = r.text().await.unwrap();
        if name.starts_with('e') {
            assert!(body.contains(&format!("BERTH_APP={name}\n")), "{body}");
        } else {
            assert_eq!(body, format!("hello from {name}"));
        }
    }
    let r = c.get(host.url("/seven")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from h007");
}

fn revisions(host: &TestHost) -> BTreeMap<String, String> {
    host.apps()
        .state()
        .apps()
        .into_iter()
        .map(|(name, app)| (name, app.revision))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_apps_start_as_one_batch_and_come_back_alike() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm not really").unwrap();
    let data = dir.path().join("data");
    let start = || {
        TestHost::builder()
            .data_dir(&data)
            .config(many(&broken))
            .lenient()
            .start()
    };
    let host = start().await.unwrap();
    let names: Vec<String> = many(&broken)
        .apps
        .into_keys()
        .filter(|n| n != "broken")
        .collect();
    assert_eq!(host.apps().routes().len(), 200);
    // One write of the state file for the 200 apps, one compile per file.
    assert_eq!(host.apps().state().writes(), 1);
    assert_eq!(host.apps().runtime().stats().compiled(), 2);
    all_answer(&host, &names).await;
    // The bad app is reported, with why, while the others serve.
    let failed = host.apps().failed_app("broken").expect("broken is failed");
    assert!(failed.reason.contains("broken.wasm"), "{}", failed.reason);
    let before = revisions(&host);
    assert_eq!(before.len(), 200);
    // Apps made through the API come back from the state file too.
    for name in ["api1", "api2", "api3"] {
        host.apps()
            .deploy(name, &AppSpec::wasm(art::HELLO))
            .await
            .unwrap();
    }
    assert_eq!(host.apps().state().writes(), 4, "one write per API deploy");
    let before = revisions(&host);
    host.stop().await;

    // A restart: the file's apps in one batch, the API's in another; the
    // same revisions, nothing compiled.
    let host = start().await.unwrap();
    assert_eq!(host.apps().routes().len(), 203);
    assert_eq!(host.apps().state().writes(), 2);
    assert_eq!(host.apps().runtime().stats().compiled(), 0);
    assert_eq!(revisions(&host), before);
    let mut names = names;
    names.extend(["api1", "api2", "api3"].map(String::from));
    all_answer(&host, &names).await;
    assert!(host.apps().failed_app("broken").is_some());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_a_file_app_claims_is_refused_to_the_api_app_restored_after_it() {
    let data = tempfile::tempdir().unwrap();
    let host = TestHost::builder()
        .data_dir(data.path())
        .start()
        .await
        .unwrap();
    let mut made = AppSpec::wasm(art::HELLO);
    made.routes = vec!["/shared".into()];
    host.apps().deploy("made", &made).await.unwrap();
    host.stop().await;
    // The file now claims the route: the file's app wins, the API app is
    // listed as failed, naming the owner.
    let mut config = Config {
        domain: "localhost".into(),
        ..Config::default()
    };
    let mut filed = AppSpec::wasm(art::ENV);
    filed.routes = vec!["/shared".into()];
    config.apps.insert("filed".into(), filed);
    let host = TestHost::builder()
        .data_dir(data.path())
        .config(config)
        .lenient()
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &[]);
    let r = c.get(host.url("/shared")).send().await.unwrap();
    assert!(
        r.text().await.unwrap().contains("BERTH_APP=filed"),
        "the file's app serves the route"
    );
    let failed = host.apps().failed_app("made").expect("made is failed");
    assert!(
        failed
            .reason
            .contains("route `/shared` is taken by app `filed`"),
        "{}",
        failed.reason
    );
    host.stop().await;
}
