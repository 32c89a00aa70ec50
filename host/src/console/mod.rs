//! The web console: server-rendered pages at `/ui` on the admin listener,
//! on top of the admin API.
//!
//! # Layout
//! - this module: routing, sign-in and sessions, CSRF checks, pages.
//! - `prom`: reads berth's own `/metrics` text back into numbers.
//! - `templates/`: minijinja templates (HTML-escaped by default).
//! - `assets/`: the stylesheet and one small script of berth's own (live
//!   refresh by polling, the log tail over server-sent events, the chart);
//!   no third-party code and nothing fetched from elsewhere.
//!
//! # Security
//! - Sign-in takes the admin token once and sets a random session id in a
//!   cookie that is `HttpOnly`, `SameSite=Strict` and `Path=/ui`; sessions
//!   live in memory for [`SESSION_LIFETIME`] (a restart signs everyone out).
//!   The API's bearer authentication is unchanged; the cookie is accepted by
//!   `/ui` only.
//! - Every page, fragment, stream and chart that shows state needs a
//!   session; only the login page, the stylesheet and the script do not.
//! - Every form that changes something carries the session's CSRF token
//!   (compared in constant time), and a request whose `Origin` names
//!   another host is refused.
//! - Output is escaped by the templates; the log tail is written with
//!   `textContent`; secret values are never read (the settings show which
//!   secret an environment variable comes from, not its value).
//! - Responses carry a strict `Content-Security-Policy` (scripts and styles
//!   from berth only, no inline script), `X-Frame-Options: DENY`,
//!   `Referrer-Policy: same-origin` (so that forms carry their `Origin`) and `Cache-Control: no-store`.
//!
//! Actions go through [`crate::api::route`], so a form's error is worded
//! exactly as the API words it.

mod prom;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, BodyStream, Full, Limited, StreamBody};
use hyper::body::Frame;
use minijinja::{Environment, Value, context};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::api::{AdminAuth, AppList, AppView, Attempt, ErrorBody};
use crate::apps::Apps;
use crate::http::{Body, BoxError, full};

/// How long a sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; signing in past it ends the oldest.
const MAX_SESSIONS: usize = 256;
/// The session cookie's name.
pub const COOKIE: &str = "berth_console";
/// Largest form accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Samples kept per app for rates and recent latency.
const WINDOW: Duration = Duration::from_secs(30);

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's state: templates, sessions, recent samples.
pub struct Console {
    apps: Arc<Apps>,
    auth: AdminAuth,
    templates: Environment<'static>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    samples: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

struct Session {
    csrf: String,
    created: Instant,
}

/// One reading of an app's request counter and latency histogram.
struct Sample {
    at: Instant,
    requests: f64,
    buckets: Vec<(f64, f64)>,
}

/// Whether `path` belongs to the console.
pub fn is_console_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

impl Console {
    /// A console over `apps`, signing in with `auth`'s token.
    ///
    /// # Panics
    /// When a built-in template does not parse (caught by the tests).
    pub fn new(apps: Arc<Apps>, auth: AdminAuth) -> Self {
        let env = templates();
        Self {
            apps,
            auth,
            templates: env,
            sessions: Mutex::new(HashMap::new()),
            samples: Mutex::new(HashMap::new()),
        }
    }

