//! Env component: lists the guest's environment as `KEY=VALUE\n` lines,
//! sorted by key (non-UTF-8 is replaced lossily).

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    vars.sort();
    let body: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    Ok(Response::new(body.into()))
}
