//! Minimal component: answers every request with `hello from <app name>`.
//!
//! The app name comes from the `BERTH_APP` environment variable that the host
//! sets; `unknown` if it is missing. This is the cold-start benchmark subject,
//! so keep it as small as possible.

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    let app = std::env::var("BERTH_APP").unwrap_or_else(|_| "unknown".to_owned());
    Ok(Response::new(format!("hello from {app}").into()))
}
