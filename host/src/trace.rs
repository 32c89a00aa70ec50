//! Traces: one OpenTelemetry span tree per request, exported over OTLP
//! (HTTP/protobuf) when an endpoint is configured, nothing at all otherwise.
//!
//! [`TraceSettings`] holds what `berth serve` was told (its flags read the
//! standard `OTEL_*` variables); [`Tracing::start`] builds the SDK's tracer
//! provider with the chosen sampler and an [`ExportQueue`]; the gateway asks
//! [`Tracing::server_span`] for each request's root span, and everything
//! below hangs under it through [`crate::http::RequestInfo::trace`].
//!
//! Exporting never blocks a request: an ended span is pushed on a bounded
//! queue (a lock held for the push alone); when the queue is full the span is
//! dropped and counted (`berth_trace_spans_dropped_total{reason="queue_full"}`).
//! One task takes batches off the queue every `delay`, or as soon as a full
//! batch waits, and exports them; a batch the exporter fails on
//! (endpoint down, timeout) is dropped and counted
//! (`reason="export_failed"`). The SDK's own batch processor is not used
//! because it keeps its drop count to itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{
    SpanContext, SpanKind, TraceContextExt as _, TraceFlags, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SdkTracerProvider, SpanData, SpanExporter as _,
    SpanProcessor,
};

use crate::http::Trace;
use crate::metrics::{Metrics, TraceCounters};
use berth_wasm::trace::{TRACEPARENT, TRACESTATE};

/// Whether `sampler` samples out a request under `parent` (the caller's
/// remote span context, or an invalid one) without asking the SDK:
/// `always_off`, a parent-based sampler under a parent that is not
/// sampled, `parentbased_always_off` without a parent. The SDK would
/// decide the same (its parent-based samplers follow a remote parent's
/// flag) but makes a span, its ids and contexts to say so; a ratio
/// sampler without such a parent still asks the SDK.
fn samples_out(sampler: SamplerSetting, parent: &SpanContext) -> bool {
    use SamplerSetting as S;
    match sampler {
        S::AlwaysOff => true,
        S::ParentBasedOn | S::ParentBasedOff | S::ParentBasedRatio(_) if parent.is_valid() => {
            !parent.is_sampled()
        }
        S::ParentBasedOff => true,
        S::AlwaysOn | S::Ratio(_) | S::ParentBasedOn | S::ParentBasedRatio(_) => false,
    }
}

impl On {
    /// The context a request sampled out without the SDK passes on (as the
    /// SDK's non-recording span would: the caller's trace id or a new one,
    /// a new span id, flags without `sampled`, the caller's state), or
    /// `None` when the SDK must decide.
    fn unsampled(&self, parent: &Context) -> Option<SpanContext> {
        let span = parent.span();
        let p = span.span_context();
        if !samples_out(self.sampler, p) {
            return None;
        }
        let (trace_id, state) = if p.is_valid() {
            (p.trace_id(), p.trace_state().clone())
        } else {
            (self.ids.new_trace_id(), TraceState::default())
        };
        Some(SpanContext::new(
            trace_id,
            self.ids.new_span_id(),
            p.trace_flags() & !TraceFlags::SAMPLED,
            false,
            state,
        ))
    }
}

/// The largest export queue `--trace-queue` takes.
pub const MAX_QUEUE: usize = 1_000_000;
/// Spans per export request at most.
const MAX_BATCH: usize = 512;
/// How long shutdown waits for the last spans to go out.
const FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(5);

/// How spans are sampled (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSetting {
    /// `always_on`
    AlwaysOn,
    /// `always_off`
    AlwaysOff,
    /// `traceidratio` with its ratio
    Ratio(f64),
    /// `parentbased_always_on` (the default): follow the caller's
    /// `traceparent` decision, else sample.
    ParentBasedOn,
    /// `parentbased_always_off`
    ParentBasedOff,
    /// `parentbased_traceidratio` with its ratio
    ParentBasedRatio(f64),
}

