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

use crate::support::image::{Image, Layer};
use crate::support::registry::Registry;
use crate::support::{app_url, client, get, status, wait_until};

/// A raw HTTP/1.1 exchange on a new connection: the status line.
fn raw_get(addr: SocketAddr, host: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // One write; a refused connection may already be closing, and its
    // answer is read all the same.
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
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
    // 2,000 idle sockets (connected, nothing sent) and 200 slow ones (a
    // request head that never ends).
    let (mut idle, mut slow) = tokio::task::spawn_blocking(move || {
        let idle: Vec<TcpStream> = (0..2000)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let slow: Vec<TcpStream> = (0..200)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: hello.localhost\r\nX-Slow: ")
                    .unwrap();
                s
            })
            .collect();
        (idle, slow)
    })
    .await
    .unwrap();
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
