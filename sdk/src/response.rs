//! Making a response: helpers and what a handler may return.

use crate::http::header::CONTENT_TYPE;
use crate::{Body, Error, HeaderValue, Response, StatusCode};

/// What an `#[http_component]` handler may return.
///
/// Implemented for [`Response`]s with any body that converts into [`Body`]
/// (`String`, `&str`, `Vec<u8>`, `()`, a stream...) and for `Result`s of those
/// whose error converts into [`Error`]. An error is written to stderr, which
/// berth keeps in the app's log, and the client gets a plain 500 that does not
/// reveal it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a response",
    label = "an #[http_component] handler cannot return `{Self}`",
    note = "return a `berth_sdk::Response`, or a `Result` of one whose error converts into `berth_sdk::Error`"
)]
pub trait IntoResponse {
    /// Converts `self` into the response to send.
    fn into_response(self) -> Response;
}

impl<B: Into<Body>> IntoResponse for Response<B> {
    fn into_response(self) -> Response {
        self.map(Into::into)
    }
}

impl<T: IntoResponse, E: Into<Error>> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        self.map_or_else(|e| failed(e, text), IntoResponse::into_response)
    }
}

/// A handler's error: written to stderr (the app's log), answered with an
/// opaque 500 made by `text` (either world's).
pub(crate) fn failed<R>(err: impl Into<Error>, text: fn(StatusCode, &'static str) -> R) -> R {
    let err: Error = err.into();
    eprintln!("berth-sdk: handler failed: {err:?}");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
}

/// A response with `status` and a `text/plain; charset=utf-8` body.
///
/// ```
/// use berth_sdk::StatusCode;
///
/// let response = berth_sdk::text(StatusCode::NOT_FOUND, "no such page\n");
/// assert_eq!(response.status(), 404);
/// assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
/// ```
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    with_body(status, "text/plain; charset=utf-8", body.into().into())
}

/// A response with `status` and `value` serialised as JSON
/// (`application/json`).
///
/// # Errors
///
/// If `value` cannot be serialised, for example a map whose keys are not
/// strings.
///
/// ```
/// use berth_sdk::StatusCode;
///
/// #[derive(serde::Serialize)]
/// struct Health {
///     ok: bool,
/// }
///
/// let response = berth_sdk::json(StatusCode::OK, &Health { ok: true })?;
/// assert_eq!(response.headers()["content-type"], "application/json");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[cfg(feature = "json")]
pub fn json<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Result<Response, serde_json::Error> {
    let body = serde_json::to_vec(value)?;
    Ok(with_body(status, "application/json", body.into()))
}

/// A response with `status` and no body, such as 204 or 404.
///
/// ```
/// use berth_sdk::StatusCode;
///
/// assert_eq!(berth_sdk::empty(StatusCode::NO_CONTENT).status(), 204);
/// ```
pub fn empty(status: StatusCode) -> Response {
    build(status, None, Body::empty())
}

fn with_body(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    build(status, Some(content_type), body)
}

/// A response of either world: `status`, `body`, and a content type.
pub(crate) fn build<B>(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: B,
) -> http::Response<B> {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_passes_through() {
        let ok: Result<Response<&str>, Error> = Ok(Response::new("fine"));
        let response = ok.into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().content_length(), Some(4));
    }

    #[test]
    fn err_becomes_opaque_500() {
        let err: Result<Response, std::fmt::Error> = Err(std::fmt::Error);
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.body().content_length(),
            Some("internal server error\n".len() as u64)
        );
    }

    #[test]
    fn empty_has_no_body() {
        let response = empty(StatusCode::NO_CONTENT);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(response.body().content_length(), Some(0));
        assert!(response.headers().is_empty());
    }
}
