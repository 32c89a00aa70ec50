//! Counter component: keeps state in its instance's memory and shows it.
//!
//! Every request increments a counter in a global and records its own mark
//! (the `?mark=` query, or `-`); the answer is `count <n> previous <mark>`,
//! where `<n>` counts the requests this instance has seen and `<mark>` is
//! the mark of the request before it in this instance (`none` for the
//! first). A host that gives every request a fresh instance always answers
//! `count 1 previous none`; anything else means one request saw another's
//! state.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wstd::http::{Body, Error, Request, Response};

static COUNT: AtomicU64 = AtomicU64::new(0);
static LAST_MARK: Mutex<Option<String>> = Mutex::new(None);

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let mark = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("mark=")))
        .unwrap_or("-")
        .to_owned();
    let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    let previous = LAST_MARK
        .lock()
        .map(|mut last| last.replace(mark))
        .unwrap_or(None)
        .unwrap_or_else(|| "none".to_owned());
    Ok(Response::new(
        format!("count {n} previous {previous}").into(),
    ))
}
