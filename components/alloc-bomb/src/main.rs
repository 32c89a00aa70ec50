//! Allocation bomb: keeps allocating (and touching) 1 MiB chunks until the
//! allocator fails, which aborts the guest (a trap). A host memory cap such as
//! 64 MiB makes this fail fast; with no cap it stops at the 4 GiB wasm32 limit.

use core::hint::black_box;
use wstd::http::{Body, Error, Request, Response};

const CHUNK: usize = 1 << 20;

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // A non-zero fill forces the pages to be written, not just reserved.
        chunks.push(black_box(vec![0xA5; CHUNK]));
        black_box(&chunks);
    }
}
