//! One layer's entries put in place: the [`Applier`], which dispatches each
//! entry on its name (whiteout, opaque marker, aufs metadata) and type, with
//! one method per entry type, and applies directory modes and times last.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use tar::EntryType;

use super::limits::{LimitExceeded, Tally, TarGuard, clean, excerpt};
use super::meta::Meta;
use super::path::{BadPath, Resolved, file_name, make_dir, normalize, open_dir};
use super::whiteout::{OPAQUE_MARKER, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX, remove_all_at};
use super::written::{NodeId, Written};
use super::{Applier, COPY_BUFFER, LayerStats, UnpackError, shown};

/// Applies the entries of an uncompressed tar stream, counting them and its
/// bytes in `tally`.
pub(super) fn apply_tar<R: Read>(
    root: OwnedFd,
    reader: R,
    tally: &Tally<'_>,
) -> Result<LayerStats, UnpackError> {
    let mut applier = Applier {
        privileged: rustix::process::geteuid().is_root(),
        root,
        limits: tally.limits,
        stats: LayerStats::default(),
        written: Written::new(tally.limits.max_entries),
        deferred_dirs: HashMap::new(),
        cleaned: HashSet::new(),
    };
    let mut archive = tar::Archive::new(TarGuard::new(reader, tally));
    let applied = (|| {
        let read = |e| UnpackError::Read(clean(e));
        for entry in archive.entries().map_err(read)? {
            let mut entry = entry.map_err(read)?;
            applier.apply(&mut entry)?;
        }
        applier.finish()?;
        // Read to the end: compressed streams check their checksums there.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(read)?;
        Ok(())
    })();
    // Whatever error the guard's refusal became on its way up, the refusal
    // is what happened.
    applied.map_err(|e| tally.take_tripped().map_or(e, UnpackError::Limit))?;
    Ok(applier.stats)
}

/// Refuses a path or link target longer than the limit, quoting the entry.
fn check_length(
    what: &'static str,
    bytes: &[u8],
    entry: &[u8],
    limit: usize,
) -> Result<(), UnpackError> {
    if bytes.len() > limit {
        return Err(UnpackError::Limit(LimitExceeded::PathLength {
            what,
            path: excerpt(entry),
            len: bytes.len(),
            limit,
        }));
    }
    Ok(())
}

/// Refuses a normalized path deeper than the limit, quoting the entry.
fn check_depth(
    what: &'static str,
    rel: &Path,
    entry: &Path,
    limit: usize,
) -> Result<(), UnpackError> {
    let depth = rel.components().count();
    if depth > limit {
        return Err(UnpackError::Limit(LimitExceeded::Depth {
            what,
            path: shown(entry),
            depth,
            limit,
        }));
    }
    Ok(())
}

impl Applier {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            self.stats.skipped += 1;
            return Ok(());
        }
        let raw = entry.path_bytes();
        check_length("path", &raw, &raw, self.limits.max_path_bytes)?;
        let raw = raw.into_owned();
        let shown = PathBuf::from(OsString::from_vec(raw.clone()));
        let rel = normalize(&raw).map_err(|bad| match bad {
            BadPath::Escapes => UnpackError::escape(&shown, "`..` leaves the rootfs"),
            BadPath::Nul => UnpackError::invalid(&shown, "the path contains a NUL byte"),
        })?;
        check_depth("path", &rel, &shown, self.limits.max_depth)?;

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
        tracing::debug!(entry = %super::shown(shown), "skipping aufs metadata");
        self.stats.skipped += 1;
        Ok(())
    }

    /// Records that this layer put `rel` in place (with its ancestors).
    pub(super) fn mark(&mut self, rel: &Path) -> Result<NodeId, UnpackError> {
        self.written.insert(rel).map_err(UnpackError::Limit)
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
            .map_err(|e| UnpackError::entry(shown, "write file contents", clean(e)))?;
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
        self.mark(rel)?;
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
        let node = self.mark(rel)?;
        self.deferred_dirs.insert(node, (meta.mode, meta.mtime));
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
        check_length(
            "symlink target",
            &target,
            shown.as_os_str().as_bytes(),
            self.limits.max_path_bytes,
        )?;
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
        self.mark(rel)?;
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
        check_length(
            "hardlink target",
            &raw_target,
            shown.as_os_str().as_bytes(),
            self.limits.max_path_bytes,
        )?;
        let shown_target = excerpt(&raw_target);
        let target = normalize(&raw_target).map_err(|bad| match bad {
            BadPath::Escapes => UnpackError::escape(
                shown,
                format!("hardlink target {shown_target} leaves the rootfs"),
            ),
            BadPath::Nul => UnpackError::invalid(shown, "hardlink target contains a NUL byte"),
        })?;
        check_depth("hardlink target", &target, shown, self.limits.max_depth)?;
        let Some(target_name) = target.file_name() else {
            return Err(UnpackError::invalid(shown, "hardlink to the rootfs itself"));
        };
        if target == rel {
            tracing::debug!(entry = %super::shown(shown), "ignoring a hardlink to itself");
            return Ok(());
        }
        let missing = || {
            UnpackError::invalid(
                shown,
                format!("hardlink target {shown_target} does not exist"),
            )
        };
        let target_parent =
            match self.resolve(shown, target.parent().unwrap_or(Path::new("")), false)? {
                Resolved::Dir(fd) => fd,
                Resolved::Symlink(link) => {
                    return Err(UnpackError::escape(
                        shown,
                        format!(
                            "hardlink target {shown_target} is reached through symlink {}",
                            super::shown(&link)
                        ),
                    ));
                }
                Resolved::Missing | Resolved::NotDir(_) => return Err(missing()),
            };
        match rustix::fs::statat(&target_parent, target_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return Err(UnpackError::invalid(
                    shown,
                    format!("hardlink target {shown_target} is a directory"),
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
        self.mark(rel)?;
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
        self.mark(rel)?;
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
            entry = %super::shown(shown),
            "skipping {kind} device node: device nodes are never created in a rootfs"
        );
        self.stats.skipped += 1;
        Ok(())
    }

    /// Applies the deferred directory modes and mtimes, deepest first. A
    /// directory that a later entry removed or replaced is passed over.
    fn finish(&mut self) -> Result<(), UnpackError> {
        let deferred = std::mem::take(&mut self.deferred_dirs);
        let ids: Vec<NodeId> = deferred.keys().copied().collect();
        let mut dirs: Vec<_> = self
            .written
            .paths(ids.iter().copied())
            .into_iter()
            .zip(ids.iter().map(|id| deferred[id]))
            .collect();
        dirs.sort_by_key(|((_, depth), _)| Reverse(*depth));
        for ((rel, _), (mode, mtime)) in dirs {
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
