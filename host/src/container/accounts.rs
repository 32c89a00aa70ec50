//! The users and groups of an image: its `/etc/passwd` and `/etc/group`,
//! read inside its rootfs ([`Accounts::read`]), and an image's `User`
//! resolved against them the way Docker and containerd do ([`resolve_user`]).
//!
//! Every path component (symlinks and `..` included) is resolved as if the
//! rootfs were `/` (`openat2` with `RESOLVE_IN_ROOT`, Linux 5.6+), so a
//! hostile symlink in the image cannot make berth read a host file; a FIFO
//! cannot block the read, and a file larger than 4 MiB is refused.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::spec::{ResolvedUser, SpecError};

/// The image's `User` resolved against the accounts of the rootfs at
/// `root`: what each instance start does, and what deploy does once after
/// unpacking, so that a `User` the image does not have is refused there.
///
/// # Errors
/// As [`Accounts::read`] and [`resolve_user`].
pub fn image_user(root: &Path, user: Option<&str>) -> Result<ResolvedUser, SpecError> {
    resolve_user(user, &Accounts::read(root)?)
}

/// Largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_ACCOUNT_FILE: u64 = 4 * 1024 * 1024;

/// The account databases of an image (`/etc/passwd` and `/etc/group` text).
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// `/etc/passwd`, empty when the image has none.
    pub passwd: String,
    /// `/etc/group`, empty when the image has none.
    pub group: String,
}

impl Accounts {
    /// Reads `/etc/passwd` and `/etc/group` of the rootfs at `root`, resolving
    /// every path component (symlinks included) inside `root`. Missing files
    /// read as empty.
    ///
    /// # Errors
    /// [`SpecError::AccountFile`] when a file exists but cannot be read, is not
    /// a regular file or is larger than 4 MiB.
    pub fn read(root: &Path) -> Result<Self, SpecError> {
        let read = |path: &'static str| {
            read_in_root(root, path)
                .map(|b| String::from_utf8_lossy(&b.unwrap_or_default()).into_owned())
                .map_err(|source| SpecError::AccountFile { path, source })
        };
        Ok(Self {
            passwd: read("etc/passwd")?,
            group: read("etc/group")?,
        })
    }

    /// `(uid, gid)` of the passwd entry named `name`.
    fn user_by_name(&self, name: &str) -> Option<(u32, u32)> {
        records(&self.passwd).find_map(|f| {
            (f.first() == Some(&name))
                .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
        })
    }

    /// `(name, gid)` of the first passwd entry with `uid`.
    fn user_by_uid(&self, uid: u32) -> Option<(String, u32)> {
        records(&self.passwd).find_map(|f| {
            (f.get(2)?.parse::<u32>().ok()? == uid)
                .then(|| Some(((*f.first()?).to_owned(), f.get(3)?.parse().ok()?)))?
        })
    }

    fn group_by_name(&self, name: &str) -> Option<u32> {
        records(&self.group)
            .find_map(|f| (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok())?)
    }

    /// Gids of the groups that list `user` as a member, in file order.
    fn groups_of(&self, user: &str, primary: u32) -> Vec<u32> {
        let mut gids = Vec::new();
        for f in records(&self.group) {
            let members = f.get(3).copied().unwrap_or("");
            if members.split(',').any(|m| m.trim() == user)
                && let Some(gid) = f.get(2).and_then(|g| g.parse::<u32>().ok())
                && gid != primary
                && !gids.contains(&gid)
            {
                gids.push(gid);
            }
        }
        gids
    }
}

/// Colon-separated records of an account file, skipping blanks and comments.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

/// Resolves an image's `User` the way Docker and containerd do:
/// - none or empty → `0:0`;
/// - `uid` → that uid, with the gid of its passwd entry when it has one
///   (else 0);
/// - `name` → uid and gid of its passwd entry (an error when there is none);
/// - `user:group` with either part a number or a name (`group` looked up in
///   `/etc/group`).
///
/// Supplementary groups are those of `/etc/group` that list the user's name.
///
/// # Errors
/// [`SpecError::User`] when a name is not found or a part is malformed.
pub fn resolve_user(user: Option<&str>, accounts: &Accounts) -> Result<ResolvedUser, SpecError> {
    let Some(spec) = user.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(ResolvedUser::default());
    };
    let err = |reason: String| SpecError::User {
        user: spec.to_owned(),
        reason,
    };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() {
        return Err(err("the user part is empty".into()));
    }
    let (uid, passwd_gid, name) = if let Ok(uid) = user_part.parse::<u32>() {
        match accounts.user_by_uid(uid) {
            Some((name, gid)) => (uid, Some(gid), Some(name)),
            None => (uid, None, None),
        }
    } else {
        let (uid, gid) = accounts
            .user_by_name(user_part)
            .ok_or_else(|| err(format!("no user {user_part:?} in the image's /etc/passwd")))?;
        (uid, Some(gid), Some(user_part.to_owned()))
    };
    let gid = match group_part {
        None => passwd_gid.unwrap_or(0),
        Some("") => return Err(err("the group part is empty".into())),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => accounts
                .group_by_name(g)
                .ok_or_else(|| err(format!("no group {g:?} in the image's /etc/group")))?,
        },
    };
    let additional_gids = name
        .map(|n| accounts.groups_of(&n, gid))
        .unwrap_or_default();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// Reads the file at `rel` inside `root`, resolving every component (`..` and
