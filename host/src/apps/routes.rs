//! Routing: which app answers a request, and which of its revisions.
//!
//! A Host of `<app>.<domain>` (port ignored) selects that app; otherwise the
//! longest configured path prefix that matches the path on a segment
//! boundary does (`/hello` matches `/hello` and `/hello/x`, not
//! `/helloworld`). The guest sees the full original path. The table is
//! immutable and swapped whole when apps change, so a request keeps the
//! table it started with.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::revision::Revision;

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

    /// Every revision of the app, in traffic order.
    pub fn revisions(&self) -> impl Iterator<Item = &Arc<Revision>> {
        self.traffic.iter().map(|(r, _)| r)
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
        if let Some(label) = host.and_then(|h| self.label(h)) {
            let app = if label.bytes().any(|b| b.is_ascii_uppercase()) {
                self.by_name.get(&label.to_ascii_lowercase())
            } else {
                self.by_name.get(label)
            };
            if app.is_some() {
                return app;
            }
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, app)| app)
    }

    /// The app name a host (may carry a port) asks for: its first label,
    /// when the rest is the domain; as written (any case).
    pub fn label<'h>(&self, host: &'h str) -> Option<&'h str> {
        let host = strip_port(host).trim_end_matches('.');
        host.len().checked_sub(self.domain.len() + 1).and_then(|n| {
            let (label, rest) = host.split_at_checked(n)?;
            (rest.len() == self.domain.len() + 1
                && rest.as_bytes()[0] == b'.'
                && rest[1..].eq_ignore_ascii_case(&self.domain))
            .then_some(label)
        })
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

/// Whether route `prefix` covers `path` (whole segments only).
pub(super) fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_names_its_app_by_the_first_label_before_the_domain() {
        let t = RouteTable::new("example.test", Vec::new());
        assert_eq!(t.label("hello.example.test"), Some("hello"));
        assert_eq!(t.label("Hello.EXAMPLE.test.:8080"), Some("Hello"));
        assert_eq!(t.label("example.test"), None);
        assert_eq!(t.label("hello.example.test.evil"), None);
        assert_eq!(t.label("helloexample.test"), None);
        assert_eq!(t.label("é.example.test"), Some("é"));
    }

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
