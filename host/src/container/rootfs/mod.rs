//! Image layers into a root filesystem: the OCI image-spec changeset rules
//! (`layer.md`), applied without ever writing outside the rootfs.
//!
//! [`apply_layer`] applies one layer (a plain, gzip or zstd tar archive, see
//! [`Compression`]) onto a directory; [`unpack_image`] applies all of an image's
//! layers, in manifest order, into `DEST.tmp-XXXXXX` and renames that to `DEST`
//! only once every layer has been applied and synced, so an interrupted or failed
//! unpack never looks complete and an existing `DEST` is taken as done. Both
//! stay within [`UnpackLimits`], so that no archive can take the host down
//! (see [Limits](#limits)); [`collect_garbage`] removes what no one uses.
//!
//! # Rules
//! The entries of a layer are applied in archive order:
//! - Something already at an entry's path is removed first (a whole tree, for a
//!   directory), except that a directory entry onto an existing directory only
//!   updates its owner, mode, mtime and xattrs, and keeps its children.
//! - Regular files, directories, symlinks and FIFOs are created with their mode
//!   (setuid, setgid and sticky bits included), mtime, owner and xattrs.
//! - A hardlink is linked to its target, which must already exist inside the
//!   rootfs and not be a directory.
//! - `DIR/.wh.NAME` (a whiteout) removes `DIR/NAME` of the lower layers, a file
//!   or a whole tree. `DIR/.wh..wh..opq` (an opaque marker) removes every child
//!   of `DIR` of the lower layers; `DIR` is resolved like any entry's parent.
//!   Neither ever appears in the rootfs. Other `.wh..wh.*` names (aufs metadata
//!   such as `.wh..wh.plnk/`) are skipped.
//! - Character and block devices are **skipped** with a warning (what was at the
//!   path is still removed); pax global headers are skipped; any other entry
//!   type (GNU volume or multi-volume headers, …) is refused
//!   ([`UnpackError::InvalidEntry`]).
//!
//! A whiteout or opaque marker only ever hides what *lower* layers put there
//! (image-spec: "files that are present in the same layer as a whiteout file can
//! only be hidden by whiteout files in subsequent layers"). The layer remembers
//! every path it has put in place, with their ancestors; removal skips those and
//! descends into them instead, so the outcome does not depend on whether a marker
//! comes before or after the layer's own entries in the archive. It keeps them
//! as a trie of components (`written`): one node per new component, never a
//! copy of every ancestor.
//!
//! Owner: applied with `fchown` when running as root (an error is an error);
//! otherwise attempted and `EPERM`/`EINVAL` ignored (rootless: everything ends up
//! owned by the caller). Missing parent directories are created with mode 0755.
//! Directory modes and mtimes are applied at the end of the layer, deepest first,
//! so that writing a directory's children neither changes its mtime afterwards nor
//! is refused by a read-only mode. xattrs come from `SCHILY.xattr.*` pax records:
//! only `user.*` and `security.capability` (file capabilities, e.g. `ping`) are
//! applied; `trusted.*` (which overlayfs interprets, and a rootfs is an overlay
//! lower layer), `system.*` and other `security.*` names are dropped; a file system
//! that refuses them gets a warning.
//!
//! # Containment
//! - **Paths** are normalized lexically: a leading `/` is stripped (the entry
//!   `/etc/x` lands at `ROOTFS/etc/x`), empty and `.` components are dropped, and
//!   `..` removes the previous component; an entry whose path would leave the
//!   rootfs (`../x`, `a/../../x`) is refused with [`UnpackError::Escape`].
//! - **No write goes through a symlink.** Every path is resolved from a descriptor
//!   of the rootfs, one component at a time, with `O_NOFOLLOW|O_DIRECTORY`, and
//!   every change is made with a `*at` call relative to the parent found that way
//!   (`openat`, `mkdirat`, `symlinkat`, `linkat`, `unlinkat`, …). An entry (or a
//!   whiteout, or a hardlink target) with a symlink among its parent components is
//!   refused with [`UnpackError::Escape`], wherever that symlink points. The last
//!   component is never followed either: what exists there is removed (`unlinkat`,
//!   or a recursive removal that never follows symlinks) and files are created with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW`, so an existing file, symlink or hardlink is never
//!   written through.
//! - **Symlinks** are created exactly as given (absolute, or climbing with `..`):
//!   this module never follows them, and in the container the kernel resolves them
//!   inside the container's root. Host code that later reads a file from a rootfs
//!   must resolve it the same way (e.g. `openat2` with `RESOLVE_IN_ROOT`).
//! - **Hardlinks**: the target is normalized like an entry path (so `/etc/passwd`
//!   means `ROOTFS/etc/passwd` and `../x` is an escape), reached without following
//!   a symlink, and linked with `linkat` without `AT_SYMLINK_FOLLOW` (a hardlink to
//!   a symlink links the symlink itself). A hardlink's header metadata is not
//!   applied: the inode is its target's.
//! - **Device nodes** are never created: runc gives a container its own `/dev`,
//!   and a device node in an image is at best useless and at worst a door to the
//!   host's devices. They are skipped with a warning, as rootless unpackers do, so
//!   that old images with a populated `/dev` still unpack. FIFOs are created: a
//!   named pipe reaches nothing outside the rootfs.
//!
//! # Limits
//! An image is unpacked within [`UnpackLimits`] (defaults in brackets); going
//! over one is [`UnpackError::Limit`], which names the limit, inside
//! [`UnpackError::Layer`], which names the layer, and the temporary directory
//! is removed:
//! - **special headers** (pax extended and global headers, GNU long names and
//!   links, GNU sparse maps) at most `max_header_bytes` [1 MiB], refused at
//!   their header before a byte of them is read (`limits::TarGuard` reads the
//!   stream ahead of the `tar` crate, which would read them whole);
//! - **paths** and link targets at most `max_path_bytes` [4096] long and
//!   paths at most `max_depth` [256] components deep, checked before anything
//!   is created;
//! - **entries** of the whole image at most `max_entries` [1,000,000]; the
//!   paths one layer records (its entries and the directories they imply)
//!   too, which bounds the layer's bookkeeping;
//! - **bytes** the whole image decompresses to (headers, data, holes of
//!   sparse files, whatever follows the end of an archive) at most
//!   `max_bytes` [8 GiB]; an entry declaring more than is left is refused at
//!   its header.
//!
//! So memory is bounded by the copy buffers, a few special headers and the
//! trie of one layer; disk by `max_bytes` and `max_entries`. Errors and log
//! lines quote names from the archive only through [`excerpt`] (200
//! characters, escaped). zstd's decoder may take the window a frame asks
//! for, up to its own default maximum (128 MiB).
//!
//! The property harness `fuzz` (`cargo test -p berth --lib
//! container::rootfs::fuzz`) feeds random hostile images to [`unpack_image`]
//! and checks that nothing panics, nothing outside the destination changes,
//! a failure leaves nothing, the heap stays bounded and error texts stay
//! short; it runs 1024 images, `BERTH_FUZZ_CASES=100000` runs more.
//!
//! # Not covered
//! Inode quotas beyond the entry count, uid/gid remapping (user namespaces),
//! `security.selinux` labels.
//!
//! # Layout
//! - this module: [`Compression`], [`LayerStats`], [`UnpackError`],
//!   [`apply_layer`] and [`unpack_image`], and the state of one layer being
//!   applied (`Applier`), whose methods the files below provide;
//! - `limits`: [`UnpackLimits`], [`LimitExceeded`], [`excerpt`], an image's
//!   running totals and the guard that reads the tar stream ahead of the
//!   `tar` crate;
//! - `written`: the trie of what one layer has put in place;
//! - `lease`: [`RootfsLease`] (a shared lock on a rootfs, or on an unpack's
//!   temporary directory) and [`collect_garbage`];
//! - `apply`: the `Applier`: one layer's entries put in place, one method per
//!   entry type;
//! - `meta`: what an entry carries besides its contents (owner, mode, times,
//!   xattrs), read from the header and pax records, and applied;
//! - `path`: entry paths normalized, and resolved one component at a time
//!   from the rootfs descriptor without following a symlink;
//! - `whiteout`: whiteouts and opaque directories, removing what lower layers
//!   put there, and tree removal (iterative, so depth cannot exhaust the
//!   stack);
//! - tests: `tests` (the rules), `hostile` (each limit), `fuzz` (the
//!   property harness), `craft` (hostile archives, a heap measure).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

