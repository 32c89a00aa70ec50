//! The leaf types every layer of a request's path shares: body types, the
//! request's identity, and plain-text responses. Nothing here knows about
//! apps, revisions or backends.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the front door sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
/// The body of a request handed to an instance.
pub type ReqBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-berth-request-id";

/// One request's identity and arrival time.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Unique id, echoed in [`REQUEST_ID_HEADER`] and in the app log.
    pub id: Arc<str>,
    /// The same id as a header value, built once.
    pub id_header: HeaderValue,
    /// When the front door had the request's head.
    pub accepted: Instant,
    /// Whether the request came in over TLS (guests see `https`).
    pub tls: bool,
}

impl RequestInfo {
    /// A request with id `id`, accepted now, over plain HTTP.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.into(),
            id_header: HeaderValue::from_str(id)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            accepted: Instant::now(),
            tls: false,
        }
    }
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A `text/plain` response with `status` and `text` as its body (refusals,
/// and the short answers of `/healthz` and `/readyz`).
pub fn plain_text(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(full(text.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
