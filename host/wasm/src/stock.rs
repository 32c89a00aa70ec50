//! Instances made ahead of their requests.
//!
//! While an app is warm, a small stock of ready `Store` + instance pairs is
//! kept per app (per revision's resident [`WasmApp`]), refilled by one
//! background thread (`berth-stock`, off the tokio workers). A request takes
//! one if there is one, else instantiates as before. Each stocked instance
//! serves exactly one request and is then dropped: per-request isolation is
//! unchanged, only the instantiation moved off the request's path. Its
//! request id (for the guest's stdout/stderr lines) and deadline are set
//! when a request takes it; nothing of a request exists before that.
//!
//! The stock's size follows the autoscaler: the KPA's desired instance count
//! × `stock_per_instance` (4 by default), at most [`MAX_STOCK_PER_APP`],
//! and zero at zero. All stocks together hold at most a
//! [`STOCK_SHARE_OF_POOL`]th of the engine's instance pool, so requests
//! always find pool slots the stock does not hold.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};

use wasmtime::Store;
use wasmtime_wasi_http::handler::Proxy;

use super::GuestState;
use super::app::WasmApp;
use crate::logs::RequestIdCell;

/// The most instances one app keeps in stock.
pub const MAX_STOCK_PER_APP: u32 = 32;

/// Stocked instances of all apps together hold at most this fraction
/// (1/N) of the engine's pool (`--max-instances`).
pub const STOCK_SHARE_OF_POOL: u32 = 8;

/// The nice value of the refill thread: stocking uses spare CPU and
/// yields to the threads that serve requests.
pub const STOCK_THREAD_NICE: i32 = 10;

/// Stocked instances per instance the autoscaler wants, unless set
/// (`--wasm-stock-per-instance`; 0 turns the stock off).
pub const DEFAULT_STOCK_PER_INSTANCE: u32 = 4;

/// One ready instance: a store with its WASI and wasi:http contexts and the
/// instantiated component, touched by no request yet.
pub(super) struct Stocked {
    pub(super) store: Store<GuestState>,
    pub(super) proxy: Proxy,
    pub(super) id: RequestIdCell,
    _count: Counted,
}

impl Stocked {
    /// The store, the instance and the id cell its log sinks read, out of
    /// the stock's count.
    pub(super) fn into_parts(self) -> (Store<GuestState>, Proxy, RequestIdCell) {
        (self.store, self.proxy, self.id)
    }
}

/// Holds one unit of the engine-wide stock count while alive.
struct Counted(Arc<AtomicU32>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An app's stock of instances made ahead of their requests
/// (pre-instantiated stores), as counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StockStatus {
    /// Requests that found a ready instance in the stock.
    pub hits: u64,
    /// Requests that had to make their own.
    pub misses: u64,
    /// Instances in the stock now.
    pub stocked: u32,
    /// How many the stock is being filled to.
    pub target: u32,
    /// Reusable instances alive now (serial reuse: idle and busy ones;
    /// concurrent reuse: live ones; 0 without reuse).
    pub live: u32,
}

/// Hits and misses of one revision's stock, kept across scale to zero.
#[derive(Debug, Default)]
pub struct StockCounters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
}

impl StockCounters {
    /// The hits and misses so far, with nothing stocked (as at zero).
    pub fn status(&self) -> StockStatus {
        StockStatus {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stocked: 0,
            target: 0,
            live: 0,
        }
    }
}

/// One app's stock.
#[derive(Default)]
pub(super) struct Stock {
    ready: Mutex<Vec<Stocked>>,
    target: AtomicU32,
    /// A refill job is queued or running.
    queued: AtomicBool,
    pub(super) counters: Arc<StockCounters>,
}

impl Stock {
    pub(super) fn new(counters: Arc<StockCounters>) -> Self {
        Self {
            counters,
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Stocked>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ready instance, counted as a hit; or a miss.
    pub(super) fn take(&self) -> Option<Stocked> {
        let taken = self.lock().pop();
        let counter = if taken.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        taken
    }

    pub(super) fn status(&self) -> StockStatus {
        StockStatus {
            stocked: self.lock().len() as u32,
            target: self.target.load(Ordering::Relaxed),
            ..self.counters.status()
        }
    }
}

enum Job {
    Refill(Weak<WasmApp>),
    Discard(Vec<Stocked>),
}

/// The engine's stock keeper: the refill thread and the engine-wide count.
pub struct Stocker {
    tx: Mutex<mpsc::Sender<Job>>,
    total: Arc<AtomicU32>,
    cap: u32,
    per_instance: u32,
}

impl std::fmt::Debug for Stocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stocker")
            .field("total", &self.total)
            .field("cap", &self.cap)
            .field("per_instance", &self.per_instance)
            .finish()
    }
}

