//! What an entry carries besides its contents: owner, mode, mtime (from the
//! header, pax records taking precedence) and the xattrs that are applied.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::fs::{Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use super::limits::{clean, excerpt};
use super::{Applier, UnpackError};

/// pax record prefix of extended attributes (GNU tar, Go's archive/tar, BuildKit).
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Owner, mode, times and xattrs of an entry.
#[derive(Debug)]
pub(super) struct Meta {
    pub(super) uid: Uid,
    pub(super) gid: Gid,
    /// Permission bits, with setuid, setgid and sticky.
    pub(super) mode: Mode,
    pub(super) mtime: Timespec,
    /// Only the names that are applied (`user.*`, `security.capability`).
    pub(super) xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Meta {
    /// Reads the header, with pax records (`uid`, `gid`, `mtime`,
    /// `SCHILY.xattr.*`) taking precedence.
    pub(super) fn of<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
    ) -> Result<Self, UnpackError> {
        let bad = |field: &str, e: io::Error| {
            UnpackError::invalid(shown, format!("{field}: {}", clean(e)))
        };
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
        if let Some(records) = entry
            .pax_extensions()
            .map_err(|e| UnpackError::Read(clean(e)))?
        {
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
                                    entry = %super::shown(shown),
                                    xattr = %excerpt(name),
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

    pub(super) fn times(&self) -> Timestamps {
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
pub(super) fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
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

impl Applier {
    /// Applies fchown's result: an error when running as root, ignored when
    /// unprivileged and refused.
    pub(super) fn set_owner(
        &self,
        shown: &Path,
        result: rustix::io::Result<()>,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        match result {
            Ok(()) => Ok(()),
            Err(Errno::PERM | Errno::INVAL) if !self.privileged => {
                tracing::trace!(entry = %super::shown(shown), "not root: ownership not applied");
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

    pub(super) fn set_xattrs(
        &self,
        shown: &Path,
        fd: BorrowedFd<'_>,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        for (name, value) in &meta.xattrs {
            match rustix::fs::fsetxattr(fd, name.as_os_str(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e @ (Errno::NOTSUP | Errno::PERM | Errno::ACCESS)) => tracing::warn!(
                    entry = %super::shown(shown),
                    xattr = %excerpt(name.as_bytes()),
                    error = %e,
                    "xattr not applied"
                ),
                Err(e) => {
                    let what = format!("set xattr {}", excerpt(name.as_bytes()));
                    return Err(UnpackError::entry(shown, what, e));
                }
            }
        }
        Ok(())
    }
}
