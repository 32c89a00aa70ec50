//! The `berth.toml` file: apps, their routes, environment and limits.
//!
//! ```toml
//! domain = "localhost"              # apps answer at http://<app>.<domain>/
//!
//! [apps.hello]
//! wasm = "components/target/wasm32-wasip2/release/hello.wasm"
//! routes = ["/hello"]               # optional path prefixes; longest match wins
//! env = { GREETING = "hi" }
//! allowed_outbound_hosts = []       # outbound HTTP allow-list, default none
//! [apps.hello.limits]
//! memory = "64MiB"
//! timeout = "30s"
//! ```
//!
//! Loading is strict: an unknown key, a bad value or an inconsistent app is
//! refused with the file, the key and the reason ([`ConfigError`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default domain under which apps are reachable as `<app>.<domain>`.
pub const DEFAULT_DOMAIN: &str = "localhost";
/// Default linear-memory cap per request (per memory of the component).
pub const DEFAULT_MEMORY_LIMIT: u64 = 128 * 1024 * 1024;
/// Default wall-clock deadline per request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest memory cap an app may ask for; the engine reserves slots this big.
pub const MAX_MEMORY_LIMIT: u64 = 4 * 1024 * 1024 * 1024;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Apps answer at `<app>.<domain>`.
    pub domain: String,
    /// Apps by name, in name order.
    pub apps: BTreeMap<String, AppSpec>,
}

/// What one `[apps.NAME]` table says, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// Where the app's code comes from.
    pub source: Source,
    /// Path prefixes routed to this app (each starts with `/`).
    pub routes: Vec<String>,
    /// Environment variables the guest sees.
    pub env: BTreeMap<String, String>,
    /// Hosts (`host` or `host:port`, `*` wildcard allowed as the whole host or
    /// a leading `*.`) the guest may send HTTP requests to.
    pub allowed_outbound_hosts: Vec<String>,
    /// Per-request limits.
    pub limits: Limits,
    /// How many instances, and how busy each may get.
    pub scaling: Scaling,
    /// Settings that only containers use.
    pub container: ContainerSettings,
}

/// Instance counts and per-instance concurrency.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scaling {
    /// Hard per-instance limit; `None` = the kind's default (Wasm: 0 =
    /// unbounded; containers: 80, as Cloud Run).
    pub concurrency: Option<u32>,
    /// Instances kept even when idle.
    pub min_scale: u32,
    /// Most instances (0 = unbounded).
    pub max_scale: u32,
    /// The KPA's knobs.
    pub autoscale: Autoscale,
}

/// The autoscaler's knobs (Knative's names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscale {
    /// Soft per-instance target; `None` = from `concurrency`.
    pub target: Option<f64>,
    /// Fraction of the target to aim for.
    pub utilization: f64,
    /// Averaging window for steady load.
    pub stable_window: Duration,
    /// Panic window as a percentage of the stable window.
    pub panic_window_percentage: f64,
    /// Panic when the panic-window demand reaches this percentage of capacity.
    pub panic_threshold_percentage: f64,
    /// Growth factor limit per decision.
    pub max_scale_up_rate: f64,
    /// Shrink factor limit per decision.
    pub max_scale_down_rate: f64,
    /// Idle time before the last instance goes.
    pub scale_to_zero_grace: Duration,
    /// How long a lower recommendation must persist before scaling down.
    pub scale_down_delay: Duration,
    /// Instances started at deploy.
    pub initial_scale: u32,
    /// Sampling and decision interval.
    pub tick: Duration,
    /// How long a request waits for capacity before 503/429.
    pub queue_timeout: Duration,
    /// Requests that may wait (`None` = 10 × concurrency × max(max_scale, 1), at least 100).
    pub queue_depth: Option<usize>,
}

impl Default for Autoscale {
    fn default() -> Self {
        Self {
            target: None,
            utilization: 0.7,
            stable_window: Duration::from_secs(60),
            panic_window_percentage: 10.0,
            panic_threshold_percentage: 200.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            scale_to_zero_grace: Duration::from_secs(30),
            scale_down_delay: Duration::ZERO,
            initial_scale: 1,
            tick: Duration::from_secs(1),
            queue_timeout: Duration::from_secs(10),
            queue_depth: None,
        }
    }
}

/// How a container instance is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The host's network namespace; each instance gets its own `PORT`.
    #[default]
    Host,
    /// A private namespace with loopback only.
    Isolated,
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
}

