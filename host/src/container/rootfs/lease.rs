//! Who holds an unpacked rootfs, and removing what nobody holds.
//!
//! An unpack holds a shared `flock` on its temporary directory from before
//! the first layer is applied, and keeps it through the rename: what
//! [`unpack_image`](super::unpack_image) returns is that lock, a
//! [`RootfsLease`], which a deploy holds until its instances are in place (an
//! image already unpacked is leased the same way). [`collect_garbage`] takes
//! an exclusive lock without waiting before it removes anything, so it never
//! removes a directory that an unpack or a deploy holds. It also keeps every
//! rootfs an overlay mount uses as its lower layer (the instances of running
//! and draining revisions), and every one its caller names as in use.
//!
//! A directory can be removed between its creation and its lock; the
//! holder checks after locking that the directory is still linked and
//! starts again if it is not.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::UnpackError;
use super::path::open_dir;
use super::whiteout::{read_names, remove_all_at};

/// How often a temporary directory is made again when it is removed before
/// it could be locked.
const CREATE_ATTEMPTS: usize = 5;

/// A shared lock on an unpacked rootfs: while it is held,
/// [`collect_garbage`] does not remove the directory.
#[derive(Debug)]
pub struct RootfsLease {
    /// The directory, locked shared: held, never read.
    _lock: OwnedFd,
    path: PathBuf,
}

impl RootfsLease {
    /// The rootfs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A lease on the existing rootfs at `path`, or `None` when there is none
    /// (or it was removed while the lock was awaited).
    pub(super) fn existing(path: &Path) -> Result<Option<Self>, UnpackError> {
        let dir = match rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(UnpackError::io("open the unpacked image", path, e)),
        };
        // Waits while garbage collection removes it, then finds it gone.
        rustix::fs::flock(&dir, FlockOperation::LockShared)
            .map_err(|e| UnpackError::io("lock", path, e))?;
        if !linked(dir.as_fd()).map_err(|e| UnpackError::io("inspect", path, e))? {
            return Ok(None);
        }
        Ok(Some(Self {
            _lock: dir,
            path: path.to_owned(),
        }))
    }
}

/// Whether an open directory is still linked (a removed one has no links).
fn linked(dir: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rustix::fs::fstat(dir)?.st_nlink > 0)
}

/// A temporary directory being unpacked into, locked shared, removed with
/// everything in it when dropped (unless renamed into place).
#[derive(Debug)]
pub(super) struct TempTree {
    parent: OwnedFd,
    name: OsString,
    path: PathBuf,
    dir: Option<OwnedFd>,
}

impl TempTree {
    /// Makes `parent/PREFIXxxxxxx` and locks it.
    pub(super) fn create(parent: &Path, prefix: &OsStr) -> Result<Self, UnpackError> {
        let parent_fd = rustix::fs::open(
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::io("open", parent, e))?;
        for _ in 0..CREATE_ATTEMPTS {
            let made = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in(parent)
                .map_err(|e| UnpackError::io("create a temporary directory in", parent, e))?;
            // Removed by this guard from now on, never by tempfile's.
            let path = made.keep();
            let name = path.file_name().map(OsStr::to_owned).unwrap_or_default();
            let mut tree = Self {
                parent: parent_fd
                    .try_clone()
                    .map_err(|e| UnpackError::io("open", parent, e))?,
                name,
                path,
                dir: None,
            };
            let dir = open_dir(tree.parent.as_fd(), &tree.name, OFlags::RDONLY);
            let dir = match dir {
                Ok(dir) => dir,
                // Collected before it was locked: make another.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(UnpackError::io("open", &tree.path, e)),
            };
            rustix::fs::flock(&dir, FlockOperation::LockShared)
                .map_err(|e| UnpackError::io("lock", &tree.path, e))?;
            let still_there =
                linked(dir.as_fd()).map_err(|e| UnpackError::io("inspect", &tree.path, e))?;
            tree.dir = Some(dir);
            if still_there {
                return Ok(tree);
            }
        }
        Err(UnpackError::io(
            "create a temporary directory in",
            parent,
            io::Error::other("each one was removed before it could be locked"),
        ))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory, open for reading.
    pub(super) fn dir(&self) -> BorrowedFd<'_> {
        match &self.dir {
            Some(dir) => dir.as_fd(),
            None => self.parent.as_fd(),
        }
    }

    /// Renames the directory to `dest`; the lock becomes the lease of `dest`.
    /// On failure the tree is handed back (and removed when dropped).
    pub(super) fn rename_to(mut self, dest: &Path) -> Result<RootfsLease, (io::Error, Self)> {
        if let Err(e) = std::fs::rename(&self.path, dest) {
            return Err((e, self));
        }
        self.name.clear();
        match self.dir.take() {
            Some(dir) => Ok(RootfsLease {
                _lock: dir,
                path: dest.to_owned(),
            }),
            None => Err((io::Error::other("the directory was never opened"), self)),
        }
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        if let Err(e) = remove_all_at(self.parent.as_fd(), &self.name) {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "cannot remove a temporary unpack directory; garbage collection will"
            );
        }
    }
}

