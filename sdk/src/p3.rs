//! WASIp3 handlers: `#[berth_sdk::http_service]`.
//!
//! The same shape as a WASIp2 [`http_component`](crate::http_component): one
//! function from [`Request`] to anything [`IntoResponse`], with [`text`],
//! [`json`] and [`empty`] to make responses. The component it makes exports
//! `wasi:http/handler@0.3` (the `wasi:http/service` world; berth's
//! `wit/p3`): the handler is async all the way down, bodies stream as
//! `stream<u8>` with trailers, and berth reuses the instance for further
//! requests unless the app says `instances.reuse = "none"` (README,
//! "Worlds and instance reuse"), so state a handler keeps in statics carries
//! over from one request to the next of the same instance.
//!
//! ```no_run
//! use berth_sdk::StatusCode;
//! use berth_sdk::p3::{Request, Response};
//!
//! #[berth_sdk::http_service]
//! async fn handle(request: Request) -> berth_sdk::Result<Response> {
//!     let name = berth_sdk::query(&request, "name").unwrap_or_else(|| "world".into());
//!     let body = berth_sdk::p3::read_body(request, 1 << 20).await?;
//!     Ok(berth_sdk::p3::text(
//!         StatusCode::OK,
//!         format!("hello, {name}: {} bytes\n", body.len()),
//!     ))
//! }
//! ```
//!
//! Built on the `wasip3` crate's `http_compat` layer; [`wasip3`] is
//! re-exported for everything this module does not wrap.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use bytes::Bytes;
pub use wasip3;
use wasip3::http::types::ErrorCode;
use wasip3::http_compat::{IncomingRequestBody, IncomingResponseBody};

use crate::{Error, StatusCode};

/// An HTTP request; its body streams from the host as it is read.
pub type Request<B = IncomingRequestBody> = http::Request<B>;

/// An HTTP response; see [`text`], [`json`] and [`empty`] to make one.
pub type Response<B = Body> = http::Response<B>;

/// The response to an outbound request ([`send`]); its body streams in.
pub type Upstream = http::Response<IncomingResponseBody>;

/// A response body: bytes held in memory, or a body streamed from elsewhere
/// (a request's, or an upstream response's) without buffering it.
pub struct Body(Inner);

enum Inner {
    Full(Option<Bytes>),
    Request(IncomingRequestBody),
    Response(IncomingResponseBody),
}

impl core::fmt::Debug for Body {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Inner::Full(bytes) => f
                .debug_tuple("Body::Full")
                .field(&bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Inner::Request(_) => f.write_str("Body::Request(..)"),
            Inner::Response(_) => f.write_str("Body::Response(..)"),
        }
    }
}

impl Body {
    /// No bytes.
    pub fn empty() -> Self {
        Self(Inner::Full(None))
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self(Inner::Full((!bytes.is_empty()).then_some(bytes)))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<()> for Body {
    fn from((): ()) -> Self {
        Self::empty()
    }
}

/// Streams a request's body back out (an echo), trailers included.
impl From<IncomingRequestBody> for Body {
    fn from(body: IncomingRequestBody) -> Self {
        Self(Inner::Request(body))
    }
}

/// Streams an upstream response's body out (a proxy), trailers included.
impl From<IncomingResponseBody> for Body {
    fn from(body: IncomingResponseBody) -> Self {
        Self(Inner::Response(body))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ErrorCode>>> {
        match &mut self.0 {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(http_body::Frame::data(b)))),
            Inner::Request(body) => Pin::new(body).poll_frame(cx),
            Inner::Response(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.0, Inner::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Inner::Full(bytes) => {
                http_body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Request(body) => body.size_hint(),
            Inner::Response(body) => body.size_hint(),
        }
    }
}

/// What an `#[http_service]` handler may return: a [`Response`] with any
/// body that converts into [`Body`], or a `Result` of one whose error
/// converts into [`Error`]. An error is written to stderr (the app's log)
/// and answered with a plain 500 that does not reveal it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a WASIp3 response",
    label = "an #[http_service] handler cannot return `{Self}`",
    note = "return a `berth_sdk::p3::Response`, or a `Result` of one whose error converts into `berth_sdk::Error`"
)]
pub trait IntoResponse {
    /// Converts `self` into the response to send.
    fn into_response(self) -> Response;
}

impl<B: Into<Body>> IntoResponse for http::Response<B> {
    fn into_response(self) -> Response {
        self.map(Into::into)
    }
}

impl<T: IntoResponse, E: Into<Error>> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        self.map_or_else(
            |e| crate::response::failed(e, text),
            IntoResponse::into_response,
        )
    }
}

