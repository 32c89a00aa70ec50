//! Spin component: busy-loops forever in the handler without ever yielding to
//! the host. Only epoch/fuel interruption can stop it.

use core::hint::black_box;
use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    let mut counter: u64 = 0;
    loop {
        // `black_box` keeps the optimizer from proving the loop side-effect free.
        counter = black_box(counter.wrapping_add(1));
    }
}
