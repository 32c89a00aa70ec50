//! Entries of an app's `allowed_outbound_hosts`: parsed and validated with
//! the rest of its settings, matched by the Wasm runtime's outbound policy.

/// One entry of `allowed_outbound_hosts`.
///
/// Forms: `host` (any port), `host:port`, `*.suffix` (any subdomain of
/// `suffix`, any port), `*.suffix:port`, `*` (anything), `*:port`. An optional
/// `http://` or `https://` prefix restricts the scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: Option<String>,
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    Suffix(String),
}

impl HostPattern {
    /// Parses one allow-list entry.
    ///
    /// # Errors
    /// A message saying why the entry is not a host pattern.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{entry}` is not a host pattern: {why}");
        let mut rest = entry.trim();
        let mut scheme = None;
        if let Some((s, r)) = rest.split_once("://") {
            if s != "http" && s != "https" {
                return Err(bad("scheme must be http or https"));
            }
            scheme = Some(s.to_string());
            rest = r;
        }
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(bad("expected `host`, `host:port` or `*.domain`"));
        }
        let (host, port) = split_host_port(rest).map_err(|e| bad(&e))?;
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(bad("a wildcard must be `*` or a leading `*.`"));
            }
            HostMatch::Suffix(suffix.to_string())
        } else if host.contains('*') {
            return Err(bad("a wildcard must be `*` or a leading `*.`"));
        } else {
            HostMatch::Exact(host)
        };
        Ok(Self { scheme, host, port })
    }

    /// Whether this entry names one IP address literally (`127.0.0.1:9000`,
    /// `[::1]`), which lets a guest reach that internal address.
    pub fn names_literal_ip(&self) -> bool {
        matches!(&self.host, HostMatch::Exact(h) if h.parse::<std::net::IpAddr>().is_ok())
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => *h == host,
            HostMatch::Suffix(s) => host
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        }
    }
}

/// Splits `host:port`, `[v6]:port`, `host` and `[v6]`.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed `[`".to_string())?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, Some(parse_port(p)?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err("junk after `]`".into()),
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((host, Some(parse_port(port)?))),
        Some(_) => Err("IPv6 addresses go in brackets".into()),
        None => Ok((s, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .map_err(|_| format!("`{p}` is not a port number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_patterns() {
        for bad in ["", "ftp://x", "a*b", "x:port", "x/y", "::1", "*."] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
