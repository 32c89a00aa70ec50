//! The HTTP front door's request handling: a request id, routing to an app
//! and one of its revisions (see [`crate::apps::routes`]), dispatch, and the
//! one place where a failed request becomes a response ([`refusal`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;

use crate::apps::Apps;
use crate::backend::ServeError;
use crate::http::{
    Admitted, Body, BoxError, EndOnDrop, GuardBody, REQUEST_ID_HEADER, RequestInfo,
    TIMING_REQUEST_HEADER, excerpt, plain_text,
};
use crate::metrics::Metrics;
use crate::revision::{AdmitError, DispatchError, Undispatched};
use crate::trace::Tracing;
use opentelemetry::KeyValue;

/// The front door's shared state.
#[derive(Debug)]
pub struct Gateway {
    apps: Arc<Apps>,
    metrics: Arc<Metrics>,
    /// Whether connections arrive over TLS (guests then see `https`).
    tls: bool,
    /// Each request's root span (when tracing is on).
    tracing: Arc<Tracing>,
    /// Write a line per request (target `berth::access`).
    access_log: bool,
    id_prefix: u32,
    next_id: AtomicU64,
}

impl Gateway {
    /// A gateway routing to `apps`, counting requests in `metrics`; `tls`
    /// says whether its listener speaks TLS.
    pub fn new(apps: Arc<Apps>, metrics: Arc<Metrics>, tls: bool) -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Self {
            apps,
            metrics,
            tls,
            tracing: Arc::new(Tracing::off()),
            access_log: false,
            id_prefix: seed as u32,
            next_id: AtomicU64::new(0),
        }
    }

    /// The same gateway, tracing requests with `tracing`.
    #[must_use]
    pub fn with_tracing(mut self, tracing: Arc<Tracing>) -> Self {
        self.tracing = tracing;
        self
    }

    /// The same gateway, writing an access log line per request when `on`.
    #[must_use]
    pub fn with_access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// The host's tracing.
    pub fn tracing(&self) -> &Arc<Tracing> {
        &self.tracing
    }

    /// A new request's identity: `{prefix}-{n}` in hex, made without the
    /// formatting machinery (this runs for every request).
    fn request_info<B>(&self, req: &Request<B>) -> RequestInfo {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // As `format!("{:08x}-{n:08x}")`: at least 8 digits for `n`.
        let digits = (16 - n.leading_zeros() as usize / 4).max(8);
        let mut id = [b'-'; 25];
        hex_into(&mut id[..8], u64::from(self.id_prefix));
        hex_into(&mut id[9..9 + digits], n);
        let id = std::str::from_utf8(&id[..9 + digits]).expect("hex digits and a dash");
        let mut info = RequestInfo::new(id);
        info.tls = self.tls;
        info.timing = req.headers().contains_key(TIMING_REQUEST_HEADER);
        if self.tracing.is_on() {
            let trace = self.tracing.server_span(req, &info.id, self.tls);
            info.set_trace(trace);
        }
        info
    }

    /// The app `req` is for now; `has_host`: whether it came with an
    /// authority (else `localhost` was filled in, and routing ignores it).
    fn route<B>(&self, req: &Request<B>, has_host: bool) -> Option<Arc<crate::apps::RoutedApp>> {
        let host = if has_host { host_of(req) } else { None };
        self.apps.route(host, req.uri().path())
    }

    /// Serves one request. Never fails: every error is a response.
    pub async fn handle<B>(&self, mut req: Request<B>) -> Result<Response<Body>, Infallible>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
    {
        let info = self.request_info(&req);
        let host = host_of(&req);
        let has_host = host.is_some();
        let Some(mut app) = self.apps.route(host, req.uri().path()) else {
            if let Some(failed) = self.apps.failed_for(host, req.uri().path()) {
                return Ok(traced(with_id(not_deployed(&failed), &info), &info));
            }
            let msg = format!(
                "no app answers host `{}` and path `{}`\n",
                excerpt(host.unwrap_or("(none)")),
                excerpt(req.uri().path())
            );
            return Ok(traced(
                with_id(plain_text(StatusCode::NOT_FOUND, msg), &info),
                &info,
            ));
        };
        if info.trace.is_sampled() {
            info.trace
                .set_attribute(KeyValue::new("berth.app", app.name.clone()));
        }
        if !has_host {
            // HTTP/1.0 without Host: wasi:http needs an authority.
            req.headers_mut()
                .insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        let access = self.access_log.then(|| Access {
            method: req.method().clone(),
            path: excerpt(req.uri().path()),
            app: app.name.clone(),
            revision: String::new(),
            status: 0,
            admitted: Admitted::default(),
            trace_id: info.trace.trace_id(),
            request_id: info.id.clone(),
            accepted: info.accepted,
            bytes: 0,
        });
        let mut req = req.map(|b| b.map_err(BoxError::from).boxed_unsync());
        let mut retired = 0;
        let mut revision_id = None;
        let resp = loop {
            let revision = app.pick().clone();
            if access.is_some() {
                revision_id = Some(revision.id().to_owned());
            }
            match revision.dispatch(req, &info).await {
                Ok(resp) => break resp,
                Err(Undispatched::Failed(e)) => break refusal(&app.name, &e),
                // Replaced by a redeploy while this request was routed: the
                // app's current revision takes it (bounded: a revision
                // replaced again and again gets the refusal).
                Err(Undispatched::Retired(back)) => {
                    retired += 1;
                    let current = (retired <= MAX_REROUTES)
                        .then(|| self.route(&back, has_host))
                        .flatten();
                    match current {
                        Some(current) => (app, req) = (current, *back),
                        None => {
                            break refusal(&app.name, &AdmitError::ShuttingDown.into());
                        }
                    }
                }
            }
        };
        // Counted (status, latency) when the response body is done.
        let resp = self.metrics.instrument(&app.name, info.accepted, resp);
        let resp = match access {
            Some(mut access) => {
                access.app.clone_from(&app.name);
                access.revision = revision_id.unwrap_or_default();
                access.status = resp.status().as_u16();
                access.admitted = resp
                    .extensions()
                    .get::<Admitted>()
                    .copied()
                    .unwrap_or_default();
                resp.map(|body| {
                    AccessBody {
                        body,
                        access: Some(access),
                    }
                    .boxed_unsync()
                })
            }
            None => resp,
        };
        Ok(traced(with_id(resp, &info), &info))
    }
}

