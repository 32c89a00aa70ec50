//! The only `unsafe` of the container module: the two system interfaces it
//! needs that have no safe wrapper. Each is wrapped here in a safe function
//! whose arguments cannot break the contract; everything else goes through
//! rustix's safe API.
//!
//! - [`async_fd`]: tokio's [`AsyncFd::register_with_interest`] is
//!   `unsafe` (I/O safety: the descriptor must stay open, and the same one,
//!   as long as the `AsyncFd` is registered). The wrapper takes the
//!   descriptor by value as an [`OwnedFd`], which the `AsyncFd` then owns and
//!   closes only after deregistering it.
//! - [`interface_flags`] and [`set_interface_flags`]: the `SIOCGIFFLAGS` and
//!   `SIOCSIFFLAGS` ioctls (what `ip link set lo up` does without netlink).
//!   rustix has no wrapper for them, and [`rustix::ioctl::ioctl`] is `unsafe`
//!   because the kernel reads and writes whatever the opcode says through the
//!   pointer. [`IfReq`] reproduces `struct ifreq` and is only ever passed
//!   with these two opcodes.
//! - [`unshare_network`]: `unshare(CLONE_NEWNET)`. rustix's
//!   [`unshare_unsafe`](rustix::thread::unshare_unsafe) is `unsafe` because
//!   of `CLONE_FILES` (a thread left with a descriptor table other threads
//!   do not share); the wrapper passes `NEWNET` alone, which changes only
//!   the calling thread's network namespace.
#![expect(
    unsafe_code,
    reason = "the raw system calls that rustix does not wrap safely; each has a SAFETY comment"
)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::ioctl::{Opcode, Updater, ioctl};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers `fd` with the tokio reactor for `interest`.
///
/// # Errors
/// When the reactor refuses it (the descriptor is then closed).
pub(super) fn async_fd(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` takes ownership of `fd`, so the descriptor stays
    // open and is the same one for as long as it is registered; berth never
    // replaces it through `get_mut`.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

/// `IFF_UP`: the interface is up.
pub(super) const IFF_UP: i16 = 0x1;
const SIOCGIFFLAGS: Opcode = 0x8913;
const SIOCSIFFLAGS: Opcode = 0x8914;
const IFNAMSIZ: usize = 16;

/// `struct ifreq` as the interface-flags ioctls use it: the interface name,
/// then `ifr_flags` at the start of the union, then the rest of the union
/// (24 bytes on 64-bit targets, its largest member being `struct ifmap`).
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    rest: [u8; 22],
}

// The kernel copies `sizeof(struct ifreq)` (40 bytes on 64-bit, 32 on 32-bit
// targets) in and out: `IfReq` must be at least that large.
const _: () = assert!(size_of::<IfReq>() == 40);

impl IfReq {
    fn new(name: &str) -> io::Result<Self> {
        let mut req = Self {
            name: [0; IFNAMSIZ],
            flags: 0,
            rest: [0; 22],
        };
        // Room for the terminating NUL; no NUL inside.
        if name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?}"),
            ));
        }
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(req)
    }
}

/// The flags (`IFF_*`) of interface `name`, through `socket` (any socket of
/// the network namespace to look in).
///
/// # Errors
/// An invalid name, or the error of `ioctl(SIOCGIFFLAGS)`.
pub(super) fn interface_flags(socket: impl AsFd, name: &str) -> io::Result<i16> {
    let mut req = IfReq::new(name)?;
    // SAFETY: SIOCGIFFLAGS takes a pointer to a `struct ifreq`, which
    // `IfReq` lays out; the kernel reads the name and writes `ifr_flags`,
    // both within it.
    unsafe { ioctl(socket, Updater::<SIOCGIFFLAGS, IfReq>::new(&mut req)) }?;
    Ok(req.flags)
}

/// Sets the flags (`IFF_*`) of interface `name`, through `socket` (any
/// socket of the network namespace to change).
///
/// # Errors
/// An invalid name, or the error of `ioctl(SIOCSIFFLAGS)`.
pub(super) fn set_interface_flags(socket: impl AsFd, name: &str, flags: i16) -> io::Result<()> {
    let mut req = IfReq::new(name)?;
    req.flags = flags;
    // SAFETY: SIOCSIFFLAGS takes a pointer to a `struct ifreq`, which
    // `IfReq` lays out; the kernel only reads the name and `ifr_flags`.
    unsafe { ioctl(socket, Updater::<SIOCSIFFLAGS, IfReq>::new(&mut req)) }?;
    Ok(())
}

/// Moves the calling thread (only) into a new network namespace.
///
/// # Errors
/// The error of `unshare(2)` (`EPERM` without `CAP_SYS_ADMIN`).
pub(super) fn unshare_network() -> io::Result<()> {
    // SAFETY: `NEWNET` alone does not unshare the descriptor table (the
    // reason `unshare_unsafe` is unsafe); the network namespace is a
    // per-thread attribute.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};

    use super::*;

    #[test]
    fn loopback_flags() {
        let socket = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        // The host's `lo` is up (and a loopback: IFF_LOOPBACK, 0x8).
        let flags = interface_flags(&socket, "lo").unwrap();
        assert_eq!(flags & (IFF_UP | 0x8), IFF_UP | 0x8, "{flags:#x}");
        let err = interface_flags(&socket, "no-such-if0").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(19), "ENODEV: {err}");
        assert!(interface_flags(&socket, "a-name-that-is-too-long").is_err());
    }
}
