//! Network namespaces of instances that do not share the host's.
//!
//! berth makes the namespace itself, before the container exists
//! ([`create_pinned`]: a short-lived thread `unshare`s into a new one, pins
//! it with a bind mount of `/proc/thread-self/ns/net` in the instance's
//! directory, brings `lo` up and exits), and the spec's `network` namespace
//! names that file, so runc joins it. Its network is therefore ready (and,
//! when isolated, attached to the bridge) before the container's process
//! runs, without a pause between `runc create` and `runc start`: one `runc
//! run --detach` starts the container. The pin outlives the process, so the
//! bridge network can be detached from it after the process is gone;
//! teardown unmounts it with the rest of the instance's mounts.
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
use std::path::Path;
use std::sync::mpsc;

use rustix::net::{AddressFamily, SocketFlags, SocketType, socket_with};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

use super::sys::{IFF_UP, interface_flags, set_interface_flags, unshare_network};

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
        Self::enter_file(File::open(format!("/proc/{pid}/ns/net"))?, pid.to_string()).await
    }

    /// Joins the network namespace pinned at `path` ([`create_pinned`]) on a
    /// new thread and brings `lo` up in it.
    ///
    /// # Errors
    /// As for [`Netns::enter`].
    pub async fn enter_pinned(path: &Path) -> io::Result<Self> {
        let name = path
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::enter_file(File::open(path)?, name).await
    }

    async fn enter_file(ns: File, name: String) -> io::Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (requests, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name(format!("berth-netns-{name}"))
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

/// Makes a new network namespace with `lo` up and pins it at `target` (a
/// new empty file, then a bind mount of the namespace over it), from a
/// thread that `unshare`s into it and exits. No process is in the
/// namespace; the pin keeps it until it is unmounted.
///
/// # Errors
/// When the thread cannot be made, `unshare`, the file or the mount fail,
/// or `lo` cannot be brought up (the pin, if made, is left for the caller's
/// teardown, which unmounts everything under the instance directory).
pub async fn create_pinned(target: &Path) -> io::Result<()> {
    let target = target.to_path_buf();
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns-new".into())
        .spawn(move || {
            let made = (|| {
                unshare_network()?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)?;
                rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
                loopback_up()
            })();
            let _ = tx.send(made);
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
