//! The pages and fragments: each reads the typed views the admin API
//! serialises ([`Apps::list`](crate::apps::Apps::list) and the rest) and
//! renders a template. A read that fails is shown on the page.

use std::path::Path;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use minijinja::{Environment, Value, context};
use serde::Serialize;

use super::Console;
use super::figures::Figures;
use super::respond::{html, json, plain, secure};
use crate::apps::AppView;
use crate::http::{Body, BoxError};

/// One row of the apps table.
#[derive(Debug, Serialize)]
struct Row {
    app: AppView,
    figures: Figures,
}

/// The cold starts of one kind on this host.
#[derive(Debug, Serialize)]
struct KindStarts {
    kind: &'static str,
    count: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// What the chart of an app page polls.
#[derive(Debug, Serialize)]
struct Stats {
    ready: u32,
    starting: u32,
    desired: u32,
    in_flight: usize,
    requests: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// The latest `berth bench cold-start` result left in the data dir.
#[derive(Debug, Default)]
struct Bench {
    table: Option<String>,
    has_chart: bool,
    /// Why the table could not be read (it exists).
    error: Option<String>,
}

impl Console {
    /// Renders template `name`; a template error is a 500 page.
    pub(super) fn page(&self, status: StatusCode, name: &str, ctx: Value) -> Response<Body> {
        match render(&self.templates, name, ctx) {
            Ok(text) => html(status, text),
            Err(e) => {
                tracing::error!("console template {name}: {e:#}");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render\n",
                )
            }
        }
    }

    fn rows(&self) -> Vec<Row> {
        let apps = self.apps.list().apps;
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        self.window.keep_only(names.iter().copied());
        let counters = self.apps.figures(&names);
        let figures: Vec<Figures> = names
            .iter()
            .zip(counters)
            .map(|(name, c)| self.window.figures(name, c))
            .collect();
        apps.into_iter()
            .zip(figures)
            .map(|(app, figures)| Row { app, figures })
            .collect()
    }

    fn figures(&self, name: &str) -> Figures {
        let counters = self.apps.figures(&[name]).pop().unwrap_or_default();
        self.window.figures(name, counters)
    }

    /// `/ui/`: every app.
    pub(super) fn apps_page(&self, csrf: &str) -> Response<Body> {
        let rows = self.rows();
        self.page(
            StatusCode::OK,
            "apps.html",
            context! { csrf, rows, nav => "apps" },
        )
    }

    /// The rows of the apps table, polled.
    pub(super) fn app_rows(&self) -> Response<Body> {
        let rows = self.rows();
        self.page(StatusCode::OK, "app_rows.html", context! { rows })
    }

