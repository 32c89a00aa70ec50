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
//!   are reserved, as on Cloud Run: an app `env` that sets one is refused.
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
//!   [`Seccomp::Unconfined`]; namespaces pid, ipc, uts, mount and cgroup, plus
//!   network unless the instance shares the host's ([`Network::Host`]; the
//!   shim then points it at the namespace it made ahead,
//!   [`join_network_namespace`]);
//!   containerd's masked and read-only paths ([`MASKED_PATHS`],
//!   [`READONLY_PATHS`]); `RLIMIT_NOFILE` 1024/1024 ([`NOFILE_LIMIT`]).
//!   Mounts as `runc spec` (`/sys` and `/sys/fs/cgroup` read-only), `/proc`
//!   `nosuid,noexec,nodev` as containerd mounts it.
//! - `linux.resources` memory (swap = memory: none), CPU (quota over a 100 ms
//!   period; [`DEFAULT_CPUS`] unless set) and pids ([`DEFAULT_PIDS`] unless
//!   set), applied by runc to the cgroup `cgroups_path` (berth uses
//!   `/berth/<id>`).
//! - The image's `WorkingDir` must be a clean absolute path outside `/proc`
//!   ([`check_working_dir`]): CVE-2024-21626 made runc start a process in
//!   `/proc/self/fd/N`, a leaked host directory.
//! - No AppArmor/SELinux label, like `runc spec`.
//!
//! Nothing here touches runc or the image's files; the lifecycle is in
//! [`super::shim`].

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::ImageConfiguration;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder, get_default_mounts,
};
use serde::Deserialize;

/// `PATH` given to a process whose image sets none (as containerd and Docker).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment variables berth sets itself (Cloud Run's contract); an app
/// may not set them.
pub const RESERVED_ENV: [&str; 4] = ["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

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
    /// An HTTP readiness path that is not a plain absolute path.
    #[error("readiness path {0:?} must start with '/' and hold no spaces or control characters")]
    InvalidProbePath(String),
    /// The app's env sets a variable berth sets itself.
    #[error("env {0} is reserved: berth sets it (Cloud Run's container contract)")]
    ReservedEnv(String),
    /// An env name is empty or contains `=` or NUL.
    #[error("env name {0:?} is not valid")]
    InvalidEnv(String),
    /// A CPU limit that is not a positive number of CPUs of at least 0.01.
    #[error("cpu limit {0} is not valid (must be a finite number >= 0.01)")]
    InvalidCpus(f64),
    /// A memory or pids limit that does not fit.
    #[error("{what} limit {value} is not valid")]
    InvalidLimit {
        /// `memory` or `pids`.
        what: &'static str,
        /// The value given.
        value: String,
    },
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

/// How an instance is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Its own network namespace (berth makes and pins it; runc joins it)
    /// on berth's bridge, with egress through NAT; it reaches no port of the
    /// host and no other instance (see [`super::bridge`]). berth connects
    /// to its address.
    #[default]
    Isolated,
    /// A private network namespace with loopback only: no egress at all.
    /// berth reaches the instance from inside that namespace.
    None,
    /// The host's network namespace: the instance listens on its own `PORT` on
    /// the host; egress works; no isolation from the host or between
    /// instances. Unsafe for code you do not trust.
    Host,
}

/// Which seccomp filter an instance runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seccomp {
    /// berth's default profile ([`super::seccomp`]), modelled on moby's.
    #[default]
    Default,
    /// No filter at all (the app's `seccomp = "unconfined"`).
    Unconfined,
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

/// The parts of an OCI image config that decide how its process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, `NAME=value` strings in image order.
    pub env: Vec<String>,
    /// `WorkingDir` (`None` when absent or empty).
    pub working_dir: Option<String>,
    /// `User` (`None` when absent or empty).
    pub user: Option<String>,
}

