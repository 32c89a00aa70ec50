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
//! allowed_networks = []             # private networks it may reach (CIDR), default none
//! [apps.hello.limits]
//! memory = "64MiB"
//! timeout = "30s"
//! ```
//!
//! Loading is strict: an unknown key, a bad value or an inconsistent app is
//! refused with the file, the key and the reason ([`ConfigError`]).
//!
//! # Layout
//! - [`file`](mod@file): the shapes as written ([`AppConfig`] is also the admin API's
//!   deploy body and the state file's record of an app).
//! - [`spec`]: [`AppSpec`], the validated settings of one app; its
//!   autoscaling is the autoscaler's own [`KpaConfig`](crate::autoscale::KpaConfig);
//!   a refused setting is an [`InvalidSetting`] (the engine's, re-exported),
//!   and [`spec::rules`] holds the single-setting rules an instance start
//!   checks again.
//! - [`HostPattern`], one entry of `allowed_outbound_hosts`, and the
//!   [`Limits`] with their ranges and parsers are the Wasm engine's
//!   (`berth_wasm`), re-exported here.

pub mod file;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use berth_wasm::HostPattern;
use file::RawConfig;
pub use file::{AppConfig, RawAutoscale, RawLimits, SizeValue};
pub use spec::{
    AppSpec, ContainerSettings, InvalidSetting, Limits, NetworkMode, Scaling, SeccompMode, Source,
};