impl SamplerSetting {
    /// Parses the standard names; `arg` is the ratio of the two ratio
    /// samplers (default 1.0; from 0 to 1).
    ///
    /// # Errors
    /// An unknown name or a ratio that is not a number from 0 to 1, quoted.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || -> Result<f64, String> {
            match arg {
                None => Ok(1.0),
                Some(a) => match a.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(format!(
                        "the sampler argument `{}` is not a ratio from 0 to 1 (OTEL_TRACES_SAMPLER_ARG)",
                        crate::http::excerpt(a)
                    )),
                },
            }
        };
        Ok(match name.trim() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::Ratio(ratio()?),
            "parentbased_always_on" => Self::ParentBasedOn,
            "parentbased_always_off" => Self::ParentBasedOff,
            "parentbased_traceidratio" => Self::ParentBasedRatio(ratio()?),
            other => {
                return Err(format!(
                    "unknown sampler `{}` (OTEL_TRACES_SAMPLER): one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio",
                    crate::http::excerpt(other)
                ));
            }
        })
    }

    fn sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// Where and how traces go. `endpoint: None` (the default): tracing off.
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub endpoint: Option<String>,
    /// `service.name` of the spans.
    pub service_name: String,
    /// The sampler.
    pub sampler: SamplerSetting,
    /// Ended spans waiting for export at most; more are dropped.
    pub queue: usize,
    /// How long spans wait at most before they are sent (sooner when a
    /// full batch waits).
    pub delay: Duration,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: "berth".into(),
            sampler: SamplerSetting::ParentBasedOn,
            queue: 2048,
            delay: Duration::from_secs(5),
        }
    }
}

impl TraceSettings {
    /// The traces URL from `OTEL_EXPORTER_OTLP_ENDPOINT`'s kind of base URL
    /// (`http://collector:4318` → `http://collector:4318/v1/traces`), or a
    /// full `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, which wins; `protocol`
    /// must be `http/protobuf`.
    ///
    /// # Errors
    /// Another protocol, or a URL that is not `http://` (this build's
    /// exporter speaks plain HTTP).
    pub fn endpoint_from(
        base: Option<&str>,
        traces: Option<&str>,
        protocol: &str,
    ) -> Result<Option<String>, String> {
        let url = match (traces, base) {
            (Some(t), _) if !t.trim().is_empty() => t.trim().to_owned(),
            (_, Some(b)) if !b.trim().is_empty() => {
                format!("{}/v1/traces", b.trim().trim_end_matches('/'))
            }
            _ => return Ok(None),
        };
        if protocol.trim() != "http/protobuf" {
            return Err(format!(
                "OTLP protocol `{}` is not supported (OTEL_EXPORTER_OTLP_PROTOCOL): berth exports http/protobuf",
                crate::http::excerpt(protocol)
            ));
        }
        match url.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => Ok(Some(url)),
            _ => Err(format!(
                "the OTLP endpoint `{}` is not an http:// URL (OTEL_EXPORTER_OTLP_ENDPOINT); put a collector on loopback for TLS",
                crate::http::excerpt(&url)
            )),
        }
    }
}

/// The host's tracing: off, or a tracer whose ended spans go to an
/// [`ExportQueue`].
pub struct Tracing {
    on: Option<On>,
}

struct On {
    tracer: Arc<BoxedTracer>,
    /// The sampler, for the decisions made without the SDK.
    sampler: SamplerSetting,
    ids: RandomIdGenerator,
    provider: SdkTracerProvider,
    propagator: TraceContextPropagator,
    /// Ends the export task; it answers when the queue is flushed.
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>>>>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("on", &self.on.is_some())
            .finish()
    }
}

impl Tracing {
    /// No tracing: no spans, nothing exported, headers untouched.
    pub fn off() -> Self {
        Self { on: None }
    }

