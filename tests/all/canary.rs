//! From a container to Wasm by canary: one app, an image revision and a
//! component revision side by side, traffic moved 10 % → 100 % while a
//! steady stream of requests runs, and not one of them dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth::testing::TestHost;
use berth_test_artifacts as art;

use crate::support::image::{Image, ImageExt as _};
use crate::support::registry::Registry;
use crate::support::{admin, app_url, client};

const CONTAINER: &str = "hello from a container\n";
const WASM: &str = "hello from web";

/// Requests in a loop until `stop`: (container answers, Wasm answers,
/// anything else).
fn stream(
    c: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u32, u32, Vec<String>)> {
    tokio::spawn(async move {
        let (mut container, mut wasm, mut bad) = (0, 0, Vec::new());
        // Bounded: a broken build stops after 20,000 requests, not never.
        for _ in 0..20_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match c.get(&url).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    match (status, body.as_str()) {
                        (200, CONTAINER) => container += 1,
                        (200, WASM) => wasm += 1,
                        _ => bad.push(format!("{status} {body:?}")),
                    }
                }
                Err(e) => bad.push(e.to_string()),
            }
        }
        (container, wasm, bad)
    })
}

async fn run_for(
    c: &reqwest::Client,
    url: &str,
    streams: usize,
    how_long: Duration,
) -> (u32, u32, Vec<String>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..streams)
        .map(|_| stream(c.clone(), url.to_string(), stop.clone()))
        .collect();
    tokio::time::sleep(how_long).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = (0, 0, Vec::new());
    for t in tasks {
        let (a, b, bad) = t.await.unwrap();
        total.0 += a;
        total.1 += b;
        total.2.extend(bad);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_app_moves_to_wasm_by_canary_without_dropping_a_request() {
    let registry = Registry::start();
    let reference = registry.reference("web:v1");
    Image::httpd().push(&reference);
    let host = TestHost::builder().start().await.unwrap();
    let (status, body) = admin::put_json(
        &host,
        "/v1/apps/web",
        &serde_json::json!({ "image": reference, "min_scale": 1 }),
    )
    .await;
    assert!((200..300).contains(&status), "{body}");
    let c = client(host.addr, &["web"]);
    let url = app_url(host.addr, "web", "/");

    // A stream runs while the Wasm revision arrives as a 10 % canary.
    let stop = Arc::new(AtomicBool::new(false));
    let during: Vec<_> = (0..2)
        .map(|_| stream(c.clone(), url.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, view) = admin::put_json(
        &host,
        "/v1/apps/web?traffic=10",
        &serde_json::json!({ "wasm": art::HELLO, "min_scale": 1 }),
    )
    .await;
    assert!((200..300).contains(&status), "{view}");
    let kinds: Vec<(String, u64)> = view["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["traffic_percent"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(kinds.contains(&("wasm".into(), 10)), "{kinds:?}");
    assert!(kinds.contains(&("container".into(), 90)), "{kinds:?}");

    // The console shows the two revisions side by side, with their kind.
    let (cookie, _) = crate::console::sign_in(&host).await;
    let live = client(host.admin_addr, &[])
        .get(admin::url(&host, "/ui/fragments/apps/web"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows: Vec<&str> = live.split("<tr data-revision=").skip(1).collect();
    assert_eq!(rows.len(), 2, "{live}");
    assert!(
        rows.iter()
            .any(|r| r.contains(">container<") && r.contains("90 %")),
        "{live}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains(">wasm<") && r.contains("10 %")),
        "{live}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in during {
        let (_, _, bad) = t.await.unwrap();
        assert!(bad.is_empty(), "dropped while the canary arrived: {bad:?}");
    }

    // At 10 %: both answer, the container most.
    let (container, wasm, bad) = run_for(&c, &url, 2, Duration::from_secs(2)).await;
    assert!(bad.is_empty(), "dropped at 10 %: {bad:?}");
    let total = container + wasm;
    assert!(total >= 50, "the stream kept going: {total}");
    let share = f64::from(wasm) / f64::from(total);
    assert!(
        (0.03..=0.20).contains(&share),
        "10 % canary: {wasm} of {total} from Wasm"
    );

    // Promote while requests run: nothing dropped, then only Wasm answers.
    let stop = Arc::new(AtomicBool::new(false));
    let during: Vec<_> = (0..2)
        .map(|_| stream(c.clone(), url.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = admin::post_json(
        &host,
        "/v1/apps/web/traffic",
        &serde_json::json!({ "latest_percent": 100 }),
    )
    .await;
    assert!((200..300).contains(&status), "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in during {
        let (_, _, bad) = t.await.unwrap();
        assert!(bad.is_empty(), "dropped during the promotion: {bad:?}");
    }
    let (container, wasm, bad) = run_for(&c, &url, 2, Duration::from_millis(500)).await;
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(container, 0, "the container revision is retired");
    assert!(wasm > 0);
    host.stop().await;
}
