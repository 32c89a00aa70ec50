//! Logger component: writes `stdout line` to stdout and `stderr line` to
//! stderr, then answers 200 `logged`.

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    println!("stdout line");
    eprintln!("stderr line");
    Ok(Response::new("logged".into()))
}
