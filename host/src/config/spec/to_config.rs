//! [`AppSpec::to_config`]: a spec back in the written shape, defaults left
//! out.

use std::time::Duration;

use super::{AppSpec, ContainerSettings, KvQuota, Limits, ReuseMode, Scaling, Source};
use crate::autoscale::KpaConfig;
use crate::config::file::{
    AppConfig, RawAutoscale, RawInstances, RawKvLimits, RawLimits, SizeValue,
};

/// A duration as written (`1m 30s`).
fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `d` as written, or `None` when it is the default.
fn changed(d: Duration, default: Duration) -> Option<String> {
    (d != default).then(|| dur(d))
}

/// `v`, or `None` when it is the default.
fn unless_default<T: PartialEq>(v: T, default: T) -> Option<T> {
    (v != default).then_some(v)
}

impl AppSpec {
    /// The [`AppConfig`] that validates back to this spec (with `base` `/`):
    /// what the state and the admin API show for an app deployed from an
    /// [`AppSpec`]. Settings at their defaults are left out.
    pub fn to_config(&self) -> AppConfig {
        let (wasm, image) = match &self.source {
            Source::Wasm(path) => (Some(path.clone()), None),
            Source::Image(reference) => (None, Some(reference.clone())),
        };
        let container_default = ContainerSettings::default();
        let c = &self.container;
        let a = &self.scaling.autoscale;
        let d = KpaConfig::default();
        AppConfig {
            wasm,
            image,
            routes: self.routes.clone(),
            env: self.env.clone(),
            secrets: self.secrets.clone(),
            allowed_outbound_hosts: self.allowed_outbound_hosts.clone(),
            allowed_networks: self.allowed_networks.clone(),
            concurrency: a.concurrency,
            min_scale: unless_default(a.min_scale, d.min_scale),
            max_scale: unless_default(a.max_scale, d.max_scale),
            network: (c.network != container_default.network).then(|| c.network.as_str().into()),
            seccomp: (c.seccomp != container_default.seccomp).then(|| c.seccomp.as_str().into()),
            readiness_path: c.readiness_path.clone(),
            startup_timeout: changed(c.startup_timeout, container_default.startup_timeout),
            shutdown_grace: changed(c.shutdown_grace, container_default.shutdown_grace),
            limits: self.raw_limits(),
            autoscale: raw_autoscale(&self.scaling),
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
            keyvalue_limits: raw_kv_limits(&self.keyvalue_limits),
            config: self.config.clone(),
            config_secrets: self.config_secrets.clone(),
        }
    }

    /// The `[limits]` table: the engine's limits and the container's `cpu`
    /// and `pids`.
    fn raw_limits(&self) -> RawLimits {
        let l = &self.limits;
        let d = Limits::default();
        RawLimits {
            memory: unless_default(l.memory, d.memory).map(SizeValue::Bytes),
            timeout: changed(l.timeout, d.timeout),
            request_body: unless_default(l.request_body, d.request_body).map(SizeValue::Bytes),
            cpu: self.container.cpu,
            pids: self.container.pids,
            outbound_connections: unless_default(l.outbound_connections, d.outbound_connections),
            outbound_connections_per_request: unless_default(
                l.outbound_connections_per_request,
                d.outbound_connections_per_request,
            ),
            outbound_pool_idle_per_host: unless_default(
                l.outbound_pool_idle_per_host,
                d.outbound_pool_idle_per_host,
            ),
            outbound_pool_idle_timeout: changed(
                l.outbound_pool_idle_timeout,
                d.outbound_pool_idle_timeout,
            ),
        }
    }
}

/// The `[autoscale]` table.
fn raw_autoscale(scaling: &Scaling) -> RawAutoscale {
    let a = &scaling.autoscale;
    let d = KpaConfig::default();
    let scaling_default = Scaling::default();
    RawAutoscale {
        target: a.target,
        utilization: unless_default(a.utilization, d.utilization),
        stable_window: changed(a.stable_window, d.stable_window),
        panic_window_percentage: unless_default(
            a.panic_window_percentage,
            d.panic_window_percentage,
        ),
        panic_threshold_percentage: unless_default(
            a.panic_threshold_percentage,
            d.panic_threshold_percentage,
        ),
        max_scale_up_rate: unless_default(a.max_scale_up_rate, d.max_scale_up_rate),
        max_scale_down_rate: unless_default(a.max_scale_down_rate, d.max_scale_down_rate),
        scale_to_zero_grace: changed(a.scale_to_zero_grace, d.scale_to_zero_grace),
        scale_down_delay: changed(a.scale_down_delay, d.scale_down_delay),
        initial_scale: unless_default(a.initial_scale, d.initial_scale),
        tick: changed(a.tick, d.tick),
        queue_timeout: changed(scaling.queue_timeout, scaling_default.queue_timeout),
        queue_depth: scaling.queue_depth,
    }
}

/// The `[keyvalue_limits]` table.
fn raw_kv_limits(q: &KvQuota) -> RawKvLimits {
    let d = KvQuota::default();
    RawKvLimits {
        keys: unless_default(q.keys, d.keys),
        value_size: unless_default(q.value_size, d.value_size).map(SizeValue::Bytes),
        total_size: unless_default(q.total_size, d.total_size).map(SizeValue::Bytes),
        batch: unless_default(q.batch, d.batch),
    }
}
