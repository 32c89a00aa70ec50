//! Network namespaces of instances that do not share the host's.
//!
//! runc creates the namespace (the spec lists a `network` namespace without a
//! path). A new namespace has only `lo`, and it is down: [`loopback_up`]
//! (from a short-lived thread) and [`Netns::enter`] bring it up.
//!
//! An isolated instance's namespace is pinned ([`pin`]: a bind mount of
//! `/proc/PID/ns/net` in the instance's directory) so that the bridge
//! network can be detached from it after the process is gone; teardown
//! unmounts it with the rest of the instance's mounts.
//!
//! A `network = "none"` instance has only loopback: berth reaches it through
//! [`Netns`], below.
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
use std::os::fd::AsFd as _;
use std::sync::mpsc;

use rustix::net::{AddressFamily, SocketFlags, SocketType, socket_with};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

use super::sys::{IFF_UP, interface_flags, set_interface_flags};

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

/// Pins process `pid`'s network namespace at `target` (a new empty file,
/// then a bind mount over it), so it outlives the process.
///
/// # Errors
/// When the file cannot be created or the mount fails.
pub fn pin(pid: u32, target: &std::path::Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)?;
    rustix::mount::mount_bind(format!("/proc/{pid}/ns/net"), target).map_err(io::Error::from)
}

/// Brings `lo` up in process `pid`'s network namespace, from a thread that
/// joins it and exits.
///
/// # Errors
/// When the namespace cannot be joined or `lo` cannot be set up.
pub async fn loopback_up_in(pid: u32) -> io::Result<()> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("berth-lo-{pid}"))
        .spawn(move || {
            let _ = tx.send(setns_net(&ns).and_then(|()| loopback_up()));
        })?;
    rx.await
        .map_err(|_| io::Error::other("netns thread died"))?
}

/// `setns(fd, CLONE_NEWNET)` for the calling thread (this dedicated thread's
/// alone).
fn setns_net(ns: &File) -> io::Result<()> {
    Ok(move_into_link_name_space(
        ns.as_fd(),
        Some(LinkNameSpaceType::Network),
    )?)
}

/// Sets `IFF_UP` on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    let socket = socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let flags = interface_flags(&socket, "lo")?;
    set_interface_flags(&socket, "lo", flags | IFF_UP)
}
