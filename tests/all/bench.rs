//! `berth bench cold-start` through the binary: a smoke run that checks the
//! shape of what it writes, never the values (they depend on the machine).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_test_artifacts as art;
use serde_json::Value;

/// Runs `berth bench ARGS`, killed if it outlives `limit`.
pub(crate) fn bench(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("bench")
        .args(args)
        .env_remove("BERTH_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run berth");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("poll berth").is_none() {
        if Instant::now() > deadline {
            // SIGTERM first: the bench stops its containers and registry.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect berth");
            panic!(
                "berth bench ran longer than {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("collect berth")
}

/// `stats` is a summary of `n` positive samples.
fn check_stats(what: &str, stats: &Value, n: usize) {
    for key in ["p50", "p90", "p99", "max", "min", "mean"] {
        let v = stats[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}.{key} is not a number: {stats}"));
        assert!(v > 0.0, "{what}.{key} = {v}");
    }
    let samples = stats["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}.samples is not an array"));
    assert_eq!(samples.len(), n, "{what}.samples");
    assert!(
        samples.iter().all(|s| s.as_f64().is_some_and(|v| v > 0.0)),
        "{what}.samples: {samples:?}"
    );
    assert_eq!(stats["n"], n, "{what}.n");
}

#[test]
fn cold_start_bench_writes_a_table_json_and_svg_for_both_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("cold.json");
    let svg = dir.path().join("cold.svg");
    let out = bench(
        &[
            "cold-start",
            "--iterations",
            "3",
            "--warm",
            "5",
            "--wasm",
            art::HELLO,
            "--json",
            json.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "berth bench failed:\n{stdout}\n{stderr}"
    );
    for needle in [
        "wasm",
        "container",
        "Wasm:container cold-start ratio",
        "warm after the same pause",
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` in the table:\n{stdout}"
        );
    }

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["iterations"], 3);
    assert_eq!(report["warm_requests"], 5);
    for (kind, phases) in [
        ("wasm", &["instance_start", "host", "instantiate"][..]),
        (
            "container",
            &["instance_start", "prepare", "run", "ready"][..],
        ),
    ] {
        let k = &report[kind];
        check_stats(&format!("{kind}.cold_start_us"), &k["cold_start_us"], 3);
        check_stats(&format!("{kind}.warm_us"), &k["warm_us"], 5);
        // One warm request made like each cold start, interleaved.
        check_stats(
            &format!("{kind}.warm_after_pause_us"),
            &k["warm_after_pause_us"],
            3,
        );
        assert!(
            k["cold_to_paused_warm_p50"]
                .as_f64()
                .is_some_and(|r| r > 0.0)
        );
        for phase in phases {
            check_stats(
                &format!("{kind}.split_us.{phase}"),
                &k["split_us"][*phase],
                3,
            );
        }
    }
    check_stats(
        "wasm.per_request_us.host",
        &report["wasm"]["per_request_us"]["host"],
        5,
    );
    check_stats(
        "container.proxy_us.direct",
        &report["container"]["proxy_us"]["direct"],
        5,
    );
    assert!(report["container"]["proxy_us"]["overhead_p50"].is_number());
    assert!(report["ratio_cold_p50"].as_f64().is_some_and(|r| r > 0.0));
    assert!(report["host"]["cpus"].as_u64().is_some_and(|n| n >= 1));
    let reset = report["host"]["slot_reset"].as_str().unwrap_or_default();
    assert!(
        ["DirtyPages", "Madvise"].contains(&reset),
        "host.slot_reset: {reset:?}"
    );
    assert!(
        report["host"]["kernel"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..svg.len().min(100)]
    );
}

#[test]
fn cold_start_bench_says_what_is_missing() {
    let out = bench(
        &["cold-start", "--wasm", "/nonexistent/hello.wasm"],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/hello.wasm") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// A data directory a running host holds is refused, as `berth serve`
/// refuses it, before the bench starts anything.
#[test]
fn cold_start_bench_refuses_a_data_dir_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _held = berth::server::DataDirLock::acquire(dir.path()).unwrap();
    let out = bench(
        &[
            "cold-start",
            "--wasm",
            art::HELLO,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&dir.path().display().to_string()) && stderr.contains("is in use"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("containers").exists() && !dir.path().join("state.json").exists(),
        "nothing written into the held directory"
    );
}
