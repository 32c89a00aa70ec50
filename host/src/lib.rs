//! berth: a WebAssembly-first serverless host (the server library).
//!
//! A user deploys an app under a name and calls it over HTTP. A Wasm component
//! (wasi:http `proxy` world) runs in-process on wasmtime with a fresh instance
//! per request; a container image runs through runc. One request-concurrency
//! autoscaler (Knative's KPA) scales both, down to zero.
//!
//! The `berth` binary and its command line are the crate `berth-cli`
//! (host/cli), which links this one and the benchmark harness,
//! `berth-bench` (host/bench); this crate links neither.
//!
//! # Layout
//! Modules are listed top-down: each uses only modules below it (a test in
//! `tests/all/layering.rs` keeps it so; ARCHITECTURE.md draws the map).
//!
//! - [`server`]: the listeners (front door, admin); [`server::Server::run`]
//!   is what `berth serve` runs. `testing` (feature `testing`): a real host
//!   on loopback for tests.
//! - [`gateway`]: the front door's request handling and the one mapping of
//!   failures to responses. [`api`]: the admin REST API, its token,
//!   `/metrics`. [`console`]: the web console at `/ui` on the admin
//!   listener, on top of the API.
//! - [`apps`]: the app table: deploy, canary, traffic, remove, garbage
//!   collection, the published route table.
//! - [`revision`]: one deploy of an app: breaker, activator queue, reconcile
//!   loop.
//! - [`wasm`]: the Wasm engine (crate `berth_wasm`: wasmtime, compile
//!   cache, per-request stores and limits, outbound allow-list) and Wasm as
//!   a backend. [`container`]:
//!   images on disk, the runc shim, and containers as a backend.
//! - Leaves: [`backend`] (the instance contract), [`autoscale`] (the KPA,
//!   pure), [`state`] (apps persisted across restarts), [`oci`] (registries,
//!   blob store, classification, push), [`config`] (`berth.toml` and
//!   validated app specs), [`metrics`] (a Prometheus sink fed by callers),
//!   [`http`] (body types, request identity, plain-text responses), [`logs`]
//!   (guest output per app) and [`files`] (atomic writes), both
//!   re-exported from `berth_wasm`, [`tls`] (the
//!   front door's rustls config), [`trace`] (OpenTelemetry: the sampler,
//!   the OTLP export queue, each request's root span).

pub mod api;
pub mod apps;
pub mod autoscale;
pub mod backend;
pub mod config;
pub mod console;
pub mod container;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod oci;
pub mod revision;
pub mod secrets;
pub mod server;
pub mod state;
pub mod tls;
pub mod trace;
pub mod wasm;

// Leaves that are the Wasm engine's, at the paths they always had.
pub use berth_wasm::{files, logs};

#[cfg(any(test, feature = "testing"))]
pub mod testing;
