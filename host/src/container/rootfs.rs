//! Image layers into a root filesystem: the OCI image-spec changeset rules
//! (`layer.md`), applied without ever writing outside the rootfs.
//!
//! [`apply_layer`] applies one layer (a plain, gzip or zstd tar archive, see
//! [`Compression`]) onto a directory; [`unpack_image`] applies all of an image's
//! layers, in manifest order, into `DEST.tmp-XXXXXX` and renames that to `DEST`
//! only once every layer has been applied and synced, so an interrupted or failed
//! unpack never looks complete and an existing `DEST` is taken as done.
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
//! comes before or after the layer's own entries in the archive.
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
//! # Not covered
//! Size and inode quotas (a layer can be a decompression bomb: bound the blob size
//! before calling), uid/gid remapping (user namespaces), `security.selinux` labels.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

/// The name prefix that marks a whiteout.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name prefix of aufs metadata (and of the opaque marker).
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// The name that marks its directory opaque.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Mode of directories that a layer needs but does not list (like `mkdir -p`).
const IMPLICIT_DIR_MODE: u32 = 0o755;
/// Write buffer for file contents (and read buffer for plain tar streams).
const COPY_BUFFER: usize = 128 * 1024;
/// pax record prefix of extended attributes (GNU tar, Go's archive/tar, BuildKit).
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

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
/// Entry errors name the entry's path as it is written in the archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// The entry would write (or link, or delete) outside the rootfs, or through
    /// a symlink.
    #[error("layer entry {path:?} escapes the rootfs: {reason}")]
    Escape {
        /// The entry's path as written in the archive.
        path: PathBuf,
        /// What escapes, and how.
        reason: String,
    },

    /// The entry is malformed or of a type that is never unpacked.
    #[error("invalid layer entry {path:?}: {reason}")]
    InvalidEntry {
        /// The entry's path as written in the archive.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A file system operation for an entry failed.
    #[error("layer entry {path:?}: {context}")]
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
/// below it (or nothing, for the first).
///
/// `compression` is taken as given; see [`Compression::detect`] to sniff it. The
/// stream is read to its end, so that a corrupt compressed stream is noticed even
/// after the tar's end-of-archive marker.
///
/// On error the rootfs is left partly applied: unpack into a scratch directory
/// and discard it on failure, as [`unpack_image`] does.
pub fn apply_layer(
    rootfs: &Path,
    layer: impl Read,
    compression: Compression,
) -> Result<LayerStats, UnpackError> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::io("open rootfs", rootfs, e))?;
    let stats = match compression {
        Compression::None => apply_tar(root, BufReader::with_capacity(COPY_BUFFER, layer)),
        Compression::Gzip => apply_tar(root, flate2::read::MultiGzDecoder::new(layer)),
        Compression::Zstd => apply_tar(
            root,
            zstd::stream::read::Decoder::new(layer).map_err(UnpackError::Read)?,
        ),
    }?;
    tracing::debug!(rootfs = %rootfs.display(), ?compression, ?stats, "applied layer");
    Ok(stats)
}

/// Unpacks an image's layers (blob path and compression, in manifest order) into
/// `dest`, once.
///
/// If `dest` exists, it is taken as a finished unpack and nothing is done.
/// Otherwise the layers are applied into a fresh `DEST.tmp-XXXXXX` beside it
/// (mode 0755), the file system is synced, and the directory is renamed to `dest`;
/// on any error it is removed, so `dest` never exists half-made. Another unpack of
/// the same image finishing first is not an error. A crash can leave a
/// `DEST.tmp-*` directory behind: it is garbage, safe to remove when no unpack
/// runs.
///
/// The compression of each blob is sniffed ([`Compression::detect`]) and wins
/// over the declared one when they differ (old Docker images label plain tars
/// `tar.gzip`); the declared one is used when the bytes say nothing.
pub fn unpack_image(layers: &[(PathBuf, Compression)], dest: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(dest) {
        Ok(_) => {
            tracing::debug!(dest = %dest.display(), "image already unpacked");
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(UnpackError::io("inspect", dest, e)),
    }
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
    fs::create_dir_all(parent).map_err(|e| UnpackError::io("create directory", parent, e))?;
    let mut prefix = name.to_owned();
    prefix.push(".tmp-");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(parent)
        .map_err(|e| UnpackError::io("create a temporary directory in", parent, e))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
        .map_err(|e| UnpackError::io("set the mode of", tmp.path(), e))?;

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
        apply_layer(tmp.path(), reader, compression).map_err(in_layer)?;
    }

    let dir = File::open(tmp.path()).map_err(|e| UnpackError::io("open", tmp.path(), e))?;
    rustix::fs::syncfs(&dir).map_err(|e| UnpackError::io("sync", tmp.path(), e))?;
    drop(dir);
    match fs::rename(tmp.path(), dest) {
        // Renamed away: nothing is left for the guard to clean up.
        Ok(()) => drop(tmp.keep()),
        Err(e) if dest.is_dir() => {
            // Another unpack of this image got there first; ours is dropped.
            tracing::debug!(dest = %dest.display(), error = %e, "image unpacked concurrently");
            return Ok(());
        }
        Err(e) => return Err(UnpackError::io("rename the unpacked image to", dest, e)),
    }
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| UnpackError::io("sync", parent, e))?;
    tracing::debug!(dest = %dest.display(), layers = layers.len(), "image unpacked");
    Ok(())
}

/// Applies the entries of an uncompressed tar stream.
fn apply_tar<R: Read>(root: OwnedFd, reader: R) -> Result<LayerStats, UnpackError> {
    let mut applier = Applier {
        privileged: rustix::process::geteuid().is_root(),
        root,
        stats: LayerStats::default(),
        this_layer: HashSet::new(),
        deferred_dirs: HashMap::new(),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        applier.apply(&mut entry)?;
    }
    applier.finish()?;
    // Read to the end: compressed streams check their checksums there.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(UnpackError::Read)?;
    Ok(applier.stats)
}

/// Owner, mode, times and xattrs of an entry.
#[derive(Debug)]
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: Timespec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Meta {
    /// Reads the header, with pax records (`uid`, `gid`, `mtime`,
    /// `SCHILY.xattr.*`) taking precedence.
    fn of<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &Path) -> Result<Self, UnpackError> {
        let bad = |field: &str, e: io::Error| UnpackError::invalid(shown, format!("{field}: {e}"));
        let header = entry.header();
        let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let mut uid = header.uid().map_err(|e| bad("uid", e))?;
        let mut gid = header.gid().map_err(|e| bad("gid", e))?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(header.mtime().map_err(|e| bad("mtime", e))?)
                .map_err(|_| UnpackError::invalid(shown, "mtime out of range"))?,
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(records) = entry.pax_extensions().map_err(UnpackError::Read)? {
            for record in records {
                let record = record.map_err(|e| bad("pax record", e))?;
                let value = record.value_bytes();
                match record.key_bytes() {
                    b"uid" => uid = parse_pax_id(value).ok_or_else(|| bad_pax(shown, "uid"))?,
                    b"gid" => gid = parse_pax_id(value).ok_or_else(|| bad_pax(shown, "gid"))?,
                    b"mtime" => {
                        mtime = parse_pax_time(value).ok_or_else(|| bad_pax(shown, "mtime"))?;
                    }
                    key => {
                        if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                            if name == b"security.capability" || name.starts_with(b"user.") {
                                xattrs.push((OsString::from_vec(name.to_vec()), value.to_vec()));
                            } else {
                                tracing::debug!(
                                    entry = ?shown,
                                    xattr = %String::from_utf8_lossy(name),
                                    "dropping xattr"
                                );
                            }
                        }
                    }
                }
            }
        }
        let id = |value: u64, what: &str| {
            u32::try_from(value)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| UnpackError::invalid(shown, format!("{what} {value} out of range")))
        };
        Ok(Self {
            uid: Uid::from_raw(id(uid, "uid")?),
            gid: Gid::from_raw(id(gid, "gid")?),
            mode: Mode::from_raw_mode(mode),
            mtime,
            xattrs,
        })
    }

    fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }
}

