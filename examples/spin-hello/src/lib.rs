//! A Spin app as the current Rust `spin-sdk` (7.0.0) writes one: an async
//! `#[http_service]` handler, which makes a WASIp3 component exporting
//! `wasi:http/handler@0.3.0`. berth serves it unchanged:
//!
//! ```sh
//! cd examples/spin-hello && cargo build --target wasm32-wasip2 --release
//! cd ../.. && ./target/release/berth serve --config examples/spin-hello/berth.toml
//! curl 'http://spin-hello.localhost:8080/some/path?x=1'
//! ```

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_service;

/// Greets the caller, naming the method and the path it asked for.
#[http_service]
async fn hello(req: Request) -> impl IntoResponse {
    let text = format!(
        "hello from spin-sdk: {} {}\n",
        req.method(),
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(text)
        .expect("a static status and header are valid")
}
