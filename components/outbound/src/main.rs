//! Outbound component: `?url=<percent-encoded URL>` GETs that URL through
//! wasi:http/outgoing-handler.
//!
//! * success: 200, body `upstream <status>: <upstream body>` (the upstream
//!   body is decoded lossily as UTF-8).
//! * failure (refused by the host, connection error, bad URL...): 502, body
//!   `outbound error: <error debug>`.
//! * missing `url`: 400.
//!
//! Never panics on an outbound error.

use berth_sdk::{Request, Response, StatusCode, Uri, text};

#[berth_sdk::http_component]
fn handle(request: Request) -> Response {
    let Some(url) = berth_sdk::query(&request, "url") else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected ?url=<percent-encoded URL>",
        );
    };
    match fetch(&url) {
        Ok(upstream) => text(StatusCode::OK, upstream),
        Err(err) => text(StatusCode::BAD_GATEWAY, format!("outbound error: {err}")),
    }
}

fn fetch(url: &str) -> Result<String, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
    let (status, body) = get(&uri)?;
    Ok(format!(
        "upstream {status}: {}",
        String::from_utf8_lossy(&body)
    ))
}

/// A GET through the raw wasi:http bindings, so that the host's error code
/// (e.g. `HttpRequestDenied`) is reported as is.
fn get(uri: &Uri) -> Result<(u16, Vec<u8>), String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    use wasip2::io::streams::StreamError;

    let req = OutgoingRequest::new(Fields::new());
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        _ => Scheme::Https,
    };
    let unit = |_| "invalid request part".to_string();
    req.set_method(&Method::Get).map_err(unit)?;
    req.set_scheme(Some(&scheme)).map_err(unit)?;
    req.set_authority(uri.authority().map(|a| a.as_str()))
        .map_err(unit)?;
    req.set_path_with_query(uri.path_and_query().map(|p| p.as_str()))
        .map_err(unit)?;
    let body = req.body().map_err(unit)?;
    let pending = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let resp = match pending.get() {
        Some(Ok(Ok(resp))) => resp,
        Some(Ok(Err(code))) => return Err(format!("{code:?}")),
        Some(Err(())) | None => return Err("response already taken".into()),
    };
    let status = resp.status();
    let body = resp.consume().map_err(unit)?;
    let stream = body.stream().map_err(unit)?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
    Ok((status, out))
}
