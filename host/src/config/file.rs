//! The file's shapes: what an `[apps.NAME]` table (and the admin API's
//! deploy body, and the state file's record of an app) looks like as
//! written, before validation turns it into an [`AppSpec`](super::AppSpec).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) domain: Option<String>,
    #[serde(default)]
    pub(super) apps: BTreeMap<String, AppConfig>,
    #[serde(default)]
    pub(super) keyvalue: RawKeyvalue,
}

/// `[keyvalue]`: the host's key-value stores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeyvalue {
    #[serde(default)]
    pub(super) stores: BTreeMap<String, RawStore>,
}

/// `[keyvalue.stores.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    /// `redis` or `embedded`.
    pub(super) backend: String,
    /// Redis: `redis://[user:password@]host:port[/db]`.
    pub(super) url: Option<String>,
    /// Redis: the name of a berth secret whose value is the URL (for one
    /// with credentials).
    pub(super) url_secret: Option<String>,
}

/// One `[apps.NAME]` table as written (also the JSON body of a deploy through
/// the admin API). [`AppSpec::from_config`](super::AppSpec::from_config) validates it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Path of a Wasm component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<PathBuf>,
    /// OCI reference of a Wasm component or container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Path prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets: variable → secret
    /// name (`berth secret set NAME`). Only the names are ever stored or
    /// shown.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Outbound HTTP allow-list (Wasm).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<String>,
    /// Networks (CIDR) in otherwise refused ranges the app may reach
    /// (both kinds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<String>,
    /// Hard limit of requests one instance serves at once (0 = unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Instances kept even when idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_scale: Option<u32>,
    /// Most instances (0 = unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale: Option<u32>,
    /// Container networking: `isolated` (default), `none` or `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Container syscall filter: `default` (berth's profile, modelled on
    /// Docker's) or `unconfined` (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<String>,
    /// Container readiness: HTTP GET of this path (default: TCP connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_path: Option<String>,
    /// How long a container may take to become ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timeout: Option<String>,
    /// Between SIGTERM and SIGKILL when a container stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<String>,
    /// Per-request / per-instance limits.
    #[serde(default, skip_serializing_if = "RawLimits::is_empty")]
    pub limits: RawLimits,
    /// Autoscaler settings.
    #[serde(default, skip_serializing_if = "RawAutoscale::is_empty")]
    pub autoscale: RawAutoscale,
    /// Instance reuse (Wasm).
    #[serde(default, skip_serializing_if = "RawInstances::is_empty")]
    pub instances: RawInstances,
    /// Key-value buckets the app's guests may open (Wasm, `wasi:keyvalue`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyvalue: Vec<String>,
    /// The app's key-value quotas.
    #[serde(default, skip_serializing_if = "RawKvLimits::is_empty")]
    pub keyvalue_limits: RawKvLimits,
    /// Values its Wasm guests read through `wasi:config/store`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// `wasi:config` keys whose values are secrets: key → secret name
    /// (resolved at each read, never stored or shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_secrets: BTreeMap<String, String>,
}

/// `[apps.NAME.keyvalue_limits]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKvLimits {
    /// Keys the app may hold in one store (10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Largest value (`"1MiB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_size: Option<SizeValue>,
    /// Bytes of keys and values the app may hold in one store (`"64MiB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<SizeValue>,
    /// Keys one batch call may name (1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
}

impl RawKvLimits {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `[apps.NAME.instances]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstances {
    /// `none` (a fresh instance per request), `serial` (one request at a
    /// time per instance, many one after another) or `concurrent` (several
    /// at once per instance); default: `none` for WASIp2 components,
    /// `serial` for WASIp3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<String>,
    /// Requests one instance serves before it is retired (128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_instance: Option<u32>,
    /// Requests one instance serves at once, with `reuse = "concurrent"`
    /// (16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_per_instance: Option<u32>,
    /// How long an unused instance is kept (`"30s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

impl RawInstances {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `[apps.NAME.limits]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `"64MiB"` or a number of bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<SizeValue>,
    /// `"30s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Largest request body, `"32MiB"` or a number of bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<SizeValue>,
    /// CPUs for a container (e.g. 0.5; default 1, Cloud Run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Process (and thread) limit for a container (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Wasm: outbound connections all of the app's requests hold at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_connections: Option<u32>,
    /// Wasm: outbound connections one request holds at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_connections_per_request: Option<u32>,
    /// Wasm: idle outbound connections kept per destination (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_pool_idle_per_host: Option<u32>,
    /// Wasm: how long an idle outbound connection is kept, `"30s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_pool_idle_timeout: Option<String>,
}

impl RawLimits {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `[apps.NAME.autoscale]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoscale {
    /// Soft per-instance target (defaults from `concurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// Fraction of the target to aim for (0.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<f64>,
    /// `"60s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_window: Option<String>,
    /// 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_window_percentage: Option<f64>,
    /// 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold_percentage: Option<f64>,
    /// 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale_up_rate: Option<f64>,
    /// 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale_down_rate: Option<f64>,
    /// `"30s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_grace: Option<String>,
    /// `"0s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<String>,
    /// 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_scale: Option<u32>,
    /// How often concurrency is sampled and a decision made (`"1s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<String>,
    /// How long a request may wait for capacity (`"10s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<String>,
    /// How many requests may wait for capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<usize>,
}

impl RawAutoscale {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A size as written: a number of bytes or a string like `"64MiB"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// `"64MiB"`.
    Text(String),
}
