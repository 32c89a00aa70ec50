//! Wasm cold start of the `hello` component, measured three ways:
//!
//! 1. host side: request accepted by the front door → guest handler entered
//!    (a fresh `Store` + instantiation from the app's `ProxyPre`), read from
//!    the `ColdStart` the host attaches to every response;
//! 2. the whole request handled in-process (routing, instance, handler,
//!    response body collected), no sockets;
//! 3. the whole request over loopback HTTP/1.1 with a keep-alive client.
//!
//! Every request gets a fresh instance, so every request is a cold start of
//! an instance; the compiled component stays resident.
//!
//! Run with `cargo bench -p berth --bench cold_start` (or `make bench`);
//! `BERTH_BENCH_N` sets the number of requests per series (default 5000).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use berth::testing::TestHost;
use berth::wasm::ColdStart;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<44} n={:<6} p50={:>9.1} µs  p90={:>9.1} µs  p99={:>9.1} µs",
        samples.len(),
        us(percentile(&samples, 0.50)),
        us(percentile(&samples, 0.90)),
        us(percentile(&samples, 0.99)),
    );
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
        let host = TestHost::builder()
            .wasm_app("hello", berth_test_artifacts::HELLO)
            .start()
            .await
            .expect("start host");
        let gateway = host.server.gateway().clone();

        println!("berth cold-start benchmark: hello component, {n} requests per series");

        // Warm-up (page in the compiled code, fill the pool's warm slots).
        for _ in 0..n.min(200) {
            let req = http::Request::get("http://hello.localhost/")
                .body(empty())
                .unwrap();
            let resp = gateway.handle(req).await.unwrap();
            resp.into_body().collect().await.unwrap();
        }

        // 1 + 2: in-process.
        let mut host_side = Vec::with_capacity(n);
        let mut instantiate = Vec::with_capacity(n);
        let mut in_process = Vec::with_capacity(n);
        for _ in 0..n {
            let req = http::Request::get("http://hello.localhost/")
                .body(empty())
                .unwrap();
            let t = Instant::now();
            let resp = gateway.handle(req).await.unwrap();
            let cold = *resp.extensions().get::<ColdStart>().expect("cold start");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            in_process.push(t.elapsed());
            assert_eq!(&body[..], b"hello from hello");
            host_side.push(cold.host);
            instantiate.push(cold.instantiate);
        }

        // 3: over loopback, one keep-alive connection.
        let stream = tokio::net::TcpStream::connect(host.addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut loopback = Vec::with_capacity(n);
        for _ in 0..n {
            let req = http::Request::get("/")
                .header("host", "hello.localhost")
                .body(empty())
                .unwrap();
            sender.ready().await.unwrap();
            let t = Instant::now();
            let resp = sender.send_request(req).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            loopback.push(t.elapsed());
            assert_eq!(&body[..], b"hello from hello");
        }

        report("host-side cold start (accepted → handler)", host_side);
        report("  of which instantiation", instantiate);
        report("whole request, in-process", in_process);
        report("whole request, loopback HTTP/1.1", loopback);
        host.stop().await;
    });
}
