use super::*;

fn test_caps() -> OutboundCaps {
    OutboundCaps::new(caps::HostOutbound::new(8), 8, 8)
}

fn policy(entries: &[&str]) -> OutboundPolicy {
    let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
    OutboundPolicy::new(&entries, &[], test_caps(), PoolSettings::default()).unwrap()
}

fn allows(entries: &[&str], uri: &str) -> bool {
    policy(entries).allows_uri(&uri.parse().unwrap())
}

/// A loopback upstream answering `ok`; the connections it accepted.
async fn counting_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"ok")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// One GET of `addr` through `policy`, its body read to the end.
async fn get(policy: &mut OutboundPolicy, addr: SocketAddr) -> Result<Bytes, HttpError> {
    let request = http::Request::builder()
        .uri(format!("http://{addr}/"))
        .header("host", addr.to_string())
        .body(
            http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap();
    let sent = policy.send_request(request, None, Box::new(async { Ok(()) }));
    let (response, _io) = Box::into_pin(sent).await?;
    Ok(response.into_body().collect().await?.to_bytes())
}

/// Waits (up to 5 s) for `f` to hold.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}");
}

#[tokio::test]
async fn idle_connections_are_reused_and_make_room_across_apps() {
    use std::sync::atomic::Ordering;
    let (addr, accepted) = counting_upstream().await;
    let host = caps::HostOutbound::new(1);
    let app = |settings| {
        OutboundPolicy::new(
            &[addr.to_string()],
            &[],
            OutboundCaps::new(host.clone(), 4, 4),
            settings,
        )
        .unwrap()
    };
    let (a, b) = (app(PoolSettings::default()), app(PoolSettings::default()));
    for _ in 0..3 {
        assert_eq!(get(&mut a.for_request(), addr).await.unwrap(), "ok");
        eventually("a's connection pooled", || a.pool.idle_count() == 1).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let counts = a.pool.counters().status();
    assert_eq!((counts.opened, counts.reused, counts.idle), (1, 2, 1));
    assert_eq!(
        host.in_use(),
        1,
        "the idle connection holds the host's place"
    );

    // The host's budget (1) is held by a's idle connection: b's request
    // closes it and gets the place; b never gets a's connection.
    assert_eq!(get(&mut b.for_request(), addr).await.unwrap(), "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(a.pool.idle_count(), 0);
    eventually("b's connection pooled", || b.pool.idle_count() == 1).await;
    assert_eq!(host.in_use(), 1);

    // With pooling off nothing stays: the place comes back at once.
    let off = app(PoolSettings {
        idle_per_host: 0,
        ..PoolSettings::default()
    });
    drop(b);
    eventually("b's pool gone", || host.in_use() == 0).await;
    for n in 3..5 {
        assert_eq!(get(&mut off.for_request(), addr).await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), n);
        eventually("the place given back", || host.in_use() == 0).await;
    }
    assert_eq!(off.pool.counters().status().refused, 0);
}

#[test]
fn patterns() {
    assert!(!allows(&[], "http://example.com/"));
    assert!(allows(&["example.com"], "http://example.com/x"));
    assert!(allows(&["example.com"], "https://EXAMPLE.com:8443/x"));
    assert!(!allows(&["example.com"], "http://evil-example.com/"));
    assert!(allows(&["127.0.0.1:9000"], "http://127.0.0.1:9000/"));
    assert!(!allows(&["127.0.0.1:9000"], "http://127.0.0.1:9001/"));
    assert!(allows(&["*.example.com"], "http://api.example.com/"));
    assert!(!allows(&["*.example.com"], "http://example.com/"));
    assert!(!allows(&["*.example.com"], "http://badexample.com/"));
    assert!(allows(&["*"], "http://anything:1/"));
    assert!(allows(&["*:443"], "https://x/"));
    assert!(!allows(&["*:443"], "http://x/"));
    assert!(allows(&["https://x"], "https://x/"));
    assert!(!allows(&["https://x"], "http://x/"));
    assert!(allows(&["[::1]:80"], "http://[::1]/"));
}

#[test]
fn internal_addresses_need_a_literal_entry() {
    let p = policy;
    let lo: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    assert!(!p(&["*"]).allows_addr("http", lo));
    assert!(!p(&["localhost:9000"]).allows_addr("http", lo));
    assert!(p(&["127.0.0.1:9000"]).allows_addr("http", lo));
    assert!(p(&["127.0.0.1"]).allows_addr("http", lo));
    assert!(!p(&["127.0.0.1:9001"]).allows_addr("http", lo));
    let meta: SocketAddr = "169.254.169.254:80".parse().unwrap();
    assert!(!p(&["*", "*.internal"]).allows_addr("http", meta));
    let public: SocketAddr = "203.0.113.7:443".parse().unwrap();
    assert!(p(&["*"]).allows_addr("https", public));
}

#[test]
fn own_addresses_need_a_literal_entry_and_networks_open_ranges() {
    let strings = |e: &[&str]| e.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let own = OwnAddrs::fixed(["203.0.113.77".parse().unwrap(), "10.9.0.1".parse().unwrap()]);
    let p = |hosts: &[&str], nets: &[&str]| {
        OutboundPolicy::with_own(&strings(hosts), &strings(nets), own.clone(), test_caps()).unwrap()
    };
    let mine: SocketAddr = "203.0.113.77:8080".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:203.0.113.77]:8080".parse().unwrap();
    assert!(!p(&["*"], &[]).allows_addr("http", mine));
    assert!(!p(&["*"], &[]).allows_addr("http", mapped));
    assert!(!p(&["*"], &["203.0.113.0/24"]).allows_addr("http", mine));
    assert!(p(&["203.0.113.77:8080"], &[]).allows_addr("http", mine));
    assert!(p(&["203.0.113.77"], &[]).allows_addr("http", mine));
    let lan: SocketAddr = "10.9.0.20:80".parse().unwrap();
    assert!(!p(&["*"], &[]).allows_addr("http", lan));
    assert!(p(&["*"], &["10.9.0.0/16"]).allows_addr("http", lan));
    assert!(!p(&["*"], &["10.8.0.0/16"]).allows_addr("http", lan));
    // The host's own address inside a listed network stays refused.
    let gw: SocketAddr = "10.9.0.1:80".parse().unwrap();
    assert!(!p(&["*"], &["10.9.0.0/16"]).allows_addr("http", gw));
    assert!(p(&["10.9.0.1:80"], &["10.9.0.0/16"]).allows_addr("http", gw));
    let ula: SocketAddr = "[fd00:1::5]:80".parse().unwrap();
    assert!(!p(&["*"], &[]).allows_addr("http", ula));
    assert!(p(&["*"], &["fd00:1::/32"]).allows_addr("http", ula));
    assert_eq!(
        OutboundPolicy::with_own(&[], &strings(&["0.0.0.0/0"]), own.clone(), test_caps())
            .unwrap_err()
            .key,
        "allowed_networks"
    );
}
