//! Garbage collection: what no app uses goes (`POST /v1/gc`), and what an
//! interrupted pull or unpack left behind goes at open.

use anyhow::Context as _;

use super::Apps;

/// What [`Apps::collect_garbage`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Collected {
    /// Blobs no app references.
    pub blobs: usize,
    /// Unpacked rootfs directories no app uses.
    pub rootfs: usize,
    /// Temporary files and directories of pulls and unpacks that did not
    /// finish.
    pub temp: usize,
}

impl Apps {
    /// Removes what no app uses: blobs of the store that no app references
    /// (roots are the pinned digests of the running apps' revisions and of
    /// every app in the state file), unpacked rootfs directories
    /// (`<data-dir>/rootfs/<digest-hex>`) of images outside those references
    /// that no instance mounts and no deploy holds, and temporary files that
    /// interrupted pulls and unpacks left (none that a running one holds).
    ///
    /// Blocking: trees are removed one entry at a time.
    ///
    /// # Errors
    /// When the store or the rootfs directory cannot be read or something
    /// cannot be removed.
    pub fn collect_garbage(&self) -> anyhow::Result<Collected> {
        let mut roots = Vec::new();
        // Rootfs directories are named by their image's manifest digest: the
        // closure of the roots holds it, and the apps' own record of it
        // keeps a rootfs whose manifest blob went missing.
        let mut images = std::collections::HashSet::new();
        let pinned = |p: &str| {
            p.rsplit_once('@')
                .and_then(|(_, d)| crate::oci::Digest::parse(d).ok())
        };
        {
            let table = self.lock_table();
            for entry in table.values() {
                roots.extend(entry.deployed.pinned.as_deref().and_then(pinned));
                images.insert(entry.deployed.sha256.clone());
                for r in entry.routed.revisions() {
                    roots.extend(r.pinned().and_then(pinned));
                }
            }
        }
        for stored in self.state.apps().values() {
            roots.extend(stored.pinned.as_deref().and_then(pinned));
            images.insert(stored.sha256.clone());
        }
        let store = self.puller.store();
        let referenced = store.closure(&roots)?;
        let blobs = store.collect(&referenced)?;
        let rootfs_dir = self.options.data_dir.join("rootfs");
        let unpacked = crate::container::rootfs::collect_garbage(&rootfs_dir, |hex| {
            let digest = format!("sha256:{hex}");
            images.contains(&digest)
                || crate::oci::Digest::parse(&digest).is_ok_and(|d| referenced.contains(&d))
        })
        .with_context(|| format!("cannot collect garbage in {}", rootfs_dir.display()))?;
        let collected = Collected {
            blobs: blobs.blobs,
            rootfs: unpacked.rootfs,
            temp: blobs.temp + unpacked.temp,
        };
        tracing::info!(
            blobs = collected.blobs,
            rootfs = collected.rootfs,
            temp = collected.temp,
            kept = referenced.len(),
            "collected garbage"
        );
        Ok(collected)
    }
}

/// Removes what a host killed mid-pull or mid-unpack left behind: temporary
/// blob files and temporary rootfs trees that nothing holds. Best effort: a
/// failure is logged and the host starts anyway.
pub(super) fn remove_leftovers(store: &crate::oci::BlobStore, rootfs_dir: &std::path::Path) {
    match store.remove_temp() {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "removed temporary files of interrupted pulls"),
        Err(e) => tracing::warn!("cannot remove temporary files of interrupted pulls: {e:#}"),
    }
    // Every finished rootfs counts as in use here: only `*.tmp-*` trees go.
    match crate::container::rootfs::collect_garbage(rootfs_dir, |_| true) {
        Ok(c) if c.temp > 0 => {
            tracing::info!(
                trees = c.temp,
                "removed temporary trees of interrupted unpacks"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot remove temporary trees of interrupted unpacks: {e:#}"),
    }
}