    /// Tracing as `settings` say (off without an endpoint); spawns the
    /// export task on the current runtime.
    ///
    /// # Errors
    /// The exporter could not be built.
    pub fn start(settings: &TraceSettings, metrics: &Metrics) -> anyhow::Result<Self> {
        let Some(endpoint) = &settings.endpoint else {
            return Ok(Self::off());
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .build()
            .with_context(|| format!("cannot set up the OTLP exporter for `{endpoint}`"))?;
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        exporter.set_resource(&resource);
        let queue = Arc::new(Queue::new(settings.queue, metrics.trace_counters()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(export_loop(
            exporter,
            queue.clone(),
            settings.delay,
            stop_rx,
        ));
        let provider = SdkTracerProvider::builder()
            .with_sampler(settings.sampler.sampler())
            .with_resource(resource)
            .with_span_processor(ExportQueue(queue))
            .build();
        let tracer = Arc::new(BoxedTracer::new(Box::new(provider.tracer("berth"))));
        tracing::info!(%endpoint, sampler = ?settings.sampler, "exporting traces over OTLP/HTTP");
        Ok(Self {
            on: Some(On {
                tracer,
                sampler: settings.sampler,
                ids: RandomIdGenerator::default(),
                provider,
                propagator: TraceContextPropagator::new(),
                stop: std::sync::Mutex::new(Some(stop_tx)),
            }),
        })
    }

    /// Whether spans may be made.
    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// The root span of a request, under the caller's `traceparent` when it
    /// sent a valid one: `HTTP <method>`, kind server, with the HTTP
    /// semantic-convention attributes known at its start. Empty when off.
    /// The attributes are made only for a sampled span (the samplers berth
    /// offers do not read them): a request sampled out costs the span's
    /// context and no more.
    pub fn server_span<B>(&self, req: &http::Request<B>, request_id: &str, tls: bool) -> Trace {
        let Some(on) = &self.on else {
            return Trace::default();
        };
        let parent = on.propagator.extract(&Headers::of(req.headers()));
        if let Some(sc) = on.unsampled(&parent) {
            return Trace::unsampled(sc);
        }
        let root = Trace::new(on.tracer.clone(), parent);
        // Room for every attribute the span gets, here and later (the
        // gateway's app, the response's status, a cold start): the SDK keeps
        // this vector, and growing it reallocated it three times a request.
        let span = root.root_child(
            method_name(req.method()),
            SpanKind::Server,
            Vec::with_capacity(SERVER_SPAN_ATTRIBUTES),
        );
        if span.is_sampled() {
            span.set_attributes(Self::server_attributes(req, request_id, tls));
        }
        span
    }

    /// The server span's attributes: the HTTP semantic conventions' known
    /// at the request's head, and its id.
    fn server_attributes<B>(req: &http::Request<B>, request_id: &str, tls: bool) -> Vec<KeyValue> {
        let mut attrs = Vec::with_capacity(SERVER_SPAN_ATTRIBUTES);
        attrs.push(KeyValue::new(
            "http.request.method",
            method_name(req.method()),
        ));
        attrs.push(KeyValue::new("url.path", req.uri().path().to_owned()));
        attrs.push(KeyValue::new(
            "url.scheme",
            if tls { "https" } else { "http" },
        ));
        if let Some(q) = req.uri().query() {
            attrs.push(KeyValue::new("url.query", q.to_owned()));
        }
        if let Some(host) = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(req.uri().host())
        {
            attrs.push(KeyValue::new("server.address", host.to_owned()));
        }
        attrs.push(KeyValue::new(
            "network.protocol.version",
            match req.version() {
                http::Version::HTTP_10 => "1.0",
                http::Version::HTTP_11 => "1.1",
                http::Version::HTTP_2 => "2",
                _ => "other",
            },
        ));
        if let Some(ua) = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|h| h.to_str().ok())
        {
            attrs.push(KeyValue::new("user_agent.original", ua.to_owned()));
        }
        if let Some(peer) = req.extensions().get::<crate::http::ClientAddr>() {
            attrs.push(KeyValue::new("client.address", peer.0.ip().to_string()));
        }
        attrs.push(KeyValue::new("berth.request_id", request_id.to_owned()));
        attrs
    }

    /// Sends what is queued and stops exporting (waits at most 5 s).
    pub async fn shutdown(&self) {
        let Some(on) = &self.on else { return };
        let stop = on.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(stop) = stop {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = tokio::time::timeout(FLUSH_ON_SHUTDOWN, done_rx).await;
            }
        }
        let _ = on.provider.shutdown();
    }
}

/// The attributes a server span gets at most: those of its request's head
/// (up to 9), then `berth.app`, `http.response.status_code` and
/// `berth.cold_start`.
const SERVER_SPAN_ATTRIBUTES: usize = 12;

/// A method's name, without allocating for the standard ones.
fn method_name(method: &http::Method) -> std::borrow::Cow<'static, str> {
    use http::Method as M;
    let name = match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => return method.as_str().to_owned().into(),
    };
    name.into()
}

/// The most `tracestate` list members a caller may send (W3C: a longer
/// list is discarded whole).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// The longest `tracestate` taken, in bytes (the size W3C asks every
/// participant to pass on); a longer one is discarded.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// A caller's trace context as the propagator reads it: a `traceparent`
/// only when it is well formed (W3C), `tracestate` only beside such a
/// `traceparent` and within [`MAX_TRACESTATE_MEMBERS`] and
/// [`MAX_TRACESTATE_BYTES`]. Whatever fails is ignored: the request starts
/// a new trace (or keeps the valid parent without the state), and the
/// instance is handed berth's own headers, never the bad ones.
struct Headers {
    parent: Option<String>,
    state: Option<String>,
}

