//! A revision: one immutable deploy of an app, with its instances, its
//! breaker and activator, and its reconcile loop.
//!
//! # The loop
//! Every request passes [`Revision::dispatch`]. The *breaker* admits it to a
//! ready instance with fewer than `concurrency` requests in flight (0 =
//! unbounded), choosing the least busy. When none has room the *activator*
//! parks the request in a bounded queue and wakes the reconcile loop at once
//! (not at the next tick): a revision at zero starts an instance for the
//! first request it sees. A parked request is admitted as soon as capacity
//! frees up or a new instance is ready; it gets `503` with `Retry-After` when
//! the queue is full (at once) or its wait times out, `429` when the revision
//! is already at `max_scale`, and a `503` naming the cause when instances fail
//! to start.
//!
//! The *reconcile loop* runs every `autoscale.tick` (and when poked): it
//! samples the revision's concurrency (in flight + queued) into the
//! [`Kpa`](crate::autoscale::Kpa), asks it for the desired instance count and
//! starts or stops instances to match. Starts run concurrently and are cold
//! starts, timed and recorded; stops drain an idle instance gracefully.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::sync::Notify;

use crate::autoscale::{Kpa, KpaConfig};
use crate::backend::{Backend, Instance, Kind, ReqBody, ServeError};
use crate::config::AppSpec;
use crate::gateway::{self, Body, BoxError};
use crate::metrics::Metrics;
use crate::wasm::{GuestError, RequestInfo};

/// How many cold starts each revision remembers.
const COLD_START_HISTORY: usize = 256;

/// One timed cold start.
#[derive(Debug, Clone, Copy)]
pub struct ColdStartRecord {
    /// When it finished.
    pub at: SystemTime,
    /// How long the instance took to become ready.
    pub duration: Duration,
    /// Its phases, when the backend times them (containers).
    pub split: Option<crate::container::ColdStartSplit>,
}

/// A point-in-time view of a revision, for the API and metrics.
#[derive(Debug, Clone)]
pub struct RevisionStatus {
    /// Revision id.
    pub id: String,
    /// Wasm or container.
    pub kind: Kind,
    /// What the autoscaler wants.
    pub desired: u32,
    /// Instances serving.
    pub ready: u32,
    /// Instances starting.
    pub starting: u32,
    /// Whether the autoscaler is in panic mode.
    pub panicking: bool,
    /// Requests waiting for capacity.
    pub queued: usize,
    /// Requests being served.
    pub in_flight: usize,
    /// Cold starts so far.
    pub cold_starts: u64,
    /// The most recent cold starts, oldest first.
    pub recent_cold_starts: Vec<ColdStartRecord>,
    /// The last failure to start an instance.
    pub last_error: Option<String>,
}

struct Slot {
    id: u64,
    instance: Arc<dyn Instance>,
    in_flight: AtomicU32,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.id)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

#[derive(Debug, Default)]
struct Pool {
    ready: Vec<Arc<Slot>>,
    starting: u32,
    /// Bumped on every failed start, so waiters can tell a new failure.
    failures: u64,
    last_error: Option<String>,
    cold_starts: u64,
    history: VecDeque<ColdStartRecord>,
    desired: u32,
    panicking: bool,
}

/// One immutable deploy of an app.
pub struct Revision {
    id: String,
    app: String,
    /// For an image, the `registry/repo@sha256:…` this revision runs.
    pinned: Option<String>,
    spec: AppSpec,
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    concurrency: u32,
    queue_depth: usize,
    queue_timeout: Duration,
    max_scale: u32,
    grace: Duration,
    tick: Duration,
    pool: Mutex<Pool>,
    scaler: Mutex<Kpa>,
    /// Capacity freed, an instance became ready, or a start failed.
    changed: Notify,
    /// Wakes the reconcile loop.
    poke: Notify,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
    next_instance: AtomicU64,
    stopped: AtomicBool,
}