    /// Serves one request under `/ui`. Never fails: every error is a page.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let path = req.uri().path().to_owned();
        let rest = path.strip_prefix("/ui").unwrap_or("").trim_matches('/');
        let segments: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let method = req.method().clone();
        // Open: what reveals no state.
        match (segments.as_slice(), &method) {
            (["static", "console.css"], &Method::GET) => {
                return asset(
                    include_str!("assets/console.css"),
                    "text/css; charset=utf-8",
                );
            }
            (["static", "console.js"], &Method::GET) => {
                return asset(
                    include_str!("assets/console.js"),
                    "text/javascript; charset=utf-8",
                );
            }
            (["login"], &Method::GET) => {
                if self.session(&req).is_some() {
                    return redirect("/ui/");
                }
                return self.page(StatusCode::OK, "login.html", context! {});
            }
            (["login"], &Method::POST) => return self.sign_in(req).await,
            _ => {}
        }
        let Some(csrf) = self.session(&req) else {
            return if method == Method::GET && !is_live(&segments) {
                redirect("/ui/login")
            } else {
                plain(StatusCode::UNAUTHORIZED, "sign in first\n")
            };
        };
        if method == Method::POST {
            let form = match read_form(req).await {
                Ok(f) => f,
                Err(resp) => return resp,
            };
            let given = form.get("csrf").map(String::as_str).unwrap_or("");
            if !same_digest(given, &csrf) {
                return plain(
                    StatusCode::FORBIDDEN,
                    "the form's CSRF token is missing or stale: reload the page\n",
                );
            }
            return self.post(&segments, &form, &csrf).await;
        }
        if method != Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n");
        }
        match segments.as_slice() {
            [] => self.apps_page(&csrf).await,
            ["fragments", "apps"] => self.app_rows().await,
            ["apps", name] => self.app_page(name, &csrf, None).await,
            ["fragments", "apps", name] => self.app_live(name).await,
            ["apps", name, "stats.json"] => self.app_stats(name).await,
            ["apps", name, "events"] => self.log_events(name).await,
            ["deploy"] => self.page(
                StatusCode::OK,
                "deploy.html",
                context! { csrf, form => BTreeMap::<String, String>::new() },
            ),
            ["cold-starts"] => self.cold_starts(&csrf).await,
            ["cold-starts", "chart.svg"] => self.bench_svg(),
            _ => plain(StatusCode::NOT_FOUND, "no such page\n"),
        }
    }

    // ---- sessions ----

    /// The signed-in session's CSRF token.
    fn session<B>(&self, req: &Request<B>) -> Option<String> {
        let id = cookie(req, COOKIE)?;
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(&key) {
            Some(s) if s.created.elapsed() < SESSION_LIFETIME => Some(s.csrf.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    async fn sign_in<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let client = req.extensions().get::<crate::http::ClientAddr>().copied();
        let form = match read_form(req).await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        let token = form.get("token").map(String::as_str).unwrap_or("");
        match self.auth.attempt(client, token).await {
            Attempt::Accepted => {}
            Attempt::Wrong => {
                tracing::warn!(client = ?client.map(|c| c.0), "console sign-in refused: wrong token");
                return self.page(
                    StatusCode::UNAUTHORIZED,
                    "login.html",
                    context! { error => "That is not the admin token." },
                );
            }
            Attempt::TooMany(wait) => {
                let error = format!(
                    "Too many wrong tokens from this address; this one was not checked. Try again in {} s.",
                    wait.as_secs().max(1)
                );
                return self.page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "login.html",
                    context! { error => error },
                );
            }
        }
        let id = random_hex();
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
            while sessions.len() >= MAX_SESSIONS {
                let oldest = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => sessions.remove(&k),
                    None => break,
                };
            }
            sessions.insert(
                key,
                Session {
                    csrf: random_hex(),
                    created: Instant::now(),
                },
            );
        }
        tracing::info!("console: signed in");
        let mut resp = redirect("/ui/");
        let cookie = format!(
            "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_LIFETIME.as_secs()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        resp
    }

    fn sign_out(&self, csrf: &str) -> Response<Body> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.csrf != csrf);
        drop(sessions);
        let mut resp = redirect("/ui/login");
        resp.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "berth_console=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        );
        resp
    }

    // ---- the API underneath ----

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, Bytes) {
        let bytes = body
            .map(|b| Bytes::from(serde_json::to_vec(&b).unwrap_or_default()))
            .unwrap_or_default();
        let req = match Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(bytes))
        {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_REQUEST, Bytes::from(e.to_string())),
        };
        let resp = crate::api::route(&self.apps, req).await;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (status, body)
    }

    async fn app_list(&self) -> Vec<AppView> {
        let (_, body) = self.call(Method::GET, "/v1/apps", None).await;
        serde_json::from_slice::<AppList>(&body)
            .map(|l| l.apps)
            .unwrap_or_default()
    }

    async fn app(&self, name: &str) -> Result<AppView, String> {
        let (status, body) = self
            .call(Method::GET, &format!("/v1/apps/{name}"), None)
            .await;
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|e| e.to_string())
        } else {
            Err(api_error(&body))
        }
    }

    /// The app's buckets with their counts (`GET /v1/apps/{name}/keyvalue`);
    /// none when it declares none or the API answers otherwise.
    async fn buckets(&self, name: &str) -> Vec<crate::api::BucketView> {
        let (status, body) = self
            .call(Method::GET, &format!("/v1/apps/{name}/keyvalue"), None)
            .await;
        if !status.is_success() {
            return Vec::new();
        }
        serde_json::from_slice::<crate::api::KeyvalueView>(&body)
            .map(|k| k.buckets)
            .unwrap_or_default()
    }

    async fn metrics(&self) -> Vec<prom::Sample> {
        let (_, body) = self.call(Method::GET, "/metrics", None).await;
        prom::parse(&String::from_utf8_lossy(&body))
    }

    /// The figures of `app` from one scrape, with a rate and recent
    /// latency from the samples kept.
    fn figures(&self, samples: &[prom::Sample], app: &str) -> Figures {
        let with = [("app", app)];
        let requests = prom::sum(samples, "berth_app_requests_total", &with);
        let buckets = prom::buckets(samples, "berth_request_duration_seconds", &with);
        let now = Instant::now();
        let mut kept = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let series = kept.entry(app.to_string()).or_default();
        while series.front().is_some_and(|s| now - s.at > WINDOW) || series.len() > 64 {
            series.pop_front();
        }
        let (rate, recent) = match series.front() {
            Some(old) if now - old.at >= Duration::from_secs(1) => {
                let secs = (now - old.at).as_secs_f64();
                (
                    Some((requests - old.requests).max(0.0) / secs),
                    prom::delta(&buckets, &old.buckets),
                )
            }
            _ => (None, buckets.clone()),
        };
        series.push_back(Sample {
            at: now,
            requests,
            buckets: buckets.clone(),
        });
        drop(kept);
        let ms = |q| prom::quantile(&recent, q).map(|s| s * 1000.0);
        Figures {
            requests: requests as u64,
            rate,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            cpu_seconds: prom::has(samples, "berth_cpu_seconds_total", &with)
                .then(|| prom::sum(samples, "berth_cpu_seconds_total", &with)),
            gb_seconds: prom::has(samples, "berth_memory_gb_seconds_total", &with)
                .then(|| prom::sum(samples, "berth_memory_gb_seconds_total", &with)),
            instance_seconds: prom::sum(samples, "berth_instance_seconds_total", &with),
        }
    }

    // ---- pages ----

    fn page(&self, status: StatusCode, name: &str, ctx: Value) -> Response<Body> {
        let rendered = self
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx));
        match rendered {
            Ok(html) => html_response(status, html),
            Err(e) => {
                tracing::error!("console template {name}: {e:#}");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render\n",
                )
            }
        }
    }

    async fn rows(&self) -> Vec<Row> {
        let apps = self.app_list().await;
        let samples = self.metrics().await;
        // Forget the samples of apps that are gone.
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| apps.iter().any(|a| &a.name == name));
        apps.into_iter()
            .map(|app| {
                let figures = self.figures(&samples, &app.name);
                Row { app, figures }
            })
            .collect()
    }

    async fn apps_page(&self, csrf: &str) -> Response<Body> {
        let rows = self.rows().await;
        self.page(
            StatusCode::OK,
            "apps.html",
            context! { csrf, rows, nav => "apps" },
        )
    }

    async fn app_rows(&self) -> Response<Body> {
        let rows = self.rows().await;
        self.page(StatusCode::OK, "app_rows.html", context! { rows })
    }

    async fn app_page(&self, name: &str, csrf: &str, error: Option<String>) -> Response<Body> {
        let app = match self.app(name).await {
            Ok(app) => app,
            Err(e) => {
                return self.page(
                    StatusCode::NOT_FOUND,
                    "layout.html",
                    context! { csrf, error => e },
                );
            }
        };
        let samples = self.metrics().await;
        let figures = self.figures(&samples, name);
        let settings = settings(&app);
        let buckets = self.buckets(name).await;
        let status = if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        self.page(
            status,
            "app.html",
            context! { csrf, app, figures, settings, buckets, error },
        )
    }

    async fn app_live(&self, name: &str) -> Response<Body> {
        let app = match self.app(name).await {
            Ok(app) => app,
            Err(e) => return plain(StatusCode::NOT_FOUND, &format!("{e}\n")),
        };
        let samples = self.metrics().await;
        let figures = self.figures(&samples, name);
        self.page(StatusCode::OK, "app_live.html", context! { app, figures })
    }

    async fn app_stats(&self, name: &str) -> Response<Body> {
        let app = match self.app(name).await {
            Ok(app) => app,
            Err(e) => return plain(StatusCode::NOT_FOUND, &format!("{e}\n")),
        };
        let samples = self.metrics().await;
        let f = self.figures(&samples, name);
        let body = serde_json::json!({
            "ready": app.instances.ready,
            "starting": app.instances.starting,
            "desired": app.instances.desired,
            "in_flight": app.in_flight,
            "requests": f.requests,
            "p50_ms": f.p50_ms,
            "p99_ms": f.p99_ms,
        });
        let mut resp = Response::new(full(body.to_string()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        secure(resp)
    }

    /// The app's log as server-sent events: one event per line, from the
    /// same follow as `berth logs -f` (`GET /v1/apps/{name}/logs?follow`).
    async fn log_events(&self, name: &str) -> Response<Body> {
        let req = match Request::builder()
            .uri(format!("/v1/apps/{name}/logs?follow=true"))
            .body(Full::new(Bytes::new()))
        {
            Ok(r) => r,
            Err(_) => return plain(StatusCode::BAD_REQUEST, "bad app name\n"),
        };
        let resp = crate::api::route(&self.apps, req).await;
        if !resp.status().is_success() {
            return resp;
        }
        let stream = BodyStream::new(resp.into_body());
        let events = futures::stream::unfold(
            (stream, Vec::<u8>::new()),
            |(mut stream, mut pending)| async move {
                use futures::StreamExt as _;
                loop {
                    let frame = match stream.next().await? {
                        Ok(frame) => frame,
                        Err(e) => return Some((Err(e), (stream, pending))),
                    };
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    pending.extend_from_slice(&data);
                    let Some(last) = pending.iter().rposition(|b| *b == b'\n') else {
                        continue;
                    };
                    let complete: Vec<u8> = pending.drain(..=last).collect();
                    let mut out = String::new();
                    for line in String::from_utf8_lossy(&complete).lines() {
                        out.push_str("data: ");
                        // Visible escapes: a person reads the tail.
                        out.push_str(&crate::http::escape_controls(line));
                        out.push_str("\n\n");
                    }
                    return Some((Ok(Frame::data(Bytes::from(out))), (stream, pending)));
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

    async fn cold_starts(&self, csrf: &str) -> Response<Body> {
        let samples = self.metrics().await;
        let kinds: Vec<KindStarts> = ["wasm", "container"]
            .into_iter()
            .map(|kind| {
                let b = prom::buckets(
                    &samples,
                    "berth_cold_start_duration_seconds",
                    &[("kind", kind)],
                );
                KindStarts {
                    kind,
                    count: prom::sum(&samples, "berth_cold_starts_total", &[("kind", kind)]) as u64,
                    p50_ms: prom::quantile(&b, 0.5).map(|s| s * 1000.0),
                    p99_ms: prom::quantile(&b, 0.99).map(|s| s * 1000.0),
                }
            })
            .collect();
        let apps = self.app_list().await;
        let bench = self.apps.data_dir().join("bench");
        let table = std::fs::read_to_string(bench.join("cold-start.txt")).ok();
        let has_chart = bench.join("cold-start.svg").is_file();
        let data_dir = self.apps.data_dir().display().to_string();
        self.page(
            StatusCode::OK,
            "cold_starts.html",
            context! { csrf, kinds, apps, table, has_chart, data_dir },
        )
    }

    fn bench_svg(&self) -> Response<Body> {
        let path = self.apps.data_dir().join("bench").join("cold-start.svg");
        match std::fs::read(&path) {
            Ok(svg) => {
                let mut resp = Response::new(full(svg));
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

    // ---- actions ----

    async fn post(
        &self,
        segments: &[&str],
        form: &BTreeMap<String, String>,
        csrf: &str,
    ) -> Response<Body> {
        match segments {
            ["logout"] => self.sign_out(csrf),
            ["deploy"] => self.deploy(form, csrf).await,
            ["apps", name, "traffic"] => {
                let percent = match number(form, "latest_percent") {
                    Ok(Some(p)) => p,
                    Ok(None) => {
                        return self
                            .app_page(name, csrf, Some("give the latest revision's share".into()))
                            .await;
                    }
                    Err(e) => return self.app_page(name, csrf, Some(e)).await,
                };
                let body = serde_json::json!({ "latest_percent": percent });
                self.act(name, csrf, &format!("/v1/apps/{name}/traffic"), body)
                    .await
            }
            ["apps", name, "scale"] => {
                let mut body = serde_json::Map::new();
                for key in ["min_scale", "max_scale"] {
                    match number(form, key) {
                        Ok(Some(n)) => {
                            body.insert(key.into(), n.into());
                        }
                        Ok(None) => {}
                        Err(e) => return self.app_page(name, csrf, Some(e)).await,
                    }
                }
                self.act(
                    name,
                    csrf,
                    &format!("/v1/apps/{name}/scale"),
                    serde_json::Value::Object(body),
                )
                .await
            }
            ["apps", name, "delete"] => {
                let (status, body) = self
                    .call(Method::DELETE, &format!("/v1/apps/{name}"), None)
                    .await;
                if status.is_success() {
                    redirect("/ui/")
                } else {
                    self.app_page(name, csrf, Some(api_error(&body))).await
                }
            }
            _ => plain(StatusCode::NOT_FOUND, "no such action\n"),
        }
    }

    async fn act(
        &self,
        name: &str,
        csrf: &str,
        path: &str,
        body: serde_json::Value,
    ) -> Response<Body> {
        let (status, answer) = self.call(Method::POST, path, Some(body)).await;
        if status.is_success() {
            redirect(&format!("/ui/apps/{name}"))
        } else {
            self.app_page(name, csrf, Some(api_error(&answer))).await
        }
    }

    async fn deploy(&self, form: &BTreeMap<String, String>, csrf: &str) -> Response<Body> {
        let again = |this: &Self, error: String| {
            this.page(
                StatusCode::BAD_REQUEST,
                "deploy.html",
                context! { csrf, form, error },
            )
        };
        let name = form.get("name").map(|s| s.trim()).unwrap_or("");
        let field = |k: &str| form.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
        let mut body = serde_json::Map::new();
        if let Some(wasm) = field("wasm") {
            body.insert("wasm".into(), wasm.into());
        }
        if let Some(image) = field("image") {
            body.insert("image".into(), image.into());
        }
        let routes: Vec<&str> = field("routes")
            .unwrap_or("")
            .split([',', ' ', '\n', '\r'])
            .filter(|r| !r.is_empty())
            .collect();
        if !routes.is_empty() {
            body.insert("routes".into(), routes.into());
        }
        let mut env = serde_json::Map::new();
        for line in field("env").unwrap_or("").lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return again(self, format!("env line `{line}`: write KEY=VALUE"));
            };
            env.insert(k.trim().into(), v.into());
        }
        if !env.is_empty() {
            body.insert("env".into(), env.into());
        }
        let traffic = match number(form, "traffic") {
            Ok(t) => t,
            Err(e) => return again(self, e),
        };
        let query = traffic.map(|t| format!("?traffic={t}")).unwrap_or_default();
        if name.is_empty() || name.contains(['/', '?', '#', '%']) {
            return again(self, "give the app a name (letters, digits and -)".into());
        }
        let (status, answer) = self
            .call(
                Method::PUT,
                &format!("/v1/apps/{name}{query}"),
                Some(serde_json::Value::Object(body)),
            )
            .await;
        if status.is_success() {
            redirect(&format!("/ui/apps/{name}"))
        } else {
            again(self, api_error(&answer))
        }
    }
}

/// The built-in templates.
///
/// # Panics
/// When one does not parse (caught by the unit tests).
fn templates() -> Environment<'static> {
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

/// Paths whose callers are scripts (a redirect to the login page would be
/// read as data): they get `401` instead.
fn is_live(segments: &[&str]) -> bool {
    matches!(segments.first(), Some(&"fragments"))
        || matches!(
            segments.last(),
            Some(&"events" | &"stats.json" | &"chart.svg")
        )
}

#[derive(Debug, Serialize)]
struct Row {
    app: AppView,
    figures: Figures,
}

#[derive(Debug, Serialize)]
struct Figures {
    requests: u64,
    rate: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    cpu_seconds: Option<f64>,
    gb_seconds: Option<f64>,
    instance_seconds: f64,
}

#[derive(Debug, Serialize)]
struct KindStarts {
    kind: &'static str,
    count: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
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

fn number(form: &BTreeMap<String, String>, key: &str) -> Result<Option<u32>, String> {
    match form.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("`{key}`: `{v}` is not a whole number")),
    }
}

fn api_error(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

#[allow(clippy::result_large_err)] // The error is the response to send.
async fn read_form<B>(req: Request<B>) -> Result<BTreeMap<String, String>, Response<Body>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if !same_origin(&req) {
        return Err(plain(
            StatusCode::FORBIDDEN,
            "the form came from another origin\n",
        ));
    }
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send a form (application/x-www-form-urlencoded)\n",
        ));
    }
    match Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(form_urlencoded::parse(&c.to_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()),
        Err(_) => Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is too large or could not be read\n",
        )),
    }
}

