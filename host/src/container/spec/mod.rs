//! What an instance is asked to run, and the OCI runtime spec (`config.json`)
//! generated from it.
//!
//! The inputs are the image's own configuration ([`ImageConfig`], the `config`
//! object of an `application/vnd.oci.image.config.v1+json` blob) and berth's
//! per-instance choices ([`InstanceSpec`]). [`runtime_spec`] turns them into an
//! [`oci_spec::runtime::Spec`] the way containerd and Docker do for a plain
//! `docker run`, with Cloud Run's container contract on top:
//!
//! - `process.args` = `Entrypoint ++ Cmd`; `process.cwd` = `WorkingDir` or `/`;
//!   `process.terminal` = false (a server; `runc spec` defaults to true).
//! - `process.env` = the image's `Env` (with a default `PATH` when the image
//!   sets none), overridden in place by the app's `env`, then `PORT`,
//!   `K_SERVICE`, `K_REVISION` and `K_CONFIGURATION`. The platform variables
//!   are reserved, as on Cloud Run: an app `env` that sets one is refused, at
//!   deploy and again here, by the one rule
//!   ([`rules::container_env_name`]).
//! - `process.user` from the image's `User` (`uid`, `uid:gid`, `name`,
//!   `name:group`, …) resolved against the image's own `/etc/passwd` and
//!   `/etc/group`, read with `openat2(RESOLVE_IN_ROOT)` so that a hostile
//!   symlink in the image cannot make berth read a host file
//!   ([`super::accounts`]; [`runtime_spec`] takes the [`ResolvedUser`]).
//! - Hardened beyond containerd's default spec (each item names its reason
//!   where it is made): `process.noNewPrivileges`; nine capabilities
//!   ([`DEFAULT_CAPS`]: containerd's fourteen less `NET_RAW`, `MKNOD`,
//!   `SETFCAP`, `SYS_CHROOT` and `AUDIT_WRITE`); berth's default seccomp
//!   profile ([`super::seccomp`], modelled on moby's) unless the app is
//!   [`SeccompMode::Unconfined`]; namespaces pid, ipc, uts, mount and cgroup,
//!   plus network unless the instance shares the host's
//!   ([`NetworkMode::Host`]; the shim then points it at the namespace it made
//!   ahead, [`join_network_namespace`]);
//!   containerd's masked and read-only paths ([`MASKED_PATHS`],
//!   [`READONLY_PATHS`]); `RLIMIT_NOFILE` 1024/1024 ([`NOFILE_LIMIT`]).
//!   Mounts as `runc spec` (`/sys` and `/sys/fs/cgroup` read-only), `/proc`
//!   `nosuid,noexec,nodev` as containerd mounts it.
//! - `linux.resources` memory (swap = memory: none), CPU (quota over a 100 ms
//!   period; [`DEFAULT_CPUS`] unless set) and pids ([`DEFAULT_PIDS`] unless
//!   set), applied by runc to the cgroup `cgroups_path` (berth uses
//!   `/berth/<id>`). The CPU and pids counts are checked by the rules deploy
//!   checks them by ([`rules::cpus`], [`rules::pids`]).
//! - The image's `WorkingDir` must be a clean absolute path outside `/proc`
//!   ([`check_working_dir`]): CVE-2024-21626 made runc start a process in
//!   `/proc/self/fd/N`, a leaked host directory.
//! - No AppArmor/SELinux label, like `runc spec`.
//!
//! Nothing here touches runc or the image's files; the lifecycle is in
//! [`super::shim`]. Files: `image` ([`ImageConfig`], [`check_working_dir`]),
//! `runtime` ([`runtime_spec`] and its parts), this one (the types, the
//! checks of an [`InstanceSpec`], [`SpecError`]).

mod image;
mod runtime;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::time::Duration;

pub use crate::config::spec::rules::{self, RESERVED_ENV};
pub use crate::config::{InvalidSetting, NetworkMode, SeccompMode};
pub use image::{ImageConfig, check_working_dir};
pub use runtime::{
    DEFAULT_CAPS, add_ro_bind, cpu_quota, join_network_namespace, memory_limit, process_env,
    runtime_spec,
};

/// `PATH` given to a process whose image sets none (as containerd and Docker).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CFS period used for [`ContainerLimits::cpus`] (100 ms, the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Longest accepted instance id (it is also the container's hostname).
pub const MAX_ID_LEN: usize = 63;

/// `limits.pids` when the app sets none: enough for any server's threads and
/// workers, few enough that a fork bomb stops at its own cgroup.
pub const DEFAULT_PIDS: i64 = 1024;

/// `limits.cpu` when the app sets none: one CPU, Cloud Run's default.
pub const DEFAULT_CPUS: f64 = 1.0;

/// `RLIMIT_NOFILE` (soft and hard) of every container: containerd's default
/// spec (and `runc spec`'s) value. Explicit rather than inherited, so an
/// instance does not get whatever berth was started with (20000 here, a
/// million under some service managers); 1024 keeps `select(2)` users
/// (`FD_SETSIZE` 1024) safe and bounds the kernel memory an instance can pin
/// in open files, and is ample for an instance given 80 requests at a time.
pub const NOFILE_LIMIT: u64 = 1024;

