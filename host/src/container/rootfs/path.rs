//! Entry paths: normalized lexically ([`normalize`]), then resolved from the
//! rootfs descriptor one component at a time, never following a symlink
//! ([`Applier::resolve`]).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{Applier, UnpackError};

/// Mode of directories that a layer needs but does not list (like `mkdir -p`).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Why an entry's path was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BadPath {
    /// `..` climbs above the rootfs.
    Escapes,
    /// A NUL byte (only possible in a pax `path` record).
    Nul,
}

/// An entry path relative to the rootfs: no leading `/`, no empty, `.` or `..`
/// components. The empty path is the rootfs itself.
pub(super) fn normalize(raw: &[u8]) -> Result<PathBuf, BadPath> {
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
pub(super) enum Resolved {
    /// The directory, opened without following any symlink.
    Dir(OwnedFd),
    /// A component does not exist.
    Missing,
    /// This prefix of the path is a symlink.
    Symlink(PathBuf),
    /// This prefix of the path is neither a directory nor a symlink.
    NotDir(PathBuf),
}

impl Applier {
    /// Opens directory `dir` (relative to the rootfs) one component at a time,
    /// never following a symlink. With `create`, missing components are created
    /// (mode [`IMPLICIT_DIR_MODE`]) and [`Resolved::Missing`] is never returned.
    pub(super) fn resolve(
        &self,
        shown: &Path,
        dir: &Path,
        create: bool,
    ) -> Result<Resolved, UnpackError> {
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
                        let what = format!("create directory {}", super::shown(&so_far));
                        UnpackError::entry(shown, what, e)
                    })?
                }
                Err(Errno::NOENT) => return Ok(Resolved::Missing),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let stat = rustix::fs::statat(&current, component, AtFlags::SYMLINK_NOFOLLOW);
                    let stat = stat.map_err(|e| {
                        let what = format!("inspect {}", super::shown(&so_far));
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
                    let what = format!("open directory {}", super::shown(&so_far));
                    return Err(UnpackError::entry(shown, what, e));
                }
            };
        }
        Ok(Resolved::Dir(current))
    }

    /// The parent directory of `rel`, for putting something at `rel`: missing
    /// directories are created, a symlink is an escape.
    pub(super) fn parent_for_write(
        &self,
        shown: &Path,
        rel: &Path,
    ) -> Result<OwnedFd, UnpackError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        match self.resolve(shown, parent, true)? {
            Resolved::Dir(fd) => Ok(fd),
            Resolved::Symlink(link) => Err(symlink_escape(shown, &link)),
            Resolved::NotDir(path) => Err(UnpackError::invalid(
                shown,
                format!("parent {} is not a directory", super::shown(&path)),
            )),
            Resolved::Missing => Err(UnpackError::invalid(shown, "parent directory is missing")),
        }
    }

    /// The parent directory of `rel`, for removing something at `rel`: `None`
    /// when there is nothing there, a symlink is an escape.
    pub(super) fn parent_for_removal(
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
}

fn symlink_escape(shown: &Path, link: &Path) -> UnpackError {
    UnpackError::escape(
        shown,
        format!(
            "{} is a symlink, and nothing is ever written through one",
            super::shown(link)
        ),
    )
}

/// The last component of a normalized, non-empty path.
pub(super) fn file_name(rel: &Path) -> &OsStr {
    rel.file_name().unwrap_or_default()
}

/// Creates directory `parent/name` with mode [`IMPLICIT_DIR_MODE`] exactly,
/// whatever the umask, and opens it for reading.
pub(super) fn make_dir(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    let mode = Mode::from_raw_mode(IMPLICIT_DIR_MODE);
    rustix::fs::mkdirat(parent, name, mode)?;
    let dir = open_dir(parent, name, OFlags::RDONLY)?;
    rustix::fs::fchmod(&dir, mode)?;
    Ok(dir)
}

/// Opens directory `parent/name` without following a symlink.
pub(super) fn open_dir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    access: OFlags,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        access | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}
