//! Outbound HTTP through `wasi:http/outgoing-handler`.

use wstd::http::error::Context as _;

use crate::{Body, Client, Error, Request, Response, Uri};

/// GETs `url` and returns the response once its head has arrived; read the
/// body with [`Body::contents`], [`Body::str_contents`] or, with the `json`
/// feature, [`Body::json`].
///
/// A URL without a scheme is fetched over https. For other methods, headers,
/// a request body or timeouts, build a [`Request`] and use a [`Client`].
///
/// # Errors
///
/// If `url` is not a valid URI, or the request fails: the host refused it
/// (berth allows only the app's `allowed_outbound_hosts`), the connection
/// failed, or the upstream sent something that is not HTTP. A non-2xx status
/// is not an error.
///
/// ```
/// use berth_sdk::{Request, Response, StatusCode};
///
/// #[berth_sdk::http_component]
/// async fn handle(_request: Request) -> berth_sdk::Result<Response> {
///     let mut upstream = berth_sdk::get("https://example.com/").await?;
///     let body = upstream.body_mut().str_contents().await?;
///     Ok(berth_sdk::text(StatusCode::OK, format!("{} bytes\n", body.len())))
/// }
/// ```
pub async fn get(url: &str) -> Result<Response, Error> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("invalid URL `{url}`"))?;
    let request = Request::get(uri).body(Body::empty())?;
    Client::new()
        .send(request)
        .await
        .with_context(|| format!("GET {url} failed"))
}
