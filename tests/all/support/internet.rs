//! A fake "internet" for egress tests: a network namespace this test makes,
//! joined to the host by a veth pair with addresses from TEST-NET-2
//! (198.51.100.0/24, documentation only, routed nowhere), and a busybox
//! `httpd` serving one page inside it. Traffic to it never leaves the
//! machine. Removed (server, namespace, veth) when dropped.

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
    /// Starts it; `GET /` answers `body`.
    pub fn start(body: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // A /30 of TEST-NET-2 of its own.
        let slot = (pid.wrapping_mul(13).wrapping_add(n)) % 64;
        let base = slot * 4;
        let host_ip = Ipv4Addr::new(198, 51, 100, (base + 1) as u8);
        let far_ip = Ipv4Addr::new(198, 51, 100, (base + 2) as u8);
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
