//! The runc shim: starts, probes, stops and reaps container instances.
//!
//! One [`Shim`] per host owns a state directory, with a private runc `--root`
//! in it (the layout is in `state_dir.rs`).
//!
//! # Lifecycle
//! [`Shim::start`] writes the runtime spec
//! ([`super::spec::runtime_spec`]), mounts the overlay while it makes the
//! instance's network namespace (unless it shares the host's; `lo` up, and
//! for [`NetworkMode::Isolated`](super::NetworkMode::Isolated) attached to the
//! bridge), runs one `runc run --detach` (stdio: pipes berth reads into the
//! app log, `output.rs`) whose spec joins that namespace, then probes the instance's port (on the bridge,
//! from inside its namespace for `none`, on loopback for the host network)
//! until it answers, the process exits
//! ([`ContainerError::Exited`], with the exit status and the end of its
//! stderr) or `startup_timeout` passes ([`ContainerError::NotReady`]). On any
//! failure everything is undone before the error is returned (`start.rs`,
//! `probe.rs`).
//!
//! [`Container::stop`] follows Cloud Run: SIGTERM, up to `grace` for the
//! process to exit, SIGKILL, then `runc delete --force`, unmount, remove the
//! instance directory. A [`Container`] dropped without `stop` is torn down the
//! same way in the background (without grace), if a tokio runtime is there.
//! [`Shim::reap_leftovers`], at host start, removes whatever a crashed run
//! left under the state directory.
//!
//! # Exit statuses
//! [`Shim::new`] makes the berth process a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), as containerd's shims are, so that berth
//! collects the exit status of each container's init (`process.rs`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long `close` waits for starts under way.
const CLOSE_WAIT: Duration = Duration::from_secs(90);

use super::bridge::BridgeOptions;
use super::error::{ContainerError, Result, io_err};
use super::overlay;
use super::process::become_subreaper;
use super::runc::{Runc, RuncError, check_executable, inspect};
use super::running::Container;
use super::spec::{self, InstanceSpec};
use super::start::start_instance;
use super::state_dir::{ShimInner, remove_instance_dir, set_mode};
use crate::logs::AppLog;

/// Runs container instances with runc. One per host; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shim {
    inner: Arc<ShimInner>,
}

