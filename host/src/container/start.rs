//! One cold start, from an [`InstanceSpec`] to a ready [`Container`]: the
//! body of [`Shim::start`](super::Shim::start).
//!
//! The runtime spec is made first (a bad spec leaves nothing to undo), then
//! the instance directory; then, at the same time, the overlay mount with
//! `config.json`, both on the instance's tmpfs (a blocking thread), and the
//! network (unless the instance shares the host's: a namespace berth makes
//! and pins with `lo` up, [`super::netns::create_pinned`], attached to
//! berth's bridge when isolated, [`super::bridge`]); then one `runc run
//! --detach` (stdio: the output pipes, [`super::output`]), whose spec joins
//! that namespace, after which `config.json` (the app's env, secrets
//! included) is removed; then the readiness probe ([`super::probe`]). On any
//! failure everything is undone before the error is returned: a
//! [`ContainerError::Exited`] quotes the exit status and the end of the
//! process's stderr.
//!
//! Why not `runc create` + `runc start`: nothing has to happen between the
//! two any more (the namespace, and its network, exist before the
//! container), and `runc start` is a second runc process (Go runtime start,
//! state load) on every cold start.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::accounts::image_user;
use super::error::{ContainerError, Result, io_err};
use super::netns::{self, Netns};
use super::output::Output;
use super::overlay;
use super::probe::{ReadyError, wait_ready};
use super::process::{ExitWatch, watch_exit};
use super::runc::RuncError;
use super::running::{Container, Endpoint, StartTimings};
use super::spec::{self, InstanceSpec, NetworkMode};
use super::state_dir::{Paths, ShimInner, set_mode, spawn_teardown};
use crate::logs::AppLog;

/// The body of [`Shim::start`](super::Shim::start).
pub(super) async fn start_instance(
    inner: Arc<ShimInner>,
    lower_rootfs: PathBuf,
    spec: InstanceSpec,
    log: Arc<AppLog>,
) -> Result<Container> {
    let id = spec.id.clone();
    let paths = inner.paths(&id);
    if spec.network == NetworkMode::Host {
        check_port_free(&id, spec.port)?;
    }

    // Spec first: a bad spec leaves nothing to undo.
    let started = Instant::now();
    let (lower, spec_for_oci, p) = (lower_rootfs.clone(), spec.clone(), paths.clone());
    let oci = tokio::task::spawn_blocking(move || spec_and_dir(&spec_for_oci, &lower, &p))
        .await
        .map_err(|e| io_err(&id, "spec task")(io::Error::other(e)))??;
    let spec_time = started.elapsed();

    // Then the overlay and the network, at once.
    // From here on, failure must undo.
    let mut guard = Cleanup {
        inner: Arc::clone(&inner),
        id: id.clone(),
        paths: paths.clone(),
        armed: true,
    };
    let made = overlay_and_network(&inner, &lower_rootfs, &spec, &paths, oci).await;
    let (prepare_time, endpoint, network_time) = match made {
        Ok(made) => made,
        Err(e) => {
            guard.run().await;
            return Err(e);
        }
    };

    let result = launch(&inner, &spec, &paths, endpoint, &log).await;
    let mut launched = match result {
        Ok(l) => l,
        Err(e) => {
            guard.run().await;
            return Err(e);
        }
    };
    launched.split.prepare = spec_time + prepare_time;
    launched.split.network = network_time;

    let t = Instant::now();
    let ready = wait_ready(
        &spec,
        &launched.endpoint,
        &mut launched.exit,
        inner.closing.subscribe(),
    )
    .await;
    launched.split.ready = t.elapsed();
    launched.split.total = started.elapsed();
    if let Err(e) = ready {
        let e = not_ready(e, &spec, &mut launched).await;
        tracing::warn!(%id, app = %spec.app, error = %e, "container instance failed to start");
        drop(launched.endpoint);
        guard.run().await;
        return Err(e);
    }
    guard.armed = false;
    tracing::info!(%id, app = %spec.app, pid = launched.pid, endpoint = %launched.endpoint, split = %launched.split, "container instance ready");
    Ok(Container {
        id,
        port: spec.port,
        pid: launched.pid,
        inner,
        paths,
        exit: launched.exit,
        endpoint: Some(launched.endpoint),
        split: launched.split,
        stop_grace: spec.stop_grace,
        output: launched.output,
        armed: true,
    })
}

