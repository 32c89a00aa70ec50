//! berth: a WebAssembly-first serverless host.
//!
//! A user deploys an app under a name and calls it over HTTP. A Wasm component
//! (wasi:http `proxy` world) runs in-process on wasmtime with a fresh instance
//! per request.
//!
//! # Layout
//! - [`config`]: the `berth.toml` file, parsed and validated.
//! - [`wasm`]: the wasmtime engine, the on-disk compile cache, per-request stores
//!   and their limits, the outbound HTTP allow-list.
//! - [`gateway`]: the HTTP front door: routing and errors-as-responses.
//! - [`logs`]: per-app capture of guest stdout/stderr, tagged by request id.
//! - [`server`]: ties the pieces together; [`server::Server::run`] is what `berth serve` runs.
//! - [`oci`]: registries, a verified blob store, artifact classification, push.
//! - [`cli`]: one module per subcommand.
//! - [`api`]: the admin REST API (apps, scale, logs, `/metrics`) and its token.
//! - [`state`]: the deployed apps, persisted in the data dir across restarts.
//! - [`metrics`]: Prometheus metrics and per-app metering.

pub mod api;
pub mod apps;
pub mod autoscale;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod config;
pub mod container;
pub mod files;
pub mod gateway;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod oci;
pub mod revision;
pub mod server;
pub mod state;
pub mod tls;
pub mod wasm;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
