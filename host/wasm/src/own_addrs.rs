//! The host's own addresses: every address of every interface of the
//! network namespace berth runs in (the container bridge's included, once
//! it exists), kept current as interfaces change.
//!
//! # How it stays current
//! One netlink route socket per process, subscribed to the kernel's address
//! and link events (`RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`,
//! `RTMGRP_LINK`), opened *before* the first read so no change falls
//! between. The kernel queues the event before `ip address add` (or any
//! other `RTM_NEWADDR`) returns, so the set is exact, not eventually right:
//!
//! - a thread (`berth-own-addrs`) sleeps in `poll(2)` on the socket and
//!   re-reads the list (`getifaddrs(3)`) when events arrive, however many;
//! - the lookup on the request path ([`OwnAddrs::contains`]) first asks the
//!   socket, without waiting, whether an event is pending (one `poll(2)`),
//!   and if so re-reads itself before answering, or waits for the thread's
//!   re-read if one is under way; otherwise it is a read of an
//!   [`ArcSwap`]'d set.
//!
//! A periodic re-read instead would cost a `getifaddrs` every interval and
//! leave a window (the interval) in which a new address is not yet refused.
//! Where no netlink socket can be had (a sandbox that forbids them), the
//! thread re-reads every [`FALLBACK_INTERVAL`] and says so in the log.

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};

use crate::networks::canonical;

/// `RTMGRP_LINK`: links coming and going.
const RTMGRP_LINK: u32 = 0x1;
/// `RTMGRP_IPV4_IFADDR`: IPv4 addresses added and removed.
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
/// `RTMGRP_IPV6_IFADDR`: IPv6 addresses added and removed.
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
/// How often the list is re-read when no netlink socket can be had.
pub const FALLBACK_INTERVAL: Duration = Duration::from_secs(1);

/// The host's own addresses (IPv4-mapped IPv6 ones stored as IPv4).
#[derive(Debug)]
pub struct OwnAddrs {
    addrs: ArcSwap<HashSet<IpAddr>>,
    /// The netlink subscription; `None` for a fixed set (tests) or when
    /// the kernel refused one.
    events: Option<OwnedFd>,
    /// Held while draining events and re-reading.
    refreshing: Mutex<()>,
}

static TRACKER: OnceLock<Arc<OwnAddrs>> = OnceLock::new();

impl OwnAddrs {
    /// The process's tracker, started at the first call.
    pub fn get() -> Arc<OwnAddrs> {
        TRACKER.get_or_init(Self::start).clone()
    }

    /// A set that never changes (for tests of the rules that use it).
    pub fn fixed(addrs: impl IntoIterator<Item = IpAddr>) -> Arc<OwnAddrs> {
        Arc::new(Self {
            addrs: ArcSwap::from_pointee(addrs.into_iter().map(canonical).collect()),
            events: None,
            refreshing: Mutex::new(()),
        })
    }

    fn start() -> Arc<OwnAddrs> {
        let events = subscribe()
            .inspect_err(|e| {
                tracing::warn!(
                    error = %e,
                    "no netlink route socket: the host's own addresses are re-read every {FALLBACK_INTERVAL:?}"
                );
            })
            .ok();
        let own = Arc::new(Self {
            addrs: ArcSwap::from_pointee(HashSet::new()),
            events,
            refreshing: Mutex::new(()),
        });
        own.reread();
        let watched = Arc::clone(&own);
        let spawned = std::thread::Builder::new()
            .name("berth-own-addrs".into())
            .spawn(move || watched.watch());
        if let Err(e) = spawned {
            // The request path still catches up on its own.
            tracing::error!(error = %e, "cannot start the thread watching the host's addresses");
        }
        own
    }

