//! A WASIp3 berth app written with `berth-sdk` and built with plain cargo:
//! an async `#[http_service]` handler, exported as `wasi:http/handler@0.3`.
//!
//! Run with, from the repository root:
//!
//! ```sh
//! (cd examples && cargo build --release)
//! ./target/release/berth serve --config examples/sdk-service/berth.toml
//!
//! curl 'http://sdk-service.localhost:8080/?name=Ferris'
//! # hello, Ferris!
//! curl -d '{"name":"Ferris","excited":true}' http://sdk-service.localhost:8080/api/greet
//! # {"greeting":"HELLO, FERRIS!"}
//! curl --data-binary @README.md http://sdk-service.localhost:8080/echo
//! # README.md, streamed back as it arrives
//! curl http://sdk-service.localhost:8080/api/instance
//! # {"app":"sdk-service","served":3}
//! ```
//!
//! berth reuses a WASIp3 instance for one request after another (the app's
//! `instances.reuse`, `serial` unless set), so `/api/instance` counts the
//! requests this instance has served; with `reuse = "none"` it is always 1.
//! The greeting word comes from the app's `GREETING` setting.

use std::sync::atomic::{AtomicU64, Ordering};

use berth_sdk::p3::{Request, Response};
use berth_sdk::{Method, Result, StatusCode};
use serde::{Deserialize, Serialize};

/// Requests this instance has served: state that lives as long as the
/// instance, which is what reuse keeps.
static SERVED: AtomicU64 = AtomicU64::new(0);

/// The most a JSON body may be.
const MAX_JSON: usize = 64 * 1024;

#[berth_sdk::http_service]
async fn handle(request: Request) -> Result<Response> {
    let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
    match (request.method().clone(), request.uri().path()) {
        (Method::GET, "/") => Ok(hello(&request)),
        (Method::GET, "/api/instance") => instance(served),
        (Method::POST, "/api/greet") => greet(request).await,
        // The body goes back out as it arrives: nothing is buffered.
        (Method::POST, "/echo") => Ok(Response::new(request.into_body().into())),
        (_, "/" | "/api/instance" | "/api/greet" | "/echo") => {
            Ok(berth_sdk::p3::empty(StatusCode::METHOD_NOT_ALLOWED))
        }
        _ => Ok(berth_sdk::p3::text(StatusCode::NOT_FOUND, "not found\n")),
    }
}

/// `GET /?name=...`: plain text, the name taken from the query string.
fn hello(request: &Request) -> Response {
    let name = berth_sdk::query(request, "name").unwrap_or_else(|| "world".into());
    berth_sdk::p3::text(StatusCode::OK, format!("{}, {name}!\n", greeting()))
}

/// `GET /api/instance`: the app's name and how many requests this instance
/// has served.
fn instance(served: u64) -> Result<Response> {
    #[derive(Serialize)]
    struct Instance {
        app: Option<String>,
        served: u64,
    }
    let app = berth_sdk::app_name();
    Ok(berth_sdk::p3::json(
        StatusCode::OK,
        &Instance { app, served },
    )?)
}

/// `POST /api/greet` with `{"name": ..., "excited": ...}`: a JSON greeting.
async fn greet(request: Request) -> Result<Response> {
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

    let Ok(Greet { name, excited }) = berth_sdk::p3::read_json::<Greet, _>(request, MAX_JSON).await
    else {
        return Ok(berth_sdk::p3::text(
            StatusCode::BAD_REQUEST,
            "expected a JSON body like {\"name\": \"Ferris\"}\n",
        ));
    };
    let mut greeting = format!("{}, {name}!", greeting());
    if excited {
        greeting = greeting.to_uppercase();
    }
    Ok(berth_sdk::p3::json(StatusCode::OK, &Greeting { greeting })?)
}

fn greeting() -> String {
    berth_sdk::env("GREETING").unwrap_or_else(|| "hello".into())
}
