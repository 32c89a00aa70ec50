//! Panic component: panics in the handler (panic = abort, so the guest traps
//! after writing the panic message to stderr).

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    panic!("guest panicked on purpose")
}
