//! The fast path: pre-instantiated instances (the stock), compiled
//! components shared by sha256 and kept resident within a budget.

use std::time::Duration;

use berth::testing::TestHost;
use berth::wasm::EngineOptions;
use berth_test_artifacts as art;

use crate::support::{admin, app_url, client, fast_scaling, status, wait_status, wait_until};

async fn wait_stocked(host: &TestHost, app: &str, at_least: u32) {
    wait_status(host, app, "a filled stock", |s| {
        s.stock.as_ref().is_some_and(|st| st.stocked >= at_least)
    })
    .await;
}

/// Every request gets an instance no other request touched, stock or not:
/// the `counter` component remembers the requests its instance saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stocked_instance_serves_one_request_and_hits_are_counted() {
    let host = TestHost::builder()
        .wasm_app("counter", art::COUNTER)
        .start()
        .await
        .unwrap();
    wait_stocked(&host, "counter", 1).await;
    let c = client(host.addr, &["counter"]);
    let mut answers = Vec::new();
    // Sequential: each request finds a refilled stock.
    for i in 0..40 {
        let r = c
            .get(app_url(host.addr, "counter", &format!("/?mark=s{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        answers.push(r.text().await.unwrap());
        if i % 4 == 0 {
            wait_stocked(&host, "counter", 1).await;
        }
    }
    // Concurrent: more than the stock holds, hits and misses together.
    let burst = (0..40).map(|i| {
        let c = c.clone();
        let url = app_url(host.addr, "counter", &format!("/?mark=c{i}"));
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    });
    answers.extend(futures::future::join_all(burst).await);
    for a in &answers {
        assert_eq!(
            a, "count 1 previous none",
            "one request saw another's state"
        );
    }
    let stock = status(&host, "counter")
        .stock
        .expect("a Wasm revision has a stock");
    assert_eq!(stock.hits + stock.misses, 80, "{stock:?}");
    assert!(stock.hits >= 10, "the stock was used: {stock:?}");

    let labels = r#"{app="counter",revision="counter-00001"}"#;
    let hits = admin::metric(&host, &format!("berth_wasm_stock_hits_total{labels}")).await;
    let misses = admin::metric(&host, &format!("berth_wasm_stock_misses_total{labels}")).await;
    assert_eq!(hits, Some(stock.hits as f64));
    assert_eq!(misses, Some(stock.misses as f64));
    host.stop().await;
}

/// A stocked instance's output is tagged with the id of the request that
/// took it, not with anything from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stocked_instance_logs_under_its_request_id() {
    let host = TestHost::builder()
        .wasm_app("logger", art::LOGGER)
        .start()
        .await
        .unwrap();
    wait_stocked(&host, "logger", 1).await;
    let c = client(host.addr, &["logger"]);
    let r = c
        .get(app_url(host.addr, "logger", "/"))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-berth-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(r.text().await.unwrap(), "logged");
    let stock = status(&host, "logger").stock.unwrap();
    assert_eq!(
        stock.hits, 1,
        "the request took a stocked instance: {stock:?}"
    );
    let log = host.data_dir().join("logs/logger.log");
    wait_until("the request's lines", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let ok = text.contains(&format!(" {id} - stdout stdout line"))
            && text.contains(&format!(" {id} - stderr stderr line"));
        if ok { Ok(()) } else { Err(text) }
    })
    .await;
    host.stop().await;
}

/// The stock follows the autoscaler: zero when the app is at zero, filled
/// again after a start from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_drops_to_zero_when_the_app_scales_to_zero() {
    let host = TestHost::builder()
        .app("hello", fast_scaling(art::HELLO))
        .start()
        .await
        .unwrap();
    wait_stocked(&host, "hello", 1).await;
    assert!(host.apps().runtime().stocker().total() >= 1);
    wait_status(&host, "hello", "scale to zero", |s| {
        let empty = s
            .stock
            .as_deref()
            .is_some_and(|st| st.stocked == 0 && st.target == 0);
        s.ready == 0 && s.desired == 0 && empty
    })
    .await;
    wait_until(
        "no stocked instance left",
        Duration::from_secs(10),
        || match host.apps().runtime().stocker().total() {
            0 => Ok(()),
            n => Err(n),
        },
    )
    .await;
    // From zero: served, and the stock comes back while the app is warm.
    let c = client(host.addr, &["hello"]);
    let r = c
        .get(app_url(host.addr, "hello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from hello");
    wait_stocked(&host, "hello", 1).await;
    host.stop().await;
}

/// Apps of one component share one compiled component: compiled once,
/// then found resident by sha256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_of_one_component_share_it_and_it_is_compiled_once() {
    let host = TestHost::builder()
        .wasm_app("one", art::HELLO)
        .wasm_app("two", art::HELLO)
        .wasm_app("three", art::HELLO)
        .start()
        .await
        .unwrap();
    let stats = host.apps().runtime().stats();
    assert_eq!(
        (stats.compiled(), stats.cache_hits(), stats.shared()),
        (1, 0, 2)
    );
    assert_eq!(host.apps().runtime().resident().usage().0, 1);
    let c = client(host.addr, &["one", "two", "three"]);
    for app in ["one", "two", "three"] {
        let r = c.get(app_url(host.addr, app, "/")).send().await.unwrap();
        // Each app keeps its own environment over the shared code.
        assert_eq!(r.text().await.unwrap(), format!("hello from {app}"));
    }
    host.stop().await;
}

/// Past the resident budget an idle component goes back to disk; the app's
/// next start maps it again (by its known sha256) and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_resident_budget_an_idle_component_is_dropped_and_reloaded() {
    let host = TestHost::builder()
        .engine(EngineOptions {
            resident_budget: Some(1),
            ..EngineOptions::default()
        })
        .app("hello", fast_scaling(art::HELLO))
        .start()
        .await
        .unwrap();
    let runtime = host.apps().runtime().clone();
    assert_eq!(runtime.resident().usage().0, 1, "in use: kept");
    wait_until(
        "scale to zero and eviction",
        Duration::from_secs(20),
        || {
            let s = status(&host, "hello");
            if s.ready == 0 && runtime.resident().usage().0 == 0 {
                Ok(())
            } else {
                Err((s.ready, s.cold_starts, runtime.resident().usage()))
            }
        },
    )
    .await;
    let hits = runtime.stats().cache_hits();
    let c = client(host.addr, &["hello"]);
    let r = c
        .get(app_url(host.addr, "hello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from hello");
    assert_eq!(
        runtime.stats().cache_hits(),
        hits + 1,
        "mapped from disk again"
    );
    assert_eq!(runtime.stats().compiled(), 1, "never compiled again");
    host.stop().await;
}

/// Within the budget, a component stays resident at zero and the start
/// from zero maps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_budget_a_component_stays_resident_at_zero() {
    let host = TestHost::builder()
        .app("hello", fast_scaling(art::HELLO))
        .start()
        .await
        .unwrap();
    let runtime = host.apps().runtime().clone();
    wait_status(&host, "hello", "scale to zero", |s| s.ready == 0).await;
    assert_eq!(runtime.resident().usage().0, 1);
    let (hits, shared) = (runtime.stats().cache_hits(), runtime.stats().shared());
    let c = client(host.addr, &["hello"]);
    let r = c
        .get(app_url(host.addr, "hello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from hello");
    assert_eq!(runtime.stats().cache_hits(), hits, "nothing mapped");
    assert_eq!(runtime.stats().shared(), shared + 1, "found resident");
    host.stop().await;
}