impl Default for ContainerSettings {
    fn default() -> Self {
        Self {
            network: NetworkMode::Host,
            readiness_path: None,
            startup_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            cpu: None,
            pids: None,
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

/// Per-request limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size in bytes of each linear memory.
    pub memory: u64,
    /// Wall-clock deadline for a request, from arrival to the end of the response.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: DEFAULT_MEMORY_LIMIT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{file}`: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file `{file}` is not valid TOML: {message}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a bad value, is unknown, or is missing.
    #[error("config file `{file}`: key `{key}`: {reason}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Dotted path of the key, e.g. `apps.hello.limits.memory`.
        key: String,
        /// Why it is refused.
        reason: String,
    },
}

// ---- the file's shapes ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    domain: Option<String>,
    #[serde(default)]
    apps: BTreeMap<String, AppConfig>,
}

/// One `[apps.NAME]` table as written (also the JSON body of a deploy through
/// the admin API). [`AppSpec::from_config`] validates it.
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
    /// Outbound HTTP allow-list (Wasm).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<String>,
    /// Hard limit of requests one instance serves at once (0 = unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Instances kept even when idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_scale: Option<u32>,
    /// Most instances (0 = unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale: Option<u32>,
    /// Container networking: `host` or `isolated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
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
    /// CPUs for a container (e.g. 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Process limit for a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

impl RawLimits {
    fn is_empty(&self) -> bool {
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
    fn is_empty(&self) -> bool {
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

/// Parses a byte size such as `64MiB`, `1GB`, `4096`.
///
/// # Errors
/// When the text is not a size.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("`{s}` is not a size like \"64MiB\": {e}"))
}

/// Parses a duration such as `30s`, `500ms`, `2m`.
///
/// # Errors
/// When the text is not a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like \"30s\": {e}"))
}

impl Config {
    /// Reads and validates a config file. Relative `wasm` paths are resolved
    /// against the directory holding the file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and the reason.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        Self::parse(&text, file, base)
    }

    /// Parses config text; `file` names it in errors and `base` anchors
    /// relative paths.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and the reason.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Self, ConfigError> {
        let value: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Invalid {
                    file: file.to_path_buf(),
                    key: if key == "." {
                        "(top level)".into()
                    } else {
                        key
                    },
                    reason: e.into_inner().to_string(),
                }
            })?;
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            reason,
        };

        let domain = raw.domain.unwrap_or_else(|| DEFAULT_DOMAIN.to_string());
        if domain.is_empty() || domain.split('.').any(|l| validate_label(l).is_err()) {
            return Err(invalid(
                "domain".into(),
                format!("`{domain}` is not a DNS domain"),
            ));
        }

        let mut apps = BTreeMap::new();
        let mut seen_routes: BTreeMap<String, String> = BTreeMap::new();
        for (name, app) in raw.apps {
            let spec = AppSpec::from_config(&name, &app, base).map_err(|(k, r)| {
                let key = if k.is_empty() {
                    format!("apps.{name}")
                } else {
                    format!("apps.{name}.{k}")
                };
                invalid(key, r)
            })?;
            for route in &spec.routes {
                if let Some(other) = seen_routes.insert(route.clone(), name.clone()) {
                    return Err(invalid(
                        format!("apps.{name}.routes"),
                        format!("route `{route}` is already taken by app `{other}`"),
                    ));
                }
            }
            apps.insert(name, spec);
        }
        Ok(Self { domain, apps })
    }
}

impl AppSpec {
    /// An app serving the component at `path` with default settings.
    pub fn wasm(path: impl Into<PathBuf>) -> Self {
        Self {
            source: Source::Wasm(path.into()),
            routes: Vec::new(),
            env: BTreeMap::new(),
            allowed_outbound_hosts: Vec::new(),
            limits: Limits::default(),
            scaling: Scaling::default(),
            container: ContainerSettings::default(),
        }
    }

    /// An app running the image at `reference` with default settings.
    pub fn image(reference: impl Into<String>) -> Self {
        Self {
            source: Source::Image(reference.into()),
            ..Self::wasm("")
        }
    }

