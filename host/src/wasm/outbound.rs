//! The outbound HTTP allow-list: a guest may only send requests to hosts its
//! app lists in `allowed_outbound_hosts`. Anything else fails *in the guest*
//! with `HTTP-request-denied`, at once, without a connection attempt.

use std::sync::Arc;

use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::HostPattern;

/// The allow-list of one app, shared by all its requests.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allowed: Arc<[HostPattern]>,
}

impl OutboundPolicy {
    /// Builds the policy from config entries.
    ///
    /// # Errors
    /// The first entry that is not a host pattern.
    pub fn new(entries: &[String]) -> Result<Self, String> {
        let allowed = entries
            .iter()
            .map(|e| HostPattern::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            allowed: allowed.into(),
        })
    }

    /// Whether the request URI may be sent.
    pub fn allows_uri(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        let scheme = uri.scheme_str().unwrap_or("http");
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allowed.iter().any(|p| p.allows(scheme, host, port))
    }
}

type ErrFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: ErrFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, ErrFuture), HttpError>> + Send>
    {
        if !self.allows_uri(request.uri()) {
            tracing::debug!(uri = %request.uri(), "outbound request denied by allow-list");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let default: &mut dyn WasiHttpHooks = Default::default();
        default.send_request(request, options, fut)
    }
}

/// Keeps the body type named so that changes upstream show up here.
#[allow(dead_code)]
type _OutgoingBody = HyperOutgoingBody;

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entries: &[&str], uri: &str) -> bool {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        OutboundPolicy::new(&entries)
            .unwrap()
            .allows_uri(&uri.parse().unwrap())
    }

    #[test]
    fn patterns() {
        assert!(!allows(&[], "http://example.com/"));
        assert!(allows(&["example.com"], "http://example.com/x"));
        assert!(allows(&["example.com"], "https://EXAMPLE.com:8443/x"));
        assert!(!allows(&["example.com"], "http://evil-example.com/"));
        assert!(allows(&["127.0.0.1:9000"], "http://127.0.0.1:9000/"));
        assert!(!allows(&["127.0.0.1:9000"], "http://127.0.0.1:9001/"));
        assert!(allows(&["*.example.com"], "http://api.example.com/"));
        assert!(!allows(&["*.example.com"], "http://example.com/"));
        assert!(!allows(&["*.example.com"], "http://badexample.com/"));
        assert!(allows(&["*"], "http://anything:1/"));
        assert!(allows(&["*:443"], "https://x/"));
        assert!(!allows(&["*:443"], "http://x/"));
        assert!(allows(&["https://x"], "https://x/"));
        assert!(!allows(&["https://x"], "http://x/"));
        assert!(allows(&["[::1]:80"], "http://[::1]/"));
    }
}
