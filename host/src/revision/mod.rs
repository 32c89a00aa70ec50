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
//! frees up or a new instance is ready; otherwise it is refused with an
//! [`AdmitError`]: the queue is full (at once), its wait timed out, the
//! revision is at `max_scale`, or instances failed to start. The front door
//! turns the refusal into a response.
//!
//! The *reconcile loop* (`reconcile`) runs every `autoscale.tick` (and when
//! poked): it samples the revision's concurrency (in flight + queued) into
//! the [`Kpa`], asks it for the desired instance count
//! and starts or stops instances to match. Starts run concurrently and are
//! cold starts, timed and recorded; stops drain an idle instance gracefully.
//!
//! Time is [`tokio::time::Instant`] throughout, so tests run the loop, the
//! queue timeout and the grace periods on paused time.
//!
//! # Layout
//! - this file: [`Revision`], admission ([`Revision::dispatch`]), status;
//! - `reconcile`: the reconcile loop, instance starts and stops;
//! - `tests.rs`: the breaker, activator and loop with a fake backend on
//!   paused time.

mod reconcile;
mod tasks;

pub use tasks::Tasks;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::autoscale::Kpa;
use crate::backend::{
    Backend, ColdStartSplit, Instance, Kind, OutboundStatus, ServeError, StockStatus,
};
use crate::config::AppSpec;
use crate::http::{
    Admitted, Body, BodyTooLarge, BoxError, EndOnDrop, GuardBody, ReqBody, RequestInfo, Trace,
};
use crate::metrics::Metrics;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// How many cold starts each revision remembers.
const COLD_START_HISTORY: usize = 256;

/// The hard per-instance limit when an app sets none: Wasm instances take
/// any number of requests (each gets its own wasmtime instance), containers
/// take Cloud Run's default of 80.
pub fn default_concurrency(kind: Kind) -> u32 {
    match kind {
        Kind::Wasm => 0,
        Kind::Container => 80,
    }
}

/// One timed cold start.
#[derive(Debug, Clone)]
pub struct ColdStartRecord {
    /// When it finished.
    pub at: SystemTime,
    /// How long the instance took to become ready.
    pub duration: Duration,
    /// Its phases, when the backend times them (containers).
    pub split: Option<ColdStartSplit>,
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
    /// The backend's stock of instances made ahead (Wasm); boxed, so the
    /// status stays small.
    pub stock: Option<Box<StockStatus>>,
    /// Its guests' outbound connections (Wasm); boxed as `stock` is.
    pub outbound: Option<Box<OutboundStatus>>,
}

/// Why a request was not admitted to an instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// The revision is being stopped (its app was redeployed or removed
    /// while the request waited).
    #[error("it is shutting down")]
    ShuttingDown,
    /// The activator's queue is full.
    #[error("it is overloaded: {depth} requests already wait for capacity")]
    QueueFull {
        /// The queue's bound.
        depth: usize,
    },
    /// No capacity appeared within `queue_timeout`.
    #[error("it had no capacity within {waited:?}")]
    QueueTimeout {
        /// How long the request waited.
        waited: Duration,
    },
    /// Every instance allowed was busy for the whole `queue_timeout`.
    #[error("it is at its maximum of {max} instances and none had room within {waited:?}")]
    AtMaxScale {
        /// The app's `max_scale`.
        max: u32,
        /// How long the request waited.
        waited: Duration,
    },
    /// The request's body is larger than the app's `limits.request_body`.
    #[error("its body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// Instances failed to start while the request waited.
    #[error("it could not start an instance: {reason}")]
    StartFailed {
        /// The last start failure.
        reason: String,
    },
}

/// Why [`Revision::dispatch`] has no response from the app.
#[derive(Debug)]
pub enum Undispatched {
    /// The revision is shutting down (replaced or removed): the request,
    /// untouched, for the app's current revision.
    Retired(Box<Request<ReqBody>>),
    /// Refused for another reason, or the instance failed.
    Failed(DispatchError),
}

