//! The `berth` binary itself: config errors, `berth logs`, a real serve.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth::testing::TestHost;
use berth_test_artifacts as art;

use crate::support::{app_url, client};

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

/// Both listeners are bound before any app is compiled: a port in use, the
/// front door's or the admin listener's, fails the start at once, naming
/// the address, with nothing compiled (compiling `hello` alone takes
/// seconds in a debug build).
#[test]
fn a_port_in_use_fails_the_start_before_any_app_is_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let busy = format!("127.0.0.1:{port}");
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, format!("[apps.hello]\nwasm = {:?}\n", art::HELLO)).unwrap();
    for (i, (listen, admin, named)) in [
        (
            busy.as_str(),
            "127.0.0.1:0",
            format!("cannot listen on {busy}"),
        ),
        (
            "127.0.0.1:0",
            busy.as_str(),
            format!("cannot listen on {busy} (admin)"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let data = dir.path().join(format!("data{i}"));
        let started = Instant::now();
        let out = berth()
            .args(["serve", "--listen", listen, "--admin-listen", admin])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        let took = started.elapsed();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&named), "{stderr}");
        assert!(stderr.contains("Address already in use"), "{stderr}");
        // Refused before the app was deployed: nothing compiled, nothing stored.
        let compiled = std::fs::read_dir(data.join("compiled"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(compiled, 0, "{stderr}");
        assert!(!stderr.contains("compiled component"), "{stderr}");
        assert!(!data.join("state.json").exists(), "{stderr}");
        // At once: a generous bound for a loaded machine, well under what
        // compiling would add.
        assert!(took < Duration::from_secs(20), "{took:?}: {stderr}");
    }
    drop(taken);
}

#[test]
fn malformed_config_is_refused_with_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[apps.hello]\nwasm = \"x.wasm\"\n[apps.hello.limits]\nmemory = \"lots\"\n",
            &["apps.hello.limits.memory", "lots"][..],
        ),
        (
            "[apps.hello]\nwasm = \"x.wasm\"\nroute = [\"/x\"]\n",
            &["apps.hello", "route"][..],
        ),
        ("[apps.hello\n", &["not valid TOML"][..]),
        ("[apps.hello]\n", &["apps.hello", "needs `wasm"][..]),
        (
            "[apps.hello]\nwasm = \"missing.wasm\"\n",
            &["app `hello`", "missing.wasm"][..],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = berth()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--config")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            // An app that cannot be deployed fails the start only with
            // --strict (else it is retried while the others serve).
            .arg("--strict")
            .output()
            .unwrap();
        assert!(!out.status.success(), "case {i} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "case {i}: missing {needle:?} in {stderr}"
            );
        }
        if !text.contains("missing.wasm") {
            assert!(
                stderr.contains(&format!("bad{i}.toml")),
                "case {i}: no file name in {stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_command_prints_guest_output_tagged_with_request_ids() {
    let host = TestHost::builder()
        .wasm_app("logger", art::LOGGER)
        .start()
        .await
        .unwrap();
    let c = client(host.addr, &["logger"]);
    let r = c
        .get(app_url(host.addr, "logger", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-berth-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(r.text().await.unwrap(), "logged");

    let out = berth()
        .args(["logs", "logger", "--data-dir"])
        .arg(host.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.ends_with(&format!("{id} - stdout stdout line"))),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.ends_with(&format!("{id} - stderr stderr line"))),
        "{text}"
    );

    let out = berth()
        .args(["logs", "nosuchapp", "--data-dir"])
        .arg(host.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no logs for app `nosuchapp`"));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_escape_a_tenants_terminal_sequences_unless_raw_from_files_and_the_api() {
    let host = TestHost::builder()
        .wasm_app("logger", art::LOGGER)
        .start()
        .await
        .unwrap();
    // Window title, clipboard write (OSC 52), erase line and carriage
    // return, an 8-bit CSI (C1, as UTF-8), a bidi override.
    let hostile =
        "%1B%5D0%3Bpwned%07%1B%5D52%3Bc%3BcHduZWQ%3D%07%1B%5B2K%0Dfake%C2%9B2J%E2%80%AEtxt";
    let r = client(host.addr, &["logger"])
        .get(app_url(host.addr, "logger", &format!("/?line={hostile}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let escaped = r"\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\x1b[2K\x0dfake\x9b2J\u{202e}txt";
    let raw = "\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\x1b[2K\rfake\u{9b}2J\u{202e}txt";
    let admin = format!("http://127.0.0.1:{}", host.admin_addr.port());
    let token = host.admin_token().to_string();
    let data_dir = host.data_dir().to_path_buf();
    let runs: Vec<(&str, Vec<String>)> = vec![
        (
            "files",
            vec!["--data-dir".into(), data_dir.display().to_string()],
        ),
        (
            "the API",
            vec![
                "--admin".into(),
                admin.clone(),
                "--token".into(),
                token.clone(),
            ],
        ),
    ];
    for (how, args) in runs {
        for raw_flag in [false, true] {
            let mut cmd = berth();
            cmd.args(["logs", "logger"]).args(&args);
            if raw_flag {
                cmd.arg("--raw");
            }
            let out = cmd.env_remove("BERTH_ADMIN_TOKEN").output().unwrap();
            assert!(
                out.status.success(),
                "{how}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            if raw_flag {
                assert!(text.contains(raw), "{how} --raw: {text:?}");
            } else {
                assert!(text.contains(escaped), "{how}: {text:?}");
                assert!(
                    !text.contains('\x1b') && !text.contains('\r') && !text.contains('\u{9b}'),
                    "{how}: {text:?}"
                );
                assert!(
                    text.contains("stdout line\n"),
                    "{how}: newlines kept: {text:?}"
                );
            }
        }
    }
    host.stop().await;
}

/// Picks a free loopback port (racy in theory, fine for a test).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_answers_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("berth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[apps.hello]\nwasm = \"{}\"\nroutes = [\"/hello\"]\n",
            art::HELLO
        ),
    )
    .unwrap();
    let port = free_port();
    let admin = free_port();
    let mut child = berth()
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the "serving" line.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("berth serve did not start");
        if line.contains("berth: serving") {
            break;
        }
    }
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let c = client(addr, &["hello"]);
    let r = c.get(app_url(addr, "hello", "/")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from hello");
    let r = c
        .get(format!("http://127.0.0.1:{port}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let pid = child.id() as i32;
    let rc = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "berth did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_commands_round_trip_through_a_registry() {
    let registry = crate::support::registry::Registry::start();
    let reference = registry.reference("cli-hello:v1");
    let out = berth()
        .args(["push", &reference, art::HELLO])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = String::from_utf8_lossy(&out.stdout).to_string();
    let digest = pushed
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .expect("push prints the digest")
        .to_string();

    let data = tempfile::tempdir().unwrap();
    let out = berth()
        .args(["pull", &reference, "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("digest: {digest}")), "{text}");
    assert!(text.contains("kind: wasm-component"), "{text}");
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("path: "))
        .expect("pull prints the blob path");
    assert_eq!(
        std::fs::read(path).unwrap(),
        std::fs::read(art::HELLO).unwrap(),
        "pulled bytes equal pushed bytes"
    );

    // An unknown tag is an error, not an empty success.
    let missing = berth()
        .args([
            "pull",
            &format!("{}/nothing:here", registry.host()),
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!missing.status.success());
}

/// `berth logs -f` on the data directory of a running `berth serve` (no
/// `--admin`) follows through that server's admin API: a new line comes as
/// it is written, and the follow ends when the server stops (a watched
/// file would be watched for ever). The server names its admin URL in the
/// data directory while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_on_a_data_dir_streams_from_its_server() {
    use crate::support::serve::Served;

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("berth.toml");
    std::fs::write(&cfg, format!("[apps.logger]\nwasm = \"{}\"\n", art::LOGGER)).unwrap();
    let data = dir.path().join("data");
    let served = Served::start(&data, &["--config", cfg.to_str().unwrap()]);
    let url_file = data.join(berth_cli::serve::ADMIN_URL_FILE);
    assert_eq!(
        std::fs::read_to_string(&url_file).unwrap().trim(),
        format!("http://{}", served.admin)
    );
    let mut follower = berth()
        .args(["logs", "logger", "-f", "--data-dir"])
        .arg(&data)
        .env_remove("BERTH_ADMIN_TOKEN")
        .env_remove("BERTH_ADMIN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let r = client(served.addr, &["logger"])
        .get(app_url(served.addr, "logger", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-berth-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let want = format!("{id} - stdout stdout line");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.ends_with(&want)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("`{want}` not followed: {seen:#?}"),
        }
    }

    served.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = follower.kill();
            let _ = follower.wait();
            panic!("berth logs -f still follows after the server stopped");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!url_file.exists(), "removed when the server stops");
}
