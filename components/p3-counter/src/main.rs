//! WASIp3 counter: keeps state in its instance's memory and shows it.
//!
//! Every request increments a counter in a global and records its own mark
//! (`?mark=`, or `-`); the answer is `count <n> previous <mark>`, `<n>`
//! counting the requests this instance has seen and `<mark>` the mark of the
//! request before it here (`none` for the first). With a fresh instance per
//! request the answer is always `count 1 previous none`; anything else means
//! one request saw another's memory (which reuse allows, by design).
//!
//! After counting, `?fail=trap` traps, `?fail=spin` loops forever and
//! `?fail=grow` allocates until the memory limit stops it: each must retire
//! a reused instance, so the next request starts over at `count 1`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Counter);

struct Counter;

static COUNT: AtomicU64 = AtomicU64::new(0);
static LAST_MARK: Mutex<Option<String>> = Mutex::new(None);

impl wasip3::exports::http::handler::Guest for Counter {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let mark = query_value(&request, "mark").unwrap_or_else(|| "-".to_owned());
        let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        let previous = LAST_MARK
            .lock()
            .map(|mut last| last.replace(mark))
            .unwrap_or(None)
            .unwrap_or_else(|| "none".to_owned());
        if let Some(fail) = query_value(&request, "fail") {
            match fail.as_str() {
                "trap" => core::arch::wasm32::unreachable(),
                "spin" => {
                    let mut x: u64 = 0;
                    loop {
                        x = core::hint::black_box(x.wrapping_add(1));
                    }
                }
                "grow" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        core::hint::black_box(&hoard);
                    }
                }
                _ => {}
            }
        }
        let body = format!("count {n} previous {previous}").into_bytes();
        let (mut tx, rx) = wit_stream::new();
        let (_, trailers) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(Fields::new(), Some(rx), trailers);
        wasip3::spawn_local(async move {
            tx.write_all(body).await;
        });
        Ok(response)
    }
}

/// The value of `key` in the request's query.
fn query_value(request: &Request, key: &str) -> Option<String> {
    let path = request.get_path_with_query()?;
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.to_owned())
    })
}

fn main() {}
