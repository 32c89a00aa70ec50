//! [`WasmApp`]: one app's resident compiled component, and the path of a
//! request through it: a fresh [`Store`] and instance, the guest's handler,
//! the response head as soon as the guest sets it.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::handler::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode as P2ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

mod driven;

pub use driven::DrivenBody;
use driven::{Busy, finish_detached};

use super::cache::LoadedFrom;
use super::guest::{GuestError, GuestState, Limiter, classify};
use super::outbound::OutboundPolicy;
use super::resident::{Compiled, Resident};
use super::reuse::{Idle, IdleInstance, InstanceReuse, ReuseMode};
use super::stock::{Stock, Stocked, Stocker};
use crate::UsageMeter;
use crate::limits::Limits;
use crate::logs::AppLog;
use crate::logs::RequestIdCell;
use crate::request::RequestInfo;

/// How long the host spent before the guest's handler was entered.
#[derive(Debug, Clone, Copy)]
pub struct ColdStart {
    /// From acceptance to a ready instance (store, WASI context,
    /// instantiation); under concurrent reuse, to the call of the handler
    /// for this request on its instance's worker.
    pub host: Duration,
    /// Instantiation alone (taking it from the stock, on a hit).
    pub instantiate: Duration,
    /// Whether the instance came from the stock.
    pub stock_hit: bool,
    /// Whether the instance served requests before (serial reuse), or was
    /// live already (concurrent reuse).
    pub reused: bool,
}

/// One app's resident compiled component.
pub struct WasmApp {
    pub(super) name: String,
    /// Its key-value buckets (`None`: it declares none).
    pub(super) kv: Option<Arc<crate::keyvalue::AppKv>>,
    /// Where `wasi:config/store` reads its values.
    pub(super) config: Option<Arc<dyn crate::keyvalue::ConfigSource>>,
    /// The compiled component, shared by every app of the same sha256.
    pub(super) compiled: Arc<Compiled>,
    pub(super) resident: Arc<Resident>,
    pub(super) stock: Stock,
    pub(super) stocker: Arc<Stocker>,
    pub(super) env: Arc<[(String, String)]>,
    pub(super) limits: Limits,
    pub(super) outbound: OutboundPolicy,
    pub(super) log: Arc<AppLog>,
    pub(super) max_instances: u32,
    /// This app's share of the pool: a permit per request in a guest.
    pub(super) slots: Arc<tokio::sync::Semaphore>,
    pub(super) per_app: u32,
    pub(super) budget: Arc<super::guest::MemoryBudget>,
    pub(super) metrics: Option<Arc<dyn UsageMeter>>,
    /// Whether and how requests share instances.
    pub(super) reuse: InstanceReuse,
    /// Instances between two requests (serial reuse).
    pub(super) idle: Idle,
    /// Live instances (concurrent reuse).
    pub(super) workers: crate::concurrent::Workers,
}

impl fmt::Debug for WasmApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmApp")
            .field("name", &self.name)
            .field("sha256", &self.compiled.sha256)
            .finish_non_exhaustive()
    }
}

/// The body of a guest's response.
pub type GuestBody = HyperOutgoingBody;

impl WasmApp {
    /// Reports each request's guest CPU time and memory × time to `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<dyn UsageMeter>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts its outbound connections into `counters` (a revision's,
    /// kept across scale to zero), with a new, empty pool.
    #[must_use]
    pub fn with_outbound_counters(
        mut self,
        counters: Arc<crate::outbound::pool::OutboundCounters>,
    ) -> Self {
        let settings = self.outbound.pool().settings();
        self.outbound = self.outbound.clone().with_pool(settings, counters);
        self
    }

    /// Where its outbound connections are counted.
    pub fn outbound_counters(&self) -> &Arc<crate::outbound::pool::OutboundCounters> {
        self.outbound.pool().counters()
    }

    /// Serves `wasi:config/store` from `config` (read at each call).
    #[must_use]
    pub fn with_config(mut self, config: Arc<dyn crate::keyvalue::ConfigSource>) -> Self {
        self.config = Some(config);
        self
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// sha256 (hex) of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.compiled.sha256
    }

    /// The wasi:http world the component exports.
    pub fn world(&self) -> crate::World {
        self.compiled.world()
    }

    /// Whether the component was compiled or mapped from the cache when it
    /// was first loaded.
    pub fn loaded_from(&self) -> LoadedFrom {
        self.compiled.loaded_from
    }

    /// Whether `other` shares this app's compiled component.
    pub fn shares_code_with(&self, other: &WasmApp) -> bool {
        Arc::ptr_eq(&self.compiled, &other.compiled)
    }

