//! The shim's own log.
//!
//! containerd creates a FIFO named `log` in the bundle directory (the
//! shim's working directory) and copies whatever the shim writes there into
//! its own log. berth's engine logs through `tracing` (compilations, cache
//! hits); the `containerd-shim` crate logs through `log`, bridged into the
//! same subscriber.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;

use tracing_subscriber::EnvFilter;

/// Sends `tracing` (and `log`) records to the bundle's `log` FIFO, or to
/// stderr when there is none. `debug` is containerd's `-debug` flag;
/// `BERTH_SHIM_LOG` (an `EnvFilter`) overrides the level.
pub fn init(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("BERTH_SHIM_LOG").unwrap_or_else(|_| {
        // A target directive matches by prefix: `containerd_shim=warn` alone
        // also quieted this crate's own `containerd_shim_berth_v1` lines.
        EnvFilter::new(format!(
            "{default},containerd_shim=warn,containerd_shim_berth_v1={default},ttrpc=warn,wasmtime=warn,cranelift=warn"
        ))
    });
    // O_NONBLOCK: an open for writing fails at once (ENXIO) instead of
    // hanging when nobody reads the FIFO; writes are made blocking again so
    // no line is dropped when containerd reads slowly.
    let fifo = OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open("log")
        .and_then(|f| {
            let flags = rustix::fs::fcntl_getfl(&f)?;
            rustix::fs::fcntl_setfl(&f, flags - rustix::fs::OFlags::NONBLOCK)?;
            Ok(f)
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    let _ = match fifo {
        Ok(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
}
