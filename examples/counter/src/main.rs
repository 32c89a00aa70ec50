//! A berth app that counts its visits in key-value storage
//! (`wasi:keyvalue`, through `berth_sdk::kv`), so the count outlives the
//! request, the instance and a restart of berth.
//!
//! Run with, from the repository root:
//!
//! ```sh
//! (cd examples && cargo build --release)
//! ./target/release/berth serve --config examples/counter/berth.toml
//!
//! curl http://counter.localhost:8080/
//! # 1
//! curl http://counter.localhost:8080/
//! # 2
//! # stop berth (Ctrl-C), start it again with the same data dir, and:
//! curl http://counter.localhost:8080/
//! # 3
//! curl http://counter.localhost:8080/peek
//! # 3
//! curl -X DELETE http://counter.localhost:8080/
//! ```
//!
//! The app declares the bucket it uses (`keyvalue = ["default"]`); its data
//! lives in `<data-dir>/keyvalue/embedded.redb`, or in Redis when the host
//! puts the bucket there (`[keyvalue.stores.default]`). Each visit adds the
//! app's `step` config value (`wasi:config`, through `berth_sdk::config`;
//! 1 when it is not set): `config = { step = "10" }` in `berth.toml`.

use berth_sdk::kv::Store;
use berth_sdk::{Method, Request, Response, Result, StatusCode};

/// The key the count lives under.
const KEY: &str = "count";

#[berth_sdk::http_component]
fn handle(request: Request) -> Result<Response> {
    let store = Store::open("default")?;
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => {
            let count = store.increment(KEY, step()?)?;
            Ok(berth_sdk::text(StatusCode::OK, format!("{count}\n")))
        }
        (&Method::GET, "/peek") => {
            let count = store.get_string(KEY)?.unwrap_or_else(|| "0".into());
            Ok(berth_sdk::text(StatusCode::OK, format!("{count}\n")))
        }
        (&Method::DELETE, "/") => {
            store.delete(KEY)?;
            Ok(berth_sdk::empty(StatusCode::NO_CONTENT))
        }
        (_, "/" | "/peek") => Ok(berth_sdk::empty(StatusCode::METHOD_NOT_ALLOWED)),
        _ => Ok(berth_sdk::text(StatusCode::NOT_FOUND, "not found\n")),
    }
}

/// What each visit adds: the `step` config value, or 1.
fn step() -> Result<u64> {
    match berth_sdk::config::get("step")? {
        None => Ok(1),
        Some(s) => s
            .parse()
            .map_err(|_| berth_sdk::Error::msg(format!("config `step` = `{s}` is not a u64"))),
    }
}