    /// A new store for one request (whose id `id` gets, now or when the
    /// request takes a stocked instance) with the app's WASI context,
    /// limits and `deadline`.
    pub(super) fn new_store(&self, id: RequestIdCell, deadline: Instant) -> Store<GuestState> {
        let mut wasi = WasiCtx::builder();
        wasi.envs(&self.env)
            .stdout(self.log.sink_for(id.clone(), "stdout"))
            .stderr(self.log.sink_for(id, "stderr"));
        GuestState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: self.outbound.for_request(),
            limiter: Limiter {
                memory: self.limits.memory,
                in_use: 0,
                budget: self.budget.clone(),
            },
            deadline,
            tasks: None,
            kv: crate::keyvalue::GuestKv::new(self.kv.clone(), self.config.clone()),
        }
        .into_store(self.compiled.engine())
    }

    /// How the app's requests share instances.
    pub fn reuse(&self) -> InstanceReuse {
        self.reuse
    }

    /// Reusable instances idle now (serial reuse).
    pub fn idle_instances(&self) -> usize {
        self.idle.len()
    }

    /// Reusable instances alive now: serial reuse's idle ones and those
    /// serving a request, concurrent reuse's live ones; 0 without reuse.
    pub fn live_instances(&self) -> u32 {
        let n = match self.reuse.mode {
            ReuseMode::None => 0,
            ReuseMode::Serial => {
                let busy = (self.per_app as usize).saturating_sub(self.slots.available_permits());
                self.idle.len() + busy
            }
            ReuseMode::Concurrent => self.workers.len(),
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Requests in the live instances of a concurrently used app.
    pub fn concurrent_load(&self) -> u32 {
        self.workers.load()
    }

    /// The app's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs one request in a fresh instance, or (serial reuse, WASIp3) in
    /// an idle one that finished its last request cleanly. The response head
    /// is returned as soon as the guest sets it; the body streams while the
    /// guest runs, until the deadline.
    ///
    /// The guest runs on the caller's task — no task is spawned and no other
    /// thread is woken on the way to its handler: this future drives it until
    /// the response head is set, then the returned body drives it while the
    /// body streams ([`DrivenBody`]). A client gone before the head drops the
    /// guest; a guest still running when its body is done or dropped
    /// finishes on a task of its own, as it would have without a client.
    ///
    /// A `Server-Timing` header is added only when `info.timing` asks for it;
    /// the [`ColdStart`] figures are always in the response's extensions.
    ///
    /// # Errors
    /// [`GuestError`] when the guest produced no response.
    pub async fn handle<B>(
        self: &Arc<Self>,
        req: Request<B>,
        info: &RequestInfo,
    ) -> Result<Response<DrivenBody>, GuestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let deadline = info.accepted + self.limits.timeout;
        let slot = self.admit()?;
        if self.reuse.mode == ReuseMode::Concurrent {
            return self.handle_shared(req, info, slot, deadline).await;
        }
        let checkout = self.checkout(info, deadline);
        let ready = self.instantiate(checkout, info).await?;
        let cold = ready.cold;
        let (guest, head) = match ready.proxy {
            Proxy::P2(proxy) => self.run_p2(ready.store, proxy, req, info, slot, deadline)?,
            Proxy::P3(service) => {
                let keep =
                    (self.reuse.mode == ReuseMode::Serial).then_some((ready.id, ready.served));
                self.run_p3(ready.store, service, req, info, slot, deadline, keep)
            }
        };
        self.drive_to_head(guest, head, cold, info).await
    }

    /// Step 1, admission: the app's share of the pool (a permit per request
    /// in a guest), so no app takes every slot.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, GuestError> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            GuestError::Overloaded(format!(
                "app `{}` already runs {} requests, its share of the Wasm instance pool",
                self.name, self.per_app
            ))
        })
    }

    /// Step 2, checkout: an idle instance (serial reuse), else one from the
    /// stock, else a fresh store to instantiate in; made this request's
    /// (its log tag, its deadline).
    fn checkout(&self, info: &RequestInfo, deadline: Instant) -> Checkout {
        let taken = Instant::now();
        let idle = match self.reuse.mode {
            ReuseMode::Serial => self.idle.take(self.reuse.idle_timeout),
            ReuseMode::None | ReuseMode::Concurrent => None,
        };
        let stocked = if idle.is_none() {
            self.stock.take()
        } else {
            None
        };
        let (mut store, ready, id, served) = match (idle, stocked) {
            (Some(i), _) => {
                // Served requests before, one at a time, and finished them
                // cleanly: now this request's.
                let IdleInstance {
                    store,
                    service,
                    id,
                    served,
                    ..
                } = i;
                (store, Some(Proxy::P3(service)), id, served)
            }
            (None, Some(s)) => {
                // Made ahead, touched by no request: now this request's.
                let Stocked {
                    store, proxy, id, ..
                } = s;
                (store, Some(proxy), id, 0)
            }
            (None, None) => {
                let id = RequestIdCell::default();
                id.set(info.log_tag.clone());
                let store = self.new_store(id.clone(), deadline);
                (store, None, id, 0)
            }
        };
        if ready.is_some() {
            id.set(info.log_tag.clone());
            store.data_mut().deadline = deadline;
            store.set_epoch_deadline(1);
        }
        let took = taken.elapsed();
        store.data_mut().hooks.set_trace(info.trace.clone());
        Checkout {
            store,
            ready,
            id,
            served,
            took,
        }
    }

    /// Step 3, instantiation (unless the checkout handed over an instance):
    /// the instance ready for the handler, and the request's [`ColdStart`].
    async fn instantiate(
        &self,
        checkout: Checkout,
        info: &RequestInfo,
    ) -> Result<Ready, GuestError> {
        let Checkout {
            mut store,
            ready,
            id,
            served,
            took,
        } = checkout;
        let reused = served > 0;
        let stock_hit = ready.is_some() && !reused;
        let (proxy, instantiate) = match ready {
            Some(proxy) => (proxy, took),
            None => {
                let t = Instant::now();
                let proxy = self
                    .compiled
                    .pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(|e| classify(e, &self.limits, self.max_instances))?;
                (proxy, t.elapsed())
            }
        };
        let cold = ColdStart {
            host: info.accepted.elapsed(),
            instantiate,
            stock_hit,
            reused,
        };
        Ok(Ready {
            store,
            proxy,
            id,
            served,
            cold,
        })
    }

    /// Step 4, to the response head: drives the guest here until it sets
    /// the head or returns. (A guest that returned has dropped its store,
    /// so the channel is ready by then: set, or closed.) A guest still
    /// running goes on inside the response body.
    async fn drive_to_head(
        self: &Arc<Self>,
        mut guest: Guest,
        mut receiver: Head,
        cold: ColdStart,
        info: &RequestInfo,
    ) -> Result<Response<DrivenBody>, GuestError> {
        let mut returned: Option<Result<(), GuestError>> = None;
        let mut closed = false;
        let head = std::future::poll_fn(|cx| {
            if returned.is_none()
                && let Poll::Ready(r) = guest.as_mut().poll(cx)
            {
                returned = Some(r);
            }
            if !closed {
                match receiver.poll(cx) {
                    Poll::Ready(Some(head)) => return Poll::Ready(Some(head)),
                    Poll::Ready(None) => closed = true,
                    Poll::Pending => {}
                }
            }
            if returned.is_some() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await;
        // Refilling the stock wakes its thread: not on the way to the
        // handler or to the response head.
        self.request_refill();
        let running = returned.is_none();
        // A returned guest may have set the head although the poll above
        // said pending (tokio's co-operative budget can defer a ready
        // channel): ask the channel directly.
        let Some(head) = head.or_else(|| receiver.try_recv()) else {
            // Returned without a response; a failure is logged already.
            return Err(match returned {
                Some(Err(e)) => e,
                _ => {
                    let err = GuestError::NoResponse;
                    self.log_failure(&info.log_tag, &err);
                    err
                }
            });
        };
        let guest = running.then_some(guest);
        match head {
            Ok(resp) => Ok(with_cold_start(
                resp.map(|body| DrivenBody { body, guest }),
                cold,
                info,
            )),
            Err(err) => {
                self.log_failure(&info.log_tag, &err);
                if let Some(guest) = guest {
                    finish_detached(guest);
                }
                Err(err)
            }
        }
    }

    /// Runs one request on a concurrently used instance
    /// ([`crate::concurrent`]): its head comes back from the instance's
    /// worker task; its body streams from there.
    async fn handle_shared<B>(
        self: &Arc<Self>,
        req: Request<B>,
        info: &RequestInfo,
        slot: tokio::sync::OwnedSemaphorePermit,
        deadline: Instant,
    ) -> Result<Response<DrivenBody>, GuestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        use http_body_util::BodyExt as _;
        let request = with_scheme(req, info.tls).map(|b| b.map_err(Into::into).boxed_unsync());
        let (reply, head) = tokio::sync::oneshot::channel();
        let mut entry = crate::tasks::Entry::new(
            info.log_tag.clone(),
            deadline,
            reply,
            self.outbound.request_caps(),
            slot,
        );
        entry.trace = info.trace.clone();
        let (resp, cold) = self
            .handle_concurrent(request, entry, head, info.accepted)
            .await?;
        self.request_refill();
        Ok(with_cold_start(
            resp.map(|body| DrivenBody { body, guest: None }),
            cold,
            info,
        ))
    }

    /// Hands `req` to a WASIp2 proxy: an `incoming-request` and a
    /// `response-outparam` whose value comes back through the [`Head`].
    fn run_p2<B>(
        self: &Arc<Self>,
        mut store: Store<GuestState>,
        proxy: wasmtime_wasi_http::p2::bindings::Proxy,
        req: Request<B>,
        info: &RequestInfo,
        slot: tokio::sync::OwnedSemaphorePermit,
        deadline: Instant,
    ) -> Result<(Guest, Head), GuestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (incoming, outparam) = {
            let mut http = store.data_mut().http();
            let scheme = if info.tls {
                Scheme::Https
            } else {
                Scheme::Http
            };
            let incoming = http
                .new_incoming_request(scheme, req)
                .map_err(|e| GuestError::Internal(format!("{e:#}")))?;
            let outparam = http
                .new_response_outparam(sender)
                .map_err(|e| GuestError::Internal(format!("{e:#}")))?;
            (incoming, outparam)
        };
        let app = self.clone();
        let id = info.log_tag.clone();
        let guest: Guest = Box::pin(async move {
            let _slot = slot;
            let started = Instant::now();
            let run = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam);
            let mut busy = Busy::new(run);
            let outcome = tokio::time::timeout_at(deadline.into(), &mut busy).await;
            let busy_time = busy.busy;
            drop(busy);
            app.ended(&store, &id, started, busy_time, outcome)
        });
        Ok((guest, Head::P2(receiver)))
    }

    /// Hands `req` to a WASIp3 service: its `handle` runs inside the
    /// store's event loop ([`Store::run_concurrent`]), which then keeps
    /// running (streaming the body, writing the trailers) until the guest's
    /// tasks are all done. With `keep` (the instance's request id cell and
    /// the requests it served before), an instance whose request ended
    /// cleanly goes back to the idle list for the next request, until it
    /// served `max_requests_per_instance`; one that trapped, overran its
    /// deadline or hit a limit is dropped.
    #[expect(
        clippy::too_many_arguments,
        reason = "one request's parts, handed over once"
    )]
    fn run_p3<B>(
        self: &Arc<Self>,
        mut store: Store<GuestState>,
        service: wasmtime_wasi_http::p3::bindings::Service,
        req: Request<B>,
        info: &RequestInfo,
        slot: tokio::sync::OwnedSemaphorePermit,
        deadline: Instant,
        keep: Option<(RequestIdCell, u32)>,
    ) -> (Guest, Head)
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = with_scheme(req, info.tls);
        let (request, io) = {
            let http = store.data_mut().http();
            wasmtime_wasi_http::p3::Request::from_http(http.hooks, req)
        };
        let app = self.clone();
        let id = info.log_tag.clone();
        let guest: Guest = Box::pin(async move {
            let _slot = slot;
            let started = Instant::now();
            let handler = &service;
            let run = store.run_concurrent(async move |accessor| {
                let head = match handler.handle(accessor, request).await? {
                    Ok(response) => accessor
                        .with(|mut access| response.into_http(&mut access, io))
                        .map_err(|e| GuestError::Internal(format!("{e:#}"))),
                    Err(code) => Err(GuestError::ErrorCode(format!("{code:?}"))),
                };
                let _ = sender.send(head);
                // The body and trailers are written by the guest's tasks,
                // which live on after `handle` returned.
                std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                wasmtime::Result::<()>::Ok(())
            });
            let mut busy = Busy::new(async move { run.await.and_then(|r| r) });
            let outcome = tokio::time::timeout_at(deadline.into(), &mut busy).await;
            let busy_time = busy.busy;
            drop(busy);
            let result = app.ended(&store, &id, started, busy_time, outcome);
            if result.is_ok()
                && let Some((cell, served)) = keep
                && served + 1 < app.reuse.max_requests_per_instance
            {
                app.idle
                    .put(store, service, cell, served + 1, app.per_app as usize);
            }
            result
        });
        (guest, Head::P3(receiver))
    }

    /// A guest's run is over: its usage reported, its outcome classified and
    /// a failure logged.
    fn ended(
        &self,
        store: &Store<GuestState>,
        id: &str,
        started: Instant,
        busy: Duration,
        outcome: Result<wasmtime::Result<()>, tokio::time::error::Elapsed>,
    ) -> Result<(), GuestError> {
        if let Some(metrics) = &self.metrics {
            // CPU: the time this request's future spent being polled (the
            // guest and the host calls it made); memory: the instance's
            // linear memory for the request's wall time.
            let memory = store.data().limiter.in_use as f64;
            metrics.record_usage(
                &self.name,
                busy,
                memory * started.elapsed().as_secs_f64() / 1e9,
            );
        }
        let result = match outcome {
            Ok(result) => result.map_err(|e| classify(e, &self.limits, self.max_instances)),
            Err(_) => Err(GuestError::Deadline(self.limits.timeout)),
        };
        if let Err(e) = &result {
            self.log_failure(id, e);
        }
        result
    }

    /// Says in the host log and the app log that the request tagged `tag`
    /// ([`crate::logs::log_tag`]) failed.
    pub(super) fn log_failure(&self, tag: &str, err: &GuestError) {
        let (request_id, trace_id) = tag.split_once(' ').unwrap_or((tag, "-"));
        tracing::warn!(app = %self.name, request_id, trace_id, "request failed: {err}");
        self.log
            .line(tag, "berth", format!("request failed: {err}").as_bytes());
    }
}

