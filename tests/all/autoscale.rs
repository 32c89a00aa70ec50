//! The autoscaler end to end on Wasm apps: scale from and to zero, bounds,
//! the activator's queue and its limits. Windows are shortened through the
//! app's `autoscale` settings.

use std::time::Duration;

use berth::testing::TestHost;
use berth_test_artifacts as art;

use crate::support::{app_url, client, fast_scaling, status, wait_status, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_at_zero_is_buffered_and_answered_then_the_app_returns_to_zero() {
    let mut spec = fast_scaling(art::HELLO);
    spec.scaling.autoscale.initial_scale = 0;
    let host = TestHost::builder()
        .app("hello", spec)
        .start()
        .await
        .unwrap();
    let s = status(&host, "hello");
    assert_eq!((s.ready, s.cold_starts), (0, 0), "starts at zero: {s:?}");

    let c = client(host.addr, &["hello"]);
    let r = c
        .get(app_url(host.addr, "hello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from hello");
    let s = status(&host, "hello");
    assert_eq!(s.cold_starts, 1, "{s:?}");

    // Idle: back to zero after the stable window (grace 0).
    wait_status(&host, "hello", "scale to zero", |s| {
        s.ready == 0 && s.desired == 0
    })
    .await;
    // And from zero again.
    let r = c
        .get(app_url(host.addr, "hello", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status(&host, "hello").cold_starts, 2);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_scale_keeps_a_warm_instance_through_idle_periods() {
    let mut spec = fast_scaling(art::HELLO);
    spec.scaling.autoscale.min_scale = 1;
    let host = TestHost::builder()
        .app("hello", spec)
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = status(&host, "hello");
    assert_eq!((s.ready, s.desired, s.cold_starts), (1, 1, 1), "{s:?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_one_scales_to_max_and_never_beyond_then_to_zero() {
    let mut spec = fast_scaling(art::SLOW);
    spec.scaling.autoscale.concurrency = Some(1);
    spec.scaling.autoscale.max_scale = 4;
    spec.scaling.autoscale.initial_scale = 0;
    spec.scaling.queue_timeout = Duration::from_secs(30);
    let host = TestHost::builder().app("slow", spec).start().await.unwrap();
    let c = client(host.addr, &["slow"]);
    let reqs: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            let url = app_url(host.addr, "slow", "/?ms=1500");
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    // Watch the whole burst: until every request is answered.
    let mut peak = 0;
    wait_until("every request answered", Duration::from_secs(120), || {
        let s = status(&host, "slow");
        assert!(s.ready + s.starting <= 4, "over max_scale: {s:?}");
        assert!(
            s.in_flight <= s.ready as usize,
            "breaker let more than 1 per instance: {s:?}"
        );
        peak = peak.max(s.ready);
        match reqs.iter().all(|r| r.is_finished()) {
            true => Ok(()),
            false => Err(s),
        }
    })
    .await;
    for r in reqs {
        assert_eq!(r.await.unwrap(), (200, "slept 1500 ms".to_string()));
    }
    assert_eq!(peak, 4, "should reach max_scale");
    wait_status(&host, "slow", "scale to zero", |s| s.ready == 0).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_queue_bound_requests_get_prompt_503s() {
    let mut spec = fast_scaling(art::SLOW);
    spec.scaling.autoscale.concurrency = Some(1);
    spec.scaling.autoscale.max_scale = 1;
    spec.scaling.queue_depth = Some(2);
    spec.scaling.queue_timeout = Duration::from_secs(10);
    let host = TestHost::builder().app("slow", spec).start().await.unwrap();
    let c = client(host.addr, &["slow"]);
    // The order in which answers arrive: a prompt 503 comes back while the
    // first request is still being served, not after a queue wait.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let c = c.clone();
        let answered = answered.clone();
        let url = app_url(host.addr, "slow", "/?ms=1500");
        tasks.push(tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            let order = answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let retry = r.headers().contains_key("retry-after");
            (r.status().as_u16(), order, retry)
        }));
        // Each arrives once the one before it is in flight or queued.
        let want = i + 1;
        wait_until("the request to arrive", Duration::from_secs(10), || {
            let s = status(&host, "slow");
            if s.in_flight + s.queued >= want.min(3) {
                Ok(())
            } else {
                Err(s)
            }
        })
        .await;
    }
    let mut ok = 0;
    let mut rejected = 0;
    for t in tasks {
        let (status, order, retry) = t.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                rejected += 1;
                assert!(retry, "503 carries Retry-After");
                assert!(order < 3, "503 should be prompt: it came back {order}th");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, rejected), (3, 3), "1 in flight + 2 queued succeed");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_scale_a_request_that_waits_too_long_gets_429() {
    let mut spec = fast_scaling(art::SLOW);
    spec.scaling.autoscale.concurrency = Some(1);
    spec.scaling.autoscale.max_scale = 1;
    spec.scaling.queue_timeout = Duration::from_millis(300);
    let host = TestHost::builder().app("slow", spec).start().await.unwrap();
    let c = client(host.addr, &["slow"]);
    let first = {
        let c = c.clone();
        let url = app_url(host.addr, "slow", "/?ms=1500");
        tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
    };
    wait_status(&host, "slow", "the first request in flight", |s| {
        s.in_flight == 1
    })
    .await;
    let r = c
        .get(app_url(host.addr, "slow", "/?ms=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(first.await.unwrap(), 200);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_app_takes_200_concurrent_requests_without_throttling() {
    let host = TestHost::builder()
        .wasm_app("slow", art::SLOW)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["slow"]);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let c = c.clone();
            let url = app_url(host.addr, "slow", "/?ms=2000");
            tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    // All 200 are served at once (none throttled or queued behind another).
    wait_status(&host, "slow", "200 requests in flight at once", |s| {
        s.in_flight == 200 && s.queued == 0
    })
    .await;
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    host.stop().await;
}