    /// Whether `ip` (IPv4-mapped judged as IPv4) is an address of this host.
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An event waiting, or one drained by the thread whose re-read is
        // still under way: wait for the fresh set.
        if let Some(fd) = &self.events
            && (pending(fd) || self.refreshing.try_lock().is_err())
        {
            let _ = self.catch_up();
        }
        self.addrs.load().contains(&canonical(ip))
    }

    fn watch(&self) {
        loop {
            match &self.events {
                Some(fd) => {
                    let mut fds = [PollFd::new(fd, PollFlags::IN)];
                    match poll(&mut fds, None) {
                        Ok(_) | Err(Errno::INTR) => {
                            if !self.catch_up() {
                                // Ready, yet nothing to read: never spin.
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "polling the netlink socket");
                            std::thread::sleep(FALLBACK_INTERVAL);
                            self.reread();
                        }
                    }
                }
                None => {
                    std::thread::sleep(FALLBACK_INTERVAL);
                    self.reread();
                }
            }
        }
    }

    /// Drains the pending events and, if there were any (or some were
    /// lost), re-reads. A second caller waiting on the lock finds nothing
    /// pending: the first re-read after the events it saw. Whether there
    /// were events.
    fn catch_up(&self) -> bool {
        let _held = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(fd) = &self.events else {
            return false;
        };
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            match rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok(_) => any = true,
                // The socket's buffer overflowed: events were lost, re-read.
                Err(Errno::NOBUFS) => any = true,
                Err(Errno::INTR) => {}
                Err(_) => break, // EAGAIN: drained.
            }
        }
        if any {
            self.reread();
        }
        any
    }

    fn reread(&self) {
        match if_addrs::get_if_addrs() {
            Ok(list) => {
                let set: HashSet<IpAddr> = list.iter().map(|i| canonical(i.ip())).collect();
                if **self.addrs.load() != set {
                    tracing::debug!(addrs = ?set, "the host's own addresses changed");
                    self.addrs.store(Arc::new(set));
                }
            }
            // Keep the last set: refusing less than before would be worse.
            Err(e) => tracing::error!(error = %e, "reading the host's addresses"),
        }
    }
}

/// A netlink route socket subscribed to link and address events.
fn subscribe() -> rustix::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None, // NETLINK_ROUTE
    )?;
    rustix::net::bind(
        &fd,
        &SocketAddrNetlink::new(0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR),
    )?;
    Ok(fd)
}

/// Whether an event waits on `fd` (a `poll(2)` that does not wait).
fn pending(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // On an error, re-read: wrong by excess only.
    poll(&mut fds, Some(&zero)).map_or(true, |n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_fixed_sets() {
        let own = OwnAddrs::get();
        assert!(own.contains("127.0.0.1".parse().unwrap()));
        assert!(own.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(
            !own.contains("233.252.0.1".parse().unwrap()),
            "MCAST-TEST-NET"
        );
        let fixed = OwnAddrs::fixed(["::ffff:203.0.113.9".parse().unwrap()]);
        assert!(fixed.contains("203.0.113.9".parse().unwrap()));
    }

    /// A veth pair this test makes, both ends on the host (no `dummy`
    /// driver needed); deleted (both ends) when dropped.
    struct Veth(String);

    impl Drop for Veth {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .status();
        }
    }

    fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }

    /// An address assigned after the tracker started is seen by the very
    /// next lookup (IPv4), or as soon as it can be connected to (IPv6), and
    /// a removed one is gone by the next: no interval.
    #[test]
    fn addresses_added_and_removed_are_seen_at_once() {
        let own = OwnAddrs::get();
        let tag = format!("{:x}", std::process::id() % 0xfffff);
        let dev = Veth(format!("btow{tag}"));
        let peer = format!("btop{tag}");
        ip(&["link", "add", &dev.0, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &dev.0, "up"]);
        ip(&["link", "set", &peer, "up"]);
        for round in 0..20u8 {
            let addr: IpAddr = format!("203.0.113.{}", 200 + round % 50).parse().unwrap();
            assert!(!own.contains(addr), "{addr} before");
            ip(&["addr", "add", &format!("{addr}/32"), "dev", &dev.0]);
            assert!(own.contains(addr), "{addr} right after `ip addr add`");
            let v6: IpAddr = format!("2001:db8:77::{}", round + 1).parse().unwrap();
            ip(&["addr", "add", &format!("{v6}/128"), "dev", &dev.0, "nodad"]);
            // IPv6 finishes adding an address in a kernel work item that
            // sends the event, then routes the address locally: once a
            // connection to it can be made, it is refused.
            let reachable = (0..200).any(|_| {
                let ok = std::net::TcpListener::bind((v6, 0))
                    .and_then(|l| {
                        let a = l.local_addr()?;
                        std::net::TcpStream::connect_timeout(&a, Duration::from_millis(100))
                    })
                    .is_ok();
                if !ok {
                    std::thread::sleep(Duration::from_millis(10));
                }
                ok
            });
            assert!(reachable, "{v6} never became connectable");
            assert!(own.contains(v6), "{v6} once connectable");
            ip(&["addr", "del", &format!("{addr}/32"), "dev", &dev.0]);
            ip(&["addr", "del", &format!("{v6}/128"), "dev", &dev.0]);
            assert!(!own.contains(addr), "{addr} right after `ip addr del`");
            assert!(!own.contains(v6), "{v6} right after `ip addr del`");
        }
    }
}
