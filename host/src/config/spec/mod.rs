//! [`AppSpec`]: one app's settings, validated. [`AppSpec::from_config`] turns
//! the written shape ([`AppConfig`](super::AppConfig)) into it, naming the
//! key of anything it refuses ([`InvalidSetting`]); [`AppSpec::to_config`]
//! goes back (what the state file and the admin API show). The config file,
//! the admin API and the state restored at start all go through
//! `from_config`, so they accept exactly the same settings.
//!
//! - `from_config`: the written shape parsed into an [`AppSpec`].
//! - `validate`: [`AppSpec::validate`], every range and every cross-setting
//!   rule, for specs parsed and specs built in code alike.
//! - [`rules`]: the checks of single settings that an instance start makes
//!   again (env names, `limits.cpu`, `limits.pids`, `readiness_path`), each
//!   written once, so that what deploy accepts an instance start accepts.
//! - `to_config`: back to the written shape.

mod from_config;
pub mod rules;
#[cfg(test)]
mod tests;
mod to_config;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::autoscale::KpaConfig;

pub use berth_wasm::InvalidSetting;
pub use berth_wasm::keyvalue::KvQuota;
pub use berth_wasm::limits::{
    Limits, MAX_OUTBOUND_POOL_IDLE_TIMEOUT, MAX_TIMEOUT, MIN_MEMORY_LIMIT,
};
pub use berth_wasm::reuse::{InstanceReuse, MAX_IDLE_TIMEOUT, ReuseMode};
/// Longest `startup_timeout` and `shutdown_grace`.
pub const MAX_CONTAINER_WAIT: Duration = Duration::from_secs(3600);
/// Longest `autoscale.queue_timeout`.
pub const MAX_QUEUE_TIMEOUT: Duration = Duration::from_secs(600);
/// Most `autoscale.queue_depth`.
pub const MAX_QUEUE_DEPTH: usize = 100_000;
pub use rules::{
    MAX_CPUS, MAX_PIDS, MIN_CPUS, RESERVED_ENV, validate_config_key, validate_config_value,
};
/// Most `wasi:config` keys an app may have.
pub const MAX_CONFIG_KEYS: usize = 256;
/// Longest `wasi:config` value, in bytes.
pub const MAX_CONFIG_VALUE: usize = 64 << 10;

/// What one `[apps.NAME]` table says, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// Where the app's code comes from.
    pub source: Source,
    /// Path prefixes routed to this app (each starts with `/`).
    pub routes: Vec<String>,
    /// Environment variables the guest sees.
    pub env: BTreeMap<String, String>,
    /// Environment variables set from secrets at instance start: variable →
    /// secret name.
    pub secrets: BTreeMap<String, String>,
    /// Hosts (`host` or `host:port`, `*` wildcard allowed as the whole host or
    /// a leading `*.`) the guest may send HTTP requests to.
    pub allowed_outbound_hosts: Vec<String>,
    /// Networks in refused ranges (private, shared, ULA, link-local…) the
    /// app's code may reach all the same, Wasm guests and containers alike
    /// ([`AllowedNetworks`](berth_wasm::networks::AllowedNetworks)).
    pub allowed_networks: Vec<String>,
    /// Per-request limits.
    pub limits: Limits,
    /// How many instances, and how busy each may get.
    pub scaling: Scaling,
    /// Settings that only containers use.
    pub container: ContainerSettings,
    /// `[instances]`: how requests share Wasm instances; `None` = the
    /// component's world decides (WASIp2 `none`, WASIp3 `serial`).
    pub instances: Option<InstanceReuse>,
    /// `keyvalue`: buckets its Wasm guests may open.
    pub keyvalue: Vec<String>,
    /// `[keyvalue_limits]`: its key-value quotas.
    pub keyvalue_limits: KvQuota,
    /// `[config]`: what its Wasm guests read through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
    /// `[config_secrets]`: `wasi:config` keys → secret names.
    pub config_secrets: BTreeMap<String, String>,
}

