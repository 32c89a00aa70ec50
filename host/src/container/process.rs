//! The container's init process: noticing its exit (through a pidfd,
//! without polling) and collecting its status.
//!
//! [`become_subreaper`] (called by [`Shim::new`](super::Shim::new)) makes the
//! berth process a child subreaper (`PR_SET_CHILD_SUBREAPER`), as containerd's
//! shims are: when `runc create` returns, the container's init is re-parented
//! to berth rather than to the host's init, so berth can collect its exit
//! status (and the zombie does not depend on the host's init to be reaped).
//! Any other orphan re-parented to berth is not reaped; berth runs no other
//! daemonising children.

use std::io;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

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
    let fd = pidfd_open(pid)?;
    #[allow(unsafe_code)]
    // SAFETY: `fd` is an owned, open pidfd; `AsyncFd` owns it from here on
    // and nothing closes or replaces it while registered.
    let pidfd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
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
#[allow(unsafe_code)]
fn reap(pid: u32) -> Reaped {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return Reaped::NotOurs;
    };
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        let rc = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
        if rc == pid {
            return Reaped::Status(ExitStatus::from_raw(status));
        }
        if rc == 0 {
            return Reaped::NotYet;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Reaped::NotOurs;
        }
    }
}

/// `pidfd_open(pid, 0)` (Linux 5.3+).
#[allow(unsafe_code)]
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`.
#[allow(unsafe_code)]
pub(super) fn become_subreaper() -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments; it only sets a process flag.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