/// `resp` with its status on the request's server span, which ends when
/// the body is done (or dropped).
fn traced(resp: Response<Body>, info: &RequestInfo) -> Response<Body> {
    if !info.trace.is_sampled() {
        return resp;
    }
    let status = resp.status().as_u16();
    info.trace.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        info.trace.set_error(status.to_string());
    }
    let end = EndOnDrop(info.trace.clone());
    resp.map(|body| GuardBody::wrap(body, end))
}

/// One access log line in the making: written when the response body is
/// done (or the client went away), with the bytes sent by then.
#[derive(Debug)]
struct Access {
    method: http::Method,
    path: String,
    app: String,
    revision: String,
    status: u16,
    admitted: Admitted,
    trace_id: Option<String>,
    request_id: Arc<str>,
    accepted: std::time::Instant,
    bytes: u64,
}

impl Access {
    fn write(&self) {
        tracing::info!(
            target: "berth::access",
            app = %self.app,
            revision = %self.revision,
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes = self.bytes,
            duration_ms = self.accepted.elapsed().as_secs_f64() * 1e3,
            queued_ms = self.admitted.queued.as_secs_f64() * 1e3,
            cold_start = self.admitted.cold_start,
            request_id = %self.request_id,
            trace_id = self.trace_id.as_deref().unwrap_or("-"),
            "request"
        );
    }
}

/// A response body that counts what it sends and writes the access log
/// line once it is done or dropped.
struct AccessBody {
    body: Body,
    access: Option<Access>,
}

impl hyper::body::Body for AccessBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(access)) = (frame.data_ref(), self.access.as_mut()) {
                    access.bytes += data.len() as u64;
                }
            }
            std::task::Poll::Ready(None) => {
                if let Some(access) = self.access.take() {
                    access.write();
                }
            }
            _ => {}
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

impl Drop for AccessBody {
    fn drop(&mut self) {
        if let Some(access) = self.access.take() {
            access.write();
        }
    }
}

/// How many times one request follows its app to a new revision after the
/// one it was routed to shut down under it.
const MAX_REROUTES: u32 = 3;

/// The authority a request names: its URI's, else its `Host` header.
fn host_of<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

/// The low `out.len()` hex digits of `n`, most significant first.
fn hex_into(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
    }
}

fn with_id(mut resp: Response<Body>, info: &RequestInfo) -> Response<Body> {
    resp.headers_mut()
        .insert(REQUEST_ID_HEADER, info.id_header.clone());
    resp
}

/// When to try again after a refusal that capacity will cure.
const RETRY_AFTER_SECONDS: HeaderValue = HeaderValue::from_static("1");

/// The answer for an app that could not be deployed and is being retried:
/// 503 naming why, with `Retry-After` at its next attempt (Knative answers
/// a revision that failed to become ready alike, not with a 404).
fn not_deployed(failed: &crate::apps::FailedApp) -> Response<Body> {
    let wait = failed
        .next_retry
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
        .as_secs()
        .max(1);
    let msg = format!(
        "app `{}` is not serving: it could not be deployed ({} attempt(s) so far; the next in {wait} s): {}\n",
        failed.name,
        failed.attempts,
        // berth's own message, but it quotes paths, images and registries'
        // words: bounded, with room for a link error's list of imports.
        crate::http::excerpt_of(&failed.reason, 4 * crate::http::EXCERPT_CHARS)
    );
    let mut resp = plain_text(StatusCode::SERVICE_UNAVAILABLE, msg);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait));
    resp
}

