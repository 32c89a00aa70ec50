//! Fan-out component: `?url=<percent-encoded URL>&n=<count>` starts `n`
//! GETs of `url` through wasi:http/outgoing-handler *at once* (each with a
//! 2 s connect and first-byte timeout), waits for every one to end, and
//! answers 200 with one line per outcome, sorted: `<count> <outcome>`,
//! where an outcome is `status <code>` or the error code's debug name
//! (`ConnectionLimitReached`, `ConnectionReadTimeout`, …). Missing or bad
//! `url`/`n` (1..=100000): 400. Never panics on an outbound error.
//!
//! It is the hostile guest of berth's outbound caps: without them, one
//! request of it holds `n` connections (and host descriptors) at once.

use std::collections::BTreeMap;

use berth_sdk::{Request, Response, StatusCode, Uri, text};
use wasip2::http::outgoing_handler::{self, FutureIncomingResponse};
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};

const TIMEOUT_NS: u64 = 2_000_000_000;

#[berth_sdk::http_component]
fn handle(request: Request) -> Response {
    let (Some(url), Some(n)) = (
        berth_sdk::query(&request, "url"),
        berth_sdk::query(&request, "n").and_then(|n| n.parse::<u32>().ok()),
    ) else {
        return text(StatusCode::BAD_REQUEST, "expected ?url=<URL>&n=<count>");
    };
    let Ok(uri) = url.parse::<Uri>() else {
        return text(StatusCode::BAD_REQUEST, "bad url");
    };
    if !(1..=100_000).contains(&n) {
        return text(StatusCode::BAD_REQUEST, "n must be in 1..=100000");
    }
    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    let mut pending = Vec::new();
    for _ in 0..n {
        match start(&uri) {
            Ok(future) => pending.push(future),
            Err(outcome) => *outcomes.entry(outcome).or_default() += 1,
        }
    }
    for future in pending {
        future.subscribe().block();
        let outcome = match future.get() {
            Some(Ok(Ok(response))) => format!("status {}", response.status()),
            Some(Ok(Err(code))) => name(&format!("{code:?}")),
            Some(Err(())) | None => "no response".into(),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let body: String = outcomes
        .iter()
        .map(|(outcome, count)| format!("{count} {outcome}\n"))
        .collect();
    text(StatusCode::OK, body)
}

/// Starts one GET of `uri`; an error the host gives at once is its outcome.
fn start(uri: &Uri) -> Result<FutureIncomingResponse, String> {
    let req = OutgoingRequest::new(Fields::new());
    let invalid = |_| "invalid request part".to_string();
    req.set_method(&Method::Get).map_err(invalid)?;
    let scheme = if uri.scheme_str() == Some("https") {
        Scheme::Https
    } else {
        Scheme::Http
    };
    req.set_scheme(Some(&scheme)).map_err(invalid)?;
    req.set_authority(uri.authority().map(|a| a.as_str()))
        .map_err(invalid)?;
    req.set_path_with_query(uri.path_and_query().map(|p| p.as_str()))
        .map_err(invalid)?;
    let options = RequestOptions::new();
    options
        .set_connect_timeout(Some(TIMEOUT_NS))
        .map_err(invalid)?;
    options
        .set_first_byte_timeout(Some(TIMEOUT_NS))
        .map_err(invalid)?;
    let body = req.body().map_err(invalid)?;
    let future =
        outgoing_handler::handle(req, Some(options)).map_err(|e| name(&format!("{e:?}")))?;
    OutgoingBody::finish(body, None).map_err(|e| name(&format!("{e:?}")))?;
    Ok(future)
}

/// An error code's variant name (`ErrorCode::DnsError(…)` → `DnsError`).
fn name(debug: &str) -> String {
    let debug = debug.rsplit_once("::").map_or(debug, |(_, v)| v);
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or(debug)
        .to_string()
}
