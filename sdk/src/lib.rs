//! Write berth HTTP apps as one function from request to response.
//!
//! A berth app is a `wasi:http` component (the `http-app` world in the
//! repository's `wit/`). This crate turns an ordinary Rust function into that
//! component's `wasi:http/incoming-handler` export and adds the few helpers
//! most handlers want. It builds on [`wstd`], the async runtime for WASI 0.2,
//! which it re-exports for everything it does not wrap (timers, streams, ...).
//!
//! ```
//! use berth_sdk::{Request, Response, StatusCode};
//!
//! #[berth_sdk::http_component]
//! async fn handle(request: Request) -> Response {
//!     let name = berth_sdk::query(&request, "name").unwrap_or_else(|| "world".into());
//!     berth_sdk::text(StatusCode::OK, format!("hello, {name}\n"))
//! }
//! ```
//!
//! Build it as a bin or a `cdylib` with `cargo build --target wasm32-wasip2`
//! (the output is a component; no adapter needed) and serve it with
//! `berth serve`. `examples/sdk-hello` in the repository is a complete crate.
//! A cargo-component project (a `cdylib` targeting `wasi:http/proxy` or
//! berth's `http-app`) can use the attribute too, in place of the bindings
//! that cargo-component generates: leave out their `mod bindings`.
//!
//! # Layout
//!
//! - [`http_component`]: the entry point attribute; [`IntoResponse`] is what a
//!   handler may return.
//! - [`http_service`] and [`p3`]: the same for a WASIp3 handler
//!   (`wasi:http/handler@0.3`, async with streamed bodies and trailers; berth
//!   reuses its instances).
//! - [`text`], [`json`], [`empty`]: responses, with the content type set.
//! - [`query`], [`header`]: read a request.
//! - [`app_name`], [`env()`], [`config()`]: the app's settings, which berth
//!   passes as environment variables.
//! - [`kv`]: key-value storage that outlives requests and restarts
//!   (`wasi:keyvalue`): `kv::Store::open("default")?.increment("hits", 1)?`.
//! - [`config`](mod@config): the app's `config` values and secrets, read
//!   live (`wasi:config`): `config::get("currency")?`.
//! - [`get`] and [`Client`]: outbound HTTP through `wasi:http/outgoing-handler`.
//!   The host must allow the destination (`allowed_outbound_hosts`).
//! - [`http`] and [`wstd`]: the crates underneath, re-exported for the rest
//!   (header name constants, request builders, timers, streams).
//!
//! # Features
//!
//! - `json` (default): [`json`] responses and
//!   [`Body::json`](wstd::http::Body::json) request bodies, with `serde_json`
//!   (and `p3::json`, `p3::read_json`).
//! - `p3` (default): [`http_service`] and the [`p3`] module, on the `wasip3`
//!   crate.

pub mod config;
pub mod kv;
mod outbound;
#[cfg(feature = "p3")]
pub mod p3;
mod request;
mod response;
mod settings;
mod wit;

pub use outbound::get;
pub use request::{header, query};
#[cfg(feature = "json")]
pub use response::json;
pub use response::{IntoResponse, empty, text};
pub use settings::{ConfigError, app_name, config, env};

/// Makes a function the component's HTTP handler.
///
/// The function takes the [`Request`] and returns anything that is
/// [`IntoResponse`]: a [`Response`], or a `Result` of one whose error is logged
/// to stderr (the app's log) and answered with a 500. It may be `async` and
/// may have any name, `main` included. One handler per component.
///
/// Each request runs in a fresh instance on wasmtime-based hosts, berth
/// included, so a handler cannot keep state in memory between requests.
///
/// ```
/// use berth_sdk::{Request, Response, StatusCode};
///
/// #[berth_sdk::http_component]
/// fn handle(request: Request) -> berth_sdk::Result<Response> {
///     let id: u64 = berth_sdk::query(&request, "id")
///         .ok_or_else(|| berth_sdk::Error::msg("missing ?id="))?
///         .parse()?;
///     Ok(berth_sdk::text(StatusCode::OK, format!("item {id}\n")))
/// }
/// ```
///
/// The attribute also supplies the `fn main` that a bin crate needs; it is
/// exported as `wasi:cli/run`, which HTTP hosts never call. Use the attribute
/// at the crate root, in a crate without a `main` of its own.
pub use berth_sdk_macro::http_component;

/// Makes a function the component's WASIp3 HTTP handler
/// (`wasi:http/handler@0.3`): the same contract as [`http_component`], with
/// the request, response and helpers of [`p3`].
///
/// ```no_run
/// use berth_sdk::StatusCode;
/// use berth_sdk::p3::{Request, Response};
///
/// #[berth_sdk::http_service]
/// async fn handle(request: Request) -> Response {
///     let name = berth_sdk::query(&request, "name").unwrap_or_else(|| "world".into());
///     berth_sdk::p3::text(StatusCode::OK, format!("hello, {name}\n"))
/// }
/// ```
///
/// berth reuses a WASIp3 instance for further requests unless the app sets
/// `instances.reuse = "none"`, so what a handler keeps in statics carries
/// over between requests of one instance; never rely on it for correctness
/// (another instance may take the next request).
#[cfg(feature = "p3")]
pub use berth_sdk_macro::http_service;

pub use http;
pub use wstd;
pub use wstd::http::{
    Body, Client, Error, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri,
};

/// An HTTP request; the body is streamed from the host as it is read.
pub type Request<B = Body> = http::Request<B>;

/// An HTTP response; see [`text`], [`json`] and [`empty`] to make one.
pub type Response<B = Body> = http::Response<B>;

/// A `Result` whose error defaults to [`Error`] (an [`anyhow::Error`]).
///
/// [`anyhow::Error`]: https://docs.rs/anyhow
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What `#[http_component]` expands to. Not a public API.
#[doc(hidden)]
pub mod __private {
    use core::future::Future;

    pub use wstd::__internal::wasip2;
    use wstd::__internal::wasip2::http::types::{IncomingRequest, ResponseOutparam};
    use wstd::http::server::Responder;

    use crate::{IntoResponse, Request, StatusCode};

    /// Runs one request through `handler` and streams its response out.
    pub fn serve<H, F>(incoming: IncomingRequest, response_out: ResponseOutparam, handler: H)
    where
        H: FnOnce(Request) -> F,
        F: Future,
        F::Output: IntoResponse,
    {
        let responder = Responder::new(response_out);
        wstd::runtime::block_on(async move {
            let response = match wstd::http::request::try_from_incoming(incoming) {
                Ok(request) => handler(request).await.into_response(),
                Err(err) => {
                    eprintln!("berth-sdk: unusable request: {err:?}");
                    crate::text(StatusCode::BAD_REQUEST, "bad request\n")
                }
            };
            // Headers are out by now; a failure here is the client going away
            // mid-body, and there is nobody left to tell but the log.
            if let Err(err) = responder.respond(response).await {
                eprintln!("berth-sdk: failed to send the response body: {err:?}");
            }
        });
    }

    /// The body of the `fn main` that `#[http_component]` adds.
    pub fn not_a_command() -> ! {
        eprintln!(
            "this is a wasi:http component: serve it with `berth serve` \
             (it has no command-line entry point)"
        );
        std::process::exit(2)
    }
}