/// The first, blocking step, which leaves nothing to undo: the runtime spec
/// (the image's `User` resolved in the rootfs `lower`) with berth's files
/// and the instance's network namespace, then the instance directory.
fn spec_and_dir(spec: &InstanceSpec, lower: &Path, p: &Paths) -> Result<oci_spec::runtime::Spec> {
    let cgroups = PathBuf::from("/berth").join(&spec.id);
    let user = image_user(lower, spec.image.user.as_deref())?;
    let mut oci = spec::runtime_spec(spec, &user, Path::new("rootfs"), &cgroups)?;
    spec::add_ro_bind(&mut oci, &p.etc.join("hosts"), "/etc/hosts")?;
    spec::add_ro_bind(&mut oci, &p.etc.join("hostname"), "/etc/hostname")?;
    if spec.network != NetworkMode::None {
        spec::add_ro_bind(&mut oci, &p.etc.join("resolv.conf"), "/etc/resolv.conf")?;
    }
    if let Some(ns) = p.netns_of(spec.network) {
        spec::join_network_namespace(&mut oci, ns)?;
    }
    // Then the instance directory (nothing to undo if it exists).
    make_instance_dir(&spec.id, p)?;
    Ok(oci)
}

/// The overlay with `config.json` (on a blocking thread) and the network, at
/// once: how long the first took, the instance's endpoint and how long the
/// network took. The caller undoes what was made on failure.
async fn overlay_and_network(
    inner: &ShimInner,
    lower_rootfs: &Path,
    spec: &InstanceSpec,
    paths: &Paths,
    oci: oci_spec::runtime::Spec,
) -> Result<(std::time::Duration, Endpoint, std::time::Duration)> {
    let id = spec.id.as_str();
    let lower = lower_rootfs.canonicalize().map_err(|e| {
        io_err(
            id,
            format!("resolving the rootfs {}", lower_rootfs.display()),
        )(e)
    })?;
    let p = paths.clone();
    let id2 = id.to_owned();
    let network = spec.network;
    let prepared = async {
        let t = Instant::now();
        tokio::task::spawn_blocking(move || prepare(&id2, &lower, &p, &oci, network))
            .await
            .map_err(|e| io_err(id, "overlay task")(io::Error::other(e)))??;
        Ok::<_, ContainerError>(t.elapsed())
    };
    let networked = async {
        let t = Instant::now();
        let endpoint = network_for(inner, spec, paths).await?;
        Ok::<_, ContainerError>((endpoint, t.elapsed()))
    };
    let (prepared, networked) = tokio::join!(prepared, networked);
    let (prepare_time, (endpoint, network_time)) = (prepared?, networked?);
    Ok((prepare_time, endpoint, network_time))
}

/// Why a launched instance did not become ready, as the start's error.
async fn not_ready(e: ReadyError, spec: &InstanceSpec, launched: &mut Launched) -> ContainerError {
    match e {
        ReadyError::Exited(status) => {
            // Its processes are gone: the streams end at once.
            launched.output.finish().await;
            ContainerError::Exited {
                id: spec.id.clone(),
                status,
                stderr: launched.output.stderr_tail(),
            }
        }
        ReadyError::Closing => ContainerError::Closing(spec.id.clone()),
        ReadyError::Timeout(last_probe) => ContainerError::NotReady {
            id: spec.id.clone(),
            port: spec.port,
            timeout: spec.startup_timeout,
            last_probe,
        },
    }
}

