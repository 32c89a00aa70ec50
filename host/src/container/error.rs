//! Why starting or stopping a container failed: [`ContainerError`].

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::runc::RuncError;
use super::spec::SpecError;

/// Why an instance could not be started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// The instance spec or image config is not usable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A runc invocation failed.
    #[error(transparent)]
    Runc(#[from] RuncError),
    /// The runc binary is missing or not executable.
    #[error("runc not found at {path}: {source} (install runc, e.g. `apt-get install runc`)")]
    RuncMissing {
        /// Where it was looked for.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The host is stopping: no instance starts any more.
    #[error("instance {0}: the host is stopping")]
    Closing(String),
    /// The isolated (bridge) network failed or is unavailable.
    #[error("isolated network: {0}")]
    Network(String),
    /// An instance with this id is already live (or was left behind).
    #[error("instance {0} already exists")]
    AlreadyExists(String),
    /// Something else is already listening on the host port (host network).
    #[error("instance {id}: port {port} is already in use on the host")]
    PortInUse {
        /// Instance id.
        id: String,
        /// The port.
        port: u16,
    },
    /// A filesystem or system call failed.
    #[error("{}{context}: {source}", instance_prefix(id))]
    Io {
        /// Instance id (empty for host-wide operations).
        id: String,
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `runc create` failed: the bundle could not be turned into a container
    /// (bad executable, cgroup error, …).
    #[error("container {id} could not be created ({status}): {stderr}")]
    Create {
        /// Instance id.
        id: String,
        /// runc's exit status.
        status: ExitStatus,
        /// The end of runc's stderr.
        stderr: String,
    },
    /// The container's process exited before it became ready.
    #[error("container {id} exited before it was ready ({}); last stderr lines:\n{stderr}", describe_exit(*.status))]
    Exited {
        /// Instance id.
        id: String,
        /// Its exit status, `None` when berth could not collect it.
        status: Option<ExitStatus>,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// The container did not pass its readiness probe in time.
    #[error(
        "container {id} was not ready on port {port} within {timeout:?} (last probe: {last_probe})"
    )]
    NotReady {
        /// Instance id.
        id: String,
        /// The probed port.
        port: u16,
        /// The startup timeout.
        timeout: Duration,
        /// What the last probe saw.
        last_probe: String,
    },
}

fn instance_prefix(id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!("instance {id}: ")
    }
}

/// An exit status in words, or that it is unknown.
pub(super) fn describe_exit(status: Option<ExitStatus>) -> String {
    status.map_or_else(|| "exit status unknown".to_owned(), |s| s.to_string())
}

/// The result type of the container module.
pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// Wraps an I/O error as [`ContainerError::Io`] of instance `id` (empty for
/// host-wide operations) while doing `context`.
pub(super) fn io_err(
    id: &str,
    context: impl Into<String>,
) -> impl FnOnce(io::Error) -> ContainerError {
    let (id, context) = (id.to_owned(), context.into());
    move |source| ContainerError::Io {
        id,
        context,
        source,
    }
}
