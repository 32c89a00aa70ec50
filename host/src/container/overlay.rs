//! The per-instance overlay: the image's unpacked rootfs as the shared,
//! read-only lower layer, and a private upper and work directory, so every
//! instance starts from the image and nothing it writes outlives it.
//!
//! The upper and work directories live on a tmpfs of the instance's own
//! ([`mount_scratch`]), sized to its memory limit: as on Cloud Run, whose
//! filesystem is in memory, what an instance writes counts against
//! `limits.memory`. tmpfs pages are charged to the memory cgroup of the
//! process that writes them, the container's, and cannot be written back to
//! disk to make room (the container has no swap), so writing past the limit
//! gets the writer OOM-killed by its own cgroup, or `ENOSPC` from the tmpfs;
//! the disk under the data directory never fills. (On an upper directory on
//! disk, the same writes were only page cache: reclaimable, so a 32 MiB
//! instance wrote 64 MiB and more to disk without noticing.)
//!
//! The overlay is mounted `volatile` (no syncs): an instance's writes are
//! thrown away at stop, so they need no durability.
//!
//! Blocking syscalls; call from `spawn_blocking`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

/// `true` when `path` can be spelled in an overlayfs option string: no `,`,
/// `:` or `\` (the kernel's option parser would split or unescape them), no
/// NUL, and absolute.
pub fn overlay_safe(path: &Path) -> bool {
    path.is_absolute()
        && !path
            .as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\' | 0))
}

/// Mounts an overlay of `lower` (read-only) with `upper` and `work` at
/// `target`. All four must exist; `upper` and `work` must be empty
/// directories on the same filesystem.
///
/// # Errors
/// `InvalidInput` for a path overlayfs cannot take in its options; otherwise
/// the error of `mount(2)`.
pub fn mount(lower: &Path, upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    for p in [lower, upper, work, target] {
        if !overlay_safe(p) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} cannot be used in an overlay mount (relative, or contains ',', ':' or '\\')",
                    p.display()
                ),
            ));
        }
    }
    // index/xino off: the lower layer is shared by many overlays and never
    // exported over NFS; `index=on` would tie it to the first upper.
    let data = format!(
        "lowerdir={},upperdir={},workdir={},index=off,xino=off",
        lower.display(),
        upper.display(),
        work.display()
    );
    // `volatile` (Linux 5.10+): no syncs of the upper layer. The upper dies
    // with the instance, so durability buys nothing, and without it every
    // unmount syncs the whole upper filesystem (tens to hundreds of ms on a
    // busy disk). Older kernels reject the option: mount without it.
    match overlay_mount(target, &format!("{data},volatile")) {
        Err(Errno::INVAL) => Ok(overlay_mount(target, &data)?),
        r => Ok(r?),
    }
}

/// Mounts a private tmpfs (mode 0700, no devices, no set-user-id) at
/// `target`, creating the directory, for an instance's overlay upper and work
/// directories. `size` in bytes is its memory limit; `None` (no limit) leaves
/// tmpfs's default, half of the host's memory. The instance's teardown
/// unmounts it with everything else under its directory.
///
/// # Errors
/// The error of `mkdir(2)` or `mount(2)`.
pub fn mount_scratch(target: &Path, size: Option<u64>) -> io::Result<()> {
    std::fs::create_dir(target)?;
    let mut data = String::from("mode=0700");
    if let Some(size) = size {
        data.push_str(&format!(",size={size}"));
    }
    let data = CString::new(data).map_err(|_| io::Error::from(Errno::INVAL))?;
    Ok(rustix::mount::mount(
        "berth-scratch",
        target,
        "tmpfs",
        MountFlags::NODEV | MountFlags::NOSUID,
        data.as_c_str(),
    )?)
}

/// `mount("overlay", target, "overlay", MS_NODEV, data)`.
fn overlay_mount(target: &Path, data: &str) -> rustix::io::Result<()> {
    let data = CString::new(data).map_err(|_| Errno::INVAL)?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::NODEV,
        data.as_c_str(),
    )
}