impl ImageConfig {
    /// Parses an image config blob (`application/vnd.oci.image.config.v1+json`
    /// or Docker's `application/vnd.docker.container.image.v1+json`). Only the
    /// `config` object is read, as an [`oci_spec::image::Config`]; a blob
    /// without one gives an empty config. A `WorkingDir` that
    /// [`check_working_dir`] refuses makes the whole image refused, at deploy.
    ///
    /// The whole blob is not read as an [`ImageConfiguration`]: that requires
    /// `architecture`, `os` and `rootfs`, which say nothing about how the
    /// process runs and which berth has never asked of an image.
    ///
    /// # Errors
    /// [`SpecError::ImageConfig`] when the blob is not a JSON object, or its
    /// `config` is not a valid image config object;
    /// [`SpecError::WorkingDir`] for a refused `WorkingDir`.
    pub fn from_json(blob: &[u8]) -> Result<Self, SpecError> {
        let mut image: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(blob).map_err(SpecError::ImageConfig)?;
        let config = match image.remove("config") {
            Some(config) => Option::<oci_spec::image::Config>::deserialize(config)
                .map_err(SpecError::ImageConfig)?,
            None => None,
        };
        let image = Self::from_config(config.as_ref());
        if let Some(dir) = &image.working_dir {
            check_working_dir(dir)?;
        }
        Ok(image)
    }

