//! One cold start, from an [`InstanceSpec`] to a ready [`Container`]: the
//! body of [`Shim::start`](super::Shim::start).
//!
//! The runtime spec is made first (a bad spec leaves nothing to undo), then
//! the instance directory; then, at the same time, the overlay mount with
//! `config.json` (a blocking thread) and the network (unless the instance
//! shares the host's: a namespace berth makes and pins with `lo` up,
//! [`super::netns::create_pinned`], attached to berth's bridge when
//! isolated, [`super::bridge`]); then one `runc run --detach` (stdio to the
//! log files), whose spec joins that namespace; then the readiness probe
//! ([`super::probe`]). On any failure everything is undone before the error
//! is returned: a [`ContainerError::Exited`] quotes the exit status and the
//! end of the process's stderr.
//!
//! Why not `runc create` + `runc start`: nothing has to happen between the
//! two any more (the namespace, and its network, exist before the
//! container), and `runc start` is a second runc process (Go runtime start,
//! state load) on every cold start.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::accounts::{Accounts, resolve_user};
use super::error::{ContainerError, Result, io_err};
use super::netns::{self, Netns};
use super::overlay;
use super::probe::{ReadyError, wait_ready};
use super::process::{ExitWatch, watch_exit};
use super::runc::RuncError;
use super::running::{Container, Endpoint, StartTimings};
use super::spec::{self, InstanceSpec, Network};
use super::state_dir::{Paths, ShimInner, set_mode, spawn_teardown};

/// How much of the stderr log an [`ContainerError::Exited`] quotes.
const STDERR_TAIL_LINES: usize = 20;
const STDERR_TAIL_BYTES: u64 = 8 * 1024;

