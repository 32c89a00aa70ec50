//! Whiteouts (`.wh.NAME`) and opaque directories (`.wh..wh..opq`): removing
//! what lower layers put somewhere, but never what this layer put there; and
//! removing a whole tree ([`remove_all_at`]), also what any entry replaces.
//!
//! Both walks are iterative with one directory open at a time, so a tree's
//! depth costs neither stack nor file descriptors. A directory this layer
//! has already cleared of lower content is not walked again, so repeating a
//! marker costs nothing.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, Mode, OFlags};
use rustix::io::Errno;

use super::path::{file_name, open_dir};
use super::written::NodeId;
use super::{Applier, UnpackError};

/// The name prefix that marks a whiteout.
pub(super) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name prefix of aufs metadata (and of the opaque marker).
pub(super) const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// The name that marks its directory opaque.
pub(super) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

#[cfg(test)]
thread_local! {
    /// Walks of `remove_lower` on this thread, for tests.
    pub(super) static WALKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Applier {
    /// `.wh.NAME`: removes `hidden` unless this layer put it there.
    pub(super) fn whiteout(&mut self, shown: &Path, hidden: &Path) -> Result<(), UnpackError> {
        self.stats.whiteouts += 1;
        let parent_node = self.written.find(hidden.parent().unwrap_or(Path::new("")));
        let node = parent_node.and_then(|p| self.written.child(p, file_name(hidden)));
        if node.is_some_and(|n| self.cleaned.contains(&n)) {
            // Walked already: lower layers have nothing left below it.
            return Ok(());
        }
        if let Some(parent) = self.parent_for_removal(shown, hidden)? {
            self.remove_lower(
                shown,
                parent.as_fd(),
                file_name(hidden),
                hidden,
                parent_node,
            )?;
        }
        self.cleaned.extend(node);
        Ok(())
    }

    /// `DIR/.wh..wh..opq` (`marker`): removes every child of DIR that this
    /// layer did not put there. DIR is resolved like the parent of any entry:
    /// created if missing, refused if it is a symlink or not a directory.
    pub(super) fn opaque(&mut self, shown: &Path, marker: &Path) -> Result<(), UnpackError> {
        self.stats.opaque_dirs += 1;
        let dir = marker.parent().unwrap_or(Path::new(""));
        let fd = open_dir(
            self.parent_for_write(shown, marker)?.as_fd(),
            OsStr::new("."),
            OFlags::RDONLY,
        )
        .map_err(|e| UnpackError::entry(shown, "open the opaque directory", e))?;
        let node = self.mark(dir)?;
        if self.cleaned.contains(&node) {
            // Walked already: lower layers have nothing left in it.
            return Ok(());
        }
        let children =
            read_names(fd.as_fd()).map_err(|e| UnpackError::entry(shown, "list directory", e))?;
        for child in children {
            self.remove_lower(shown, fd.as_fd(), &child, &dir.join(&child), Some(node))?;
        }
        self.cleaned.insert(node);
        Ok(())
    }

    /// Removes what lower layers put at `parent/name` (`rel`; `parent_node`
    /// is the parent in this layer's trie, if this layer put anything there):
    /// all of it when this layer put nothing there, else the children this
    /// layer did not put there.
    ///
    /// Iterative, like [`remove_all_at`]: this layer's own directories can be
    /// nested as deep as its entry paths allow. The walk holds one name per
    /// level, never a path per level; paths are made only for messages.
    fn remove_lower(
        &self,
        shown: &Path,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        parent_node: Option<NodeId>,
    ) -> Result<(), UnpackError> {
        #[cfg(test)]
        WALKS.with(|w| w.set(w.get() + 1));
        let node = parent_node.and_then(|p| self.written.child(p, name));
        let Some((top, top_node)) =
            self.descend_lower(shown, parent, name, node, &|| rel.to_owned())?
        else {
            return Ok(());
        };
        let list =
            |rel: &Path, e| UnpackError::entry(shown, format!("list {}", super::shown(rel)), e);
        let mut current = top;
        let mut stack = vec![
            Level::read(current.as_fd(), (OsString::new(), top_node)).map_err(|e| list(rel, e))?,
        ];
        loop {
            let Some(level) = stack.last_mut() else {
                return Ok(());
            };
            let Some(child) = level.children.pop() else {
                stack.pop();
                if let Some(up) = stack.last() {
                    current = climb(current.as_fd(), up.id).map_err(|e| {
                        let what =
                            format!("return to {}", super::shown(&path_at(rel, &stack, None)));
                        UnpackError::entry(shown, what, e)
                    })?;
                }
                continue;
            };
            let child_node = self.written.child(level.label.1, &child);
            let child_rel = || path_at(rel, &stack, Some(&child));
            if let Some((dir, node)) =
                self.descend_lower(shown, current.as_fd(), &child, child_node, &child_rel)?
            {
                let next = Level::read(dir.as_fd(), (child.clone(), node))
                    .map_err(|e| list(&child_rel(), e))?;
                stack.push(next);
                current = dir;
            }
        }
    }

    /// One step of [`Self::remove_lower`] at `parent/name` (`rel()` for
    /// messages; its node in this layer's trie is `node` if this layer put
    /// anything there): removes it whole when this layer did not put it
    /// there; else opens it when it is a directory to look into (`None` for
    /// this layer's own file, symlink, …, which is kept).
    fn descend_lower(
        &self,
        shown: &Path,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        node: Option<NodeId>,
        rel: &dyn Fn() -> PathBuf,
    ) -> Result<Option<(OwnedFd, NodeId)>, UnpackError> {
        let Some(node) = node else {
            remove_all_at(parent, name).map_err(|e| {
                let what = format!("remove {} of a lower layer", super::shown(&rel()));
                UnpackError::entry(shown, what, e)
            })?;
            return Ok(None);
        };
        match open_dir(parent, name, OFlags::RDONLY) {
            Ok(fd) => Ok(Some((fd, node))),
            Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => Ok(None),
            Err(e) => Err(UnpackError::entry(
                shown,
                format!("open {}", super::shown(&rel())),
                e,
            )),
        }
    }
}

/// The path of the walk of [`Applier::remove_lower`] from `top` down the
/// levels of `stack` below the first, then `child`.
fn path_at(top: &Path, stack: &[Level<(OsString, NodeId)>], child: Option<&OsStr>) -> PathBuf {
    let mut path = top.to_owned();
    for level in stack.iter().skip(1) {
        path.push(&level.label.0);
    }
    if let Some(child) = child {
        path.push(child);
    }
    path
}

/// The names in a directory opened for reading, without `.` and `..`.
pub(super) fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
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
///
/// Iterative, with one directory of the tree open at a time, so that neither
/// the stack nor the file descriptors used grow with the tree's depth (a
/// layer's paths, and so its trees, can be nested thousands deep). The way
/// back up is `openat(dir, "..")`, checked against the device and inode seen
/// on the way down: a directory moved meanwhile is an error, never a removal
/// somewhere else.
pub(super) fn remove_all_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(top) = unlink_or_open(parent, name)? else {
        return Ok(());
    };
    let mut current = top;
    let mut stack = vec![Level::read(current.as_fd(), name.to_owned())?];
    loop {
        let Some(level) = stack.last_mut() else {
            return Ok(());
        };
        if let Some(child) = level.children.pop() {
            if let Some(dir) = unlink_or_open(current.as_fd(), &child)? {
                stack.push(Level::read(dir.as_fd(), child)?);
                current = dir;
            }
            continue;
        }
        // `current` is empty now: remove it from its parent.
        let emptied = stack.pop().map(|level| level.label).unwrap_or_default();
        match stack.last() {
            Some(up) => {
                current = climb(current.as_fd(), up.id)?;
                remove_dir(current.as_fd(), &emptied)?;
            }
            None => {
                drop(current);
                return remove_dir(parent, &emptied);
            }
        }
    }
}