/// Why a request got no response from the app: what the front door turns
/// into a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// The request was not admitted.
    #[error(transparent)]
    Admit(#[from] AdmitError),
    /// The instance failed to answer.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

pub(crate) struct Slot {
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
    /// Its instances' stops under way (evicted, exited, scaled down):
    /// [`Revision::shutdown`] waits for them.
    stops: Tasks,
    /// The queued request that asked for the next instance start (its
    /// access log line says so; when traced, the cold start's span hangs
    /// under its queue span).
    trigger: Mutex<Option<Trigger>>,
}

/// A queued request's claim to the next cold start (see
/// [`Revision::dispatch`]).
struct Trigger {
    /// Its `activator.queue` span.
    trace: Trace,
    /// Set when an instance start took the claim.
    started: Arc<AtomicBool>,
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
    /// Revision `id` of `app`, served by `backend`; `pinned` is the image
    /// digest it runs, if any. Call [`Revision::activate`] to start its
    /// initial instances and its reconcile loop.
    pub fn new(
        id: String,
        app: &str,
        pinned: Option<String>,
        spec: AppSpec,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let mut kpa = spec.scaling.autoscale.clone();
        let concurrency = *kpa.concurrency.get_or_insert(
            backend
                .instance_capacity()
                .unwrap_or_else(|| default_concurrency(backend.kind())),
        );
        let queue_depth = spec.scaling.queue_depth.unwrap_or_else(|| {
            (10 * concurrency.max(1) as usize * kpa.max_scale.max(1) as usize).clamp(100, 10_000)
        });
        Arc::new(Self {
            id,
            app: app.into(),
            pinned,
            concurrency,
            queue_depth,
            queue_timeout: spec.scaling.queue_timeout,
            max_scale: kpa.max_scale,
            grace: spec.container.shutdown_grace,
            tick: kpa.tick,
            pool: Mutex::new(Pool::default()),
            scaler: Mutex::new(Kpa::new(kpa, Instant::now().into_std())),
            changed: Notify::new(),
            poke: Notify::new(),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            next_instance: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            stops: Tasks::default(),
            trigger: Mutex::new(None),
            spec,
            backend,
            metrics,
        })
    }

    /// For an image, the `registry/repo@sha256:…` this revision runs.
    pub fn pinned(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    /// The revision id (`<app>-<n>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The app this revision belongs to.
    pub fn app(&self) -> &str {
        &self.app
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
        let initial = self.lock_scaler().desired();
        let starts: Vec<_> = (0..initial).map(|_| self.clone().start_one()).collect();
        for r in futures::future::join_all(starts).await {
            r?;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move { reconcile::run(me).await });
        Ok(())
    }

    /// Stops the reconcile loop and every instance (in-flight requests on
    /// them finish first, up to the grace), and waits for the stops already
    /// under way in the background (an evicted or scaled-down instance).
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        self.poke.notify_one();
        let slots: Vec<_> = std::mem::take(&mut self.lock_pool().ready);
        self.changed.notify_waiters();
        let stops = slots.into_iter().map(|s| self.drain_and_stop(s));
        futures::future::join_all(stops).await;
        self.stops.wait().await;
    }

    /// Stops `instance` in the background, a task this revision owns
    /// ([`Revision::shutdown`] waits for it).
    fn stop_in_background(&self, instance: Arc<dyn Instance>) {
        let grace = self.grace;
        self.stops.spawn(async move { instance.stop(grace).await });
    }

    /// Waits (up to the grace, at least a second) for the requests in
    /// `slot` to finish, then stops its instance.
    async fn drain_and_stop(&self, slot: Arc<Slot>) {
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
        let victims = self.take_idle(usize::MAX);
        // Each stop runs in its own task (owned: `shutdown` waits for it),
        // so a caller that gives up midway cannot leave an instance half
        // stopped.
        let grace = self.grace;
        let stops: Vec<_> = victims
            .into_iter()
            .map(|s| {
                self.stops
                    .spawn(async move { s.instance.stop(grace).await })
            })
            .collect();
        for stop in stops {
            let _ = stop.await;
        }
    }

    /// Removes up to `n` idle instances from the pool and returns them.
    fn take_idle(&self, mut n: usize) -> Vec<Arc<Slot>> {
        let mut pool = self.lock_pool();
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
    }

    /// A snapshot for the API and metrics.
    pub fn status(&self) -> RevisionStatus {
        let pool = self.lock_pool();
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
            recent_cold_starts: pool.history.iter().cloned().collect(),
            last_error: pool.last_error.clone(),
            stock: self.backend.stock().map(Box::new),
            outbound: self.backend.outbound().map(Box::new),
        }
    }

    /// Admits a request to an instance (waiting for capacity if needed) and
    /// serves it. The admission is held until the response body is done.
    /// A request this revision refuses because it is shutting down comes
    /// back untouched ([`Undispatched::Retired`]): a redeploy replaced the
    /// revision while the request was being routed, and the app's current
    /// revision can take it.
    ///
    /// # Errors
    /// [`Undispatched`]: the request back, refused, or the instance failed.
    pub async fn dispatch(
        self: &Arc<Self>,
        req: Request<ReqBody>,
        info: &RequestInfo,
    ) -> Result<Response<Body>, Undispatched> {
        self.check_declared_body(&req)
            .map_err(|e| Undispatched::Failed(e.into()))?;
        let (guard, started, queued) = match self.admit(info).await {
            Ok(admitted) => admitted,
            Err(AdmitError::ShuttingDown) => return Err(Undispatched::Retired(Box::new(req))),
            Err(e) => return Err(Undispatched::Failed(e.into())),
        };
        let mut req = self.limit_body(req);
        // The guest's handler or the container proxy, as a span; the
        // instance sees it as the caller in `traceparent`.
        let handler = self.handler_span(info, guard.slot.id, started);
        handler.inject(req.headers_mut());
        let traced;
        let info = if handler.is_sampled() {
            traced = RequestInfo {
                trace: handler.clone(),
                ..info.clone()
            };
            &traced
        } else {
            info
        };
        match guard.slot.instance.serve(req, info).await {
            // Hold the admission (and the span) until the body is done
            // streaming.
            Ok(resp) => {
                handler.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(resp.status().as_u16()),
                ));
                let end = EndOnDrop(handler);
                let mut resp = resp.map(|body| GuardBody::wrap(body, (guard, end)));
                resp.extensions_mut().insert(Admitted {
                    queued,
                    cold_start: started,
                });
                Ok(resp)
            }
            Err(e) => {
                handler.set_error(e.to_string());
                handler.end();
                if e.instance_broken() || !guard.slot.instance.is_alive() {
                    self.evict(&guard.slot, &e.to_string());
                }
                Err(Undispatched::Failed(e.into()))
            }
        }
    }

    /// The span of a request on instance `instance`: `wasm.handle` or
    /// `container.proxy`, naming the app, revision, kind, instance and
    /// whether this request's wait started the instance.
    fn handler_span(&self, info: &RequestInfo, instance: u64, started: bool) -> Trace {
        if !info.trace.is_sampled() {
            return info.trace.clone();
        }
        if started {
            info.trace
                .set_attribute(KeyValue::new("berth.cold_start", true));
        }
        let (name, kind) = match self.kind() {
            Kind::Wasm => ("wasm.handle", SpanKind::Internal),
            Kind::Container => ("container.proxy", SpanKind::Client),
        };
        // Room for the attributes set later too (the response's status;
        // for Wasm how the instance was had), so the SDK's vector never grows.
        let mut attrs = Vec::with_capacity(8);
        attrs.extend([
            KeyValue::new("berth.app", self.app.clone()),
            KeyValue::new("berth.revision", self.id.clone()),
            KeyValue::new("berth.kind", self.kind().as_str()),
            KeyValue::new("berth.instance", instance as i64),
            KeyValue::new("berth.cold_start", started),
        ]);
        info.trace.child(name, kind, attrs)
    }

    /// Refuses a body declared larger than `limits.request_body` at once.
    fn check_declared_body(&self, req: &Request<ReqBody>) -> Result<(), AdmitError> {
        let limit = self.spec.limits.request_body;
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(AdmitError::BodyTooLarge { limit });
        }
        Ok(())
    }

    /// Cuts a body that streams past `limits.request_body` (the instance
    /// then sees the body end with an error).
    fn limit_body(&self, req: Request<ReqBody>) -> Request<ReqBody> {
        let limit = self.spec.limits.request_body;
        req.map(|body| {
            http_body_util::BodyExt::boxed_unsync(LimitedBody {
                body,
                left: limit,
                limit,
            })
        })
    }

    /// Waits for room in an instance: at once when there is some, else in
    /// the activator's bounded queue.
    /// Also says whether an instance start took this request's claim (the
    /// request "started" it), and how long it waited.
    async fn admit(
        self: &Arc<Self>,
        info: &RequestInfo,
    ) -> Result<(AdmitGuard, bool, Duration), AdmitError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(AdmitError::ShuttingDown);
        }
        if let Some(guard) = self.try_admit() {
            return Ok((guard, false, Duration::ZERO));
        }
        // Queue only when needed; the reservation is taken before the
        // bound is checked, so concurrent arrivals cannot overshoot it.
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.queue_depth {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(AdmitError::QueueFull {
                depth: self.queue_depth,
            });
        }
        let queue = info.trace.child(
            "activator.queue",
            SpanKind::Internal,
            vec![
                KeyValue::new("berth.app", self.app.clone()),
                KeyValue::new("berth.revision", self.id.clone()),
            ],
        );
        let claim = self.claim(&queue);
        let entered = Instant::now();
        let result = self.wait_in_queue().await;
        let waited = entered.elapsed();
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let started = self.unclaim(&claim);
        if queue.is_sampled() {
            queue.set_attribute(KeyValue::new("berth.cold_start", started));
            if let Err(e) = &result {
                queue.set_error(e.to_string());
            }
            queue.end();
        }
        result.map(|guard| (guard, started, waited))
    }

    /// Claims the next instance start for the request queued in `queue`,
    /// unless another request holds the claim.
    fn claim(&self, queue: &Trace) -> Arc<AtomicBool> {
        let started = Arc::new(AtomicBool::new(false));
        let mut trigger = self.trigger.lock().unwrap_or_else(|e| e.into_inner());
        if trigger.is_none() {
            *trigger = Some(Trigger {
                trace: queue.clone(),
                started: started.clone(),
            });
        }
        started
    }

    /// Drops this request's claim if no start took it; whether one did.
    fn unclaim(&self, started: &Arc<AtomicBool>) -> bool {
        let mut trigger = self.trigger.lock().unwrap_or_else(|e| e.into_inner());
        if trigger
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(&t.started, started))
        {
            *trigger = None;
        }
        started.load(Ordering::Acquire)
    }

    async fn wait_in_queue(self: &Arc<Self>) -> Result<AdmitGuard, AdmitError> {
        let entered = Instant::now();
        let deadline = entered + self.queue_timeout;
        let failures_at_entry = self.lock_pool().failures;
        // Ask for capacity now, not at the next tick.
        self.poke.notify_one();
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stopped.load(Ordering::Acquire) {
                return Err(AdmitError::ShuttingDown);
            }
            if let Some(guard) = self.try_admit() {
                return Ok(guard);
            }
            {
                let pool = self.lock_pool();
                if pool.failures > failures_at_entry && pool.ready.is_empty() && pool.starting == 0
                {
                    return Err(AdmitError::StartFailed {
                        reason: pool.last_error.clone().unwrap_or_default(),
                    });
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let waited = entered.elapsed();
                let at_max = self.lock_pool().ready.len() as u32 >= self.max_scale;
                return Err(if at_max {
                    AdmitError::AtMaxScale {
                        max: self.max_scale,
                        waited,
                    }
                } else {
                    AdmitError::QueueTimeout { waited }
                });
            }
        }
    }

    /// The breaker: admits to the least busy ready instance with room.
    fn try_admit(self: &Arc<Self>) -> Option<AdmitGuard> {
        let pool = self.lock_pool();
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

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_scaler(&self) -> std::sync::MutexGuard<'_, Kpa> {
        self.scaler.lock().unwrap_or_else(|e| e.into_inner())
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
        // One request's worth of room: one waiter can use it. (Tokio passes
        // the wake-up on if that waiter has gone.)
        self.revision.changed.notify_one();
    }
}

/// A request body that fails with [`BodyTooLarge`] past `limit` bytes: the
/// instance sees the body break, never a silently shortened one.
struct LimitedBody {
    body: ReqBody,
    left: u64,
    limit: u64,
}

impl hyper::body::Body for LimitedBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, BoxError>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            if n > self.left {
                self.left = 0;
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge(self.limit)))));
            }
            self.left -= n;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;
