//! What one request's [`Store`](wasmtime::Store) holds: the WASI and
//! wasi:http contexts, the outbound policy, the memory limiter and the
//! deadline; and how a wasmtime error becomes a [`GuestError`].

use std::fmt;
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::outbound::OutboundPolicy;
use crate::limits::Limits;

/// What ended a request that produced no response.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum GuestError {
    /// The guest trapped (unreachable, panic, out of bounds, …).
    #[error("the component trapped: {0}")]
    Trap(String),
    /// A linear memory tried to grow past `limits.memory`.
    #[error("the component exceeded its memory limit of {0}")]
    MemoryLimit(String),
    /// The deadline passed.
    #[error("the component did not answer within its timeout of {0:?}")]
    Deadline(Duration),
    /// The instance serving the request was retired before it answered:
    /// another request on it trapped, overran its deadline or hit a limit,
    /// or the instance ended (why, is said).
    #[error("the instance serving it was retired: {0}")]
    Retired(String),
    /// The guest returned without setting a response.
    #[error("the component returned without sending a response")]
    NoResponse,
    /// The guest set an error code instead of a response (the
    /// `wasi:http` `error-code`, as wasmtime prints it).
    #[error("the component answered with an error: {0}")]
    ErrorCode(String),
    /// No instance slot or memory is free for it: the engine's pool, the
    /// app's share of it, or the host's memory budget (which, is said).
    #[error("{0}")]
    Overloaded(String),
    /// Something failed in berth itself.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Marker error: the epoch callback found the deadline passed.
#[derive(Debug)]
pub(super) struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline exceeded")
    }
}
impl std::error::Error for DeadlineExceeded {}

/// Marker error: memory growth past the limit.
#[derive(Debug)]
pub(super) struct MemoryLimitExceeded(u64);

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory limit of {} exceeded",
            bytesize::ByteSize::b(self.0).display().iec()
        )
    }
}
impl std::error::Error for MemoryLimitExceeded {}

/// Marker error: growth past the host's memory budget for all guests.
#[derive(Debug)]
pub(super) struct BudgetExhausted(u64);

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the host's memory budget for Wasm guests ({}) is used up",
            bytesize::ByteSize::b(self.0).display().iec()
        )
    }
}
impl std::error::Error for BudgetExhausted {}

/// The linear memory all guests of the engine hold, against its budget.
#[derive(Debug)]
pub struct MemoryBudget {
    in_use: std::sync::atomic::AtomicU64,
    pub(super) budget: u64,
}

impl MemoryBudget {
    /// A budget of `bytes` across all guests.
    pub fn new(bytes: u64) -> Self {
        Self {
            in_use: std::sync::atomic::AtomicU64::new(0),
            budget: bytes,
        }
    }

    /// Bytes of linear memory guests hold now.
    pub fn in_use(&self) -> u64 {
        self.in_use.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget, or refuses.
    fn reserve(&self, bytes: u64) -> bool {
        use std::sync::atomic::Ordering;
        let before = self.in_use.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > self.budget {
            self.in_use.fetch_sub(bytes, Ordering::AcqRel);
            false
        } else {
            true
        }
    }

    fn release(&self, bytes: u64) {
        self.in_use
            .fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Per-request resource limits; also tracks the linear memory in use, in
/// the request and against the engine's budget (given back when the store
/// goes).
pub(super) struct Limiter {
    pub(super) memory: u64,
    /// Bytes of linear memory across the instance's memories.
    pub(super) in_use: u64,
    pub(super) budget: std::sync::Arc<MemoryBudget>,
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.budget.release(self.in_use);
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory {
            return Err(MemoryLimitExceeded(self.memory).into());
        }
        let grow = desired.saturating_sub(current) as u64;
        if !self.budget.reserve(grow) {
            return Err(BudgetExhausted(self.budget.budget).into());
        }
        self.in_use += grow;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// What a request's [`Store`](wasmtime::Store) holds.
pub struct GuestState {
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) table: ResourceTable,
    pub(super) hooks: OutboundPolicy,
    pub(super) limiter: Limiter,
    pub(super) deadline: Instant,
    /// The requests of a concurrently used instance (`None` when the
    /// store serves one request at a time).
    pub(super) tasks: Option<std::sync::Arc<crate::tasks::Tasks>>,
    /// `wasi:keyvalue` buckets and `wasi:config` values.
    pub(super) kv: crate::keyvalue::GuestKv,
}

impl GuestState {
    /// A store holding `self`, with its memory limiter and its deadline
    /// checked at every epoch tick: past it the guest traps; before it the
    /// guest yields (`yield_now` lets the runtime poll for I/O before this
    /// guest runs again, so spinning guests cannot starve the front door).
    pub(super) fn into_store(self, engine: &wasmtime::Engine) -> wasmtime::Store<Self> {
        let mut store = wasmtime::Store::new(engine, self);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            // Under concurrent reuse, the running request's own deadline.
            let data = ctx.data();
            let deadline = data
                .tasks
                .as_ref()
                .and_then(|t| t.current_deadline())
                .unwrap_or(data.deadline);
            if Instant::now() >= deadline {
                Err(DeadlineExceeded.into())
            } else {
                Ok(wasmtime::UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store
    }
}

impl fmt::Debug for GuestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestState").finish_non_exhaustive()
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Turns a wasmtime error into what the gateway reports.
pub(super) fn classify(e: wasmtime::Error, limits: &Limits, pool: u32) -> GuestError {
    if let Some(b) = e.downcast_ref::<BudgetExhausted>() {
        return GuestError::Overloaded(b.to_string());
    }
    if e.downcast_ref::<DeadlineExceeded>().is_some() {
        return GuestError::Deadline(limits.timeout);
    }
    if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
        return GuestError::MemoryLimit(bytesize::ByteSize::b(m.0).display().iec().to_string());
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return GuestError::Overloaded(format!("all {pool} Wasm instance slots are busy"));
    }
    let msg = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("{trap}"),
        None => format!("{e:#}"),
    };
    GuestError::Trap(first_line(&msg))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}