/// A directory on the way down a tree: its device and inode, what the walk
/// calls it, and the children still to visit.
struct Level<L> {
    id: (u64, u64),
    label: L,
    children: Vec<OsString>,
}

impl<L> Level<L> {
    fn read(dir: BorrowedFd<'_>, label: L) -> io::Result<Self> {
        Ok(Self {
            id: identity(dir)?,
            label,
            children: read_names(dir)?,
        })
    }
}

/// Device and inode of an open file.
fn identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let stat = rustix::fs::fstat(fd)?;
    Ok((stat.st_dev, stat.st_ino))
}

/// The parent of directory `dir`, which must be the directory `expected`
/// (device, inode) that the walk came down from.
fn climb(dir: BorrowedFd<'_>, expected: (u64, u64)) -> io::Result<OwnedFd> {
    let up = open_dir(dir, OsStr::new(".."), OFlags::RDONLY)?;
    if identity(up.as_fd())? == expected {
        Ok(up)
    } else {
        Err(io::Error::other(
            "a directory was moved while its tree was being removed",
        ))
    }
}

/// Unlinks `parent/name` unless it is a directory, which is opened for
/// reading instead (`None` when nothing is there, or once it is unlinked).
fn unlink_or_open(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<OwnedFd>> {
    let unlink_error = match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(None),
        // What unlink says of a directory: EISDIR on Linux, EPERM in POSIX.
        Err(e @ (Errno::ISDIR | Errno::PERM)) => e,
        Err(e) => return Err(e.into()),
    };
    match open_dir(parent, name, OFlags::RDONLY) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::NOTDIR) => Err(unlink_error.into()),
        // Unprivileged, and the directory (say mode 0) shuts us out: it is going
        // anyway, so open it up first. `chmodat` would follow a symlink, but a
        // symlink is unlinked above and never gets here.
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(parent, name, Mode::RWXU, AtFlags::empty())?;
            Ok(Some(open_dir(parent, name, OFlags::RDONLY)?))
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes the (empty) directory `parent/name`; gone already is fine.
fn remove_dir(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
