//! Wasm start of the `hello` component, measured in one run on two hosts
//! side by side, requests alternating between them:
//!
//! 1. host side: request accepted by the front door → guest handler entered,
//!    read from the `ColdStart` the host attaches to every response; on a
//!    host with the stock (a stock hit: the instance was made ahead) and on
//!    one without (`stock_per_instance` 0: a fresh `Store` + instantiation
//!    from the app's `ProxyPre` on the request's path);
//! 2. the whole request handled in-process (routing, instance, handler,
//!    response body collected), no sockets, both hosts;
//! 3. the whole request over loopback HTTP/1.1 with a keep-alive client,
//!    warm, against the same request right after the app was forced to
//!    zero (scale from zero: first byte).
//!
//! Every request gets an instance no other request touched. The figures are
//! printed beside the goals of README's performance section; a benchmark,
//! not a test: nothing here fails on a missed goal.
//!
//! Run with `cargo bench -p berth --bench cold_start` (or `make bench`);
//! `BERTH_BENCH_N` sets the number of requests per series (default 5000).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use berth::config::AppSpec;
use berth::gateway::Gateway;
use berth::testing::TestHost;
use berth::wasm::{ColdStart, EngineOptions};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    if samples.is_empty() {
        println!("{name:<44} n=0");
        return Duration::ZERO;
    }
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<44} n={:<6} p50={:>9.1} µs  p90={:>9.1} µs  p99={:>9.1} µs",
        samples.len(),
        us(percentile(&samples, 0.50)),
        us(percentile(&samples, 0.90)),
        us(percentile(&samples, 0.99)),
    );
    percentile(&samples, 0.50)
}

fn empty() -> http_body_util::combinators::BoxBody<Bytes, hyper::Error> {
    Empty::<Bytes>::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` this is a smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("BERTH_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benching { 5000 } else { 20 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stocked = TestHost::builder()
            .app("hello", zero_spec())
            .start()
            .await
            .expect("start host");
        let fresh = TestHost::builder()
            .engine(EngineOptions {
                stock_per_instance: Some(0),
                ..EngineOptions::default()
            })
            .app("hello", zero_spec())
            .start()
            .await
            .expect("start host");
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "berth cold-start benchmark: hello component, {n} requests per series; load {}",
            load.trim()
        );

        let gateways = [
            stocked.server.gateway().clone(),
            fresh.server.gateway().clone(),
        ];
        // Warm-up (page in the compiled code, fill the pool's warm slots).
        for _ in 0..n.min(200) {
            for g in &gateways {
                in_process(g).await;
            }
        }

        // 1 + 2: in-process, alternating between the two hosts.
        let (mut hit, mut hit_inst, mut hit_whole) = (Vec::new(), Vec::new(), Vec::new());
        let (mut miss, mut miss_inst, mut miss_whole) = (Vec::new(), Vec::new(), Vec::new());
        let mut stock_misses = 0;
        for _ in 0..n {
            let (cold, whole) = in_process(&gateways[0]).await;
            if cold.stock_hit {
                hit.push(cold.host);
                hit_inst.push(cold.instantiate);
                hit_whole.push(whole);
            } else {
                stock_misses += 1;
            }
            let (cold, whole) = in_process(&gateways[1]).await;
            assert!(!cold.stock_hit);
            miss.push(cold.host);
            miss_inst.push(cold.instantiate);
            miss_whole.push(whole);
        }

        // 3: over loopback, one keep-alive connection: warm, and from zero.
        let revision = stocked.apps().revisions("hello").remove(0);
        let mut client = Client::connect(stocked.addr).await;
        let rounds = (n / 10).max(10);
        let (mut warm, mut from_zero) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            warm.push(client.first_byte().await);
            revision.drop_idle_instances().await;
            assert_eq!(revision.status().ready, 0, "forced to zero");
            from_zero.push(client.first_byte().await);
        }
        let cold_starts = revision.status().cold_starts;

        let hit_p50 = report("host-side start, stock hit", hit);
        report("  of which taking the stocked instance", hit_inst);
        let miss_p50 = report("host-side start, no stock (instantiation)", miss);
        report("  of which instantiation", miss_inst);
        report("whole request in-process, stock", hit_whole);
        report("whole request in-process, no stock", miss_whole);
        let warm_p50 = report("first byte over loopback, warm", warm);
        let zero_p50 = report("first byte over loopback, from zero", from_zero);
        println!(
            "stock: {} of {n} requests hit; {cold_starts} starts from zero",
            n - stock_misses
        );
        println!();
        println!(
            "{:<52} {:>12}  {:<10} result",
            "goal figure (same run)", "measured", "goal"
        );
        let rows = [
            (
                "Wasm host-side start p50, stock hit",
                us(hit_p50),
                hit_p50 <= Duration::from_micros(5),
                "≤ 5 µs",
            ),
            (
                "Wasm host-side start p50, no stock",
                us(miss_p50),
                miss_p50 <= Duration::from_micros(15),
                "≤ 15 µs",
            ),
            (
                "scale-from-zero first byte p50 / warm p50",
                format!("{:.2}×", ratio(zero_p50, warm_p50)),
                ratio(zero_p50, warm_p50) <= 1.3,
                "≤ 1.3×",
            ),
        ];
        for (name, value, met, goal) in rows {
            println!(
                "{name:<52} {value:>12}  {goal:<10} {}",
                if met { "met" } else { "missed" }
            );
        }
        println!("(throughput against wasmtime serve, containers and density: scripts/bench.sh)");
        stocked.stop().await;
        fresh.stop().await;
    });
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// At most one instance, decided only by the activator (no background
/// decision during the measurement), as `berth bench cold-start` has it.
fn zero_spec() -> AppSpec {
    let mut spec = AppSpec::wasm(berth_test_artifacts::HELLO);
    let a = &mut spec.scaling.autoscale;
    a.min_scale = 0;
    a.max_scale = 1;
    a.initial_scale = 1;
    a.tick = Duration::from_secs(3600);
    a.stable_window = Duration::from_secs(3600);
    spec
}

async fn in_process(gateway: &Gateway) -> (ColdStart, Duration) {
    let req = http::Request::get("http://hello.localhost/")
        .body(empty())
        .unwrap();
    let t = Instant::now();
    let resp = gateway.handle(req).await.unwrap();
    let Some(cold) = resp.extensions().get::<ColdStart>().copied() else {
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        panic!("no cold start figures: {status} {body:?}");
    };
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let whole = t.elapsed();
    assert_eq!(&body[..], b"hello from hello");
    (cold, whole)
}

struct Client {
    sender: hyper::client::conn::http1::SendRequest<
        http_body_util::combinators::BoxBody<Bytes, hyper::Error>,
    >,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender }
    }

    /// Request sent → response head (the first byte), body read after.
    async fn first_byte(&mut self) -> Duration {
        let req = http::Request::get("/")
            .header("host", "hello.localhost")
            .body(empty())
            .unwrap();
        self.sender.ready().await.unwrap();
        let t = Instant::now();
        let resp = self.sender.send_request(req).await.unwrap();
        let first = t.elapsed();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello from hello");
        first
    }
}