/// What [`collect_garbage`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Collected {
    /// Unpacked rootfs directories no one used.
    pub rootfs: usize,
    /// Temporary directories left by unpacks that did not finish.
    pub temp: usize,
}

/// Removes from `dir` (`<data-dir>/rootfs`) every unpacked rootfs (a
/// directory named by 64 hex digits) that `in_use` does not name, no overlay
/// mount uses as its lower layer and no [`RootfsLease`] holds, and every
/// temporary directory (`*.tmp-*`) that no unpack holds. Anything else is
/// left alone; a missing `dir` holds nothing.
///
/// Blocking: trees are removed one entry at a time.
///
/// # Errors
/// When `dir` cannot be listed or something cannot be removed.
pub fn collect_garbage(
    dir: &Path,
    in_use: impl Fn(&str) -> bool,
) -> Result<Collected, UnpackError> {
    let mut collected = Collected::default();
    let fd = match rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(collected),
        Err(e) => return Err(UnpackError::io("open", dir, e)),
    };
    let names = read_names(fd.as_fd()).map_err(|e| UnpackError::io("list", dir, e))?;
    // Overlay options name the lower directory as it was given: compare both.
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let mut lowers = None;
    for name in names {
        let Some(text) = name.to_str() else { continue };
        let is_temp = text.contains(".tmp-");
        if !is_temp {
            if !is_digest_hex(text) || in_use(text) {
                continue;
            }
            let lowers = lowers.get_or_insert_with(overlay_lowers);
            let Some(lowers) = lowers else {
                // Without mountinfo nothing tells a mounted rootfs apart.
                continue;
            };
            let (path, real) = (dir.join(&name), canonical.join(&name));
            if lowers.iter().any(|l| *l == path || *l == real) {
                continue;
            }
        }
        let path = dir.join(&name);
        if remove_unheld(fd.as_fd(), &name).map_err(|e| UnpackError::io("remove", &path, e))? {
            tracing::info!(path = %path.display(), "removed an unused rootfs directory");
            if is_temp {
                collected.temp += 1;
            } else {
                collected.rootfs += 1;
            }
        }
    }
    Ok(collected)
}

/// `sha256` hex: 64 lowercase hex digits.
fn is_digest_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Removes directory `parent/name` if no one holds a lock on it; whether it
/// was removed.
fn remove_unheld(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    let dir = match open_dir(parent, name, OFlags::RDONLY) {
        Ok(dir) => dir,
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    match rustix::fs::flock(&dir, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // The name must still be the directory locked.
    let here = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW);
    let locked = rustix::fs::fstat(&dir)?;
    match here {
        Ok(here) if (here.st_dev, here.st_ino) == (locked.st_dev, locked.st_ino) => {}
        Ok(_) | Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    remove_all_at(parent, name)?;
    Ok(true)
}

/// Lower directories of the overlay mounts of this mount namespace, from
/// `/proc/self/mountinfo`; `None` when it cannot be read.
fn overlay_lowers() -> Option<Vec<PathBuf>> {
    match std::fs::read("/proc/self/mountinfo") {
        Ok(info) => Some(parse_overlay_lowers(&info)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read mountinfo: no rootfs is removed");
            None
        }
    }
}

fn parse_overlay_lowers(info: &[u8]) -> Vec<PathBuf> {
    let mut lowers = Vec::new();
    for line in info.split(|&b| b == b'\n') {
        // `… - FSTYPE SOURCE SUPER_OPTIONS`
        let Some(dash) = line.windows(3).position(|w| w == b" - ") else {
            continue;
        };
        let mut fields = line[dash + 3..].split(|&b| b == b' ');
        let (Some(b"overlay"), Some(_), Some(options)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        for option in options.split(|&b| b == b',') {
            if let Some(value) = option.strip_prefix(b"lowerdir=") {
                lowers.extend(
                    unescape(value)
                        .split(|&b| b == b':')
                        .filter(|l| !l.is_empty())
                        .map(|l| PathBuf::from(OsString::from_vec(l.to_vec()))),
                );
            }
        }
    }
    lowers
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_lowers_from_mountinfo() {
        let info = b"\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:50 / /d/c/a/rootfs rw,nodev shared:2 - overlay overlay rw,lowerdir=/d/rootfs/ab,upperdir=/u,workdir=/w
91 22 0:51 / /d/c/b/rootfs rw - overlay overlay rw,lowerdir=/d/with\\040space:/d/second,upperdir=/u2
92 22 0:52 / /t rw - tmpfs tmpfs rw,lowerdir=/not/overlay
";
        assert_eq!(
            parse_overlay_lowers(info),
            [
                PathBuf::from("/d/rootfs/ab"),
                PathBuf::from("/d/with space"),
                PathBuf::from("/d/second"),
            ]
        );
    }

    #[test]
    fn digest_names() {
        assert!(is_digest_hex(&"ab".repeat(32)));
        assert!(!is_digest_hex(&"AB".repeat(32)));
        assert!(!is_digest_hex("ab"));
        assert!(!is_digest_hex(&format!("{}.tmp-x", "ab".repeat(32))));
    }
}
