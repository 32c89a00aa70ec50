//! The rules of single settings that both deploy and an instance start
//! check, each written once: [`AppSpec::validate`](super::AppSpec::validate)
//! calls them at deploy, and the container runtime spec
//! ([`crate::container::spec`]) calls the same functions again on what it
//! is handed, so nothing that deploy accepts is refused when an instance
//! starts. Each returns the reason; the caller names the key. The
//! `wasi:config` key and value rules live here too: the config store the
//! guests read checks them again on every change.

/// Most `limits.pids`.
pub const MAX_PIDS: i64 = 1 << 22;
/// Most `limits.cpu`.
pub const MAX_CPUS: f64 = 1024.0;
/// Fewest `limits.cpu`: the kernel's smallest CFS quota, 1 ms per 100 ms
/// period.
pub const MIN_CPUS: f64 = 0.01;

/// The environment variables berth sets itself in every container (Cloud
/// Run's contract); a container app may not set them, in `env` or
/// `secrets`. Wasm guests get none of them, so a Wasm app may.
pub const RESERVED_ENV: [&str; 4] = ["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

/// An environment variable's name: not empty, no `=` or NUL.
///
/// # Errors
/// Why the name is refused.
pub fn env_name(var: &str) -> Result<(), String> {
    if var.is_empty() || var.contains('=') || var.contains('\0') {
        return Err(format!(
            "`{}` is not a valid variable name",
            var.escape_debug()
        ));
    }
    Ok(())
}

/// A container's environment variable name: [`env_name`], and not one of
/// [`RESERVED_ENV`].
///
/// # Errors
/// Why the name is refused.
pub fn container_env_name(var: &str) -> Result<(), String> {
    env_name(var)?;
    if RESERVED_ENV.contains(&var) {
        return Err(format!(
            "`{var}` is reserved: berth sets it in every container (Cloud Run's container \
             contract: {})",
            RESERVED_ENV.join(", ")
        ));
    }
    Ok(())
}

/// `limits.cpu`: a number of CPUs in [[`MIN_CPUS`], [`MAX_CPUS`]].
///
/// # Errors
/// Why the count is refused.
pub fn cpus(cpus: f64) -> Result<(), String> {
    if cpus.is_finite() && (MIN_CPUS..=MAX_CPUS).contains(&cpus) {
        Ok(())
    } else {
        Err(format!(
            "{cpus} is not a CPU count in [{MIN_CPUS}, {MAX_CPUS}] (the kernel's smallest \
             quota is 1 ms per 100 ms)"
        ))
    }
}

/// `limits.pids`: 1..=[`MAX_PIDS`].
///
/// # Errors
/// Why the count is refused.
pub fn pids(pids: i64) -> Result<(), String> {
    if (1..=MAX_PIDS).contains(&pids) {
        Ok(())
    } else {
        Err(format!("{pids} is outside 1..={MAX_PIDS}"))
    }
}

/// `readiness_path`: a path and query the probe's HTTP client can send: it
/// starts with `/`, holds no whitespace or control characters, and nothing
/// a URI may not hold unescaped (`<`, `>`, `` ` ``, …).
///
/// # Errors
/// Why the path is refused.
pub fn readiness_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`{}` must start with `/`", path.escape_debug()));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control())
        || path.parse::<http::uri::PathAndQuery>().is_err()
    {
        return Err(format!(
            "`{}` is not a path an HTTP request can carry (no spaces, control characters or \
             unescaped `<`, `>`, `` ` ``)",
            path.escape_debug()
        ));
    }
    Ok(())
}

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

/// A `wasi:config` value: at most [`MAX_CONFIG_VALUE`](super::MAX_CONFIG_VALUE) bytes, no NUL.
///
/// # Errors
/// Why the value is refused.
pub fn validate_config_value(value: &str) -> Result<(), String> {
    if value.len() > super::MAX_CONFIG_VALUE {
        return Err(format!(
            "{} bytes is over the limit of {} bytes",
            value.len(),
            super::MAX_CONFIG_VALUE
        ));
    }
    if value.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        for ok in ["A", "GREETING", "lower_case", "PORTS", "K_SERVICES"] {
            env_name(ok).unwrap();
            container_env_name(ok).unwrap();
        }
        for bad in ["", "A=B", "A\0B"] {
            assert!(env_name(bad).is_err(), "{bad:?}");
            assert!(container_env_name(bad).is_err(), "{bad:?}");
        }
        for reserved in RESERVED_ENV {
            env_name(reserved).unwrap();
            let why = container_env_name(reserved).unwrap_err();
            assert!(why.contains("is reserved"), "{why}");
        }
    }

    #[test]
    fn cpu_counts() {
        for ok in [MIN_CPUS, 0.5, 1.0, 2.5, MAX_CPUS] {
            cpus(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            0.0,
            -1.0,
            0.001,
            0.009,
            MAX_CPUS + 1.0,
            f64::NAN,
            f64::INFINITY,
        ] {
            assert!(cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pid_counts() {
        pids(1).unwrap();
        pids(MAX_PIDS).unwrap();
        for bad in [0, -1, MAX_PIDS + 1] {
            assert!(pids(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn readiness_paths() {
        for ok in ["/", "/healthz", "/ready?full=1", "/%3Cok%3E", "/caf\u{e9}"] {
            readiness_path(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in ["", "healthz", "/a b", "/x\r\nHost: evil", "/<x>", "/`x`"] {
            assert!(readiness_path(bad).is_err(), "{bad:?}");
        }
    }
}
