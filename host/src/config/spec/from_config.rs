//! [`AppSpec::from_config`]: the written shape of one app table parsed into
//! an [`AppSpec`], then validated.

use std::path::Path;
use std::time::Duration;

use super::{
    AppSpec, ContainerSettings, InstanceReuse, InvalidSetting, KvQuota, Limits, MAX_CONTAINER_WAIT,
    MAX_IDLE_TIMEOUT, MAX_OUTBOUND_POOL_IDLE_TIMEOUT, MAX_TIMEOUT, NetworkMode, ReuseMode, Scaling,
    SeccompMode, Source,
};
use crate::config::file::{AppConfig, RawInstances, RawKvLimits, RawLimits, SizeValue};
use crate::config::{parse_duration, parse_size, validate_label};

fn refuse(key: &str, reason: impl Into<String>) -> InvalidSetting {
    InvalidSetting::new(key, reason)
}

impl AppSpec {
    /// Validates one app table; relative `wasm` paths are resolved against
    /// `base`.
    ///
    /// # Errors
    /// The setting refused, by its key (relative to the app's table; empty
    /// for the table itself).
    pub fn from_config(name: &str, app: &AppConfig, base: &Path) -> Result<Self, InvalidSetting> {
        validate_label(name).map_err(|r| refuse("", r))?;
        let spec = Self {
            source: source(app, base)?,
            routes: routes(&app.routes)?,
            env: app.env.clone(),
            secrets: app.secrets.clone(),
            allowed_outbound_hosts: app.allowed_outbound_hosts.clone(),
            allowed_networks: app.allowed_networks.clone(),
            limits: limits(&app.limits)?,
            scaling: scaling(app)?,
            container: container(app)?,
            instances: instances(&app.instances)?,
            keyvalue: app.keyvalue.clone(),
            keyvalue_limits: kv_limits(&app.keyvalue_limits)?,
            config: app.config.clone(),
            config_secrets: app.config_secrets.clone(),
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// `wasm` (resolved against `base`) or `image`: exactly one.
fn source(app: &AppConfig, base: &Path) -> Result<Source, InvalidSetting> {
    match (&app.wasm, &app.image) {
        (Some(path), None) => Ok(Source::Wasm(if path.is_absolute() {
            path.clone()
        } else {
            base.join(path)
        })),
        (None, Some(image)) if !image.trim().is_empty() => Ok(Source::Image(image.trim().into())),
        (None, Some(_)) => Err(refuse("image", "must not be empty")),
        (Some(_), Some(_)) => Err(refuse("", "has both `wasm` and `image`; give exactly one")),
        (None, None) => Err(refuse("", "needs `wasm = \"PATH\"` or `image = \"REF\"`")),
    }
}

/// `routes`: each starts with `/`, normalised, none twice.
fn routes(written: &[String]) -> Result<Vec<String>, InvalidSetting> {
    let mut routes = Vec::new();
    for route in written {
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
    Ok(routes)
}

/// A size setting, as bytes or as text (`64MiB`).
fn size(key: &str, value: &SizeValue) -> Result<u64, InvalidSetting> {
    match value {
        SizeValue::Bytes(n) => Ok(*n),
        SizeValue::Text(t) => parse_size(t).map_err(|r| refuse(key, r)),
    }
}

/// The `[limits]` table over [`Limits`]' defaults (ranges are checked by
/// [`Limits::validate`]); `cpu` and `pids` are the container's.
fn limits(raw: &RawLimits) -> Result<Limits, InvalidSetting> {
    let mut limits = Limits::default();
    if let Some(memory) = &raw.memory {
        limits.memory = size("limits.memory", memory)?;
    }
    if let Some(t) = duration("limits.timeout", raw.timeout.as_ref(), false, MAX_TIMEOUT)? {
        limits.timeout = t;
    }
    if let Some(body) = &raw.request_body {
        limits.request_body = size("limits.request_body", body)?;
    }
    if let Some(n) = raw.outbound_connections {
        limits.outbound_connections = n;
    }
    if let Some(n) = raw.outbound_connections_per_request {
        limits.outbound_connections_per_request = n;
    }
    if let Some(n) = raw.outbound_pool_idle_per_host {
        limits.outbound_pool_idle_per_host = n;
    }
    if let Some(t) = duration(
        "limits.outbound_pool_idle_timeout",
        raw.outbound_pool_idle_timeout.as_ref(),
        false,
        MAX_OUTBOUND_POOL_IDLE_TIMEOUT,
    )? {
        limits.outbound_pool_idle_timeout = t;
    }
    Ok(limits)
}

/// The container-only settings over [`ContainerSettings`]' defaults.
fn container(app: &AppConfig) -> Result<ContainerSettings, InvalidSetting> {
    let mut container = ContainerSettings {
        cpu: app.limits.cpu,
        pids: app.limits.pids,
        readiness_path: app.readiness_path.clone(),
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
    Ok(container)
}

/// A duration setting: parsed, at most `max`, and above zero unless
/// `zero_ok`.
fn duration(
    key: &str,
    value: Option<&String>,
    zero_ok: bool,
    max: Duration,
) -> Result<Option<Duration>, InvalidSetting> {
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

/// The `[keyvalue_limits]` table over [`KvQuota`]'s defaults.
fn kv_limits(raw: &RawKvLimits) -> Result<KvQuota, InvalidSetting> {
    let mut q = KvQuota::default();
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
fn instances(raw: &RawInstances) -> Result<Option<InstanceReuse>, InvalidSetting> {
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
fn scaling(app: &AppConfig) -> Result<Scaling, InvalidSetting> {
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