    /// The parts of `config` that berth uses; empty `WorkingDir` and `User`
    /// count as absent.
    fn from_config(config: Option<&oci_spec::image::Config>) -> Self {
        let Some(c) = config else {
            return Self::default();
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Self {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: non_empty(c.working_dir()),
            user: non_empty(c.user()),
        }
    }
}

impl From<&ImageConfiguration> for ImageConfig {
    fn from(image: &ImageConfiguration) -> Self {
        Self::from_config(image.config().as_ref())
    }
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
    pub network: Network,
    /// IPv4 networks in refused ranges its egress may reach (isolated
    /// network only).
    pub allowed_networks: Vec<berth_wasm::networks::Network>,
    /// Seccomp filter.
    pub seccomp: Seccomp,
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

/// Checks what [`runtime_spec`] does not see: the id and the probe path
/// (which must start with `/`, hold no whitespace or control characters, and
/// be a path and query the HTTP client can send, e.g. no `<`, `>` or `` ` ``
/// unescaped).
///
/// # Errors
/// [`SpecError::InvalidId`] or [`SpecError::InvalidProbePath`].
pub fn validate(spec: &InstanceSpec) -> Result<(), SpecError> {
    validate_id(&spec.id)?;
    if let Probe::Http { path } = &spec.readiness
        && (!path.starts_with('/')
            || path.chars().any(|c| c.is_whitespace() || c.is_control())
            || path.parse::<http::uri::PathAndQuery>().is_err())
    {
        return Err(SpecError::InvalidProbePath(path.clone()));
    }
    Ok(())
}

/// Checks an image's `WorkingDir`: an absolute path with no empty, `.` or
/// `..` component (one trailing `/` is allowed: Docker keeps `WORKDIR /app/`
/// as written), and not `/proc` or below it.
///
/// CVE-2024-21626: runc before 1.1.12 leaked a host directory's fd into
/// `runc init`, and an image whose `WorkingDir` was `/proc/self/fd/7` started
/// its process with a working directory on the host. The runc berth accepts
/// is fixed ([`super::runc::RuncVersion`]); this refusal stands regardless,
/// as nothing honest needs such a `WorkingDir`.
///
/// # Errors
/// [`SpecError::WorkingDir`] naming the reason.
pub fn check_working_dir(dir: &str) -> Result<(), SpecError> {
    let refuse = |reason| {
        Err(SpecError::WorkingDir {
            dir: dir.to_owned(),
            reason,
        })
    };
    let Some(rest) = dir.strip_prefix('/') else {
        return refuse("it must be an absolute path");
    };
    if dir.contains('\0') {
        return refuse("it contains a NUL byte");
    }
    // One trailing `/` (not the only character after the root: `//`).
    let rest = match rest.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => rest,
    };
    if !rest.is_empty()
        && rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return refuse("it must be a clean path (no empty, `.` or `..` component)");
    }
    if rest == "proc" || rest.starts_with("proc/") {
        return refuse(
            "it is under /proc, where /proc/self/fd/N can name a host directory (CVE-2024-21626)",
        );
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

/// The process environment: image env (overridden in place by the app's env),
/// a default `PATH` if none, the app's other variables, then the platform
/// variables.
///
/// # Errors
/// [`SpecError::ReservedEnv`] or [`SpecError::InvalidEnv`] for a bad app env.
pub fn process_env(spec: &InstanceSpec) -> Result<Vec<String>, SpecError> {
    for name in spec.env.keys() {
        if RESERVED_ENV.contains(&name.as_str()) {
            return Err(SpecError::ReservedEnv(name.clone()));
        }
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(SpecError::InvalidEnv(name.clone()));
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: &str, v: &str| match env
        .iter_mut()
        .find(|(name, _)| name == k)
    {
        Some(slot) => slot.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    for entry in &spec.image.env {
        // An image entry without `=` is dropped, as containerd does.
        if let Some((k, v)) = entry.split_once('=')
            && !k.is_empty()
        {
            set(&mut env, k, v);
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        set(&mut env, "PATH", DEFAULT_PATH);
    }
    for (k, v) in &spec.env {
        set(&mut env, k, v);
    }
    set(&mut env, "PORT", &spec.port.to_string());
    set(&mut env, "K_SERVICE", &spec.app);
    set(&mut env, "K_REVISION", &spec.revision);
    set(&mut env, "K_CONFIGURATION", &spec.app);
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// The capabilities of every container (bounding = permitted = effective;
/// none inheritable or ambient, so a non-root user gets none): containerd's
/// default fourteen less five that a server does not need.
///
/// Kept, each because ordinary images running as root use it:
/// - `CHOWN`: entrypoints `chown` what they create for the user they drop to
///   (data and cache directories).
/// - `DAC_OVERRIDE`: root reading and writing files whatever their mode (an
///   entrypoint preparing files owned by the app user).
/// - `FSETID`: keeps set-group-id bits on files root modifies or chowns, so
///   that `cp -p`, `tar` and package tools preserve modes.
/// - `FOWNER`: `chmod`, `utime` and the like on files root does not own.
/// - `SETGID`, `SETUID`: dropping from root to the app user (`su-exec`,
///   `gosu`, nginx and httpd workers).
/// - `SETPCAP`: a process trimming its own bounding set before it execs (it
///   cannot add anything outside that set).
/// - `NET_BIND_SERVICE`: a server that listens on a port below 1024.
/// - `KILL`: a root supervisor signalling workers that run as another user.
///
/// Dropped: `NET_RAW` (raw and packet sockets: spoofing and sniffing on the
/// bridge and, with `network = "host"`, on the host's own); `MKNOD` (device nodes;
/// the device cgroup already refuses their use); `SETFCAP` (setting file
/// capabilities, a step in user-namespace escalations); `SYS_CHROOT`
/// (`chroot`; the seccomp profile does not allow it either); `AUDIT_WRITE`
/// (writing to the kernel's audit log; only login daemons do).
pub const DEFAULT_CAPS: [Capability; 9] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::Kill,
];

/// `linux.resources` for `limits`.
fn resources(limits: &ContainerLimits) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    // Deny every device; runc adds its default allow-list (null, zero, full,
    // tty, random, urandom, ptmx/pts) on top, as with `runc spec`.
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    let mut b = LinuxResourcesBuilder::default().devices(vec![deny_all]);
    if let Some(mem) = limits.memory {
        let limit =
            i64::try_from(mem)
                .ok()
                .filter(|m| *m > 0)
                .ok_or_else(|| SpecError::InvalidLimit {
                    what: "memory",
                    value: mem.to_string(),
                })?;
        // memory+swap = memory: no swap, on cgroup v1 (memsw) and v2
        // (swap.max 0) alike. Left unset, runc writes nothing and the
        // instance may swap without bound.
        b = b.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()?,
        );
    }
    let cpus = limits.cpus.unwrap_or(DEFAULT_CPUS);
    b = b.cpu(
        LinuxCpuBuilder::default()
            .quota(cpu_quota(cpus)?)
            .period(CPU_PERIOD_US)
            .build()?,
    );
    let pids = limits.pids.unwrap_or(DEFAULT_PIDS);
    if pids <= 0 {
        return Err(SpecError::InvalidLimit {
            what: "pids",
            value: pids.to_string(),
        });
    }
    b = b.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    Ok(b.build()?)
}

/// CFS quota in µs per [`CPU_PERIOD_US`] for `cpus` CPUs.
///
/// # Errors
/// [`SpecError::InvalidCpus`] unless `cpus` is finite and at least 0.01 (the
/// kernel's 1 ms minimum quota).
pub fn cpu_quota(cpus: f64) -> Result<i64, SpecError> {
    if !cpus.is_finite() || !(0.01..=1_000_000.0).contains(&cpus) {
        return Err(SpecError::InvalidCpus(cpus));
    }
    // In range by the check above, so the cast neither saturates nor wraps.
    #[allow(clippy::cast_possible_truncation)]
    Ok((cpus * CPU_PERIOD_US as f64).round() as i64)
}

/// The runtime spec of one instance, for a bundle whose rootfs directory is
/// `rootfs` (relative to the bundle, or absolute).
///
/// `cgroups_path` is where runc puts the instance's cgroups (relative to each
/// cgroup v1 hierarchy's mount point, e.g. `/berth/<id>`).
///
/// # Errors
/// [`SpecError`] for an empty command, a reserved or invalid env, invalid
/// limits, an invalid id or a refused `WorkingDir`.
pub fn runtime_spec(
    spec: &InstanceSpec,
    user: &ResolvedUser,
    rootfs: &Path,
    cgroups_path: &Path,
) -> Result<Spec, SpecError> {
    validate_id(&spec.id)?;
    let args: Vec<String> = spec
        .image
        .entrypoint
        .iter()
        .chain(&spec.image.cmd)
        .cloned()
        .collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let caps: oci_spec::runtime::Capabilities = DEFAULT_CAPS.into_iter().collect();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    // The builder fills unset sets with `runc spec`'s three capabilities;
    // like containerd, give none inheritable or ambient.
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let cwd = match spec.image.working_dir.as_deref().filter(|w| !w.is_empty()) {
        Some(dir) => {
            check_working_dir(dir)?;
            PathBuf::from(dir)
        }
        None => PathBuf::from("/"),
    };
    let mut user_b = UserBuilder::default().uid(user.uid).gid(user.gid);
    if !user.additional_gids.is_empty() {
        user_b = user_b.additional_gids(user.additional_gids.clone());
    }
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user_b.build()?)
        .args(args)
        .env(process_env(spec)?)
        .cwd(cwd)
        .capabilities(capabilities)
        // Set-user-id files and file capabilities grant nothing across
        // execve; runc also loads the seccomp filter as late as possible
        // (just before the image's process) when this is set.
        .no_new_privileges(true)
        .build()?;
    process.set_rlimits(Some(vec![
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(NOFILE_LIMIT)
            .hard(NOFILE_LIMIT)
            .build()?,
    ]));

    // The cgroup namespace: the instance sees its own cgroup as `/` (in
    // /proc/self/cgroup and in the read-only /sys/fs/cgroup runc mounts for
    // it), not the host's hierarchy and berth's paths in it.
    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    if spec.network != Network::Host {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(&spec.limits)?)
        .cgroups_path(cgroups_path.to_path_buf())
        .masked_paths(MASKED_PATHS.map(String::from).to_vec())
        .readonly_paths(READONLY_PATHS.map(String::from).to_vec())
        .build()?;
    if spec.seccomp == Seccomp::Default {
        linux.set_seccomp(Some(
            super::seccomp::default_profile().map_err(SpecError::SeccompProfile)?,
        ));
    }

    let annotations: std::collections::HashMap<String, String> = [
        ("io.berth.app", spec.app.as_str()),
        ("io.berth.revision", spec.revision.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs.to_path_buf())
                .readonly(false)
                .build()?,
        )
        .hostname(spec.id.clone())
        .mounts(default_mounts())
        .process(process)
        .linux(linux)
        .annotations(annotations)
        .build()?)
}

/// `runc spec`'s mounts, with `/proc` mounted `nosuid,noexec,nodev` as
/// containerd's default spec has it (runc's own leaves it without options).
fn default_mounts() -> Vec<oci_spec::runtime::Mount> {
    let mut mounts = get_default_mounts();
    for m in &mut mounts {
        if m.destination() == Path::new("/proc") {
            m.set_options(Some(vec!["nosuid".into(), "noexec".into(), "nodev".into()]));
        }
    }
    mounts
}

/// The memory limit of a runtime spec, in bytes (`None`: no limit).
pub fn memory_limit(spec: &Spec) -> Option<u64> {
    let memory = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .memory()
        .as_ref()?;
    memory.limit().and_then(|l| u64::try_from(l).ok())
}

/// Makes the instance join the network namespace pinned at `path` (made by
/// berth ahead of `runc run`, with its network already set up) instead of
/// runc creating an empty one.
///
/// # Errors
/// When the spec has no network namespace (a [`Network::Host`] instance).
pub fn join_network_namespace(spec: &mut Spec, path: &Path) -> Result<(), SpecError> {
    let ns = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
        .and_then(|n| {
            n.iter_mut()
                .find(|n| n.typ() == LinuxNamespaceType::Network)
        });
    match ns {
        Some(ns) => {
            ns.set_path(Some(path.to_path_buf()));
            Ok(())
        }
        None => Err(SpecError::NoNetworkNamespace),
    }
}

/// Adds a read-only bind mount of the host file `source` at `destination`
/// (runc creates the mount point if the image lacks it).
///
/// # Errors
/// When oci-spec refuses the mount.
pub fn add_ro_bind(spec: &mut Spec, source: &Path, destination: &str) -> Result<(), SpecError> {
    let mount = MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(
            ["rbind", "ro", "nosuid", "nodev", "noexec"]
                .map(String::from)
                .to_vec(),
        )
        .build()?;
    spec.mounts_mut().get_or_insert_with(Vec::new).push(mount);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::accounts::{resolve_user, tests::accounts};
    use super::*;

    fn base() -> InstanceSpec {
        InstanceSpec {
            id: "hello-1".into(),
            app: "hello".into(),
            revision: "hello-00001".into(),
            image: ImageConfig {
                entrypoint: vec!["/bin/server".into()],
                cmd: vec!["--flag".into(), "x".into()],
                env: vec![
                    "PATH=/opt/bin:/bin".into(),
                    "A=image".into(),
                    "PORT=1".into(),
                    "B=image".into(),
                ],
                working_dir: Some("/srv".into()),
                user: None,
            },
            env: BTreeMap::from([("B".into(), "app".into()), ("C".into(), "app".into())]),
            port: 8123,
            limits: ContainerLimits {
                memory: Some(64 << 20),
                cpus: Some(1.5),
                pids: Some(100),
            },
            network: Network::Host,
            seccomp: Seccomp::Default,
            readiness: Probe::Tcp,
            startup_timeout: Duration::from_secs(5),
            stop_grace: Duration::from_secs(1),
            allowed_networks: Vec::new(),
        }
    }

    #[test]
    fn image_config_from_json() {
        let blob = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/e"],"Cmd":["a","b"],"Env":["X=1"],"WorkingDir":"","User":"www"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = ImageConfig::from_json(blob).unwrap();
        assert_eq!(c.entrypoint, ["/e"]);
        assert_eq!(c.cmd, ["a", "b"]);
        assert_eq!(c.env, ["X=1"]);
        assert_eq!(c.working_dir, None);
        assert_eq!(c.user.as_deref(), Some("www"));
        // Nulls (Docker writes `"Entrypoint": null`) and a missing config.
        let c = ImageConfig::from_json(br#"{"config":{"Entrypoint":null,"Cmd":["sh"]}}"#).unwrap();
        assert_eq!((c.entrypoint.len(), c.cmd.len()), (0, 1));
        assert_eq!(
            ImageConfig::from_json(b"{}").unwrap(),
            ImageConfig::default()
        );
        assert!(matches!(
            ImageConfig::from_json(b"nope"),
            Err(SpecError::ImageConfig(_))
        ));
    }

    #[test]
    fn image_config_from_an_image_configuration() {
        // What Docker writes: maps for ExposedPorts and Volumes, fields berth
        // does not use (Healthcheck, ArgsEscaped), and a null Entrypoint.
        let blob = br#"{"architecture":"arm64","os":"linux","config":{"ExposedPorts":{"8080/tcp":{}},"Volumes":{"/data":{}},"Env":["PATH=/bin"],"Entrypoint":null,"Cmd":["/srv"],"WorkingDir":"/app","User":"1000:1000","Labels":{"a":"b"},"Healthcheck":{"Test":["NONE"]},"ArgsEscaped":true},"rootfs":{"type":"layers","diff_ids":["sha256:00"]},"history":[{"created_by":"x","empty_layer":true}]}"#;
        let image: ImageConfiguration = serde_json::from_slice(blob).unwrap();
        let c = ImageConfig::from(&image);
        assert_eq!(c, ImageConfig::from_json(blob).unwrap());
        assert_eq!(c.cmd, ["/srv"]);
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        for bad in [
            &br#"{"config":5}"#[..],
            br#"{"config":{"Cmd":"sh"}}"#,
            b"[]",
            b"5",
        ] {
            assert!(
                matches!(ImageConfig::from_json(bad), Err(SpecError::ImageConfig(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn env_order_and_overrides() {
        let env = process_env(&base()).unwrap();
        assert_eq!(
            env,
            [
                "PATH=/opt/bin:/bin",
                "A=image",
                "PORT=8123",
                "B=app",
                "C=app",
                "K_SERVICE=hello",
                "K_REVISION=hello-00001",
                "K_CONFIGURATION=hello",
            ]
        );
        let mut s = base();
        s.image.env = vec!["NOEQUALS".into(), "X=a=b".into()];
        s.env.clear();
        let env = process_env(&s).unwrap();
        assert_eq!(env[0], "X=a=b");
        assert_eq!(env[1], format!("PATH={DEFAULT_PATH}"));
        s.env.insert("K_SERVICE".into(), "x".into());
        assert!(matches!(process_env(&s), Err(SpecError::ReservedEnv(n)) if n == "K_SERVICE"));
        s.env.clear();
        s.env.insert("A=B".into(), "x".into());
        assert!(matches!(process_env(&s), Err(SpecError::InvalidEnv(_))));
    }

    #[test]
    fn runtime_spec_fields() {
        let s = base();
        let user = resolve_user(Some("www"), &accounts()).unwrap();
        let spec =
            runtime_spec(&s, &user, Path::new("rootfs"), Path::new("/berth/hello-1")).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let p = &json["process"];
        assert_eq!(p["args"], serde_json::json!(["/bin/server", "--flag", "x"]));
        assert_eq!(p["terminal"], false);
        assert_eq!(p["cwd"], "/srv");
        assert_eq!(p["user"]["uid"], 33);
        assert_eq!(p["user"]["gid"], 33);
        assert_eq!(p["user"]["additionalGids"], serde_json::json!([50, 29]));
        assert_eq!(p["env"][2], "PORT=8123");
        assert!(
            p["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .contains(&"CAP_NET_BIND_SERVICE".into())
        );
        assert!(p["capabilities"].get("ambient").is_none());
        assert!(p["capabilities"].get("inheritable").is_none());
        // Hardening (the `hardened_*` tests below check each in detail).
        assert_eq!(p["capabilities"]["bounding"].as_array().unwrap().len(), 9);
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(
            p["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        assert_eq!(json["root"]["path"], "rootfs");
        assert_eq!(json["root"]["readonly"], false);
        assert_eq!(json["hostname"], "hello-1");
        let l = &json["linux"];
        assert_eq!(l["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(l["resources"]["cpu"]["quota"], 150_000);
        assert_eq!(l["resources"]["cpu"]["period"], 100_000);
        assert_eq!(l["resources"]["pids"]["limit"], 100);
        assert_eq!(l["resources"]["devices"][0]["allow"], false);
        assert_eq!(l["cgroupsPath"], "/berth/hello-1");
        let ns: Vec<&str> = l["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "cgroup"]);
        assert!(
            l["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n.get("path").is_none())
        );
        assert!(
            l["maskedPaths"]
                .as_array()
                .unwrap()
                .contains(&"/proc/kcore".into())
        );
        assert!(
            l["readonlyPaths"]
                .as_array()
                .unwrap()
                .contains(&"/proc/sys".into())
        );
        let mounts: Vec<&str> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        for m in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
        ] {
            assert!(mounts.contains(&m), "{m} in {mounts:?}");
        }
        let sys = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert!(sys["options"].as_array().unwrap().contains(&"ro".into()));
        let proc = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/proc")
            .unwrap();
        assert_eq!(
            proc["options"],
            serde_json::json!(["nosuid", "noexec", "nodev"])
        );

        let mut iso = s.clone();
        iso.network = Network::Isolated;
        // A relative WorkingDir is refused now (`working_dirs`).
        iso.image.working_dir = Some("/rel/dir".into());
        iso.limits = ContainerLimits::default();
        let spec = runtime_spec(
            &iso,
            &ResolvedUser::default(),
            Path::new("/b/rootfs"),
            Path::new("/berth/x"),
        )
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["process"]["cwd"], "/rel/dir");
        assert_eq!(json["process"]["user"]["uid"], 0);
        assert!(json["process"]["user"].get("additionalGids").is_none());
        let l = &json["linux"];
        assert!(
            l["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "network")
        );
        assert!(l["resources"].get("memory").is_none());
        // No CPU or pids limit given: the defaults.
        assert_eq!(l["resources"]["cpu"]["quota"], 100_000);
        assert_eq!(l["resources"]["pids"]["limit"], 1024);

        let mut empty = s.clone();
        empty.image.entrypoint.clear();
        empty.image.cmd.clear();
        assert!(matches!(
            runtime_spec(&empty, &user, Path::new("r"), Path::new("/c")),
            Err(SpecError::NoCommand)
        ));
        let mut bad = s;
        bad.id = "Bad_Id".into();
        assert!(matches!(
            runtime_spec(&bad, &user, Path::new("r"), Path::new("/c")),
            Err(SpecError::InvalidId(_))
        ));
    }

    fn default_spec(s: &InstanceSpec) -> serde_json::Value {
        let spec = runtime_spec(
            s,
            &ResolvedUser::default(),
            Path::new("rootfs"),
            Path::new("/berth/x"),
        )
        .unwrap();
        serde_json::to_value(&spec).unwrap()
    }

    #[test]
    fn hardened_process() {
        let json = default_spec(&base());
        let p = &json["process"];
        // Set-user-id and file capabilities grant nothing.
        assert_eq!(p["noNewPrivileges"], true);
        // containerd's fourteen less NET_RAW, MKNOD, SETFCAP, SYS_CHROOT,
        // AUDIT_WRITE; the same in the three sets, none inheritable or ambient.
        let caps = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_KILL",
        ];
        for set in ["bounding", "effective", "permitted"] {
            let mut got: Vec<&str> = p["capabilities"][set]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            got.sort_unstable();
            let mut want = caps.to_vec();
            want.sort_unstable();
            assert_eq!(got, want, "{set}");
        }
        for gone in ["inheritable", "ambient"] {
            assert!(p["capabilities"].get(gone).is_none(), "{gone}");
        }
        // An explicit open-files limit, containerd's.
        assert_eq!(
            p["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
    }

    #[test]
    fn hardened_linux() {
        let json = default_spec(&base());
        let l = &json["linux"];
        assert!(
            l["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "cgroup" && n.get("path").is_none()),
            "a new cgroup namespace"
        );
        let list = |key: &str| -> Vec<String> { serde_json::from_value(l[key].clone()).unwrap() };
        assert_eq!(
            list("maskedPaths"),
            [
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
            ]
        );
        assert_eq!(
            list("readonlyPaths"),
            [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ]
        );
        // The default seccomp profile, as stored; none when unconfined.
        let stored: serde_json::Value =
            serde_json::from_str(crate::container::seccomp::DEFAULT_PROFILE_JSON).unwrap();
        assert_eq!(l["seccomp"], stored);
        assert_eq!(l["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let mut unconfined = base();
        unconfined.seccomp = Seccomp::Unconfined;
        let json = default_spec(&unconfined);
        assert!(json["linux"].get("seccomp").is_none());
        // /sys and the cgroup hierarchy (the instance's own, in its
        // namespace) are read-only.
        for dest in ["/sys", "/sys/fs/cgroup"] {
            let m = json["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == dest)
                .unwrap();
            assert!(
                m["options"].as_array().unwrap().contains(&"ro".into()),
                "{dest}"
            );
        }
    }

    #[test]
    fn default_limits_and_no_swap() {
        let mut s = base();
        s.limits = ContainerLimits {
            memory: Some(64 << 20),
            cpus: None,
            pids: None,
        };
        let json = default_spec(&s);
        let r = &json["linux"]["resources"];
        // memory+swap = memory: no swap.
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["memory"]["swap"], 64 << 20);
        // One CPU, 1024 processes.
        assert_eq!(r["cpu"]["quota"], 100_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["pids"]["limit"], DEFAULT_PIDS);
        assert_eq!(DEFAULT_PIDS, 1024);
        let spec = runtime_spec(
            &s,
            &ResolvedUser::default(),
            Path::new("r"),
            Path::new("/c"),
        )
        .unwrap();
        assert_eq!(memory_limit(&spec), Some(64 << 20));
        // What the app sets wins.
        s.limits = ContainerLimits {
            memory: None,
            cpus: Some(2.5),
            pids: Some(10_000),
        };
        let json = default_spec(&s);
        let r = &json["linux"]["resources"];
        assert!(r.get("memory").is_none());
        assert_eq!(r["cpu"]["quota"], 250_000);
        assert_eq!(r["pids"]["limit"], 10_000);
    }

    #[test]
    fn working_dirs() {
        for ok in ["/", "/app", "/srv/www", "/app/", "/procfs", "/data/proc"] {
            check_working_dir(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            "rel/dir",
            "app",
            "./app",
            "/app/../etc",
            "/..",
            "/a//b",
            "//",
            "/a/./b",
            "/proc",
            "/proc/",
            "/proc/self/fd/7",
            "/proc/1/cwd",
            "/a\0b",
        ] {
            let err = check_working_dir(bad).unwrap_err();
            assert!(matches!(err, SpecError::WorkingDir { .. }), "{bad:?}");
            assert!(err.to_string().contains("`WorkingDir`"), "{err}");
        }
        // At deploy: reading the image config refuses it, naming the key.
        let blob = br#"{"config":{"Cmd":["/srv"],"WorkingDir":"/proc/self/fd/7"}}"#;
        let err = ImageConfig::from_json(blob).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image config `WorkingDir` \"/proc/self/fd/7\" is refused: it is under /proc, where \
             /proc/self/fd/N can name a host directory (CVE-2024-21626)"
        );
        let err =
            ImageConfig::from_json(br#"{"config":{"Cmd":["/srv"],"WorkingDir":"srv/../.."}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        // And at instance start, for an ImageConfig made in code.
        let mut s = base();
        s.image.working_dir = Some("/proc/self/cwd".into());
        assert!(matches!(
            runtime_spec(
                &s,
                &ResolvedUser::default(),
                Path::new("r"),
                Path::new("/c")
            ),
            Err(SpecError::WorkingDir { .. })
        ));
    }

    #[test]
    fn limits_validation() {
        assert_eq!(cpu_quota(1.5).unwrap(), 150_000);
        assert_eq!(cpu_quota(0.01).unwrap(), 1_000);
        assert_eq!(cpu_quota(0.333).unwrap(), 33_300);
        for bad in [0.0, -1.0, 0.001, f64::NAN, f64::INFINITY] {
            assert!(cpu_quota(bad).is_err(), "{bad}");
        }
        let mut s = base();
        s.limits.pids = Some(0);
        assert!(matches!(
            runtime_spec(
                &s,
                &ResolvedUser::default(),
                Path::new("r"),
                Path::new("/c")
            ),
            Err(SpecError::InvalidLimit { what: "pids", .. })
        ));
        s.limits.pids = None;
        s.limits.memory = Some(u64::MAX);
        assert!(matches!(
            runtime_spec(
                &s,
                &ResolvedUser::default(),
                Path::new("r"),
                Path::new("/c")
            ),
            Err(SpecError::InvalidLimit { what: "memory", .. })
        ));
    }

    #[test]
    fn probe_paths() {
        let mut s = base();
        for ok in ["/", "/healthz", "/ready?full=1", "/%3Cok%3E", "/caf\u{e9}"] {
            s.readiness = Probe::Http { path: ok.into() };
            validate(&s).unwrap();
        }
        for bad in ["", "healthz", "/a b", "/x\r\nHost: evil", "/<x>", "/`x`"] {
            s.readiness = Probe::Http { path: bad.into() };
            assert!(
                matches!(validate(&s), Err(SpecError::InvalidProbePath(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ids() {
        for ok in ["a", "hello-1", "0abc", &"x".repeat(63)] {
            validate_id(ok).unwrap();
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "a/b", &"x".repeat(64)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }
}
