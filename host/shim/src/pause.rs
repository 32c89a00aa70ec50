//! The process that holds a pod's sandbox.
//!
//! Under the CRI, a pod's app containers join the sandbox's namespaces by
//! its pid (`/proc/<pid>/ns/net`), so the sandbox task needs a pid of its
//! own in the pod's network namespace; the shim's own process stays in the
//! host's. The holder is this binary again, run as `--berth-pause [NETNS]`:
//! it joins the namespace the sandbox's spec names, dies with the shim, and
//! waits for a signal as Kubernetes' `pause` does: `SIGTERM` or `SIGINT`
//! end it with 0, any other terminating signal as it ends any process
//! (`SIGKILL`: 137).

use std::fs::File;
use std::io;
use std::os::fd::AsFd as _;
use std::path::Path;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use tokio::signal::unix::{SignalKind, signal};

use crate::netns::Network;

/// The argument that makes this binary the holder.
pub const ARG: &str = "--berth-pause";

/// Starts the holder of a sandbox whose spec names `network`. It is killed
/// when the returned child is dropped.
///
/// # Errors
/// When the spec asks for a namespace without a path, or the binary cannot
/// be run.
pub fn spawn(network: &Network) -> io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg(ARG)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    match network {
        Network::Host => {}
        Network::Path(path) => {
            cmd.arg(path);
        }
        Network::New => {
            return Err(io::Error::other(
                "the sandbox's spec asks for a new network namespace without a path; \
                 berth's shim holds a namespace it is given (Kubernetes gives the pod's)",
            ));
        }
    }
    cmd.spawn()
}

/// The holder's `main`: never returns.
pub fn main(netns: Option<&str>) -> ! {
    // Die with the shim (and if it is already gone, now).
    let parent = rustix::process::getppid();
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if rustix::process::getppid() != parent {
        std::process::exit(137);
    }
    if let Some(path) = netns
        && let Err(e) = join(Path::new(path))
    {
        eprintln!("containerd-shim-berth-v1 {ARG}: {e}");
        std::process::exit(1);
    }
    // One thread (the one that joined the namespace), no tasks but this.
    let waited = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| {
            rt.block_on(async {
                let mut term = signal(SignalKind::terminate())?;
                let mut int = signal(SignalKind::interrupt())?;
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                io::Result::Ok(())
            })
        });
    match waited {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("containerd-shim-berth-v1 {ARG}: {e}");
            std::process::exit(1);
        }
    }
}

fn join(path: &Path) -> io::Result<()> {
    let ns = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot join network namespace {}: {e}", path.display()),
        )
    })
}
