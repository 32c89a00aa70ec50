//! `#[http_component]` expands in a crate that names nothing but `berth_sdk`,
//! whatever the handler and its argument are called, and leaves the handler
//! an ordinary function that tests can call.

use berth_sdk::{Body, Request, Response, StatusCode};

// Named like the expansion's own locals, to show that they do not clash.
#[berth_sdk::http_component]
fn request(incoming: Request) -> Response {
    let response_out = berth_sdk::query(&incoming, "say").unwrap_or_default();
    berth_sdk::text(StatusCode::OK, response_out)
}

#[test]
fn the_handler_is_still_a_function() {
    let response = request(Request::get("/?say=hi").body(Body::empty()).unwrap());
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body().content_length(), Some(2));
}