/// symlinks included) as if `root` were `/` (`openat2` with
/// `RESOLVE_IN_ROOT`, Linux 5.6+). `Ok(None)` when it does not exist.
fn read_in_root(root: &Path, rel: &str) -> io::Result<Option<Vec<u8>>> {
    let root_dir = File::open(root)?;
    let fd = match openat2_in_root(&root_dir, rel) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_ACCOUNT_FILE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
    }
    let mut buf = Vec::new();
    file.take(MAX_ACCOUNT_FILE).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// `openat2(root_dir, rel, O_RDONLY|O_NONBLOCK|O_CLOEXEC, RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS)`. `O_NONBLOCK` so a FIFO planted in the image
/// cannot block the open. Retried on `EAGAIN` (a concurrent rename somewhere
/// on the host made the kernel give up resolving) and `EINTR`.
fn openat2_in_root(root_dir: &File, rel: &str) -> io::Result<OwnedFd> {
    loop {
        match rustix::fs::openat2(
            root_dir,
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok(fd),
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nwww:x:33:33::/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
    const GROUP: &str =
        "root:x:0:\nwww:x:33:\nstaff:x:50:www,other\naudio:x:29:www\nnogroup:x:65534:\n";

    /// Accounts with users `root`, `www` (33, also in `staff` and `audio`)
    /// and `nobody`.
    pub(in super::super) fn accounts() -> Accounts {
        Accounts {
            passwd: PASSWD.into(),
            group: GROUP.into(),
        }
    }

    #[test]
    fn users_resolve_like_docker() {
        let a = accounts();
        let r = |u: &str| resolve_user(Some(u), &a);
        assert_eq!(resolve_user(None, &a).unwrap(), ResolvedUser::default());
        let www = r("www").unwrap();
        assert_eq!((www.uid, www.gid), (33, 33));
        assert_eq!(www.additional_gids, [50, 29]);
        assert_eq!(
            r("33").unwrap(),
            www,
            "a numeric uid takes the gid and groups of its entry"
        );
        let u = r("1234").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.len()), (1234, 0, 0));
        let u = r("1234:77").unwrap();
        assert_eq!((u.uid, u.gid), (1234, 77));
        let u = r("www:staff").unwrap();
        assert_eq!((u.uid, u.gid), (33, 50));
        assert_eq!(u.additional_gids, [29], "the primary group is not repeated");
        let u = r("nobody:0").unwrap();
        assert_eq!((u.uid, u.gid), (65534, 0));
        for bad in ["ghost", "www:ghosts", ":1", "1:"] {
            let e = r(bad).unwrap_err();
            assert!(matches!(e, SpecError::User { .. }), "{bad}: {e}");
        }
        assert!(
            r("ghost")
                .unwrap_err()
                .to_string()
                .contains("no user \"ghost\"")
        );
    }

    #[test]
    fn account_files_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // A hostile image: /etc/passwd is an absolute symlink, which must be
        // followed inside the rootfs, never on the host.
        let outside = dir.path().join("host-passwd");
        std::fs::write(&outside, "evil:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::write(root.join("real-passwd"), "www:x:33:33::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/real-passwd", root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/group")).unwrap();
        let a = Accounts::read(&root).unwrap();
        assert_eq!(a.passwd, "www:x:33:33::/:/bin/sh\n");
        assert_eq!(
            a.group, "",
            "a symlink to a host path resolves inside the root (missing)"
        );
        std::fs::remove_file(root.join("etc/group")).unwrap();
        std::os::unix::fs::symlink("../../../../host-passwd", root.join("etc/group")).unwrap();
        assert_eq!(
            Accounts::read(&root).unwrap().group,
            "",
            "`..` cannot climb out"
        );
        // A FIFO must not block.
        std::fs::remove_file(root.join("etc/group")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("etc/group"),
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        assert!(matches!(
            Accounts::read(&root),
            Err(SpecError::AccountFile {
                path: "etc/group",
                ..
            })
        ));
    }
}
