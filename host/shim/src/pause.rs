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

use containerd_shim::asynchronous::monitor::{
    Subscription, monitor_subscribe, monitor_unsubscribe,
};
use containerd_shim::monitor::{Subject, Topic};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use tokio::signal::unix::{SignalKind, signal};

use crate::netns::NetNamespace;

/// The argument that makes this binary the holder.
pub const ARG: &str = "--berth-pause";

/// A running holder process.
///
/// Its exit status comes from the shim's reaper, not from a `waitpid` of
/// our own: `containerd-shim`'s server is a subreaper whose `SIGCHLD`
/// handler reaps *every* child (`waitpid(-1)`) and publishes each exit on
/// its monitor. A second waiter on the same pid (tokio's `Child::wait`, as
/// here before) loses that race now and then and gets `ECHILD`; the task
/// then ended with the "cannot wait" status 134 instead of the holder's 137
/// (seen under load in
/// `shim::pod_sandbox_runs_nothing_until_killed_and_its_pod_shares_the_shim`).
/// So the holder is a plain `std` child nobody waits for, and its end is
/// read from a monitor subscription made *before* it is spawned, so the
/// event cannot be missed.
pub struct Holder {
    pid: rustix::process::Pid,
    exits: Subscription,
    /// Set once its exit was seen: its pid is no longer ours to signal.
    ended: bool,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("pid", &self.pid)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// How a holder ended, as the reaper saw it, and the status that makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The task's exit status (the exit code, or 128 + the signal).
    pub status: u32,
    /// Which way it was learned, for the log: `"reaper"` (the exit the
    /// shim's reaper published) or `"monitor gone"` (never, unless the
    /// shim is stopping; the status is then 137, as for a kill).
    pub path: &'static str,
}

impl Holder {
    /// Starts the holder of a sandbox whose spec names `network`. It is
    /// killed when dropped before it ended.
    ///
    /// # Errors
    /// When the spec asks for a namespace without a path, or the binary
    /// cannot be run.
    pub async fn spawn(network: &NetNamespace) -> io::Result<Self> {
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg(ARG)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        match network {
            NetNamespace::Host => {}
            NetNamespace::Path(path) => {
                cmd.arg(path);
            }
            NetNamespace::New => {
                return Err(io::Error::other(
                    "the sandbox's spec asks for a new network namespace without a path; \
                     berth's shim holds a namespace it is given (Kubernetes gives the pod's)",
                ));
            }
        }
        let exits = monitor_subscribe(Topic::Pid)
            .await
            .map_err(|e| io::Error::other(format!("cannot watch for the holder's exit: {e}")))?;
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                unsubscribe(exits.id);
                return Err(e);
            }
        };
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::other("the holder has no pid"))?;
        // Not waited for here: the reaper owns it (see above).
        drop(child);
        Ok(Self {
            pid,
            exits,
            ended: false,
        })
    }

    /// Its pid (the sandbox task's).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get().unsigned_abs()
    }

    /// Sends `signal` unless it has ended.
    ///
    /// # Errors
    /// When `kill(2)` fails.
    pub fn signal(&self, signal: rustix::process::Signal) -> io::Result<()> {
        if self.ended {
            return Ok(());
        }
        rustix::process::kill_process(self.pid, signal).map_err(io::Error::from)
    }

    /// Waits for its end.
    pub async fn wait(&mut self) -> Ended {
        let me = self.pid.as_raw_nonzero().get();
        while let Some(event) = self.exits.rx.recv().await {
            if matches!(event.subject, Subject::Pid(p) if p == me) {
                self.ended = true;
                return Ended {
                    status: event.exit_code.unsigned_abs(),
                    path: "reaper",
                };
            }
        }
        self.ended = true;
        Ended {
            status: 137,
            path: "monitor gone",
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if !self.ended {
            let _ = rustix::process::kill_process(self.pid, rustix::process::Signal::KILL);
        }
        unsubscribe(self.exits.id);
    }
}

/// Drops a monitor subscription (the monitor's lock is async).
fn unsubscribe(id: i64) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = monitor_unsubscribe(id).await;
        });
    }
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