    /// `/ui/apps/{name}`, with `error` (a refused form) above it.
    pub(super) async fn app_page(
        &self,
        name: &str,
        csrf: &str,
        error: Option<String>,
    ) -> Response<Body> {
        let app = match self.apps.view(name) {
            Ok(app) => app,
            Err(e) => {
                return self.page(
                    StatusCode::NOT_FOUND,
                    "layout.html",
                    context! { csrf, error => e.to_string() },
                );
            }
        };
        let figures = self.figures(name);
        let settings = settings(&app);
        let (buckets, buckets_error) = match self.apps.buckets(name).await {
            Ok(kv) => (kv.buckets, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let status = if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        self.page(
            status,
            "app.html",
            context! { csrf, app, figures, settings, buckets, buckets_error, error },
        )
    }

    /// The live part of an app page, polled.
    pub(super) fn app_live(&self, name: &str) -> Response<Body> {
        match self.apps.view(name) {
            Ok(app) => {
                let figures = self.figures(name);
                self.page(StatusCode::OK, "app_live.html", context! { app, figures })
            }
            Err(e) => plain(StatusCode::NOT_FOUND, &format!("{e}\n")),
        }
    }

    /// The chart's numbers.
    pub(super) fn app_stats(&self, name: &str) -> Response<Body> {
        let app = match self.apps.view(name) {
            Ok(app) => app,
            Err(e) => return plain(StatusCode::NOT_FOUND, &format!("{e}\n")),
        };
        let f = self.figures(name);
        json(&Stats {
            ready: app.instances.ready,
            starting: app.instances.starting,
            desired: app.instances.desired,
            in_flight: app.in_flight,
            requests: f.requests,
            p50_ms: f.p50_ms,
            p99_ms: f.p99_ms,
        })
    }

    /// The app's log as server-sent events: one event per line, from the
    /// same follow as `berth logs -f`.
    pub(super) async fn log_events(&self, name: &str) -> Response<Body> {
        if let Err(e) = crate::apps::ops::check_name(name) {
            return plain(StatusCode::BAD_REQUEST, &format!("{e}\n"));
        }
        let chunks = match crate::api::logs::stream(&self.apps, name, true).await {
            Ok(chunks) => chunks,
            Err(e @ crate::api::logs::LogError::UnknownApp(_)) => {
                return plain(StatusCode::NOT_FOUND, &format!("{e}\n"));
            }
            Err(e @ crate::api::logs::LogError::Io { .. }) => {
                return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n"));
            }
        };
        let events = futures::stream::unfold(
            (chunks, Vec::<u8>::new()),
            |(mut chunks, mut pending)| async move {
                use futures::StreamExt as _;
                loop {
                    pending.extend_from_slice(&chunks.next().await?);
                    if let Some(events) = sse_events(&mut pending) {
                        let frame = Ok::<_, BoxError>(Frame::data(events));
                        return Some((frame, (chunks, pending)));
                    }
                }
            },
        );
        let mut resp = Response::new(StreamBody::new(events).boxed_unsync());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        secure(resp)
    }

    /// `/ui/cold-starts`: this host's cold starts by kind and revision, and
    /// the latest benchmark.
    pub(super) fn cold_starts(&self, csrf: &str) -> Response<Body> {
        let kinds: Vec<KindStarts> = self
            .apps
            .cold_start_figures()
            .into_iter()
            .map(|c| KindStarts {
                kind: c.kind.as_str(),
                count: c.count,
                p50_ms: c.durations.quantile(0.5).map(|s| s * 1000.0),
                p99_ms: c.durations.quantile(0.99).map(|s| s * 1000.0),
            })
            .collect();
        let apps = self.apps.list().apps;
        let bench = read_bench(&self.apps.data_dir().join("bench"));
        let data_dir = self.apps.data_dir().display().to_string();
        self.page(
            StatusCode::OK,
            "cold_starts.html",
            context! {
                csrf, kinds, apps, data_dir,
                table => bench.table, has_chart => bench.has_chart, bench_error => bench.error,
            },
        )
    }

    /// The benchmark's chart, as a sandboxed image.
    pub(super) fn bench_svg(&self) -> Response<Body> {
        let path = self.apps.data_dir().join("bench").join("cold-start.svg");
        match std::fs::read(&path) {
            Ok(svg) => {
                let mut resp = Response::new(crate::http::full(svg));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("image/svg+xml"),
                );
                let mut resp = secure(resp);
                // Shown through <img>; never as a document that runs script.
                resp.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                    ),
                );
                resp
            }
            Err(_) => plain(StatusCode::NOT_FOUND, "no cold-start chart yet\n"),
        }
    }
}

/// Renders template `name` of `templates` with `ctx`.
fn render(
    templates: &Environment<'static>,
    name: &str,
    ctx: Value,
) -> Result<String, minijinja::Error> {
    templates.get_template(name)?.render(ctx)
}

/// The complete lines of `pending` as server-sent events (taken out of it),
/// control characters escaped as `berth logs` escapes them; `None` before a
/// line is complete.
fn sse_events(pending: &mut Vec<u8>) -> Option<Bytes> {
    let last = pending.iter().rposition(|b| *b == b'\n')?;
    let complete: Vec<u8> = pending.drain(..=last).collect();
    let mut out = String::new();
    for line in String::from_utf8_lossy(&complete).lines() {
        out.push_str("data: ");
        // Visible escapes: a person reads the tail.
        out.push_str(&crate::http::escape_controls(line));
        out.push_str("\n\n");
    }
    Some(Bytes::from(out))
}

/// The latest benchmark in `dir`: a table that is missing is no result
/// yet; one that cannot be read is an error to show.
fn read_bench(dir: &Path) -> Bench {
    let path = dir.join("cold-start.txt");
    let (table, error) = match std::fs::read_to_string(&path) {
        Ok(text) => (Some(text), None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
        Err(e) => (None, Some(format!("cannot read `{}`: {e}", path.display()))),
    };
    Bench {
        table,
        has_chart: dir.join("cold-start.svg").is_file(),
        error,
    }
}

/// The built-in templates.
///
/// # Panics
/// When one does not parse (caught by the unit tests).
pub(super) fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, text) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("login.html", include_str!("templates/login.html")),
        ("apps.html", include_str!("templates/apps.html")),
        ("app_rows.html", include_str!("templates/app_rows.html")),
        ("app.html", include_str!("templates/app.html")),
        ("app_live.html", include_str!("templates/app_live.html")),
        ("deploy.html", include_str!("templates/deploy.html")),
        (
            "cold_starts.html",
            include_str!("templates/cold_starts.html"),
        ),
    ] {
        env.add_template(name, text)
            .unwrap_or_else(|e| panic!("console template {name}: {e}"));
    }
    env
}

