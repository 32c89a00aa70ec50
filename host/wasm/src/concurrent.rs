//! `reuse = "concurrent"`: several requests at once in one instance.
//!
//! Each live instance is a *worker*: a task of its own that owns the
//! [`Store`] and runs one [`Store::run_concurrent`] event loop for its whole
//! life. Requests come in over a bounded channel; each becomes a host →
//! guest call of the component's `handle` (prepared with
//! [`Prepared`], the call wasmtime's own `ProxyHandler` makes), running
//! beside the others in that loop, and its response head goes back to the
//! request's task over a oneshot. An instance takes at most
//! `max_concurrent_per_instance` requests at once and
//! `max_requests_per_instance` in all, and ends after `idle_timeout` without
//! one.
//!
//! Failures, per request and per instance:
//! - A request whose deadline passes before its head is answered gets 504
//!   at once (a timer outside the event loop, so a guest spinning in
//!   another request cannot delay it); one whose body still streams at its
//!   deadline has the body cut. Either way the instance takes no more
//!   requests: it finishes the others in flight and ends, dropping what
//!   the late request still runs.
//! - A trap, a memory-limit hit or an epoch deadline overrun (a guest
//!   spinning past *its own* request's deadline, see [`crate::tasks`])
//!   poisons the store: the request that caused it gets its error (500 or
//!   504), every other request in flight a 503 that names the instance's
//!   retirement and why, and the instance is dropped.
//!
//! A request is *settled* when its task group finished (handler, body and
//! trailers, every subtask), when its deadline passed, or when its instance
//! ended: then its CPU (time in its task group) and the instance's memory
//! for the time it had work are reported, and its pool slot comes back.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use http::Response;
use http_body_util::BodyExt as _;
use wasmtime::{AsContextMut as _, Store};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{Prepared, Proxy};
use wasmtime_wasi_http::p3::bindings::Service;

use crate::app::{ColdStart, GuestBody, WasmApp};
use crate::guest::{GuestError, GuestState, classify};
use crate::tasks::{Entry, Tasks};

/// A request on its way to a worker.
pub(crate) struct Job {
    pub(crate) request: http::Request<wasmtime_wasi_http::WasiBody>,
    pub(crate) entry: Entry,
}

/// One live instance, as the app's requests see it.
pub(crate) struct Worker {
    tx: tokio::sync::mpsc::Sender<Job>,
    /// Requests handed to it and not settled.
    load: AtomicU32,
    /// Requests handed to it in all.
    taken: AtomicU32,
    /// It takes no more requests.
    closed: AtomicBool,
    /// Once its instance is ready: when, how long instantiation took, and
    /// whether the instance came from the stock.
    ready: OnceLock<(Instant, Duration, bool)>,
    /// Wakes its task to look at `closed` again.
    wake: tokio::sync::Notify,
}

/// An app's live concurrently used instances.
#[derive(Default)]
pub(crate) struct Workers {
    list: Mutex<Vec<Arc<Worker>>>,
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Worker>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live instances.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Requests in the live instances.
    pub(crate) fn load(&self) -> u32 {
        self.lock()
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .sum()
    }

    /// The fullest live instance that still has room for a request
    /// (packing requests into few instances), with the request counted in;
    /// else the one `make` returns, listed under the same lock, so that a
    /// burst on no live instance shares the first one made instead of
    /// starting one each. `true` when it is new.
    fn pick_or_add(
        &self,
        at_once: u32,
        in_all: u32,
        make: impl FnOnce() -> Arc<Worker>,
    ) -> (Arc<Worker>, bool) {
        let mut list = self.lock();
        let found = list
            .iter()
            .filter(|w| {
                !w.closed.load(Ordering::Acquire)
                    && w.load.load(Ordering::Acquire) < at_once
                    && w.taken.load(Ordering::Acquire) < in_all
            })
            .max_by_key(|w| w.load.load(Ordering::Acquire))
            .cloned();
        let Some(w) = found else {
            let w = make();
            list.push(w.clone());
            return (w, true);
        };
        w.load.fetch_add(1, Ordering::AcqRel);
        w.taken.fetch_add(1, Ordering::AcqRel);
        if w.taken.load(Ordering::Acquire) >= in_all {
            w.closed.store(true, Ordering::Release);
        }
        (w, false)
    }

