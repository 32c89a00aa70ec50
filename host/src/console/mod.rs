//! The web console: server-rendered pages at `/ui` on the admin listener,
//! over the same domain methods and typed views as the admin API.
//!
//! # Layout
//! - this module: [`Console`] and its routing;
//! - `session`: sign-in, sessions, the checks every form passes (origin,
//!   type, size, CSRF token);
//! - `pages`: the pages and fragments, rendered from the typed views the API
//!   serialises ([`Apps::list`], [`Apps::view`], [`Apps::buckets`], the
//!   metrics' counters through [`Apps::figures`]); a read that fails is
//!   shown on the page;
//! - `forms`: the forms that change something, as the typed requests of
//!   [`Apps::put`], [`Apps::scale`], [`Apps::set_traffic`] and
//!   [`Apps::delete`], so a form's error is worded exactly as the API words
//!   it;
//! - `figures`: requests per second and recent percentiles over the
//!   readings of the last 30 s;
//! - `respond`: responses with the security headers;
//! - `templates/`: minijinja templates (HTML-escaped by default);
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

mod figures;
mod forms;
mod pages;
mod respond;
mod session;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use minijinja::{Environment, context};

pub use session::{COOKIE, SESSION_LIFETIME};

use crate::api::AdminAuth;
use crate::apps::Apps;
use crate::http::{Body, BoxError};
use respond::{asset, plain, redirect};

/// The console's state: templates, sessions, recent readings.
pub struct Console {
    apps: Arc<Apps>,
    auth: AdminAuth,
    templates: Environment<'static>,
    sessions: session::Sessions,
    window: figures::Window,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
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
        Self {
            apps,
            auth,
            templates: pages::templates(),
            sessions: session::Sessions::default(),
            window: figures::Window::default(),
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
        if let Some(resp) = self.open(&segments, &method, &req) {
            return resp;
        }
        if method == Method::POST && segments == ["login"] {
            return self.sign_in(req).await;
        }
        let Some(csrf) = self.sessions.csrf(&req) else {
            return if method == Method::GET && !is_live(&segments) {
                redirect("/ui/login")
            } else {
                plain(StatusCode::UNAUTHORIZED, "sign in first\n")
            };
        };
        match method {
            Method::POST => match session::checked_form(req, &csrf).await {
                Ok(form) => self.post(&segments, &form, &csrf).await,
                Err(resp) => resp,
            },
            Method::GET => self.get(&segments, &csrf).await,
            _ => plain(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n"),
        }
    }

    /// What needs no session: it reveals no state.
    fn open<B>(
        &self,
        segments: &[&str],
        method: &Method,
        req: &Request<B>,
    ) -> Option<Response<Body>> {
        if method != Method::GET {
            return None;
        }
        Some(match segments {
            ["static", "console.css"] => asset(
                include_str!("assets/console.css"),
                "text/css; charset=utf-8",
            ),
            ["static", "console.js"] => asset(
                include_str!("assets/console.js"),
                "text/javascript; charset=utf-8",
            ),
            ["login"] if self.sessions.csrf(req).is_some() => redirect("/ui/"),
            ["login"] => self.page(StatusCode::OK, "login.html", context! {}),
            _ => return None,
        })
    }

    /// A page, fragment, stream or chart of a signed-in session.
    async fn get(&self, segments: &[&str], csrf: &str) -> Response<Body> {
        match segments {
            [] => self.apps_page(csrf),
            ["fragments", "apps"] => self.app_rows(),
            ["apps", name] => self.app_page(name, csrf, None).await,
            ["fragments", "apps", name] => self.app_live(name),
            ["apps", name, "stats.json"] => self.app_stats(name),
            ["apps", name, "events"] => self.log_events(name).await,
            ["deploy"] => self.page(
                StatusCode::OK,
                "deploy.html",
                context! { csrf, form => session::Form::new() },
            ),
            ["cold-starts"] => self.cold_starts(csrf),
            ["cold-starts", "chart.svg"] => self.bench_svg(),
            _ => plain(StatusCode::NOT_FOUND, "no such page\n"),
        }
    }
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