impl Shim {
    /// A shim keeping its state under `state_dir` (created if needed) and
    /// running the runc binary at `runc` with `--root <state_dir>/runc`.
    ///
    /// Makes this process a child subreaper (see the module docs). Logs
    /// runc's version (`runc --version`), and refuses a runc without the fix
    /// of CVE-2024-21626 ([`RuncVersion::check`](super::runc::RuncVersion::check)).
    ///
    /// # Errors
    /// When `runc` is not an executable file, does not run, is not a fixed
    /// version ([`RuncError::Unsupported`]), or the directories cannot be
    /// created.
    pub fn new(state_dir: &Path, runc: PathBuf) -> Result<Self> {
        check_executable(&runc).map_err(|source| ContainerError::RuncMissing {
            path: runc.clone(),
            source,
        })?;
        let version = inspect(&runc)?;
        tracing::info!(
            runc = %runc.display(),
            version = %version.version,
            commit = version.commit.as_deref().unwrap_or("-"),
            libseccomp = version.libseccomp.as_deref().unwrap_or("-"),
            "runc"
        );
        match version.check() {
            Ok(why) => tracing::debug!(%why, "runc has the fix of CVE-2024-21626"),
            Err(reason) => {
                tracing::warn!(runc = %runc.display(), %reason, "runc refused: container apps cannot run");
                return Err(RuncError::Unsupported {
                    binary: runc,
                    reason,
                }
                .into());
            }
        }
        std::fs::create_dir_all(state_dir).map_err(io_err("", "creating the state directory"))?;
        let state_dir = state_dir
            .canonicalize()
            .map_err(io_err("", "resolving the state directory"))?;
        let root = state_dir.join("runc");
        let instances = state_dir.join("instances");
        for d in [&root, &instances] {
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
                bridge_options: None,
                bridge: tokio::sync::OnceCell::new(),
                closing: tokio::sync::watch::Sender::new(false),
                active_starts: AtomicUsize::new(0),
                instances,
                state_dir,
            }),
        })
    }

    /// Gives instances with [`NetworkMode::Isolated`](super::NetworkMode::Isolated)
    /// the bridge network `options` describes. Nothing is done to the host
    /// yet: the network is opened when an isolated instance first needs it
    /// (or [`open_network`](Self::open_network) asks), so a host without
    /// one runs no CNI plugin and no iptables. When it cannot be opened,
    /// isolated instances fail to start with the reason, and the other
    /// kinds are unaffected. Call it before the shim is cloned.
    #[must_use]
    pub fn with_bridge(mut self, options: BridgeOptions) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.bridge_options = Some(options),
            None => {
                tracing::error!("with_bridge on a shared shim: isolated networking not set up");
            }
        }
        self
    }

    /// Opens the isolated network now if it is not open yet (a deploy of an
    /// isolated app calls it, so that its first cold start does not pay
    /// for it).
    ///
    /// # Errors
    /// [`ContainerError::Network`]: why it cannot be opened (said once in
    /// the log too).
    pub async fn open_network(&self) -> Result<()> {
        self.inner.network().await.map(|_| ())
    }

    /// Closes the shim: no instance starts any more; the starts under way
    /// finish (and are torn down when their caller is gone); whatever is
    /// still there is removed as [`reap_leftovers`](Self::reap_leftovers)
    /// does; then what the shim added to the host (its firewall chains and
    /// the bridge) goes. Call it when the host stops, after its revisions
    /// have stopped their instances: this catches what they missed (a start
    /// cut short by a signal, a panicked task).
    pub async fn close(&self) {
        self.inner.closing.send_replace(true);
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        while self.inner.active_starts.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match self.reap_leftovers().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "removed instances still there at close"),
            Err(e) => tracing::warn!("removing instances at close: {e}"),
        }
        if let Some(bridge) = self.inner.opened_network() {
            bridge.close().await;
        }
    }

    /// The runc wrapper (its `--root` is private to this shim).
    pub fn runc(&self) -> &Runc {
        &self.inner.runc
    }

    /// Removes everything a previous (crashed) run left: every container under
    /// this shim's runc root is killed and deleted, every overlay under the
    /// instances directory unmounted and every instance directory removed.
    /// An isolated instance's pinned network namespace is detached from the
    /// bridge (if the bridge network is set up) and unmounted with the rest.
    /// Call it once at host start, before any
    /// [`Shim::start`]. Returns how many leftover instances were removed.
    ///
    /// # Errors
    /// When runc cannot list its containers or a leftover cannot be removed
    /// (the others are still attempted).
    pub async fn reap_leftovers(&self) -> Result<usize> {
        let inner = &self.inner;
        // A crashed run's bridge: the network is opened (its stale firewall
        // chains go now) so that `close` removes the bridge.
        if let Some(options) = &inner.bridge_options
            && Path::new("/sys/class/net").join(&options.bridge).exists()
            && let Err(e) = inner.network().await
        {
            tracing::warn!("cannot clean up the bridge a crashed run left: {e}");
        }
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
        if let Ok(entries) = std::fs::read_dir(&inner.instances) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if let Err(e) = inner.detach(&id, &entry.path().join("netns")).await {
                    tracing::warn!(%id, error = %e, "cannot detach a leftover instance from the bridge");
                }
            }
        }
        let dirs = inner.instances.clone();
        let old_logs = inner.state_dir.join("logs");
        let removed = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Result<()>)>> {
            // Raw output files of a berth from before the output pipes.
            match std::fs::remove_dir_all(&old_logs) {
                Ok(()) => tracing::info!(dir = %old_logs.display(), "removed the raw container logs of an older berth"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(dir = %old_logs.display(), error = %e, "cannot remove the raw container logs of an older berth"),
            }
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
    /// used read-only) and waits until it is ready. Its stdout and stderr
    /// go, line by line and tagged with its id, to `log` (`output.rs`).
    ///
    /// `spec.startup_timeout` bounds the readiness phase (after `runc start`).
    ///
    /// # Errors
    /// [`ContainerError::Exited`] if the process exits before it is ready,
    /// [`ContainerError::NotReady`] if it is not ready in time, and others for
    /// a bad spec or a failing runc. Nothing of the instance is left behind
    /// on error.
    pub async fn start(
        &self,
        lower_rootfs: &Path,
        spec: InstanceSpec,
        log: Arc<AppLog>,
    ) -> Result<Container> {
        spec::validate(&spec)?;
        let id = spec.id.clone();
        if *self.inner.closing.borrow() {
            return Err(ContainerError::Closing(id));
        }
        // Counted until done, so that `close` waits for it.
        self.inner.active_starts.fetch_add(1, Ordering::AcqRel);
        let inner = Arc::clone(&self.inner);
        let lower = lower_rootfs.to_path_buf();
        // On its own task: should the caller stop waiting, the start still
        // runs to its end and the instance it yields is dropped, which tears
        // it down, so nothing is left half made.
        tokio::spawn(async move {
            let result = start_instance(Arc::clone(&inner), lower, spec, log).await;
            inner.active_starts.fetch_sub(1, Ordering::AcqRel);
            result
        })
        .await
        .map_err(|e| io_err(&id, "start task")(io::Error::other(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_runc_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Shim::new(dir.path(), PathBuf::from("/no/runc")).unwrap_err();
        assert!(matches!(err, ContainerError::RuncMissing { .. }));
        assert!(err.to_string().contains("install runc"), "{err}");
    }

    /// A stand-in `runc` that prints `output` for `--version` (and exits 1
    /// when `output` is empty).
    fn fake_runc(dir: &Path, output: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join("runc");
        let body = if output.is_empty() {
            "echo 'fatal: broken' >&2; exit 1".to_owned()
        } else {
            format!("printf '%s' '{output}'")
        };
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn an_unfixed_or_broken_runc_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let old = fake_runc(
            dir.path(),
            "runc version 1.1.11\ncommit: v1.1.11-0-g4bccb38c\nspec: 1.0.2-dev\n",
        );
        let err = Shim::new(&dir.path().join("state"), old).unwrap_err();
        assert!(
            matches!(err, ContainerError::Runc(RuncError::Unsupported { .. })),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("1.1.11") && msg.contains("CVE-2024-21626") && msg.contains("1.1.12"),
            "{msg}"
        );
        assert!(!dir.path().join("state").exists(), "nothing made");

        let dir = tempfile::tempdir().unwrap();
        let broken = fake_runc(dir.path(), "");
        let err = Shim::new(&dir.path().join("state"), broken).unwrap_err();
        assert!(err.to_string().contains("fatal: broken"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let patched = fake_runc(
            dir.path(),
            "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nlibseccomp: 2.5.4\n",
        );
        Shim::new(&dir.path().join("state"), patched).unwrap();
    }
}
