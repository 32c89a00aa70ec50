//! The runc shim: starts, probes, stops and reaps container instances.
//!
//! One [`Shim`] per host owns a state directory:
//!
//! ```text
//! <state_dir>/runc/                       runc --root (container state)
//! <state_dir>/instances/<id>/upper/       overlay upper (the instance's writes)
//! <state_dir>/instances/<id>/work/        overlay work dir
//! <state_dir>/instances/<id>/bundle/      config.json, rootfs/ (the overlay mount)
//! <state_dir>/instances/<id>/etc/         hosts, hostname, resolv.conf (bind-mounted)
//! <state_dir>/instances/<id>/init.pid     runc --pid-file
//! <state_dir>/logs/<id>.stdout.log        the container's stdout (kept after stop)
//! <state_dir>/logs/<id>.stderr.log        the container's stderr, and runc's
//! ```
//!
//! # Lifecycle
//! [`Shim::start`] mounts the overlay, writes the runtime spec
//! ([`super::spec::runtime_spec`]), runs `runc create` (stdio to the log
//! files), brings `lo` up for [`Network::Isolated`], runs `runc start`, then
//! probes `127.0.0.1:PORT` (from inside the instance's namespace when
//! isolated) every 2-20 ms until it answers, the process exits
//! ([`ContainerError::Exited`], with the exit status and the end of its
//! stderr) or `startup_timeout` passes ([`ContainerError::NotReady`]). On any
//! failure everything is undone before the error is returned.
//!
//! [`Instance::stop`] follows Cloud Run: SIGTERM, up to `grace` for the
//! process to exit, SIGKILL, then `runc delete --force`, unmount, remove the
//! instance directory. An [`Instance`] dropped without `stop` is torn down the
//! same way in the background (without grace), if a tokio runtime is there.
//! [`Shim::reap_leftovers`], at host start, removes whatever a crashed run
//! left under the state directory.
//!
//! # Exit statuses
//! [`Shim::new`] makes the berth process a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), as containerd's shims are: when `runc create`
//! returns, the container's init is re-parented to berth rather than to the
//! host's init, so berth can collect its exit status (and the zombie does not
//! depend on the host's init to be reaped). Exits are noticed through a
//! pidfd, without polling. Any other orphan re-parented to berth is not
//! reaped; berth runs no other daemonising children.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::netns::Netns;
use super::overlay;
use super::runc::{Runc, RuncError};
use super::spec::{self, InstanceSpec, Network, Probe, SpecError};

/// How long to wait for the process to go after SIGKILL before deleting anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// First and longest pause between readiness probes.
const PROBE_INTERVAL: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(20));
/// Longest single probe attempt.
const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of the stderr log an [`ContainerError::Exited`] quotes.
const STDERR_TAIL_LINES: usize = 20;
const STDERR_TAIL_BYTES: u64 = 8 * 1024;

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

fn describe_exit(status: Option<ExitStatus>) -> String {
    status.map_or_else(|| "exit status unknown".to_owned(), |s| s.to_string())
}

/// The result type of this module.
pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

fn io_err(id: &str, context: impl Into<String>) -> impl FnOnce(io::Error) -> ContainerError {
    let (id, context) = (id.to_owned(), context.into());
    move |source| ContainerError::Io {
        id,
        context,
        source,
    }
}

/// Where one cold start spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColdStartSplit {
    /// Instance directories and the overlay mount.
    pub overlay: Duration,
    /// Runtime spec, `runc create` and (isolated) bringing `lo` up.
    pub create: Duration,
    /// `runc start`.
    pub start: Duration,
    /// From `runc start` returning to the first successful probe.
    pub ready: Duration,
}

impl ColdStartSplit {
    /// The whole cold start.
    pub fn total(&self) -> Duration {
        self.overlay + self.create + self.start + self.ready
    }
}

impl fmt::Display for ColdStartSplit {
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

/// Files and directories of one instance.
#[derive(Debug, Clone)]
struct Paths {
    dir: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    bundle: PathBuf,
    rootfs: PathBuf,
    etc: PathBuf,
    pid_file: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

#[derive(Debug)]
struct ShimInner {
    runc: Runc,
    instances: PathBuf,
    logs: PathBuf,
}

impl ShimInner {
    fn paths(&self, id: &str) -> Paths {
        let dir = self.instances.join(id);
        let bundle = dir.join("bundle");
        Paths {
            upper: dir.join("upper"),
            work: dir.join("work"),
            rootfs: bundle.join("rootfs"),
            pid_file: dir.join("init.pid"),
            etc: dir.join("etc"),
            bundle,
            dir,
            stdout: self.logs.join(format!("{id}.stdout.log")),
            stderr: self.logs.join(format!("{id}.stderr.log")),
        }
    }

    /// Removes everything of instance `id`: the runc container (killed if it
    /// runs), mounts under its directory, the directory. Idempotent.
    async fn teardown(&self, id: &str, paths: &Paths) -> Result<()> {
        match self.runc.delete(id, true).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let dir = paths.dir.clone();
        let id_owned = id.to_owned();
        tokio::task::spawn_blocking(move || remove_instance_dir(&id_owned, &dir))
            .await
            .map_err(|e| io_err(id, "teardown task")(io::Error::other(e)))?
    }
}

/// Unmounts whatever is mounted at or below `dir`, then removes it.
fn remove_instance_dir(id: &str, dir: &Path) -> Result<()> {
    let mounts = overlay::mounts_under(dir).map_err(io_err(id, "reading mountinfo"))?;
    for m in mounts {
        overlay::unmount(&m).map_err(io_err(id, format!("unmounting {}", m.display())))?;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(id, format!("removing {}", dir.display()))(e)),
    }
}

/// Runs container instances with runc. One per host; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shim {
    inner: Arc<ShimInner>,
}

