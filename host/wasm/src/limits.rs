//! [`Limits`]: what one request of an app may use, their defaults and
//! ranges, and the parsers of the sizes and durations they are written in.
//! `berth.toml`'s `[apps.NAME.limits]` and the shim's `BERTH_*` variables
//! are both checked by [`Limits::validate`].

use std::time::Duration;

use crate::setting::InvalidSetting;

/// Default linear-memory cap per request (per memory of the component).
pub const DEFAULT_MEMORY_LIMIT: u64 = 128 * 1024 * 1024;
/// Default wall-clock deadline per request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest request body (Cloud Run's limit for HTTP/1).
pub const DEFAULT_REQUEST_BODY: u64 = 32 * 1024 * 1024;
/// Largest `limits.request_body` an app may ask for.
pub const MAX_REQUEST_BODY: u64 = 1024 * 1024 * 1024;
/// Largest memory cap an app may ask for; the engine reserves slots this big.
pub const MAX_MEMORY_LIMIT: u64 = 4 * 1024 * 1024 * 1024;
/// Smallest `limits.memory` (one Wasm page).
pub const MIN_MEMORY_LIMIT: u64 = 64 * 1024;
/// Longest `limits.timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default cap on the outbound connections (and DNS lookups on their way
/// to one) that all of an app's requests hold at once.
pub const DEFAULT_OUTBOUND_CONNECTIONS: u32 = 256;
/// Default cap on the outbound connections one request holds at once.
pub const DEFAULT_OUTBOUND_CONNECTIONS_PER_REQUEST: u32 = 32;
/// Most `limits.outbound_connections` an app may ask for (the host-wide
/// budget, `--max-outbound-connections`, bounds all apps together).
pub const MAX_OUTBOUND_CONNECTIONS: u32 = 10_000;
pub use crate::outbound::pool::{
    DEFAULT_IDLE_PER_HOST as DEFAULT_OUTBOUND_POOL_IDLE_PER_HOST,
    DEFAULT_IDLE_TIMEOUT as DEFAULT_OUTBOUND_POOL_IDLE_TIMEOUT,
    MAX_IDLE_TIMEOUT as MAX_OUTBOUND_POOL_IDLE_TIMEOUT,
};
/// The most idle outbound connections an app may keep per destination
/// (`limits.outbound_pool_idle_per_host`); it keeps at most its
/// `limits.outbound_connections` in all.
pub const MAX_OUTBOUND_POOL_IDLE_PER_HOST: u32 = 1024;

/// Per-request limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size in bytes of each linear memory.
    pub memory: u64,
    /// Wall-clock deadline for a request, from arrival to the end of the response.
    pub timeout: Duration,
    /// Largest request body in bytes (`413` above it).
    pub request_body: u64,
    /// Outbound connections all of the app's requests may hold at once.
    pub outbound_connections: u32,
    /// Outbound connections one request may hold at once.
    pub outbound_connections_per_request: u32,
    /// Idle outbound connections the app keeps per destination for its
    /// next requests (0: none, each request opens its own).
    pub outbound_pool_idle_per_host: u32,
    /// How long an idle outbound connection is kept.
    pub outbound_pool_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: DEFAULT_MEMORY_LIMIT,
            timeout: DEFAULT_TIMEOUT,
            request_body: DEFAULT_REQUEST_BODY,
            outbound_connections: DEFAULT_OUTBOUND_CONNECTIONS,
            outbound_connections_per_request: DEFAULT_OUTBOUND_CONNECTIONS_PER_REQUEST,
            outbound_pool_idle_per_host: DEFAULT_OUTBOUND_POOL_IDLE_PER_HOST,
            outbound_pool_idle_timeout: DEFAULT_OUTBOUND_POOL_IDLE_TIMEOUT,
        }
    }
}