    /// Ends the instances without a request now (the app went to zero):
    /// they take no more and their tasks end.
    pub(crate) fn close_idle(&self) {
        let mut list = self.lock();
        list.retain(|w| {
            if w.load.load(Ordering::Acquire) > 0 {
                return true;
            }
            w.closed.store(true, Ordering::Release);
            w.wake.notify_one();
            false
        });
    }

    /// Takes `worker` out of the list (it takes no more requests), unless
    /// `only_if_unloaded` and a request was handed to it meanwhile.
    fn retire(&self, worker: &Arc<Worker>, only_if_unloaded: bool) -> bool {
        let mut list = self.lock();
        if only_if_unloaded && worker.load.load(Ordering::Acquire) > 0 {
            return false;
        }
        worker.closed.store(true, Ordering::Release);
        list.retain(|w| !Arc::ptr_eq(w, worker));
        true
    }
}

/// How a worker's event loop ended.
enum Ended {
    /// No request left and none to take (closed or idle).
    Done,
    /// The store failed; the request that made it fail (its number), if
    /// known.
    Failed(Option<u64>, GuestError),
}

/// A new instance's worker, already counting one request, and the
/// receiving end of its channel (requests that come while it starts wait
/// there); its task instantiates (or takes one from the stock) and runs
/// them.
fn new_worker(at_once: u32, in_all: u32) -> (Arc<Worker>, tokio::sync::mpsc::Receiver<Job>) {
    let (tx, rx) = tokio::sync::mpsc::channel(at_once as usize);
    let worker = Arc::new(Worker {
        tx,
        load: AtomicU32::new(1),
        taken: AtomicU32::new(1),
        closed: AtomicBool::new(in_all <= 1),
        ready: OnceLock::new(),
        wake: tokio::sync::Notify::new(),
    });
    (worker, rx)
}

impl WasmApp {
    /// Runs one request on a concurrently used instance: a live one with
    /// room, or a new one (from the stock, else instantiated here).
    pub(crate) async fn handle_concurrent(
        self: &Arc<Self>,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        entry: Entry,
        reply: tokio::sync::oneshot::Receiver<Result<Response<GuestBody>, GuestError>>,
        accepted: Instant,
    ) -> Result<(Response<GuestBody>, ColdStart), GuestError> {
        let deadline = entry.deadline;
        let begun = entry.begun.clone();
        let at_once = self.reuse.max_concurrent_per_instance;
        let in_all = self.reuse.max_requests_per_instance;
        let mut new_rx = None;
        let (worker, created) = self.workers.pick_or_add(at_once, in_all, || {
            let (worker, rx) = new_worker(at_once, in_all);
            new_rx = Some(rx);
            worker
        });
        if let Some(rx) = new_rx {
            tokio::spawn(self.clone().start_and_run(worker.clone(), rx));
        }
        let sent = Instant::now();
        if let Err(e) = worker.tx.try_send(Job { request, entry }) {
            // Only when the instance ended between the pick and the send.
            let mut job = match e {
                tokio::sync::mpsc::error::TrySendError::Full(j)
                | tokio::sync::mpsc::error::TrySendError::Closed(j) => j,
            };
            worker.load.fetch_sub(1, Ordering::AcqRel);
            job.entry.answer(Err(GuestError::Retired(
                "it ended before it took the request".into(),
            )));
        }
        // The worker answers by the deadline; the margin only guards
        // against a worker that cannot (a host call that never yields).
        let last = deadline + Duration::from_secs(1);
        let head = match tokio::time::timeout_at(last.into(), reply).await {
            Ok(Ok(head)) => head?,
            Ok(Err(_)) => {
                return Err(GuestError::Retired(
                    "it ended without answering the request".into(),
                ));
            }
            Err(_) => return Err(GuestError::Deadline(self.limits.timeout)),
        };
        let (_, instantiate, stock_hit) =
            worker
                .ready
                .get()
                .copied()
                .unwrap_or((sent, Duration::ZERO, false));
        // Under concurrent reuse the host-side start ends when the worker
        // calls the handler for this request.
        let begun = begun.get().copied().unwrap_or(sent);
        let cold = ColdStart {
            host: begun.saturating_duration_since(accepted),
            instantiate: if created { instantiate } else { Duration::ZERO },
            stock_hit: created && stock_hit,
            reused: !created,
        };
        Ok((head, cold))
    }