impl Drop for WasmApp {
    fn drop(&mut self) {
        // Past the resident budget, an idle component goes back to disk.
        self.resident.release(&self.compiled);
    }
}

/// What [`WasmApp::checkout`] hands the request: a store made this
/// request's, with an instance already in it or not.
struct Checkout {
    store: Store<GuestState>,
    /// The instance (idle or stocked); `None`: instantiate in `store`.
    ready: Option<Proxy>,
    id: RequestIdCell,
    /// Requests the instance served before (serial reuse).
    served: u32,
    /// How long the checkout took.
    took: Duration,
}

/// An instance ready for its request's handler.
struct Ready {
    store: Store<GuestState>,
    proxy: Proxy,
    id: RequestIdCell,
    served: u32,
    cold: ColdStart,
}

/// A guest's run after its request was handed to it: the handler's call,
/// metered, bounded by the deadline, its failure logged.
pub(crate) type Guest = Pin<Box<dyn Future<Output = Result<(), GuestError>> + Send>>;

/// Where a guest's response head comes back: a p2 `response-outparam`'s
/// channel, or the p3 handler's result.
enum Head {
    P2(tokio::sync::oneshot::Receiver<Result<Response<GuestBody>, P2ErrorCode>>),
    P3(tokio::sync::oneshot::Receiver<Result<Response<GuestBody>, GuestError>>),
}