/// Unmounts `target`. A busy mount is detached instead (`MNT_DETACH`), so it
/// disappears once its last user (e.g. a dying container) lets go. Not
/// mounted (`EINVAL`) or missing (`ENOENT`) counts as done.
///
/// # Errors
/// `InvalidInput` for a path with a NUL byte; otherwise any other error of
/// `umount2(2)`.
pub fn unmount(target: &Path) -> io::Result<()> {
    // rustix reports a NUL as EINVAL, which means "not mounted" below.
    if target.as_os_str().as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path contains NUL",
        ));
    }
    for flags in [
        UnmountFlags::NOFOLLOW,
        UnmountFlags::NOFOLLOW | UnmountFlags::DETACH,
    ] {
        match rustix::mount::unmount(target, flags) {
            Ok(()) | Err(Errno::INVAL | Errno::NOENT) => return Ok(()),
            Err(Errno::BUSY) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(Errno::BUSY.into())
}

/// Mount points at or below `dir`, deepest first, from `/proc/self/mountinfo`.
///
/// # Errors
/// When mountinfo cannot be read.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mounts_under(&info, dir))
}

fn parse_mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Undoes mountinfo's octal escapes (`\040` for a space, etc.).
fn unescape(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt as _;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths() {
        assert!(overlay_safe(Path::new(
            "/var/lib/berth/images/sha256-abc/rootfs"
        )));
        assert!(!overlay_safe(Path::new("relative")));
        assert!(!overlay_safe(Path::new("/a,b")));
        assert!(!overlay_safe(Path::new("/a:b")));
        assert!(!overlay_safe(Path::new("/a\\b")));
    }

    #[test]
    fn mountinfo_parsing() {
        let info = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:50 / /data/c/instances/a/rootfs rw,nodev shared:2 - overlay overlay rw,lowerdir=/x
91 90 0:51 / /data/c/instances/a/rootfs/proc rw - proc proc rw
92 22 0:52 / /data/c/instances/with\\040space/rootfs rw - overlay overlay rw
93 22 0:53 / /data/c/instances-other rw - tmpfs tmpfs rw
";
        let got = parse_mounts_under(info, Path::new("/data/c/instances"));
        assert_eq!(
            got,
            [
                PathBuf::from("/data/c/instances/a/rootfs/proc"),
                PathBuf::from("/data/c/instances/a/rootfs"),
                PathBuf::from("/data/c/instances/with space/rootfs"),
            ]
        );
    }

    #[test]
    fn overlay_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let d = |n: &str| {
            let p = dir.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let (lower, upper, work, target) = (d("lower"), d("upper"), d("work"), d("merged"));
        std::fs::write(lower.join("f"), "image").unwrap();
        mount(&lower, &upper, &work, &target).expect("overlay mount (needs root)");
        assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), "image");
        std::fs::write(target.join("f"), "changed").unwrap();
        std::fs::write(target.join("new"), "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(lower.join("f")).unwrap(),
            "image",
            "lower untouched"
        );
        assert!(!lower.join("new").exists());
        assert_eq!(
            mounts_under(dir.path()).unwrap(),
            std::slice::from_ref(&target)
        );
        unmount(&target).unwrap();
        unmount(&target).unwrap();
        assert!(mounts_under(dir.path()).unwrap().is_empty());
        assert!(!target.join("f").exists());
        assert!(mount(Path::new("/a,b"), &upper, &work, &target).is_err());
    }

    #[test]
    fn scratch_tmpfs_is_sized_and_holds_the_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        mount_scratch(&scratch, Some(1 << 20)).expect("tmpfs mount (needs root)");
        let fs = rustix::fs::statfs(&scratch).unwrap();
        assert_eq!(fs.f_type, 0x0102_1994, "TMPFS_MAGIC");
        assert_eq!(fs.f_blocks * fs.f_bsize as u64, 1 << 20);
        // The instance layout: the overlay mount deeper than the tmpfs.
        let (lower, target) = (dir.path().join("lower"), dir.path().join("bundle/rootfs"));
        let (upper, work) = (scratch.join("upper"), scratch.join("work"));
        for d in [&lower, &target, &upper, &work] {
            std::fs::create_dir_all(d).unwrap();
        }
        mount(&lower, &upper, &work, &target).unwrap();
        // Writes land in the tmpfs, and stop at its size.
        let err = std::fs::write(target.join("big"), vec![1u8; 2 << 20]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
        assert!(upper.join("big").exists());
        assert_eq!(
            mounts_under(dir.path()).unwrap(),
            [target.clone(), scratch.clone()],
            "deepest first"
        );
        for m in mounts_under(dir.path()).unwrap() {
            unmount(&m).unwrap();
        }
        assert!(mounts_under(dir.path()).unwrap().is_empty());
        assert!(!upper.exists(), "the writes went with the tmpfs");
    }
}