/// Default domain under which apps are reachable as `<app>.<domain>`.
pub const DEFAULT_DOMAIN: &str = "localhost";
pub use berth_wasm::limits::{
    DEFAULT_MEMORY_LIMIT, DEFAULT_REQUEST_BODY, DEFAULT_TIMEOUT, MAX_MEMORY_LIMIT,
    MAX_REQUEST_BODY, parse_duration, parse_size,
};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Apps answer at `<app>.<domain>`.
    pub domain: String,
    /// Apps by name, in name order.
    pub apps: BTreeMap<String, AppSpec>,
    /// `[keyvalue.stores.NAME]`: key-value stores besides the embedded one.
    pub keyvalue_stores: BTreeMap<String, berth_wasm::keyvalue::StoreConfig>,
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
            let spec = AppSpec::from_config(&name, &app, base).map_err(|e| {
                let e = e.under(&format!("apps.{name}"));
                invalid(e.key, e.reason)
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
        let mut keyvalue_stores = BTreeMap::new();
        for (name, store) in raw.keyvalue.stores {
            let key = format!("keyvalue.stores.{name}");
            berth_wasm::keyvalue::validate_bucket(&name).map_err(|r| invalid(key.clone(), r))?;
            let config = match (store.backend.as_str(), store.url, store.url_secret) {
                ("redis", Some(url), None) => {
                    if !(url.starts_with("redis://")
                        || url.starts_with("rediss://")
                        || url.starts_with("redis+unix://"))
                    {
                        return Err(invalid(
                            format!("{key}.url"),
                            "must start with redis://, rediss:// or redis+unix://".into(),
                        ));
                    }
                    berth_wasm::keyvalue::StoreConfig::Redis { url }
                }
                ("redis", None, Some(secret)) => {
                    crate::secrets::validate_name(&secret)
                        .map_err(|e| invalid(format!("{key}.url_secret"), e.to_string()))?;
                    berth_wasm::keyvalue::StoreConfig::RedisFromSecret { secret }
                }
                ("redis", _, _) => {
                    return Err(invalid(
                        key,
                        "backend = \"redis\" needs exactly one of `url` and `url_secret`".into(),
                    ));
                }
                ("embedded", None, None) => berth_wasm::keyvalue::StoreConfig::Embedded,
                ("embedded", _, _) => {
                    return Err(invalid(key, "the embedded store has no url".into()));
                }
                (other, _, _) => {
                    return Err(invalid(
                        format!("{key}.backend"),
                        format!(
                            "`{other}` is not a key-value backend; use \"redis\" or \"embedded\""
                        ),
                    ));
                }
            };
            keyvalue_stores.insert(name, config);
        }
        Ok(Self {
            domain,
            apps,
            keyvalue_stores,
        })
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
    use std::time::Duration;

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
    fn keyvalue_and_config_settings_parse_and_name_their_key() {
        let cfg = parse(
            r#"
            [keyvalue.stores.sessions]
            backend = "redis"
            url = "redis://127.0.0.1:6379"
            [keyvalue.stores.cache]
            backend = "redis"
            url_secret = "redis-url"
            [apps.a]
            wasm = "a.wasm"
            keyvalue = ["default", "sessions"]
            [apps.a.keyvalue_limits]
            value_size = "4KiB"
            batch = 10
            [apps.a.config]
            greeting = "hi"
            [apps.a.config_secrets]
            token = "api-token"
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg.keyvalue_stores["cache"],
            berth_wasm::keyvalue::StoreConfig::RedisFromSecret {
                secret: "redis-url".into()
            }
        );
        let app = &cfg.apps["a"];
        assert_eq!(app.keyvalue, vec!["default", "sessions"]);
        assert_eq!(app.keyvalue_limits.value_size, 4096);
        assert_eq!(app.keyvalue_limits.batch, 10);
        assert_eq!(app.config["greeting"], "hi");
        // Round trip through the API's shape.
        let back = AppSpec::from_config("a", &app.to_config(), Path::new("/")).unwrap();
        assert_eq!(&back, app);

        for (text, key) in [
            (
                "[keyvalue.stores.x]\nbackend = \"memcached\"\n",
                "keyvalue.stores.x.backend",
            ),
            (
                "[keyvalue.stores.x]\nbackend = \"redis\"\nurl = \"http://h\"\n",
                "keyvalue.stores.x.url",
            ),
            (
                "[keyvalue.stores.x]\nbackend = \"redis\"\n",
                "keyvalue.stores.x",
            ),
            (
                "[apps.a]\nwasm = \"x\"\nkeyvalue = [\"A\"]\n",
                "apps.a.keyvalue",
            ),
            (
                "[apps.a]\nwasm = \"x\"\nkeyvalue = [\"a\", \"a\"]\n",
                "apps.a.keyvalue",
            ),
            (
                "[apps.a]\nwasm = \"x\"\n[apps.a.keyvalue_limits]\nbatch = 0\n",
                "apps.a.keyvalue_limits.batch",
            ),
            (
                "[apps.a]\nwasm = \"x\"\n[apps.a.config]\n\"bad key\" = \"v\"\n",
                "apps.a.config",
            ),
            (
                "[apps.a]\nwasm = \"x\"\n[apps.a.config]\nk = \"v\"\n[apps.a.config_secrets]\nk = \"s\"\n",
                "apps.a.config_secrets.k",
            ),
        ] {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.contains(&format!("key `{key}`")), "{text}: {msg}");
        }
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

    /// A rate below 1 once made the "lower bound" `ready / rate` exceed
    /// `ready` and doubled an app every decision (2,048 instances in 8 s):
    /// it is refused, naming the key, as is every out-of-range number.
    #[test]
    fn runaway_numbers_are_refused_naming_the_key() {
        for (table, key) in [
            (
                "[apps.a.autoscale]\nmax_scale_down_rate = 0.5",
                "apps.a.autoscale.max_scale_down_rate",
            ),
            (
                "[apps.a.autoscale]\nmax_scale_up_rate = 1.0",
                "apps.a.autoscale.max_scale_up_rate",
            ),
            (
                "[apps.a.autoscale]\nutilization = 2.0",
                "apps.a.autoscale.utilization",
            ),
            (
                "[apps.a.autoscale]\npanic_window_percentage = 0.0",
                "apps.a.autoscale.panic_window_percentage",
            ),
            (
                "[apps.a.autoscale]\ntick = \"1ms\"",
                "apps.a.autoscale.tick",
            ),
            (
                "[apps.a.autoscale]\nstable_window = \"2h\"",
                "apps.a.autoscale.stable_window",
            ),
            (
                "[apps.a.autoscale]\nqueue_depth = 0",
                "apps.a.autoscale.queue_depth",
            ),
            (
                "[apps.a.autoscale]\nqueue_timeout = \"1h\"",
                "apps.a.autoscale.queue_timeout",
            ),
            (
                "[apps.a.autoscale]\ntarget = 0.0",
                "apps.a.autoscale.target",
            ),
            (
                "[apps.a.autoscale]\ninitial_scale = 200",
                "apps.a.autoscale.initial_scale",
            ),
            ("[apps.a.limits]\ntimeout = \"2h\"", "apps.a.limits.timeout"),
            ("[apps.a.limits]\npids = 0", "apps.a.limits.pids"),
            ("[apps.a.limits]\ncpu = 0.0", "apps.a.limits.cpu"),
            ("[apps.a.limits]\nmemory = \"8GiB\"", "apps.a.limits.memory"),
        ] {
            let text = format!("[apps.a]\nwasm = \"x\"\n{table}\n");
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains(&format!("key `{key}`")), "{table}: {msg}");
        }
        for (line, key) in [
            ("max_scale = 0", "apps.a.max_scale"),
            ("max_scale = 20000", "apps.a.max_scale"),
            ("concurrency = 5000", "apps.a.concurrency"),
            ("min_scale = 5\nmax_scale = 2", "apps.a.min_scale"),
        ] {
            let text = format!("[apps.a]\nwasm = \"x\"\n{line}\n");
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains(&format!("key `{key}`")), "{line}: {msg}");
        }
    }

    #[test]
    fn max_scale_defaults_to_a_finite_number() {
        let cfg = parse("[apps.a]\nwasm = \"x\"\n").unwrap();
        assert_eq!(cfg.apps["a"].scaling.autoscale.max_scale, 100);
    }

    #[test]
    fn secrets_name_a_variable_and_a_secret() {
        let cfg = parse("[apps.a]\nwasm = \"x\"\nsecrets = { DB = \"db-password\" }\n").unwrap();
        assert_eq!(cfg.apps["a"].secrets["DB"], "db-password");
        for (secrets, key) in [
            ("{ DB = \"no spaces\" }", "apps.a.secrets.DB"),
            ("{ \"A=B\" = \"x\" }", "apps.a.secrets"),
        ] {
            let text = format!("[apps.a]\nwasm = \"x\"\nsecrets = {secrets}\n");
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains(&format!("key `{key}`")), "{secrets}: {msg}");
        }
        let msg = parse("[apps.a]\nwasm = \"x\"\nenv = { DB = \"1\" }\nsecrets = { DB = \"s\" }\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("also set in `env`"), "{msg}");
    }
}

