//! Bindings to the interfaces berth links beyond `wasi:http` (the
//! `berth:host/stateful` world in the repository's `wit/host`):
//! `wasi:keyvalue@0.2.0-draft` and `wasi:config@0.2.0-rc.1`. Imported as
//! plain synchronous functions, so WASIp2 and WASIp3 components call them
//! alike. A component that calls none of them does not import them.
//!
//! The generated glue calls the imports through `unsafe` FFI: allowed in
//! this module only.
#![allow(unsafe_code, unused_qualifications, clippy::all)]

wit_bindgen::generate!({
    path: "../wit/host",
    world: "berth:host/stateful",
    generate_all,
});
