//! The contract every instance kind honours.
//!
//! A [`Backend`] starts instances of one revision (each start is a cold
//! start); an [`Instance`] serves requests and stops gracefully. The revision
//! (see [`crate::revision`]) admits at most `concurrency` requests to each
//! instance and asks the autoscaler how many instances to keep. Wasm
//! ([`crate::wasm::backend`]) and containers ([`crate::container::backend`])
//! implement it; nothing here knows either.
//!
//! An instance that cannot produce a response says why with a
//! backend-neutral [`ServeError`]; the front door turns it into a status,
//! body and `Retry-After` in one place (`gateway::respond`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use crate::http::{Body, ReqBody, RequestInfo};

/// What runs an app. Stored and shown as `wasm` or `container`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A Wasm component, in-process.
    Wasm,
    /// A container, through runc.
    Container,
}

impl Kind {
    /// `wasm` or `container`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Wasm => "wasm",
            Kind::Container => "container",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an instance did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The request ran past the app's `limits.timeout`.
    #[error("it did not answer within its timeout of {0:?}")]
    Timeout(Duration),
    /// The instance has no room for the request right now (for Wasm: every
    /// slot of the engine's instance pool is in use).
    #[error("{0}")]
    Overloaded(String),
    /// The instance is gone or cannot be reached; it serves nothing more.
    #[error("the instance crashed: {0}")]
    Crashed(String),
    /// The instance answered with something that is not a response: a
    /// component's error code, a container's broken HTTP.
    #[error("it answered with an error: {0}")]
    BadUpstream(String),
    /// The guest returned without sending a response.
    #[error("it returned without sending a response")]
    NoResponse,
    /// The Wasm guest trapped (`unreachable`, a panic, out of bounds, …).
    #[error("the component trapped: {reason}")]
    GuestTrap {
        /// The trap, on one line.
        reason: String,
    },
    /// The Wasm guest tried to grow a memory past `limits.memory`.
    #[error("the component exceeded its memory limit of {limit}")]
    MemoryLimit {
        /// The limit, e.g. `64 MiB`.
        limit: String,
    },
    /// Something failed in berth itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    /// Whether the instance is unusable afterwards.
    pub fn instance_broken(&self) -> bool {
        matches!(self, ServeError::Crashed(_))
    }
}

/// Where one cold start spent its time, phase by phase, for kinds that time
/// their phases (containers: `overlay`, `create`, `start`, `ready`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColdStartSplit {
    /// `(phase, duration)`, in the order the phases ran.
    pub phases: Vec<(&'static str, Duration)>,
}

impl ColdStartSplit {
    /// The whole cold start.
    pub fn total(&self) -> Duration {
        self.phases.iter().map(|(_, d)| *d).sum()
    }

    /// One phase's duration.
    pub fn phase(&self, name: &str) -> Option<Duration> {
        self.phases
            .iter()
            .find_map(|(n, d)| (*n == name).then_some(*d))
    }
}

impl fmt::Display for ColdStartSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, d) in &self.phases {
            write!(f, "{name} {d:?}, ")?;
        }
        write!(f, "total {:?}", self.total())
    }
}

/// A backend's stock of instances made ahead of their requests (the Wasm
/// engine's, re-exported).
pub use berth_wasm::stock::StockStatus;

/// What a backend's outbound connections did so far (the Wasm engine's,
/// re-exported).
pub use berth_wasm::outbound::pool::OutboundStatus;

/// Starts instances of one revision.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Wasm or container.
    fn kind(&self) -> Kind;
    /// The autoscaler's desired instance count, after each decision (a
    /// backend may size work done ahead of requests from it).
    fn scale_hint(&self, _desired: u32) {}
    /// Requests one instance takes at once, when the backend knows it (a
    /// Wasm app with instance reuse: `max_concurrent_per_instance`, or 1
    /// for `serial`): the autoscaler then counts instances in that unit,
    /// as Knative's `containerConcurrency`, unless the app sets
    /// `concurrency` itself.
    fn instance_capacity(&self) -> Option<u32> {
        None
    }
    /// The stock of ready-made instances, for backends that keep one.
    fn stock(&self) -> Option<StockStatus> {
        None
    }
    /// Its guests' outbound connections, for backends that make them.
    fn outbound(&self) -> Option<OutboundStatus> {
        None
    }
    /// Starts one instance; returns when it is ready to serve.
    ///
    /// # Errors
    /// Why the instance could not start (shown to waiting clients).
    async fn start_instance(&self, id: u64) -> anyhow::Result<Arc<dyn Instance>>;
}

/// One running instance.
#[async_trait::async_trait]
pub trait Instance: Send + Sync + fmt::Debug {
    /// Serves one request.
    ///
    /// # Errors
    /// [`ServeError`] when there is no response to send.
    async fn serve(
        &self,
        req: Request<ReqBody>,
        info: &RequestInfo,
    ) -> Result<Response<Body>, ServeError>;
    /// Whether the instance can still serve (a container may have exited).
    fn is_alive(&self) -> bool {
        true
    }
    /// Stops the instance, giving in-flight work up to `grace`.
    async fn stop(&self, grace: Duration);
    /// Where this instance's cold start spent its time, for kinds that
    /// time its phases.
    fn cold_start_split(&self) -> Option<ColdStartSplit> {
        None
    }
}
