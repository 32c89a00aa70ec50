//! The breaker, the activator and the reconcile loop with a fake backend, on
//! paused time: every timeout, window and grace below is exact and instant.

use std::sync::Mutex;
use std::sync::atomic::AtomicU32;

use super::*;
use http_body_util::BodyExt as _;

use crate::http::full;

/// What the fake backend's instances do, and what happened to them.
#[derive(Debug, Default)]
struct Script {
    /// How long a start takes.
    start: Duration,
    /// How long a request takes.
    serve: Duration,
    /// How long a stop takes.
    stop: Duration,
    /// Starts fail with this message while set.
    fail: Mutex<Option<String>>,
    started: AtomicU32,
    stopped: AtomicU32,
    /// The most instances that existed at once.
    peak: AtomicU32,
}

impl Script {
    fn live(&self) -> u32 {
        self.started.load(Ordering::SeqCst) - self.stopped.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct FakeBackend(Arc<Script>);

#[async_trait::async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> Kind {
        Kind::Container
    }

    async fn start_instance(&self, _id: u64) -> anyhow::Result<Arc<dyn Instance>> {
        tokio::time::sleep(self.0.start).await;
        if let Some(why) = self.0.fail.lock().unwrap().clone() {
            anyhow::bail!("{why}");
        }
        self.0.started.fetch_add(1, Ordering::SeqCst);
        self.0.peak.fetch_max(self.0.live(), Ordering::SeqCst);
        Ok(Arc::new(FakeInstance(self.0.clone())))
    }
}

#[derive(Debug)]
struct FakeInstance(Arc<Script>);

#[async_trait::async_trait]
impl Instance for FakeInstance {
    async fn serve(
        &self,
        _req: Request<ReqBody>,
        _info: &RequestInfo,
    ) -> Result<Response<Body>, ServeError> {
        tokio::time::sleep(self.0.serve).await;
        Ok(Response::new(full("ok")))
    }