use rustix::fs::{Mode, OFlags, Timespec};

mod apply;
mod lease;
mod limits;
mod meta;
mod path;
mod whiteout;
mod written;

pub use lease::{Collected, RootfsLease, collect_garbage};
use limits::Tally;
pub use limits::{EXCERPT_CHARS, LimitExceeded, UnpackLimits, excerpt};
use written::{NodeId, Written};

#[cfg(test)]
mod craft;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod hostile;
#[cfg(test)]
mod tests;

/// Write buffer for file contents (and read buffer for plain tar streams).
const COPY_BUFFER: usize = 128 * 1024;

/// The state of one layer being applied. Declared here, and given its
/// methods by `apply`, `meta`, `path` and `whiteout`, so that those files
/// use each other one way only.
#[derive(Debug)]
struct Applier {
    /// The rootfs, opened `O_PATH`: every path is resolved from here.
    root: OwnedFd,
    /// Running as root: ownership must be applied.
    privileged: bool,
    /// The caps on paths and on what the layer records.
    limits: UnpackLimits,
    stats: LayerStats,
    /// Every path this layer has put in place, and all their ancestors: what
    /// whiteouts and opaque markers of this layer must not remove.
    written: Written,
    /// Mode and mtime of this layer's directories, applied by [`Self::finish`].
    deferred_dirs: HashMap<NodeId, (Mode, Timespec)>,
    /// This layer's paths below which a whiteout or opaque marker has removed
    /// everything lower layers put there: a repeated marker is not walked
    /// again (a layer of the same marker a million times would otherwise
    /// list the same directory a million times).
    cleaned: HashSet<NodeId>,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar archive.
    None,
    /// gzip; several concatenated members are read as one stream.
    Gzip,
    /// Zstandard; several concatenated frames are read as one stream.
    Zstd,
}

