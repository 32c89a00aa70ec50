//! Slow component: `?ms=N` sleeps N milliseconds on a wasi monotonic-clock
//! timer (the guest yields to the host while waiting), then answers
//! `slept N ms`. A missing or invalid `ms` gives 400.

use wstd::http::{Body, Error, Request, Response, StatusCode};
use wstd::time::Duration;

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let ms = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok());
    let Some(ms) = ms else {
        return Ok(Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body("expected ?ms=<milliseconds>".into())?);
    };
    wstd::task::sleep(Duration::from_millis(ms)).await;
    Ok(Response::new(format!("slept {ms} ms").into()))
}