impl fmt::Debug for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revision")
            .field("id", &self.id)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Revision {
    /// A revision of `app` served by `backend`; call [`Revision::activate`]
    /// to start its initial instances and its reconcile loop.
    pub fn new(
        id: String,
        app: &str,
        spec: AppSpec,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let kind = backend.kind();
        let scaling = &spec.scaling;
        let concurrency = scaling.concurrency.unwrap_or(match kind {
            Kind::Wasm => 0,
            Kind::Container => 80,
        });
        let a = &scaling.autoscale;
        let mut kpa = KpaConfig::for_concurrency(concurrency, a.target);
        kpa.utilization = a.utilization;
        kpa.stable_window = a.stable_window;
        kpa.panic_window_percentage = a.panic_window_percentage;
        kpa.panic_threshold_percentage = a.panic_threshold_percentage;
        kpa.max_scale_up_rate = a.max_scale_up_rate;
        kpa.max_scale_down_rate = a.max_scale_down_rate;
        kpa.min_scale = scaling.min_scale;
        kpa.max_scale = scaling.max_scale;
        kpa.initial_scale = a.initial_scale.max(scaling.min_scale);
        kpa.scale_to_zero_grace = a.scale_to_zero_grace;
        kpa.scale_down_delay = a.scale_down_delay;
        kpa.tick = a.tick;
        let queue_depth = a.queue_depth.unwrap_or_else(|| {
            (10 * concurrency.max(1) as usize * scaling.max_scale.max(1) as usize)
                .clamp(100, 10_000)
        });
        Arc::new(Self {
            id,
            app: app.into(),
            pinned: None,
            concurrency,
            queue_depth,
            queue_timeout: a.queue_timeout,
            max_scale: scaling.max_scale,
            grace: spec.container.shutdown_grace,
            tick: a.tick,
            pool: Mutex::new(Pool::default()),
            scaler: Mutex::new(Kpa::new(kpa, Instant::now())),
            changed: Notify::new(),
            poke: Notify::new(),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            next_instance: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            spec,
            backend,
            metrics,
        })
    }

    /// Records the image digest this revision runs (for garbage collection).
    pub fn set_pinned(self: &mut Arc<Self>, pinned: Option<String>) {
        if let Some(me) = Arc::get_mut(self) {
            me.pinned = pinned;
        }
    }

    /// For an image, the `registry/repo@sha256:…` this revision runs.
    pub fn pinned(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    /// The revision id (`<app>-<n>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The app's spec as deployed in this revision.
    pub fn spec(&self) -> &AppSpec {
        &self.spec
    }

    /// Wasm or container.
    pub fn kind(&self) -> Kind {
        self.backend.kind()
    }

    /// The hard per-instance limit (0 = unbounded).
    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// Starts the initial instances (waiting until they are ready) and the
    /// reconcile loop.
    ///
    /// # Errors
    /// When an initial instance fails to start.
    pub async fn activate(self: &Arc<Self>) -> anyhow::Result<()> {
        let initial = self
            .scaler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .desired();
        let starts: Vec<_> = (0..initial).map(|_| self.clone().start_one()).collect();
        for r in futures::future::join_all(starts).await {
            r?;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move { reconcile_loop(me).await });
        Ok(())
    }

    /// Stops the reconcile loop and every instance (in-flight requests on
    /// them finish first, up to the grace).
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        self.poke.notify_one();
        let slots: Vec<_> = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut pool.ready)
        };
        self.changed.notify_waiters();
        let stops = slots.into_iter().map(|s| self.clone_stop(s));
        futures::future::join_all(stops).await;
    }

    async fn clone_stop(&self, slot: Arc<Slot>) {
        let deadline = Instant::now() + self.grace.max(Duration::from_secs(1));
        while slot.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        slot.instance.stop(self.grace).await;
    }

    /// Stops every idle instance now, as a scale-to-zero would (the
    /// autoscaler may start new ones at its next decision). Busy instances
    /// keep running. Used by `berth bench` to measure cold starts.
    pub async fn drop_idle_instances(&self) {
        let victims: Vec<_> = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let mut victims = Vec::new();
            pool.ready.retain(|s| {
                if s.in_flight.load(Ordering::Acquire) == 0 {
                    victims.push(s.clone());
                    false
                } else {
                    true
                }
            });
            victims
        };
        // Each stop runs in its own task, so a caller that gives up midway
        // cannot leave an instance half stopped.
        let grace = self.grace;
        let stops: Vec<_> = victims
            .into_iter()
            .map(|s| tokio::spawn(async move { s.instance.stop(grace).await }))
            .collect();
        for stop in stops {
            let _ = stop.await;
        }
    }

    /// A snapshot for the API and metrics.
    pub fn status(&self) -> RevisionStatus {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        RevisionStatus {
            id: self.id.clone(),
            kind: self.kind(),
            desired: pool.desired,
            ready: pool.ready.len() as u32,
            starting: pool.starting,
            panicking: pool.panicking,
            queued: self.queued.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            cold_starts: pool.cold_starts,
            recent_cold_starts: pool.history.iter().copied().collect(),
            last_error: pool.last_error.clone(),
        }
    }

    /// Admits a request to an instance (waiting for capacity if needed) and
    /// serves it. Never fails: every error is a response.
    pub async fn dispatch(
        self: &Arc<Self>,
        req: Request<ReqBody>,
        info: &RequestInfo,
    ) -> Response<Body> {
        let guard = match self.admit().await {
            Ok(g) => g,
            Err(resp) => return resp,
        };
        match guard.slot.instance.serve(req, info).await {
            Ok(resp) => {
                // Hold the admission until the body is done streaming.
                resp.map(|body| {
                    GuardedBody {
                        body,
                        _guard: guard,
                    }
                    .boxed_unsync()
                })
            }
            Err(e) => {
                if e.instance_broken() || !guard.slot.instance.is_alive() {
                    self.evict(&guard.slot, &e.to_string());
                }
                serve_error(&self.app, &e)
            }
        }
    }

    async fn admit(self: &Arc<Self>) -> Result<AdmitGuard, Response<Body>> {
        let mut queued = false;
        let deadline = tokio::time::Instant::now() + self.queue_timeout;
        let failures_at_entry = self.pool.lock().unwrap_or_else(|e| e.into_inner()).failures;
        let result = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stopped.load(Ordering::Acquire) {
                break Err(gateway::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("app `{}` is shutting down\n", self.app),
                ));
            }
            if let Some(guard) = self.try_admit() {
                break Ok(guard);
            }
            if !queued {
                if self.queued.load(Ordering::Acquire) >= self.queue_depth {
                    break Err(retry_later(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "app `{}` is overloaded: {} requests already wait for capacity\n",
                            self.app, self.queue_depth
                        ),
                    ));
                }
                self.queued.fetch_add(1, Ordering::AcqRel);
                queued = true;
                // Ask for capacity now, not at the next tick.
                self.poke.notify_one();
            } else {
                let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                if pool.failures > failures_at_entry && pool.ready.is_empty() && pool.starting == 0
                {
                    let why = pool.last_error.clone().unwrap_or_default();
                    break Err(retry_later(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("app `{}` could not start an instance: {why}\n", self.app),
                    ));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let at_max = {
                    let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                    self.max_scale > 0 && pool.ready.len() as u32 >= self.max_scale
                };
                break Err(if at_max {
                    retry_later(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "app `{}` is at its maximum of {} instances and none had room within {:?}\n",
                            self.app, self.max_scale, self.queue_timeout
                        ),
                    )
                } else {
                    retry_later(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "app `{}` had no capacity within {:?}\n",
                            self.app, self.queue_timeout
                        ),
                    )
                });
            }
        };
        if queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }

    fn try_admit(self: &Arc<Self>) -> Option<AdmitGuard> {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let limit = self.concurrency;
        let slot = pool
            .ready
            .iter()
            .filter(|s| limit == 0 || s.in_flight.load(Ordering::Acquire) < limit)
            .min_by_key(|s| s.in_flight.load(Ordering::Acquire))?
            .clone();
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(AdmitGuard {
            revision: self.clone(),
            slot,
        })
    }

    fn evict(&self, slot: &Arc<Slot>, why: &str) {
        let removed = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let before = pool.ready.len();
            pool.ready.retain(|s| !Arc::ptr_eq(s, slot));
            before != pool.ready.len()
        };
        if removed {
            tracing::warn!(app = %self.app, revision = %self.id, instance = slot.id, "instance removed: {why}");
            let instance = slot.instance.clone();
            let grace = self.grace;
            tokio::spawn(async move { instance.stop(grace).await });
            self.poke.notify_one();
        }
    }

    /// Starts one instance, records the cold start, and publishes it.
    async fn start_one(self: Arc<Self>) -> anyhow::Result<()> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).starting += 1;
        self.start_reserved().await
    }

    /// Starts one instance whose place in `starting` is already counted.
    async fn start_reserved(self: Arc<Self>) -> anyhow::Result<()> {
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let result = self.backend.start_instance(id).await;
        let duration = t.elapsed();
        let stopped = self.stopped.load(Ordering::Acquire);
        let outcome = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.starting -= 1;
            match result {
                Ok(instance) if !stopped => {
                    let split = instance.cold_start_split();
                    pool.ready.push(Arc::new(Slot {
                        id,
                        instance,
                        in_flight: AtomicU32::new(0),
                    }));
                    pool.cold_starts += 1;
                    if pool.history.len() == COLD_START_HISTORY {
                        pool.history.pop_front();
                    }
                    pool.history.push_back(ColdStartRecord {
                        at: SystemTime::now(),
                        duration,
                        split,
                    });
                    Ok(None)
                }
                Ok(instance) => Ok(Some(instance)),
                Err(e) => {
                    pool.failures += 1;
                    pool.last_error = Some(format!("{e:#}"));
                    Err(e)
                }
            }
        };
        match outcome {
            Ok(None) => {
                self.metrics
                    .observe_cold_start(self.kind().as_str(), duration);
                tracing::info!(app = %self.app, revision = %self.id, kind = %self.kind(), instance = id, ?duration, "instance ready (cold start)");
                self.changed.notify_waiters();
                Ok(())
            }
            Ok(Some(late)) => {
                late.stop(self.grace).await;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(app = %self.app, revision = %self.id, "instance failed to start: {e:#}");
                self.changed.notify_waiters();
                Err(e)
            }
        }
    }

    /// One reconcile step: sample, decide, converge.
    fn reconcile(self: &Arc<Self>, now: Instant) {
        let demand = self.in_flight.load(Ordering::Acquire) + self.queued.load(Ordering::Acquire);
        let (ready, _starting) = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            // Drop instances that died on their own (e.g. a container exited).
            let dead: Vec<_> = pool
                .ready
                .iter()
                .filter(|s| !s.instance.is_alive())
                .cloned()
                .collect();
            pool.ready.retain(|s| s.instance.is_alive());
            for s in dead {
                tracing::warn!(app = %self.app, instance = s.id, "instance exited on its own");
                let grace = self.grace;
                tokio::spawn(async move { s.instance.stop(grace).await });
            }
            (pool.ready.len() as u32, pool.starting)
        };
        let decision = {
            let mut kpa = self.scaler.lock().unwrap_or_else(|e| e.into_inner());
            kpa.record(now, demand as f64);
            if ready == 0 && self.queued.load(Ordering::Acquire) > 0 {
                kpa.poke(now, ready)
            } else {
                kpa.decide(now, ready)
            }
        };
        let desired = decision.desired;
        // Starts are reserved (counted as `starting`) under the lock, before
        // their tasks run, so the next step never starts them twice.
        let to_start = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.desired = desired;
            pool.panicking = decision.panicking;
            let actual = pool.ready.len() as u32 + pool.starting;
            let n = desired.saturating_sub(actual);
            pool.starting += n;
            n
        };
        if to_start > 0 {
            for _ in 0..to_start {
                let me = self.clone();
                tokio::spawn(async move {
                    let _ = me.start_reserved().await;
                });
            }
        } else if desired < ready {
            // Only idle instances go; busy ones are retried next tick.
            let victims: Vec<_> = {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                let mut n = ready - desired;
                let mut victims = Vec::new();
                pool.ready.retain(|s| {
                    if n > 0 && s.in_flight.load(Ordering::Acquire) == 0 {
                        n -= 1;
                        victims.push(s.clone());
                        false
                    } else {
                        true
                    }
                });
                victims
            };
            for s in victims {
                tracing::info!(app = %self.app, revision = %self.id, instance = s.id, "scaling down");
                let grace = self.grace;
                tokio::spawn(async move { s.instance.stop(grace).await });
            }
        }
    }
}

