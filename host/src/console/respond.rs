//! The console's responses: every one carries the security headers.

use http::{HeaderValue, Response, StatusCode, header};

use crate::http::{Body, full};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `resp` with the console's security headers.
pub(super) fn secure(mut resp: Response<Body>) -> Response<Body> {
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

/// A page.
pub(super) fn html(status: StatusCode, html: String) -> Response<Body> {
    typed(status, html, "text/html; charset=utf-8")
}

/// A short message.
pub(super) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    typed(status, text.to_string(), "text/plain; charset=utf-8")
}

/// `value` as JSON (for the chart's script).
pub(super) fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(text) => typed(StatusCode::OK, text, "application/json"),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}\n"),
        ),
    }
}

fn typed(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(resp)
}

/// `303 See Other` to `to`.
pub(super) fn redirect(to: &str) -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    secure(resp)
}

/// One of the console's own files, cached briefly.
pub(super) fn asset(text: &'static str, content_type: &'static str) -> Response<Body> {
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
