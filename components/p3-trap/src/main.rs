//! WASIp3 trap component: executes `unreachable` in its async handler.

use wasip3::http::types::{ErrorCode, Request, Response};

wasip3::http::service::export!(Trap);

struct Trap;

impl wasip3::exports::http::handler::Guest for Trap {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        core::arch::wasm32::unreachable()
    }
}

fn main() {}