/// An `Origin` header, when the browser sends one, must name this host.
fn same_origin<B>(req: &Request<B>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host)
        }
        _ => false,
    }
}

fn cookie<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name && !v.is_empty()).then(|| v.to_string())
        })
}

fn same_digest(a: &str, b: &str) -> bool {
    let a: [u8; 32] = Sha256::digest(a.as_bytes()).into();
    let b: [u8; 32] = Sha256::digest(b.as_bytes()).into();
    let diff = a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut bytes) {
        // No randomness: no session can be made safely.
        panic!("no randomness for a console session: {e}");
    }
    hex::encode(bytes)
}

fn secure(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn html_response(status: StatusCode, html: String) -> Response<Body> {
    let mut resp = Response::new(full(html));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(resp)
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(full(text.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(resp)
}

fn redirect(to: &str) -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    secure(resp)
}

fn asset(text: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(text));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut resp = secure(resp);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    resp
}

#[cfg(test)]
mod tests {
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
            let html = env
                .get_template(name)
                .unwrap()
                .render(&ctx)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(
                !html.contains("a<zb") && !html.contains("ze<z") && !html.contains("<zi>"),
                "{name} escapes"
            );
        }
    }

    #[test]
    fn cookies_and_origins() {
        let req = Request::builder()
            .header(header::COOKIE, "a=1; berth_console=abc; b=2")
            .header(header::HOST, "127.0.0.1:9")
            .header(header::ORIGIN, "http://127.0.0.1:9")
            .body(())
            .unwrap();
        assert_eq!(cookie(&req, COOKIE).as_deref(), Some("abc"));
        assert!(same_origin(&req));
        let other = Request::builder()
            .header(header::HOST, "127.0.0.1:9")
            .header(header::ORIGIN, "http://evil.example")
            .body(())
            .unwrap();
        assert!(!same_origin(&other));
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