/// Random settings thrown at the loader and, when accepted, at the
/// autoscaler: whatever passes validation never asks for more than
/// `max_scale` instances, and with no traffic never grows.
#[cfg(test)]
mod properties {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;
    use crate::autoscale::Kpa;

    /// Unset most often; else mostly in `plausible`, sometimes anything.
    fn knob(plausible: std::ops::Range<f64>) -> impl Strategy<Value = Option<f64>> {
        proptest::option::weighted(
            0.4,
            prop_oneof![
                6 => plausible,
                1 => any::<f64>(),
                1 => prop_oneof![Just(0.0), Just(0.5), Just(1.0), Just(-1.0), Just(f64::NAN), Just(f64::INFINITY)],
            ],
        )
    }

    fn duration() -> impl Strategy<Value = Option<String>> {
        proptest::option::weighted(
            0.4,
            prop_oneof![
                4 => (1u64..120).prop_map(|s| format!("{s}s")),
                1 => (0u64..5000).prop_map(|ms| format!("{ms}ms")),
                1 => (0u64..100_000).prop_map(|s| format!("{s}s")),
                1 => Just("soon".to_string()),
            ],
        )
    }

    fn count(plausible: std::ops::Range<u32>) -> impl Strategy<Value = Option<u32>> {
        proptest::option::weighted(
            0.5,
            prop_oneof![4 => plausible, 1 => any::<u32>(), 1 => Just(0u32)],
        )
    }

    fn raw() -> impl Strategy<Value = AppConfig> {
        (
            (
                knob(0.1..200.0),
                knob(0.1..1.0),
                knob(1.0..100.0),
                knob(110.0..1000.0),
                knob(1.0..2000.0),
                knob(0.1..10.0),
            ),
            (duration(), duration(), duration(), count(0..20)),
            (
                count(0..5),
                count(1..50),
                count(0..100),
                proptest::option::of(1usize..1000),
            ),
        )
            .prop_map(|(f, d, n)| AppConfig {
                wasm: Some("/x.wasm".into()),
                concurrency: n.2,
                min_scale: n.0,
                max_scale: n.1,
                autoscale: RawAutoscale {
                    target: f.0,
                    utilization: f.1,
                    panic_window_percentage: f.2,
                    panic_threshold_percentage: f.3,
                    max_scale_up_rate: f.4,
                    max_scale_down_rate: f.5,
                    stable_window: d.0,
                    scale_to_zero_grace: d.1,
                    tick: d.2,
                    initial_scale: d.3,
                    queue_depth: n.3,
                    ..RawAutoscale::default()
                },
                ..AppConfig::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn accepted_settings_never_run_away(
            app in raw(),
            load in proptest::collection::vec(0.0..5000.0f64, 1..40),
        ) {
            let Ok(spec) = AppSpec::from_config("a", &app, Path::new("/")) else {
                return Ok(());
            };
            let mut cfg = spec.scaling.autoscale.clone();
            cfg.concurrency.get_or_insert(0);
            let max = cfg.max_scale;
            prop_assert!((1..=10_000).contains(&max));
            let target = cfg.per_instance_target();
            let floor = cfg.initial_scale.min(max).max(cfg.min_scale).max(1);
            let t0 = Instant::now();
            let mut kpa = Kpa::new(cfg, t0);
            let mut ready = kpa.desired();
            // A burst of traffic, then a long quiet spell, a second a step.
            let steps = load.iter().copied().chain(std::iter::repeat_n(0.0, 300));
            let mut peak_demand = 0.0f64;
            for (i, demand) in steps.enumerate() {
                let now = t0 + Duration::from_secs(i as u64);
                kpa.record(now, demand);
                peak_demand = peak_demand.max(demand);
                let d = kpa.decide(now, ready);
                prop_assert!(d.desired <= max, "{} > max_scale {}", d.desired, max);
                // Never more than the busiest moment justifies: no runaway.
                let justified = ((peak_demand / target).ceil() as u32).max(floor);
                prop_assert!(
                    d.desired <= justified.min(max),
                    "asked for {} instances; the peak demand {} justifies {} (target {})",
                    d.desired, peak_demand, justified, target
                );
                ready = d.desired;
            }
        }
    }
}
