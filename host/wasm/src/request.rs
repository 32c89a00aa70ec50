//! [`RequestInfo`]: one request's identity as the engine and its callers
//! share it.

use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

/// A request carrying this header (any value) gets a `Server-Timing`
/// header with berth's host-side figures (`berth bench` sends it).
pub const TIMING_REQUEST_HEADER: &str = "x-berth-timing";

/// One request's identity and arrival time.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Unique id, echoed in the `x-berth-request-id` response header and in
    /// the app log.
    pub id: Arc<str>,
    /// The same id as a header value, built once.
    pub id_header: HeaderValue,
    /// When the front door had the request's head.
    pub accepted: Instant,
    /// Whether the request came in over TLS (guests see `https`).
    pub tls: bool,
    /// Whether the client asked for `Server-Timing` (with
    /// [`TIMING_REQUEST_HEADER`]).
    pub timing: bool,
    /// Its place in a trace (empty when tracing is off): the span that work
    /// done for it hangs under.
    pub trace: crate::trace::Trace,
    /// What tags the request's lines in the app log: its id and, when it is
    /// traced, its trace id ([`crate::logs::log_tag`]).
    pub log_tag: Arc<str>,
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
            timing: false,
            trace: crate::trace::Trace::default(),
            log_tag: crate::logs::log_tag(id, None),
        }
    }

    /// Puts the request in `trace`; when it is sampled, its log lines carry
    /// the trace id from now on.
    pub fn set_trace(&mut self, trace: crate::trace::Trace) {
        if trace.is_sampled()
            && let Some(trace_id) = trace.trace_id()
        {
            self.log_tag = crate::logs::log_tag(&self.id, Some(&trace_id));
        }
        self.trace = trace;
    }
}
