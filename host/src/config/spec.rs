//! [`AppSpec`]: one app's settings, validated. [`AppSpec::from_config`] turns
//! the written shape ([`AppConfig`]) into it, naming the key of anything it
//! refuses; [`AppSpec::to_config`] goes back (what the state file and the
//! admin API show). The config file, the admin API and the state restored at
//! start all go through `from_config`, so they accept exactly the same
//! settings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{AppConfig, RawAutoscale, RawInstances, RawKvLimits, RawLimits, SizeValue};
use super::{HostPattern, parse_duration, parse_size, validate_label};
use crate::autoscale::KpaConfig;
use berth_wasm::networks::AllowedNetworks;

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
/// Most `limits.pids`.
pub const MAX_PIDS: i64 = 1 << 22;
/// Most `limits.cpu`.
pub const MAX_CPUS: f64 = 1024.0;

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
    /// ([`AllowedNetworks`]).
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

/// How a container instance is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Its own namespace on berth's bridge: egress through NAT, no port of
    /// the host, no other instance (the default).
    #[default]
    Isolated,
    /// A private namespace with loopback only: no network at all.
    None,
    /// The host's network namespace; each instance gets its own `PORT`.
    /// Unsafe for code you do not trust: it reaches every port of the host.
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

/// A refused setting: its key relative to the app's table (empty for the
/// table itself) and the reason.
pub type SpecError = (String, String);

fn refuse(key: &str, reason: impl Into<String>) -> SpecError {
    (key.to_string(), reason.into())
}