fn bad_pax(shown: &Path, key: &str) -> UnpackError {
    UnpackError::invalid(shown, format!("malformed pax `{key}` record"))
}

/// A pax `uid`/`gid` value: decimal digits.
fn parse_pax_id(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A pax `mtime` value: `[-]SECONDS[.FRACTION]`.
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !all_digits(secs) || !all_digits(frac) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for digit in frac.bytes().chain(std::iter::repeat(b'0')).take(9) {
        nanos = nanos * 10 + i64::from(digit - b'0');
    }
    Some(if !negative {
        Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        }
    } else if nanos == 0 {
        Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        }
    } else {
        Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        }
    })
}

/// Why an entry's path was refused.
#[derive(Debug, PartialEq, Eq)]
enum BadPath {
    /// `..` climbs above the rootfs.
    Escapes,
    /// A NUL byte (only possible in a pax `path` record).
    Nul,
}

/// An entry path relative to the rootfs: no leading `/`, no empty, `.` or `..`
/// components. The empty path is the rootfs itself.
fn normalize(raw: &[u8]) -> Result<PathBuf, BadPath> {
    if raw.contains(&0) {
        return Err(BadPath::Nul);
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                parts.pop().ok_or(BadPath::Escapes)?;
            }
            name => parts.push(name),
        }
    }
    Ok(parts.into_iter().map(OsStr::from_bytes).collect())
}

/// What resolving a directory path found.
#[derive(Debug)]
enum Resolved {
    /// The directory, opened without following any symlink.
    Dir(OwnedFd),
    /// A component does not exist.
    Missing,
    /// This prefix of the path is a symlink.
    Symlink(PathBuf),
    /// This prefix of the path is neither a directory nor a symlink.
    NotDir(PathBuf),
}

/// The state of one layer being applied.
#[derive(Debug)]
struct Applier {
    /// The rootfs, opened `O_PATH`: every path is resolved from here.
    root: OwnedFd,
    /// Running as root: ownership must be applied.
    privileged: bool,
    stats: LayerStats,
    /// Every path this layer has put in place, and all their ancestors: what
    /// whiteouts and opaque markers of this layer must not remove.
    this_layer: HashSet<PathBuf>,
    /// Mode and mtime of this layer's directories, applied by [`Self::finish`].
    deferred_dirs: HashMap<PathBuf, (Mode, Timespec)>,
}

impl Applier {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let shown = PathBuf::from(OsString::from_vec(raw.clone()));
        if kind == EntryType::XGlobalHeader {
            self.stats.skipped += 1;
            return Ok(());
        }
        let rel = normalize(&raw).map_err(|bad| match bad {
            BadPath::Escapes => UnpackError::escape(&shown, "`..` leaves the rootfs"),
            BadPath::Nul => UnpackError::invalid(&shown, "the path contains a NUL byte"),
        })?;