    /// Validates one app table; relative `wasm` paths are resolved against
    /// `base`.
    ///
    /// # Errors
    /// The key (relative to the app's table; empty for the table itself) and
    /// the reason.
    pub fn from_config(name: &str, app: &AppConfig, base: &Path) -> Result<Self, (String, String)> {
        let err = |k: &str, r: String| (k.to_string(), r);
        validate_label(name).map_err(|r| err("", r))?;
        let source = match (&app.wasm, &app.image) {
            (Some(path), None) => Source::Wasm(if path.is_absolute() {
                path.clone()
            } else {
                base.join(path)
            }),
            (None, Some(image)) if !image.trim().is_empty() => Source::Image(image.trim().into()),
            (None, Some(_)) => return Err(err("image", "must not be empty".into())),
            (Some(_), Some(_)) => {
                return Err(err(
                    "",
                    "has both `wasm` and `image`; give exactly one".into(),
                ));
            }
            (None, None) => {
                return Err(err(
                    "",
                    "needs `wasm = \"PATH\"` or `image = \"REF\"`".into(),
                ));
            }
        };
        let mut routes = Vec::new();
        for route in &app.routes {
            if !route.starts_with('/') {
                return Err(err(
                    "routes",
                    format!("route `{route}` must start with `/`"),
                ));
            }
            let r = normalize_route(route);
            if routes.contains(&r) {
                return Err(err("routes", format!("route `{route}` is listed twice")));
            }
            routes.push(r);
        }
        for var in app.env.keys() {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err(err("env", format!("`{var}` is not a valid variable name")));
            }
        }
        for host in &app.allowed_outbound_hosts {
            crate::wasm::outbound::HostPattern::parse(host)
                .map_err(|r| err("allowed_outbound_hosts", r))?;
        }
        let dur = |k: &str,
                   v: &Option<String>,
                   zero_ok: bool|
         -> Result<Option<Duration>, (String, String)> {
            match v {
                None => Ok(None),
                Some(text) => {
                    let d = parse_duration(text).map_err(|r| err(k, r))?;
                    if d.is_zero() && !zero_ok {
                        return Err(err(k, "must be above zero".into()));
                    }
                    Ok(Some(d))
                }
            }
        };

        let mut limits = Limits::default();
        if let Some(memory) = &app.limits.memory {
            let memory = match memory {
                SizeValue::Bytes(n) => *n,
                SizeValue::Text(t) => parse_size(t).map_err(|r| err("limits.memory", r))?,
            };
            if !(64 * 1024..=MAX_MEMORY_LIMIT).contains(&memory) {
                return Err(err(
                    "limits.memory",
                    format!(
                        "{} is outside the allowed range 64KiB..=4GiB",
                        bytesize::ByteSize::b(memory).display().iec()
                    ),
                ));
            }
            limits.memory = memory;
        }
        if let Some(t) = dur("limits.timeout", &app.limits.timeout, false)? {
            limits.timeout = t;
        }

        let mut container = ContainerSettings::default();
        if let Some(cpu) = app.limits.cpu {
            if !(cpu > 0.0 && cpu <= 1024.0) {
                return Err(err(
                    "limits.cpu",
                    format!("{cpu} is not a CPU count above 0"),
                ));
            }
            container.cpu = Some(cpu);
        }
        if let Some(pids) = app.limits.pids {
            if pids < 1 {
                return Err(err("limits.pids", format!("{pids} must be at least 1")));
            }
            container.pids = Some(pids);
        }
        container.network = match app.network.as_deref() {
            None | Some("host") => NetworkMode::Host,
            Some("isolated") => NetworkMode::Isolated,
            Some(other) => {
                return Err(err(
                    "network",
                    format!("`{other}` is not a network mode; use \"host\" or \"isolated\""),
                ));
            }
        };
        if let Some(path) = &app.readiness_path {
            if !path.starts_with('/') {
                return Err(err(
                    "readiness_path",
                    format!("`{path}` must start with `/`"),
                ));
            }
            container.readiness_path = Some(path.clone());
        }
        if let Some(t) = dur("startup_timeout", &app.startup_timeout, false)? {
            container.startup_timeout = t;
        }
        if let Some(t) = dur("shutdown_grace", &app.shutdown_grace, true)? {
            container.shutdown_grace = t;
        }