/// A duration setting: parsed, at most `max`, and above zero unless
/// `zero_ok`.
fn duration(
    key: &str,
    value: Option<&String>,
    zero_ok: bool,
    max: Duration,
) -> Result<Option<Duration>, SpecError> {
    let Some(text) = value else {
        return Ok(None);
    };
    let d = parse_duration(text).map_err(|r| refuse(key, r))?;
    if d.is_zero() && !zero_ok {
        return Err(refuse(key, "must be above zero"));
    }
    if d > max {
        return Err(refuse(
            key,
            format!("{text} is longer than the maximum of {max:?}"),
        ));
    }
    Ok(Some(d))
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

    /// Checks a spec built in code (tests, benchmarks) as `from_config`
    /// would: every numeric setting in range.
    ///
    /// # Errors
    /// The key and the reason.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.scaling.autoscale.validate().map_err(|e| {
            let key = match e.key {
                "concurrency" | "min_scale" | "max_scale" => e.key.to_string(),
                other => format!("autoscale.{other}"),
            };
            (key, e.reason)
        })?;
        if let Some(depth) = self.scaling.queue_depth
            && !(1..=MAX_QUEUE_DEPTH).contains(&depth)
        {
            return Err(refuse(
                "autoscale.queue_depth",
                format!("{depth} is outside 1..={MAX_QUEUE_DEPTH}"),
            ));
        }
        if self.scaling.queue_timeout.is_zero() || self.scaling.queue_timeout > MAX_QUEUE_TIMEOUT {
            return Err(refuse(
                "autoscale.queue_timeout",
                format!(
                    "{:?} is outside (0s, {MAX_QUEUE_TIMEOUT:?}]",
                    self.scaling.queue_timeout
                ),
            ));
        }
        self.limits.validate()?;
        self.validate_networks()?;
        if let Some(reuse) = &self.instances {
            reuse.validate()?;
        }
        berth_wasm::keyvalue::validate_buckets(&self.keyvalue)
            .map_err(|r| refuse("keyvalue", r))?;
        self.keyvalue_limits.validate()?;
        if self.config.len() + self.config_secrets.len() > MAX_CONFIG_KEYS {
            return Err(refuse(
                "config",
                format!("more than {MAX_CONFIG_KEYS} keys (config and config_secrets together)"),
            ));
        }
        for (key, value) in &self.config {
            validate_config_key(key).map_err(|r| refuse("config", r))?;
            validate_config_value(value).map_err(|r| refuse(&format!("config.{key}"), r))?;
        }
        for (key, secret) in &self.config_secrets {
            validate_config_key(key).map_err(|r| refuse("config_secrets", r))?;
            if self.config.contains_key(key) {
                return Err(refuse(
                    &format!("config_secrets.{key}"),
                    format!("`{key}` is also set in `config`; give it one source"),
                ));
            }
            crate::secrets::validate_name(secret)
                .map_err(|e| refuse(&format!("config_secrets.{key}"), e.to_string()))?;
        }
        let c = &self.container;
        if let Some(cpu) = c.cpu
            && !(cpu > 0.0 && cpu <= MAX_CPUS)
        {
            return Err(refuse(
                "limits.cpu",
                format!("{cpu} is not a CPU count in (0, {MAX_CPUS}]"),
            ));
        }
        if let Some(pids) = c.pids
            && !(1..=MAX_PIDS).contains(&pids)
        {
            return Err(refuse(
                "limits.pids",
                format!("{pids} is outside 1..={MAX_PIDS}"),
            ));
        }
        for (key, d) in [
            ("startup_timeout", c.startup_timeout),
            ("shutdown_grace", c.shutdown_grace),
        ] {
            if d > MAX_CONTAINER_WAIT || (key == "startup_timeout" && d.is_zero()) {
                return Err(refuse(
                    key,
                    format!("{d:?} is outside (0s, {MAX_CONTAINER_WAIT:?}]"),
                ));
            }
        }
        Ok(())
    }

    /// `allowed_networks`: bounded and well formed for both kinds; for a
    /// container, IPv4 networks (instances have no IPv6 address) on the
    /// isolated network (the only one whose egress berth filters).
    fn validate_networks(&self) -> Result<(), SpecError> {
        const KEY: &str = "allowed_networks";
        let nets = AllowedNetworks::parse(&self.allowed_networks).map_err(|r| refuse(KEY, r))?;
        if nets.is_empty() || matches!(self.source, Source::Wasm(_)) {
            return Ok(());
        }
        if self.container.network != NetworkMode::Isolated {
            return Err(refuse(
                KEY,
                format!(
                    "only the isolated network filters egress; network = \"{}\" has {}",
                    self.container.network.as_str(),
                    match self.container.network {
                        NetworkMode::None => "no egress to open",
                        _ => "the host's, unfiltered",
                    }
                ),
            ));
        }
        if let Some(v6) = nets.networks().iter().find(|n| n.addr().is_ipv6()) {
            return Err(refuse(
                KEY,
                format!("`{v6}`: container instances have no IPv6 address (IPv4 networks only)"),
            ));
        }
        Ok(())
    }

    /// Validates one app table; relative `wasm` paths are resolved against
    /// `base`.
    ///
    /// # Errors
    /// The key (relative to the app's table; empty for the table itself) and
    /// the reason.
    pub fn from_config(name: &str, app: &AppConfig, base: &Path) -> Result<Self, SpecError> {
        validate_label(name).map_err(|r| refuse("", r))?;
        let source = match (&app.wasm, &app.image) {
            (Some(path), None) => Source::Wasm(if path.is_absolute() {
                path.clone()
            } else {
                base.join(path)
            }),
            (None, Some(image)) if !image.trim().is_empty() => Source::Image(image.trim().into()),
            (None, Some(_)) => return Err(refuse("image", "must not be empty")),
            (Some(_), Some(_)) => {
                return Err(refuse("", "has both `wasm` and `image`; give exactly one"));
            }
            (None, None) => {
                return Err(refuse("", "needs `wasm = \"PATH\"` or `image = \"REF\"`"));
            }
        };
        let mut routes = Vec::new();
        for route in &app.routes {
            if !route.starts_with('/') {
                return Err(refuse(
                    "routes",
                    format!("route `{route}` must start with `/`"),
                ));
            }
            let r = normalize_route(route);
            if routes.contains(&r) {
                return Err(refuse("routes", format!("route `{route}` is listed twice")));
            }
            routes.push(r);
        }
        let bad_var = |var: &str| var.is_empty() || var.contains('=') || var.contains('\0');
        for (var, value) in &app.env {
            if bad_var(var) {
                return Err(refuse(
                    "env",
                    format!("`{var}` is not a valid variable name"),
                ));
            }
            if value.contains('\0') {
                return Err(refuse(&format!("env.{var}"), "contains a NUL byte"));
            }
        }
        for (var, secret) in &app.secrets {
            if bad_var(var) {
                return Err(refuse(
                    "secrets",
                    format!("`{var}` is not a valid variable name"),
                ));
            }
            if app.env.contains_key(var) {
                return Err(refuse(
                    &format!("secrets.{var}"),
                    format!("`{var}` is also set in `env`; give it one source"),
                ));
            }
            crate::secrets::validate_name(secret)
                .map_err(|e| refuse(&format!("secrets.{var}"), e.to_string()))?;
        }
        for host in &app.allowed_outbound_hosts {
            HostPattern::parse(host).map_err(|r| refuse("allowed_outbound_hosts", r))?;
        }

        let mut limits = Limits::default();
        if let Some(memory) = &app.limits.memory {
            limits.memory = match memory {
                SizeValue::Bytes(n) => *n,
                SizeValue::Text(t) => parse_size(t).map_err(|r| refuse("limits.memory", r))?,
            };
        }
        if let Some(t) = duration(
            "limits.timeout",
            app.limits.timeout.as_ref(),
            false,
            MAX_TIMEOUT,
        )? {
            limits.timeout = t;
        }
        if let Some(size) = &app.limits.request_body {
            limits.request_body = match size {
                SizeValue::Bytes(n) => *n,
                SizeValue::Text(t) => {
                    parse_size(t).map_err(|r| refuse("limits.request_body", r))?
                }
            };
        }
        if let Some(n) = app.limits.outbound_connections {
            limits.outbound_connections = n;
        }
        if let Some(n) = app.limits.outbound_connections_per_request {
            limits.outbound_connections_per_request = n;
        }
        if let Some(n) = app.limits.outbound_pool_idle_per_host {
            limits.outbound_pool_idle_per_host = n;
        }
        if let Some(t) = duration(
            "limits.outbound_pool_idle_timeout",
            app.limits.outbound_pool_idle_timeout.as_ref(),
            false,
            MAX_OUTBOUND_POOL_IDLE_TIMEOUT,
        )? {
            limits.outbound_pool_idle_timeout = t;
        }

        let mut container = ContainerSettings {
            cpu: app.limits.cpu,
            pids: app.limits.pids,
            ..ContainerSettings::default()
        };
        container.network = match app.network.as_deref() {
            None | Some("isolated") => NetworkMode::Isolated,
            Some("none") => NetworkMode::None,
            Some("host") => NetworkMode::Host,
            Some(other) => {
                return Err(refuse(
                    "network",
                    format!(
                        "`{other}` is not a network mode; use \"isolated\" (the default), \"none\" or \"host\""
                    ),
                ));
            }
        };
        container.seccomp = match app.seccomp.as_deref() {
            None | Some("default") => SeccompMode::Default,
            Some("unconfined") => SeccompMode::Unconfined,
            Some(other) => {
                return Err(refuse(
                    "seccomp",
                    format!("`{other}` is not a seccomp mode; use \"default\" or \"unconfined\""),
                ));
            }
        };
        if let Some(path) = &app.readiness_path {
            if !path.starts_with('/') {
                return Err(refuse(
                    "readiness_path",
                    format!("`{path}` must start with `/`"),
                ));
            }
            container.readiness_path = Some(path.clone());
        }
        if let Some(t) = duration(
            "startup_timeout",
            app.startup_timeout.as_ref(),
            false,
            MAX_CONTAINER_WAIT,
        )? {
            container.startup_timeout = t;
        }
        if let Some(t) = duration(
            "shutdown_grace",
            app.shutdown_grace.as_ref(),
            true,
            MAX_CONTAINER_WAIT,
        )? {
            container.shutdown_grace = t;
        }

        let scaling = scaling(app)?;
        let spec = Self {
            source,
            routes,
            env: app.env.clone(),
            secrets: app.secrets.clone(),
            allowed_outbound_hosts: app.allowed_outbound_hosts.clone(),
            allowed_networks: app.allowed_networks.clone(),
            limits,
            scaling,
            container,
            instances: instances(&app.instances)?,
            keyvalue: app.keyvalue.clone(),
            keyvalue_limits: kv_limits(&app.keyvalue_limits)?,
            config: app.config.clone(),
            config_secrets: app.config_secrets.clone(),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The [`AppConfig`] that validates back to this spec (with `base` `/`):
    /// what the state and the admin API show for an app deployed from an
    /// [`AppSpec`]. Settings at their defaults are left out.
    pub fn to_config(&self) -> AppConfig {
        let (wasm, image) = match &self.source {
            Source::Wasm(path) => (Some(path.clone()), None),
            Source::Image(reference) => (None, Some(reference.clone())),
        };
        let dur = |d: Duration| humantime::format_duration(d).to_string();
        let changed = |d: Duration, default: Duration| (d != default).then(|| dur(d));
        let limits_default = Limits::default();
        let container_default = ContainerSettings::default();
        let c = &self.container;
        let limits = RawLimits {
            memory: (self.limits.memory != limits_default.memory)
                .then_some(SizeValue::Bytes(self.limits.memory)),
            timeout: changed(self.limits.timeout, limits_default.timeout),
            request_body: (self.limits.request_body != limits_default.request_body)
                .then_some(SizeValue::Bytes(self.limits.request_body)),
            cpu: c.cpu,
            pids: c.pids,
            outbound_connections: (self.limits.outbound_connections
                != limits_default.outbound_connections)
                .then_some(self.limits.outbound_connections),
            outbound_connections_per_request: (self.limits.outbound_connections_per_request
                != limits_default.outbound_connections_per_request)
                .then_some(self.limits.outbound_connections_per_request),
            outbound_pool_idle_per_host: (self.limits.outbound_pool_idle_per_host
                != limits_default.outbound_pool_idle_per_host)
                .then_some(self.limits.outbound_pool_idle_per_host),
            outbound_pool_idle_timeout: changed(
                self.limits.outbound_pool_idle_timeout,
                limits_default.outbound_pool_idle_timeout,
            ),
        };
        let a = &self.scaling.autoscale;
        let d = KpaConfig::default();
        let scaling_default = Scaling::default();
        let f = |v: f64, default: f64| (v != default).then_some(v);
        let autoscale = RawAutoscale {
            target: a.target,
            utilization: f(a.utilization, d.utilization),
            stable_window: changed(a.stable_window, d.stable_window),
            panic_window_percentage: f(a.panic_window_percentage, d.panic_window_percentage),
            panic_threshold_percentage: f(
                a.panic_threshold_percentage,
                d.panic_threshold_percentage,
            ),
            max_scale_up_rate: f(a.max_scale_up_rate, d.max_scale_up_rate),
            max_scale_down_rate: f(a.max_scale_down_rate, d.max_scale_down_rate),
            scale_to_zero_grace: changed(a.scale_to_zero_grace, d.scale_to_zero_grace),
            scale_down_delay: changed(a.scale_down_delay, d.scale_down_delay),
            initial_scale: (a.initial_scale != d.initial_scale).then_some(a.initial_scale),
            tick: changed(a.tick, d.tick),
            queue_timeout: changed(self.scaling.queue_timeout, scaling_default.queue_timeout),
            queue_depth: self.scaling.queue_depth,
        };
        AppConfig {
            wasm,
            image,
            routes: self.routes.clone(),
            env: self.env.clone(),
            secrets: self.secrets.clone(),
            allowed_outbound_hosts: self.allowed_outbound_hosts.clone(),
            allowed_networks: self.allowed_networks.clone(),
            concurrency: a.concurrency,
            min_scale: (a.min_scale != d.min_scale).then_some(a.min_scale),
            max_scale: (a.max_scale != d.max_scale).then_some(a.max_scale),
            network: (c.network != container_default.network).then(|| c.network.as_str().into()),
            seccomp: (c.seccomp != container_default.seccomp).then(|| c.seccomp.as_str().into()),
            readiness_path: c.readiness_path.clone(),
            startup_timeout: changed(c.startup_timeout, container_default.startup_timeout),
            shutdown_grace: changed(c.shutdown_grace, container_default.shutdown_grace),
            limits,
            autoscale,
            instances: self
                .instances
                .map(|r| RawInstances {
                    reuse: Some(r.mode.as_str().into()),
                    max_requests_per_instance: Some(r.max_requests_per_instance),
                    max_concurrent_per_instance: (r.mode == ReuseMode::Concurrent)
                        .then_some(r.max_concurrent_per_instance),
                    idle_timeout: Some(dur(r.idle_timeout)),
                })
                .unwrap_or_default(),
            keyvalue: self.keyvalue.clone(),
            keyvalue_limits: {
                let q = &self.keyvalue_limits;
                let d = KvQuota::default();
                RawKvLimits {
                    keys: (q.keys != d.keys).then_some(q.keys),
                    value_size: (q.value_size != d.value_size)
                        .then_some(SizeValue::Bytes(q.value_size)),
                    total_size: (q.total_size != d.total_size)
                        .then_some(SizeValue::Bytes(q.total_size)),
                    batch: (q.batch != d.batch).then_some(q.batch),
                }
            },
            config: self.config.clone(),
            config_secrets: self.config_secrets.clone(),
        }
    }
}

/// Most `wasi:config` keys an app may have.
pub const MAX_CONFIG_KEYS: usize = 256;
/// Longest `wasi:config` value, in bytes.
pub const MAX_CONFIG_VALUE: usize = 64 << 10;

/// A `wasi:config` key: 1..=128 of `a-z`, `A-Z`, `0-9`, `_`, `-`, `.`.
///
/// # Errors
/// Why the key is refused.
pub fn validate_config_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a config key (1 to 128 of a-z, A-Z, 0-9, `_`, `-`, `.`)",
            key.escape_debug()
        ))
    }
}

