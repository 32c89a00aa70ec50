//! The app's configuration.
//!
//! berth passes it as environment variables (`wasi:cli/environment`): the
//! app's name as `BERTH_APP`, and every entry of the app's `env` table in
//! `berth.toml`.

use std::env::VarError;
use std::fmt;

/// The name berth serves this app under (`BERTH_APP`); `None` when the host
/// does not set it, for example under `wasmtime serve`.
pub fn app_name() -> Option<String> {
    env("BERTH_APP")
}

/// The variable `key`, if it is set and is valid Unicode.
///
/// For settings the app cannot do without, [`config`] gives an error that
/// says what is missing.
pub fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// The required setting `key`.
///
/// # Errors
///
/// [`ConfigError`] if `key` is not set or is not valid Unicode. Returned from
/// a handler with `?`, it is logged and answered with a 500.
///
/// ```
/// # fn handler() -> berth_sdk::Result<()> {
/// let upstream = berth_sdk::config("UPSTREAM_URL")?;
/// # let _ = upstream;
/// # Ok(())
/// # }
/// ```
pub fn config(key: &str) -> Result<String, ConfigError> {
    std::env::var(key).map_err(|err| match err {
        VarError::NotPresent => ConfigError::Missing { key: key.into() },
        VarError::NotUnicode(_) => ConfigError::NotUnicode { key: key.into() },
    })
}

/// Why [`config`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The variable is not set.
    Missing {
        /// The variable asked for.
        key: String,
    },
    /// The variable is set, but not to valid Unicode.
    NotUnicode {
        /// The variable asked for.
        key: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { key } => write!(
                f,
                "app setting `{key}` is not set (add it to the app's `env` table in berth.toml)"
            ),
            Self::NotUnicode { key } => write!(f, "app setting `{key}` is not valid Unicode"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_setting_names_the_key() {
        let err = config("BERTH_SDK_TEST_SURELY_UNSET").unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                key: "BERTH_SDK_TEST_SURELY_UNSET".into()
            }
        );
        assert!(err.to_string().contains("`BERTH_SDK_TEST_SURELY_UNSET`"));
        assert_eq!(env("BERTH_SDK_TEST_SURELY_UNSET"), None);
    }
}
