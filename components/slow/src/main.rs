//! Slow component: `?ms=N` sleeps N milliseconds on a wasi monotonic-clock
//! timer (the guest yields to the host while waiting), then answers
//! `slept N ms`. A missing or invalid `ms` gives 400.

use berth_sdk::wstd::{task::sleep, time::Duration};
use berth_sdk::{Request, Response, StatusCode, text};

#[berth_sdk::http_component]
async fn handle(request: Request) -> Response {
    let Some(ms) = berth_sdk::query(&request, "ms").and_then(|ms| ms.parse::<u64>().ok()) else {
        return text(StatusCode::BAD_REQUEST, "expected ?ms=<milliseconds>");
    };
    sleep(Duration::from_millis(ms)).await;
    text(StatusCode::OK, format!("slept {ms} ms"))
}