impl Headers {
    fn of(headers: &http::HeaderMap) -> Self {
        let mut parents = headers.get_all(TRACEPARENT).iter();
        let parent = match (parents.next(), parents.next()) {
            (Some(p), None) => p.to_str().ok().filter(|p| valid_traceparent(p)),
            // None, or several: W3C says ignore them all.
            _ => None,
        };
        let state = parent.and_then(|_| bounded_tracestate(headers));
        Self {
            parent: parent.map(str::to_owned),
            state,
        }
    }
}

impl Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.parent.as_deref(),
            TRACESTATE => self.state.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::with_capacity(2);
        if self.parent.is_some() {
            keys.push(TRACEPARENT);
        }
        if self.state.is_some() {
            keys.push(TRACESTATE);
        }
        keys
    }
}

/// Whether `v` is a W3C `traceparent`: `version-traceid-parentid-flags` in
/// lowercase hex, version not `ff`, ids not all zero; version `00` exactly
/// that, a later version possibly followed by `-` and more.
fn valid_traceparent(v: &str) -> bool {
    let b = v.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &[u8]| s.iter().any(|&c| c != b'0');
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    let (version, trace, span, flags) = (&b[..2], &b[3..35], &b[36..52], &b[53..55]);
    if !(hex(version) && hex(trace) && hex(span) && hex(flags)) || version == b"ff" {
        return false;
    }
    if !(nonzero(trace) && nonzero(span)) {
        return false;
    }
    match version {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b[55] == b'-',
    }
}

/// The caller's `tracestate` (several headers joined with `,`, as W3C
/// says), or `None` when it has more than [`MAX_TRACESTATE_MEMBERS`] list
/// members, is longer than [`MAX_TRACESTATE_BYTES`] or is not text. The
/// members themselves are checked by the propagator (one malformed member
/// discards the whole state).
fn bounded_tracestate(headers: &http::HeaderMap) -> Option<String> {
    let mut state = String::new();
    for v in headers.get_all(TRACESTATE) {
        let v = v.to_str().ok()?;
        if !state.is_empty() {
            state.push(',');
        }
        if state.len() + v.len() > MAX_TRACESTATE_BYTES {
            return None;
        }
        state.push_str(v);
    }
    let members = state.split(',').filter(|m| !m.trim().is_empty()).count();
    (members > 0 && members <= MAX_TRACESTATE_MEMBERS).then_some(state)
}

/// The span processor's queue: ended, sampled spans wait here for the
/// export task, bounded by `capacity` (see the module doc).
///
/// A request only takes a lock and pushes: it never wakes the export task,
/// except when its span completes a batch of [`MAX_BATCH`]. (A channel woke
/// that task, and often a parked runtime thread with it, for every span.)
#[derive(Debug)]
struct Queue {
    waiting: std::sync::Mutex<Waiting>,
    capacity: usize,
    /// A full batch: [`MAX_BATCH`], or the whole queue when it is smaller.
    batch: usize,
    /// Told when a full batch waits.
    batch_ready: tokio::sync::Notify,
    counters: TraceCounters,
}

/// What the [`Queue`]'s lock guards.
#[derive(Debug)]
struct Waiting {
    spans: Vec<SpanData>,
    /// Exporting stopped: later spans are dropped and counted.
    closed: bool,
}