    async fn start_and_run(
        self: Arc<Self>,
        worker: Arc<Worker>,
        mut rx: tokio::sync::mpsc::Receiver<Job>,
    ) {
        let t = Instant::now();
        match self.instance_for_worker().await {
            Ok((store, service, tasks, stock_hit)) => {
                let _ = worker.ready.set((Instant::now(), t.elapsed(), stock_hit));
                self.run_worker(store, service, worker, rx, tasks).await;
            }
            Err(err) => {
                // Every request waiting for it learns why.
                self.workers.retire(&worker, false);
                rx.close();
                while let Ok(mut job) = rx.try_recv() {
                    self.log_failure(&job.entry.id, &err);
                    job.entry.answer(Err(err.clone()));
                }
            }
        }
    }

    /// A store and instance from the stock, or made now, set up to serve
    /// several requests at once (and whether it came from the stock).
    async fn instance_for_worker(
        &self,
    ) -> Result<(Store<GuestState>, Service, Arc<Tasks>, bool), GuestError> {
        let far = far_off_std();
        let stocked = self.stock.take();
        let stock_hit = stocked.is_some();
        let (mut store, proxy, id) = match stocked {
            Some(s) => s.into_parts(),
            None => {
                let id = crate::logs::RequestIdCell::default();
                let mut store = self.new_store(id.clone(), far);
                let proxy = self
                    .compiled
                    .pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(|e| classify(e, &self.limits, self.max_instances))?;
                (store, proxy, id)
            }
        };
        let Proxy::P3(service) = proxy else {
            return Err(GuestError::Internal(
                "reuse = \"concurrent\" needs a wasi:http@0.3 component".into(),
            ));
        };
        let tasks = Tasks::new(id);
        store.task_group_hook(tasks.hook());
        store.data_mut().deadline = far;
        store.data_mut().tasks = Some(tasks.clone());
        store.data_mut().hooks.serve_tasks(tasks.clone());
        store.set_epoch_deadline(1);
        Ok((store, service, tasks, stock_hit))
    }