impl Head {
    /// The head once set (`Some`), or `None` once the guest dropped the
    /// sender without setting it.
    fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Response<GuestBody>, GuestError>>> {
        match self {
            Head::P2(rx) => Pin::new(rx).poll(cx).map(|r| r.ok().map(p2_head)),
            Head::P3(rx) => Pin::new(rx).poll(cx).map(Result::ok),
        }
    }

    /// The head if it is set already.
    fn try_recv(&mut self) -> Option<Result<Response<GuestBody>, GuestError>> {
        match self {
            Head::P2(rx) => rx.try_recv().ok().map(p2_head),
            Head::P3(rx) => rx.try_recv().ok(),
        }
    }
}

fn p2_head(
    head: Result<Response<GuestBody>, P2ErrorCode>,
) -> Result<Response<GuestBody>, GuestError> {
    head.map_err(|code| GuestError::ErrorCode(format!("{code:?}")))
}

/// `req` with the absolute URI a WASIp3 request carries: the scheme the
/// client came with and the authority of its `Host` header.
fn with_scheme<B>(req: Request<B>, tls: bool) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().cloned().or_else(|| {
        parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse().ok())
    });
    let mut uri = parts.uri.clone().into_parts();
    uri.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    uri.authority = authority;
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(absolute) = http::Uri::from_parts(uri) {
        parts.uri = absolute;
    }
    Request::from_parts(parts, body)
}

/// `resp` with its [`ColdStart`] figures, and a `Server-Timing` header when
/// `info.timing` asks for one.
fn with_cold_start(
    mut resp: Response<DrivenBody>,
    cold: ColdStart,
    info: &RequestInfo,
) -> Response<DrivenBody> {
    resp.extensions_mut().insert(cold);
    if info.timing
        && let Ok(v) = HeaderValue::from_str(&format!(
            "berth-host;dur={:.3}, berth-instantiate;dur={:.3}",
            cold.host.as_secs_f64() * 1e3,
            cold.instantiate.as_secs_f64() * 1e3
        ))
    {
        resp.headers_mut().append("server-timing", v);
    }
    resp
}
