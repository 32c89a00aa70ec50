//! WASIp3 key-value service: a `wasi:http/handler@0.3` export calling
//! `wasi:keyvalue@0.2.0-draft` (wasmtime's keyvalue WIT, `wit/host/`),
//! imported as plain synchronous functions.
//!
//! * `POST /incr/B/K?by=N` → the new value
//! * `GET /get/B/K` → the value, or `404`
//!
//! Errors answer `500` with `error: ...`.

wit_bindgen::generate!({
    path: "../../wit/host",
    world: "berth:host/stateful",
    generate_all,
});

use wasi::keyvalue::{atomics, store};
use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Kv);

struct Kv;

fn answer(status: u16, body: Vec<u8>) -> Result<Response, ErrorCode> {
    let (mut tx, rx) = wit_stream::new();
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(rx), trailers);
    let _ = response.set_status_code(status);
    wasip3::spawn_local(async move {
        tx.write_all(body).await;
    });
    Ok(response)
}

fn kv_error(e: store::Error) -> Vec<u8> {
    match e {
        store::Error::NoSuchStore => b"error: no-such-store".to_vec(),
        store::Error::AccessDenied => b"error: access-denied".to_vec(),
        store::Error::Other(s) => format!("error: {s}").into_bytes(),
    }
}

impl wasip3::exports::http::handler::Guest for Kv {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let full = request.get_path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let segs: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
        let (op, name, key) = (
            segs.first().copied().unwrap_or(""),
            segs.get(1).copied().unwrap_or(""),
            segs.get(2).copied().unwrap_or(""),
        );
        let bucket = match store::open(name) {
            Ok(b) => b,
            Err(e) => return answer(500, kv_error(e)),
        };
        match op {
            "incr" => {
                let by = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("by="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                match atomics::increment(&bucket, key, by) {
                    Ok(n) => answer(200, n.to_string().into_bytes()),
                    Err(e) => answer(500, kv_error(e)),
                }
            }
            "get" => match bucket.get(key) {
                Ok(Some(v)) => answer(200, v),
                Ok(None) => answer(404, b"absent".to_vec()),
                Err(e) => answer(500, kv_error(e)),
            },
            _ => answer(404, b"no such operation".to_vec()),
        }
    }
}

fn main() {}