    /// A worker's life: its event loop, then its retirement.
    async fn run_worker(
        self: Arc<Self>,
        mut store: Store<GuestState>,
        service: Service,
        worker: Arc<Worker>,
        mut rx: tokio::sync::mpsc::Receiver<Job>,
        tasks: Arc<Tasks>,
    ) {
        let proxy = Proxy::P3(service);
        let mut charged_until = Instant::now();
        let app: &WasmApp = &self;
        let ended = {
            let proxy = &proxy;
            let tasks_in = &tasks;
            let worker_in = &worker;
            let rx = &mut rx;
            let events = store.run_concurrent(async move |accessor| {
                let mut calls = FuturesUnordered::new();
                let func = match proxy {
                    Proxy::P3(s) => *s.wasi_http_handler().func_handle().func(),
                    Proxy::P2(p) => *p.wasi_http_incoming_handler().func_handle().func(),
                };
                std::future::poll_fn(|cx| {
                    loop {
                        if let Poll::Ready(Some((n, head))) = calls.poll_next_unpin(cx) {
                            if let Some(ended) = app.on_head(tasks_in, n, head) {
                                return Poll::Ready(ended);
                            }
                            continue;
                        }
                        let memory = accessor.with(|mut s| s.get().limiter.in_use);
                        tasks_in.memory.store(memory, Ordering::Relaxed);
                        if accessor.poll_ready_for_concurrent_call(func, cx).is_ready()
                            && let Poll::Ready(Some(job)) = rx.poll_recv(cx)
                        {
                            let Job { request, entry } = job;
                            let _ = entry.begun.set(Instant::now());
                            let (tx, head) = futures::channel::oneshot::channel();
                            let prepared = accessor.with(|mut s| {
                                Prepared::new(s.as_context_mut(), proxy, request, view, tx)
                            });
                            let group = tasks_in.lock().last_started.take();
                            match (prepared, group) {
                                (Ok(prepared), Some(group)) => {
                                    let n = tasks_in.lock().insert(group, entry);
                                    calls.push(async move {
                                        let run = prepared
                                            .run(accessor, std::future::pending::<()>())
                                            .await;
                                        let head = match (run, head.await) {
                                            (Err(e), _) => Err(e),
                                            (Ok(_), Ok(head)) => head,
                                            (Ok(_), Err(_)) => Err(wasmtime::format_err!(
                                                "the handler ended without a response"
                                            )),
                                        };
                                        (n, head.map_err(|e| app.head_error(e)))
                                    });
                                }
                                (Err(e), _) => {
                                    let err = GuestError::Internal(format!("{e:#}"));
                                    app.refuse(worker_in, entry, err, true);
                                }
                                (Ok(_), None) => {
                                    let err = GuestError::Internal(
                                        "the call's task group is unknown".into(),
                                    );
                                    app.refuse(worker_in, entry, err, false);
                                }
                            }
                            continue;
                        }
                        return Poll::Pending;
                    }
                })
                .await
            });
            app.supervise(events, &tasks, &worker, &mut charged_until)
                .await
        };
        self.retire_worker(store, &worker, rx, &tasks, ended, &mut charged_until);
    }

    /// Drives a worker's event loop (`events`) and looks after it between
    /// events: finished requests settled, late ones answered 504, the worker
    /// ended when closed or idle; a store failure blames the request that
    /// ran last.
    async fn supervise(
        &self,
        events: impl Future<Output = wasmtime::Result<Ended>>,
        tasks: &Tasks,
        worker: &Arc<Worker>,
        charged_until: &mut Instant,
    ) -> Ended {
        let mut events = pin!(events);
        let mut timer = pin!(tokio::time::sleep_until(far_off()));
        let mut idle_since = None::<Instant>;
        let mut woken = Box::pin(worker.wake.notified());
        std::future::poll_fn(|cx| {
            loop {
                let polled = events.as_mut().poll(cx);
                self.settle_finished(tasks, worker, charged_until);
                match polled {
                    Poll::Ready(Ok(ended)) => return Poll::Ready(ended),
                    Poll::Ready(Err(e)) => {
                        let culprit = tasks.lock().last_number();
                        let err = classify(e, &self.limits, self.max_instances);
                        return Poll::Ready(Ended::Failed(culprit, err));
                    }
                    Poll::Pending => {}
                }
                let next = match self.housekeep(tasks, worker, &mut idle_since, charged_until) {
                    Ok(next) => next,
                    Err(ended) => return Poll::Ready(ended),
                };
                timer.as_mut().reset(next.into());
                if woken.as_mut().poll(cx).is_ready() {
                    woken = Box::pin(worker.wake.notified());
                    continue;
                }
                if timer.as_mut().poll(cx).is_ready() {
                    continue;
                }
                return Poll::Pending;
            }
        })
        .await
    }

    /// A request the instance could not start: answered with `err` (and
    /// logged when `log`), no longer counted on the worker.
    fn refuse(&self, worker: &Worker, mut entry: Entry, err: GuestError, log: bool) {
        if log {
            self.log_failure(&entry.id, &err);
        }
        entry.answer(Err(err));
        worker.load.fetch_sub(1, Ordering::AcqRel);
    }

