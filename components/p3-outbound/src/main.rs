//! WASIp3 outbound component: `?url=<percent-encoded URL>` GETs that URL
//! through `wasi:http/client@0.3`.
//!
//! * success: 200, body `upstream <status>: <upstream body>` (lossy UTF-8).
//! * failure (refused by the host, connection error, bad URL...): 502, body
//!   `outbound error: <error code debug>`.
//! * missing `url`: 400.

use wasip3::http::client;
use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::wit_bindgen::StreamResult;
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Outbound);

struct Outbound;

impl wasip3::exports::http::handler::Guest for Outbound {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let url = request
            .get_path_with_query()
            .unwrap_or_default()
            .split_once('?')
            .and_then(|(_, q)| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("url="))
                    .map(decode)
            });
        let (status, body) = match url {
            None => (400, "expected ?url=<percent-encoded URL>".to_owned()),
            Some(url) => match fetch(&url).await {
                Ok((status, body)) => (
                    200,
                    format!("upstream {status}: {}", String::from_utf8_lossy(&body)),
                ),
                Err(e) => (502, format!("outbound error: {e}")),
            },
        };
        let (mut tx, rx) = wit_stream::new();
        let (_, trailers) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(Fields::new(), Some(rx), trailers);
        response
            .set_status_code(status)
            .map_err(|()| ErrorCode::InternalError(None))?;
        wasip3::spawn_local(async move {
            tx.write_all(body.into_bytes()).await;
        });
        Ok(response)
    }
}

/// A GET of `url`: its status and whole body, or the error as text.
async fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(format!("bad url {url:?}: expected http:// or https://")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (req, _sent) = Request::new(Fields::new(), None, trailers, None);
    let invalid = |()| "invalid request part".to_owned();
    req.set_method(&Method::Get).map_err(invalid)?;
    req.set_scheme(Some(&scheme)).map_err(invalid)?;
    req.set_authority(Some(authority)).map_err(invalid)?;
    req.set_path_with_query(Some(path)).map_err(invalid)?;
    let resp = client::send(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.get_status_code();
    let (_done, done_rx) = wit_future::new(|| Ok(()));
    let (mut body, _trailers) = Response::consume_body(resp, done_rx);
    let mut all = Vec::new();
    loop {
        let (result, chunk) = body.read(Vec::with_capacity(16 << 10)).await;
        all.extend_from_slice(&chunk);
        match result {
            StreamResult::Complete(_) => {}
            StreamResult::Dropped | StreamResult::Cancelled => break,
        }
    }
    Ok((status, all))
}

/// Percent-decoding of a query value (`%XX` and `+`).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn main() {}