    async fn stop(&self, _grace: Duration) {
        tokio::time::sleep(self.0.stop).await;
        self.0.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

/// A spec with concurrency 1 and the given bounds; a short stable window
/// (6 s) and grace (4 s), decisions every second.
fn spec(min: u32, max: u32, initial: u32) -> AppSpec {
    let mut spec = AppSpec::wasm("");
    let a = &mut spec.scaling.autoscale;
    a.concurrency = Some(1);
    a.min_scale = min;
    a.max_scale = max;
    a.initial_scale = initial;
    a.stable_window = Duration::from_secs(6);
    a.scale_to_zero_grace = Duration::from_secs(4);
    a.tick = Duration::from_secs(1);
    spec.scaling.queue_timeout = Duration::from_secs(10);
    spec.validate().expect("a valid spec");
    spec
}

async fn revision(spec: AppSpec, script: &Arc<Script>) -> Arc<Revision> {
    let rev = Revision::new(
        "app-00001".into(),
        "app",
        None,
        spec,
        Arc::new(FakeBackend(script.clone())),
        Arc::new(Metrics::new()),
    );
    rev.activate().await.expect("initial instances start");
    rev
}

fn request() -> Request<ReqBody> {
    Request::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
}

async fn call(rev: &Arc<Revision>) -> Result<(), DispatchError> {
    let resp = match rev.dispatch(request(), &RequestInfo::new("t")).await {
        Ok(resp) => resp,
        Err(Undispatched::Retired(_)) => return Err(AdmitError::ShuttingDown.into()),
        Err(Undispatched::Failed(e)) => return Err(e),
    };
    // Hold the admission until the body is read, as the front door does.
    let _ = resp.into_body().collect().await;
    Ok(())
}

/// Lets tasks run and paused time pass until `cond` holds, at most `limit`
/// of (paused) time.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

#[tokio::test(start_paused = true)]
async fn a_burst_never_starts_more_than_max_scale() {
    let script = Arc::new(Script {
        start: Duration::from_millis(300),
        serve: Duration::from_millis(500),
        ..Script::default()
    });
    let rev = revision(spec(0, 4, 0), &script).await;
    let calls: Vec<_> = (0..60)
        .map(|_| {
            let rev = rev.clone();
            tokio::spawn(async move { call(&rev).await })
        })
        .collect();
    for c in calls {
        c.await
            .unwrap()
            .expect("every request is served within the queue timeout");
    }
    assert_eq!(script.peak.load(Ordering::SeqCst), 4);
    assert!(rev.status().ready <= 4);
    rev.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let script = Arc::new(Script {
        serve: Duration::from_secs(60),
        ..Script::default()
    });
    let mut s = spec(1, 1, 1);
    s.scaling.queue_depth = Some(2);
    let rev = revision(s, &script).await;
    // One served, two waiting.
    let busy: Vec<_> = (0..3)
        .map(|_| {
            let rev = rev.clone();
            tokio::spawn(async move { call(&rev).await })
        })
        .collect();
    assert!(until(Duration::from_secs(1), || rev.status().queued == 2).await);
    let t = Instant::now();
    let err = call(&rev).await.unwrap_err();
    assert_eq!(
        err,
        DispatchError::Admit(AdmitError::QueueFull { depth: 2 })
    );
    assert_eq!(t.elapsed(), Duration::ZERO);
    for b in busy {
        b.abort();
    }
    rev.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn waiting_at_max_scale_times_out_with_at_max_scale() {
    let script = Arc::new(Script {
        serve: Duration::from_secs(60),
        ..Script::default()
    });
    let rev = revision(spec(1, 1, 1), &script).await;
    let busy = {
        let rev = rev.clone();
        tokio::spawn(async move { call(&rev).await })
    };
    assert!(until(Duration::from_secs(1), || rev.status().in_flight == 1).await);
    let t = Instant::now();
    let err = call(&rev).await.unwrap_err();
    assert_eq!(
        err,
        DispatchError::Admit(AdmitError::AtMaxScale {
            max: 1,
            waited: Duration::from_secs(10)
        })
    );
    assert_eq!(t.elapsed(), Duration::from_secs(10));
    busy.abort();
    rev.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_start_times_out_the_queue() {
    let script = Arc::new(Script {
        start: Duration::from_secs(30),
        ..Script::default()
    });
    let rev = revision(spec(0, 2, 0), &script).await;
    let err = call(&rev).await.unwrap_err();
    assert_eq!(
        err,
        DispatchError::Admit(AdmitError::QueueTimeout {
            waited: Duration::from_secs(10)
        })
    );
    rev.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_is_reported_to_waiters() {
    let script = Arc::new(Script {
        start: Duration::from_millis(200),
        ..Script::default()
    });
    *script.fail.lock().unwrap() = Some("boom: no database".into());
    let rev = revision(spec(0, 2, 0), &script).await;
    let t = Instant::now();
    let err = call(&rev).await.unwrap_err();
    assert_eq!(
        err,
        DispatchError::Admit(AdmitError::StartFailed {
            reason: "boom: no database".into()
        })
    );
    // Told when the start failed, not at the queue timeout.
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(
        rev.status().last_error.as_deref(),
        Some("boom: no database")
    );
    rev.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn idle_goes_to_zero_only_after_window_and_grace() {
    let script = Arc::new(Script::default());
    let rev = revision(spec(0, 3, 1), &script).await;
    call(&rev).await.unwrap();
    let t = Instant::now();
    // Stable window (6 s) + grace (4 s) after the last activity.
    assert!(!until(Duration::from_secs(9), || rev.status().ready == 0).await);
    assert!(until(Duration::from_secs(3), || rev.status().ready == 0).await);
    let gone = t.elapsed();
    assert!(
        gone >= Duration::from_secs(10) && gone <= Duration::from_secs(12),
        "{gone:?}"
    );
    assert_eq!(script.live(), 0);
    // The next request starts an instance again.
    call(&rev).await.unwrap();
    assert_eq!(rev.status().ready, 1);
    rev.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn min_scale_is_held_while_idle() {
    let script = Arc::new(Script::default());
    let rev = revision(spec(2, 4, 1), &script).await;
    assert!(until(Duration::from_secs(2), || rev.status().ready == 2).await);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(rev.status().ready, 2);
    assert_eq!(script.live(), 2);
    rev.shutdown().await;
    assert_eq!(script.live(), 0);
}

/// A request a retired revision refuses comes back whole, for the app's
/// current revision (a redeploy raced its routing): headers and body
/// untouched, and nothing was admitted.
#[tokio::test(start_paused = true)]
async fn a_retired_revision_hands_the_request_back() {
    let script = Arc::new(Script::default());
    let rev = revision(spec(1, 1, 1), &script).await;
    rev.shutdown().await;
    let mut req = Request::new(
        http_body_util::Full::new(bytes::Bytes::from_static(b"payload"))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    req.headers_mut()
        .insert("x-mark", http::HeaderValue::from_static("kept"));
    match rev.dispatch(req, &RequestInfo::new("t")).await {
        Err(Undispatched::Retired(back)) => {
            assert_eq!(back.headers()["x-mark"], "kept");
            let body = back.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"payload");
        }
        other => panic!("expected the request back, got {other:?}"),
    }
    assert_eq!(rev.status().in_flight, 0);
    // As a refusal, it is the shutting-down one.
    assert_eq!(
        call(&rev).await.unwrap_err(),
        DispatchError::Admit(AdmitError::ShuttingDown)
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_refuses_waiters() {
    let script = Arc::new(Script {
        start: Duration::from_secs(5),
        ..Script::default()
    });
    let rev = revision(spec(0, 1, 0), &script).await;
    let waiting = {
        let rev = rev.clone();
        tokio::spawn(async move { call(&rev).await })
    };
    assert!(until(Duration::from_secs(1), || rev.status().queued == 1).await);
    rev.shutdown().await;
    assert_eq!(
        waiting.await.unwrap().unwrap_err(),
        DispatchError::Admit(AdmitError::ShuttingDown)
    );
}

/// A stop under way in the background (an evicted instance) is the
/// revision's: `shutdown` returns only once it is done, so a host that
/// stops right after an eviction leaves no instance behind.
#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_stops_under_way() {
    let script = Arc::new(Script {
        stop: Duration::from_secs(5),
        ..Script::default()
    });
    let rev = revision(spec(0, 1, 1), &script).await;
    assert_eq!(script.live(), 1);
    let slot = rev.lock_pool().ready[0].clone();
    rev.evict(&slot, "a test evicts it");
    assert!(rev.lock_pool().ready.is_empty());
    assert_eq!(rev.stops.running(), 1);
    let began = Instant::now();
    rev.shutdown().await;
    assert_eq!(script.live(), 0, "shutdown returned before the stop ended");
    assert!(began.elapsed() >= Duration::from_secs(5));
    assert_eq!(rev.stops.running(), 0);
}