impl Shim {
    /// A shim keeping its state under `state_dir` (created if needed) and
    /// running the runc binary at `runc` with `--root <state_dir>/runc`.
    ///
    /// Makes this process a child subreaper (see the module docs).
    ///
    /// # Errors
    /// When `runc` is not an executable file or the directories cannot be
    /// created.
    pub fn new(state_dir: &Path, runc: PathBuf) -> Result<Self> {
        check_executable(&runc).map_err(|source| ContainerError::RuncMissing {
            path: runc.clone(),
            source,
        })?;
        std::fs::create_dir_all(state_dir).map_err(io_err("", "creating the state directory"))?;
        let state_dir = state_dir
            .canonicalize()
            .map_err(io_err("", "resolving the state directory"))?;
        let root = state_dir.join("runc");
        let instances = state_dir.join("instances");
        let logs = state_dir.join("logs");
        for d in [&root, &instances, &logs] {
            std::fs::create_dir_all(d).map_err(io_err("", format!("creating {}", d.display())))?;
        }
        // runc keeps its state private; so do we (0700).
        set_mode(&root, 0o700).map_err(io_err("", "chmod of the runc root"))?;
        if let Err(e) = become_subreaper() {
            tracing::warn!(error = %e, "cannot become a child subreaper: container exit statuses will be unknown");
        }
        Ok(Self {
            inner: Arc::new(ShimInner {
                runc: Runc::new(runc, root),
                instances,
                logs,
            }),
        })
    }

    /// The runc wrapper (its `--root` is private to this shim).
    pub fn runc(&self) -> &Runc {
        &self.inner.runc
    }

    /// Removes everything a previous (crashed) run left: every container under
    /// this shim's runc root is killed and deleted, every overlay under the
    /// instances directory unmounted and every instance directory removed.
    /// Network namespaces need no reaping: runc creates them with the
    /// container and they go with it. Call it once at host start, before any
    /// [`Shim::start`]. Returns how many leftover instances were removed.
    ///
    /// # Errors
    /// When runc cannot list its containers or a leftover cannot be removed
    /// (the others are still attempted).
    pub async fn reap_leftovers(&self) -> Result<usize> {
        let inner = &self.inner;
        let mut reaped = std::collections::BTreeSet::new();
        let mut first_err = None;
        for st in inner.runc.list().await? {
            tracing::info!(id = %st.id, status = %st.status, pid = st.pid, "reaping leftover container");
            if let Err(e) = inner.runc.kill(&st.id, "KILL", true).await
                && !e.is_not_running()
                && !e.is_not_found()
            {
                tracing::debug!(id = %st.id, error = %e, "kill of a leftover failed; deleting anyway");
            }
            match inner.runc.delete(&st.id, true).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(id = %st.id, error = %e, "cannot delete leftover container");
                    first_err.get_or_insert(ContainerError::from(e));
                    continue;
                }
            }
            reaped.insert(st.id);
        }
        let dirs = inner.instances.clone();
        let removed = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Result<()>)>> {
            let mut out = Vec::new();
            let entries = std::fs::read_dir(&dirs).map_err(io_err("", "listing instances"))?;
            for entry in entries {
                let entry = entry.map_err(io_err("", "listing instances"))?;
                let id = entry.file_name().to_string_lossy().into_owned();
                out.push((id.clone(), remove_instance_dir(&id, &entry.path())));
            }
            // Mounts whose directory vanished (should not happen) go too.
            for m in overlay::mounts_under(&dirs).map_err(io_err("", "reading mountinfo"))? {
                let _ = overlay::unmount(&m);
            }
            Ok(out)
        })
        .await
        .map_err(|e| io_err("", "reaping task")(io::Error::other(e)))??;
        for (id, result) in removed {
            match result {
                Ok(()) => {
                    tracing::info!(%id, "removed leftover instance directory");
                    reaped.insert(id);
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "cannot remove leftover instance");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(reaped.len()),
        }
    }

    /// Starts one instance on `lower_rootfs` (the image's unpacked rootfs,
    /// used read-only) and waits until it is ready.
    ///
    /// `spec.startup_timeout` bounds the readiness phase (after `runc start`).
    ///
    /// # Errors
    /// [`ContainerError::Exited`] if the process exits before it is ready,
    /// [`ContainerError::NotReady`] if it is not ready in time, and others for
    /// a bad spec or a failing runc. Nothing of the instance is left behind
    /// on error.
    pub async fn start(&self, lower_rootfs: &Path, spec: InstanceSpec) -> Result<Instance> {
        spec::validate(&spec)?;
        let id = spec.id.clone();
        // On its own task: should the caller stop waiting, the start still
        // runs to its end and the instance it yields is dropped, which tears
        // it down, so nothing is left half made.
        tokio::spawn(start_instance(
            Arc::clone(&self.inner),
            lower_rootfs.to_path_buf(),
            spec,
        ))
        .await
        .map_err(|e| io_err(&id, "start task")(io::Error::other(e)))?
    }
}