/// The app's settings as `key = value` rows. Secrets are named, never read.
fn settings(app: &AppView) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&app.config) {
        flatten("", &serde_json::Value::Object(map), &mut rows);
    }
    rows.retain(|(k, _)| !k.is_empty());
    rows
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Null => {}
        serde_json::Value::Array(a) if a.is_empty() => {}
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn every_template_renders() {
        let env = templates();
        let app = serde_json::json!({
            "name": "a<zb", "state": "ready", "kind": "wasm", "revision": "a-00001",
            "routes": ["/x"], "config": {}, "origin": "api", "deployed_at": "now",
            "instances": {"ready": 1, "starting": 0, "desired": 1},
            "queued": 0, "in_flight": 0, "cold_starts": 1,
            "revisions": [{"id": "a-00001", "kind": "wasm", "traffic_percent": 100,
                "instances": {"ready": 1, "starting": 0, "desired": 1}, "queued": 0,
                "in_flight": 0, "cold_starts": 1, "last_cold_start_ms": 1.25}],
        });
        let figures = serde_json::json!({
            "requests": 3, "rate": 1.5, "p50_ms": 2.0, "p99_ms": 9.5,
            "cpu_seconds": null, "gb_seconds": null, "instance_seconds": 4.0,
        });
        let kinds =
            serde_json::json!([{"kind": "wasm", "count": 1, "p50_ms": 1.0, "p99_ms": null}]);
        let ctx = context! {
            csrf => "t", app, figures, rows => vec![context! { app, figures }],
            settings => vec![("env.A", "<zi>")], kinds, apps => vec![app.clone()],
            table => "table", has_chart => true, data_dir => "/d", error => "ze<z",
            form => BTreeMap::<String, String>::new(),
        };
        for name in [
            "login.html",
            "apps.html",
            "app_rows.html",
            "app.html",
            "app_live.html",
            "deploy.html",
            "cold_starts.html",
            "layout.html",
        ] {
            let html = render(&env, name, ctx.clone()).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(
                !html.contains("a<zb") && !html.contains("ze<z") && !html.contains("<zi>"),
                "{name} escapes"
            );
        }
    }

    /// A read that fails is on the page, not an empty list.
    #[test]
    fn failed_reads_are_shown() {
        let env = templates();
        let app = serde_json::json!({
            "name": "a", "state": "ready", "kind": "wasm", "revision": "a-00001",
            "routes": [], "config": {}, "origin": "api", "deployed_at": "now",
            "instances": {"ready": 1, "starting": 0, "desired": 1},
            "queued": 0, "in_flight": 0, "cold_starts": 1, "revisions": [],
        });
        let figures = serde_json::json!({
            "requests": 0, "rate": null, "p50_ms": null, "p99_ms": null,
            "cpu_seconds": null, "gb_seconds": null, "instance_seconds": 0.0,
        });
        let html = render(
            &env,
            "app.html",
            context! { csrf => "t", app, figures, settings => Vec::<(String, String)>::new(),
            buckets => Vec::<String>::new(), buckets_error => "no app `a`" },
        )
        .unwrap();
        assert!(html.contains("id=\"buckets-error\""), "{html}");
        assert!(html.contains("no app `a`"), "{html}");
        let html = render(
            &env,
            "cold_starts.html",
            context! { csrf => "t", kinds => Vec::<String>::new(), apps => Vec::<String>::new(),
                data_dir => "/d", bench_error => "cannot read `/d/bench/cold-start.txt`: Is a directory" },
        )
        .unwrap();
        assert!(html.contains("id=\"bench-error\""), "{html}");
        assert!(html.contains("Is a directory"), "{html}");
        assert!(!html.contains("No result yet"), "{html}");
    }

    #[test]
    fn a_bench_table_that_cannot_be_read_is_an_error_a_missing_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let none = read_bench(dir.path());
        assert!(none.table.is_none() && none.error.is_none() && !none.has_chart);
        std::fs::create_dir(dir.path().join("cold-start.txt")).unwrap();
        let broken = read_bench(dir.path());
        assert!(broken.table.is_none());
        assert!(
            broken
                .error
                .as_deref()
                .is_some_and(|e| e.contains("cold-start.txt")),
            "{broken:?}"
        );
    }

    #[test]
    fn log_lines_become_events_once_complete() {
        let mut pending = b"one\ntw".to_vec();
        assert_eq!(sse_events(&mut pending).unwrap(), "data: one\n\n");
        assert_eq!(pending, b"tw");
        assert_eq!(sse_events(&mut pending), None);
        pending.extend_from_slice(b"o\x1b[1m\n");
        let events = sse_events(&mut pending).unwrap();
        assert!(events.starts_with(b"data: two"), "{events:?}");
        assert!(!events.contains(&0x1b), "control characters escaped");
    }

    #[test]
    fn secrets_are_named_not_shown() {
        let mut config = crate::config::AppConfig::default();
        config.secrets.insert("DB".into(), "db-password".into());
        config.env.insert("MODE".into(), "<b>".into());
        let rows = {
            let mut rows = Vec::new();
            flatten("", &serde_json::to_value(&config).unwrap(), &mut rows);
            rows
        };
        assert!(rows.contains(&("secrets.DB".into(), "db-password".into())));
        assert!(rows.contains(&("env.MODE".into(), "<b>".into())));
    }
}