/// Undoes a half-made instance.
struct Cleanup {
    inner: Arc<ShimInner>,
    id: String,
    paths: Paths,
    armed: bool,
}

impl Cleanup {
    async fn run(&mut self) {
        if let Err(e) = self.inner.teardown(&self.id, &self.paths).await {
            tracing::error!(id = %self.id, error = %e, "cleanup of a failed start failed; reap_leftovers will retry at next host start");
        }
        self.armed = false;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // `start_instance` panicked midway.
        if self.armed {
            spawn_teardown(
                Arc::clone(&self.inner),
                self.id.clone(),
                self.paths.clone(),
                None,
            );
        }
    }
}

/// Creates the instance directory (0700); fails if it exists.
fn make_instance_dir(id: &str, p: &Paths) -> Result<()> {
    match std::fs::create_dir(&p.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(ContainerError::AlreadyExists(id.to_owned()));
        }
        Err(e) => return Err(io_err(id, "creating the instance directory")(e)),
    }
    set_mode(&p.dir, 0o700).map_err(io_err(id, "chmod of the instance directory"))
}

/// Mounts the overlay (its writable layer on a tmpfs sized to the memory
/// limit), writes the `/etc` files and `config.json`, in the instance
/// directory. What it made is removed by the caller's teardown on failure.
fn prepare(
    id: &str,
    lower: &Path,
    p: &Paths,
    oci: &oci_spec::runtime::Spec,
    network: NetworkMode,
) -> Result<()> {
    overlay::mount_scratch(&p.scratch, spec::memory_limit(oci))
        .map_err(io_err(id, "mounting the tmpfs of the writable layer"))?;
    for d in [&p.upper, &p.work, &p.rootfs, &p.etc] {
        std::fs::create_dir_all(d).map_err(io_err(id, format!("creating {}", d.display())))?;
    }
    write_etc(&p.etc, id, network).map_err(io_err(id, "writing /etc files"))?;
    overlay::mount(lower, &p.upper, &p.work, &p.rootfs).map_err(io_err(
        id,
        format!(
            "overlay mount of {} at {}",
            lower.display(),
            p.rootfs.display()
        ),
    ))?;
    // It carries the app's environment, secrets included: made 0600 before
    // anything is written, on the tmpfs, and removed once runc has read it.
    let config = p.config();
    let json = serde_json::to_vec(oci)
        .map_err(|e| io_err(id, "serialising config.json")(io::Error::other(e)))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&config)
        .and_then(|mut f| f.write_all(&json))
        .map_err(io_err(id, "writing config.json"))
}

/// The instance's network, ready before its process runs: nothing to do on
/// the host's; otherwise a namespace of its own with `lo` up, pinned in the
/// instance directory (the spec names it), attached to the bridge when
/// isolated.
async fn network_for(inner: &ShimInner, spec: &InstanceSpec, p: &Paths) -> Result<Endpoint> {
    let id = spec.id.as_str();
    let Some(ns) = p.netns_of(spec.network) else {
        return Ok(Endpoint::Host(spec.port));
    };
    let bridge = match spec.network {
        NetworkMode::Isolated => Some(inner.network().await?),
        _ => None,
    };
    netns::create_pinned(ns)
        .await
        .map_err(io_err(id, "making the network namespace"))?;
    match bridge {
        Some(bridge) => {
            let ip = bridge.attach(id, ns, &spec.allowed_networks).await?;
            let addr = std::net::SocketAddr::from((ip, spec.port));
            Ok(Endpoint::Bridge(addr))
        }
        None => Ok(Endpoint::Inside(
            Netns::enter_pinned(ns)
                .await
                .map_err(io_err(id, "entering the network namespace"))?,
            spec.port,
        )),
    }
}

