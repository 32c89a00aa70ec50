//! [`AppSpec::validate`]: every range and every rule across settings, for a
//! spec parsed from the written shape and for one built in code alike.
//! Single-setting rules that an instance start checks again are
//! [`rules`]'.

use berth_wasm::networks::AllowedNetworks;

use super::{
    AppSpec, InvalidSetting, MAX_CONFIG_KEYS, MAX_CONTAINER_WAIT, MAX_QUEUE_DEPTH,
    MAX_QUEUE_TIMEOUT, NetworkMode, Source, rules,
};
use crate::config::HostPattern;

fn refuse(key: impl Into<String>, reason: impl Into<String>) -> InvalidSetting {
    InvalidSetting::new(key, reason)
}

impl AppSpec {
    /// Checks every setting: each in its range, the settings together
    /// consistent, and anything that an instance start would refuse (a
    /// container's reserved env, a CPU count below the kernel's smallest
    /// quota, a readiness path no request can carry) refused here, at
    /// deploy. `from_config` ends with it; specs built in code (tests,
    /// benchmarks) are deployed through it.
    ///
    /// # Errors
    /// The first setting refused, by key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.validate_env()?;
        for host in &self.allowed_outbound_hosts {
            HostPattern::parse(host).map_err(|r| refuse("allowed_outbound_hosts", r))?;
        }
        self.validate_scaling()?;
        self.limits.validate()?;
        self.validate_networks()?;
        if let Some(reuse) = &self.instances {
            reuse.validate()?;
        }
        berth_wasm::keyvalue::validate_buckets(&self.keyvalue)
            .map_err(|r| refuse("keyvalue", r))?;
        self.keyvalue_limits.validate()?;
        self.validate_config()?;
        self.validate_container()
    }

    /// `env` and `secrets`: valid names, one source per variable, known
    /// secret names; for a container, none of the variables berth sets
    /// itself ([`rules::RESERVED_ENV`]).
    fn validate_env(&self) -> Result<(), InvalidSetting> {
        let container = matches!(self.source, Source::Image(_));
        for (var, value) in &self.env {
            rules::env_name(var).map_err(|r| refuse("env", r))?;
            if container {
                rules::container_env_name(var).map_err(|r| refuse(format!("env.{var}"), r))?;
            }
            if value.contains('\0') {
                return Err(refuse(format!("env.{var}"), "contains a NUL byte"));
            }
        }
        for (var, secret) in &self.secrets {
            rules::env_name(var).map_err(|r| refuse("secrets", r))?;
            if container {
                rules::container_env_name(var).map_err(|r| refuse(format!("secrets.{var}"), r))?;
            }
            if self.env.contains_key(var) {
                return Err(refuse(
                    format!("secrets.{var}"),
                    format!("`{var}` is also set in `env`; give it one source"),
                ));
            }
            crate::secrets::validate_name(secret)
                .map_err(|e| refuse(format!("secrets.{var}"), e.to_string()))?;
        }
        Ok(())
    }

    /// The autoscaler's knobs (named as the app's table names them) and the
    /// activator's queue.
    fn validate_scaling(&self) -> Result<(), InvalidSetting> {
        // The autoscaler names its fields; all but three sit under
        // `[autoscale]` in an app's table.
        self.scaling
            .autoscale
            .validate()
            .map_err(|e| match e.key.as_str() {
                "concurrency" | "min_scale" | "max_scale" => e,
                _ => e.under("autoscale"),
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
        Ok(())
    }

    /// `config` and `config_secrets`: bounded, valid keys and values, one
    /// source per key, known secret names.
    fn validate_config(&self) -> Result<(), InvalidSetting> {
        if self.config.len() + self.config_secrets.len() > MAX_CONFIG_KEYS {
            return Err(refuse(
                "config",
                format!("more than {MAX_CONFIG_KEYS} keys (config and config_secrets together)"),
            ));
        }
        for (key, value) in &self.config {
            rules::validate_config_key(key).map_err(|r| refuse("config", r))?;
            rules::validate_config_value(value).map_err(|r| refuse(format!("config.{key}"), r))?;
        }
        for (key, secret) in &self.config_secrets {
            rules::validate_config_key(key).map_err(|r| refuse("config_secrets", r))?;
            if self.config.contains_key(key) {
                return Err(refuse(
                    format!("config_secrets.{key}"),
                    format!("`{key}` is also set in `config`; give it one source"),
                ));
            }
            crate::secrets::validate_name(secret)
                .map_err(|e| refuse(format!("config_secrets.{key}"), e.to_string()))?;
        }
        Ok(())
    }

    /// The container-only settings, by the rules the container runtime spec
    /// applies again at each instance start.
    fn validate_container(&self) -> Result<(), InvalidSetting> {
        let c = &self.container;
        if let Some(cpu) = c.cpu {
            rules::cpus(cpu).map_err(|r| refuse("limits.cpu", r))?;
        }
        if let Some(pids) = c.pids {
            rules::pids(pids).map_err(|r| refuse("limits.pids", r))?;
        }
        if let Some(path) = &c.readiness_path {
            rules::readiness_path(path).map_err(|r| refuse("readiness_path", r))?;
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
    fn validate_networks(&self) -> Result<(), InvalidSetting> {
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
}
