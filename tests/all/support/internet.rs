//! A fake "internet" for egress tests: a network namespace this test makes,
//! joined to the host by a veth pair with addresses from TEST-NET-2
//! (198.51.100.0/24, documentation only, routed nowhere) or, for a private
//! network, from 10.199.100.0/24, and a busybox `httpd` serving one page
//! inside it. Traffic to it never leaves the machine. Removed (server,
//! namespace, veth) when dropped.
//!
//! And [`HostAddrs`]: addresses a test assigns to the host itself, on an
//! interface it makes and removes.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server on the far side of a veth pair.
pub struct FakeInternet {
    /// Where it answers (inside its namespace).
    pub addr: SocketAddr,
    netns: String,
    host_veth: String,
    server: Child,
    _www: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl FakeInternet {
    /// Starts it on TEST-NET-2; `GET /` answers `body`.
    pub fn start(body: &str) -> Self {
        Self::start_in(body, [198, 51, 100])
    }

    /// Starts it on 10.199.100.0/24, a private network.
    pub fn start_private(body: &str) -> Self {
        Self::start_in(body, [10, 199, 100])
    }

    /// The host's end of the veth pair (an address of the host).
    pub fn host_ip(&self) -> Ipv4Addr {
        match self.addr.ip() {
            std::net::IpAddr::V4(far) => Ipv4Addr::from(u32::from(far) - 1),
            std::net::IpAddr::V6(_) => unreachable!("IPv4 only"),
        }
    }

    /// Starts it in a /30 of `net`.0/24; `GET /` answers `body`.
    fn start_in(body: &str, net: [u8; 3]) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // A /30 of TEST-NET-2 of its own.
        let slot = (pid.wrapping_mul(13).wrapping_add(n)) % 64;
        let base = slot * 4;
        let [a, b, c] = net;
        let host_ip = Ipv4Addr::new(a, b, c, (base + 1) as u8);
        let far_ip = Ipv4Addr::new(a, b, c, (base + 2) as u8);
        let tag = format!("{:x}{n}", pid % 0xfffff);
        let netns = format!("bti-{tag}");
        let host_veth = format!("btih{tag}");
        let far_veth = format!("btin{tag}");
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &far_veth,
        ]);
        ip(&["link", "set", &far_veth, "netns", &netns]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_veth]);
        ip(&["link", "set", &host_veth, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{far_ip}/30"),
            "dev",
            &far_veth,
        ]);
        ip(&["-n", &netns, "link", "set", &far_veth, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("index.html"), body).unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", &netns, "/bin/busybox", "httpd", "-f"])
            .args(["-p", &format!("{far_ip}:8000"), "-h"])
            .arg(www.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox httpd in the fake internet");
        let me = Self {
            addr: SocketAddr::from((far_ip, 8000)),
            netns,
            host_veth,
            server,
            _www: www,
        };
        // Up once the host can fetch the page (a bounded wait).
        for _ in 0..250 {
            if std::net::TcpStream::connect_timeout(&me.addr, Duration::from_millis(100)).is_ok() {
                return me;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the fake internet's server did not come up on {}", me.addr);
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Addresses of the host itself, on an interface this test makes: one end
/// of a veth pair whose other end is on the host too (this kernel may have
/// no `dummy` driver). Both ends go when dropped.
pub struct HostAddrs {
    dev: String,
}

impl HostAddrs {
    /// A new interface, up, with no address yet.
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}{n}", std::process::id() % 0xfffff);
        let dev = format!("btha{tag}");
        let peer = format!("bthb{tag}");
        ip(&["link", "add", &dev, "type", "veth", "peer", "name", &peer]);
        let me = Self { dev };
        ip(&["link", "set", &me.dev, "up"]);
        ip(&["link", "set", &peer, "up"]);
        me
    }

    /// Assigns a TEST-NET-3 (203.0.113.0/24) address of its own to the
    /// interface, `/32`; returns it.
    pub fn add(&self) -> Ipv4Addr {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let last = 1 + (std::process::id().wrapping_mul(7).wrapping_add(n) % 250) as u8;
        let addr = Ipv4Addr::new(203, 0, 113, last);
        ip(&["addr", "add", &format!("{addr}/32"), "dev", &self.dev]);
        addr
    }
}

impl Drop for HostAddrs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.dev]).status();
    }
}
