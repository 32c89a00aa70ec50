//! The app's configuration values through `wasi:config/store`: the
//! `[apps.NAME.config]` table of `berth.toml`, where a value may be a
//! secret's (resolved when read). Each call reads the host's current
//! values, so a value changed with `berth config set` is seen by the next
//! call, without a redeploy.
//!
//! ```no_run
//! # fn handler() -> berth_sdk::Result<()> {
//! let greeting = berth_sdk::config::get("greeting")?.unwrap_or_else(|| "hello".into());
//! let api_key = berth_sdk::config::require("api_key")?;
//! # let _ = (greeting, api_key);
//! # Ok(())
//! # }
//! ```
//!
//! For the `env` table (environment variables), see [`crate::env`] and
//! [`crate::config()`].

use std::fmt;

use crate::wit::wasi::config::store;

/// Why a configuration value could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The value is not set (from [`require`]).
    Missing {
        /// The key asked for.
        key: String,
    },
    /// The host could not read it (a secret it cannot decrypt, …), in its
    /// words.
    Host(String),
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Upstream(s) | store::Error::Io(s) => Self::Host(s),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { key } => write!(
                f,
                "config value `{key}` is not set (add it to the app's `config` table in berth.toml)"
            ),
            Self::Host(s) => write!(f, "config: {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// The value of `key`, or `None` when the app has none.
///
/// # Errors
///
/// If the host cannot read it.
pub fn get(key: &str) -> Result<Option<String>, Error> {
    Ok(store::get(key)?)
}

/// The value of `key`, which the app cannot do without.
///
/// # Errors
///
/// [`Error::Missing`] when it is not set, or as [`get`].
pub fn require(key: &str) -> Result<String, Error> {
    get(key)?.ok_or_else(|| Error::Missing { key: key.into() })
}

/// Every key and value.
///
/// # Errors
///
/// If the host cannot read them.
pub fn get_all() -> Result<Vec<(String, String)>, Error> {
    Ok(store::get_all()?)
}