/// The autoscaler's configuration and the activator's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    /// The KPA's knobs, instance bounds and the hard per-instance
    /// `concurrency` (`None`: Wasm unbounded, containers 80, as Cloud Run).
    pub autoscale: KpaConfig,
    /// How long a request waits for capacity before 503/429.
    pub queue_timeout: Duration,
    /// Requests that may wait (`None` = 10 × concurrency × max_scale,
    /// clamped to 100..=10,000).
    pub queue_depth: Option<usize>,
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            autoscale: KpaConfig::default(),
            queue_timeout: Duration::from_secs(10),
            queue_depth: None,
        }
    }
}

/// How a container instance is networked (the app's `network`; the
/// container runtime's too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Its own network namespace (made and pinned by berth before `runc
    /// run`) on berth's bridge, with egress through NAT; it reaches no port
    /// of the host and no other instance. berth connects to its address.
    /// The default.
    #[default]
    Isolated,
    /// A private network namespace with loopback only: no egress at all.
    /// berth reaches the instance from inside that namespace.
    None,
    /// The host's network namespace: the instance listens on its own `PORT`
    /// on the host; egress works; no isolation from the host or between
    /// instances. Unsafe for code you do not trust.
    Host,
}

impl NetworkMode {
    /// `isolated`, `none` or `host`, as written in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Isolated => "isolated",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

/// Which syscalls a container may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// berth's default seccomp profile (modelled on Docker's): no namespaces,
    /// no kernel modules, no `io_uring`, `bpf`, `keyctl` and the like.
    #[default]
    Default,
    /// No seccomp filter: for the rare image that needs a call the profile
    /// refuses (e.g. one that sandboxes itself with user namespaces).
    Unconfined,
}

impl SeccompMode {
    /// `default` or `unconfined`, as written in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            SeccompMode::Default => "default",
            SeccompMode::Unconfined => "unconfined",
        }
    }
}

/// Container-only settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSettings {
    /// Networking.
    pub network: NetworkMode,
    /// HTTP readiness path; `None` = TCP connect.
    pub readiness_path: Option<String>,
    /// How long to wait for readiness.
    pub startup_timeout: Duration,
    /// SIGTERM → SIGKILL grace.
    pub shutdown_grace: Duration,
    /// CPUs (quota).
    pub cpu: Option<f64>,
    /// Process limit.
    pub pids: Option<i64>,
    /// The seccomp filter.
    pub seccomp: SeccompMode,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        Self {
            network: NetworkMode::Isolated,
            readiness_path: None,
            startup_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            cpu: None,
            pids: None,
            seccomp: SeccompMode::Default,
        }
    }
}

/// Where an app's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Wasm component file on disk.
    Wasm(PathBuf),
    /// An OCI reference (`registry/repo:tag` or `registry/repo@sha256:…`).
    Image(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Wasm(p) => write!(f, "wasm file `{}`", p.display()),
            Source::Image(r) => write!(f, "image `{r}`"),
        }
    }
}

impl AppSpec {
    /// An app serving the component at `path` with default settings.
    pub fn wasm(path: impl Into<PathBuf>) -> Self {
        Self {
            source: Source::Wasm(path.into()),
            routes: Vec::new(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            allowed_outbound_hosts: Vec::new(),
            allowed_networks: Vec::new(),
            limits: Limits::default(),
            scaling: Scaling::default(),
            container: ContainerSettings::default(),
            instances: None,
            keyvalue: Vec::new(),
            keyvalue_limits: KvQuota::default(),
            config: BTreeMap::new(),
            config_secrets: BTreeMap::new(),
        }
    }

    /// An app running the image at `reference` with default settings.
    pub fn image(reference: impl Into<String>) -> Self {
        Self {
            source: Source::Image(reference.into()),
            ..Self::wasm("")
        }
    }
}
