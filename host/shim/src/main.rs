//! `containerd-shim-berth-v1`: containerd's runtime `io.containerd.berth.v1`.
//!
//! containerd maps a runtime name `io.containerd.NAME.vN` to the binary
//! `containerd-shim-NAME-vN` on its `PATH` and speaks the task API (v2, as
//! containerd 1.6 and 1.7 do) to it over ttrpc. This shim runs each task's
//! Wasm component on berth's engine (the `berth_wasm` crate, without the
//! rest of berth) *inside the shim process*: no runc, no child process per
//! container.
//!
//! - [`service`]: the task API (create, start, kill, wait, delete, state, …)
//!   and its events.
//! - [`container`]: what `Create` prepares: the bundle's `config.json`, the
//!   rootfs mounts, the component named by `process.args[0]`, stdio FIFOs.
//! - [`content`]: a component that is an image's Wasm layer, read from
//!   containerd's content store (containerd >= 1.7.7).
//! - [`run`]: a wasi:http proxy served on `0.0.0.0:$PORT` in the task's
//!   network namespace (a fresh instance per request; `SIGTERM` stops
//!   accepting, drains, exits 0), or a wasi:cli command run to its exit code.
//! - [`conns`]: the listener's connections (cap, timeouts, graceful drain).
//! - [`netns`]: sockets made inside the namespace the spec names.
//! - [`pause`]: the process that holds a pod's sandbox (this binary, run as
//!   `--berth-pause`).
//! - [`logging`]: the shim's own log, which containerd copies to its log.

mod conns;
mod container;
mod content;
mod logging;
mod netns;
mod pause;
mod run;
mod service;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.berth.v1";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == pause::ARG) {
        pause::main(args.get(2).map(String::as_str));
    }
    if args
        .iter()
        .skip(1)
        .any(|a| a == "-v" || a == "-version" || a == "--version")
    {
        println!(
            "containerd-shim-berth-v1 {} (runtime {RUNTIME_ID}, task API v2)",
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    // Only the long-lived server (started with `-socket`) logs to the
    // bundle's `log` FIFO; `start` and `delete` must keep stdout for
    // containerd.
    if args.iter().any(|a| a == "-socket") {
        logging::init(args.iter().any(|a| a == "-debug"));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let config = containerd_shim::Config {
        no_setup_logger: true,
        ..Default::default()
    };
    runtime.block_on(containerd_shim::asynchronous::run::<service::BerthShim>(
        RUNTIME_ID,
        Some(config),
    ));
}
