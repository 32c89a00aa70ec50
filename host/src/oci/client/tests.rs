use super::*;

#[test]
fn parses_tags_digests_and_ports() {
    let r = parse_reference("127.0.0.1:5000/hello:v1").unwrap();
    assert_eq!(
        (r.registry(), r.repository(), r.tag(), r.digest()),
        ("127.0.0.1:5000", "hello", Some("v1"), None)
    );
    let d = format!("sha256:{}", "ab".repeat(32));
    let r = parse_reference(&format!("host.example/repo@{d}")).unwrap();
    assert_eq!(
        (r.registry(), r.repository(), r.digest()),
        ("host.example", "repo", Some(d.as_str()))
    );
    let r = parse_reference("localhost:5000/a/b:tag").unwrap();
    assert_eq!(
        (r.registry(), r.repository(), r.tag()),
        ("localhost:5000", "a/b", Some("tag"))
    );
    let r = parse_reference("localhost:5000/a/b").unwrap();
    assert_eq!(r.tag(), Some("latest"));
}

#[test]
fn rejects_bad_references_naming_them() {
    for bad in [
        "",
        "UPPER/case",
        "host/repo:bad tag",
        "host/repo@sha256:abc",
        &format!("host/repo@sha256:{}", "AB".repeat(32)),
        &format!("host/repo@sha512:{}", "ab".repeat(64)),
    ] {
        let err = parse_reference(bad).unwrap_err();
        assert!(
            matches!(err, OciError::InvalidReference { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn plain_http_for_loopback_and_listed_registries() {
    let none: &[String] = &[];
    for yes in [
        "localhost",
        "localhost:5000",
        "LOCALHOST:5000",
        "127.0.0.1:5000",
        "127.1.2.3",
        "[::1]:5000",
    ] {
        assert!(uses_plain_http(yes, none), "{yes}");
    }
    for no in [
        "ghcr.io",
        "registry.example.com:5000",
        "127.example.com",
        "128.0.0.1:5000",
        "localhost.example.com",
    ] {
        assert!(!uses_plain_http(no, none), "{no}");
    }
    let listed = vec!["http://reg.lan:5000/".to_owned(), "other.lan".to_owned()];
    assert!(uses_plain_http("reg.lan:5000", &listed));
    assert!(!uses_plain_http("reg.lan:6000", &listed));
    assert!(uses_plain_http("other.lan:443", &listed));
    assert!(uses_plain_http("other.lan", &listed));
}

#[test]
fn maps_client_errors() {
    let f = map_error(
        OciDistributionError::UnauthorizedError {
            url: "http://r/v2/x/manifests/v1".into(),
        },
        "r:5000",
        "r:5000/x:v1",
    );
    assert!(!f.transient);
    assert!(
        f.error
            .to_string()
            .starts_with("authentication failed for r:5000"),
        "{}",
        f.error
    );

    let f = map_error(
        OciDistributionError::ServerError {
            code: 503,
            url: "u".into(),
            message: "busy".into(),
        },
        "r",
        "x",
    );
    assert!(f.transient);
    let f = map_error(
        OciDistributionError::ServerError {
            code: 404,
            url: "u".into(),
            message: String::new(),
        },
        "r",
        "r/x:v1",
    );
    assert!(!f.transient);
    assert_eq!(f.error.to_string(), "r/x:v1 not found in registry r");

    let envelope = serde_json::from_str(
        r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
    )
    .unwrap();
    let f = map_error(
        OciDistributionError::RegistryError {
            envelope,
            url: "u".into(),
        },
        "r",
        "x",
    );
    assert!(matches!(f.error, OciError::AuthenticationFailed { .. }));

    let f = map_error(
        OciDistributionError::DigestError(DigestError::VerificationError {
            expected: "sha256:a".into(),
            actual: "sha256:b".into(),
        }),
        "r",
        "x",
    );
    assert!(!f.transient);
    assert!(f.error.to_string().contains("digest mismatch"));

    let io = std::io::Error::other(DigestError::VerificationError {
        expected: "sha256:a".into(),
        actual: "sha256:b".into(),
    });
    let f = map_stream_error(io, "r");
    assert!(!f.transient);
    assert!(matches!(f.error, OciError::DigestMismatch { .. }));
    let f = map_stream_error(std::io::Error::other("connection reset"), "r");
    assert!(f.transient);
}

#[tokio::test]
async fn retries_transient_failures_only_and_within_the_window() {
    let options = ClientOptions {
        backoff: Duration::from_millis(1),
        ..ClientOptions::default()
    };
    let client = RegistryClient::new(Auth::anonymous(), options);
    let unreachable = || OciError::Unreachable {
        registry: "r".into(),
        detail: "connection refused".into(),
    };

    let mut calls = 0;
    let err = client
        .retry("r", "x", || {
            calls += 1;
            async { Err::<(), _>(Failure::from(unreachable())) }
        })
        .await
        .unwrap_err();
    assert_eq!(calls, 3);
    assert!(err.to_string().ends_with("(after 3 attempts)"), "{err}");

    let mut calls = 0;
    let err = client
        .retry("r", "x", || {
            calls += 1;
            async {
                Err::<(), _>(Failure::from(OciError::NotFound {
                    registry: "r".into(),
                    what: "x".into(),
                }))
            }
        })
        .await
        .unwrap_err();
    assert_eq!(calls, 1);
    assert!(matches!(err, OciError::NotFound { .. }));

    let mut calls = 0;
    let value = client
        .retry("r", "x", || {
            calls += 1;
            let result = if calls < 2 {
                Err(Failure::from(unreachable()))
            } else {
                Ok(42)
            };
            async move { result }
        })
        .await
        .unwrap();
    assert_eq!((value, calls), (42, 2));

    let options = ClientOptions {
        backoff: Duration::from_secs(60),
        ..ClientOptions::default()
    };
    let client = RegistryClient::new(Auth::anonymous(), options);
    let mut calls = 0;
    client
        .retry("r", "x", || {
            calls += 1;
            async { Err::<(), _>(Failure::from(unreachable())) }
        })
        .await
        .unwrap_err();
    assert_eq!(
        calls, 1,
        "a retry that would start after the window is not made"
    );
}

#[tokio::test]
async fn a_request_that_never_answers_is_cut_off() {
    let options = ClientOptions::default().with_timeouts(
        Duration::from_secs(5),
        Duration::from_millis(50),
        Duration::from_secs(30),
    );
    let client = RegistryClient::new(
        Auth::anonymous(),
        options.with_retries(2, Duration::from_millis(1), Duration::from_secs(8)),
    );
    let mut calls = 0;
    let err = client
        .retry("r:1", "x", || {
            calls += 1;
            std::future::pending::<Result<(), Failure>>()
        })
        .await
        .unwrap_err();
    assert_eq!(calls, 2);
    assert_eq!(
        err.to_string(),
        "registry r:1 is unreachable: no answer within 50ms (after 2 attempts)"
    );
}