impl Queue {
    fn new(capacity: usize, counters: TraceCounters) -> Self {
        let capacity = capacity.max(1);
        Self {
            waiting: std::sync::Mutex::new(Waiting {
                spans: Vec::with_capacity(MAX_BATCH.min(capacity)),
                closed: false,
            }),
            capacity,
            batch: MAX_BATCH.min(capacity),
            batch_ready: tokio::sync::Notify::new(),
            counters,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, span: SpanData) {
        let mut waiting = self.lock();
        if waiting.closed {
            drop(waiting);
            self.counters.dropped_export_failed.inc();
            return;
        }
        if waiting.spans.len() >= self.capacity {
            drop(waiting);
            self.counters.dropped_queue_full.inc();
            return;
        }
        waiting.spans.push(span);
        let full = waiting.spans.len() == self.batch;
        drop(waiting);
        if full {
            self.batch_ready.notify_one();
        }
    }

    /// Up to a full batch of the oldest spans waiting.
    fn take_batch(&self) -> Vec<SpanData> {
        let fresh = Vec::with_capacity(self.batch);
        let mut waiting = self.lock();
        if waiting.spans.len() <= self.batch {
            std::mem::replace(&mut waiting.spans, fresh)
        } else {
            waiting.spans.drain(..self.batch).collect()
        }
    }

    /// Takes no more spans (those already waiting still go out).
    fn close(&self) {
        self.lock().closed = true;
    }
}

/// The span processor: ended, sampled spans into the [`Queue`], without
/// waiting.
#[derive(Debug)]
struct ExportQueue(Arc<Queue>);

impl SpanProcessor for ExportQueue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.0.push(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

type Stop = tokio::sync::oneshot::Receiver<tokio::sync::oneshot::Sender<()>>;

/// Exports what waits in `queue` every `delay`, and at once whenever a
/// full batch of [`MAX_BATCH`] waits (the batch span processor's schedule,
/// `OTEL_BSP_SCHEDULE_DELAY`), one export at a time; on `stop`, closes the
/// queue, sends what is left and answers.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    queue: Arc<Queue>,
    delay: Duration,
    mut stop: Stop,
) {
    let done = loop {
        tokio::select! {
            () = queue.batch_ready.notified() => {}
            () = tokio::time::sleep(delay) => {}
            done = &mut stop => break done.ok(),
        }
        drain(&exporter, &queue).await;
    };
    queue.close();
    drain(&exporter, &queue).await;
    if let Some(done) = done {
        let _ = done.send(());
    }
}

/// Exports batches until less than a full one was waiting.
async fn drain(exporter: &opentelemetry_otlp::SpanExporter, queue: &Queue) {
    loop {
        let batch = queue.take_batch();
        let full = batch.len() == queue.batch;
        export(exporter, batch, &queue.counters).await;
        if !full {
            return;
        }
    }
}

async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    spans: Vec<SpanData>,
    counters: &TraceCounters,
) {
    let n = spans.len() as u64;
    if n == 0 {
        return;
    }
    match exporter.export(spans).await {
        Ok(()) => {
            counters.exported.inc_by(n);
        }
        Err(e) => {
            counters.dropped_export_failed.inc_by(n);
            tracing::debug!("trace export failed, {n} span(s) dropped: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_out_without_the_sdk_only_where_the_sdk_would_sample_out() {
        use opentelemetry::trace::{SpanId, TraceId};
        let parent = |flags| {
            SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(9u64),
                flags,
                true,
                TraceState::default(),
            )
        };
        let (on, off, none) = (
            parent(TraceFlags::SAMPLED),
            parent(TraceFlags::default()),
            SpanContext::empty_context(),
        );
        use SamplerSetting as S;
        for (sampler, want) in [
            (S::AlwaysOff, [true, true, true]),
            (S::AlwaysOn, [false, false, false]),
            (S::Ratio(0.0), [false, false, false]),
            (S::ParentBasedOn, [false, true, false]),
            (S::ParentBasedOff, [false, true, true]),
            (S::ParentBasedRatio(0.5), [false, true, false]),
        ] {
            let got = [&on, &off, &none].map(|p| samples_out(sampler, p));
            assert_eq!(
                got, want,
                "{sampler:?}: sampled parent, unsampled parent, none"
            );
        }
    }

    fn span_data() -> SpanData {
        use opentelemetry::trace::{SpanId, Status, TraceId};
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1u128),
                SpanId::from(2u64),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "s".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: opentelemetry_sdk::trace::SpanEvents::default(),
            links: opentelemetry_sdk::trace::SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: opentelemetry::InstrumentationScope::default(),
        }
    }

    #[tokio::test]
    async fn the_queue_wakes_its_exporter_only_for_a_full_batch_and_counts_what_it_drops() {
        let metrics = Metrics::new();
        let counters = metrics.trace_counters();
        let queue = Queue::new(MAX_BATCH + 10, counters.clone());
        for _ in 0..MAX_BATCH - 1 {
            queue.push(span_data());
        }
        let woken = tokio::time::timeout(Duration::from_millis(20), queue.batch_ready.notified());
        assert!(woken.await.is_err(), "woken before a batch was full");
        queue.push(span_data());
        let woken = tokio::time::timeout(Duration::from_secs(5), queue.batch_ready.notified());
        assert!(woken.await.is_ok(), "not woken for a full batch");
        for _ in 0..20 {
            queue.push(span_data());
        }
        assert_eq!(counters.dropped_queue_full.get(), 10, "past the bound");
        assert_eq!(queue.take_batch().len(), MAX_BATCH, "oldest batch first");
        assert_eq!(queue.take_batch().len(), 10);
        assert!(queue.take_batch().is_empty());
        // A queue smaller than a batch is a batch when full.
        let small = Queue::new(3, counters.clone());
        for _ in 0..3 {
            small.push(span_data());
        }
        let woken = tokio::time::timeout(Duration::from_secs(5), small.batch_ready.notified());
        assert!(woken.await.is_ok(), "a full small queue wakes its exporter");
        // Closed: dropped and counted as not exported.
        small.close();
        small.push(span_data());
        assert_eq!(counters.dropped_export_failed.get(), 1);
        assert_eq!(small.take_batch().len(), 3);
    }

    #[test]
    fn samplers_parse_by_their_standard_names() {
        assert_eq!(
            SamplerSetting::parse("parentbased_traceidratio", Some("0.25")),
            Ok(SamplerSetting::ParentBasedRatio(0.25))
        );
        assert_eq!(
            SamplerSetting::parse("traceidratio", None),
            Ok(SamplerSetting::Ratio(1.0))
        );
        assert_eq!(
            SamplerSetting::parse("always_off", Some("ignored")),
            Ok(SamplerSetting::AlwaysOff)
        );
        let bad = SamplerSetting::parse("traceidratio", Some("2")).unwrap_err();
        assert!(
            bad.contains("`2`") && bad.contains("OTEL_TRACES_SAMPLER_ARG"),
            "{bad}"
        );
        let bad = SamplerSetting::parse("sometimes", None).unwrap_err();
        assert!(bad.contains("`sometimes`"), "{bad}");
    }

    #[test]
    fn traceparents_are_checked_as_w3c_says() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(ok));
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn tracestate_is_bounded_and_needs_a_valid_parent() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = |pairs: &[(&'static str, String)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, http::HeaderValue::from_str(v).unwrap());
            }
            Headers::of(&h)
        };
        let h = headers(&[
            (TRACEPARENT, parent.into()),
            (TRACESTATE, "a=1".into()),
            (TRACESTATE, "b=2".into()),
        ]);
        assert_eq!(h.get(TRACEPARENT), Some(parent));
        assert_eq!(h.get(TRACESTATE), Some("a=1,b=2"), "joined");

        let members = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>();
        let h = headers(&[
            (TRACEPARENT, parent.into()),
            (TRACESTATE, members(32).join(",")),
        ]);
        assert!(h.get(TRACESTATE).is_some(), "32 members");
        let h = headers(&[
            (TRACEPARENT, parent.into()),
            (TRACESTATE, members(33).join(",")),
        ]);
        assert_eq!(h.get(TRACESTATE), None, "33 members");
        assert_eq!(h.get(TRACEPARENT), Some(parent), "the parent stays");
        let h = headers(&[
            (TRACEPARENT, parent.into()),
            (
                TRACESTATE,
                format!("k={}", "v".repeat(MAX_TRACESTATE_BYTES)),
            ),
        ]);
        assert_eq!(h.get(TRACESTATE), None, "too long");

        // A bad or doubled parent: neither header is read.
        let h = headers(&[
            (TRACEPARENT, parent.to_uppercase()),
            (TRACESTATE, "a=1".into()),
        ]);
        assert_eq!((h.get(TRACEPARENT), h.get(TRACESTATE)), (None, None));
        assert!(h.keys().is_empty());
        let h = headers(&[(TRACEPARENT, parent.into()), (TRACEPARENT, parent.into())]);
        assert_eq!(h.get(TRACEPARENT), None);
    }

    #[test]
    fn endpoints_follow_the_otlp_variables() {
        let e = |b, t, p| TraceSettings::endpoint_from(b, t, p);
        assert_eq!(e(None, None, "http/protobuf"), Ok(None));
        assert_eq!(
            e(Some("http://127.0.0.1:4318/"), None, "http/protobuf"),
            Ok(Some("http://127.0.0.1:4318/v1/traces".into()))
        );
        assert_eq!(
            e(Some("http://a:4318"), Some("http://b:9/x"), "http/protobuf"),
            Ok(Some("http://b:9/x".into()))
        );
        assert!(
            e(Some("http://a:4318"), None, "grpc")
                .unwrap_err()
                .contains("`grpc`")
        );
        assert!(e(Some("https://a:4318"), None, "http/protobuf").is_err());
    }
}
