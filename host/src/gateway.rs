//! The HTTP front door: routing a request to an app and one of its revisions,
//! request ids, and the plain-text error response that every refusal uses
//! (instance failures are mapped to statuses in `revision::serve_error`).
//!
//! Routing: a Host of `<app>.<domain>` (port ignored) selects that app;
//! otherwise the longest configured path prefix that matches the path on a
//! segment boundary does (`/hello` matches `/hello` and `/hello/x`, not
//! `/helloworld`). The guest sees the full original path.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

use crate::metrics::Metrics;
use crate::revision::Revision;
use crate::wasm::RequestInfo;

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the front door sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-berth-request-id";

/// A deployed app as the router sees it: where its traffic goes.
#[derive(Debug)]
pub struct RoutedApp {
    /// The app's name.
    pub name: String,
    /// Revisions with their share of traffic in percent (summing to 100).
    pub traffic: Vec<(Arc<Revision>, u32)>,
    counter: AtomicU64,
}

impl RoutedApp {
    /// An app whose traffic all goes to `revision`.
    pub fn single(name: &str, revision: Arc<Revision>) -> Self {
        Self::split(name, vec![(revision, 100)])
    }

    /// An app whose traffic is split between revisions by percentage.
    pub fn split(name: &str, traffic: Vec<(Arc<Revision>, u32)>) -> Self {
        Self {
            name: name.into(),
            traffic,
            counter: AtomicU64::new(0),
        }
    }

    /// The revision for the next request: a weighted round robin, so a
    /// 90/10 split is exact over every 100 requests.
    pub fn pick(&self) -> &Arc<Revision> {
        if self.traffic.len() == 1 {
            return &self.traffic[0].0;
        }
        // Spread each 100-request cycle: position i goes to the revision whose
        // cumulative share covers (i * 37) mod 100 (37 is coprime to 100).
        let i = self.counter.fetch_add(1, Ordering::Relaxed);
        let slot = ((i % 100) * 37 % 100) as u32;
        let mut acc = 0;
        for (rev, pct) in &self.traffic {
            acc += pct;
            if slot < acc {
                return rev;
            }
        }
        &self.traffic[self.traffic.len() - 1].0
    }
}

/// An immutable routing table; replaced whole when apps change.
#[derive(Debug, Default)]
pub struct RouteTable {
    domain: String,
    by_name: HashMap<String, Arc<RoutedApp>>,
    /// (prefix, app), longest prefix first.
    prefixes: Vec<(String, Arc<RoutedApp>)>,
}

impl RouteTable {
    /// Builds a table; `routes` gives each app's path prefixes.
    pub fn new(domain: &str, apps: Vec<(Arc<RoutedApp>, Vec<String>)>) -> Self {
        let mut by_name = HashMap::new();
        let mut prefixes = Vec::new();
        for (app, routes) in apps {
            for r in routes {
                prefixes.push((r, app.clone()));
            }
            by_name.insert(app.name.clone(), app);
        }
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self {
            domain: domain.to_ascii_lowercase(),
            by_name,
            prefixes,
        }
    }

    /// Finds the app for a host (may carry a port) and path.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<RoutedApp>> {
        if let Some(host) = host {
            let host = strip_port(host).trim_end_matches('.');
            if let Some(label) = host.len().checked_sub(self.domain.len() + 1).and_then(|n| {
                let (label, rest) = host.split_at(n);
                (rest.len() == self.domain.len() + 1
                    && rest.as_bytes()[0] == b'.'
                    && rest[1..].eq_ignore_ascii_case(&self.domain))
                .then_some(label)
            }) && let Some(app) = self.by_name.get(&label.to_ascii_lowercase())
            {
                return Some(app);
            }
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, app)| app)
    }

    /// Number of apps.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are no apps.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
}

/// The front door's shared state.
#[derive(Debug)]
pub struct Gateway {
    table: RwLock<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    id_prefix: u32,
    next_id: AtomicU64,
}

impl Gateway {
    /// A gateway routing through `table`, counting requests in `metrics`.
    pub fn new(table: RouteTable, metrics: Arc<Metrics>) -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Self {
            table: RwLock::new(Arc::new(table)),
            metrics,
            id_prefix: seed as u32,
            next_id: AtomicU64::new(0),
        }
    }

    /// Replaces the routing table (in-flight requests keep the old one).
    pub fn set_table(&self, table: RouteTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// The current routing table.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn request_id(&self) -> Arc<str> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:08x}", self.id_prefix).into()
    }

    /// Serves one request. Never fails: every error is a response.
    pub async fn handle<B>(&self, mut req: Request<B>) -> Result<Response<Body>, Infallible>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
    {
        let info = RequestInfo {
            id: self.request_id(),
            accepted: Instant::now(),
        };
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
        let table = self.table();
        let Some(app) = table.route(host.as_deref(), req.uri().path()).cloned() else {
            let msg = format!(
                "no app answers host `{}` and path `{}`\n",
                host.as_deref().unwrap_or("(none)"),
                req.uri().path()
            );
            return Ok(with_id(error(StatusCode::NOT_FOUND, msg), &info));
        };
        if host.is_none() {
            // HTTP/1.0 without Host: wasi:http needs an authority.
            req.headers_mut()
                .insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        let revision = app.pick().clone();
        let resp = revision
            .dispatch(req.map(|b| b.boxed_unsync()), &info)
            .await;
        // Counted (status, latency) when the response body is done.
        let resp = self.metrics.instrument(&app.name, info.accepted, resp);
        Ok(with_id(resp, &info))
    }
}

fn with_id(mut resp: Response<Body>, info: &RequestInfo) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&info.id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// A plain-text error response.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(msg.into()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segments() {
        assert!(prefix_matches("/hello", "/hello"));
        assert!(prefix_matches("/hello", "/hello/x"));
        assert!(!prefix_matches("/hello", "/helloworld"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.localhost:8080"), "a.localhost");
        assert_eq!(strip_port("a.localhost"), "a.localhost");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