impl Compression {
    /// The compression of a layer with this media type, or `None` if it is not
    /// an OCI or Docker image layer type. Parameters (`; …`) and ASCII case are
    /// ignored.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let essence = media_type.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The compression that the first bytes of a blob show: gzip or zstd by
    /// their magic numbers, [`Compression::None`] for a tar whose first header
    /// carries the `ustar` magic (POSIX and GNU tars), and `None` when the bytes
    /// say nothing (too short, an empty or pre-POSIX tar, or not a layer at all).
    ///
    /// 512 bytes are enough; [`unpack_image`] passes what one buffered read gives.
    pub fn detect(prefix: &[u8]) -> Option<Self> {
        const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
        const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
        if prefix.starts_with(GZIP_MAGIC) {
            Some(Self::Gzip)
        } else if prefix.starts_with(ZSTD_MAGIC) {
            Some(Self::Zstd)
        } else if prefix.get(257..262) == Some(b"ustar") {
            Some(Self::None)
        } else {
            None
        }
    }
}

/// What applying one layer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerStats {
    /// Archive entries read (pax and GNU long-name headers not counted).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated (including the rootfs itself for `./`).
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// FIFOs created.
    pub fifos: u64,
    /// Whiteout entries applied (`.wh.NAME`).
    pub whiteouts: u64,
    /// Opaque markers applied (`.wh..wh..opq`).
    pub opaque_dirs: u64,
    /// Entries skipped: device nodes, aufs metadata, pax global headers.
    pub skipped: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Why a layer could not be applied.
