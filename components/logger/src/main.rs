//! Logger component: writes `stdout line` to stdout and `stderr line` to
//! stderr, then answers 200 `logged`. With `?line=<percent-encoded bytes>`
//! it writes those bytes (one line, control characters and all) to stdout
//! after `stdout line`: hostile tenant output for the host's log views.

use std::io::Write as _;

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    println!("stdout line");
    if let Some(line) = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("line=")))
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&percent_decode(line));
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
    eprintln!("stderr line");
    Ok(Response::new("logged".into()))
}

/// `%XX` as the byte it names; anything else as is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}
