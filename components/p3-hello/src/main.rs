//! WASIp3 twin of `hello`: answers every request with `hello from <app>`
//! through `wasi:http/handler@0.3` (an async export). The app name comes from
//! `BERTH_APP`; `unknown` if it is missing.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Hello);

struct Hello;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let app = std::env::var("BERTH_APP").unwrap_or_else(|_| "unknown".to_owned());
        let body = format!("hello from {app}").into_bytes();
        let headers = Fields::from_list(&[(
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        )])
        .map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}"))))?;
        let (mut tx, rx) = wit_stream::new();
        let (_, trailers) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(rx), trailers);
        wasip3::spawn_local(async move {
            tx.write_all(body).await;
        });
        Ok(response)
    }
}

fn main() {}