///
/// Entry errors name the entry's path as it is written in the archive (never
/// longer than [`UnpackLimits::max_path_bytes`]); their messages quote at
/// most [`EXCERPT_CHARS`] characters of it, escaped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// The entry would write (or link, or delete) outside the rootfs, or through
    /// a symlink.
    #[error("layer entry {} escapes the rootfs: {reason}", shown(path))]
    Escape {
        /// The entry's path as written in the archive.
        path: PathBuf,
        /// What escapes, and how.
        reason: String,
    },

    /// The entry is malformed or of a type that is never unpacked.
    #[error("invalid layer entry {}: {reason}", shown(path))]
    InvalidEntry {
        /// The entry's path as written in the archive.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A file system operation for an entry failed.
    #[error("layer entry {}: {context}", shown(path))]
    Entry {
        /// The entry's path as written in the archive.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The layer could not be read: an I/O error, corrupt compression, or a
    /// malformed or truncated tar stream.
    #[error("cannot read layer")]
    Read(#[source] io::Error),

    /// A file system operation outside any entry (the rootfs, a blob, the
    /// temporary directory, the final rename) failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The layer (or the image) goes over one of its [`UnpackLimits`].
    #[error("{0}")]
    Limit(LimitExceeded),

    /// The host asked the unpack to stop ([`unpack_image_until`]); nothing
    /// of it was left behind.
    #[error("the unpack was stopped (the host is stopping)")]
    Stopped,

    /// One of an image's layers failed ([`unpack_image`]).
    #[error("layer {index} ({}) of the image", blob.display())]
    Layer {
        /// The layer's position in the manifest, from 0.
        index: usize,
        /// The blob it was read from.
        blob: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<UnpackError>,
    },
}

/// An entry path as error messages quote it: an [`excerpt`].
fn shown(path: &Path) -> String {
    excerpt(path.as_os_str().as_bytes())
}

impl UnpackError {
    fn escape(path: &Path, reason: impl Into<String>) -> Self {
        Self::Escape {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        Self::InvalidEntry {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    fn entry(path: &Path, context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Self::Entry {
            path: path.to_owned(),
            context: context.into(),
            source: source.into(),
        }
    }

    fn io(op: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source: source.into(),
        }
    }
}

/// Applies one layer onto `rootfs`, an existing directory holding the layers
/// below it (or nothing, for the first), within the default [`UnpackLimits`].
///
/// `compression` is taken as given; see [`Compression::detect`] to sniff it. The
/// stream is read to its end, so that a corrupt compressed stream is noticed even
/// after the tar's end-of-archive marker.
///
/// On error the rootfs is left partly applied: unpack into a scratch directory
/// and discard it on failure, as [`unpack_image`] does.
///
/// # Errors
/// An entry that escapes or is malformed, a limit exceeded
/// ([`UnpackError::Limit`]), a layer that cannot be read or a file system
/// operation that fails.
pub fn apply_layer(
    rootfs: &Path,
    layer: impl Read,
    compression: Compression,
) -> Result<LayerStats, UnpackError> {
    apply_layer_with_limits(rootfs, layer, compression, &UnpackLimits::default())
}

/// [`apply_layer`] within `limits` (the layer counts as a whole image).
///
/// # Errors
/// As [`apply_layer`].
pub fn apply_layer_with_limits(
    rootfs: &Path,
    layer: impl Read,
    compression: Compression,
    limits: &UnpackLimits,
) -> Result<LayerStats, UnpackError> {
    apply_counted(rootfs, layer, compression, &Tally::new(*limits))
}

/// Applies one layer of an image whose totals so far are in `tally`.
fn apply_counted(
    rootfs: &Path,
    layer: impl Read,
    compression: Compression,
    tally: &Tally<'_>,
) -> Result<LayerStats, UnpackError> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::io("open rootfs", rootfs, e))?;
    let stats = match compression {
        Compression::None => {
            apply::apply_tar(root, BufReader::with_capacity(COPY_BUFFER, layer), tally)
        }
        Compression::Gzip => {
            apply::apply_tar(root, flate2::read::MultiGzDecoder::new(layer), tally)
        }
        Compression::Zstd => apply::apply_tar(
            root,
            zstd::stream::read::Decoder::new(layer).map_err(UnpackError::Read)?,
            tally,
        ),
    }?;
    tracing::debug!(rootfs = %rootfs.display(), ?compression, ?stats, "applied layer");
    Ok(stats)
}

/// How often [`unpack_image`] starts over when the directory it works on is
/// removed under it (by [`collect_garbage`] between two of its steps).
const UNPACK_ATTEMPTS: usize = 3;

/// Unpacks an image's layers (blob path and compression, in manifest order) into
/// `dest`, once, within `limits` (which hold for all the layers together), and
/// returns a lease on it: [`collect_garbage`] leaves `dest` alone while it is
/// held (hold it until whatever uses the rootfs is in place).
///
/// If `dest` exists, it is taken as a finished unpack and nothing is done.
/// Otherwise the layers are applied into a fresh `DEST.tmp-XXXXXX` beside it
/// (mode 0755), the file system is synced, and the directory is renamed to `dest`;
/// on any error it is removed (iteratively, whatever its depth and modes), so
/// `dest` never exists half-made and nothing is left behind. Another unpack of
/// the same image finishing first is not an error. A crash can leave a
/// `DEST.tmp-*` directory behind: [`collect_garbage`] removes it.
///
/// The compression of each blob is sniffed ([`Compression::detect`]) and wins
/// over the declared one when they differ (old Docker images label plain tars
/// `tar.gzip`); the declared one is used when the bytes say nothing.
///
/// # Errors
/// [`UnpackError::Layer`] naming the layer (its index and blob) and what went
/// wrong in it, a limit of `limits` included; [`UnpackError::Io`] for the
/// directories and the final rename.
pub fn unpack_image(
    layers: &[(PathBuf, Compression)],
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<RootfsLease, UnpackError> {
    unpack_image_until(layers, dest, limits, &CancellationToken::new())
}

/// [`unpack_image`] that ends early, with [`UnpackError::Stopped`] and nothing
/// left behind, once `stop` is cancelled (checked at every entry and every buffer
/// of bytes): the host stopping does not wait for an image of gigabytes.
///
/// # Errors
/// As [`unpack_image`], and [`UnpackError::Stopped`].
pub fn unpack_image_until(
    layers: &[(PathBuf, Compression)],
    dest: &Path,
    limits: &UnpackLimits,
    stop: &CancellationToken,
) -> Result<RootfsLease, UnpackError> {
    let Some(name) = dest.file_name() else {
        return Err(UnpackError::io(
            "unpack into",
            dest,
            io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
        ));
    };
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    for _ in 0..UNPACK_ATTEMPTS {
        if let Some(lease) = RootfsLease::existing(dest)? {
            tracing::debug!(dest = %dest.display(), "image already unpacked");
            return Ok(lease);
        }
        std::fs::create_dir_all(parent)
            .map_err(|e| UnpackError::io("create directory", parent, e))?;
        let mut prefix = name.to_owned();
        prefix.push(".tmp-");
        let tmp = lease::TempTree::create(parent, &prefix)?;
        rustix::fs::fchmod(tmp.dir(), Mode::from_raw_mode(0o755))
            .map_err(|e| UnpackError::io("set the mode of", tmp.path(), e))?;
        let tally = Tally::until(*limits, stop);
        for (index, (blob, declared)) in layers.iter().enumerate() {
            let in_layer = |source| UnpackError::Layer {
                index,
                blob: blob.clone(),
                source: Box::new(source),
            };
            let file = File::open(blob).map_err(|e| in_layer(UnpackError::io("open", blob, e)))?;
            let mut reader = BufReader::with_capacity(COPY_BUFFER, file);
            let head = reader
                .fill_buf()
                .map_err(|e| in_layer(UnpackError::io("read", blob, e)))?;
            let compression = match Compression::detect(head) {
                Some(sniffed) if sniffed != *declared => {
                    tracing::warn!(
                        blob = %blob.display(), ?declared, ?sniffed,
                        "layer compression differs from its media type; using what its bytes show"
                    );
                    sniffed
                }
                _ => *declared,
            };
            match apply_counted(tmp.path(), reader, compression, &tally) {
                Ok(_) => {}
                // The temporary tree is removed as `tmp` drops.
                Err(_) if tally.stopped() => return Err(UnpackError::Stopped),
                Err(e) => return Err(in_layer(e)),
            }
        }
        rustix::fs::syncfs(tmp.dir()).map_err(|e| UnpackError::io("sync", tmp.path(), e))?;
        match tmp.rename_to(dest) {
            Ok(lease) => {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| UnpackError::io("sync", parent, e))?;
                tracing::debug!(
                    dest = %dest.display(),
                    layers = layers.len(),
                    bytes = tally.bytes(),
                    "image unpacked"
                );
                return Ok(lease);
            }
            // Another unpack of this image got there first; ours is dropped
            // (and removed), theirs is leased above.
            Err((e, _)) if dest.is_dir() => {
                tracing::debug!(dest = %dest.display(), error = %e, "image unpacked concurrently");
            }
            Err((e, _)) => return Err(UnpackError::io("rename the unpacked image to", dest, e)),
        }
    }
    Err(UnpackError::io(
        "unpack",
        dest,
        io::Error::other("the image was removed each time it was unpacked"),
    ))
}