/// The one mapping from a request that `app` did not answer to the response
/// the client gets: status, a one-line plain-text body, and `Retry-After`
/// where waiting helps. README's "When things go wrong" table lists the same.
pub fn refusal(app: &str, err: &DispatchError) -> Response<Body> {
    let (status, text) = match err {
        DispatchError::Admit(e) => {
            let status = match e {
                AdmitError::AtMaxScale { .. } => StatusCode::TOO_MANY_REQUESTS,
                AdmitError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let text = match e {
                AdmitError::ShuttingDown => format!("app `{app}` is shutting down"),
                AdmitError::QueueFull { depth } => {
                    format!("app `{app}` is overloaded: {depth} requests already wait for capacity")
                }
                AdmitError::QueueTimeout { waited } => {
                    format!("app `{app}` had no capacity within {waited:?}")
                }
                AdmitError::AtMaxScale { max, waited } => format!(
                    "app `{app}` is at its maximum of {max} instances and none had room within {waited:?}"
                ),
                AdmitError::StartFailed { reason } => {
                    format!("app `{app}` could not start an instance: {reason}")
                }
                AdmitError::BodyTooLarge { limit } => format!(
                    "app `{app}` takes request bodies of at most {} (limits.request_body)",
                    bytesize::ByteSize::b(*limit).display().iec()
                ),
            };
            (status, text)
        }
        DispatchError::Serve(e) => {
            let status = match e {
                ServeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                ServeError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
                ServeError::Crashed(_) | ServeError::BadUpstream(_) => StatusCode::BAD_GATEWAY,
                ServeError::NoResponse
                | ServeError::GuestTrap { .. }
                | ServeError::MemoryLimit { .. }
                | ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (
                status,
                format!("app `{app}` failed: {e} (see `berth logs {app}`)"),
            )
        }
    };
    let mut resp = plain_text(status, text + "\n");
    if matches!(
        status,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
    ) {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, RETRY_AFTER_SECONDS);
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn request_ids_read_as_formatted() {
        for n in [0, 1, 0xabc, u64::from(u32::MAX), 1 << 32, u64::MAX] {
            let digits = (16 - n.leading_zeros() as usize / 4).max(8);
            let mut out = vec![0; digits];
            hex_into(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{n:08x}"));
        }
    }

    fn code(e: impl Into<DispatchError>) -> (u16, bool) {
        let (status, retry, _) = outcome(e);
        (status, retry)
    }

    fn outcome(e: impl Into<DispatchError>) -> (u16, bool, String) {
        let resp = refusal("a", &e.into());
        let retry = resp.headers().contains_key(header::RETRY_AFTER);
        let status = resp.status().as_u16();
        let body = futures::executor::block_on(resp.into_body().collect())
            .unwrap()
            .to_bytes();
        (status, retry, String::from_utf8_lossy(&body).into_owned())
    }

    /// The rows of README's "When things go wrong" table.
    #[test]
    fn every_failure_has_its_status() {
        let trap = outcome(ServeError::GuestTrap {
            reason: "unreachable".into(),
        });
        assert_eq!((trap.0, trap.1), (500, false));
        assert!(trap.2.contains("trapped: unreachable"), "{}", trap.2);
        let mem = outcome(ServeError::MemoryLimit {
            limit: "64 MiB".into(),
        });
        assert!(
            mem.0 == 500 && mem.2.contains("exceeded its memory limit of 64 MiB"),
            "{mem:?}"
        );
        assert_eq!(outcome(ServeError::Timeout(Duration::from_secs(1))).0, 504);
        assert_eq!(outcome(ServeError::NoResponse).0, 500);
        assert_eq!(outcome(ServeError::BadUpstream("x".into())).0, 502);
        assert_eq!(outcome(ServeError::Crashed("x".into())).0, 502);
        assert_eq!(code(ServeError::Overloaded("busy".into())), (503, true));
        let start = outcome(AdmitError::StartFailed {
            reason: "exit status 1: boom".into(),
        });
        assert_eq!((start.0, start.1), (503, true));
        assert!(
            start
                .2
                .contains("could not start an instance: exit status 1: boom")
        );
        let waited = Duration::from_secs(10);
        assert_eq!(code(AdmitError::QueueTimeout { waited }), (503, true));
        assert_eq!(code(AdmitError::QueueFull { depth: 5 }), (503, true));
        assert_eq!(code(AdmitError::AtMaxScale { max: 2, waited }), (429, true));
        assert_eq!(code(AdmitError::ShuttingDown), (503, true));
        let big = outcome(AdmitError::BodyTooLarge { limit: 1 << 20 });
        assert_eq!((big.0, big.1), (413, false));
        assert!(
            big.2.contains("at most 1.0 MiB (limits.request_body)"),
            "{}",
            big.2
        );
    }
}
