//! HTTPS on the front door.

use berth::testing::TestHost;
use berth_test_artifacts as art;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_request_through_the_tls_listener() {
    berth::tls::install_crypto_provider();
    let cert = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "hello.localhost".to_string(),
        "echo.localhost".to_string(),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let config = berth::tls::server_config(&cert_path, &key_path).unwrap();

    let host = TestHost::builder()
        .wasm_app("hello", art::HELLO)
        .wasm_app("echo", art::ECHO)
        .tls(config)
        .start()
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap()])
        .resolve("hello.localhost", host.addr)
        .resolve("echo.localhost", host.addr)
        .build()
        .unwrap();
    let url = format!("https://hello.localhost:{}/", host.addr.port());
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    assert_eq!(r.text().await.unwrap(), "hello from hello");
    // The guest sees the scheme the client used.
    let r = client
        .get(format!("https://echo.localhost:{}/x", host.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-echo-scheme"], "https");

    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        plain
            .get(format!("http://127.0.0.1:{}/", host.addr.port()))
            .send()
            .await
            .is_err()
    );

    // A bad key file is refused with its name.
    std::fs::write(&key_path, "not a key").unwrap();
    let err = berth::tls::server_config(&cert_path, &key_path).unwrap_err();
    assert!(format!("{err:#}").contains("key.pem"), "{err:#}");
    host.stop().await;
}