impl Stocker {
    /// Starts the refill thread for an engine with `pool` instance slots;
    /// each app stocks `per_instance` per instance the autoscaler wants.
    pub(super) fn start(pool: u32, per_instance: u32) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("berth-stock".into())
            .spawn(move || {
                // Spare CPU: on Linux a thread's nice value is its own, so
                // only this thread yields to the request path.
                if let Err(e) = rustix::process::setpriority_process(
                    Some(rustix::thread::gettid()),
                    STOCK_THREAD_NICE,
                ) {
                    tracing::debug!("cannot lower the stock thread's priority: {e}");
                }
                // Ends when every sender (the runtime and its apps) is gone.
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Refill(app) => {
                            if let Some(app) = app.upgrade() {
                                app.refill();
                            }
                        }
                        Job::Discard(stocked) => drop(stocked),
                    }
                }
            })?;
        Ok(Arc::new(Self {
            tx: Mutex::new(tx),
            total: Arc::default(),
            cap: pool / STOCK_SHARE_OF_POOL,
            per_instance,
        }))
    }

    fn send(&self, job: Job) {
        // The thread lives as long as a sender does; a failed send means
        // the process is going away.
        let _ = self.tx.lock().unwrap_or_else(|e| e.into_inner()).send(job);
    }

    /// Instances in stock across all apps.
    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// The engine-wide cap.
    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// The stock an app keeps when the autoscaler wants `desired` instances.
    pub fn target_for(&self, desired: u32) -> u32 {
        desired
            .saturating_mul(self.per_instance)
            .min(MAX_STOCK_PER_APP)
    }
}

impl WasmApp {
    /// Sets this app's stock size: fills up to it in the background, or
    /// hands the excess to the stock thread to drop.
    pub fn set_stock_target(self: &Arc<Self>, target: u32) {
        let target = target.min(MAX_STOCK_PER_APP);
        self.stock.target.store(target, Ordering::Release);
        let excess: Vec<Stocked> = {
            let mut ready = self.stock.lock();
            let keep = (target as usize).min(ready.len());
            ready.drain(keep..).collect()
        };
        if !excess.is_empty() {
            self.stocker.send(Job::Discard(excess));
        }
        self.request_refill();
    }

    /// This app's stock as counted so far, and its live reusable
    /// instances.
    pub fn stock_status(&self) -> StockStatus {
        StockStatus {
            live: self.live_instances(),
            ..self.stock.status()
        }
    }

    /// Sizes the stock for an autoscaler that wants `desired` instances of
    /// this app's capacity ([`InstanceReuse::capacity`](crate::reuse::InstanceReuse::capacity)):
    /// without reuse, `stock_per_instance` per instance (each request
    /// takes one); with reuse, the instances wanted that are not alive yet
    /// (each serves many requests). At zero, concurrently used instances
    /// without a request end now rather than after `idle_timeout`.
    pub fn scale_to(self: &Arc<Self>, desired: u32) {
        if desired == 0 {
            self.workers.close_idle();
        }
        let target = match self.reuse.mode {
            crate::reuse::ReuseMode::None => self.stocker.target_for(desired),
            _ if self.stocker.per_instance == 0 => 0,
            _ => desired.saturating_sub(self.live_instances()),
        };
        self.set_stock_target(target);
    }

    /// Where this app's stock counts its hits and misses.
    pub fn stock_counters(&self) -> &Arc<StockCounters> {
        &self.stock.counters
    }

    /// This app with an empty stock that counts into `counters` (a
    /// revision's, kept across scale to zero).
    #[must_use]
    pub fn with_stock_counters(mut self, counters: Arc<StockCounters>) -> Self {
        self.stock = Stock::new(counters);
        self
    }

    /// Asks the stock thread to top the stock up once it is down to half
    /// its target (so that the thread is woken for every other request at
    /// most, not for each), unless a refill is already queued.
    pub(super) fn request_refill(self: &Arc<Self>) {
        let target = self.stock.target.load(Ordering::Acquire) as usize;
        if target == 0 || self.stock.lock().len() > target / 2 {
            return;
        }
        if !self.stock.queued.swap(true, Ordering::AcqRel) {
            self.stocker.send(Job::Refill(Arc::downgrade(self)));
        }
    }

    /// On the stock thread: instantiates until the stock reaches its
    /// target, the engine-wide cap is reached, or instantiation fails.
    fn refill(self: &Arc<Self>) {
        let mut full = false;
        loop {
            let target = self.stock.target.load(Ordering::Acquire) as usize;
            if self.stock.lock().len() >= target {
                full = true;
                break;
            }
            let total = &self.stocker.total;
            if total.fetch_add(1, Ordering::AcqRel) >= self.stocker.cap {
                total.fetch_sub(1, Ordering::AcqRel);
                break;
            }
            let count = Counted(total.clone());
            let id = RequestIdCell::default();
            let deadline = std::time::Instant::now() + self.limits.timeout;
            let mut store = self.new_store(id.clone(), deadline);
            // Instantiation does not wait on I/O: a plain executor runs it.
            match futures::executor::block_on(self.compiled.pre.instantiate_async(&mut store)) {
                Ok(proxy) => self.stock.lock().push(Stocked {
                    store,
                    proxy,
                    id,
                    _count: count,
                }),
                Err(e) => {
                    tracing::debug!(app = %self.name, "cannot stock an instance: {e:#}");
                    break;
                }
            }
        }
        self.stock.queued.store(false, Ordering::Release);
        if full {
            // A request may have taken one after the last check, while the
            // job still counted as queued.
            self.request_refill();
        }
    }
}
