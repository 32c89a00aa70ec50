//! WASIp3 streaming echo: reflects the request back, chunk by chunk.
//!
//! * `x-echo-method`, `x-echo-path`: the request's method and path with query.
//! * `x-echo-header-<name>`: one per request header value.
//! * `?status=<code>` answers with that status (default 200).
//! * The body is copied from the request's `stream<u8>` to the response's as
//!   it arrives (never collected whole); a chunk is answered before the next
//!   is read, so a client sees its first chunk echoed while still sending.
//! * Trailers: `x-echo-bytes: <n>` (bytes echoed), plus every request
//!   trailer as `x-echo-trailer-<name>`.

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::wit_bindgen::StreamResult;
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Echo);

struct Echo;

fn internal(e: impl std::fmt::Debug) -> ErrorCode {
    ErrorCode::InternalError(Some(format!("{e:?}")))
}

impl wasip3::exports::http::handler::Guest for Echo {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let method = match request.get_method() {
            Method::Get => "GET".to_owned(),
            Method::Head => "HEAD".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            Method::Patch => "PATCH".to_owned(),
            Method::Options => "OPTIONS".to_owned(),
            Method::Connect => "CONNECT".to_owned(),
            Method::Trace => "TRACE".to_owned(),
            Method::Other(m) => m,
        };
        let path = request
            .get_path_with_query()
            .unwrap_or_else(|| "/".to_owned());
        let status = path
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("status=")))
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(200);
        let mut entries = vec![
            ("x-echo-method".to_owned(), method.into_bytes()),
            ("x-echo-path".to_owned(), path.into_bytes()),
        ];
        for (name, value) in request.get_headers().copy_all() {
            entries.push((format!("x-echo-header-{name}"), value));
        }
        let headers = Fields::from_list(&entries).map_err(internal)?;

        let (request_done, request_done_rx) = wit_future::new(|| Ok(()));
        let (mut incoming, incoming_trailers) = Request::consume_body(request, request_done_rx);
        let (mut outgoing, body) = wit_stream::new();
        let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(body), trailers);
        response.set_status_code(status).map_err(internal)?;

        wasip3::spawn_local(async move {
            let mut echoed = 0u64;
            loop {
                let (result, chunk) = incoming.read(Vec::with_capacity(16 << 10)).await;
                if !chunk.is_empty() {
                    echoed += chunk.len() as u64;
                    if !outgoing.write_all(chunk).await.is_empty() {
                        return; // the client went away
                    }
                }
                match result {
                    StreamResult::Complete(_) => {}
                    StreamResult::Dropped | StreamResult::Cancelled => break,
                }
            }
            drop(outgoing);
            let mut entries = vec![("x-echo-bytes".to_owned(), echoed.to_string().into_bytes())];
            if let Ok(Some(theirs)) = incoming_trailers.await {
                for (name, value) in theirs.copy_all() {
                    entries.push((format!("x-echo-trailer-{name}"), value));
                }
            }
            drop(request_done);
            if let Ok(fields) = Fields::from_list(&entries) {
                let _ = trailers_tx.write(Ok(Some(fields))).await;
            }
        });
        Ok(response)
    }
}

fn main() {}