    /// A call's response head is back: handed to its request, bounded by
    /// its deadline; a failure that retires the instance ends the loop.
    fn on_head(
        &self,
        tasks: &Tasks,
        n: u64,
        head: Result<Response<GuestBody>, GuestError>,
    ) -> Option<Ended> {
        match head {
            Ok(resp) => {
                if let Some(e) = tasks.lock().entries.get_mut(&n) {
                    let cut = e.deadline;
                    let timeout = self.limits.timeout;
                    e.answer(Ok(resp.map(|b| deadlined(b, cut, timeout))));
                }
            }
            Err(err) if retires(&err) => return Some(Ended::Failed(Some(n), err)),
            Err(err) => {
                if let Some(e) = tasks.lock().entries.get_mut(&n) {
                    self.log_failure(&e.id, &err);
                    e.answer(Err(err));
                }
            }
        }
        None
    }

    /// Between events: late requests answered 504, the worker ended once
    /// closed or idle past its timeout (`Err`), else the next instant it
    /// must look again (a deadline, the idle timeout).
    fn housekeep(
        &self,
        tasks: &Tasks,
        worker: &Arc<Worker>,
        idle_since: &mut Option<Instant>,
        charged_until: &mut Instant,
    ) -> Result<Instant, Ended> {
        let now = Instant::now();
        if self.expire(tasks, worker, now, charged_until) {
            self.workers.retire(worker, false);
        }
        let load = worker.load.load(Ordering::Acquire);
        if load == 0 && worker.closed.load(Ordering::Acquire) {
            self.workers.retire(worker, false);
            return Err(Ended::Done);
        }
        *idle_since = if load == 0 {
            Some(idle_since.unwrap_or(now))
        } else {
            None
        };
        let idle_end = idle_since.map(|t| t + self.reuse.idle_timeout);
        if idle_end.is_some_and(|t| t <= now) && self.workers.retire(worker, true) {
            return Err(Ended::Done);
        }
        Ok(tasks
            .lock()
            .entries
            .values()
            .filter(|e| !e.expired)
            .map(|e| e.deadline)
            .chain(idle_end)
            .min()
            .unwrap_or_else(far_off_std))
    }

    /// The worker's loop ended: it takes no more requests; every request
    /// still on it is answered (the one that failed it with its error, the
    /// others with a 503 naming that one), then the store goes.
    fn retire_worker(
        &self,
        store: Store<GuestState>,
        worker: &Arc<Worker>,
        mut rx: tokio::sync::mpsc::Receiver<Job>,
        tasks: &Tasks,
        ended: Ended,
        charged_until: &mut Instant,
    ) {
        // Ended: no request goes to it any more.
        self.workers.retire(worker, false);
        rx.close();
        let why = match &ended {
            Ended::Done => None,
            Ended::Failed(culprit, err) => {
                let inner = tasks.lock();
                let who = culprit.and_then(|n| inner.entries.get(&n)).map_or_else(
                    || "a request".to_string(),
                    |e| format!("request {}", crate::logs::request_id_of(&e.id)),
                );
                Some(format!("{who} on it failed: {err}"))
            }
        };
        let (culprit, err) = match ended {
            Ended::Done => (None, None),
            Ended::Failed(c, e) => (c, Some(e)),
        };
        let entries: Vec<(u64, Entry)> = tasks.lock().entries.drain().collect();
        let mut err = err;
        for (n, mut entry) in entries {
            if !entry.expired {
                let failure =
                    if Some(n) == culprit { err.take() } else { None }.unwrap_or_else(|| {
                        GuestError::Retired(why.clone().unwrap_or_else(|| "it ended".into()))
                    });
                if entry.reply.is_some() {
                    self.log_failure(&entry.id, &failure);
                }
                entry.answer(Err(failure));
                worker.load.fetch_sub(1, Ordering::AcqRel);
            }
            self.settle(tasks, entry, charged_until);
        }
        while let Ok(mut job) = rx.try_recv() {
            let failure = GuestError::Retired(format!(
                "it ended before it took the request{}",
                why.as_deref().map(|w| format!(": {w}")).unwrap_or_default()
            ));
            job.entry.answer(Err(failure));
        }
        // The store (and with it what the late requests still ran) goes
        // only now, after every request of it was answered.
        drop(store);
    }

