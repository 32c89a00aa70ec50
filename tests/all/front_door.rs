//! The front door under abuse: idle and slow sockets by the thousand, a
//! connection cap, request bodies over the limit, a container past its
//! timeout, one app taking the Wasm pool, guests past the memory budget.
//! Real sockets on loopback, the real server in-process.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use berth::config::AppSpec;
use berth::server::ConnectionLimits;
use berth::testing::TestHost;
use berth::wasm::EngineOptions;
use berth_test_artifacts as art;

use crate::support::image::{Image, ImageExt as _, Layer};
use crate::support::registry::Registry;
use crate::support::{admin, app_url, client, get, status, wait_until};

/// A raw HTTP/1.1 exchange on a new connection: the status line.
fn raw_get(addr: SocketAddr, host: &str) -> String {
    raw_get_path(addr, host, "/")
}

/// [`raw_get`] of `path`.
fn raw_get_path(addr: SocketAddr, host: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // One write; a refused connection may already be closing, and its
    // answer is read all the same.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(request.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

/// Whether the server closed `s` (a read returns end of file or an error).
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false, // an answer (e.g. a 408); still open until EOF
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_sockets_by_the_thousand_neither_starve_requests_nor_stay() {
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .connections(ConnectionLimits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            ..ConnectionLimits::default()
        })
        .start()
        .await
        .unwrap();
    let addr = host.addr;
    // 2,000 idle sockets (connected, nothing sent) from four addresses and
    // 200 slow ones (a request head that never ends) from a fifth: each
    // address within the per-client cap (625), so none is refused.
    let mut idle: Vec<TcpStream> = Vec::new();
    for i in 0..2000 {
        let s = connect_from(&format!("127.0.2.{}", i % 4 + 1), addr).await;
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        idle.push(s);
    }
    let mut slow: Vec<TcpStream> = Vec::new();
    for _ in 0..200 {
        let s = connect_from("127.0.2.5", addr).await;
        let mut s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: hello.localhost\r\nX-Slow: ")
            .unwrap();
        slow.push(s);
    }
    // Real clients are served meanwhile.
    let c = client(addr, &["hello"]);
    for _ in 0..50 {
        let r = c.get(app_url(addr, "hello", "/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // And the server lets go of every idle and slow socket by itself.
    let all_closed = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            idle.retain_mut(|s| !closed_by_server(s));
            slow.retain_mut(|s| {
                // Dripping: one more byte now and then.
                let _ = s.write_all(b"x");
                !closed_by_server(s)
            });
            if idle.is_empty() && slow.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err((idle.len(), slow.len()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
    assert_eq!(all_closed, Ok(()), "(idle, slow) sockets still open");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_connection_gets_a_503_and_is_closed() {
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .connections(ConnectionLimits {
            max_connections: 20,
            // The listener's cap, not the per-client one, is what this
            // test meets.
            max_connections_per_client: Some(20),
            ..ConnectionLimits::default()
        })
        .start()
        .await
        .unwrap();
    let addr = host.addr;
    let held = tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // The server has taken them all in before the next one.
        std::thread::sleep(Duration::from_millis(200));
        let refused = raw_get(addr, "hello.localhost");
        (held, refused)
    })
    .await
    .unwrap();
    let (held, refused) = held;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    drop(held);
    // Room again once they are gone.
    let addr2 = host.addr;
    wait_until("a connection slot", Duration::from_secs(10), || {
        let line = raw_get(addr2, "hello.localhost");
        if line.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(line)
        }
    })
    .await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_apps_limit_is_refused_with_413() {
    let mut spec = AppSpec::wasm(art::ECHO);
    spec.limits.request_body = 1024;
    let host = TestHost::builder().app("echo", spec).start().await.unwrap();
    let c = client(host.addr, &["echo"]);
    let url = app_url(host.addr, "echo", "/");
    let r = c.post(&url).body(vec![b'a'; 1024]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 1024);
    // Declared too large: refused before any instance sees it.
    let r = c.post(&url).body(vec![b'a'; 4096]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("limits.request_body"));
    // Streamed (chunked) past the limit: the guest's body breaks; the whole
    // body never comes back.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'b'; 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let echoed = match c.post(&url).body(body).send().await {
        Ok(r) => r.bytes().await.map(|b| b.len()).unwrap_or(0),
        Err(_) => 0,
    };
    assert!(echoed < 8 * 1024, "the over-limit body went through whole");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_past_its_timeout_gets_504() {
    let registry = Registry::start();
    let reference = registry.reference("sleepy:v1");
    let mut image = Image::httpd();
    image.layers.push(Layer::default().file(
        "www/cgi-bin/sleepy",
        0o755,
        "#!/bin/sh\nsleep 30\necho 'Content-Type: text/plain'\necho\necho woke\n",
    ));
    image.push(&reference);
    let mut spec = AppSpec::image(&reference);
    spec.limits.timeout = Duration::from_secs(1);
    spec.container.startup_timeout = Duration::from_secs(30);
    spec.container.shutdown_grace = Duration::from_secs(1);
    let host = TestHost::builder()
        .app("sleepy", spec)
        .start()
        .await
        .unwrap();
    let (code, body) = get(&host, "sleepy", "/cgi-bin/sleepy").await;
    assert_eq!(code, 504, "{body}");
    assert!(body.contains("timeout of 1s"), "{body}");
    // The instance serves on.
    assert_eq!(get(&host, "sleepy", "/").await.0, 200);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_cannot_take_every_wasm_slot() {
    let host = TestHost::builder()
        .engine(EngineOptions {
            max_instances: 4,
            max_instances_per_app: Some(2),
            ..EngineOptions::default()
        })
        .wasm_app("greedy", art::SLOW)
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["greedy", "hello"]);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let c = c.clone();
            let url = app_url(host.addr, "greedy", "/?ms=3000");
            tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    wait_until(
        "two requests in the greedy app",
        Duration::from_secs(10),
        || {
            let s = status(&host, "greedy");
            if s.in_flight == 2 { Ok(()) } else { Err(s) }
        },
    )
    .await;
    let r = c
        .get(app_url(host.addr, "greedy", "/?ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("its share of the Wasm instance pool")
    );
    // Another app still has its slots.
    assert_eq!(
        get(&host, "hello", "/").await,
        (200, "hello from hello".into())
    );
    for b in busy {
        assert_eq!(b.await.unwrap(), 200);
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_together_stay_within_the_memory_budget() {
    let mut bomb = AppSpec::wasm(art::ALLOC_BOMB);
    bomb.limits.memory = 256 << 20;
    let host = TestHost::builder()
        .engine(EngineOptions {
            max_instances: 16,
            max_instances_per_app: Some(8),
            memory_budget: Some(48 << 20),
            // Stocked instances hold their initial memory against the
            // budget too; without them, "given back" below means zero.
            stock_per_instance: Some(0),
            ..EngineOptions::default()
        })
        .app("bomb", bomb)
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    // Its own limit is 256 MiB; the host's budget (48 MiB) stops it first.
    let (code, body) = get(&host, "bomb", "/").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("memory budget for Wasm guests (48.0 MiB)"),
        "{body}"
    );
    // What it held is given back: others run, and so does it again.
    assert_eq!(get(&host, "hello", "/").await.0, 200);
    assert_eq!(host.apps().runtime().memory().0, 0);
    assert_eq!(get(&host, "bomb", "/").await.0, 503);
    host.stop().await;
}

/// Whether the server has closed `s` within `limit` (end of file, or an
/// error; an answer is read past).
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A TCP connection to `to` from the loopback address `from` (all of
/// 127/8 is this machine's).
async fn connect_from(from: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// One raw HTTP/1.1 request from `from`: the whole answer.
async fn raw_request_from(from: &str, to: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = connect_from(from, to).await;
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn get_request(host: &str, extra: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_or_a_bare_h2_preface_is_closed_at_the_header_read_timeout_from_accept()
{
    use tokio::io::AsyncWriteExt as _;
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .connections(ConnectionLimits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            ..ConnectionLimits::default()
        })
        .start()
        .await
        .unwrap();
    for target in [host.addr, host.admin_addr] {
        let start = tokio::time::Instant::now();
        let mut silent = connect_from("127.0.0.1", target).await;
        let mut preface = connect_from("127.0.0.1", target).await;
        preface
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        let mut partial = connect_from("127.0.0.1", target).await;
        partial.write_all(b"GET / HT").await.unwrap();
        for (what, s) in [
            ("silent", &mut silent),
            ("h2c preface", &mut preface),
            ("half a request line", &mut partial),
        ] {
            assert!(
                closed_within(s, Duration::from_secs(5)).await,
                "{target}: {what} still open"
            );
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(900) && took < Duration::from_secs(3),
                "{target}: {what} closed after {took:?}, not at the 1 s header-read timeout"
            );
        }
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_from_one_client_hold_only_its_share_of_the_front_door() {
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .connections(ConnectionLimits {
            // Long enough that none of the silent ones times out meanwhile.
            header_read_timeout: Duration::from_secs(60),
            ..ConnectionLimits::default()
        })
        .start()
        .await
        .unwrap();
    let addr = host.addr;
    let per_client = ConnectionLimits::default().per_client();
    assert_eq!(per_client, 625);
    // 10,000 connections from 127.0.0.1, nothing sent on them. Refused ones
    // (a 503, then closed) are let go as they come, so the test holds about
    // as many sockets as the server lets it.
    let (held, refusals) = tokio::task::spawn_blocking(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        let mut refusals: Vec<String> = Vec::new();
        let prune = |held: &mut Vec<TcpStream>, refusals: &mut Vec<String>| {
            held.retain_mut(|s| {
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                    Ok(n) => {
                        refusals.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                        false
                    }
                    Err(e) => {
                        refusals.push(e.to_string());
                        false
                    }
                }
            });
        };
        for batch in 0..20 {
            for _ in 0..500 {
                held.push(TcpStream::connect(addr).unwrap());
            }
            std::thread::sleep(Duration::from_millis(30));
            prune(&mut held, &mut refusals);
            assert!(held.len() < 2_000, "batch {batch}: {} held", held.len());
        }
        // Let the last refusals arrive.
        std::thread::sleep(Duration::from_millis(500));
        prune(&mut held, &mut refusals);
        (held, refusals)
    })
    .await
    .unwrap();
    assert_eq!(held.len(), per_client, "connections the server kept open");
    assert_eq!(refusals.len(), 10_000 - per_client);
    let words = format!(
        "berth: the front door allows {per_client} connections per client address, and this address has them all open"
    );
    let named = refusals.iter().filter(|r| r.contains(&words)).count();
    assert!(
        named > refusals.len() * 9 / 10,
        "{named} of {} refusals name the per-client cap; one: {:?}",
        refusals.len(),
        refusals.first()
    );
    // Another client address is served meanwhile; the same one is not.
    let other = raw_request_from("127.0.0.2", addr, &get_request("hello.localhost", "")).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    let same = raw_request_from("127.0.0.1", addr, &get_request("hello.localhost", "")).await;
    assert!(
        same.starts_with("HTTP/1.1 503") && same.contains(&words),
        "{same}"
    );
    drop(held);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_silent_sockets_never_lock_a_token_holder_out_of_the_admin_listener() {
    let timeout = Duration::from_secs(2);
    let host = TestHost::builder()
        .connections(ConnectionLimits {
            header_read_timeout: timeout,
            ..ConnectionLimits::default()
        })
        .start()
        .await
        .unwrap();
    let admin = host.admin_addr;
    // 300 from one address, 300 spread over ten: past both the admin
    // listener's per-client cap (64) and its cap (256).
    let mut silent = Vec::new();
    for i in 0..600 {
        let from = if i < 300 {
            "127.0.0.1".to_string()
        } else {
            format!("127.0.1.{}", i % 10 + 1)
        };
        silent.push(connect_from(&from, admin).await);
    }
    let flooded = tokio::time::Instant::now();
    // The token holder, from the flooding address and from another, gets
    // /healthz, the API, the console and the CLI within the header-read
    // timeout.
    for from in ["127.0.0.1", "127.0.0.7"] {
        let c = reqwest::Client::builder()
            .no_proxy()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .timeout(timeout)
            .build()
            .unwrap();
        let t = tokio::time::Instant::now();
        let r = c.get(admin::url(&host, "/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{from}: /healthz");
        let r = c
            .get(admin::url(&host, "/v1/apps"))
            .bearer_auth(host.admin_token())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{from}: the API with the token");
        let r = c.get(admin::url(&host, "/ui/login")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{from}: the console");
        assert!(t.elapsed() < timeout, "{from}: took {:?}", t.elapsed());
    }
    let cli = {
        let url = admin::url(&host, "");
        let token = host.admin_token().to_string();
        tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["apps", "--admin", &url, "--token", &token])
                .env_remove("BERTH_ADMIN_TOKEN")
                .output()
                .unwrap();
            (out, t.elapsed())
        })
    };
    let (out, took) = cli.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < timeout, "the CLI took {took:?}");
    // Every silent socket is closed by the server, by the header-read
    // timeout from its accept (or earlier, to make room).
    let mut open = 0;
    for s in &mut silent {
        let left = (flooded + timeout + Duration::from_secs(2))
            .saturating_duration_since(tokio::time::Instant::now());
        if !closed_within(s, left).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "silent sockets still open past the header-read timeout"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_two_host_headers_gets_400_on_both_listeners() {
    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .start()
        .await
        .unwrap();
    let one = raw_request_from("127.0.0.1", host.addr, &get_request("hello.localhost", "")).await;
    assert!(one.starts_with("HTTP/1.1 200"), "{one}");
    for (to, first, second) in [
        (host.addr, "hello.localhost", "other.localhost"),
        (host.addr, "hello.localhost", "hello.localhost"),
        (host.admin_addr, "127.0.0.1", "127.0.0.1"),
    ] {
        let two = raw_request_from(
            "127.0.0.1",
            to,
            &get_request(first, &format!("Host: {second}\r\n")),
        )
        .await;
        assert!(
            two.starts_with("HTTP/1.1 400") && two.contains("more than one Host header"),
            "{to}: {two}"
        );
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_tokens_are_answered_ever_later_per_address_and_a_right_one_at_once() {
    let host = TestHost::builder().start().await.unwrap();
    let from = |ip: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let attacker = from("127.0.0.1");
    // Alternating the API's bearer and the console's sign-in: one count.
    let mut took = Vec::new();
    for i in 0..6 {
        let t = tokio::time::Instant::now();
        let status = if i % 2 == 0 {
            attacker
                .get(admin::url(&host, "/v1/apps"))
                .bearer_auth(format!("wrong-guess-{i}"))
                .send()
                .await
                .unwrap()
                .status()
        } else {
            attacker
                .post(admin::url(&host, "/ui/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token=wrong-guess-{i}"))
                .send()
                .await
                .unwrap()
                .status()
        };
        assert_eq!(status, 401, "guess {i}");
        took.push(t.elapsed());
    }
    // 100 ms, 200, 400, 800, 1.6 s, 3.2 s.
    assert!(took[0] < Duration::from_millis(600), "{took:?}");
    for (k, t) in took.iter().enumerate() {
        let due = Duration::from_millis(100 << k);
        assert!(
            *t >= due,
            "guess {k} answered after {t:?}, before {due:?}: {took:?}"
        );
    }
    // Another address with the right token: at once.
    let t = tokio::time::Instant::now();
    let r = from("127.0.0.2")
        .get(admin::url(&host, "/v1/apps"))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // The right token from the guessing address too, and it clears the
    // count: the next wrong one is quick again.
    let r = attacker
        .get(admin::url(&host, "/v1/apps"))
        .bearer_auth(host.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = tokio::time::Instant::now();
    let r = attacker
        .get(admin::url(&host, "/v1/apps"))
        .bearer_auth("wrong-again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    host.stop().await;
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parens.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_listeners_pause_and_serve_again_once_the_pressure_goes() {
    let dir = tempfile::tempdir().unwrap();
    // 256 open files for the whole process: the admin listener's 256 slots
    // alone are past it.
    let served = crate::support::serve::Served::start_with_open_files(
        256,
        dir.path(),
        &["--header-read-timeout", "60s"],
    );
    let admin = served.admin;
    let front = served.addr;
    // 400 silent connections from eight addresses (within the admin
    // listener's per-client cap, so none is displaced): the server runs out
    // of descriptors and the rest wait in the backlog.
    // Connects run on their own tasks: once the backlog is full too, the
    // kernel holds them in SYN_SENT, which is the pressure we want.
    let mut silent = tokio::task::JoinSet::new();
    for i in 0..400 {
        let from = format!("127.0.3.{}", i % 8 + 1);
        silent.spawn(async move { connect_from(&from, admin).await });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Under the pressure for three seconds: a few warnings, not a loop.
    let count = |log: &str| log.lines().filter(|l| l.contains("accept failed")).count();
    let warned_before = count(&served.stderr());
    let before = cpu_time(served.pid());
    let start = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_time(served.pid()) - before;
    let wall = start.elapsed();
    let log = served.stderr();
    let warnings = count(&log) - warned_before;
    assert!(
        log.contains("Too many open files") && warnings >= 1,
        "the server never ran out of descriptors:\n{log}"
    );
    assert!(
        warnings <= 8,
        "{warnings} accept warnings in {wall:?}:\n{log}"
    );
    assert!(
        cpu < wall / 4,
        "{cpu:?} of CPU in {wall:?} out of descriptors: a loop of errors"
    );
    // The pressure goes: both listeners answer again.
    silent.abort_all();
    drop(silent);
    let healthz = format!("http://{admin}/healthz");
    wait_until(
        "/healthz after the pressure",
        Duration::from_secs(10),
        || match raw_get_path(admin, "127.0.0.1", "/healthz") {
            line if line.starts_with("HTTP/1.1 200") => Ok(()),
            line => Err(format!("{healthz}: {line}")),
        },
    )
    .await;
    let line = raw_get(front, "nosuch.localhost");
    assert!(line.starts_with("HTTP/1.1 404"), "{line}");
    served.stop();
}
