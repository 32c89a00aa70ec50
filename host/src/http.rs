//! The leaf types every layer of a request's path shares: body types, the
//! request's identity, and plain-text responses. Nothing here knows about
//! apps, revisions or backends.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the front door sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
/// The body of a request handed to an instance (its errors: the client's
/// connection, or [`BodyTooLarge`]).
pub type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request body streamed past the app's `limits.request_body`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// Header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-berth-request-id";

pub use berth_wasm::{RequestInfo, TIMING_REQUEST_HEADER};

/// How much of a client's or an artifact's text an error message quotes.
pub const EXCERPT_CHARS: usize = 200;

/// `text` as an error message may quote it: control characters and quotes
/// escaped, at most [`EXCERPT_CHARS`] characters, and a note of how much was
/// left out. Hostile input (a 16 MiB name, terminal escapes) never reaches a
/// log or a response whole.
pub fn excerpt(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    let total = text.chars().count();
    if total > EXCERPT_CHARS {
        out.push_str(&format!("… ({} more characters)", total - EXCERPT_CHARS));
    }
    out
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

/// A body that holds `guard` until it is done or dropped (an admission, a
/// connection's in-flight count).
pub struct GuardBody<G> {
    body: Body,
    _guard: G,
}

impl<G> std::fmt::Debug for GuardBody<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardBody").finish_non_exhaustive()
    }
}

impl<G: Send + Unpin + 'static> GuardBody<G> {
    /// `body`, holding `guard` for as long as it lives.
    pub fn wrap(body: Body, guard: G) -> Body {
        Self {
            body,
            _guard: guard,
        }
        .boxed_unsync()
    }
}

impl<G: Unpin> hyper::body::Body for GuardBody<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A body that fails with [`DeadlinePassed`] once `deadline` passes (the
/// rest of a response that streams past the request's timeout).
pub struct DeadlineBody {
    body: Body,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for DeadlineBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineBody")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DeadlineBody {
    /// `body`, cut at `deadline` (`timeout` is named in the error).
    pub fn wrap(body: Body, deadline: tokio::time::Instant, timeout: std::time::Duration) -> Body {
        Self {
            body,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
        }
        .boxed_unsync()
    }
}

/// The response's deadline passed while its body was still streaming.
#[derive(Debug, thiserror::Error)]
#[error("the response was not done within the request's timeout of {0:?}")]
pub struct DeadlinePassed(pub std::time::Duration);

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => {}
            ready => return ready,
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(DeadlinePassed(self.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded_and_escaped() {
        assert_eq!(excerpt("a.localhost"), "a.localhost");
        assert_eq!(excerpt("bad\u{1b}[31mred\n"), "bad\\u{1b}[31mred\\n");
        let long = "x".repeat(16 << 20);
        let e = excerpt(&long);
        assert!(e.len() < 300, "{}", e.len());
        assert!(e.ends_with(&format!("({} more characters)", (16 << 20) - 200)));
    }
}
