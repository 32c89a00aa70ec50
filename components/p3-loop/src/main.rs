//! WASIp3 loop component: `/spin` busy-loops forever in its async handler
//! without yielding (only epoch interruption stops it); any other path
//! answers `ok` after `?sleep_ms=<n>` milliseconds (default 0) of waiting on
//! the host's monotonic clock (a slow handler that yields).
//!
//! With `?mark=<m>` it prints `start <m> <n>` to stdout before it waits and
//! `end <m>` after, `<n>` numbering the requests its instance has seen, so
//! a test can tell which request wrote which line, and which requests
//! shared an instance.

use core::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::clocks::monotonic_clock;
use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Loop);

struct Loop;

static SEEN: AtomicU64 = AtomicU64::new(0);

impl wasip3::exports::http::handler::Guest for Loop {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        if path.starts_with("/spin") {
            let mut counter: u64 = 0;
            loop {
                counter = black_box(counter.wrapping_add(1));
            }
        }
        let query = |key: &str| {
            path.split_once('?').and_then(|(_, q)| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            })
        };
        let sleep_ms = query("sleep_ms")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let n = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        let mark = query("mark");
        if let Some(mark) = mark {
            println!("start {mark} {n}");
        }
        if sleep_ms > 0 {
            monotonic_clock::wait_for(sleep_ms * 1_000_000).await;
        }
        if let Some(mark) = mark {
            println!("end {mark}");
        }
        let (mut tx, rx) = wit_stream::new();
        let (_, trailers) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(Fields::new(), Some(rx), trailers);
        wasip3::spawn_local(async move {
            tx.write_all(b"ok".to_vec()).await;
        });
        Ok(response)
    }
}

fn main() {}
