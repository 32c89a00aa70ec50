//! The runc shim: starts, probes, stops and reaps container instances.
//!
//! One [`Shim`] per host owns a state directory:
//!
//! ```text
//! <state_dir>/runc/                       runc --root (container state)
//! <state_dir>/instances/<id>/upper/       overlay upper (the instance's writes)
//! <state_dir>/instances/<id>/work/        overlay work dir
//! <state_dir>/instances/<id>/bundle/      config.json, rootfs/ (the overlay mount)
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
//! isolated) every 5-20 ms until it answers, the process exits
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
const PROBE_INTERVAL: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(20));
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
    #[error("instance {id}: {context}: {source}")]
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
    #[error("container {id} was not ready on port {port} within {timeout:?} (last probe: {last_probe})")]
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
        spec::validate_id(&spec.id)?;
        let id = spec.id.clone();
        let inner = Arc::clone(&self.inner);
        let paths = inner.paths(&id);
        if spec.network == Network::Host {
            check_port_free(&id, spec.port)?;
        }

        // Spec first: a bad spec leaves nothing to undo.
        let t = Instant::now();
        let lower = lower_rootfs.to_path_buf();
        let cgroups = PathBuf::from("/berth").join(&id);
        let spec_for_oci = spec.clone();
        let oci = tokio::task::spawn_blocking(move || -> Result<_> {
            let accounts = spec::Accounts::read(&lower)?;
            let user = spec::resolve_user(spec_for_oci.image.user.as_deref(), &accounts)?;
            Ok(spec::runtime_spec(&spec_for_oci, &user, Path::new("rootfs"), &cgroups)?)
        })
        .await
        .map_err(|e| io_err(&id, "spec task")(io::Error::other(e)))??;
        let spec_time = t.elapsed();

        // Overlay.
        let t = Instant::now();
        let lower = lower_rootfs
            .canonicalize()
            .map_err(io_err(&id, format!("resolving the rootfs {}", lower_rootfs.display())))?;
        let p = paths.clone();
        let id2 = id.clone();
        tokio::task::spawn_blocking(move || prepare(&id2, &lower, &p, &oci))
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
            armed: true,
        })
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
        // `start` was cancelled midway.
        if self.armed {
            spawn_teardown(Arc::clone(&self.inner), self.id.clone(), self.paths.clone(), None);
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
fn prepare(id: &str, lower: &Path, p: &Paths, oci: &oci_spec::runtime::Spec) -> Result<()> {
    match std::fs::create_dir(&p.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(ContainerError::AlreadyExists(id.to_owned()));
        }
        Err(e) => return Err(io_err(id, "creating the instance directory")(e)),
    }
    let made = (|| {
        set_mode(&p.dir, 0o700).map_err(io_err(id, "chmod of the instance directory"))?;
        for d in [&p.upper, &p.work, &p.rootfs] {
            std::fs::create_dir_all(d).map_err(io_err(id, format!("creating {}", d.display())))?;
        }
        overlay::mount(lower, &p.upper, &p.work, &p.rootfs)
            .map_err(io_err(id, format!("overlay mount of {} at {}", lower.display(), p.rootfs.display())))?;
        oci.save(p.bundle.join("config.json")).map_err(|e| {
            io_err(id, "writing config.json")(io::Error::other(e))
        })
    })();
    if made.is_err() {
        let _ = remove_instance_dir(id, &p.dir);
    }
    made
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
                stderr: log_tail(&p.stderr, stderr_offset),
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
    let mut last = String::from("no probe completed");
    let mut pause = PROBE_INTERVAL.0;
    let probing = async {
        loop {
            let attempt = PROBE_ATTEMPT_TIMEOUT.min(deadline - tokio::time::Instant::now());
            match tokio::time::timeout(attempt, probe(spec, netns)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {attempt:?}"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 5 / 4).min(PROBE_INTERVAL.1);
        }
    };
    let exited = async {
        let status = exit.wait_for(Option::is_some).await.ok().and_then(|s| *s);
        status.unwrap_or(None)
    };
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
        let mut rx = self.exit.clone();
        let status = rx.wait_for(Option::is_some).await.ok().and_then(|s| *s);
        status.unwrap_or(None)
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
            if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                tracing::info!(%id, ?grace, "container did not exit after SIGTERM; sending SIGKILL");
                signal(runc, &id, "KILL", true).await;
                if tokio::time::timeout(KILL_WAIT, exit.wait_for(Option::is_some))
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

/// `None` while the process lives; `Some(status)` once it has exited, where
/// `status` is `None` if it could not be collected.
type ExitWatch = watch::Receiver<Option<Option<ExitStatus>>>;

/// Watches process `pid` through a pidfd; reaps it (it is our child, being
/// re-parented to this subreaper) and publishes its status.
fn watch_exit(pid: u32) -> io::Result<ExitWatch> {
    let pidfd = AsyncFd::new(pidfd_open(pid)?)?;
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