/// A `wasi:config` value: at most [`MAX_CONFIG_VALUE`] bytes, no NUL.
///
/// # Errors
/// Why the value is refused.
pub fn validate_config_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_CONFIG_VALUE {
        return Err(format!(
            "{} bytes is over the limit of {MAX_CONFIG_VALUE} bytes",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    Ok(())
}

/// The `[keyvalue_limits]` table over [`KvQuota`]'s defaults.
fn kv_limits(raw: &RawKvLimits) -> Result<KvQuota, SpecError> {
    let mut q = KvQuota::default();
    let size = |key: &str, v: &SizeValue| match v {
        SizeValue::Bytes(n) => Ok(*n),
        SizeValue::Text(t) => parse_size(t).map_err(|r| refuse(key, r)),
    };
    if let Some(n) = raw.keys {
        q.keys = n;
    }
    if let Some(v) = &raw.value_size {
        q.value_size = size("keyvalue_limits.value_size", v)?;
    }
    if let Some(v) = &raw.total_size {
        q.total_size = size("keyvalue_limits.total_size", v)?;
    }
    if let Some(n) = raw.batch {
        q.batch = n;
    }
    Ok(q)
}

/// The `[instances]` table: `None` when it is empty (the world's default);
/// a missing count or timeout takes [`InstanceReuse::SERIAL`]'s.
fn instances(raw: &RawInstances) -> Result<Option<InstanceReuse>, SpecError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let mode = match &raw.reuse {
        Some(r) => ReuseMode::parse(r).map_err(|reason| refuse("instances.reuse", reason))?,
        None => ReuseMode::Serial,
    };
    let defaults = mode.defaults();
    if mode == ReuseMode::None && raw.max_requests_per_instance.is_some_and(|n| n != 1) {
        return Err(refuse(
            "instances.max_requests_per_instance",
            "must be 1 (or left out) with reuse = \"none\"",
        ));
    }
    Ok(Some(InstanceReuse {
        mode,
        max_requests_per_instance: raw
            .max_requests_per_instance
            .unwrap_or(defaults.max_requests_per_instance),
        max_concurrent_per_instance: raw
            .max_concurrent_per_instance
            .unwrap_or(defaults.max_concurrent_per_instance),
        idle_timeout: duration(
            "instances.idle_timeout",
            raw.idle_timeout.as_ref(),
            false,
            MAX_IDLE_TIMEOUT,
        )?
        .unwrap_or(defaults.idle_timeout),
    }))
}

/// The `[autoscale]` table, `concurrency`, `min_scale` and `max_scale` over
/// the defaults (range checks follow in [`AppSpec::validate`]).
fn scaling(app: &AppConfig) -> Result<Scaling, SpecError> {
    let a = &app.autoscale;
    let mut scaling = Scaling::default();
    let k = &mut scaling.autoscale;
    k.concurrency = app.concurrency;
    if let Some(min) = app.min_scale {
        k.min_scale = min;
    }
    if let Some(max) = app.max_scale {
        k.max_scale = max;
    }
    k.target = a.target;
    for (value, field) in [
        (a.utilization, &mut k.utilization),
        (a.panic_window_percentage, &mut k.panic_window_percentage),
        (
            a.panic_threshold_percentage,
            &mut k.panic_threshold_percentage,
        ),
        (a.max_scale_up_rate, &mut k.max_scale_up_rate),
        (a.max_scale_down_rate, &mut k.max_scale_down_rate),
    ] {
        if let Some(v) = value {
            *field = v;
        }
    }
    let max = Duration::MAX;
    for (key, text, zero_ok, field) in [
        (
            "autoscale.stable_window",
            &a.stable_window,
            false,
            &mut k.stable_window,
        ),
        (
            "autoscale.scale_to_zero_grace",
            &a.scale_to_zero_grace,
            true,
            &mut k.scale_to_zero_grace,
        ),
        (
            "autoscale.scale_down_delay",
            &a.scale_down_delay,
            true,
            &mut k.scale_down_delay,
        ),
        ("autoscale.tick", &a.tick, false, &mut k.tick),
    ] {
        if let Some(d) = duration(key, text.as_ref(), zero_ok, max)? {
            *field = d;
        }
    }
    if let Some(i) = a.initial_scale {
        k.initial_scale = i;
    }
    if let Some(d) = duration(
        "autoscale.queue_timeout",
        a.queue_timeout.as_ref(),
        false,
        max,
    )? {
        scaling.queue_timeout = d;
    }
    scaling.queue_depth = a.queue_depth;
    Ok(scaling)
}

/// `/api/` and `/api` route the same; `/` stays `/`.
fn normalize_route(route: &str) -> String {
    let trimmed = route.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowed_networks_key() {
        let base = Path::new("/");
        let app = |wasm: bool, nets: &[&str], network: Option<&str>| AppConfig {
            wasm: wasm.then(|| "/x.wasm".into()),
            image: (!wasm).then(|| "r/x:1".into()),
            allowed_networks: nets.iter().map(|s| s.to_string()).collect(),
            network: network.map(String::from),
            ..AppConfig::default()
        };
        let refused = |a: AppConfig| {
            let (key, why) = AppSpec::from_config("a", &a, base).unwrap_err();
            assert_eq!(key, "allowed_networks");
            why
        };
        for wasm in [true, false] {
            let spec =
                AppSpec::from_config("a", &app(wasm, &["10.20.0.0/16"], None), base).unwrap();
            assert_eq!(spec.allowed_networks, ["10.20.0.0/16"]);
            assert_eq!(spec.to_config().allowed_networks, ["10.20.0.0/16"]);
            assert!(refused(app(wasm, &["0.0.0.0/0"], None)).contains("wider than /8"));
            assert!(refused(app(wasm, &["10.20.0.1/16"], None)).contains("bits set"));
            assert!(refused(app(wasm, &["127.0.0.0/8"], None)).contains("the host itself"));
        }
        assert!(AppSpec::from_config("a", &app(true, &["fd00:1::/32"], None), base).is_ok());
        assert!(refused(app(false, &["fd00:1::/32"], None)).contains("no IPv6 address"));
        assert!(refused(app(false, &["10.0.0.0/8"], Some("host"))).contains("isolated"));
        assert!(refused(app(false, &["10.0.0.0/8"], Some("none"))).contains("no egress"));
    }

    #[test]
    fn the_seccomp_key() {
        let app = |seccomp: Option<&str>| AppConfig {
            image: Some("r/x:1".into()),
            seccomp: seccomp.map(String::from),
            ..AppConfig::default()
        };
        let base = Path::new("/");
        for (written, mode) in [
            (None, SeccompMode::Default),
            (Some("default"), SeccompMode::Default),
            (Some("unconfined"), SeccompMode::Unconfined),
        ] {
            let spec = AppSpec::from_config("a", &app(written), base).unwrap();
            assert_eq!(spec.container.seccomp, mode, "{written:?}");
            // Round trip: the default is left out, `unconfined` is kept.
            let back = spec.to_config();
            assert_eq!(
                back.seccomp.as_deref(),
                (mode == SeccompMode::Unconfined).then_some("unconfined")
            );
            assert_eq!(AppSpec::from_config("a", &back, base).unwrap(), spec);
        }
        let (key, reason) = AppSpec::from_config("a", &app(Some("off")), base).unwrap_err();
        assert_eq!(key, "seccomp");
        assert!(
            reason.contains("`off`") && reason.contains("unconfined"),
            "{reason}"
        );
        // As the file and the API's JSON say it.
        let toml: AppConfig =
            toml::from_str("image = \"r/x:1\"\nseccomp = \"unconfined\"").unwrap();
        assert_eq!(toml, app(Some("unconfined")));
        let json = serde_json::to_value(app(Some("unconfined"))).unwrap();
        assert_eq!(json["seccomp"], "unconfined");
    }
}
