//! Instance reuse: whether a request gets an instance of its own or one
//! that served requests before it, or serves others beside it
//! ([`InstanceReuse`]); the idle instances kept for serial reuse ([`Idle`]).
//! Concurrent reuse's live instances are in the `concurrent` module.
//!
//! Isolation rules (each has a test in `tests/all/wasm_p3.rs`):
//! - `none`: every request gets a fresh instance; no request ever sees
//!   another's memory.
//! - `serial`: an instance serves one request at a time, up to
//!   `max_requests_per_instance` of them, and is dropped after
//!   `idle_timeout` without one. A request that traps, overruns its
//!   deadline or hits the memory limit retires its instance: it is never
//!   handed another request. An instance goes back to the idle list only
//!   once its guest's tasks are all done (body and trailers written).
//! - `concurrent`: an instance serves up to `max_concurrent_per_instance`
//!   requests at once, `max_requests_per_instance` in all, and is dropped
//!   after `idle_timeout` without one. A trap, a memory-limit hit or a
//!   guest running past its own request's deadline retires the instance at
//!   once: that request gets its error, every other one in flight a clear
//!   `503` ([`GuestError::Retired`](crate::GuestError::Retired)). A request
//!   whose deadline passes while its guest waits gets `504`; the others
//!   finish, and the instance takes no more requests. Ids, log lines,
//!   epoch deadlines, outbound connection counts and CPU time stay per
//!   request ([`crate::tasks`]).
//!
//! [`InstanceReuse::capacity`] is what the autoscaler counts an instance
//! as: 1, or `max_concurrent_per_instance` under `concurrent`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime_wasi_http::p3::bindings::Service;

use crate::guest::GuestState;
use crate::logs::RequestIdCell;

/// Most `max_requests_per_instance`.
pub const MAX_REQUESTS_PER_INSTANCE: u32 = 1_000_000;
/// Most `max_concurrent_per_instance`.
pub const MAX_CONCURRENT_PER_INSTANCE: u32 = 1_000;
/// `max_concurrent_per_instance` unless set (`reuse = "concurrent"`):
/// `wasmtime serve`'s default.
pub const DEFAULT_MAX_CONCURRENT: u32 = 16;
/// Longest `idle_timeout`.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// `max_requests_per_instance` unless set: `wasmtime serve`'s default.
pub const DEFAULT_MAX_REQUESTS: u32 = 128;
/// `idle_timeout` unless set.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How requests share instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReuseMode {
    /// A fresh instance per request.
    None,
    /// One request at a time per instance, many one after another.
    Serial,
    /// Several requests at once in one instance, many one after another.
    Concurrent,
}

impl ReuseMode {
    /// As written in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            ReuseMode::None => "none",
            ReuseMode::Serial => "serial",
            ReuseMode::Concurrent => "concurrent",
        }
    }

    /// The settings of this mode when only the mode is given.
    pub fn defaults(self) -> InstanceReuse {
        match self {
            ReuseMode::None => InstanceReuse::NONE,
            ReuseMode::Serial => InstanceReuse::SERIAL,
            ReuseMode::Concurrent => InstanceReuse::CONCURRENT,
        }
    }

    /// `none`, `serial` or `concurrent`.
    ///
    /// # Errors
    /// The reason, naming the accepted values.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(ReuseMode::None),
            "serial" => Ok(ReuseMode::Serial),
            "concurrent" => Ok(ReuseMode::Concurrent),
            other => Err(format!(
                "`{other}` is not one of `none`, `serial`, `concurrent`"
            )),
        }
    }
}

/// An app's `[instances]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceReuse {
    /// How requests share instances.
    pub mode: ReuseMode,
    /// Requests one instance serves before it is retired.
    pub max_requests_per_instance: u32,
    /// Requests one instance serves at once (1 unless `concurrent`).
    pub max_concurrent_per_instance: u32,
    /// How long an unused instance is kept.
    pub idle_timeout: Duration,
}

impl InstanceReuse {
    /// No reuse: what WASIp2 components get unless they ask.
    pub const NONE: Self = Self {
        mode: ReuseMode::None,
        max_requests_per_instance: 1,
        max_concurrent_per_instance: 1,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
    };