        let Some(name) = rel.file_name() else {
            // `./` or `/`: the rootfs itself.
            return if kind == EntryType::Directory {
                self.directory(entry, &shown, &rel)
            } else {
                Err(UnpackError::invalid(
                    &shown,
                    format!("a {kind:?} entry cannot stand for the rootfs itself"),
                ))
            };
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        for component in parent {
            let component = component.as_bytes();
            if component.starts_with(WHITEOUT_META_PREFIX) {
                return self.skip_aufs_metadata(&shown);
            }
            if component.starts_with(WHITEOUT_PREFIX) {
                return Err(UnpackError::invalid(
                    &shown,
                    "a whiteout name is used as a directory",
                ));
            }
        }
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER {
            return self.opaque(&shown, &rel);
        }
        if name_bytes.starts_with(WHITEOUT_META_PREFIX) {
            return self.skip_aufs_metadata(&shown);
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX) {
            if matches!(hidden, b"" | b"." | b"..") {
                return Err(UnpackError::invalid(&shown, "the whiteout names no file"));
            }
            return self.whiteout(&shown, &parent.join(OsStr::from_bytes(hidden)));
        }

        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.regular(entry, &shown, &rel)
            }
            EntryType::Directory => self.directory(entry, &shown, &rel),
            EntryType::Symlink => self.symlink(entry, &shown, &rel),
            EntryType::Link => self.hardlink(entry, &shown, &rel),
            EntryType::Fifo => self.fifo(entry, &shown, &rel),
            EntryType::Char | EntryType::Block => self.device(kind, &shown, &rel),
            other => Err(UnpackError::invalid(
                &shown,
                format!("unsupported entry type {:?}", char::from(other.as_byte())),
            )),
        }
    }

    fn skip_aufs_metadata(&mut self, shown: &Path) -> Result<(), UnpackError> {
        tracing::debug!(entry = ?shown, "skipping aufs metadata");
        self.stats.skipped += 1;
        Ok(())
    }

    /// Records that this layer put `rel` in place (with its ancestors).
    fn mark(&mut self, rel: &Path) {
        let mut path = Some(rel);
        while let Some(p) = path {
            // Ancestors of a recorded path are recorded already.
            if p.as_os_str().is_empty() || !self.this_layer.insert(p.to_owned()) {
                break;
            }
            path = p.parent();
        }
    }

    /// Opens directory `dir` (relative to the rootfs) one component at a time,
    /// never following a symlink. With `create`, missing components are created
    /// (mode [`IMPLICIT_DIR_MODE`]) and [`Resolved::Missing`] is never returned.
    fn resolve(&self, shown: &Path, dir: &Path, create: bool) -> Result<Resolved, UnpackError> {
        let mut current = self
            .root
            .try_clone()
            .map_err(|e| UnpackError::entry(shown, "duplicate the rootfs descriptor", e))?;
        let mut so_far = PathBuf::new();
        for component in dir {
            so_far.push(component);
            current = match open_dir(current.as_fd(), component, OFlags::PATH) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    make_dir(current.as_fd(), component).map_err(|e| {
                        let what = format!("create directory {so_far:?}");
                        UnpackError::entry(shown, what, e)
                    })?
                }
                Err(Errno::NOENT) => return Ok(Resolved::Missing),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let stat = rustix::fs::statat(&current, component, AtFlags::SYMLINK_NOFOLLOW);
                    let stat = stat.map_err(|e| {
                        let what = format!("inspect {so_far:?}");
                        UnpackError::entry(shown, what, e)
                    })?;
                    return Ok(
                        if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
                            Resolved::Symlink(so_far)
                        } else {
                            Resolved::NotDir(so_far)
                        },
                    );
                }
                Err(e) => {
                    let what = format!("open directory {so_far:?}");
                    return Err(UnpackError::entry(shown, what, e));
                }
            };
        }
        Ok(Resolved::Dir(current))
    }

    /// The parent directory of `rel`, for putting something at `rel`: missing
    /// directories are created, a symlink is an escape.
    fn parent_for_write(&self, shown: &Path, rel: &Path) -> Result<OwnedFd, UnpackError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        match self.resolve(shown, parent, true)? {
            Resolved::Dir(fd) => Ok(fd),
            Resolved::Symlink(link) => Err(symlink_escape(shown, &link)),
            Resolved::NotDir(path) => Err(UnpackError::invalid(
                shown,
                format!("parent {path:?} is not a directory"),
            )),
            Resolved::Missing => Err(UnpackError::invalid(shown, "parent directory is missing")),
        }
    }

    /// The parent directory of `rel`, for removing something at `rel`: `None`
    /// when there is nothing there, a symlink is an escape.
    fn parent_for_removal(&self, shown: &Path, rel: &Path) -> Result<Option<OwnedFd>, UnpackError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        match self.resolve(shown, parent, false)? {
            Resolved::Dir(fd) => Ok(Some(fd)),
            Resolved::Symlink(link) => Err(symlink_escape(shown, &link)),
            Resolved::Missing | Resolved::NotDir(_) => Ok(None),
        }
    }

    /// Removes whatever is at `parent/name` (a whole tree for a directory).
    fn clear(&self, shown: &Path, parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), UnpackError> {
        remove_all_at(parent, name)
            .map_err(|e| UnpackError::entry(shown, "remove what was at this path", e))
    }

    /// Makes `parent/name` a directory: kept if it is one, created (mode
    /// [`IMPLICIT_DIR_MODE`]) in place of anything else. Returns it opened for
    /// reading.
    fn ensure_dir(
        &self,
        shown: &Path,
        parent: BorrowedFd<'_>,
        name: &OsStr,
    ) -> Result<OwnedFd, UnpackError> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return open_dir(parent, name, OFlags::RDONLY)
                    .map_err(|e| UnpackError::entry(shown, "open directory", e));
            }
            Ok(_) => self.clear(shown, parent, name)?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(UnpackError::entry(shown, "inspect what is at this path", e)),
        }
        make_dir(parent, name).map_err(|e| UnpackError::entry(shown, "create directory", e))
    }

    /// The directory `rel` (the rootfs for the empty path), made a directory if
    /// it is not one, opened for reading.
    fn dir_for_write(&self, shown: &Path, rel: &Path) -> Result<OwnedFd, UnpackError> {
        match rel.file_name() {
            None => open_dir(self.root.as_fd(), OsStr::new("."), OFlags::RDONLY)
                .map_err(|e| UnpackError::entry(shown, "open the rootfs", e)),
            Some(name) => {
                let parent = self.parent_for_write(shown, rel)?;
                self.ensure_dir(shown, parent.as_fd(), name)
            }
        }
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        let meta = Meta::of(entry, shown)?;
        let name = file_name(rel);
        let parent = self.parent_for_write(shown, rel)?;
        self.clear(shown, parent.as_fd(), name)?;
        let fd = rustix::fs::openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| UnpackError::entry(shown, "create file", e))?;
        let file = File::from(fd);
        let expected = entry.size();
        let mut out = io::BufWriter::with_capacity(COPY_BUFFER, &file);
        let written = io::copy(entry, &mut out)
            .and_then(|n| out.flush().map(|()| n))
            .map_err(|e| UnpackError::entry(shown, "write file contents", e))?;
        drop(out);
        if written != expected {
            return Err(UnpackError::entry(
                shown,
                format!("the layer ends {written} bytes into this {expected}-byte file"),
                io::ErrorKind::UnexpectedEof,
            ));
        }
        self.set_owner(
            shown,
            rustix::fs::fchown(&file, Some(meta.uid), Some(meta.gid)),
            &meta,
        )?;
        self.set_xattrs(shown, file.as_fd(), &meta)?;
        rustix::fs::fchmod(&file, meta.mode)
            .map_err(|e| UnpackError::entry(shown, "set file mode", e))?;
        rustix::fs::futimens(&file, &meta.times())
            .map_err(|e| UnpackError::entry(shown, "set file times", e))?;
        self.mark(rel);
        self.stats.files += 1;
        self.stats.bytes += written;
        Ok(())
    }

    fn directory<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        let meta = Meta::of(entry, shown)?;
        let dir = self.dir_for_write(shown, rel)?;
        self.set_owner(
            shown,
            rustix::fs::fchown(&dir, Some(meta.uid), Some(meta.gid)),
            &meta,
        )?;
        self.set_xattrs(shown, dir.as_fd(), &meta)?;
        self.deferred_dirs
            .insert(rel.to_owned(), (meta.mode, meta.mtime));
        self.mark(rel);
        self.stats.dirs += 1;
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        let meta = Meta::of(entry, shown)?;
        let target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UnpackError::invalid(shown, "symlink without a target"))?;
        if target.contains(&0) {
            return Err(UnpackError::invalid(
                shown,
                "symlink target contains a NUL byte",
            ));
        }
        let name = file_name(rel);
        let parent = self.parent_for_write(shown, rel)?;
        self.clear(shown, parent.as_fd(), name)?;
        rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, name)
            .map_err(|e| UnpackError::entry(shown, "create symlink", e))?;
        let chown = rustix::fs::chownat(
            &parent,
            name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        self.set_owner(shown, chown, &meta)?;
        rustix::fs::utimensat(&parent, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| UnpackError::entry(shown, "set symlink times", e))?;
        self.mark(rel);
        self.stats.symlinks += 1;
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        let raw_target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .ok_or_else(|| UnpackError::invalid(shown, "hardlink without a target"))?;
        let shown_target = PathBuf::from(OsString::from_vec(raw_target.clone()));
        let target = normalize(&raw_target).map_err(|bad| match bad {
            BadPath::Escapes => UnpackError::escape(
                shown,
                format!("hardlink target {shown_target:?} leaves the rootfs"),
            ),
            BadPath::Nul => UnpackError::invalid(shown, "hardlink target contains a NUL byte"),
        })?;
        let Some(target_name) = target.file_name() else {
            return Err(UnpackError::invalid(shown, "hardlink to the rootfs itself"));
        };
        if target == rel {
            tracing::debug!(entry = ?shown, "ignoring a hardlink to itself");
            return Ok(());
        }
        let missing = || {
            UnpackError::invalid(
                shown,
                format!("hardlink target {shown_target:?} does not exist"),
            )
        };
        let target_parent =
            match self.resolve(shown, target.parent().unwrap_or(Path::new("")), false)? {
                Resolved::Dir(fd) => fd,
                Resolved::Symlink(link) => {
                    return Err(UnpackError::escape(
                        shown,
                        format!(
                            "hardlink target {shown_target:?} is reached through symlink {link:?}"
                        ),
                    ));
                }
                Resolved::Missing | Resolved::NotDir(_) => return Err(missing()),
            };
        match rustix::fs::statat(&target_parent, target_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return Err(UnpackError::invalid(
                    shown,
                    format!("hardlink target {shown_target:?} is a directory"),
                ));
            }
            Ok(_) => {}
            Err(Errno::NOENT) => return Err(missing()),
            Err(e) => return Err(UnpackError::entry(shown, "inspect the hardlink target", e)),
        }
        let name = file_name(rel);
        let parent = self.parent_for_write(shown, rel)?;
        self.clear(shown, parent.as_fd(), name)?;
        rustix::fs::linkat(&target_parent, target_name, &parent, name, AtFlags::empty())
            .map_err(|e| UnpackError::entry(shown, "create hardlink", e))?;
        self.mark(rel);
        self.stats.hardlinks += 1;
        Ok(())
    }

    fn fifo<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        let meta = Meta::of(entry, shown)?;
        let name = file_name(rel);
        let parent = self.parent_for_write(shown, rel)?;
        self.clear(shown, parent.as_fd(), name)?;
        rustix::fs::mkfifoat(&parent, name, Mode::from_raw_mode(0o600))
            .map_err(|e| UnpackError::entry(shown, "create FIFO", e))?;
        // Opening a FIFO for reading without O_NONBLOCK would wait for a writer.
        let fd = rustix::fs::openat(
            &parent,
            name,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::entry(shown, "open FIFO", e))?;
        self.set_owner(
            shown,
            rustix::fs::fchown(&fd, Some(meta.uid), Some(meta.gid)),
            &meta,
        )?;
        rustix::fs::fchmod(&fd, meta.mode)
            .map_err(|e| UnpackError::entry(shown, "set FIFO mode", e))?;
        rustix::fs::futimens(&fd, &meta.times())
            .map_err(|e| UnpackError::entry(shown, "set FIFO times", e))?;
        self.mark(rel);
        self.stats.fifos += 1;
        Ok(())
    }

    /// Device nodes are never created: what was at the path goes, as it would
    /// for any other entry, and nothing takes its place.
    fn device(&mut self, kind: EntryType, shown: &Path, rel: &Path) -> Result<(), UnpackError> {
        if let Some(parent) = self.parent_for_removal(shown, rel)? {
            self.clear(shown, parent.as_fd(), file_name(rel))?;
        }
        let kind = if kind == EntryType::Char {
            "character"
        } else {
            "block"
        };
        tracing::warn!(
            entry = ?shown,
            "skipping {kind} device node: device nodes are never created in a rootfs"
        );
        self.stats.skipped += 1;
        Ok(())
    }

    /// `.wh.NAME`: removes `hidden` unless this layer put it there.
    fn whiteout(&mut self, shown: &Path, hidden: &Path) -> Result<(), UnpackError> {
        self.stats.whiteouts += 1;
        if let Some(parent) = self.parent_for_removal(shown, hidden)? {
            self.remove_lower(shown, parent.as_fd(), file_name(hidden), hidden)?;
        }
        Ok(())
    }

    /// `DIR/.wh..wh..opq` (`marker`): removes every child of DIR that this
    /// layer did not put there. DIR is resolved like the parent of any entry:
    /// created if missing, refused if it is a symlink or not a directory.
    fn opaque(&mut self, shown: &Path, marker: &Path) -> Result<(), UnpackError> {
        self.stats.opaque_dirs += 1;
        let dir = marker.parent().unwrap_or(Path::new(""));
        let fd = open_dir(
            self.parent_for_write(shown, marker)?.as_fd(),
            OsStr::new("."),
            OFlags::RDONLY,
        )
        .map_err(|e| UnpackError::entry(shown, "open the opaque directory", e))?;
        self.mark(dir);
        let children =
            read_names(fd.as_fd()).map_err(|e| UnpackError::entry(shown, "list directory", e))?;
        for child in children {
            self.remove_lower(shown, fd.as_fd(), &child, &dir.join(&child))?;
        }
        Ok(())
    }

    /// Removes what lower layers put at `parent/name` (`rel`): all of it when this
    /// layer put nothing there, else the children this layer did not put there.
    fn remove_lower(
        &self,
        shown: &Path,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        if !self.this_layer.contains(rel) {
            return remove_all_at(parent, name).map_err(|e| {
                UnpackError::entry(shown, format!("remove {rel:?} of a lower layer"), e)
            });
        }
        let dir = match open_dir(parent, name, OFlags::RDONLY) {
            Ok(fd) => fd,
            // This layer's own file, symlink, …: kept.
            Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => return Ok(()),
            Err(e) => {
                return Err(UnpackError::entry(shown, format!("open {rel:?}"), e));
            }
        };
        let children = read_names(dir.as_fd())
            .map_err(|e| UnpackError::entry(shown, format!("list {rel:?}"), e))?;
        for child in children {
            self.remove_lower(shown, dir.as_fd(), &child, &rel.join(&child))?;
        }
        Ok(())
    }

    /// Applies fchown's result: an error when running as root, ignored when
    /// unprivileged and refused.
    fn set_owner(
        &self,
        shown: &Path,
        result: rustix::io::Result<()>,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        match result {
            Ok(()) => Ok(()),
            Err(Errno::PERM | Errno::INVAL) if !self.privileged => {
                tracing::trace!(entry = ?shown, "not root: ownership not applied");
                Ok(())
            }
            Err(e) => Err(UnpackError::entry(
                shown,
                format!(
                    "change owner to {}:{}",
                    meta.uid.as_raw(),
                    meta.gid.as_raw()
                ),
                e,
            )),
        }
    }

    fn set_xattrs(&self, shown: &Path, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), UnpackError> {
        for (name, value) in &meta.xattrs {
            match rustix::fs::fsetxattr(fd, name.as_os_str(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e @ (Errno::NOTSUP | Errno::PERM | Errno::ACCESS)) => tracing::warn!(
                    entry = ?shown,
                    xattr = %name.to_string_lossy(),
                    error = %e,
                    "xattr not applied"
                ),
                Err(e) => {
                    let what = format!("set xattr {}", name.to_string_lossy());
                    return Err(UnpackError::entry(shown, what, e));
                }
            }
        }
        Ok(())
    }

    /// Applies the deferred directory modes and mtimes, deepest first. A
    /// directory that a later entry removed or replaced is passed over.
    fn finish(&mut self) -> Result<(), UnpackError> {
        let mut dirs: Vec<_> = self.deferred_dirs.drain().collect();
        dirs.sort_by_key(|(rel, _)| Reverse(rel.components().count()));
        for (rel, (mode, mtime)) in dirs {
            let dir = match rel.file_name() {
                None => open_dir(self.root.as_fd(), OsStr::new("."), OFlags::RDONLY),
                Some(name) => {
                    let Resolved::Dir(parent) =
                        self.resolve(&rel, rel.parent().unwrap_or(Path::new("")), false)?
                    else {
                        continue;
                    };
                    match open_dir(parent.as_fd(), name, OFlags::RDONLY) {
                        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                        other => other,
                    }
                }
            }
            .map_err(|e| UnpackError::entry(&rel, "open directory", e))?;
            rustix::fs::fchmod(&dir, mode)
                .map_err(|e| UnpackError::entry(&rel, "set directory mode", e))?;
            let times = Timestamps {
                last_access: mtime,
                last_modification: mtime,
            };
            rustix::fs::futimens(&dir, &times)
                .map_err(|e| UnpackError::entry(&rel, "set directory times", e))?;
        }
        Ok(())
    }
}

