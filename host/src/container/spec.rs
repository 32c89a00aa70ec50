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
//! - Mounts, masked and read-only paths as `runc spec`; the capability set of
//!   containerd's and Docker's default (a superset of `runc spec`'s three
//!   capabilities that ordinary images expect, e.g. to drop privileges);
//!   rlimits inherited from berth (as containerd 2 does);
//!   namespaces pid, ipc, uts and mount, plus network unless the instance
//!   shares the host's (without a path, so runc creates it).
//! - `linux.resources` memory, CPU (quota over a 100 ms period) and pids,
//!   applied by runc to the cgroup `cgroups_path` (berth uses `/berth/<id>`).
//! - No seccomp profile and no AppArmor/SELinux label, like `runc spec`
//!   (Docker and CRI add a default seccomp profile; berth does not yet).
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
    LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder, get_default_maskedpaths, get_default_mounts, get_default_readonly_paths,
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
    /// oci-spec refused a value.
    #[error("building the runtime spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// How an instance is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Its own network namespace (created by runc) on berth's bridge, with
    /// egress through NAT; it reaches no port of the host and no other
    /// instance (see [`super::bridge`]). berth connects to its address.
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
    /// without one gives an empty config.
    ///
    /// The whole blob is not read as an [`ImageConfiguration`]: that requires
    /// `architecture`, `os` and `rootfs`, which say nothing about how the
    /// process runs and which berth has never asked of an image.
    ///
    /// # Errors
    /// [`SpecError::ImageConfig`] when the blob is not a JSON object, or its
    /// `config` is not a valid image config object.
    pub fn from_json(blob: &[u8]) -> Result<Self, SpecError> {
        let mut image: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(blob).map_err(SpecError::ImageConfig)?;
        let config = match image.remove("config") {
            Some(config) => Option::<oci_spec::image::Config>::deserialize(config)
                .map_err(SpecError::ImageConfig)?,
            None => None,
        };
        Ok(Self::from_config(config.as_ref()))
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
    /// Memory limit in bytes (`linux.resources.memory.limit`).
    pub memory: Option<u64>,
    /// CPUs, e.g. 1.5 → quota 150000 µs per 100000 µs period.
    pub cpus: Option<f64>,
    /// Most processes and threads (`linux.resources.pids.limit`).
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

/// The capabilities of containerd's and Docker's default spec.
const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
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
        b = b.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if let Some(cpus) = limits.cpus {
        b = b.cpu(
            LinuxCpuBuilder::default()
                .quota(cpu_quota(cpus)?)
                .period(CPU_PERIOD_US)
                .build()?,
        );
    }
    if let Some(pids) = limits.pids {
        if pids <= 0 {
            return Err(SpecError::InvalidLimit {
                what: "pids",
                value: pids.to_string(),
            });
        }
        b = b.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
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
/// limits or an invalid id.
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
    let cwd = spec
        .image
        .working_dir
        .as_deref()
        .filter(|w| !w.is_empty())
        .map_or_else(|| PathBuf::from("/"), |w| Path::new("/").join(w));
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
        .no_new_privileges(false)
        .build()?;
    // The builder starts from `Process::default()` (`runc spec`'s 1024 open
    // files); inherit berth's limits instead, as containerd 2 does.
    process.set_rlimits(None);

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if spec.network != Network::Host {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(&spec.limits)?)
        .cgroups_path(cgroups_path.to_path_buf())
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()?;

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
        .mounts(get_default_mounts())
        .process(process)
        .linux(linux)
        .annotations(annotations)
        .build()?)
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
            readiness: Probe::Tcp,
            startup_timeout: Duration::from_secs(5),
            stop_grace: Duration::from_secs(1),
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
        assert_eq!(p["capabilities"]["bounding"].as_array().unwrap().len(), 14);
        assert!(
            p.get("rlimits").is_none(),
            "rlimits are inherited from berth"
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
        assert_eq!(ns, ["pid", "ipc", "uts", "mount"]);
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

        let mut iso = s.clone();
        iso.network = Network::Isolated;
        iso.image.working_dir = Some("rel/dir".into());
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
        assert!(l["resources"].get("cpu").is_none());

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