/// A response with `status` and a `text/plain; charset=utf-8` body.
///
/// ```
/// use berth_sdk::StatusCode;
///
/// let response = berth_sdk::p3::text(StatusCode::NOT_FOUND, "no such page\n");
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
/// If `value` cannot be serialised (see [`crate::json`]).
#[cfg(feature = "json")]
pub fn json<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Result<Response, serde_json::Error> {
    let body = serde_json::to_vec(value)?;
    Ok(with_body(status, "application/json", body.into()))
}

/// A response with `status` and no body.
pub fn empty(status: StatusCode) -> Response {
    crate::response::build(status, None, Body::empty())
}

fn with_body(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    crate::response::build(status, Some(content_type), body)
}

/// Reads a whole body (a request's or an upstream response's) into memory,
/// at most `limit` bytes.
///
/// # Errors
///
/// If the body fails to arrive, or is longer than `limit` (the error says
/// so: a client cannot make the handler buffer without bound).
pub async fn read_body<B>(message: B, limit: usize) -> Result<Bytes, Error>
where
    B: IntoBody,
{
    let mut body = core::pin::pin!(message.into_body());
    let mut out = Vec::new();
    while let Some(frame) =
        core::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
    {
        let frame = frame.map_err(|e| Error::msg(format!("reading the body failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(Error::msg(format!(
                    "the body is longer than the limit of {limit} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.into())
}

/// Reads a whole body (at most `limit` bytes) and parses it as JSON.
///
/// # Errors
///
/// As [`read_body`], or if the bytes are not the JSON of a `T`.
#[cfg(feature = "json")]
pub async fn read_json<T: serde::de::DeserializeOwned, B: IntoBody>(
    message: B,
    limit: usize,
) -> Result<T, Error> {
    let bytes = read_body(message, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::msg(format!("invalid JSON body: {e}")))
}

/// A message whose body [`read_body`] can read: a [`Request`], an
/// [`Upstream`] response, or either body alone.
pub trait IntoBody {
    /// The body.
    type Body: http_body::Body<Data = Bytes, Error = ErrorCode>;
    /// Takes the body out.
    fn into_body(self) -> Self::Body;
}

impl IntoBody for Request {
    type Body = IncomingRequestBody;
    fn into_body(self) -> Self::Body {
        http::Request::into_body(self)
    }
}

impl IntoBody for Upstream {
    type Body = IncomingResponseBody;
    fn into_body(self) -> Self::Body {
        http::Response::into_body(self)
    }
}

impl IntoBody for IncomingRequestBody {
    type Body = Self;
    fn into_body(self) -> Self {
        self
    }
}

impl IntoBody for IncomingResponseBody {
    type Body = Self;
    fn into_body(self) -> Self {
        self
    }
}

/// Sends an outbound request through `wasi:http/client@0.3` and returns the
/// response once its head has arrived; its body streams in ([`read_body`],
/// or hand it on as a [`Body`]).
///
/// # Errors
///
/// If the host refused the request (berth allows only the app's
/// `allowed_outbound_hosts`), the connection failed, or the upstream sent
/// something that is not HTTP. A non-2xx status is not an error.
pub async fn send<B>(request: http::Request<B>) -> Result<Upstream, Error>
where
    B: http_body::Body + core::any::Any,
    B::Data: Into<Vec<u8>>,
    B::Error: Into<Box<dyn core::error::Error + Send + Sync + 'static>>,
{
    let uri = request.uri().clone();
    let request = wasip3::http_compat::http_into_wasi_request(request)
        .map_err(|e| Error::msg(format!("{uri}: not a request the host can send: {e}")))?;
    let response = wasip3::http::client::send(request)
        .await
        .map_err(|e| Error::msg(format!("{uri} failed: {e}")))?;
    wasip3::http_compat::http_from_wasi_response(response)
        .map_err(|e| Error::msg(format!("{uri}: unusable response: {e}")))
}

/// GETs `url` (see [`send`]).
///
/// # Errors
///
/// If `url` is not a valid URI, or as [`send`].
pub async fn get(url: &str) -> Result<Upstream, Error> {
    let request = http::Request::get(url)
        .body(Body::empty())
        .map_err(|e| Error::msg(format!("invalid URL `{url}`: {e}")))?;
    send(request).await
}

/// Runs one request through `handler`: what `#[http_service]` expands to.
#[doc(hidden)]
pub async fn serve<H, F>(
    request: wasip3::http::types::Request,
    handler: H,
) -> Result<wasip3::http::types::Response, ErrorCode>
where
    H: FnOnce(Request) -> F,
    F: Future,
    F::Output: IntoResponse,
{
    let response = match wasip3::http_compat::http_from_wasi_request(request) {
        Ok(request) => handler(request).await.into_response(),
        Err(err) => {
            eprintln!("berth-sdk: unusable request: {err:?}");
            text(StatusCode::BAD_REQUEST, "bad request\n")
        }
    };
    wasip3::http_compat::http_into_wasi_response(response)
}
