//! The container's init process: noticing its exit (through a pidfd,
//! without polling) and collecting its status.
//!
//! [`become_subreaper`] (called by [`Shim::new`](super::Shim::new)) makes the
//! berth process a child subreaper (`PR_SET_CHILD_SUBREAPER`), as containerd's
//! shims are: when `runc run --detach` returns, the container's init is re-parented
//! to berth rather than to the host's init, so berth can collect its exit
//! status (and the zombie does not depend on the host's init to be reaped).
//! Any other orphan re-parented to berth is not reaped; berth runs no other
//! daemonising children.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, WaitOptions};
use tokio::io::Interest;
use tokio::sync::watch;

use super::sys::async_fd;

/// Waits for the exit published on `exit`. Never resolves if the watcher is
/// gone without publishing (only when the runtime shuts down).
pub(super) async fn wait_exit(exit: &mut ExitWatch) -> Option<ExitStatus> {
    let published = exit.wait_for(Option::is_some).await.map(|s| s.flatten());
    match published {
        Ok(status) => status,
        Err(_) => std::future::pending().await,
    }
}

/// `None` while the process lives; `Some(status)` once it has exited, where
/// `status` is `None` if it could not be collected.
pub(super) type ExitWatch = watch::Receiver<Option<Option<ExitStatus>>>;

/// Watches process `pid` through a pidfd; reaps it (it is our child, being
/// re-parented to this subreaper) and publishes its status.
pub(super) fn watch_exit(pid: u32) -> io::Result<ExitWatch> {
    let pidfd = async_fd(pidfd_open(pid)?, Interest::READABLE)?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            match pidfd.readable().await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(pid, error = %e, "pidfd poll failed; polling instead");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                }
            }
        }
        let mut status = reap(pid);
        for _ in 0..20 {
            if !matches!(status, Reaped::NotYet) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            status = reap(pid);
        }
        let status = match status {
            Reaped::Status(s) => Some(s),
            Reaped::NotOurs | Reaped::NotYet => None,
        };
        let _ = tx.send(Some(status));
        drop(pidfd);
    });
    Ok(rx)
}

enum Reaped {
    Status(ExitStatus),
    NotYet,
    NotOurs,
}

/// `waitpid(pid, WNOHANG)`.
fn reap(pid: u32) -> Reaped {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Reaped::NotOurs;
    };
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(Some((_, status))) => return Reaped::Status(ExitStatus::from_raw(status.as_raw())),
            Ok(None) => return Reaped::NotYet,
            Err(Errno::INTR) => {}
            Err(_) => return Reaped::NotOurs,
        }
    }
}

/// `pidfd_open(pid, 0)` (Linux 5.3+).
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}")))?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`.
pub(super) fn become_subreaper() -> io::Result<()> {
    // rustix passes the pid given as the flag's value: any nonzero one sets it.
    Ok(rustix::process::set_child_subreaper(Some(
        rustix::process::getpid(),
    ))?)
}
