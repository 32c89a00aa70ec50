//! Echo component: reflects the request back to the caller.
//!
//! * `x-echo-method`: the request method.
//! * `x-echo-path`: the request path and query, as received.
//! * `x-echo-scheme`: the scheme the host says the request came with
//!   (`http`, or `https` behind TLS).
//! * `x-echo-header-<name>`: one per request header value (repeated headers
//!   are repeated).
//! * `content-length`: copied from the request, if it had one.
//! * The body is streamed back byte for byte (wasi input stream copied to the
//!   output stream; it is never collected in memory as a whole).

use wstd::http::{Body, Error, HeaderName, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let (parts, body) = request.into_parts();

    let mut response = Response::builder()
        .header("x-echo-method", parts.method.as_str())
        .header(
            "x-echo-path",
            parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        )
        .header("x-echo-scheme", parts.uri.scheme_str().unwrap_or("none"));
    for (name, value) in &parts.headers {
        let echoed = HeaderName::from_bytes(format!("x-echo-header-{name}").as_bytes())?;
        response = response.header(echoed, value);
    }
    if let Some(len) = parts.headers.get("content-length") {
        response = response.header("content-length", len);
    }

    // Handing the incoming body straight to the response makes wstd splice the
    // wasi input stream into the output stream chunk by chunk.
    Ok(response.body(body)?)
}