    /// Answers 504 to the requests whose deadline passed; true if any did
    /// (the instance then takes no more).
    fn expire(
        &self,
        tasks: &Tasks,
        worker: &Worker,
        now: Instant,
        charged_until: &mut Instant,
    ) -> bool {
        let mut any = false;
        let mut inner = tasks.lock();
        let mut settled = Vec::new();
        for e in inner.entries.values_mut() {
            if !e.expired && e.deadline <= now {
                e.expired = true;
                any = true;
                let err = GuestError::Deadline(self.limits.timeout);
                if e.reply.is_some() {
                    self.log_failure(&e.id, &err);
                }
                e.answer(Err(err));
                worker.load.fetch_sub(1, Ordering::AcqRel);
                settled.push((e.id.clone(), e.cpu, e.started));
            }
        }
        drop(inner);
        for (_, cpu, started) in settled {
            self.charge(tasks, cpu, started, charged_until);
        }
        any
    }

    /// Settles the requests whose task group finished.
    fn settle_finished(&self, tasks: &Tasks, worker: &Worker, charged_until: &mut Instant) {
        // A finished request is settled once its head went back (its call
        // returned; that may come just after its group finished).
        let finished: Vec<Entry> = {
            let mut inner = tasks.lock();
            let done: Vec<u64> = inner
                .entries
                .iter()
                .filter(|(_, e)| e.finished && (e.reply.is_none() || e.expired))
                .map(|(n, _)| *n)
                .collect();
            done.iter()
                .filter_map(|n| inner.entries.remove(n))
                .collect()
        };
        for entry in finished {
            if !entry.expired {
                worker.load.fetch_sub(1, Ordering::AcqRel);
            }
            self.settle(tasks, entry, charged_until);
        }
    }

    fn settle(&self, tasks: &Tasks, entry: Entry, charged_until: &mut Instant) {
        if !entry.expired {
            self.charge(tasks, entry.cpu, entry.started, charged_until);
        }
    }

    /// Reports one request's CPU, and the instance's memory for the time
    /// since the later of its start and the last report (so memory × time
    /// is counted once however many requests shared the instance).
    fn charge(&self, tasks: &Tasks, cpu: Duration, started: Instant, charged_until: &mut Instant) {
        let now = Instant::now();
        let from = started.max(*charged_until);
        *charged_until = now;
        if let Some(metrics) = &self.metrics {
            let memory = tasks.memory() as f64;
            let secs = now.saturating_duration_since(from).as_secs_f64();
            metrics.record_usage(&self.name, cpu, memory * secs / 1e9);
        }
    }

    /// What a failed `handle` call means to its request.
    fn head_error(&self, e: wasmtime::Error) -> GuestError {
        if let Some(code) =
            e.downcast_ref::<wasmtime_wasi_http::p3::bindings::http::types::ErrorCode>()
        {
            return GuestError::ErrorCode(format!("{code:?}"));
        }
        classify(e, &self.limits, self.max_instances)
    }
}

/// Whether a request's failure ends its instance.
fn retires(err: &GuestError) -> bool {
    matches!(
        err,
        GuestError::Trap(_) | GuestError::MemoryLimit(_) | GuestError::Deadline(_)
    )
}

fn view(s: &mut GuestState) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
    s.http()
}

fn far_off_std() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

fn far_off() -> tokio::time::Instant {
    far_off_std().into()
}

/// A response body that ends with an error once `deadline` passes.
fn deadlined(body: GuestBody, deadline: Instant, timeout: Duration) -> GuestBody {
    Deadlined {
        body,
        timer: Box::pin(tokio::time::sleep_until(deadline.into())),
        timeout,
        cut: false,
    }
    .boxed_unsync()
}

struct Deadlined {
    body: GuestBody,
    timer: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    cut: bool,
}

impl hyper::body::Body for Deadlined {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.cut {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.cut = true;
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                format!(
                    "berth: the response body did not end within the timeout of {:?}",
                    self.timeout
                ),
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
