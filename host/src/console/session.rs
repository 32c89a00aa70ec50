//! Sign-in, sessions and the checks every form passes: its `Origin`, its
//! type and size, its CSRF token.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use minijinja::context;
use sha2::{Digest as _, Sha256};

use super::Console;
use super::respond::{plain, redirect};
use crate::api::{Attempt, random_token, same_secret};
use crate::http::{Body, BoxError};

/// How long a sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; signing in past it ends the oldest.
const MAX_SESSIONS: usize = 256;
/// The session cookie's name.
pub const COOKIE: &str = "berth_console";
/// Largest form accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A form's fields.
pub(super) type Form = BTreeMap<String, String>;

struct Session {
    csrf: String,
    created: Instant,
}

/// The signed-in sessions, by the sha256 of their id (the id itself is
/// only ever in the cookie).
#[derive(Default)]
pub(super) struct Sessions(Mutex<HashMap<[u8; 32], Session>>);

impl Sessions {
    /// The CSRF token of the live session `req`'s cookie names.
    pub(super) fn csrf<B>(&self, req: &Request<B>) -> Option<String> {
        let id = cookie(req, COOKIE)?;
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let mut sessions = self.lock();
        match sessions.get(&key) {
            Some(s) if s.created.elapsed() < SESSION_LIFETIME => Some(s.csrf.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Makes a session; returns its id (for the cookie).
    fn open(&self) -> String {
        let id = random();
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let mut sessions = self.lock();
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
                csrf: random(),
                created: Instant::now(),
            },
        );
        id
    }

    /// Ends the session whose CSRF token is `csrf`.
    fn close(&self, csrf: &str) {
        self.lock().retain(|_, s| s.csrf != csrf);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A random session id or CSRF token.
///
/// # Panics
/// Without randomness: no session can be made safely.
fn random() -> String {
    random_token().unwrap_or_else(|e| panic!("no randomness for a console session: {e}"))
}

impl Console {
    /// `POST /ui/login`: the admin token for a session cookie.
    pub(super) async fn sign_in<B>(&self, req: Request<B>) -> Response<Body>
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
        let id = self.sessions.open();
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

    /// `POST /ui/logout`.
    pub(super) fn sign_out(&self, csrf: &str) -> Response<Body> {
        self.sessions.close(csrf);
        let mut resp = redirect("/ui/login");
        resp.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "berth_console=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        );
        resp
    }
}

/// Reads a form a signed-in session posted and checks its CSRF token.
///
/// # Errors
/// The response refusing it.
pub(super) async fn checked_form<B>(req: Request<B>, csrf: &str) -> Result<Form, Response<Body>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let form = read_form(req).await?;
    let given = form.get("csrf").map(String::as_str).unwrap_or("");
    if !same_secret(given, csrf) {
        return Err(plain(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or stale: reload the page\n",
        ));
    }
    Ok(form)
}

/// Reads a urlencoded form from this origin, of at most
/// [`MAX_FORM_BYTES`].
async fn read_form<B>(req: Request<B>) -> Result<Form, Response<Body>>
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_session_opens_by_its_cookie_and_closes_by_its_csrf() {
        let sessions = Sessions::default();
        let id = sessions.open();
        let req = Request::builder()
            .header(header::COOKIE, format!("{COOKIE}={id}"))
            .body(())
            .unwrap();
        let csrf = sessions.csrf(&req).expect("a live session");
        assert_ne!(csrf, id, "the CSRF token is not the session id");
        sessions.close(&csrf);
        assert_eq!(sessions.csrf(&req), None);
    }
}
