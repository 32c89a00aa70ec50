//! Env component: lists the guest's environment as `KEY=VALUE\n` lines,
//! sorted by key (non-UTF-8 is replaced lossily).

use berth_sdk::{Request, Response, StatusCode};

#[berth_sdk::http_component]
fn handle(_request: Request) -> Response {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    vars.sort();
    let body: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    berth_sdk::text(StatusCode::OK, body)
}