/// The body of [`Shim::start`](super::Shim::start).
pub(super) async fn start_instance(
    inner: Arc<ShimInner>,
    lower_rootfs: PathBuf,
    spec: InstanceSpec,
) -> Result<Container> {
    let id = spec.id.clone();
    let paths = inner.paths(&id);
    if spec.network == Network::Host {
        check_port_free(&id, spec.port)?;
    }

    // Spec first: a bad spec leaves nothing to undo.
    let started = Instant::now();
    let t = started;
    let lower = lower_rootfs.clone();
    let cgroups = PathBuf::from("/berth").join(&id);
    let spec_for_oci = spec.clone();
    let p = paths.clone();
    let id2 = id.clone();
    let oci = tokio::task::spawn_blocking(move || -> Result<_> {
        let accounts = Accounts::read(&lower)?;
        let user = resolve_user(spec_for_oci.image.user.as_deref(), &accounts)?;
        let mut oci = spec::runtime_spec(&spec_for_oci, &user, Path::new("rootfs"), &cgroups)?;
        spec::add_ro_bind(&mut oci, &p.etc.join("hosts"), "/etc/hosts")?;
        spec::add_ro_bind(&mut oci, &p.etc.join("hostname"), "/etc/hostname")?;
        if spec_for_oci.network != Network::None {
            spec::add_ro_bind(&mut oci, &p.etc.join("resolv.conf"), "/etc/resolv.conf")?;
        }
        if let Some(ns) = p.netns_of(spec_for_oci.network) {
            spec::join_network_namespace(&mut oci, ns)?;
        }
        // Then the instance directory (nothing to undo if it exists).
        make_instance_dir(&id2, &p)?;
        Ok(oci)
    })
    .await
    .map_err(|e| io_err(&id, "spec task")(io::Error::other(e)))??;
    let spec_time = t.elapsed();

    // Then the overlay and the network, at once.
    // From here on, failure must undo.
    let mut guard = Cleanup {
        inner: Arc::clone(&inner),
        id: id.clone(),
        paths: paths.clone(),
        armed: true,
    };
    let lower = match lower_rootfs.canonicalize() {
        Ok(l) => l,
        Err(e) => {
            guard.run().await;
            return Err(io_err(
                &id,
                format!("resolving the rootfs {}", lower_rootfs.display()),
            )(e));
        }
    };
    let p = paths.clone();
    let id2 = id.clone();
    let network = spec.network;
    let prepared = async {
        let t = Instant::now();
        tokio::task::spawn_blocking(move || prepare(&id2, &lower, &p, &oci, network))
            .await
            .map_err(|e| io_err(&id, "overlay task")(io::Error::other(e)))??;
        Ok::<_, ContainerError>(t.elapsed())
    };
    let networked = async {
        let t = Instant::now();
        let endpoint = network_for(&inner, &spec, &paths).await?;
        Ok::<_, ContainerError>((endpoint, t.elapsed()))
    };
    let (prepared, networked) = tokio::join!(prepared, networked);
    let (prepare_time, (endpoint, network_time)) = match (prepared, networked) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(e), _) | (_, Err(e)) => {
            guard.run().await;
            return Err(e);
        }
    };

    let result = launch(&inner, &spec, &paths, endpoint).await;
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
        let e = match e {
            ReadyError::Exited(status) => ContainerError::Exited {
                id: id.clone(),
                status,
                stderr: log_tail(&paths.stderr, launched.stderr_offset),
            },
            ReadyError::Closing => ContainerError::Closing(id.clone()),
            ReadyError::Timeout(last_probe) => ContainerError::NotReady {
                id: id.clone(),
                port: spec.port,
                timeout: spec.startup_timeout,
                last_probe,
            },
        };
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
        armed: true,
    })
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
    network: Network,
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
    let config = p.bundle.join("config.json");
    oci.save(&config)
        .map_err(|e| io_err(id, "writing config.json")(io::Error::other(e)))?;
    // It carries the app's environment, secrets included.
    set_mode(&config, 0o600).map_err(io_err(id, "chmod of config.json"))
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
        Network::Isolated => Some(inner.bridge.as_ref().ok_or_else(|| {
            ContainerError::Network(inner.bridge_unavailable.clone().unwrap_or_else(|| {
                "not set up on this host (use network = \"none\" or \"host\")".into()
            }))
        })?),
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
fn write_etc(etc: &Path, id: &str, network: Network) -> io::Result<()> {
    std::fs::write(
        etc.join("hosts"),
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{id}\n"
        ),
    )?;
    std::fs::write(etc.join("hostname"), format!("{id}\n"))?;
    if network != Network::None {
        let resolv = match std::fs::read_to_string("/etc/resolv.conf") {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let resolv = match network {
            Network::Isolated => super::bridge::instance_resolv_conf(&resolv),
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
    stderr_offset: u64,
}

/// `runc run --detach`, then the pid and a watch on its exit.
async fn launch(
    inner: &ShimInner,
    spec: &InstanceSpec,
    p: &Paths,
    endpoint: Endpoint,
) -> Result<Launched> {
    let id = spec.id.as_str();
    let mut split = StartTimings::default();
    let t = Instant::now();
    let open_log = |path: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(id, format!("opening {}", path.display())))
    };
    let stdout = open_log(&p.stdout)?;
    let stderr = open_log(&p.stderr)?;
    let stderr_offset = stderr.metadata().map(|m| m.len()).unwrap_or(0);
    if let Err(e) = inner
        .runc
        .run_detached(id, &p.bundle, &p.pid_file, stdout, stderr)
        .await
    {
        return Err(match e {
            RuncError::Failed { status, .. } => ContainerError::Create {
                id: id.to_owned(),
                status,
                stderr: super::runc::humanize_log(&log_tail(&p.stderr, stderr_offset)),
            },
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
        stderr_offset,
    })
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

/// The last lines written to `path` after `from`.
fn log_tail(path: &Path, from: u64) -> String {
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        let start = from.max(len.saturating_sub(STDERR_TAIL_BYTES));
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.take(STDERR_TAIL_BYTES).read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let lines: Vec<&str> = text.lines().collect();
        let skip = lines.len().saturating_sub(STDERR_TAIL_LINES);
        Ok(lines[skip..].join("\n"))
    };
    match read() {
        Ok(t) if t.trim().is_empty() => "(nothing)".to_owned(),
        Ok(t) => t,
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tails() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("err.log");
        let old = "old run\n".repeat(3);
        let new: String = (0..30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, format!("{old}{new}")).unwrap();
        let tail = log_tail(&p, old.len() as u64);
        assert!(
            tail.starts_with("line 10\n") && tail.ends_with("line 29"),
            "{tail}"
        );
        std::fs::write(&p, &old).unwrap();
        assert_eq!(log_tail(&p, old.len() as u64), "(nothing)");
    }
}
