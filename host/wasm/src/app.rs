//! [`WasmApp`]: one app's resident compiled component, and the path of a
//! request through it: a fresh [`Store`] and instance, the guest's handler,
//! the response head as soon as the guest sets it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use super::cache::LoadedFrom;
use super::guest::{GuestError, GuestState, Limiter, classify};
use super::outbound::OutboundPolicy;
use super::resident::{Compiled, Resident};
use super::stock::{Stock, Stocked, Stocker};
use crate::UsageMeter;
use crate::limits::Limits;
use crate::logs::AppLog;
use crate::logs::RequestIdCell;
use crate::request::RequestInfo;

/// How long the host spent before the guest's handler was entered.
#[derive(Debug, Clone, Copy)]
pub struct ColdStart {
    /// From acceptance to a ready instance (store, WASI context, instantiation).
    pub host: Duration,
    /// Instantiation alone (taking it from the stock, on a hit).
    pub instantiate: Duration,
    /// Whether the instance came from the stock.
    pub stock_hit: bool,
}

/// One app's resident compiled component.
pub struct WasmApp {
    pub(super) name: String,
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

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// sha256 (hex) of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.compiled.sha256
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
            hooks: self.outbound.clone(),
            limiter: Limiter {
                memory: self.limits.memory,
                in_use: 0,
                budget: self.budget.clone(),
            },
            deadline,
        }
        .into_store(self.compiled.pre.engine())
    }

    /// The app's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs one request in a fresh instance. The response head is returned as
    /// soon as the guest sets it; the body streams while the guest runs, until
    /// the deadline.
    ///
    /// # Errors
    /// [`GuestError`] when the guest produced no response.
    pub async fn handle<B>(
        self: &Arc<Self>,
        req: Request<B>,
        info: &RequestInfo,
    ) -> Result<Response<GuestBody>, GuestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let deadline = info.accepted + self.limits.timeout;
        // The app's share of the pool: no app takes every slot.
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            GuestError::Overloaded(format!(
                "app `{}` already runs {} requests, its share of the Wasm instance pool",
                self.name, self.per_app
            ))
        })?;
        let taken = Instant::now();
        let (mut store, stocked) = match self.stock.take() {
            Some(s) => {
                // Made ahead, touched by no request: now this request's.
                let Stocked {
                    mut store,
                    proxy,
                    id,
                    ..
                } = s;
                id.set(info.id.clone());
                store.data_mut().deadline = deadline;
                store.set_epoch_deadline(1);
                (store, Some(proxy))
            }
            None => {
                let id = RequestIdCell::default();
                id.set(info.id.clone());
                (self.new_store(id, deadline), None)
            }
        };
        let took = taken.elapsed();
        self.request_refill();

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (incoming, outparam) = {
            let mut http = store.data_mut().http();
            let incoming = http
                .new_incoming_request(
                    if info.tls {
                        Scheme::Https
                    } else {
                        Scheme::Http
                    },
                    req,
                )
                .map_err(|e| GuestError::Internal(format!("{e:#}")))?;
            let outparam = http
                .new_response_outparam(sender)
                .map_err(|e| GuestError::Internal(format!("{e:#}")))?;
            (incoming, outparam)
        };

        let app = self.clone();
        let accepted = info.accepted;
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<ColdStart>();
        let task = tokio::spawn(async move {
            let _slot = slot;
            let run = async {
                let stock_hit = stocked.is_some();
                let (proxy, instantiate) = match stocked {
                    Some(proxy) => (proxy, took),
                    None => {
                        let t = Instant::now();
                        let proxy = app.compiled.pre.instantiate_async(&mut store).await?;
                        (proxy, t.elapsed())
                    }
                };
                let _ = started_tx.send(ColdStart {
                    host: accepted.elapsed(),
                    instantiate,
                    stock_hit,
                });
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
            };
            let started = Instant::now();
            let mut busy = Busy::new(run);
            let outcome = tokio::time::timeout_at(deadline.into(), &mut busy).await;
            let busy_time = busy.busy;
            drop(busy);
            if let Some(metrics) = &app.metrics {
                // CPU: the time this request's future spent being polled (the
                // guest and the host calls it made); memory: the instance's
                // linear memory for the request's wall time.
                let memory = store.data().limiter.in_use as f64;
                metrics.record_usage(
                    &app.name,
                    busy_time,
                    memory * started.elapsed().as_secs_f64() / 1e9,
                );
            }
            match outcome {
                Ok(result) => result.map_err(|e| classify(e, &app.limits, app.max_instances)),
                Err(_) => Err(GuestError::Deadline(app.limits.timeout)),
            }
        });
        // If the client goes away before the response head, stop the guest.
        let mut guard = AbortOnDrop(Some(task));

        let outcome = receiver.await;
        let cold = started_rx.await.ok();
        match outcome {
            Ok(Ok(mut resp)) => {
                // The guest keeps running to stream the body; detach it.
                if let Some(task) = guard.0.take() {
                    let app = self.clone();
                    let id = info.id.clone();
                    tokio::spawn(async move {
                        if let Ok(Err(e)) = task.await {
                            app.log_failure(&id, &e);
                        }
                    });
                }
                if let Some(cold) = cold {
                    resp.extensions_mut().insert(cold);
                    if let Ok(v) = HeaderValue::from_str(&format!(
                        "berth-host;dur={:.3}, berth-instantiate;dur={:.3}",
                        cold.host.as_secs_f64() * 1e3,
                        cold.instantiate.as_secs_f64() * 1e3
                    )) {
                        resp.headers_mut().append("server-timing", v);
                    }
                }
                Ok(resp)
            }
            Ok(Err(code)) => {
                let err = GuestError::ErrorCode(code);
                self.log_failure(&info.id, &err);
                Err(err)
            }
            Err(_) => {
                let task = guard.0.take().expect("task present until taken");
                let err = match task.await {
                    Ok(Ok(())) => GuestError::NoResponse,
                    Ok(Err(e)) => e,
                    Err(join) => GuestError::Internal(format!("guest task failed: {join}")),
                };
                self.log_failure(&info.id, &err);
                Err(err)
            }
        }
    }

    fn log_failure(&self, id: &str, err: &GuestError) {
        tracing::warn!(app = %self.name, request_id = id, "request failed: {err}");
        self.log
            .line(id, "berth", format!("request failed: {err}").as_bytes());
    }
}

impl Drop for WasmApp {
    fn drop(&mut self) {
        // Past the resident budget, an idle component goes back to disk.
        self.resident.release(&self.compiled);
    }
}

/// A future that adds up the time spent polling the one it wraps.
struct Busy<F> {
    inner: std::pin::Pin<Box<F>>,
    busy: Duration,
}

impl<F> Busy<F> {
    fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            busy: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for Busy<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let t = Instant::now();
        let out = self.inner.as_mut().poll(cx);
        self.busy += t.elapsed();
        out
    }
}

/// Aborts a spawned task when dropped while still armed.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}
