//! A berth app written with `berth-sdk` and built with plain cargo.
//!
//! Run with, from the repository root:
//!
//! ```sh
//! (cd examples && cargo build --release)
//! ./target/release/berth serve --config examples/sdk-hello/berth.toml
//!
//! curl 'http://sdk-hello.localhost:8080/?name=Ferris'
//! # hello, Ferris!
//! curl http://sdk-hello.localhost:8080/api/info
//! # {"app":"sdk-hello","method":"GET","path":"/api/info","user_agent":"curl/8.5.0"}
//! curl -d '{"name":"Ferris","excited":true}' http://sdk-hello.localhost:8080/api/greet
//! # {"greeting":"HELLO, FERRIS!"}
//! ```
//!
//! The greeting word comes from the app's `GREETING` setting (`env` in
//! berth.toml), `hello` when it is not set.

use berth_sdk::{Method, Request, Response, Result, StatusCode};
use serde::{Deserialize, Serialize};

#[berth_sdk::http_component]
async fn handle(mut request: Request) -> Result<Response> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => Ok(hello(&request)),
        (&Method::GET, "/api/info") => info(&request),
        (&Method::POST, "/api/greet") => greet(&mut request).await,
        (_, "/" | "/api/info" | "/api/greet") => {
            Ok(berth_sdk::empty(StatusCode::METHOD_NOT_ALLOWED))
        }
        _ => Ok(berth_sdk::text(StatusCode::NOT_FOUND, "not found\n")),
    }
}

/// `GET /?name=...`: plain text, the name taken from the query string.
fn hello(request: &Request) -> Response {
    let name = berth_sdk::query(request, "name").unwrap_or_else(|| "world".into());
    berth_sdk::text(StatusCode::OK, format!("{}, {name}!\n", greeting()))
}

/// `GET /api/info`: what the app knows about itself and the request, as JSON.
fn info(request: &Request) -> Result<Response> {
    #[derive(Serialize)]
    struct Info<'a> {
        app: Option<String>,
        method: &'a str,
        path: &'a str,
        user_agent: Option<&'a str>,
    }

    let info = Info {
        app: berth_sdk::app_name(),
        method: request.method().as_str(),
        path: request.uri().path(),
        user_agent: berth_sdk::header(request, "user-agent"),
    };
    Ok(berth_sdk::json(StatusCode::OK, &info)?)
}

/// `POST /api/greet` with `{"name": ..., "excited": ...}`: a JSON greeting.
async fn greet(request: &mut Request) -> Result<Response> {
    #[derive(Deserialize)]
    struct Greet {
        name: String,
        #[serde(default)]
        excited: bool,
    }
    #[derive(Serialize)]
    struct Greeting {
        greeting: String,
    }

    let Ok(Greet { name, excited }) = request.body_mut().json::<Greet>().await else {
        return Ok(berth_sdk::text(
            StatusCode::BAD_REQUEST,
            "expected a JSON body like {\"name\": \"Ferris\"}\n",
        ));
    };
    let mut greeting = format!("{}, {name}!", greeting());
    if excited {
        greeting = greeting.to_uppercase();
    }
    Ok(berth_sdk::json(StatusCode::OK, &Greeting { greeting })?)
}

fn greeting() -> String {
    berth_sdk::env("GREETING").unwrap_or_else(|| "hello".into())
}