/// `linux.maskedPaths`: containerd's default list (`pkg/oci/spec.go`, 1.6.26
/// and later), which is `runc spec`'s plus `/sys/devices/virtual/powercap`
/// (the RAPL energy counters, a power side channel: GHSA-7ww5-4wqc-m92c).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// `linux.readonlyPaths`: containerd's default list.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Why a runtime spec could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The image config blob is not valid JSON of the expected shape.
    #[error("image config is not valid: {0}")]
    ImageConfig(#[source] serde_json::Error),
    /// Entrypoint and Cmd are both empty: there is nothing to run.
    #[error("the image has neither Entrypoint nor Cmd: nothing to run")]
    NoCommand,
    /// The instance id is not usable as a runc id and hostname.
    #[error(
        "instance id {0:?} must be 1-{MAX_ID_LEN} characters of [a-z0-9-], not starting with '-'"
    )]
    InvalidId(String),
    /// A setting that deploy checks by the same rule ([`rules`]): only a
    /// spec that did not come through deploy meets it here.
    #[error(transparent)]
    Setting(#[from] InvalidSetting),
    /// The image's `WorkingDir` is refused ([`check_working_dir`]).
    #[error("image config `WorkingDir` {dir:?} is refused: {reason}")]
    WorkingDir {
        /// The image's `WorkingDir`.
        dir: String,
        /// Why.
        reason: &'static str,
    },
    /// The stored default seccomp profile does not parse (a unit test keeps
    /// it valid).
    #[error("berth's default seccomp profile is not valid: {0}")]
    SeccompProfile(#[source] serde_json::Error),
    /// The image's `User` names a user or group the image does not have.
    #[error("user {user:?}: {reason}")]
    User {
        /// The image's `User` value.
        user: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the image's `/etc/passwd` or `/etc/group` failed.
    #[error("reading {path} in the image: {source}")]
    AccountFile {
        /// The path inside the image.
        path: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A network namespace path for a spec without a network namespace.
    #[error("the runtime spec has no network namespace to join (host network)")]
    NoNetworkNamespace,
    /// oci-spec refused a value.
    #[error("building the runtime spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// How readiness is decided. Cloud Run's startup probe defaults to TCP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Probe {
    /// A TCP connect to `127.0.0.1:PORT` succeeds.
    #[default]
    Tcp,
    /// An HTTP/1.1 `GET path` to `127.0.0.1:PORT` answers 200..=399.
    Http {
        /// Request path, e.g. `/healthz`.
        path: String,
    },
}

/// Resource limits of one instance (`[limits]` of the app).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContainerLimits {
    /// Memory limit in bytes (`linux.resources.memory.limit`, and `swap` the
    /// same: no swap); also the size of the tmpfs holding the instance's
    /// writable layer ([`super::overlay::mount_scratch`]). `None`: no limit.
    pub memory: Option<u64>,
    /// CPUs, e.g. 1.5 → quota 150000 µs per 100000 µs period; `None`:
    /// [`DEFAULT_CPUS`].
    pub cpus: Option<f64>,
    /// Most processes and threads (`linux.resources.pids.limit`); `None`:
    /// [`DEFAULT_PIDS`].
    pub pids: Option<i64>,
}

/// Everything [`Shim::start`](super::Shim::start) needs to run one
/// instance of an app revision.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Unique among live instances: `[a-z0-9-]`, 1-63 characters. Used as the
    /// runc container id and the hostname.
    pub id: String,
    /// The app's name (`K_SERVICE`, `K_CONFIGURATION`).
    pub app: String,
    /// The revision (`K_REVISION`).
    pub revision: String,
    /// The image's config.
    pub image: ImageConfig,
    /// The app's env; overrides the image's env.
    pub env: BTreeMap<String, String>,
    /// The port the instance must listen on (`PORT`).
    pub port: u16,
    /// Resource limits.
    pub limits: ContainerLimits,
    /// Networking mode.
    pub network: NetworkMode,
    /// IPv4 networks in refused ranges its egress may reach (isolated
    /// network only).
    pub allowed_networks: Vec<berth_wasm::networks::Network>,
    /// Seccomp filter.
    pub seccomp: SeccompMode,
    /// Readiness probe.
    pub readiness: Probe,
    /// How long the instance may take to pass the probe.
    pub startup_timeout: Duration,
    /// SIGTERM → SIGKILL grace used when the instance is stopped.
    pub stop_grace: Duration,
}

/// Checks an instance id: 1-63 characters of `[a-z0-9-]`, not starting with `-`.
///
/// # Errors
/// [`SpecError::InvalidId`].
pub fn validate_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::InvalidId(id.to_owned()))
    }
}

/// Checks what [`runtime_spec`] does not see: the id and the probe path (by
/// the rule deploy checks `readiness_path` by, [`rules::readiness_path`]).
///
/// # Errors
/// [`SpecError::InvalidId`], or [`SpecError::Setting`] for the probe path.
pub fn validate(spec: &InstanceSpec) -> Result<(), SpecError> {
    validate_id(&spec.id)?;
    if let Probe::Http { path } = &spec.readiness {
        rules::readiness_path(path).map_err(|r| InvalidSetting::new("readiness_path", r))?;
    }
    Ok(())
}

/// A user resolved to numeric ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership of the user's name).
    pub additional_gids: Vec<u32>,
}

impl fmt::Display for ResolvedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}