    /// Serial reuse with `wasmtime serve`'s count: what WASIp3 components
    /// get unless they ask.
    pub const SERIAL: Self = Self {
        mode: ReuseMode::Serial,
        max_requests_per_instance: DEFAULT_MAX_REQUESTS,
        max_concurrent_per_instance: 1,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
    };

    /// Concurrent reuse with `wasmtime serve`'s counts: 16 requests at
    /// once, 128 in all, per instance.
    pub const CONCURRENT: Self = Self {
        mode: ReuseMode::Concurrent,
        max_requests_per_instance: DEFAULT_MAX_REQUESTS,
        max_concurrent_per_instance: DEFAULT_MAX_CONCURRENT,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
    };

    /// Requests one instance takes at once: its capacity, the unit the
    /// autoscaler counts instances in.
    pub fn capacity(&self) -> u32 {
        match self.mode {
            ReuseMode::Concurrent => self.max_concurrent_per_instance,
            ReuseMode::None | ReuseMode::Serial => 1,
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// The key (`instances.max_requests_per_instance`,
    /// `instances.max_concurrent_per_instance`, `instances.idle_timeout`)
    /// and the reason.
    pub fn validate(&self) -> Result<(), crate::InvalidSetting> {
        let concurrent = self.max_concurrent_per_instance;
        match self.mode {
            ReuseMode::Concurrent if !(1..=MAX_CONCURRENT_PER_INSTANCE).contains(&concurrent) => {
                return Err(crate::InvalidSetting::new(
                    "instances.max_concurrent_per_instance",
                    format!("{concurrent} is outside 1..={MAX_CONCURRENT_PER_INSTANCE}"),
                ));
            }
            ReuseMode::None | ReuseMode::Serial if concurrent != 1 => {
                return Err(crate::InvalidSetting::new(
                    "instances.max_concurrent_per_instance",
                    format!(
                        "must be 1 (or left out) unless reuse = \"concurrent\" (got {concurrent} with reuse = \"{}\")",
                        self.mode.as_str()
                    ),
                ));
            }
            _ => {}
        }
        if !(1..=MAX_REQUESTS_PER_INSTANCE).contains(&self.max_requests_per_instance) {
            return Err(crate::InvalidSetting::new(
                "instances.max_requests_per_instance",
                format!(
                    "{} is outside 1..={MAX_REQUESTS_PER_INSTANCE}",
                    self.max_requests_per_instance
                ),
            ));
        }
        if self.idle_timeout.is_zero() || self.idle_timeout > MAX_IDLE_TIMEOUT {
            return Err(crate::InvalidSetting::new(
                "instances.idle_timeout",
                format!(
                    "{:?} is outside (0s, {MAX_IDLE_TIMEOUT:?}]",
                    self.idle_timeout
                ),
            ));
        }
        Ok(())
    }
}

/// An instance between two requests.
pub(crate) struct IdleInstance {
    pub(crate) store: Store<GuestState>,
    pub(crate) service: Service,
    pub(crate) id: RequestIdCell,
    /// Requests it served.
    pub(crate) served: u32,
    since: Instant,
}

/// One app's idle reusable instances, most recently used last.
#[derive(Default)]
pub(crate) struct Idle {
    list: Mutex<Vec<IdleInstance>>,
}

impl Idle {
    /// The most recently used instance idle for less than `timeout`;
    /// older ones are dropped.
    pub(crate) fn take(&self, timeout: Duration) -> Option<IdleInstance> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|i| i.since.elapsed() < timeout);
        list.pop()
    }

    /// Keeps an instance that finished a request cleanly, unless `cap`
    /// are idle already.
    pub(crate) fn put(
        &self,
        store: Store<GuestState>,
        service: Service,
        id: RequestIdCell,
        served: u32,
        cap: usize,
    ) {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() < cap {
            list.push(IdleInstance {
                store,
                service,
                id,
                served,
                since: Instant::now(),
            });
        }
    }

    /// Instances idle now.
    pub(crate) fn len(&self) -> usize {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