impl Limits {
    /// Checks every limit against its range.
    ///
    /// # Errors
    /// The key (`limits.memory`, `limits.request_body`, `limits.timeout`,
    /// `limits.outbound_connections[_per_request]`,
    /// `limits.outbound_pool_idle_*`) and the reason.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let refuse = |key: &str, reason: String| Err(InvalidSetting::new(key, reason));
        let iec = |n: u64| bytesize::ByteSize::b(n).display().iec().to_string();
        if !(MIN_MEMORY_LIMIT..=MAX_MEMORY_LIMIT).contains(&self.memory) {
            return refuse(
                "limits.memory",
                format!(
                    "{} is outside the allowed range 64KiB..=4GiB",
                    iec(self.memory)
                ),
            );
        }
        if !(1..=MAX_REQUEST_BODY).contains(&self.request_body) {
            return refuse(
                "limits.request_body",
                format!("{} is outside 1B..=1GiB", iec(self.request_body)),
            );
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return refuse(
                "limits.timeout",
                format!("{:?} is outside (0s, {MAX_TIMEOUT:?}]", self.timeout),
            );
        }
        if !(1..=MAX_OUTBOUND_CONNECTIONS).contains(&self.outbound_connections) {
            return refuse(
                "limits.outbound_connections",
                format!(
                    "{} is outside 1..={MAX_OUTBOUND_CONNECTIONS}",
                    self.outbound_connections
                ),
            );
        }
        if !(1..=self.outbound_connections).contains(&self.outbound_connections_per_request) {
            return refuse(
                "limits.outbound_connections_per_request",
                format!(
                    "{} is outside 1..={} (limits.outbound_connections)",
                    self.outbound_connections_per_request, self.outbound_connections
                ),
            );
        }
        if self.outbound_pool_idle_per_host > MAX_OUTBOUND_POOL_IDLE_PER_HOST {
            return refuse(
                "limits.outbound_pool_idle_per_host",
                format!(
                    "{} is outside 0..={MAX_OUTBOUND_POOL_IDLE_PER_HOST}",
                    self.outbound_pool_idle_per_host
                ),
            );
        }
        if self.outbound_pool_idle_timeout.is_zero()
            || self.outbound_pool_idle_timeout > MAX_OUTBOUND_POOL_IDLE_TIMEOUT
        {
            return refuse(
                "limits.outbound_pool_idle_timeout",
                format!(
                    "{:?} is outside (0s, {MAX_OUTBOUND_POOL_IDLE_TIMEOUT:?}]",
                    self.outbound_pool_idle_timeout
                ),
            );
        }
        Ok(())
    }

    /// How the app pools its idle outbound connections.
    pub fn outbound_pool(&self) -> crate::outbound::pool::PoolSettings {
        crate::outbound::pool::PoolSettings {
            // Idle connections hold the app's places: never more than it has.
            idle_per_host: self
                .outbound_pool_idle_per_host
                .min(self.outbound_connections),
            idle_timeout: self.outbound_pool_idle_timeout,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("much").is_err());
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let key = |l: Limits| l.validate().unwrap_err().key;
        let d = Limits::default();
        assert_eq!(key(Limits { memory: 1024, ..d }), "limits.memory");
        assert_eq!(
            key(Limits {
                memory: 8 << 30,
                ..d
            }),
            "limits.memory"
        );
        assert_eq!(
            key(Limits {
                request_body: 0,
                ..d
            }),
            "limits.request_body"
        );
        assert_eq!(
            key(Limits {
                timeout: Duration::ZERO,
                ..d
            }),
            "limits.timeout"
        );
        assert_eq!(
            key(Limits {
                timeout: Duration::from_secs(3601),
                ..d
            }),
            "limits.timeout"
        );
        assert_eq!(
            key(Limits {
                outbound_connections: 0,
                ..d
            }),
            "limits.outbound_connections"
        );
        assert_eq!(
            key(Limits {
                outbound_connections: MAX_OUTBOUND_CONNECTIONS + 1,
                ..d
            }),
            "limits.outbound_connections"
        );
        assert_eq!(
            key(Limits {
                outbound_connections: 8,
                outbound_connections_per_request: 9,
                ..d
            }),
            "limits.outbound_connections_per_request"
        );
        assert_eq!(
            key(Limits {
                outbound_pool_idle_per_host: MAX_OUTBOUND_POOL_IDLE_PER_HOST + 1,
                ..d
            }),
            "limits.outbound_pool_idle_per_host"
        );
        // Above the app's connection cap is fine: the pool keeps at most
        // that many (the default of 16 with a cap of 1, say).
        let small = Limits {
            outbound_connections: 1,
            outbound_connections_per_request: 1,
            ..d
        };
        assert_eq!(small.validate(), Ok(()));
        assert_eq!(small.outbound_pool().idle_per_host, 1);
        assert_eq!(
            Limits {
                outbound_pool_idle_per_host: 0,
                ..d
            }
            .validate(),
            Ok(())
        );
        for timeout in [Duration::ZERO, Duration::from_secs(601)] {
            assert_eq!(
                key(Limits {
                    outbound_pool_idle_timeout: timeout,
                    ..d
                }),
                "limits.outbound_pool_idle_timeout"
            );
        }
    }
}
