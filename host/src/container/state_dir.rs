//! The shim's state directory: where each instance's files live ([`Paths`])
//! and how an instance is removed again ([`ShimInner::teardown`], or
//! [`spawn_teardown`] when the caller cannot wait).
//!
//! ```text
//! <state_dir>/runc/                       runc --root (container state)
//! <state_dir>/instances/<id>/scratch/     a tmpfs sized to the memory limit:
//! <state_dir>/instances/<id>/scratch/upper/   overlay upper (the instance's writes)
//! <state_dir>/instances/<id>/scratch/work/    overlay work dir
//! <state_dir>/instances/<id>/scratch/bundle/  the runc bundle: config.json (from its
//!                                              write until `runc run` returns), rootfs/
//!                                              (the overlay mount)
//! <state_dir>/instances/<id>/etc/         hosts, hostname, resolv.conf (bind-mounted)
//! <state_dir>/instances/<id>/init.pid     runc --pid-file
//! <state_dir>/instances/<id>/netns        the pinned network namespace (isolated: on the bridge)
//! <state_dir>/instances/<id>/lo-netns     the pinned network namespace (`none`: loopback only)
//! <state_dir>/cni/                        IPAM leases of the bridge network
//! ```
//!
//! The bundle lives on the instance's tmpfs because `config.json` carries
//! the app's environment, secret values included: they never reach the
//! disk. The container's stdout and stderr are pipes (`output.rs`), not
//! files.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bridge::{BridgeNetwork, BridgeOptions};
use super::error::{ContainerError, Result, io_err};
use super::overlay;
use super::process::ExitWatch;
use super::runc::Runc;
use super::spec::NetworkMode;

/// Files and directories of one instance.
#[derive(Debug, Clone)]
pub(super) struct Paths {
    pub(super) dir: PathBuf,
    /// The tmpfs holding `upper` and `work` (`overlay::mount_scratch`).
    pub(super) scratch: PathBuf,
    pub(super) upper: PathBuf,
    pub(super) work: PathBuf,
    pub(super) bundle: PathBuf,
    pub(super) rootfs: PathBuf,
    pub(super) etc: PathBuf,
    pub(super) pid_file: PathBuf,
    /// An isolated instance's namespace (attached to the bridge).
    pub(super) netns: PathBuf,
    /// A `network = "none"` instance's namespace (never attached).
    pub(super) lo_netns: PathBuf,
}

impl Paths {
    /// Where an instance of `network` has its namespace pinned (`None`:
    /// the host's).
    pub(super) fn netns_of(&self, network: NetworkMode) -> Option<&Path> {
        match network {
            NetworkMode::Isolated => Some(&self.netns),
            NetworkMode::None => Some(&self.lo_netns),
            NetworkMode::Host => None,
        }
    }

    /// The bundle's `config.json` (on the tmpfs; gone once runc has read it).
    pub(super) fn config(&self) -> PathBuf {
        self.bundle.join("config.json")
    }
}

/// What a [`Shim`](super::Shim) and each of its containers share: the runc
/// wrapper and the state directory.
#[derive(Debug)]
pub(super) struct ShimInner {
    pub(super) runc: Runc,
    /// The isolated network's settings (`None`: not set up on this host).
    pub(super) bridge_options: Option<BridgeOptions>,
    /// The isolated network, opened when first needed
    /// ([`ShimInner::network`]), or why it could not be: a host that runs
    /// no isolated instance runs no CNI plugin and no iptables.
    pub(super) bridge: tokio::sync::OnceCell<std::result::Result<BridgeNetwork, String>>,
    /// Set by `Shim::close`: no instance starts any more, and the starts
    /// waiting for readiness give up at once.
    pub(super) closing: tokio::sync::watch::Sender<bool>,
    /// Starts under way.
    pub(super) active_starts: std::sync::atomic::AtomicUsize,
    pub(super) instances: PathBuf,
    pub(super) state_dir: PathBuf,
}

impl ShimInner {
    pub(super) fn paths(&self, id: &str) -> Paths {
        let dir = self.instances.join(id);
        let scratch = dir.join("scratch");
        let bundle = scratch.join("bundle");
        Paths {
            upper: scratch.join("upper"),
            work: scratch.join("work"),
            scratch,
            rootfs: bundle.join("rootfs"),
            pid_file: dir.join("init.pid"),
            netns: dir.join("netns"),
            lo_netns: dir.join("lo-netns"),
            etc: dir.join("etc"),
            bundle,
            dir,
        }
    }

    /// Removes everything of instance `id`: the runc container (killed if it
    /// runs), its bridge attachment, mounts under its directory (the overlay,
    /// then the tmpfs under it), the directory. Idempotent.
    pub(super) async fn teardown(&self, id: &str, paths: &Paths) -> Result<()> {
        match self.runc.delete(id, true).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        self.detach(id, &paths.netns).await?;
        let dir = paths.dir.clone();
        let id_owned = id.to_owned();
        tokio::task::spawn_blocking(move || remove_instance_dir(&id_owned, &dir))
            .await
            .map_err(|e| io_err(id, "teardown task")(io::Error::other(e)))?
    }
}

impl ShimInner {
    /// The isolated network, opened at the first call (the CNI plugins
    /// checked, a crashed run's firewall chains removed; the chains and the
    /// bridge itself come with the first attach). A failure is kept and
    /// returned to every later call.
    ///
    /// # Errors
    /// [`ContainerError::Network`]: not set up on this host, or why it
    /// could not be opened.
    pub(super) async fn network(&self) -> Result<&BridgeNetwork> {
        let Some(options) = &self.bridge_options else {
            return Err(ContainerError::Network(
                "not set up on this host (use network = \"none\" or \"host\")".into(),
            ));
        };
        let opened = self
            .bridge
            .get_or_init(|| async {
                match BridgeNetwork::open(&self.state_dir, options.clone()).await {
                    Ok(net) => {
                        tracing::info!(bridge = net.bridge(), "isolated container network ready");
                        Ok(net)
                    }
                    Err(e) => {
                        tracing::warn!("isolated container network unavailable: {e}");
                        Err(e.to_string())
                    }
                }
            })
            .await;
        opened
            .as_ref()
            .map_err(|why| ContainerError::Network(why.clone()))
    }

    /// The isolated network if it has been opened.
    pub(super) fn opened_network(&self) -> Option<&BridgeNetwork> {
        self.bridge.get().and_then(|r| r.as_ref().ok())
    }

    /// Detaches the instance whose namespace is pinned at `netns` from the
    /// bridge (releasing its address), if it was attached.
    pub(super) async fn detach(&self, id: &str, netns: &Path) -> Result<()> {
        if !netns.exists() {
            return Ok(());
        }
        match self.network().await {
            Ok(bridge) => bridge.detach(id, netns).await,
            Err(e) => {
                tracing::warn!(%id, "an attached instance, but no bridge network to detach it from: {e}");
                Ok(())
            }
        }
    }
}

/// Unmounts whatever is mounted at or below `dir`, deepest first (the
/// overlay at `bundle/rootfs` before the `scratch` tmpfs holding its upper
/// layer), then removes it.
pub(super) fn remove_instance_dir(id: &str, dir: &Path) -> Result<()> {
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

/// Tears an instance down in the background (the caller cannot wait): kills
/// it first unless `exit` shows it has exited.
pub(super) fn spawn_teardown(
    inner: Arc<ShimInner>,
    id: String,
    paths: Paths,
    exit: Option<ExitWatch>,
) {
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

/// `chmod`.
pub(super) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
