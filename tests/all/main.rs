//! berth's integration tests: one binary (it links once), a module per area.
//! Each test starts what it needs on free loopback ports and stops it after.

mod api;
mod autoscale;
mod bench;
mod cli;
mod containers;
mod deploy_image;
mod deploy_manifests;
mod examples;
mod faults;
mod front_door;
mod hostile;
mod isolation;
mod layering;
mod oci;
mod revisions;
mod secrets;
mod shim;
mod support;
mod tls;
mod wasm_http;