/// The files berth bind-mounts over the image's (read-only), as Docker and
/// containerd do: `/etc/hosts` (loopback names and the hostname),
/// `/etc/hostname`, and `/etc/resolv.conf`: on the host network a snapshot
/// of the host's, on the bridge the host's resolvers an instance can reach
/// through NAT (not loopback ones). A `none` instance has no network to
/// resolve names on and keeps the image's `resolv.conf`.
fn write_etc(etc: &Path, id: &str, network: NetworkMode) -> io::Result<()> {
    std::fs::write(
        etc.join("hosts"),
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{id}\n"
        ),
    )?;
    std::fs::write(etc.join("hostname"), format!("{id}\n"))?;
    if network != NetworkMode::None {
        let resolv = match std::fs::read_to_string("/etc/resolv.conf") {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let resolv = match network {
            NetworkMode::Isolated => super::bridge::instance_resolv_conf(&resolv),
            _ => resolv,
        };
        std::fs::write(etc.join("resolv.conf"), resolv)?;
    }
    Ok(())
}

/// What `launch` produced.
struct Launched {
    pid: u32,
    exit: ExitWatch,
    endpoint: Endpoint,
    split: StartTimings,
    output: Output,
}

/// `runc run --detach` with the output pipes as its stdio, then the pid and
/// a watch on its exit. `config.json` is removed once runc has returned:
/// runc reads it only at create.
async fn launch(
    inner: &ShimInner,
    spec: &InstanceSpec,
    p: &Paths,
    endpoint: Endpoint,
    log: &Arc<AppLog>,
) -> Result<Launched> {
    let id = spec.id.as_str();
    let mut split = StartTimings::default();
    let t = Instant::now();
    let (mut output, ends) =
        Output::open(log, id).map_err(io_err(id, "making the output pipes"))?;
    let ran = inner
        .runc
        .run_detached(
            id,
            &p.bundle,
            &p.pid_file,
            File::from(ends.stdout),
            File::from(ends.stderr),
        )
        .await;
    remove_config(id, &p.config())?;
    if let Err(e) = ran {
        return Err(match e {
            RuncError::Failed { status, .. } => {
                // runc said why on the stderr pipe, and holds it no more.
                output.finish().await;
                ContainerError::Create {
                    id: id.to_owned(),
                    status,
                    stderr: super::runc::humanize_log(&output.stderr_tail()),
                }
            }
            e => e.into(),
        });
    }
    // The process runs (or has already exited: it is then a zombie, our
    // child as a subreaper, until `watch_exit` reaps it, so its pid is
    // still its own).
    let pid = read_pid(&p.pid_file).map_err(io_err(id, "reading runc's pid file"))?;
    let exit = watch_exit(pid).map_err(io_err(id, "watching the container process"))?;
    split.run = t.elapsed();
    Ok(Launched {
        pid,
        exit,
        endpoint,
        split,
        output,
    })
}

/// Set by [`keep_runtime_specs`]: `config.json` stays in the bundle.
static KEEP_RUNTIME_SPECS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Leaves every instance's `config.json` in its bundle (on the instance's
/// tmpfs) for the life of this process. Only for `berth bench`, whose
/// instances carry no secrets and whose bare-runc baseline takes berth's
/// runtime spec as its template; `berth serve` never calls it.
pub fn keep_runtime_specs() {
    KEEP_RUNTIME_SPECS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Removes `config.json` (the app's environment, secrets included).
fn remove_config(id: &str, config: &Path) -> Result<()> {
    if KEEP_RUNTIME_SPECS.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    match std::fs::remove_file(config) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(id, "removing config.json")(e)),
    }
}

/// Fails when something already listens on `port` on the host.
fn check_port_free(id: &str, port: u16) -> Result<()> {
    match std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(ContainerError::PortInUse {
            id: id.to_owned(),
            port,
        }),
        Err(e) => Err(io_err(id, format!("checking port {port}"))(e)),
    }
}

fn read_pid(path: &Path) -> io::Result<u32> {
    let text = std::fs::read_to_string(path)?;
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad pid {text:?}")))
}
