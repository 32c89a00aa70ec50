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
//!
//! | entry | effect |
//! | --- | --- |
//! | a directory where a directory exists | owner, mode, mtime and xattrs updated; children kept |
//! | anything else where something exists | what was there (a whole tree, for a directory) is removed first |
//! | regular file, directory, symlink, FIFO | created, with mode (incl. setuid/setgid/sticky), mtime, owner and xattrs |
//! | hardlink | linked to its target, which must already exist inside the rootfs and not be a directory |
//! | `DIR/.wh.NAME` (whiteout) | `DIR/NAME` from lower layers removed, a file or a whole tree; nothing created |
//! | `DIR/.wh..wh..opq` (opaque marker) | every child of `DIR` from lower layers removed; nothing created |
//! | other `.wh..wh.*` names (aufs metadata such as `.wh..wh.plnk/`) | skipped |
//! | character or block device | **skipped** with a warning; what was at its path is removed |
//! | pax global header | skipped |
//! | any other type (GNU volume or multi-volume headers, …) | refused ([`UnpackError::InvalidEntry`]) |
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
use std::io::{self, BufRead, BufReader, Read};
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
    #[error("layer entry {} escapes the rootfs: {reason}", path.display())]
    Escape {
        /// The entry's path as written in the archive.
        path: PathBuf,
        /// What escapes, and how.
        reason: String,
    },

    /// The entry is malformed or of a type that is never unpacked.
    #[error("invalid layer entry {}: {reason}", path.display())]
    InvalidEntry {
        /// The entry's path as written in the archive.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A file system operation for an entry failed.
    #[error("layer entry {}: {context}", path.display())]
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
        Compression::None => apply_tar(root, BufReader::with_capacity(64 * 1024, layer)),
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
        let mut reader = BufReader::with_capacity(64 * 1024, file);
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
        Ok(()) => {
            tmp.keep();
        }
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
                                    entry = %shown.display(),
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
                return Ok(self.skip_aufs_metadata(&shown));
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
            return self.opaque(&shown, parent);
        }
        if name_bytes.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(self.skip_aufs_metadata(&shown));
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
                format!(
                    "unsupported entry type {:?} ({:?})",
                    other,
                    char::from(other.as_byte())
                ),
            )),
        }
    }

    fn skip_aufs_metadata(&mut self, shown: &Path) {
        tracing::debug!(entry = %shown.display(), "skipping aufs metadata");
        self.stats.skipped += 1;
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
                    rustix::fs::mkdirat(&current, component, Mode::from_raw_mode(IMPLICIT_DIR_MODE))
                        .map_err(|e| {
                            let what = format!("create directory {}", so_far.display());
                            UnpackError::entry(shown, what, e)
                        })?;
                    // Exactly 0755, whatever the umask.
                    let fd = open_dir(current.as_fd(), component, OFlags::RDONLY)
                        .and_then(|fd| {
                            rustix::fs::fchmod(&fd, Mode::from_raw_mode(IMPLICIT_DIR_MODE))?;
                            Ok(fd)
                        })
                        .map_err(|e| {
                            let what = format!("open new directory {}", so_far.display());
                            UnpackError::entry(shown, what, e)
                        })?;
                    fd
                }
                Err(Errno::NOENT) => return Ok(Resolved::Missing),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let stat =
                        rustix::fs::statat(&current, component, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| {
                                let what = format!("inspect {}", so_far.display());
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
                    let what = format!("open directory {}", so_far.display());
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
                format!("parent {} is not a directory", path.display()),
            )),
            Resolved::Missing => Err(UnpackError::invalid(shown, "parent directory is missing")),
        }
    }

    /// The parent directory of `rel`, for removing something at `rel`: `None`
    /// when there is nothing there, a symlink is an escape.
    fn parent_for_removal(
        &self,
        shown: &Path,
        rel: &Path,
    ) -> Result<Option<OwnedFd>, UnpackError> {
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
        let create = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => false,
            Ok(_) => {
                self.clear(shown, parent, name)?;
                true
            }
            Err(Errno::NOENT) => true,
            Err(e) => return Err(UnpackError::entry(shown, "inspect what is at this path", e)),
        };
        if create {
            rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(IMPLICIT_DIR_MODE))
                .map_err(|e| UnpackError::entry(shown, "create directory", e))?;
        }
        let fd = open_dir(parent, name, OFlags::RDONLY)
            .map_err(|e| UnpackError::entry(shown, "open directory", e))?;
        if create {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(IMPLICIT_DIR_MODE))
                .map_err(|e| UnpackError::entry(shown, "set directory mode", e))?;
        }
        Ok(fd)
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
        let mut file = File::from(fd);
        let expected = entry.size();
        let written = io::copy(entry, &mut file)
            .map_err(|e| UnpackError::entry(shown, "write file contents", e))?;
        if written != expected {
            return Err(UnpackError::entry(
                shown,
                format!("the layer ends {written} bytes into this {expected}-byte file"),
                io::ErrorKind::UnexpectedEof,
            ));
        }
        self.set_owner(shown, rustix::fs::fchown(&file, Some(meta.uid), Some(meta.gid)), &meta)?;
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
        self.set_owner(shown, rustix::fs::fchown(&dir, Some(meta.uid), Some(meta.gid)), &meta)?;
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
            return Err(UnpackError::invalid(shown, "symlink target contains a NUL byte"));
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
                format!("hardlink target {} leaves the rootfs", shown_target.display()),
            ),
            BadPath::Nul => UnpackError::invalid(shown, "hardlink target contains a NUL byte"),
        })?;
        let Some(target_name) = target.file_name() else {
            return Err(UnpackError::invalid(shown, "hardlink to the rootfs itself"));
        };
        if target == rel {
            tracing::debug!(entry = %shown.display(), "ignoring a hardlink to itself");
            return Ok(());
        }
        let missing = || {
            UnpackError::invalid(
                shown,
                format!("hardlink target {} does not exist", shown_target.display()),
            )
        };
        let target_parent = match self.resolve(shown, target.parent().unwrap_or(Path::new("")), false)? {
            Resolved::Dir(fd) => fd,
            Resolved::Symlink(link) => {
                return Err(UnpackError::escape(
                    shown,
                    format!(
                        "hardlink target {} is reached through symlink {}",
                        shown_target.display(),
                        link.display()
                    ),
                ));
            }
            Resolved::Missing | Resolved::NotDir(_) => return Err(missing()),
        };
        match rustix::fs::statat(&target_parent, target_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return Err(UnpackError::invalid(
                    shown,
                    format!("hardlink target {} is a directory", shown_target.display()),
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
        self.set_owner(shown, rustix::fs::fchown(&fd, Some(meta.uid), Some(meta.gid)), &meta)?;
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
        let kind = if kind == EntryType::Char { "character" } else { "block" };
        tracing::warn!(
            entry = %shown.display(),
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

    /// `DIR/.wh..wh..opq`: removes every child of `dir` that this layer did not
    /// put there.
    fn opaque(&mut self, shown: &Path, dir: &Path) -> Result<(), UnpackError> {
        self.stats.opaque_dirs += 1;
        // The marker says DIR is a directory of this layer: make it one.
        let fd = self.dir_for_write(shown, dir)?;
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
                UnpackError::entry(shown, format!("remove {} of a lower layer", rel.display()), e)
            });
        }
        let dir = match open_dir(parent, name, OFlags::RDONLY) {
            Ok(fd) => fd,
            // This layer's own file, symlink, …: kept.
            Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => return Ok(()),
            Err(e) => {
                return Err(UnpackError::entry(shown, format!("open {}", rel.display()), e));
            }
        };
        let children = read_names(dir.as_fd())
            .map_err(|e| UnpackError::entry(shown, format!("list {}", rel.display()), e))?;
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
                tracing::trace!(entry = %shown.display(), "not root: ownership not applied");
                Ok(())
            }
            Err(e) => Err(UnpackError::entry(
                shown,
                format!("change owner to {}:{}", meta.uid.as_raw(), meta.gid.as_raw()),
                e,
            )),
        }
    }

    fn set_xattrs(&self, shown: &Path, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), UnpackError> {
        for (name, value) in &meta.xattrs {
            match rustix::fs::fsetxattr(fd, name.as_os_str(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e @ (Errno::NOTSUP | Errno::PERM | Errno::ACCESS)) => tracing::warn!(
                    entry = %shown.display(),
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
        format!(
            "{} is a symlink, and nothing is ever written through one",
            link.display()
        ),
    )
}

/// The last component of a normalized, non-empty path.
fn file_name(rel: &Path) -> &OsStr {
    rel.file_name().unwrap_or_default()
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
