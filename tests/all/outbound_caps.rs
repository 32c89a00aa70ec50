//! A guest that fans out outbound connections cannot take the host's
//! descriptors: the caps per request, per app and for the host hold, the
//! host keeps answering other apps during the attack, and its descriptors
//! come back afterwards. Errors a guest reads carry no host backtrace.
//! Real `berth serve` processes, real components, loopback only.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use berth_test_artifacts as art;

use crate::support::serve::Served;

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `berth.toml` with the apps `fanout` (allowed to reach `upstream`
/// literally) and `hello`, plus `extra` lines.
fn config(dir: &Path, upstream: SocketAddr, extra: &str) -> std::path::PathBuf {
    let path = dir.join("berth.toml");
    let text = format!(
        "[apps.fanout]\nwasm = {fanout:?}\nallowed_outbound_hosts = [\"{upstream}\"]\n\
         [apps.fanout.limits]\ntimeout = \"30s\"\n\
         [apps.hello]\nwasm = {hello:?}\n{extra}",
        fanout = art::FANOUT,
        hello = art::HELLO,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `GET http://APP.localhost/PATH` on `addr`, over a new connection.
fn get(addr: SocketAddr, app: &str, path: &str, timeout: Duration) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to berth");
    s.set_read_timeout(Some(timeout)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {app}.localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(body) } else { body.into() })
}

/// The payload of a chunked body (sizes in hex, each chunk then CRLF).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The fan-out's report: outcome → count.
fn outcomes(body: &str) -> std::collections::BTreeMap<String, u32> {
    body.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, what)| (what.to_string(), n.parse().unwrap()))
        .collect()
}

#[test]
fn a_fan_out_guest_is_held_to_its_caps_and_the_host_keeps_answering() {
    // An upstream that takes connections into its backlog and never
    // accepts one: what the attack in the issue used.
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = blackhole.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), upstream, "");
    let served = Served::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let pid = served.pid();
    let url = format!("/?url=http%3A%2F%2F{upstream}%2F&n=");

    // Warm both apps, then take the baseline.
    assert_eq!(
        get(served.addr, "hello", "/", Duration::from_secs(30)).0,
        200
    );
    let (status, body) = get(
        served.addr,
        "fanout",
        &format!("{url}1"),
        Duration::from_secs(30),
    );
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(Duration::from_millis(500));
    let before = open_fds(pid);

    // One request asks for 25,000 connections at once.
    let (status, body) = get(
        served.addr,
        "fanout",
        &format!("{url}25000"),
        Duration::from_secs(60),
    );
    assert_eq!(status, 200, "{body}");
    let seen = outcomes(&body);
    assert_eq!(seen.values().sum::<u32>(), 25_000, "{body}");
    let refused = seen.get("ConnectionLimitReached").copied().unwrap_or(0);
    assert!(
        refused >= 25_000 - 32,
        "at most limits.outbound_connections_per_request (32) may get through: {body}"
    );

    // Twelve such requests at once: together they meet the app's cap (256)
    // while another app is called all along.
    let attack: Vec<_> = (0..12)
        .map(|_| {
            let addr = served.addr;
            let path = format!("{url}2000");
            std::thread::spawn(move || get(addr, "fanout", &path, Duration::from_secs(60)))
        })
        .collect();
    let t = Instant::now();
    let mut peak = 0;
    let mut answered = 0;
    while t.elapsed() < Duration::from_secs(3) || attack.iter().any(|a| !a.is_finished()) {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the attack did not end"
        );
        peak = peak.max(open_fds(pid));
        let (status, body) = get(served.addr, "hello", "/", Duration::from_secs(10));
        assert_eq!(status, 200, "hello during the attack: {body}");
        answered += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    for a in attack {
        let (status, body) = a.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(outcomes(&body).values().sum::<u32>(), 2000, "{body}");
    }
    assert!(answered >= 20, "hello was called {answered} times");
    // 256 outbound connections, plus the test's own connections and slack.
    assert!(
        peak <= before + 256 + 64,
        "berth held {peak} descriptors at the peak of the attack, {before} before"
    );

    // Afterwards the descriptors come back (within 5 %).
    let t = Instant::now();
    let mut now = open_fds(pid);
    while now * 100 > before * 105 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        now = open_fds(pid);
    }
    assert!(
        now * 100 <= before * 105,
        "{now} descriptors open after the attack, {before} before"
    );
    drop(blackhole);
    served.stop();
}

#[test]
fn the_host_budget_bounds_all_apps_together() {
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = blackhole.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let second = format!(
        "[apps.fanout2]\nwasm = {:?}\nallowed_outbound_hosts = [\"{upstream}\"]\n",
        art::FANOUT
    );
    let cfg = config(dir.path(), upstream, &second);
    let served = Served::start(
        &dir.path().join("data"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--max-outbound-connections",
            "40",
        ],
    );
    let url = format!("/?url=http%3A%2F%2F{upstream}%2F&n=30");
    let runs: Vec<_> = ["fanout", "fanout", "fanout2", "fanout2"]
        .into_iter()
        .map(|app| {
            let (addr, path) = (served.addr, url.clone());
            std::thread::spawn(move || get(addr, app, &path, Duration::from_secs(60)))
        })
        .collect();
    let mut through = 0;
    let mut refused = 0;
    for run in runs {
        let (status, body) = run.join().unwrap();
        assert_eq!(status, 200, "{body}");
        let seen = outcomes(&body);
        refused += seen.get("ConnectionLimitReached").copied().unwrap_or(0);
        through += seen.values().sum::<u32>();
    }
    assert_eq!(through, 120);
    // Each request may take 30 (under its own cap of 32); the four together
    // overlap within the 2 s their connections stay open, so the host's 40
    // refuses most of the rest.
    assert!(refused >= 120 - 40 - 30, "{refused} refused of 120");
    assert!(
        served.stderr().contains("--max-outbound-connections"),
        "berth's debug log names the cap"
    );
    drop(blackhole);
    served.stop();
}

/// An upstream that promises 100 bytes, sends 5 and closes, so that the
/// guest's body read fails with a wasi:io error whose text it reads.
fn truncating_upstream() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort");
    });
    (addr, t)
}

#[test]
fn an_error_a_guest_reads_has_no_host_backtrace_even_with_rust_backtrace_set() {
    let (upstream, server) = truncating_upstream();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(
        &path,
        format!(
            "[apps.out]\nwasm = {:?}\nallowed_outbound_hosts = [\"{upstream}\"]\n",
            art::OUTBOUND
        ),
    )
    .unwrap();
    let served = Served::start_with_env(
        &dir.path().join("data"),
        &["--config", path.to_str().unwrap()],
        &[("RUST_BACKTRACE", "1"), ("RUST_LIB_BACKTRACE", "1")],
    );
    let (status, body) = get(
        served.addr,
        "out",
        &format!("/?url=http%3A%2F%2F{upstream}%2F"),
        Duration::from_secs(30),
    );
    server.join().unwrap();
    assert_eq!(status, 502, "the body read fails: {body}");
    assert!(body.starts_with("outbound error: "), "{body}");
    let text = body.trim_end();
    assert!(!text.contains('\n'), "one line, got:\n{text}");
    for leak in [
        "backtrace",
        "Backtrace",
        ".rs:",
        "/rustc/",
        "/root/",
        "cargo/registry",
    ] {
        assert!(
            !text.contains(leak),
            "`{leak}` in what the guest read:\n{text}"
        );
    }
    served.stop();
}