async fn reconcile_loop(rev: std::sync::Weak<Revision>) {
    let tick = match rev.upgrade() {
        Some(r) => r.tick,
        None => return,
    };
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(r) = rev.upgrade() else { return };
        if r.stopped.load(Ordering::Acquire) {
            return;
        }
        r.reconcile(Instant::now());
        tokio::select! {
            _ = interval.tick() => {}
            () = r.poke.notified() => {}
        }
    }
}

/// Holds a request's admission to an instance.
struct AdmitGuard {
    revision: Arc<Revision>,
    slot: Arc<Slot>,
}

impl Drop for AdmitGuard {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.revision.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.revision.changed.notify_waiters();
    }
}

/// A response body that keeps its admission until it is done.
struct GuardedBody {
    body: Body,
    _guard: AdmitGuard,
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn retry_later(status: StatusCode, msg: String) -> Response<Body> {
    let mut resp = gateway::error(status, msg);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The one mapping from instance failures to responses.
fn serve_error(app: &str, e: &ServeError) -> Response<Body> {
    let status = match e {
        ServeError::Guest(GuestError::Deadline(_)) => StatusCode::GATEWAY_TIMEOUT,
        ServeError::Guest(GuestError::Overloaded(_)) => StatusCode::SERVICE_UNAVAILABLE,
        ServeError::Guest(GuestError::ErrorCode(_)) | ServeError::Upstream(_) => {
            StatusCode::BAD_GATEWAY
        }
        ServeError::Guest(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let msg = format!("app `{app}` failed: {e} (see `berth logs {app}`)\n");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        retry_later(status, msg)
    } else {
        gateway::error(status, msg)
    }
}
