//! A request's place in a trace: the tracer that makes its spans and the
//! span its work hangs under, carried in [`crate::RequestInfo`]. Only the
//! OpenTelemetry API is used here; the host owns the SDK, the sampler and the
//! exporter, and hands a tracer in. With tracing off, a [`Trace`] is empty
//! and every method is a no-op that allocates nothing.
//!
//! W3C trace context (`traceparent`, `tracestate`) is written here by hand
//! (a fixed format) so that this crate needs no SDK.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};

/// The W3C trace-context header naming the caller's span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header with vendors' trace state.
pub const TRACESTATE: &str = "tracestate";

/// Where a request is in a trace (see the module doc). Cheap to clone.
#[derive(Clone, Default)]
pub struct Trace(Repr);

#[derive(Clone, Default)]
enum Repr {
    /// Tracing off.
    #[default]
    Off,
    /// Decided not sampled before any span was made: only the context to
    /// pass on (no SDK span, no allocation).
    Unsampled(SpanContext),
    /// A span (recording or not) and its tracer.
    On(Arc<Inner>),
}

struct Inner {
    tracer: Arc<BoxedTracer>,
    /// Holds the span children hang under (ours, or the caller's remote one).
    cx: Context,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::On(i) => write!(f, "Trace({:?})", i.cx.span().span_context()),
            Repr::Unsampled(sc) => write!(f, "Trace(unsampled {sc:?})"),
            Repr::Off => f.write_str("Trace(off)"),
        }
    }
}

impl Trace {
    /// A trace whose spans `tracer` makes, under the span in `cx`.
    pub fn new(tracer: Arc<BoxedTracer>, cx: Context) -> Self {
        Self(Repr::On(Arc::new(Inner { tracer, cx })))
    }

    /// A request decided not sampled before any span was made (its
    /// sampler needs no SDK to say so): `sc` is what it passes on — the
    /// trace id, a fresh span id, flags without `sampled`, the caller's
    /// state. Nothing under it is recorded.
    pub fn unsampled(sc: SpanContext) -> Self {
        Self(Repr::Unsampled(sc))
    }

    /// `f` of the span's context, if tracing is on (borrowed: a context
    /// with a `tracestate` is not copied).
    fn with_context<R>(&self, f: impl FnOnce(&SpanContext) -> R) -> Option<R> {
        match &self.0 {
            Repr::On(i) => Some(f(i.cx.span().span_context())),
            Repr::Unsampled(sc) => Some(f(sc)),
            Repr::Off => None,
        }
    }

    /// Our span, when there is one (tracing on and a span made).
    fn inner(&self) -> Option<&Inner> {
        match &self.0 {
            Repr::On(i) => Some(i),
            Repr::Unsampled(_) | Repr::Off => None,
        }
    }

    /// Whether spans are recorded under this one (tracing on and the trace
    /// sampled).
    pub fn is_sampled(&self) -> bool {
        self.inner()
            .is_some_and(|i| i.cx.span().span_context().is_sampled())
    }

    /// The span's context (invalid when off).
    pub fn span_context(&self) -> SpanContext {
        self.with_context(SpanContext::clone)
            .unwrap_or_else(SpanContext::empty_context)
    }

    /// The trace id in hex, when there is a valid one.
    pub fn trace_id(&self) -> Option<String> {
        self.with_context(|sc| sc.is_valid().then(|| sc.trace_id().to_string()))
            .flatten()
    }

    /// A child span `name` of `kind` with `attrs`, started now; the
    /// returned trace hangs further work under it. Not sampled (or off):
    /// `self` again, so context still flows and nothing is recorded.
    #[must_use]
    pub fn child(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attrs: Vec<KeyValue>,
    ) -> Trace {
        self.child_at(name, kind, attrs, None)
    }

    /// A span under this (remote, maybe empty) context whatever its
    /// sampling: the root span of a request, which the sampler decides on.
    #[must_use]
    pub fn root_child(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attrs: Vec<KeyValue>,
    ) -> Trace {
        let Some(inner) = self.inner() else {
            return self.clone();
        };
        let builder = inner
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attrs);
        let span: BoxedSpan = inner.tracer.build_with_context(builder, &inner.cx);
        Trace::new(inner.tracer.clone(), inner.cx.with_span(span))
    }

    /// As [`Trace::child`], started at `start` when given.
    #[must_use]
    pub fn child_at(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attrs: Vec<KeyValue>,
        start: Option<SystemTime>,
    ) -> Trace {
        let Some(inner) = self.inner().filter(|_| self.is_sampled()) else {
            return self.clone();
        };
        let mut builder = inner
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attrs);
        if let Some(start) = start {
            builder = builder.with_start_time(start);
        }
        let span: BoxedSpan = inner.tracer.build_with_context(builder, &inner.cx);
        Trace::new(inner.tracer.clone(), inner.cx.with_span(span))
    }

    /// A span that started and ended at the given times (a phase measured
    /// before it could be recorded: instantiation, a container's start).
    pub fn record(
        &self,
        name: impl Into<Cow<'static, str>>,
        attrs: Vec<KeyValue>,
        start: SystemTime,
        end: SystemTime,
    ) {
        if self.is_sampled() {
            self.child_at(name, SpanKind::Internal, attrs, Some(start))
                .end_at(end);
        }
    }

    /// Adds `attr` to this span (if it is ours and recording).
    pub fn set_attribute(&self, attr: KeyValue) {
        if let Some(i) = self.inner() {
            i.cx.span().set_attribute(attr);
        }
    }

    /// Adds `attrs` to this span (if it is ours and recording).
    pub fn set_attributes(&self, attrs: Vec<KeyValue>) {
        if let Some(i) = self.inner() {
            i.cx.span().set_attributes(attrs);
        }
    }

    /// Marks this span failed with `description`.
    pub fn set_error(&self, description: impl Into<Cow<'static, str>>) {
        if let Some(i) = self.inner() {
            i.cx.span().set_status(Status::error(description));
        }
    }

    /// Ends this span now (a span ends once; later calls do nothing).
    pub fn end(&self) {
        if let Some(i) = self.inner() {
            i.cx.span().end();
        }
    }

    /// Ends this span at `at`.
    pub fn end_at(&self, at: SystemTime) {
        if let Some(i) = self.inner() {
            i.cx.span().end_with_timestamp(at);
        }
    }

    /// Sets `traceparent` (and `tracestate`, when there is one) in
    /// `headers` to this span, replacing what was there; does nothing when
    /// tracing is off (a caller's headers then pass unchanged).
    pub fn inject(&self, headers: &mut http::HeaderMap) {
        self.with_context(|sc| {
            if !sc.is_valid() {
                return;
            }
            let parent = traceparent(
                sc.trace_id().to_bytes(),
                sc.span_id().to_bytes(),
                sc.trace_flags().to_u8(),
            );
            if let Ok(v) = HeaderValue::from_bytes(&parent) {
                headers.insert(TRACEPARENT, v);
            }
            let state = sc.trace_state().header();
            if state.is_empty() {
                headers.remove(TRACESTATE);
            } else if let Ok(v) = HeaderValue::from_str(&state) {
                headers.insert(TRACESTATE, v);
            }
        });
    }
}

