//! A running container: [`Container`], what [`Shim::start`](super::Shim::start)
//! returns.
//!
//! [`Container::stop`] follows Cloud Run: SIGTERM, up to `grace` for the
//! process to exit, SIGKILL, then `runc delete --force`, unmount, remove the
//! instance directory. A [`Container`] dropped without `stop` is torn down the
//! same way in the background (without grace), if a tokio runtime is there.

use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::error::{Result, describe_exit};
use std::net::{Ipv4Addr, SocketAddr};

use super::netns::Netns;
use super::output::Output;
use super::probe::{connect_direct, connect_inside};
use super::process::{ExitWatch, wait_exit};
use super::runc::Runc;
use super::state_dir::{Paths, ShimInner, spawn_teardown};

/// How long to wait for the process to go after SIGKILL before deleting anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Where one cold start spent its time. `prepare` and `network` run at the
/// same time, so the phases add up to more than `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartTimings {
    /// Runtime spec, instance directory, overlay mount (its tmpfs, the
    /// `/etc` files) and `config.json`.
    pub prepare: Duration,
    /// The instance's own network namespace made and pinned with `lo` up,
    /// and (isolated) attached to the bridge; zero on the host network.
    pub network: Duration,
    /// `runc run --detach` (create and start), the pid read and watched.
    pub run: Duration,
    /// From the process running to the first successful probe.
    pub ready: Duration,
    /// The whole cold start, wall clock.
    pub total: Duration,
}

impl StartTimings {
    /// The whole cold start.
    pub fn total(&self) -> Duration {
        self.total
    }
}

impl fmt::Display for StartTimings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prepare {:?}, network {:?} (at the same time), run {:?}, ready {:?} (total {:?})",
            self.prepare, self.network, self.run, self.ready, self.total
        )
    }
}

/// Where berth reaches an instance's `PORT`.
#[derive(Debug)]
pub enum Endpoint {
    /// Host network: `127.0.0.1:PORT` on the host.
    Host(u16),
    /// Isolated: the instance's address on berth's bridge.
    Bridge(SocketAddr),
    /// `network = "none"`: `127.0.0.1:PORT` inside its namespace.
    Inside(Netns, u16),
}

impl Endpoint {
    /// A new TCP connection to the instance's port.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        match self {
            Endpoint::Host(port) => {
                connect_direct(SocketAddr::from((Ipv4Addr::LOCALHOST, *port))).await
            }
            Endpoint::Bridge(addr) => connect_direct(*addr).await,
            Endpoint::Inside(netns, port) => connect_inside(netns, *port).await,
        }
    }

    /// `host:port` as a `Host` header would name it.
    pub fn authority(&self) -> String {
        match self {
            Endpoint::Host(port) | Endpoint::Inside(_, port) => format!("127.0.0.1:{port}"),
            Endpoint::Bridge(addr) => addr.to_string(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Host(port) => write!(f, "127.0.0.1:{port}"),
            Endpoint::Bridge(addr) => write!(f, "{addr} (bridge)"),
            Endpoint::Inside(_, port) => write!(f, "127.0.0.1:{port} (inside its namespace)"),
        }
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
    pub(super) endpoint: Option<Endpoint>,
    pub(super) split: StartTimings,
    pub(super) stop_grace: Duration,
    /// The readers of its stdout and stderr pipes.
    pub(super) output: Output,
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

    /// Where berth reaches it.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref()
    }

    /// A new TCP connection to the instance's port (see [`Endpoint`]).
    ///
    /// # Errors
    /// When the connection fails, or the instance is being stopped.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        match &self.endpoint {
            Some(e) => e.connect().await,
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the instance is stopped",
            )),
        }
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
    /// directory; returns once its output is in the app log (at most
    /// [`DRAIN_WAIT`](super::output::DRAIN_WAIT) more). Fine on an instance
    /// that already exited.
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
        self.endpoint = None;
        let result = self.inner.teardown(&id, &self.paths).await;
        if result.is_ok() {
            self.armed = false;
        }
        // Its processes are gone: what they wrote last reaches the app log.
        self.output.finish().await;
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
