//! A running container: [`Container`], what [`Shim::start`](super::Shim::start)
//! returns.
//!
//! [`Container::stop`] follows Cloud Run: SIGTERM, up to `grace` for the
//! process to exit, SIGKILL, then `runc delete --force`, unmount, remove the
//! instance directory. A [`Container`] dropped without `stop` is torn down the
//! same way in the background (without grace), if a tokio runtime is there.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::error::{Result, describe_exit};
use super::netns::Netns;
use super::probe::connect;
use super::process::{ExitWatch, wait_exit};
use super::runc::Runc;
use super::state_dir::{Paths, ShimInner, spawn_teardown};

/// How long to wait for the process to go after SIGKILL before deleting anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Where one cold start spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartTimings {
    /// Instance directories and the overlay mount.
    pub overlay: Duration,
    /// Runtime spec, `runc create` and (isolated) bringing `lo` up.
    pub create: Duration,
    /// `runc start`.
    pub start: Duration,
    /// From `runc start` returning to the first successful probe.
    pub ready: Duration,
}

impl StartTimings {
    /// The whole cold start.
    pub fn total(&self) -> Duration {
        self.overlay + self.create + self.start + self.ready
    }
}

impl fmt::Display for StartTimings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "overlay {:?}, create {:?}, start {:?}, ready {:?} (total {:?})",
            self.overlay,
            self.create,
            self.start,
            self.ready,
            self.total()
        )
    }
}

/// One running container instance. Stop it with [`Container::stop`].
#[derive(Debug)]
pub struct Container {
    pub(super) id: String,
    pub(super) port: u16,
    pub(super) pid: u32,
    pub(super) inner: Arc<ShimInner>,
    pub(super) paths: Paths,
    pub(super) exit: ExitWatch,
    pub(super) netns: Option<Netns>,
    pub(super) split: StartTimings,
    pub(super) stop_grace: Duration,
    /// Torn down in the background on drop unless `stop` succeeded.
    pub(super) armed: bool,
}

impl Container {
    /// The instance id (also its runc container id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The port it listens on (`PORT`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host pid of the container's init process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The container's stdout and stderr log files (kept after stop).
    pub fn log_paths(&self) -> (PathBuf, PathBuf) {
        (self.paths.stdout.clone(), self.paths.stderr.clone())
    }

    /// A new TCP connection to the instance's port: `127.0.0.1:PORT` on the
    /// host, or inside the instance's network namespace when isolated.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        connect(self.port, self.netns.as_ref()).await
    }

    /// Whether the container's init process has exited.
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Waits until the container's init process exits; its status if berth
    /// could collect it.
    pub async fn exited(&self) -> Option<ExitStatus> {
        wait_exit(&mut self.exit.clone()).await
    }

    /// The `stop_grace` the instance was started with.
    pub fn stop_grace(&self) -> Duration {
        self.stop_grace
    }

    /// Where the cold start spent its time.
    pub fn start_timings(&self) -> StartTimings {
        self.split
    }

    /// Stops the instance: SIGTERM, up to `grace` for it to exit, SIGKILL,
    /// `runc delete --force`, unmount the overlay, remove the instance
    /// directory. Fine on an instance that already exited.
    ///
    /// # Errors
    /// When runc cannot delete the container or the directory cannot be
    /// removed; the rest is still attempted, and a failed stop is retried in
    /// the background.
    pub async fn stop(mut self, grace: Duration) -> Result<()> {
        let id = self.id.clone();
        let t = Instant::now();
        let runc = &self.inner.runc;
        let mut exit = self.exit.clone();
        if !self.has_exited() {
            signal(runc, &id, "TERM", false).await;
            if tokio::time::timeout(grace, wait_exit(&mut exit))
                .await
                .is_err()
            {
                tracing::info!(%id, ?grace, "container did not exit after SIGTERM; sending SIGKILL");
                signal(runc, &id, "KILL", true).await;
                if tokio::time::timeout(KILL_WAIT, wait_exit(&mut exit))
                    .await
                    .is_err()
                {
                    tracing::warn!(%id, "container still there {KILL_WAIT:?} after SIGKILL; deleting by force");
                }
            }
        }
        self.netns = None;
        let result = self.inner.teardown(&id, &self.paths).await;
        if result.is_ok() {
            self.armed = false;
        }
        tracing::info!(%id, status = %describe_exit(self.exit.borrow().unwrap_or(None)), took = ?t.elapsed(), ok = result.is_ok(), "container instance stopped");
        result
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.armed {
            tracing::warn!(id = %self.id, "instance dropped without stop(): killing it");
            spawn_teardown(
                Arc::clone(&self.inner),
                self.id.clone(),
                self.paths.clone(),
                Some(self.exit.clone()),
            );
        }
    }
}

/// `runc kill`, where "not running" and "does not exist" are not errors.
async fn signal(runc: &Runc, id: &str, sig: &str, all: bool) {
    match runc.kill(id, sig, all).await {
        Ok(()) => {}
        Err(e) if e.is_not_running() || e.is_not_found() => {}
        Err(e) => tracing::warn!(%id, signal = sig, error = %e, "runc kill failed"),
    }
}
