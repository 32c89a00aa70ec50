//! Reaching into an isolated instance's network namespace.
//!
//! runc creates the namespace (the spec lists a `network` namespace without a
//! path), so nothing has to be mounted under `/run/netns` and nothing outlives
//! the container. A new namespace has only `lo`, and it is down: [`Netns::enter`]
//! brings it up.
//!
//! A socket belongs to the namespace of the thread that created it, for its
//! whole life. So each isolated instance has one dedicated OS thread that has
//! `setns(2)`'d into the instance's namespace and does nothing but create
//! sockets on request; connecting, reading and writing then happen as usual on
//! the tokio runtime. The thread never runs other work, so no tokio worker ever
//! changes namespace, and it exits when its [`Netns`] is dropped.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::mpsc;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

type Request = oneshot::Sender<io::Result<TcpSocket>>;

/// A thread living in another network namespace, making sockets there.
#[derive(Debug)]
pub struct Netns {
    requests: mpsc::Sender<Request>,
}

impl Netns {
    /// Joins the network namespace of process `pid` on a new thread and
    /// brings `lo` up in it.
    ///
    /// # Errors
    /// When the namespace cannot be opened or joined, or `lo` cannot be
    /// brought up.
    pub async fn enter(pid: u32) -> io::Result<Self> {
        let ns = File::open(format!("/proc/{pid}/ns/net"))?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let (requests, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name(format!("berth-netns-{pid}"))
            .spawn(move || {
                let entered = setns_net(&ns).and_then(|()| loopback_up());
                drop(ns);
                let ok = entered.is_ok();
                // The receiver only goes away if `enter` was cancelled.
                let _ = ready_tx.send(entered);
                if ok {
                    while let Ok(reply) = rx.recv() {
                        let _ = reply.send(TcpSocket::new_v4());
                    }
                }
            })?;
        ready_rx
            .await
            .map_err(|_| io::Error::other("netns thread died"))??;
        Ok(Self { requests })
    }

    /// Connects to `addr` from inside the namespace.
    ///
    /// # Errors
    /// When the socket cannot be made or the connection fails.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .map_err(|_| io::Error::other("netns thread is gone"))?;
        let socket = rx
            .await
            .map_err(|_| io::Error::other("netns thread is gone"))??;
        socket.set_nodelay(true)?;
        socket.connect(addr).await
    }
}

/// `setns(fd, CLONE_NEWNET)` for the calling thread.
#[allow(unsafe_code)]
fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open namespace file; setns only reads the fd and
    // changes the calling thread's network namespace, which is this dedicated
    // thread's alone.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `IFF_UP` on `lo` in the calling thread's network namespace.
#[allow(unsafe_code)]
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the returned fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifreq` is a plain C struct (with a union of plain fields) for
    // which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid `ifreq` naming an interface; SIOCGIFFLAGS
    // writes `ifru_flags` within it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just initialised `ifru_flags`.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
