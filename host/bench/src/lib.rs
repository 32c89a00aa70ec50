//! `berth bench`: berth measured against itself and against what users would
//! otherwise run, with numbers from one run only.
//!
//! A crate of its own (`berth-bench`, over the server library `berth`):
//! the `berth` binary (`berth-cli`) links it; the server library never
//! does (`tests/all/layering.rs`).
//!
//! # `berth bench cold-start`
//! One in-process [`Server`](berth::server::Server) on `127.0.0.1:0` serves
//! the same hello service twice: as the `hello` Wasm component and as a
//! busybox `httpd` container image built here ([`image`]) and pushed to a
//! `docker-registry` started on a free loopback port ([`registry`]). Both
//! apps scale from zero: `min_scale = 0`, `max_scale = 1`, and an
//! `autoscale.tick` of an hour, so that only the activator's poke of the
//! measured request starts an instance (no background decision races the
//! measurement). Each iteration, for each kind, in an order rotated every
//! iteration:
//!
//! 1. a new keep-alive HTTP/1.1 connection to the front door is opened (the
//!    TCP connect is not measured);
//! 2. every idle instance is stopped
//!    ([`Revision::drop_idle_instances`](berth::revision::Revision::drop_idle_instances))
//!    and the revision is checked to have no instance ready or starting;
//! 3. `GET /` with `Host: <app>.localhost` is sent; the time from the first
//!    request byte written to the socket to the first response byte read
//!    from it is the cold start ([`client`]); the body is checked;
//! 4. the revision is checked to have made exactly one cold start, and the
//!    host-side split is read (below).
//!
//! Interleaved with them in the same rotation, each kind gets as many warm
//! requests made the same way (a new connection, the same pause, one `GET
//! /`), only to a running instance: `warm_after_pause_us`. On a VM a request
//! after a pause pays for waking idle CPUs and parked threads, which a cold
//! start pays too; from zero / warm-after-pause is what starting from zero
//! adds (both ratios are printed, and the back-to-back warm series below).
//!
//! The Wasm split: `instance_start` is the revision's own timing of
//! `Backend::start_instance` (its last `recent_cold_starts` record): at zero
//! berth keeps the compiled, pre-linked component resident (within
//! `--wasm-resident-budget`), so a start from zero finds it by the sha256
//! the revision knows and builds the app's context around it; past the
//! budget it maps the compiled artifact from the on-disk cache on a
//! blocking thread. Each iteration is checked to have loaded the app once
//! (the runtime's `shared` or `cache_hits` counter), i.e. no instance still
//! held it. `host` and
//! `instantiate` come from the response's `Server-Timing` header: front door
//! had the request → guest handler entered (activator wait, instance start,
//! store and instantiation included), and the instantiation alone.
//!
//! The container split is the phases the container backend timed for that
//! cold start (prepare: runtime spec, instance directory, overlay,
//! `config.json`; network: the instance's own namespace, at the same time,
//! nothing on the host network; run: `runc run --detach`; ready: first
//! successful readiness probe), read from the same record
//! ([`ColdStartRecord::split`](berth::revision::ColdStartRecord::split)),
//! plus `instance_start` as for Wasm.
//!
//! Then `--warm` sequential requests per kind on one keep-alive connection to
//! a running instance (every Wasm request is still a fresh wasmtime instance;
//! their `Server-Timing` is the per-request host-side cold start); the
//! container proxy overhead (the same `GET /` through berth and straight to
//! the instance's port, interleaved); and, with `--baseline-runc`, a bare
//! `runc run -d` of the same image, bundle and spec, timed to its first HTTP
//! byte, interleaved with the berth iterations ([`runc`]).
//!
//! [`report`] prints the table and writes the JSON; [`svg`] draws the chart.

pub mod client;
pub mod cold_start;
pub mod containerd;
pub mod cri;
pub mod cri_bench;
pub mod image;
pub mod private_node;
pub mod registry;
pub mod report;
pub mod runc;
pub mod svg;

pub use cold_start::{ColdStartOptions, run_cold_start};
pub use report::{Report, Stats};

use std::path::PathBuf;

/// The first executable file called `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