/// `00-<trace id>-<parent id>-<flags>` in lower-case hex, written into a
/// fixed buffer (this runs on every traced request; no formatting machinery).
fn traceparent(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> [u8; 55] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    let fields: [(&[u8], usize); 3] = [(&trace_id, 3), (&span_id, 36), (&[flags], 53)];
    for (bytes, at) in fields {
        for (i, b) in bytes.iter().enumerate() {
            out[at + 2 * i] = HEX[usize::from(b >> 4)];
            out[at + 2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
    }
    out
}

/// Ends its span when dropped (a response body holds it until it is done).
#[derive(Debug)]
pub struct EndOnDrop(pub Trace);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A guest's outbound request as a client span: started when the request
/// leaves (its `traceparent` set to this span), ended when the response
/// head comes back or the request fails.
#[derive(Debug)]
pub struct ClientSpan(Option<Trace>);

impl ClientSpan {
    /// Starts a client span under `trace` for `req` and sets its trace
    /// headers. `None` when tracing is off.
    pub fn start<B>(trace: &Trace, req: &mut http::Request<B>) -> Option<Self> {
        if matches!(trace.0, Repr::Off) {
            return None;
        }
        if !trace.is_sampled() {
            // Not recorded: the caller's decision still travels on.
            trace.inject(req.headers_mut());
            return Some(Self(None));
        }
        let uri = req.uri();
        // Room for the status or error set when it ends.
        let mut attrs = Vec::with_capacity(6);
        attrs.extend([
            KeyValue::new("http.request.method", req.method().as_str().to_owned()),
            KeyValue::new("url.full", uri.to_string()),
        ]);
        if let Some(host) = uri.host() {
            attrs.push(KeyValue::new("server.address", host.to_owned()));
        }
        if let Some(port) = uri.port_u16() {
            attrs.push(KeyValue::new("server.port", i64::from(port)));
        }
        let span = trace.child(req.method().as_str().to_owned(), SpanKind::Client, attrs);
        span.inject(req.headers_mut());
        Some(Self(Some(span)))
    }

    /// Ends the span with the response's status, or the error.
    pub fn finish(self, outcome: Result<u16, String>) {
        let Some(span) = self.0 else { return };
        match outcome {
            Ok(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 500 {
                    span.set_error(status.to_string());
                }
            }
            Err(e) => {
                span.set_attribute(KeyValue::new("error.type", e.clone()));
                span.set_error(e);
            }
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

    #[test]
    fn an_unsampled_trace_passes_its_context_on_and_records_nothing() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let sc = SpanContext::new(
            trace,
            span,
            TraceFlags::default(),
            false,
            opentelemetry::trace::TraceState::default(),
        );
        let t = Trace::unsampled(sc);
        assert!(!t.is_sampled());
        assert_eq!(
            t.trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let child = t.child("x", SpanKind::Internal, Vec::new());
        assert_eq!(child.span_context(), t.span_context());
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACESTATE, HeaderValue::from_static("stale=1"));
        t.inject(&mut headers);
        assert_eq!(
            headers[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        assert!(
            headers.get(TRACESTATE).is_none(),
            "its own (empty) state replaces the old"
        );
        let mut req = http::Request::new(());
        assert!(ClientSpan::start(&t, &mut req).is_some());
        assert!(req.headers().contains_key(TRACEPARENT));
        assert!(ClientSpan::start(&Trace::default(), &mut req).is_none());
    }

    #[test]
    fn traceparent_is_written_as_w3c_says() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let out = traceparent(
            trace.to_bytes(),
            span.to_bytes(),
            TraceFlags::SAMPLED.to_u8(),
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let out = traceparent([0xff; 16], [0; 8], 0);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            format!("00-{}-{}-00", "f".repeat(32), "0".repeat(16))
        );
    }
}
