//! Counting a request when its response body is done: status and latency
//! are observed when the body ends, fails, or is dropped because the client
//! went away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt as _;
use hyper::body::Frame;

use super::Metrics;
use crate::http::{Body, BoxError};

impl Metrics {
    /// Wraps `resp` so that the request is counted by
    /// [`observe_request`](Self::observe_request) when its body ends, fails
    /// or is dropped (the client went away), timed from `started`.
    pub fn instrument(
        self: &Arc<Self>,
        app: &str,
        started: Instant,
        resp: Response<Body>,
    ) -> Response<Body> {
        let pending = Pending {
            metrics: self.clone(),
            app: app.into(),
            status: resp.status().as_u16(),
            started,
        };
        resp.map(|body| {
            ObservedBody {
                body,
                pending: Some(pending),
            }
            .boxed_unsync()
        })
    }
}

/// A request waiting for its response body to end.
struct Pending {
    metrics: Arc<Metrics>,
    app: String,
    status: u16,
    started: Instant,
}

impl Pending {
    fn finish(self) {
        self.metrics
            .observe_request(&self.app, self.status, self.started.elapsed());
    }
}

/// A response body that reports its request once it is done.
struct ObservedBody {
    body: Body,
    pending: Option<Pending>,
}

impl ObservedBody {
    fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            p.finish();
        }
    }
}

impl hyper::body::Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RequestLabels;

    #[tokio::test]
    async fn an_instrumented_body_counts_once_when_done_or_dropped() {
        let m = Arc::new(Metrics::new());
        let resp = crate::http::plain_text(http::StatusCode::OK, "hi");
        let resp = m.instrument("x", Instant::now(), resp);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hi");
        let dropped = m.instrument(
            "x",
            Instant::now(),
            crate::http::plain_text(http::StatusCode::BAD_GATEWAY, "no"),
        );
        drop(dropped);
        let get = |status| {
            m.requests
                .get_or_create(&RequestLabels {
                    app: "x".into(),
                    status,
                })
                .get()
        };
        assert_eq!((get(200), get(502)), (1, 1));
    }
}
