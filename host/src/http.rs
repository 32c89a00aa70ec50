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

/// The address of the client a request came from, as the listener accepted
/// it: set on every request (a request extension) by the listener, read by
/// whatever slows or counts clients (the admin token's failed attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// A client as caps and slow-downs per client count it: its IPv4 address, or its
/// IPv6 /64 (an IPv4-mapped IPv6 address is its IPv4 one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(std::net::IpAddr);

impl ClientKey {
    /// The key of a peer address.
    pub fn of(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(_) => Self(ip),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(std::net::IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(std::net::IpAddr::V6(std::net::Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

/// How a request was admitted to an instance, in its response's
/// extensions (the access log reads it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Admitted {
    /// Time spent waiting for capacity in the activator's queue.
    pub queued: std::time::Duration,
    /// Whether an instance was started for this request while it waited.
    pub cold_start: bool,
}

/// Header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-berth-request-id";

pub use berth_wasm::trace::EndOnDrop;
pub use berth_wasm::{RequestInfo, TIMING_REQUEST_HEADER, Trace};

/// How much of a client's or an artifact's text an error message quotes.
pub const EXCERPT_CHARS: usize = 200;

/// `text` as an error message may quote it: control characters and quotes
/// escaped, at most [`EXCERPT_CHARS`] characters, and a note of how much was
/// left out. Hostile input (a 16 MiB name, terminal escapes) never reaches a
/// log or a response whole.
pub fn excerpt(text: &str) -> String {
    excerpt_of(text, EXCERPT_CHARS)
}

/// [`excerpt`] with room for `chars` characters (for berth's own longer
/// messages that quote what they were given, such as a deploy error).
pub fn excerpt_of(text: &str, chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(chars)
        .flat_map(char::escape_debug)
        .collect();
    let total = text.chars().count();
    if total > chars {
        out.push_str(&format!("… ({} more characters)", total - chars));
    }
    out
}

/// Whether a person's terminal (or eyes) should see `c` escaped: C0
/// controls but tab and newline (ESC starts CSI and OSC sequences: window
/// titles, clipboard writes, cursor moves; CR overwrites a line), DEL, C1
/// (U+0080–U+009F, CSI and OSC among them), and the bidirectional overrides
/// and isolates that reorder what is shown (U+202A–U+202E, U+2066–U+2069).
pub fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t' && c != '\n')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Tenant text as a person may read it: every character [`needs_escape`]
/// names becomes a visible escape (`\x1b`, `\u{202e}`); the rest is kept.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    std::borrow::Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    if !needs_escape(c) {
        out.push(c);
    } else if u32::from(c) < 0x100 {
        let _ = write!(out, "\\x{:02x}", u32::from(c));
    } else {
        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
    }
}

/// A writer that escapes what [`needs_escape`] names in the bytes written
/// through it, and each byte that is not UTF-8 as `\xNN` (an 8-bit CSI is
/// `0x9b`); a character split between two writes is kept until its end
/// comes. `berth logs` prints tenant output through it.
#[derive(Debug)]
pub struct EscapingWriter<W> {
    inner: W,
    /// The start of a character whose end has not come yet.
    pending: Vec<u8>,
}

impl<W: std::io::Write> EscapingWriter<W> {
    /// Escapes what is written to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }
}

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::fmt::Write as _;
        self.pending.extend_from_slice(buf);
        let mut out = String::with_capacity(self.pending.len());
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    text.chars().for_each(|c| push_escaped(&mut out, c));
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // Checked by from_utf8 just now.
                    let good = std::str::from_utf8(good).unwrap_or_default();
                    good.chars().for_each(|c| push_escaped(&mut out, c));
                    match e.error_len() {
                        Some(n) => {
                            for b in &bad[..n] {
                                let _ = write!(out, "\\x{b:02x}");
                            }
                            rest = &bad[n..];
                        }
                        // An incomplete character at the end: wait for more.
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.to_vec();
        self.inner.write_all(out.as_bytes())?;
        self.pending = keep;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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
    fn a_client_is_its_ipv4_address_or_its_ipv6_64() {
        let k = |s: &str| ClientKey::of(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:127.0.0.1"), k("127.0.0.1"));
        assert_ne!(k("127.0.0.1"), k("127.0.0.2"));
    }

    #[test]
    fn excerpts_are_bounded_and_escaped() {
        assert_eq!(excerpt("a.localhost"), "a.localhost");
        assert_eq!(excerpt("bad\u{1b}[31mred\n"), "bad\\u{1b}[31mred\\n");
        let long = "x".repeat(16 << 20);
        let e = excerpt(&long);
        assert!(e.len() < 300, "{}", e.len());
        assert!(e.ends_with(&format!("({} more characters)", (16 << 20) - 200)));
    }

    #[test]
    fn terminal_controls_in_tenant_text_become_visible_escapes() {
        let hostile = "title\u{1b}]0;pwned\u{7}clip\u{1b}]52;c;aGk=\u{7}\u{1b}[2K\rover\u{7f}\u{9b}31m\u{202e}txt\tok\n";
        let want =
            r"title\x1b]0;pwned\x07clip\x1b]52;c;aGk=\x07\x1b[2K\x0dover\x7f\x9b31m\u{202e}txt";
        assert_eq!(escape_controls(hostile), format!("{want}\tok\n"));
        assert!(matches!(
            escape_controls("plain ünïcode\tand\nlines"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_escaping_writer_escapes_across_writes_and_bad_utf8() {
        use std::io::Write as _;
        let mut w = EscapingWriter::new(Vec::new());
        // ESC, then "é" split over two writes, a lone 8-bit CSI byte.
        w.write_all(b"a\x1b[31m\xc3").unwrap();
        w.write_all(b"\xa9 \x9b2J\n").unwrap();
        assert_eq!(
            String::from_utf8(w.inner).unwrap(),
            "a\\x1b[31m\u{e9} \\x9b2J\n"
        );
    }
}
