//! Trap component: executes the wasm `unreachable` instruction in the handler.

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    core::arch::wasm32::unreachable()
}
