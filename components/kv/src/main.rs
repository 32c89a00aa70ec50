//! Key-value component: each request makes one `wasi:keyvalue` or
//! `wasi:config` call (or a few) and answers with its outcome. The WIT is
//! `wit/host/deps/{keyvalue,config}` of this repository, vendored unchanged
//! from wasmtime's `wasmtime-wasi-keyvalue` / `wasmtime-wasi-config` 50.0.1,
//! so this is a component built for wasmtime's own interfaces.
//!
//! * `GET /get/B/K` → the value, or `404`
//! * `PUT /set/B/K` (body: the value) → `ok`
//! * `DELETE /delete/B/K` → `ok`
//! * `GET /exists/B/K` → `true` or `false`
//! * `GET /list/B` → every key, one a line, after a `pages N` line (walks
//!   the cursors until none is left)
//! * `GET /list-page/B?cursor=N` → `cursor C` (`none` at the end), then keys
//! * `POST /incr/B/K?by=N` → the new value
//! * `POST /set-many/B?prefix=P&n=N&size=S` → `ok` (keys `P0`…, values of S bytes)
//! * `GET /get-many/B?keys=a,b` → `a=VALUE` or `a absent` lines
//! * `POST /delete-many/B?keys=a,b` → `ok`
//! * `GET /config/K` → the value, or `404`; `GET /config-all` → `k=v` lines
//!
//! Any error answers `500` with `error: ...` (the store's error text).

wit_bindgen::generate!({
    path: "../../wit/host",
    world: "berth:host/stateful",
    generate_all,
});

use wasi::config::store as config;
use wasi::keyvalue::{atomics, batch, store};
use wstd::http::{Body, Error, Request, Response, StatusCode};

fn text(status: StatusCode, body: impl Into<String>) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(status)
        .body(Body::from(body.into()))?)
}

fn kv_error(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "error: no-such-store".into(),
        store::Error::AccessDenied => "error: access-denied".into(),
        store::Error::Other(s) => format!("error: {s}"),
    }
}

fn query<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let (parts, mut body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let q = parts.uri.query().unwrap_or("").to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    let op = segs.first().copied().unwrap_or("");

    if op == "config" {
        let key = segs.get(1).copied().unwrap_or("");
        return match config::get(key) {
            Ok(Some(v)) => text(StatusCode::OK, v),
            Ok(None) => text(StatusCode::NOT_FOUND, "absent"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e:?}")),
        };
    }
    if op == "config-all" {
        return match config::get_all() {
            Ok(all) => text(
                StatusCode::OK,
                all.iter()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect::<String>(),
            ),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e:?}")),
        };
    }

    let name = segs.get(1).copied().unwrap_or("");
    let key = segs.get(2).copied().unwrap_or("");
    let bucket = match store::open(name) {
        Ok(b) => b,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, kv_error(e)),
    };
    let fail = |e| text(StatusCode::INTERNAL_SERVER_ERROR, kv_error(e));
    let keys_of = |q: &str| -> Vec<String> {
        query(q, "keys")
            .unwrap_or("")
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match op {
        "open" => text(StatusCode::OK, "ok"),
        "get" => match bucket.get(key) {
            Ok(Some(v)) => Ok(Response::new(Body::from(v))),
            Ok(None) => text(StatusCode::NOT_FOUND, "absent"),
            Err(e) => fail(e),
        },
        "set" => {
            let value = body.contents().await?.to_vec();
            match bucket.set(key, &value) {
                Ok(()) => text(StatusCode::OK, "ok"),
                Err(e) => fail(e),
            }
        }
        "delete" => match bucket.delete(key) {
            Ok(()) => text(StatusCode::OK, "ok"),
            Err(e) => fail(e),
        },
        "exists" => match bucket.exists(key) {
            Ok(b) => text(StatusCode::OK, b.to_string()),
            Err(e) => fail(e),
        },
        "list" => {
            let mut keys = Vec::new();
            let mut cursor = None;
            let mut pages = 0;
            loop {
                match bucket.list_keys(cursor) {
                    Ok(r) => {
                        pages += 1;
                        keys.extend(r.keys);
                        match r.cursor {
                            Some(c) => cursor = Some(c),
                            None => break,
                        }
                    }
                    Err(e) => return fail(e),
                }
                if pages > 100_000 {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "error: cursor loop");
                }
            }
            let mut out = format!("pages {pages}\n");
            for k in keys {
                out.push_str(&k);
                out.push('\n');
            }
            text(StatusCode::OK, out)
        }
        "list-page" => {
            let cursor = query(&q, "cursor").and_then(|c| c.parse().ok());
            match bucket.list_keys(cursor) {
                Ok(r) => {
                    let mut out = match r.cursor {
                        Some(c) => format!("cursor {c}\n"),
                        None => "cursor none\n".into(),
                    };
                    for k in r.keys {
                        out.push_str(&k);
                        out.push('\n');
                    }
                    text(StatusCode::OK, out)
                }
                Err(e) => fail(e),
            }
        }
        "incr" => {
            let by = query(&q, "by").and_then(|b| b.parse().ok()).unwrap_or(1);
            match atomics::increment(&bucket, key, by) {
                Ok(n) => text(StatusCode::OK, n.to_string()),
                Err(e) => fail(e),
            }
        }
        "set-many" => {
            let prefix = query(&q, "prefix").unwrap_or("k");
            let n: usize = query(&q, "n").and_then(|v| v.parse().ok()).unwrap_or(1);
            let size: usize = query(&q, "size").and_then(|v| v.parse().ok()).unwrap_or(1);
            let pairs: Vec<(String, Vec<u8>)> = (0..n)
                .map(|i| (format!("{prefix}{i}"), vec![b'v'; size]))
                .collect();
            match batch::set_many(&bucket, &pairs) {
                Ok(()) => text(StatusCode::OK, "ok"),
                Err(e) => fail(e),
            }
        }
        "get-many" => match batch::get_many(&bucket, &keys_of(&q)) {
            Ok(values) => {
                let keys = keys_of(&q);
                let out: String = keys
                    .iter()
                    .zip(values)
                    .map(|(k, v)| match v {
                        Some((_, v)) => format!("{k}={}\n", String::from_utf8_lossy(&v)),
                        None => format!("{k} absent\n"),
                    })
                    .collect();
                text(StatusCode::OK, out)
            }
            Err(e) => fail(e),
        },
        "delete-many" => match batch::delete_many(&bucket, &keys_of(&q)) {
            Ok(()) => text(StatusCode::OK, "ok"),
            Err(e) => fail(e),
        },
        _ => text(StatusCode::NOT_FOUND, "no such operation"),
    }
}
