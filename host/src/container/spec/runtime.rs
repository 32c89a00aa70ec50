//! [`runtime_spec`]: an [`InstanceSpec`] into the OCI runtime spec runc
//! runs, in steps (the process, the Linux namespaces and resources, the
//! spec around them), and the edits the shim makes to it afterwards.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder, get_default_mounts,
};

use super::{
    CPU_PERIOD_US, ContainerLimits, DEFAULT_CPUS, DEFAULT_PATH, DEFAULT_PIDS, InstanceSpec,
    InvalidSetting, MASKED_PATHS, NOFILE_LIMIT, NetworkMode, READONLY_PATHS, ResolvedUser,
    SeccompMode, SpecError, check_working_dir, rules, validate_id,
};

/// The process environment: image env (overridden in place by the app's env),
/// a default `PATH` if none, the app's other variables, then the platform
/// variables.
///
/// # Errors
/// [`SpecError::Setting`] for an app variable that deploy refuses too
/// ([`rules::container_env_name`]: not a name, or one berth sets itself).
pub fn process_env(spec: &InstanceSpec) -> Result<Vec<String>, SpecError> {
    for name in spec.env.keys() {
        rules::env_name(name).map_err(|r| InvalidSetting::new("env", r))?;
        rules::container_env_name(name)
            .map_err(|r| InvalidSetting::new(format!("env.{name}"), r))?;
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
        // Deploy keeps it in 64KiB..=4GiB (`Limits::validate`).
        let limit = i64::try_from(mem).ok().filter(|m| *m > 0).ok_or_else(|| {
            InvalidSetting::new(
                "limits.memory",
                format!("{mem} bytes is not a cgroup memory limit"),
            )
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
    rules::pids(pids).map_err(|r| InvalidSetting::new("limits.pids", r))?;
    b = b.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    Ok(b.build()?)
}

/// CFS quota in µs per [`CPU_PERIOD_US`] for `cpus` CPUs.
///
/// # Errors
/// [`SpecError::Setting`] for a count deploy refuses too ([`rules::cpus`]:
/// finite, at least 0.01, the kernel's 1 ms minimum quota, at most 1024).
pub fn cpu_quota(cpus: f64) -> Result<i64, SpecError> {
    rules::cpus(cpus).map_err(|r| InvalidSetting::new("limits.cpu", r))?;
    // In range by the check above, so the cast neither saturates nor wraps.
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
    let process = process(spec, user)?;
    let linux = linux(spec, cgroups_path)?;
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

/// `process`: the image's command as `user`, in its `WorkingDir`, with the
/// instance's env, [`DEFAULT_CAPS`], no new privileges and
/// [`NOFILE_LIMIT`] open files.
fn process(
    spec: &InstanceSpec,
    user: &ResolvedUser,
) -> Result<oci_spec::runtime::Process, SpecError> {
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
    Ok(process)
}

/// `linux`: the namespaces, the resources in the cgroup at `cgroups_path`,
/// the masked and read-only paths and the seccomp filter.
fn linux(spec: &InstanceSpec, cgroups_path: &Path) -> Result<oci_spec::runtime::Linux, SpecError> {
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
    if spec.network != NetworkMode::Host {
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
    if spec.seccomp == SeccompMode::Default {
        linux.set_seccomp(Some(
            crate::container::seccomp::default_profile().map_err(SpecError::SeccompProfile)?,
        ));
    }
    Ok(linux)
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
/// When the spec has no network namespace (a [`NetworkMode::Host`] instance).
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