/// The body of [`Shim::start`].
async fn start_instance(
    inner: Arc<ShimInner>,
    lower_rootfs: PathBuf,
    spec: InstanceSpec,
) -> Result<Instance> {
    let id = spec.id.clone();
    let paths = inner.paths(&id);
    if spec.network == Network::Host {
        check_port_free(&id, spec.port)?;
    }

    // Spec first: a bad spec leaves nothing to undo.
    let t = Instant::now();
    let lower = lower_rootfs.clone();
    let cgroups = PathBuf::from("/berth").join(&id);
    let spec_for_oci = spec.clone();
    let p = paths.clone();
    let oci = tokio::task::spawn_blocking(move || -> Result<_> {
        let accounts = spec::Accounts::read(&lower)?;
        let user = spec::resolve_user(spec_for_oci.image.user.as_deref(), &accounts)?;
        let mut oci = spec::runtime_spec(&spec_for_oci, &user, Path::new("rootfs"), &cgroups)?;
        spec::add_ro_bind(&mut oci, &p.etc.join("hosts"), "/etc/hosts")?;
        spec::add_ro_bind(&mut oci, &p.etc.join("hostname"), "/etc/hostname")?;
        if spec_for_oci.network == Network::Host {
            spec::add_ro_bind(&mut oci, &p.etc.join("resolv.conf"), "/etc/resolv.conf")?;
        }
        Ok(oci)
    })
    .await
    .map_err(|e| io_err(&id, "spec task")(io::Error::other(e)))??;
    let spec_time = t.elapsed();

    // Overlay.
    let t = Instant::now();
    let lower = lower_rootfs.canonicalize().map_err(io_err(
        &id,
        format!("resolving the rootfs {}", lower_rootfs.display()),
    ))?;
    let p = paths.clone();
    let id2 = id.clone();
    let network = spec.network;
    tokio::task::spawn_blocking(move || prepare(&id2, &lower, &p, &oci, network))
        .await
        .map_err(|e| io_err(&id, "overlay task")(io::Error::other(e)))??;
    let overlay_time = t.elapsed();

    // From here on, failure must undo.
    let mut guard = Cleanup {
        inner: Arc::clone(&inner),
        id: id.clone(),
        paths: paths.clone(),
        armed: true,
    };
    let result = launch(&inner, &spec, &paths).await;
    let mut launched = match result {
        Ok(l) => l,
        Err(e) => {
            guard.run().await;
            return Err(e);
        }
    };
    launched.split.overlay = overlay_time;
    launched.split.create += spec_time;

    let t = Instant::now();
    let ready = wait_ready(&spec, launched.netns.as_ref(), &mut launched.exit).await;
    launched.split.ready = t.elapsed();
    if let Err(e) = ready {
        let e = match e {
            ReadyError::Exited(status) => ContainerError::Exited {
                id: id.clone(),
                status,
                stderr: log_tail(&paths.stderr, launched.stderr_offset),
            },
            ReadyError::Timeout(last_probe) => ContainerError::NotReady {
                id: id.clone(),
                port: spec.port,
                timeout: spec.startup_timeout,
                last_probe,
            },
        };
        tracing::warn!(%id, app = %spec.app, error = %e, "container instance failed to start");
        drop(launched.netns.take());
        guard.run().await;
        return Err(e);
    }
    guard.armed = false;
    tracing::info!(%id, app = %spec.app, pid = launched.pid, split = %launched.split, "container instance ready");
    Ok(Instance {
        id,
        port: spec.port,
        pid: launched.pid,
        inner,
        paths,
        exit: launched.exit,
        netns: launched.netns,
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

/// Tears an instance down in the background (the caller cannot wait).
fn spawn_teardown(inner: Arc<ShimInner>, id: String, paths: Paths, exit: Option<ExitWatch>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::error!(%id, "instance dropped outside a tokio runtime: left for reap_leftovers");
        return;
    };
    rt.spawn(async move {
        if let Some(exit) = exit
            && exit.borrow().is_none()
        {
            let _ = inner.runc.kill(&id, "KILL", true).await;
        }
        if let Err(e) = inner.teardown(&id, &paths).await {
            tracing::error!(%id, error = %e, "background teardown failed; reap_leftovers will retry at next host start");
        }
    });
}

/// Creates the instance directories, mounts the overlay and writes
/// `config.json`.
fn prepare(
    id: &str,
    lower: &Path,
    p: &Paths,
    oci: &oci_spec::runtime::Spec,
    network: Network,
) -> Result<()> {
    match std::fs::create_dir(&p.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(ContainerError::AlreadyExists(id.to_owned()));
        }
        Err(e) => return Err(io_err(id, "creating the instance directory")(e)),
    }
    let made = (|| {
        set_mode(&p.dir, 0o700).map_err(io_err(id, "chmod of the instance directory"))?;
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
        oci.save(p.bundle.join("config.json"))
            .map_err(|e| io_err(id, "writing config.json")(io::Error::other(e)))
    })();
    if made.is_err() {
        let _ = remove_instance_dir(id, &p.dir);
    }
    made
}

/// The files berth bind-mounts over the image's (read-only), as Docker and
/// containerd do: `/etc/hosts` (loopback names and the hostname),
/// `/etc/hostname`, and on the host network a snapshot of the host's
/// `/etc/resolv.conf` so that name resolution works as on the host. An
/// isolated instance has no network to resolve names on and keeps the
/// image's `resolv.conf`.
fn write_etc(etc: &Path, id: &str, network: Network) -> io::Result<()> {
    std::fs::write(
        etc.join("hosts"),
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{id}\n"
        ),
    )?;
    std::fs::write(etc.join("hostname"), format!("{id}\n"))?;
    if network == Network::Host {
        let resolv = match std::fs::read("/etc/resolv.conf") {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        std::fs::write(etc.join("resolv.conf"), resolv)?;
    }
    Ok(())
}

/// What `launch` produced.
struct Launched {
    pid: u32,
    exit: ExitWatch,
    netns: Option<Netns>,
    split: ColdStartSplit,
    stderr_offset: u64,
}

/// `runc create`, netns setup, `runc start`.
async fn launch(inner: &ShimInner, spec: &InstanceSpec, p: &Paths) -> Result<Launched> {
    let id = spec.id.as_str();
    let mut split = ColdStartSplit::default();
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
        .create(id, &p.bundle, &p.pid_file, stdout, stderr)
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
    let pid = read_pid(&p.pid_file).map_err(io_err(id, "reading runc's pid file"))?;
    let exit = watch_exit(pid).map_err(io_err(id, "watching the container process"))?;
    let netns = match spec.network {
        Network::Host => None,
        Network::Isolated => Some(
            Netns::enter(pid)
                .await
                .map_err(io_err(id, "entering the container's network namespace"))?,
        ),
    };
    split.create = t.elapsed();

    let t = Instant::now();
    inner.runc.start(id).await?;
    split.start = t.elapsed();
    Ok(Launched {
        pid,
        exit,
        netns,
        split,
        stderr_offset,
    })
}

enum ReadyError {
    Exited(Option<ExitStatus>),
    Timeout(String),
}

/// Probes until ready, exited or `startup_timeout`.
async fn wait_ready(
    spec: &InstanceSpec,
    netns: Option<&Netns>,
    exit: &mut ExitWatch,
) -> Result<(), ReadyError> {
    let deadline = tokio::time::Instant::now() + spec.startup_timeout;
    // What the last completed attempt saw; an attempt cut short by the
    // deadline does not overwrite it.
    let mut last = String::from("no probe completed: the connection or the HTTP exchange hung");
    let mut pause = PROBE_INTERVAL.0;
    let probing = async {
        loop {
            match tokio::time::timeout(PROBE_ATTEMPT_TIMEOUT, probe(spec, netns)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {PROBE_ATTEMPT_TIMEOUT:?}"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(PROBE_INTERVAL.1);
        }
    };
    let exited = wait_exit(exit);
    tokio::select! {
        biased;
        status = exited => Err(ReadyError::Exited(status)),
        r = tokio::time::timeout_at(deadline, probing) => match r {
            Ok(()) => Ok(()),
            Err(_) => Err(ReadyError::Timeout(last)),
        },
    }
}

/// One readiness probe.
async fn probe(spec: &InstanceSpec, netns: Option<&Netns>) -> Result<(), String> {
    let mut stream = connect(spec.port, netns)
        .await
        .map_err(|e| format!("connect to port {}: {e}", spec.port))?;
    let Probe::Http { path } = &spec.readiness else {
        return Ok(());
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: berth-probe\r\nConnection: close\r\n\r\n",
        spec.port
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("HTTP GET {path}: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("HTTP GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    match http_status(&buf) {
        Some(code) if (200..=399).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP GET {path}: status {code}")),
        None => Err(format!(
            "HTTP GET {path}: not an HTTP response: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(64)])
        )),
    }
}

/// The status code of an HTTP/1.x status line.
fn http_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok())?
}

/// A connection to `127.0.0.1:port`, from inside `netns` when given.
async fn connect(port: u16, netns: Option<&Netns>) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match netns {
        Some(ns) => ns.connect(addr).await,
        None => {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
    }
}

/// One running container instance. Stop it with [`Instance::stop`].
#[derive(Debug)]
pub struct Instance {
    id: String,
    port: u16,
    pid: u32,
    inner: Arc<ShimInner>,
    paths: Paths,
    exit: ExitWatch,
    netns: Option<Netns>,
    split: ColdStartSplit,
    stop_grace: Duration,
    armed: bool,
}

impl Instance {
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
    pub fn cold_start_split(&self) -> ColdStartSplit {
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

impl Drop for Instance {
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

/// Waits for the exit published on `exit`. Never resolves if the watcher is
/// gone without publishing (only when the runtime shuts down).
async fn wait_exit(exit: &mut ExitWatch) -> Option<ExitStatus> {
    let published = exit.wait_for(Option::is_some).await.map(|s| s.flatten());
    match published {
        Ok(status) => status,
        Err(_) => std::future::pending().await,
    }
}

/// `None` while the process lives; `Some(status)` once it has exited, where
/// `status` is `None` if it could not be collected.
type ExitWatch = watch::Receiver<Option<Option<ExitStatus>>>;

/// Watches process `pid` through a pidfd; reaps it (it is our child, being
/// re-parented to this subreaper) and publishes its status.
fn watch_exit(pid: u32) -> io::Result<ExitWatch> {
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
fn become_subreaper() -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments; it only sets a process flag.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn check_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)?;
    if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not an executable file",
        ))
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
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
    //! Real runc, real busybox. Each test has its own state directory and
    //! unique ids, so they run in parallel.

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::super::spec::{ContainerLimits, ImageConfig};
    use super::*;

    /// The runc binary: `$BERTH_RUNC`, else `runc` on `PATH` or in `/usr/sbin`.
    fn runc_bin() -> PathBuf {
        if let Some(p) = std::env::var_os("BERTH_RUNC") {
            return PathBuf::from(p);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|d| d.join("runc"))
            .find(|p| check_executable(p).is_ok())
            .unwrap_or_else(|| {
                panic!("runc is not installed (looked on PATH and in /usr/sbin): these tests need a real runc; run the project's setup script (apt-get install runc)")
            })
    }

    struct Env {
        dir: tempfile::TempDir,
        shim: Shim,
        rootfs: PathBuf,
    }

    impl Env {
        fn state_dir(&self) -> PathBuf {
            self.dir.path().join("state")
        }
    }

    /// A failed test must not leave containers or mounts behind either.
    impl Drop for Env {
        fn drop(&mut self) {
            let state = self.state_dir();
            let runc = |args: &[&str]| {
                std::process::Command::new(self.shim.runc().binary())
                    .arg("--root")
                    .arg(state.join("runc"))
                    .args(args)
                    .output()
            };
            if let Ok(out) = runc(&["list", "-q"]) {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = runc(&["delete", "--force", id]);
                }
            }
            for m in overlay::mounts_under(&state).unwrap_or_default() {
                let _ = overlay::unmount(&m);
            }
        }
    }

    fn setup() -> Env {
        // SAFETY: geteuid has no preconditions.
        #[allow(unsafe_code)]
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "container tests must run as root (runc, overlay mounts)"
        );
        assert!(
            Path::new("/bin/busybox").is_file(),
            "/bin/busybox is missing: install busybox-static"
        );
        let dir = tempfile::tempdir().unwrap();
        let rootfs = make_rootfs(&dir.path().join("image"));
        let shim = Shim::new(&dir.path().join("state"), runc_bin()).unwrap();
        Env { dir, shim, rootfs }
    }

    /// A tiny image: static busybox, a `www` user, a web root.
    fn make_rootfs(root: &Path) -> PathBuf {
        use std::os::unix::fs::{PermissionsExt as _, symlink};
        for d in ["bin", "etc", "www", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for tool in [
            "sh", "httpd", "wget", "id", "sleep", "echo", "cat", "cp", "pwd", "hostname", "ls",
        ] {
            symlink("busybox", root.join("bin").join(tool)).unwrap();
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.join("etc/group"),
            "root:x:0:\nwww:x:33:\nstaff:x:50:www\n",
        )
        .unwrap();
        std::fs::write(root.join("www/index.html"), "hello from berth\n").unwrap();
        std::fs::set_permissions(root.join("www"), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        root.to_path_buf()
    }

    fn unique_id(prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "t{}-{prefix}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// An instance running `sh -c SCRIPT`.
    fn sh(prefix: &str, script: &str) -> InstanceSpec {
        InstanceSpec {
            id: unique_id(prefix),
            app: "hello".into(),
            revision: "hello-00001".into(),
            image: ImageConfig {
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec![script.into()],
                env: vec!["GREETING=image".into()],
                working_dir: None,
                user: None,
            },
            env: BTreeMap::new(),
            port: free_port(),
            limits: ContainerLimits::default(),
            network: Network::Host,
            readiness: Probe::Tcp,
            startup_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(5),
        }
    }

    /// `httpd` serving `/www` on `$PORT`, after `prelude`; SIGTERM stops it.
    fn httpd(prefix: &str, prelude: &str) -> InstanceSpec {
        sh(
            prefix,
            &format!("{prelude}\ntrap 'exit 0' TERM\nhttpd -f -p $PORT -h /www &\nwait"),
        )
    }

    /// `GET path` over `stream`; (status, body).
    async fn get(mut stream: TcpStream, path: &str) -> (u16, String) {
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
            .await
            .expect("response within 5 s")
            .unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = http_status(&buf).unwrap_or_else(|| panic!("not HTTP: {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    async fn host_get(port: u16, path: &str) -> (u16, String) {
        get(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .unwrap(),
            path,
        )
        .await
    }

    /// Nothing of `id` remains: no runc container, no mount, no directory, no process.
    async fn assert_gone(env: &Env, id: &str, pid: Option<u32>) {
        assert_eq!(
            env.shim.runc().state(id).await.unwrap(),
            None,
            "runc still knows {id}"
        );
        let dir = env.state_dir().join("instances").join(id);
        assert_eq!(
            overlay::mounts_under(&dir).unwrap(),
            Vec::<PathBuf>::new(),
            "mounts left"
        );
        assert!(!dir.exists(), "{} left", dir.display());
        if let Some(pid) = pid {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} (or its zombie) left"
            );
        }
    }

    /// A host loopback listener answering every connection with `ok`; counts them.
    async fn host_listener() -> (u16, Arc<AtomicU32>) {
        let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicU32::new(0));
        let h = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        });
        (port, hits)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn host_network_serves_and_sees_the_contract() {
        let env = setup();
        let (host_port, hits) = host_listener().await;
        let mut spec = httpd(
            "host",
            "echo $K_SERVICE > /www/k\n\
             echo $PORT,$K_REVISION,$K_CONFIGURATION,$GREETING,$EXTRA > /www/env\n\
             hostname > /www/hostname\n\
             cp /etc/hosts /www/hosts; cp /etc/resolv.conf /www/resolv\n\
             wget -q -O /dev/null http://127.0.0.1:$HOST_PORT/; echo $? > /www/egress\n\
             echo to-stdout; echo to-stderr >&2",
        );
        spec.env.insert("GREETING".into(), "app".into());
        spec.env.insert("EXTRA".into(), "x".into());
        spec.env.insert("HOST_PORT".into(), host_port.to_string());
        let (id, port) = (spec.id.clone(), spec.port);
        let inst = env.shim.start(&env.rootfs, spec).await.unwrap();
        let split = inst.cold_start_split();
        eprintln!("host network cold start: {split}");
        assert_eq!((inst.id(), inst.port()), (id.as_str(), port));
        assert!(!inst.has_exited());

        assert_eq!(
            host_get(port, "/").await,
            (200, "hello from berth\n".into())
        );
        assert_eq!(
            get(inst.connect().await.unwrap(), "/k").await,
            (200, "hello\n".into())
        );
        let env_line = format!("{port},hello-00001,hello,app,x\n");
        assert_eq!(host_get(port, "/env").await, (200, env_line));
        assert_eq!(host_get(port, "/hostname").await.1, format!("{id}\n"));
        assert!(
            host_get(port, "/hosts")
                .await
                .1
                .contains(&format!("127.0.1.1\t{id}\n"))
        );
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        assert_eq!(
            host_get(port, "/resolv").await.1,
            host_resolv,
            "the host's resolv.conf"
        );
        assert_eq!(
            host_get(port, "/egress").await.1,
            "0\n",
            "host network reaches host ports"
        );
        assert!(hits.load(Ordering::SeqCst) >= 1);
        let (out, err) = inst.log_paths();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "to-stdout\n");
        assert!(std::fs::read_to_string(&err).unwrap().contains("to-stderr"));
        // The image layer is untouched.
        assert!(!env.rootfs.join("www/k").exists());

        let pid = inst.pid();
        let t = Instant::now();
        inst.stop(Duration::from_secs(10)).await.unwrap();
        let took = t.elapsed();
        eprintln!("stop of a container that handles SIGTERM: {took:?}");
        assert!(
            took < Duration::from_secs(5),
            "SIGTERM should have stopped it well before the 10 s grace: {took:?}"
        );
        assert_gone(&env, &id, Some(pid)).await;
        assert!(out.exists(), "logs are kept after stop");
    }

    #[tokio::test]
    async fn user_workdir_and_limits() {
        let env = setup();
        let mut spec = httpd(
            "user",
            "id -u > /www/uid; id -g > /www/gid; id -G > /www/groups; pwd > /www/cwd",
        );
        spec.image.user = Some("www".into());
        spec.image.working_dir = Some("/tmp".into());
        spec.limits = ContainerLimits {
            memory: Some(48 << 20),
            cpus: Some(0.5),
            pids: Some(64),
        };
        let (id, port) = (spec.id.clone(), spec.port);
        let inst = env.shim.start(&env.rootfs, spec).await.unwrap();
        assert_eq!(host_get(port, "/uid").await.1, "33\n");
        assert_eq!(host_get(port, "/gid").await.1, "33\n");
        assert_eq!(host_get(port, "/groups").await.1, "33 50\n");
        assert_eq!(host_get(port, "/cwd").await.1, "/tmp\n");
        // The limits reached the cgroups (v1 hierarchies, or v2 if unified).
        let v1 = Path::new("/sys/fs/cgroup/memory/berth").join(&id);
        if v1.exists() {
            let read = |p: String| std::fs::read_to_string(p).unwrap().trim().to_owned();
            assert_eq!(
                read(format!(
                    "/sys/fs/cgroup/memory/berth/{id}/memory.limit_in_bytes"
                )),
                (48u64 << 20).to_string()
            );
            assert_eq!(
                read(format!("/sys/fs/cgroup/cpu/berth/{id}/cpu.cfs_quota_us")),
                "50000"
            );
            assert_eq!(
                read(format!("/sys/fs/cgroup/pids/berth/{id}/pids.max")),
                "64"
            );
        } else {
            let read = |f: &str| {
                std::fs::read_to_string(Path::new("/sys/fs/cgroup/berth").join(&id).join(f))
                    .unwrap()
                    .trim()
                    .to_owned()
            };
            assert_eq!(read("memory.max"), (48u64 << 20).to_string());
            assert_eq!(read("cpu.max"), "50000 100000");
            assert_eq!(read("pids.max"), "64");
        }
        inst.stop(Duration::from_secs(5)).await.unwrap();
        assert_gone(&env, &id, None).await;
        assert!(!v1.exists(), "runc delete removes the cgroup");
    }

    #[tokio::test]
    async fn ignoring_sigterm_gets_sigkill_after_the_grace() {
        let env = setup();
        // PID 1 of a pid namespace ignores signals it has no handler for; the
        // trap makes that explicit (SIG_IGN survives exec).
        let spec = sh("term", "trap '' TERM; exec httpd -f -p $PORT -h /www");
        let id = spec.id.clone();
        let inst = env.shim.start(&env.rootfs, spec).await.unwrap();
        let pid = inst.pid();
        let t = Instant::now();
        inst.stop(Duration::from_secs(1)).await.unwrap();
        let took = t.elapsed();
        eprintln!("stop of a container ignoring SIGTERM, grace 1 s: {took:?}");
        assert!(
            took >= Duration::from_secs(1),
            "killed before the grace: {took:?}"
        );
        assert!(took < Duration::from_secs(3), "stop took {took:?}");
        assert_gone(&env, &id, Some(pid)).await;
    }

    #[tokio::test]
    async fn exit_at_start_is_reported_with_stderr() {
        let env = setup();
        let spec = sh("exit", "echo 'cannot open /etc/app.conf' >&2; exit 3");
        let id = spec.id.clone();
        let t = Instant::now();
        let err = env.shim.start(&env.rootfs, spec).await.unwrap_err();
        eprintln!("exit at start reported after {:?}: {err}", t.elapsed());
        match &err {
            ContainerError::Exited { status, stderr, .. } => {
                assert_eq!(status.and_then(|s| s.code()), Some(3));
                assert!(stderr.contains("cannot open /etc/app.conf"), "{stderr}");
            }
            e => panic!("expected Exited, got {e}"),
        }
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        assert_gone(&env, &id, None).await;
    }

    #[tokio::test]
    async fn missing_executable_is_a_create_error() {
        let env = setup();
        let mut spec = sh("noexec", "");
        spec.image.entrypoint = vec!["/no/such/server".into()];
        spec.image.cmd.clear();
        let id = spec.id.clone();
        let err = env.shim.start(&env.rootfs, spec).await.unwrap_err();
        eprintln!("{err}");
        assert!(
            matches!(&err, ContainerError::Create { stderr, .. }
                if stderr.contains("/no/such/server") && !stderr.contains("level=error")),
            "{err}"
        );
        assert_gone(&env, &id, None).await;
    }

    #[tokio::test]
    async fn never_ready_times_out_and_leaves_nothing() {
        let env = setup();
        let mut spec = sh("never", "exec sleep 1000");
        spec.startup_timeout = Duration::from_millis(500);
        let id = spec.id.clone();
        let t = Instant::now();
        let err = env.shim.start(&env.rootfs, spec).await.unwrap_err();
        let took = t.elapsed();
        eprintln!("not ready after {took:?}: {err}");
        assert!(
            matches!(&err, ContainerError::NotReady { last_probe, .. } if last_probe.contains("refused")),
            "{err}"
        );
        assert!(
            took < Duration::from_secs(3),
            "{took:?} (500 ms timeout + teardown)"
        );
        assert_gone(&env, &id, None).await;
        assert!(env.shim.runc().list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn http_probe_needs_a_2xx_or_3xx() {
        let env = setup();
        let mut ok = httpd("http-ok", "");
        ok.readiness = Probe::Http {
            path: "/index.html".into(),
        };
        let inst = env.shim.start(&env.rootfs, ok).await.unwrap();
        eprintln!("HTTP probe cold start: {}", inst.cold_start_split());
        inst.stop(Duration::from_secs(5)).await.unwrap();

        let mut missing = httpd("http-404", "");
        missing.readiness = Probe::Http {
            path: "/healthz".into(),
        };
        missing.startup_timeout = Duration::from_millis(400);
        let id = missing.id.clone();
        let err = env.shim.start(&env.rootfs, missing).await.unwrap_err();
        assert!(
            matches!(&err, ContainerError::NotReady { last_probe, .. } if last_probe.contains("status 404")),
            "{err}"
        );
        assert_gone(&env, &id, None).await;
    }

    #[tokio::test]
    async fn exit_after_ready_is_observed_and_stop_still_works() {
        let env = setup();
        // httpd without -f daemonises; PID 1 (sh) exits 7 a moment later,
        // taking the whole pid namespace with it.
        let spec = sh("later", "httpd -p $PORT -h /www; sleep 0.5; exit 7");
        let id = spec.id.clone();
        let inst = env.shim.start(&env.rootfs, spec).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), inst.exited())
            .await
            .unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(7));
        assert!(inst.has_exited());
        let t = Instant::now();
        inst.stop(Duration::from_secs(5)).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "no grace wait for an exited container"
        );
        assert_gone(&env, &id, None).await;
    }

    #[tokio::test]
    async fn instances_share_only_the_image() {
        let env = setup();
        let a = httpd("a", "hostname > /www/who");
        let b = httpd("b", "hostname > /www/who");
        let (a_id, b_id, a_port, b_port) = (a.id.clone(), b.id.clone(), a.port, b.port);
        let (ia, ib) = tokio::join!(
            env.shim.start(&env.rootfs, a),
            env.shim.start(&env.rootfs, b)
        );
        let (ia, ib) = (ia.unwrap(), ib.unwrap());
        assert_eq!(host_get(a_port, "/who").await.1, format!("{a_id}\n"));
        assert_eq!(host_get(b_port, "/who").await.1, format!("{b_id}\n"));
        assert!(!env.rootfs.join("www/who").exists());

        // Same id twice; same port twice.
        let mut dup = httpd("dup", "");
        dup.id = a_id.clone();
        assert!(matches!(
            env.shim.start(&env.rootfs, dup).await,
            Err(ContainerError::AlreadyExists(_))
        ));
        let mut clash = httpd("clash", "");
        clash.port = a_port;
        assert!(matches!(
            env.shim.start(&env.rootfs, clash).await,
            Err(ContainerError::PortInUse { .. })
        ));
        assert_eq!(
            host_get(a_port, "/").await.0,
            200,
            "the first instance is unharmed"
        );
        let mut bad = httpd("bad", "");
        bad.id = "Not Valid".into();
        assert!(matches!(
            env.shim.start(&env.rootfs, bad).await,
            Err(ContainerError::Spec(SpecError::InvalidId(_)))
        ));

        let (ra, rb) = tokio::join!(
            ia.stop(Duration::from_secs(5)),
            ib.stop(Duration::from_secs(5))
        );
        ra.unwrap();
        rb.unwrap();
        // A new instance starts from the image again.
        let mut again = httpd(
            "again",
            "cat /www/who > /www/seen 2>/dev/null || echo none > /www/seen",
        );
        again.id = a_id.clone();
        let port = again.port;
        let inst = env.shim.start(&env.rootfs, again).await.unwrap();
        assert_eq!(
            host_get(port, "/seen").await.1,
            "none\n",
            "nothing persists across instances"
        );
        inst.stop(Duration::ZERO).await.unwrap();
        assert_gone(&env, &a_id, None).await;
        assert_gone(&env, &b_id, None).await;
    }

    #[tokio::test]
    async fn leftovers_of_a_crashed_run_are_reaped() {
        let env = setup();
        let spec = httpd("crash", "");
        let id = spec.id.clone();
        let inst = env.shim.start(&env.rootfs, spec).await.unwrap();
        let pid = inst.pid();
        // A crash: no stop(), no Drop.
        std::mem::forget(inst);
        // And a crash between the overlay mount and `runc create`.
        let half = env.state_dir().join("instances/half-made");
        for d in ["upper", "work", "bundle/rootfs"] {
            std::fs::create_dir_all(half.join(d)).unwrap();
        }
        overlay::mount(
            &env.rootfs,
            &half.join("upper"),
            &half.join("work"),
            &half.join("bundle/rootfs"),
        )
        .unwrap();

        let shim = Shim::new(&env.state_dir(), runc_bin()).unwrap();
        assert_eq!(shim.runc().list().await.unwrap().len(), 1);
        let t = Instant::now();
        assert_eq!(shim.reap_leftovers().await.unwrap(), 2);
        eprintln!("reap_leftovers: {:?}", t.elapsed());
        assert!(shim.runc().list().await.unwrap().is_empty());
        let instances = env.state_dir().join("instances");
        assert!(overlay::mounts_under(&instances).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(&instances).unwrap().count(), 0);
        // The forgotten instance's exit watcher reaps the killed init.
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_gone(&env, &id, Some(pid)).await;
        assert_eq!(shim.reap_leftovers().await.unwrap(), 0, "idempotent");
    }

    #[tokio::test]
    async fn dropped_instance_is_torn_down() {
        let env = setup();
        let spec = sh("dropped", "exec httpd -f -p $PORT -h /www");
        let id = spec.id.clone();
        let inst = env.shim.start(&env.rootfs, spec).await.unwrap();
        drop(inst);
        for _ in 0..200 {
            if env.shim.runc().state(&id).await.unwrap().is_none()
                && !env.state_dir().join("instances").join(&id).exists()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_gone(&env, &id, None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn isolated_network_reachable_only_through_berth() {
        let env = setup();
        let (host_port, hits) = host_listener().await;
        let mut spec = httpd(
            "iso",
            "wget -q -O /dev/null http://127.0.0.1:$HOST_PORT/ 2> /www/egress-err; echo $? > /www/egress\n\
             ls /sys/class/net > /www/ifaces",
        );
        spec.network = Network::Isolated;
        spec.env.insert("HOST_PORT".into(), host_port.to_string());
        let (id, port) = (spec.id.clone(), spec.port);
        let inst = env.shim.start(&env.rootfs, spec).await.unwrap();
        eprintln!("isolated cold start: {}", inst.cold_start_split());

        assert_eq!(
            get(inst.connect().await.unwrap(), "/").await,
            (200, "hello from berth\n".into())
        );
        assert_eq!(
            get(inst.connect().await.unwrap(), "/ifaces").await.1,
            "lo\n"
        );
        let egress = get(inst.connect().await.unwrap(), "/egress").await.1;
        let why = get(inst.connect().await.unwrap(), "/egress-err").await.1;
        assert_eq!(egress, "1\n", "wget from inside: {why}");
        assert!(why.contains("Connection refused"), "{why}");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "the host listener saw a connection"
        );
        let direct = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await;
        assert!(
            direct.is_err(),
            "the instance port is reachable from the host namespace"
        );
        // Many connections: the netns thread serves them all.
        let mut joins = Vec::new();
        for _ in 0..20 {
            let s = inst.connect().await.unwrap();
            joins.push(tokio::spawn(get(s, "/")));
        }
        for j in joins {
            assert_eq!(j.await.unwrap().0, 200);
        }
        let pid = inst.pid();
        inst.stop(Duration::from_secs(5)).await.unwrap();
        assert_gone(&env, &id, Some(pid)).await;
    }

    #[tokio::test]
    async fn cold_start_timings() {
        let env = setup();
        let mut splits = Vec::new();
        for network in [Network::Host, Network::Isolated] {
            let mut runs = Vec::new();
            for _ in 0..5 {
                let mut spec = sh("bench", "exec httpd -f -p $PORT -h /www");
                spec.network = network;
                let t = Instant::now();
                let inst = env.shim.start(&env.rootfs, spec).await.unwrap();
                let wall = t.elapsed();
                let first = get(inst.connect().await.unwrap(), "/").await;
                let first_byte = t.elapsed();
                assert_eq!(first.0, 200);
                runs.push((inst.cold_start_split(), wall, first_byte));
                let t = Instant::now();
                inst.stop(Duration::ZERO).await.unwrap();
                runs.last_mut().unwrap().2 = first_byte;
                eprintln!(
                    "{network:?}: {} | start() {wall:?}, first response {first_byte:?}, stop {:?}",
                    runs.last().unwrap().0,
                    t.elapsed()
                );
            }
            runs.sort_by_key(|r| r.2);
            let median = runs[runs.len() / 2];
            eprintln!(
                "{network:?} median: {} | first response {:?}",
                median.0, median.2
            );
            splits.push(median);
        }
        assert!(splits.iter().all(|s| s.2 < Duration::from_secs(5)));
    }

    #[test]
    fn status_lines() {
        assert_eq!(http_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(
            http_status(b"HTTP/1.0 302 Found\r\nLocation: /\r\n"),
            Some(302)
        );
        assert_eq!(http_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(http_status(b"HTTP/1.1 20"), None);
        assert_eq!(http_status(b""), None);
    }

    #[test]
    fn missing_runc_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Shim::new(dir.path(), PathBuf::from("/no/runc")).unwrap_err();
        assert!(matches!(err, ContainerError::RuncMissing { .. }));
        assert!(err.to_string().contains("install runc"), "{err}");
    }

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
