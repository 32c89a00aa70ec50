//! Listening sockets inside the network namespace a task's spec names.
//!
//! A socket belongs, for its whole life, to the namespace of the thread that
//! created it. So the shim binds from a short-lived OS thread that has
//! `setns(2)`'d into the task's namespace; the listener is then served on
//! the tokio runtime like any other. No tokio worker ever changes namespace.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd as _;
use std::path::PathBuf;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Where a task's sockets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetNamespace {
    /// The spec lists no network namespace: the host's (`ctr run --net-host`).
    Host,
    /// A namespace file: a pod's (Kubernetes), or `ctr run --with-ns
    /// network:PATH`.
    Path(PathBuf),
    /// The spec asks the runtime to create a namespace (no path): runc would
    /// make one with only a loopback nobody outside can reach.
    New,
}

impl NetNamespace {
    /// From the spec's `linux.namespaces`.
    pub fn from_spec(spec: &oci_spec::runtime::Spec) -> Self {
        let Some(namespaces) = spec.linux().as_ref().and_then(|l| l.namespaces().clone()) else {
            return Self::Host;
        };
        namespaces
            .iter()
            .find(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
            .map_or(Self::Host, |ns| match ns.path() {
                Some(p) => Self::Path(p.clone()),
                None => Self::New,
            })
    }
}

/// Binds a TCP listener on `addr` in `net`.
///
/// # Errors
/// When the namespace cannot be opened or joined, or the address is taken.
pub fn bind(net: &NetNamespace, addr: SocketAddr) -> io::Result<TcpListener> {
    match net {
        NetNamespace::Host => TcpListener::bind(addr),
        NetNamespace::New => Err(io::Error::other(
            "the spec asks for a new network namespace without a path; berth's shim serves \
             in a namespace it is given: run with --net-host, or --with-ns network:PATH \
             (Kubernetes always gives the pod's)",
        )),
        NetNamespace::Path(path) => {
            let ns = File::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?;
            let shown = path.display().to_string();
            std::thread::Builder::new()
                .name("berth-shim-netns".into())
                .spawn(move || {
                    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
                        .map_err(|e| {
                            io::Error::new(
                                io::Error::from(e).kind(),
                                format!("cannot join network namespace {shown}: {e}"),
                            )
                        })?;
                    TcpListener::bind(addr)
                })?
                .join()
                .map_err(|_| io::Error::other("the network namespace thread panicked"))?
        }
    }
}