fn symlink_escape(shown: &Path, link: &Path) -> UnpackError {
    UnpackError::escape(
        shown,
        format!("{link:?} is a symlink, and nothing is ever written through one"),
    )
}

/// The last component of a normalized, non-empty path.
fn file_name(rel: &Path) -> &OsStr {
    rel.file_name().unwrap_or_default()
}

/// Creates directory `parent/name` with mode [`IMPLICIT_DIR_MODE`] exactly,
/// whatever the umask, and opens it for reading.
fn make_dir(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    let mode = Mode::from_raw_mode(IMPLICIT_DIR_MODE);
    rustix::fs::mkdirat(parent, name, mode)?;
    let dir = open_dir(parent, name, OFlags::RDONLY)?;
    rustix::fs::fchmod(&dir, mode)?;
    Ok(dir)
}

/// Opens directory `parent/name` without following a symlink.
fn open_dir(parent: BorrowedFd<'_>, name: &OsStr, access: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        access | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory opened for reading, without `.` and `..`.
fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    Ok(names)
}

/// Removes `parent/name` and, for a directory, everything in it, never
/// following a symlink. Nothing there is not an error.
fn remove_all_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let unlink_error = match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // What unlink says of a directory: EISDIR on Linux, EPERM in POSIX.
        Err(e @ (Errno::ISDIR | Errno::PERM)) => e,
        Err(e) => return Err(e.into()),
    };
    let dir = match open_dir(parent, name, OFlags::RDONLY) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::NOTDIR) => return Err(unlink_error.into()),
        // Unprivileged, and the directory (say mode 0) shuts us out: it is going
        // anyway, so open it up first. `chmodat` would follow a symlink, but a
        // symlink is unlinked above and never gets here.
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(parent, name, Mode::RWXU, AtFlags::empty())?;
            open_dir(parent, name, OFlags::RDONLY)?
        }
        Err(e) => return Err(e.into()),
    };
    for child in read_names(dir.as_fd())? {
        remove_all_at(dir.as_fd(), &child)?;
    }
    drop(dir);
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use tar::Header;

    const MTIME: u64 = 1_600_000_000;

    /// One crafted tar entry. Paths and link targets are written into the
    /// header as raw bytes, so `..` and absolute paths get through.
    #[derive(Clone, Copy)]
    enum E<'a> {
        File(&'a str, &'a [u8]),
        FileMode(&'a str, &'a [u8], u32),
        Owned(&'a str, u64, u64),
        Dir(&'a str, u32),
        DirAt(&'a str, u32, u64),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Char(&'a str),
        Block(&'a str),
        Fifo(&'a str),
    }

    fn raw_field(field: &mut [u8], value: &str) {
        assert!(
            value.len() < field.len(),
            "{value:?} is too long for a raw header field"
        );
        field.fill(0);
        field[..value.len()].copy_from_slice(value.as_bytes());
    }

    fn header(kind: EntryType, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h
    }

    fn append(builder: &mut tar::Builder<Vec<u8>>, entry: E<'_>) {
        let (mut h, path, link, data): (Header, &str, Option<&str>, &[u8]) = match entry {
            E::File(p, d) => (header(EntryType::Regular, 0o644), p, None, d),
            E::FileMode(p, d, mode) => (header(EntryType::Regular, mode), p, None, d),
            E::Owned(p, uid, gid) => {
                let mut h = header(EntryType::Regular, 0o640);
                h.set_uid(uid);
                h.set_gid(gid);
                (h, p, None, b"owned")
            }
            E::Dir(p, mode) => (header(EntryType::Directory, mode), p, None, b""),
            E::DirAt(p, mode, mtime) => {
                let mut h = header(EntryType::Directory, mode);
                h.set_mtime(mtime);
                (h, p, None, b"")
            }
            E::Symlink(p, t) => (header(EntryType::Symlink, 0o777), p, Some(t), b""),
            E::Hardlink(p, t) => (header(EntryType::Link, 0o644), p, Some(t), b""),
            E::Char(p) => (header(EntryType::Char, 0o666), p, None, b""),
            E::Block(p) => (header(EntryType::Block, 0o660), p, None, b""),
            E::Fifo(p) => (header(EntryType::Fifo, 0o644), p, None, b""),
        };
        raw_field(&mut h.as_old_mut().name, path);
        if let Some(target) = link {
            raw_field(&mut h.as_old_mut().linkname, target);
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, data).expect("append");
    }

    fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for &entry in entries {
            append(&mut builder, entry);
        }
        builder.into_inner().expect("finish tar")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    }

    /// A rootfs with a sibling directory `outside` holding `secret`.
    struct Fx {
        tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    impl Fx {
        fn new() -> Self {
            let tmp = tempfile::tempdir().expect("tempdir");
            let root = tmp.path().join("rootfs");
            let outside = tmp.path().join("outside");
            fs::create_dir(&root).expect("mkdir rootfs");
            fs::create_dir(&outside).expect("mkdir outside");
            fs::write(outside.join("secret"), "secret").expect("write secret");
            Self { tmp, root, outside }
        }

        fn apply(&self, entries: &[E<'_>]) -> Result<LayerStats, UnpackError> {
            apply_layer(&self.root, &layer(entries)[..], Compression::None)
        }

        fn outside_str(&self) -> String {
            self.outside.to_str().expect("utf-8 temp path").to_owned()
        }

        fn secret_str(&self) -> String {
            format!("{}/secret", self.outside_str())
        }

        fn tree(&self) -> Vec<String> {
            tree(&self.root)
        }

        /// Nothing outside the rootfs was created, changed, linked or removed.
        #[track_caller]
        fn assert_outside_untouched(&self) {
            assert_eq!(tree(&self.outside), ["secret"], "outside/ changed");
            let secret = self.outside.join("secret");
            assert_eq!(fs::read_to_string(&secret).expect("read secret"), "secret");
            assert_eq!(fs::symlink_metadata(&secret).expect("stat").nlink(), 1);
            let mut siblings: Vec<_> = fs::read_dir(self.tmp.path())
                .expect("list tmp")
                .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
                .collect();
            siblings.sort();
            assert_eq!(
                siblings,
                ["outside", "rootfs"],
                "something appeared beside the rootfs"
            );
        }
    }

    /// Every path under `dir`, relative, sorted; symlinks are not followed.
    fn tree(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                let rel = path.strip_prefix(base).expect("under base");
                out.push(rel.to_str().expect("utf-8").to_owned());
                if fs::symlink_metadata(&path).expect("lstat").is_dir() {
                    walk(base, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("lstat").mode() & 0o7777
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).expect("read")
    }

    #[track_caller]
    fn assert_escape(result: Result<LayerStats, UnpackError>, entry: &str) {
        match result {
            Err(UnpackError::Escape { ref path, .. }) if path == Path::new(entry) => {
                let message = result.unwrap_err().to_string();
                assert!(message.contains(entry), "{message}");
            }
            other => panic!("expected an escape for {entry:?}, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_invalid(result: Result<LayerStats, UnpackError>, entry: &str) {
        match result {
            Err(UnpackError::InvalidEntry { ref path, .. }) if path == Path::new(entry) => {}
            other => panic!("expected an invalid entry {entry:?}, got {other:?}"),
        }
    }

    fn running_as_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn files_dirs_symlinks_hardlinks_modes_times_owners() {
        let fx = Fx::new();
        let stats = fx
            .apply(&[
                E::Dir("etc/", 0o755),
                E::File("etc/hostname", b"berth\n"),
                E::FileMode("usr/bin/tool", b"#!/bin/sh\n", 0o4755),
                E::Symlink("bin", "usr/bin"),
                E::Hardlink("usr/bin/tool2", "usr/bin/tool"),
                E::File("./etc/./motd", b"hi"),
                E::Owned("srv/data", 1234, 5678),
                E::Dir("tmp/", 0o1777),
                E::Dir("locked/", 0o500),
                E::File("locked/inside", b"written before the mode"),
            ])
            .expect("apply");
        assert_eq!(
            fx.tree(),
            [
                "bin",
                "etc",
                "etc/hostname",
                "etc/motd",
                "locked",
                "locked/inside",
                "srv",
                "srv/data",
                "tmp",
                "usr",
                "usr/bin",
                "usr/bin/tool",
                "usr/bin/tool2"
            ]
        );
        let r = &fx.root;
        assert_eq!(read(&r.join("etc/hostname")), "berth\n");
        assert_eq!(read(&r.join("etc/motd")), "hi");
        assert_eq!(mode(&r.join("etc")), 0o755);
        assert_eq!(mode(&r.join("etc/hostname")), 0o644);
        assert_eq!(mode(&r.join("usr/bin/tool")), 0o4755);
        assert_eq!(mode(&r.join("tmp")), 0o1777);
        assert_eq!(mode(&r.join("locked")), 0o500);
        assert_eq!(mode(&r.join("usr")), 0o755, "implicit parents are 0755");
        assert_eq!(mode(&r.join("usr/bin")), 0o755);
        assert_eq!(
            fs::read_link(r.join("bin")).expect("readlink"),
            Path::new("usr/bin")
        );
        let tool = fs::metadata(r.join("usr/bin/tool")).expect("stat");
        let tool2 = fs::metadata(r.join("usr/bin/tool2")).expect("stat");
        assert_eq!((tool.ino(), tool.nlink()), (tool2.ino(), 2));
        for path in [
            "etc",
            "etc/hostname",
            "tmp",
            "locked",
            "bin",
            "usr/bin/tool",
        ] {
            let meta = fs::symlink_metadata(r.join(path)).expect("lstat");
            assert_eq!(meta.mtime(), MTIME as i64, "mtime of {path}");
        }
        if running_as_root() {
            let data = fs::metadata(r.join("srv/data")).expect("stat");
            assert_eq!((data.uid(), data.gid()), (1234, 5678));
        }
        assert_eq!(
            (
                stats.entries,
                stats.files,
                stats.dirs,
                stats.symlinks,
                stats.hardlinks
            ),
            (10, 5, 3, 1, 1)
        );
        assert_eq!(stats.bytes, 6 + 10 + 2 + 5 + 23);
    }

    #[test]
    fn gzip_and_zstd_layers() {
        let plain = layer(&[
            E::Dir("d/", 0o750),
            E::File("d/a", b"alpha"),
            E::Symlink("l", "d/a"),
        ]);
        let gz = gzip(&plain);
        let zst = zstd::encode_all(&plain[..], 3).expect("zstd");
        assert_eq!(Compression::detect(&plain), Some(Compression::None));
        assert_eq!(Compression::detect(&gz), Some(Compression::Gzip));
        assert_eq!(Compression::detect(&zst), Some(Compression::Zstd));
        assert_eq!(Compression::detect(b""), None);
        assert_eq!(Compression::detect(&[0; 1024]), None);
        for (bytes, compression) in [
            (&plain, Compression::None),
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
        ] {
            let fx = Fx::new();
            let stats = apply_layer(&fx.root, &bytes[..], compression).expect("apply");
            assert_eq!(fx.tree(), ["d", "d/a", "l"], "{compression:?}");
            assert_eq!(read(&fx.root.join("d/a")), "alpha");
            assert_eq!(mode(&fx.root.join("d")), 0o750);
            assert_eq!(stats.files, 1);
        }
        // Wrong compression, and a gzip stream whose trailer (CRC) is corrupt.
        let fx = Fx::new();
        let err = apply_layer(&fx.root, &gz[..], Compression::None).unwrap_err();
        assert!(matches!(err, UnpackError::Read(_)), "{err:?}");
        let mut corrupt = gz.clone();
        let crc = corrupt.len() - 8;
        corrupt[crc] ^= 0xff;
        let fx = Fx::new();
        let err = apply_layer(&fx.root, &corrupt[..], Compression::Gzip).unwrap_err();
        assert!(matches!(err, UnpackError::Read(_)), "{err:?}");
    }

    #[test]
    fn compression_from_media_type() {
        use Compression::{Gzip, None as Plain, Zstd};
        for (media_type, expected) in [
            ("application/vnd.oci.image.layer.v1.tar", Some(Plain)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Some(Plain),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(Zstd),
            ),
            ("application/vnd.docker.image.rootfs.diff.tar", Some(Plain)),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "Application/VND.OCI.image.layer.v1.tar+gzip; x=y",
                Some(Gzip),
            ),
            ("application/wasm", None),
            ("application/vnd.oci.image.config.v1+json", None),
            ("", None),
        ] {
            assert_eq!(
                Compression::from_media_type(media_type),
                expected,
                "{media_type}"
            );
        }
    }

    #[test]
    fn whiteout_removes_a_lower_file_and_a_lower_tree() {
        let fx = Fx::new();
        let outside = fx.outside_str();
        fx.apply(&[
            E::File("a/keep", b"k"),
            E::File("a/gone", b"g"),
            E::File("tree/x/y/z", b"z"),
            E::Symlink("tree/x/out", &outside),
            E::Dir("tree/locked/", 0o000),
        ])
        .expect("lower");
        let stats = fx
            .apply(&[
                E::File("a/.wh.gone", b""),
                E::File(".wh.tree", b""),
                E::File(".wh.never-existed", b""),
                E::File("no/such/dir/.wh.x", b""),
            ])
            .expect("upper");
        assert_eq!(fx.tree(), ["a", "a/keep"]);
        assert_eq!(stats.whiteouts, 4);
        fx.assert_outside_untouched();
    }

    #[test]
    fn whiteout_never_hides_what_its_own_layer_put_there() {
        let fx = Fx::new();
        fx.apply(&[
            E::File("f", b"lower"),
            E::File("g", b"lower"),
            E::File("d/old", b"lower"),
        ])
        .expect("lower");
        fx.apply(&[
            E::File("f", b"upper"),
            E::File(".wh.f", b""),
            E::File(".wh.g", b""),
            E::File("g", b"upper"),
            E::File("d/new", b"upper"),
            E::File(".wh.d", b""),
        ])
        .expect("upper");
        assert_eq!(fx.tree(), ["d", "d/new", "f", "g"]);
        assert_eq!(read(&fx.root.join("f")), "upper");
        assert_eq!(read(&fx.root.join("g")), "upper");
    }

    #[test]
    fn opaque_dir_hides_lower_children_whatever_the_tar_order() {
        let fx = Fx::new();
        let outside = fx.outside_str();
        fx.apply(&[
            E::File("d/old", b"lower"),
            E::File("d/sub/old2", b"lower"),
            E::Symlink("d/link", &outside),
            E::File("other/keep", b"lower"),
            E::File("was-file", b"lower"),
        ])
        .expect("lower");
        let stats = fx
            .apply(&[
                E::File("d/new", b"before the marker"),
                E::File("d/sub/new3", b"before the marker"),
                E::File("d/.wh..wh..opq", b""),
                E::File("d/after", b"after the marker"),
                E::File("fresh/.wh..wh..opq", b""),
            ])
            .expect("upper");
        assert_eq!(
            fx.tree(),
            [
                "d",
                "d/after",
                "d/new",
                "d/sub",
                "d/sub/new3",
                "fresh",
                "other",
                "other/keep",
                "was-file"
            ]
        );
        assert_eq!(stats.opaque_dirs, 2);
        // The marker's directory is resolved like any entry's parent.
        assert_invalid(
            fx.apply(&[E::File("was-file/.wh..wh..opq", b"")]),
            "was-file/.wh..wh..opq",
        );
        fx.assert_outside_untouched();
    }

    #[test]
    fn opaque_marker_at_the_root() {
        let fx = Fx::new();
        fx.apply(&[E::File("a", b""), E::File("b/c", b"")])
            .expect("lower");
        fx.apply(&[E::File("new", b""), E::File("./.wh..wh..opq", b"")])
            .expect("upper");
        assert_eq!(fx.tree(), ["new"]);
    }

    #[test]
    fn dotdot_escape_is_refused() {
        let fx = Fx::new();
        for path in [
            "../outside/escape",
            "../escape",
            "a/../../outside/escape",
            "./../outside/escape",
            "a/b/../../../escape",
            "..",
        ] {
            assert_escape(fx.apply(&[E::File(path, b"pwned")]), path);
        }
        for path in ["../outside/dir/", "a/../../x/"] {
            assert_escape(fx.apply(&[E::Dir(path, 0o755)]), path);
        }
        assert_escape(fx.apply(&[E::Symlink("../link", "/")]), "../link");
        assert_eq!(fx.tree(), Vec::<String>::new());
        fx.assert_outside_untouched();
        // `..` that stays inside is resolved lexically.
        fx.apply(&[E::File("a/../inside", b"ok")]).expect("apply");
        assert_eq!(fx.tree(), ["inside"]);
    }

    #[test]
    fn absolute_paths_are_contained() {
        let fx = Fx::new();
        let absolute = format!("{}/abs", fx.outside_str());
        fx.apply(&[E::File(&absolute, b"contained")])
            .expect("apply");
        let contained = fx.root.join(absolute.trim_start_matches('/'));
        assert_eq!(read(&contained), "contained");
        fx.assert_outside_untouched();
        fx.apply(&[E::File("/etc/x", b"x"), E::Dir("/", 0o755)])
            .expect("apply");
        assert_eq!(read(&fx.root.join("etc/x")), "x");
    }

    #[test]
    fn writes_through_a_symlink_parent_are_refused() {
        let fx = Fx::new();
        let outside = fx.outside_str();
        fx.apply(&[E::File("file", b"in the rootfs")])
            .expect("setup");
        let link_out = E::Symlink("evil", &outside);
        let cases: Vec<(Vec<E<'_>>, &str)> = vec![
            (
                vec![link_out, E::File("evil/secret", b"pwned")],
                "evil/secret",
            ),
            (
                vec![link_out, E::File("evil/new/deeper", b"pwned")],
                "evil/new/deeper",
            ),
            (vec![link_out, E::Dir("evil/sub/", 0o755)], "evil/sub/"),
            (vec![link_out, E::Symlink("evil/s", "x")], "evil/s"),
            (vec![link_out, E::Hardlink("evil/h", "file")], "evil/h"),
            (vec![link_out, E::Fifo("evil/fifo")], "evil/fifo"),
            (vec![link_out, E::Char("evil/secret")], "evil/secret"),
            (
                vec![link_out, E::File("evil/.wh.secret", b"")],
                "evil/.wh.secret",
            ),
            (
                vec![link_out, E::File("evil/.wh..wh..opq", b"")],
                "evil/.wh..wh..opq",
            ),
            (
                vec![E::Symlink("up", "../../.."), E::File("up/x", b"pwned")],
                "up/x",
            ),
            (
                vec![
                    E::Symlink("rel", "../outside"),
                    E::File("rel/secret", b"pwned"),
                ],
                "rel/secret",
            ),
            // Even a symlink that stays inside the rootfs is never written through.
            (
                vec![E::Symlink("here", "."), E::File("here/x", b"x")],
                "here/x",
            ),
        ];
        for (entries, refused) in cases {
            assert_escape(fx.apply(&entries), refused);
            fx.assert_outside_untouched();
        }
        // The symlink from a lower layer, the write from an upper one.
        let fx = Fx::new();
        fx.apply(&[E::Symlink("etc", &outside)]).expect("lower");
        assert_escape(fx.apply(&[E::File("etc/secret", b"pwned")]), "etc/secret");
        fx.assert_outside_untouched();
    }

    #[test]
    fn what_is_in_the_way_is_replaced_never_written_through() {
        let fx = Fx::new();
        let (outside, secret) = (fx.outside_str(), fx.secret_str());
        fx.apply(&[
            E::Symlink("f", &secret),
            E::Symlink("d", &outside),
            E::Symlink("h", &secret),
            E::FileMode("shadow", b"root only", 0o600),
        ])
        .expect("lower");
        fx.apply(&[
            E::File("f", b"new"),
            E::Dir("d/", 0o755),
            E::File("d/secret", b"new"),
            E::File("other", b"o"),
            E::Hardlink("h", "other"),
            // A hardlink to a file, then a file at the hardlink's path.
            E::Hardlink("alias", "shadow"),
            E::FileMode("alias", b"pwned", 0o666),
        ])
        .expect("upper");
        assert_eq!(
            fx.tree(),
            ["alias", "d", "d/secret", "f", "h", "other", "shadow"]
        );
        assert_eq!(read(&fx.root.join("shadow")), "root only");
        assert_eq!(mode(&fx.root.join("shadow")), 0o600);
        assert_eq!(read(&fx.root.join("alias")), "pwned");
        assert_eq!(read(&fx.root.join("f")), "new");
        assert!(
            fs::symlink_metadata(fx.root.join("d"))
                .expect("lstat")
                .is_dir()
        );
        assert_eq!(read(&fx.root.join("h")), "o");
        fx.assert_outside_untouched();
    }

    #[test]
    fn hardlinks_outside_or_through_symlinks_are_refused() {
        let fx = Fx::new();
        let (outside, secret) = (fx.outside_str(), fx.secret_str());
        for target in [
            "../outside/secret",
            "../../outside/secret",
            "a/../../outside/secret",
        ] {
            assert_escape(fx.apply(&[E::Hardlink("h", target)]), "h");
        }
        assert_escape(
            fx.apply(&[
                E::Symlink("evil", &outside),
                E::Hardlink("h", "evil/secret"),
            ]),
            "h",
        );
        // An absolute target is inside the rootfs, where there is no such file.
        assert_invalid(fx.apply(&[E::Hardlink("h", &secret)]), "h");
        assert_invalid(fx.apply(&[E::Hardlink("h2", "missing")]), "h2");
        assert_invalid(
            fx.apply(&[E::Dir("dir/", 0o755), E::Hardlink("h3", "dir")]),
            "h3",
        );
        assert_invalid(fx.apply(&[E::Hardlink("h4", "/")]), "h4");
        fx.assert_outside_untouched();
        // A hardlink to a symlink links the symlink, not what it points to.
        fx.apply(&[E::Symlink("s", &secret), E::Hardlink("h5", "s")])
            .expect("apply");
        let h5 = fs::symlink_metadata(fx.root.join("h5")).expect("lstat");
        assert!(h5.file_type().is_symlink());
        assert_eq!(h5.nlink(), 2);
        fx.assert_outside_untouched();
    }

    #[test]
    fn device_nodes_are_skipped_and_fifos_created() {
        let fx = Fx::new();
        fx.apply(&[E::File("dev/null", b"lower"), E::File("dev/sda", b"lower")])
            .expect("lower");
        let stats = fx
            .apply(&[
                E::Char("dev/null"),
                E::Block("dev/sda"),
                E::Char("dev/pts/0"),
                E::Fifo("run/fifo"),
            ])
            .expect("upper");
        assert_eq!(fx.tree(), ["dev", "run", "run/fifo"]);
        assert_eq!((stats.skipped, stats.fifos), (3, 1));
        let fifo = fs::symlink_metadata(fx.root.join("run/fifo")).expect("lstat");
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o644);
    }

    #[test]
    fn a_dir_becomes_a_file_and_a_file_a_dir() {
        let fx = Fx::new();
        let outside = fx.outside_str();
        fx.apply(&[
            E::Dir("x/", 0o755),
            E::File("x/child", b"c"),
            E::Symlink("x/link", &outside),
            E::Dir("x/sub/", 0o755),
            E::File("x/sub/deep", b"d"),
            E::File("y", b"file"),
            E::Symlink("z", "y"),
        ])
        .expect("lower");
        fx.apply(&[
            E::File("x", b"now a file"),
            E::Dir("y/", 0o700),
            E::File("y/inner", b"in"),
            E::Dir("z/", 0o755),
        ])
        .expect("upper");
        assert_eq!(fx.tree(), ["x", "y", "y/inner", "z"]);
        assert_eq!(read(&fx.root.join("x")), "now a file");
        assert_eq!(mode(&fx.root.join("y")), 0o700);
        assert!(
            fs::symlink_metadata(fx.root.join("z"))
                .expect("lstat")
                .is_dir()
        );
        fx.assert_outside_untouched();
    }

    #[test]
    fn a_dir_onto_a_dir_updates_attributes_only() {
        let fx = Fx::new();
        fx.apply(&[E::Dir("d/", 0o755), E::File("d/f", b"lower")])
            .expect("lower");
        fx.apply(&[E::DirAt("d/", 0o710, MTIME + 100), E::File("d/g", b"upper")])
            .expect("upper");
        assert_eq!(fx.tree(), ["d", "d/f", "d/g"]);
        let d = fs::metadata(fx.root.join("d")).expect("stat");
        assert_eq!(d.mode() & 0o7777, 0o710);
        assert_eq!(
            d.mtime(),
            (MTIME + 100) as i64,
            "set after the layer's writes"
        );
        // `./` stands for the rootfs itself.
        fx.apply(&[E::DirAt("./", 0o750, MTIME)]).expect("root");
        assert_eq!(mode(&fx.root), 0o750);
        assert_invalid(fx.apply(&[E::File("./", b"")]), "./");
    }

    #[test]
    fn malformed_whiteouts_are_refused_and_aufs_metadata_skipped() {
        let fx = Fx::new();
        for path in [".wh.", ".wh..", "a/.wh...", ".wh.dir/x"] {
            assert_invalid(fx.apply(&[E::File(path, b"")]), path);
        }
        let stats = fx
            .apply(&[
                E::File(".wh..wh.aufs", b""),
                E::Dir(".wh..wh.plnk/", 0o700),
                E::File(".wh..wh.plnk/123.456", b""),
            ])
            .expect("apply");
        assert_eq!(stats.skipped, 3);
        assert_eq!(fx.tree(), Vec::<String>::new());
    }

    #[test]
    fn a_truncated_layer_is_an_error() {
        let fx = Fx::new();
        let mut bytes = layer(&[E::File("big", &[7; 4096])]);
        bytes.truncate(512 + 1000);
        let err = fx.apply_raw(&bytes).unwrap_err();
        assert!(
            matches!(err, UnpackError::Read(_) | UnpackError::Entry { .. }),
            "{err:?}"
        );
    }

    impl Fx {
        fn apply_raw(&self, bytes: &[u8]) -> Result<LayerStats, UnpackError> {
            apply_layer(&self.root, bytes, Compression::None)
        }
    }

    #[test]
    fn long_names_and_pax_records() {
        let fx = Fx::new();
        let mut builder = tar::Builder::new(Vec::new());
        let long = format!("{}file", "dir/".repeat(40));
        let mut h = header(EntryType::Regular, 0o644);
        h.set_size(4);
        builder
            .append_data(&mut h, &long, &b"long"[..])
            .expect("long name");
        builder
            .append_pax_extensions([
                ("path", &b"pax/named"[..]),
                ("mtime", b"1600000000.5"),
                ("uid", b"4000000"),
                ("SCHILY.xattr.user.berth", b"yes"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ])
            .expect("pax");
        let mut h = header(EntryType::Regular, 0o600);
        raw_field(&mut h.as_old_mut().name, "ignored");
        h.set_size(3);
        h.set_cksum();
        builder.append(&h, &b"pax"[..]).expect("append");
        let bytes = builder.into_inner().expect("tar");
        fx.apply_raw(&bytes).expect("apply");
        assert_eq!(read(&fx.root.join(&long)), "long");
        let named = fx.root.join("pax/named");
        assert_eq!(read(&named), "pax");
        let meta = fs::metadata(&named).expect("stat");
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (MTIME as i64, 500_000_000)
        );
        if running_as_root() {
            assert_eq!(meta.uid(), 4_000_000);
        }
        let mut value = [0u8; 16];
        match rustix::fs::getxattr(&named, "user.berth", &mut value[..]) {
            Ok(n) => assert_eq!(&value[..n], b"yes"),
            Err(Errno::NOTSUP) => {} // the file system has no user xattrs
            Err(e) => panic!("getxattr: {e}"),
        }
        assert_eq!(
            rustix::fs::getxattr(&named, "trusted.overlay.opaque", &mut value[..]),
            Err(Errno::NODATA),
            "trusted.* xattrs are dropped"
        );
    }

    #[test]
    fn unpack_image_is_atomic_and_idempotent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let blobs = tmp.path().join("blobs");
        let images = tmp.path().join("images");
        fs::create_dir(&blobs).expect("mkdir");
        let write = |name: &str, bytes: Vec<u8>| {
            let path = blobs.join(name);
            fs::write(&path, bytes).expect("write blob");
            path
        };
        let base = write(
            "base",
            gzip(&layer(&[
                E::Dir("etc/", 0o755),
                E::File("etc/a", b"a"),
                E::File("etc/gone", b"g"),
            ])),
        );
        let hostile = write("hostile", layer(&[E::File("../../x", b"pwned")]));
        let upper = write(
            "upper",
            zstd::encode_all(
                &layer(&[E::File("etc/.wh.gone", b""), E::File("etc/b", b"b")])[..],
                3,
            )
            .expect("zstd"),
        );
        let dest = images.join("sha256-0123");

        let err = unpack_image(
            &[
                (base.clone(), Compression::Gzip),
                (hostile.clone(), Compression::None),
            ],
            &dest,
        )
        .unwrap_err();
        match &err {
            UnpackError::Layer {
                index: 1,
                blob,
                source,
            } => {
                assert_eq!(blob, &hostile);
                assert!(matches!(**source, UnpackError::Escape { .. }), "{source:?}");
            }
            other => panic!("expected a layer error, got {other:?}"),
        }
        assert!(
            !dest.exists(),
            "a failed unpack must not leave its destination"
        );
        assert_eq!(
            tree(&images),
            Vec::<String>::new(),
            "no temporary directory left"
        );
        assert_eq!(
            tree(tmp.path()),
            [
                "blobs",
                "blobs/base",
                "blobs/hostile",
                "blobs/upper",
                "images"
            ]
        );

        // `base` is declared uncompressed: its gzip magic wins.
        unpack_image(
            &[(base, Compression::None), (upper, Compression::Zstd)],
            &dest,
        )
        .expect("unpack");
        assert_eq!(tree(&dest), ["etc", "etc/a", "etc/b"]);
        assert_eq!(mode(&dest), 0o755);
        assert_eq!(
            tree(&images),
            [
                "sha256-0123",
                "sha256-0123/etc",
                "sha256-0123/etc/a",
                "sha256-0123/etc/b"
            ]
        );

        // Unpacked once: the blobs are not even opened again.
        unpack_image(&[(blobs.join("absent"), Compression::Gzip)], &dest).expect("again");
        assert_eq!(tree(&dest), ["etc", "etc/a", "etc/b"]);
    }

    #[test]
    fn error_messages_name_the_entry() {
        let fx = Fx::new();
        let err = fx.apply(&[E::File("../escape", b"")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"layer entry "../escape" escapes the rootfs: `..` leaves the rootfs"#
        );
        let err = fx
            .apply(&[E::Symlink("evil", "/etc"), E::File("evil/passwd", b"")])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"layer entry "evil/passwd" escapes the rootfs: "#.to_owned()
                + r#""evil" is a symlink, and nothing is ever written through one"#
        );
    }

    #[test]
    fn normalize_paths() {
        let ok = |raw: &str, expected: &str| {
            assert_eq!(
                normalize(raw.as_bytes()),
                Ok(PathBuf::from(expected)),
                "{raw}"
            );
        };
        ok("a/b", "a/b");
        ok("/a//b/", "a/b");
        ok("./a/./b/.", "a/b");
        ok("a/../b", "b");
        ok("./", "");
        ok("/", "");
        ok("a/..", "");
        assert_eq!(normalize(b"../a"), Err(BadPath::Escapes));
        assert_eq!(normalize(b"a/../../b"), Err(BadPath::Escapes));
        assert_eq!(normalize(b"/.."), Err(BadPath::Escapes));
        assert_eq!(normalize(b"a\0b"), Err(BadPath::Nul));
    }

    #[test]
    fn pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("12"), Some((12, 0)));
        assert_eq!(t("1.5"), Some((1, 500_000_000)));
        assert_eq!(t("1.123456789999"), Some((1, 123_456_789)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("-3"), Some((-3, 0)));
        for bad in ["", ".5", "1.x", "x", "1e9", "+1"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
