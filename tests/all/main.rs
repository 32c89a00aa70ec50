//! berth's integration tests: one binary (it links once), a module per area.
//! Each test starts what it needs on free loopback ports and stops it after.

#![expect(
    clippy::result_large_err,
    reason = "`wait_until` closures hand back the last `RevisionStatus` seen, for the failure message"
)]

mod api;
mod autoscale;
mod bench;
mod canary;
mod cli;
mod completions;
mod console;
mod containers;
mod cred_helpers;
mod cri;
mod deploy_image;
mod deploy_manifests;
mod examples;
mod fast_path;
mod faults;
mod front_door;
mod hostile;
mod isolation;
mod keyvalue;
mod layering;
mod new;
mod oci;
mod outbound_caps;
mod outbound_pool;
mod revisions;
mod secrets;
mod shim;
mod start;
mod support;
mod tls;
mod traces;
mod wasm_http;
mod wasm_p3;