        let mut scaling = Scaling {
            concurrency: app.concurrency,
            min_scale: app.min_scale.unwrap_or(0),
            max_scale: app.max_scale.unwrap_or(0),
            autoscale: Autoscale::default(),
        };
        if scaling.max_scale > 0 && scaling.min_scale > scaling.max_scale {
            return Err(err(
                "min_scale",
                format!(
                    "{} is above max_scale {}",
                    scaling.min_scale, scaling.max_scale
                ),
            ));
        }
        if app.concurrency.is_some_and(|c| c > 1000) {
            return Err(err("concurrency", "must be at most 1000".into()));
        }
        let a = &app.autoscale;
        let s = &mut scaling.autoscale;
        let positive =
            |k: &str, v: Option<f64>, max: f64| -> Result<Option<f64>, (String, String)> {
                match v {
                    Some(x) if !(x > 0.0 && x <= max) => {
                        Err(err(k, format!("{x} is outside (0, {max}]")))
                    }
                    other => Ok(other),
                }
            };
        s.target = positive("autoscale.target", a.target, 1e6)?;
        if let Some(u) = positive("autoscale.utilization", a.utilization, 1.0)? {
            s.utilization = u;
        }
        if let Some(p) = positive(
            "autoscale.panic_window_percentage",
            a.panic_window_percentage,
            100.0,
        )? {
            s.panic_window_percentage = p;
        }
        if let Some(p) = positive(
            "autoscale.panic_threshold_percentage",
            a.panic_threshold_percentage,
            1e6,
        )? {
            s.panic_threshold_percentage = p;
        }
        if let Some(r) = positive("autoscale.max_scale_up_rate", a.max_scale_up_rate, 1e6)? {
            s.max_scale_up_rate = r;
        }
        if let Some(r) = positive("autoscale.max_scale_down_rate", a.max_scale_down_rate, 1e6)? {
            s.max_scale_down_rate = r;
        }
        if let Some(d) = dur("autoscale.stable_window", &a.stable_window, false)? {
            s.stable_window = d;
        }
        if let Some(d) = dur(
            "autoscale.scale_to_zero_grace",
            &a.scale_to_zero_grace,
            true,
        )? {
            s.scale_to_zero_grace = d;
        }
        if let Some(d) = dur("autoscale.scale_down_delay", &a.scale_down_delay, true)? {
            s.scale_down_delay = d;
        }
        if let Some(d) = dur("autoscale.tick", &a.tick, false)? {
            s.tick = d;
        }
        if let Some(d) = dur("autoscale.queue_timeout", &a.queue_timeout, false)? {
            s.queue_timeout = d;
        }
        if let Some(i) = a.initial_scale {
            s.initial_scale = i;
        }
        if scaling.max_scale > 0 && s.initial_scale > scaling.max_scale {
            return Err(err(
                "autoscale.initial_scale",
                format!(
                    "{} is above max_scale {}",
                    s.initial_scale, scaling.max_scale
                ),
            ));
        }
        s.queue_depth = a.queue_depth;

        Ok(Self {
            source,
            routes,
            env: app.env.clone(),
            allowed_outbound_hosts: app.allowed_outbound_hosts.clone(),
            limits,
            scaling,
            container,
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Wasm(p) => write!(f, "wasm file `{}`", p.display()),
            Source::Image(r) => write!(f, "image `{r}`"),
        }
    }
}

/// App names and domain labels: 1–63 of `a-z`, `0-9`, `-`, not starting or
/// ending with `-` (so that `<app>.<domain>` is a valid host name).
///
/// # Errors
/// The reason the label is refused.
pub fn validate_label(label: &str) -> Result<(), String> {
    let ok = !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{label}` is not a valid name: use 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
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

/// The default data directory: `$XDG_DATA_HOME/berth`, else
/// `$HOME/.local/share/berth`, else `./.berth`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("berth");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/berth");
    }
    PathBuf::from(".berth")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("berth.toml"), Path::new("/base"))
    }

    #[test]
    fn full_example_parses() {
        let cfg = parse(
            r#"
            [apps.hello]
            wasm = "hello.wasm"
            routes = ["/hello/"]
            env = { GREETING = "hi" }
            allowed_outbound_hosts = ["127.0.0.1:8080", "*.example.com"]
            [apps.hello.limits]
            memory = "64MiB"
            timeout = "1500ms"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.domain, "localhost");
        let app = &cfg.apps["hello"];
        assert_eq!(app.source, Source::Wasm("/base/hello.wasm".into()));
        assert_eq!(app.routes, vec!["/hello"]);
        assert_eq!(app.env["GREETING"], "hi");
        assert_eq!(app.limits.memory, 64 * 1024 * 1024);
        assert_eq!(app.limits.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn errors_name_the_key() {
        let err =
            parse("[apps.a]\nwasm = \"x\"\n[apps.a.limits]\nmemory = \"lots\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("apps.a.limits.memory"), "{msg}");
        assert!(msg.contains("lots"), "{msg}");

        let msg = parse("[apps.a]\nwasm = \"x\"\ntimeout = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("apps.a") && msg.contains("timeout"), "{msg}");

        let msg = parse("[apps.Bad_Name]\nwasm = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("apps.Bad_Name"), "{msg}");

        let msg = parse("[apps.a]\n").unwrap_err().to_string();
        assert!(msg.contains("needs `wasm"), "{msg}");

        let msg = parse("[apps.a]\nwasm = \"x\"\nimage = \"r/x:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("exactly one"), "{msg}");

        let msg = parse("[apps.a]\nwasm = \"x\"\nroutes = [\"/x\"]\n[apps.b]\nwasm = \"y\"\nroutes = [\"/x/\"]\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("already taken by app `a`"), "{msg}");

        let msg = parse("[apps.a\nwasm=").unwrap_err().to_string();
        assert!(msg.contains("not valid TOML"), "{msg}");

        let msg = parse("[apps.a]\nwasm = \"x\"\n[apps.a.limits]\ntimeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("apps.a.limits.timeout"), "{msg}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("much").is_err());
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
    }
}
