//! [`InvalidSetting`]: a setting refused by validation, named by its key.
//! The one error of every settings check, berth's and the shim's alike:
//! `berth.toml`'s app tables, the admin API's deploy body, restored state,
//! the shim's `BERTH_*` variables, and the checks an instance start makes
//! again on what deploy accepted.

use std::fmt;

/// A refused setting: its key, relative to the table being checked (an
/// app's: `limits.memory`, `env.PORT`; empty for the table itself), and why,
/// naming the value as written and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// The key, e.g. `limits.cpu`; empty for the whole table.
    pub key: String,
    /// What is wrong and what is allowed.
    pub reason: String,
}

impl InvalidSetting {
    /// `key` refused for `reason`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same refusal with its key under the table `prefix` (`apps.web` +
    /// `limits.cpu` → `apps.web.limits.cpu`; an empty key becomes `prefix`).
    #[must_use]
    pub fn under(self, prefix: &str) -> Self {
        let key = match (prefix.is_empty(), self.key.is_empty()) {
            (true, _) => self.key,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{}", self.key),
        };
        Self { key, ..self }
    }
}

/// `key `limits.cpu`: why`, or only why when the key is empty.
impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "key `{}`: {}", self.key, self.reason)
        }
    }
}

impl std::error::Error for InvalidSetting {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_with_its_key_and_moved_under_a_table() {
        let e = InvalidSetting::new("limits.cpu", "0.001 is below 0.01");
        assert_eq!(e.to_string(), "key `limits.cpu`: 0.001 is below 0.01");
        let e = e.under("apps.web");
        assert_eq!(e.key, "apps.web.limits.cpu");
        assert_eq!(e.clone().under("").key, "apps.web.limits.cpu");
        let whole = InvalidSetting::new("", "needs `wasm` or `image`");
        assert_eq!(whole.to_string(), "needs `wasm` or `image`");
        assert_eq!(whole.under("apps.web").key, "apps.web");
    }
}
