//! Summaries of the samples, the printed table and the JSON document.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

/// Order statistics of one series, in microseconds. Percentiles are
/// nearest-rank (the smallest sample with at least p % of the samples at or
/// below it), so every figure is a measured sample; with fewer than 100
/// samples, p99 is the maximum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Smallest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Every sample, in the order measured.
    pub samples: Vec<f64>,
}

impl Stats {
    /// The statistics of `samples` (µs); `None` when there are none.
    pub fn of_us(samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let rank = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Self {
            n,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: sorted[n - 1],
            min: sorted[0],
            mean: sorted.iter().sum::<f64>() / n as f64,
            samples,
        })
    }

    /// The statistics of `samples`.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        Self::of_us(samples.iter().map(|d| us(*d)).collect())
    }
}

/// A duration in microseconds (nanosecond resolution).
pub fn us(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e3
}

/// One kind's results.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    /// Scale-from-zero cold start: request sent → first response byte.
    pub cold_start_us: Stats,
    /// A running instance: request sent → first response byte.
    pub warm_us: Stats,
    /// A running instance, the request made as a cold one is (new
    /// connection, the same pause before it), interleaved with them.
    pub warm_after_pause_us: Stats,
    /// `cold_start_us.p50 / warm_after_pause_us.p50`: what starting from
    /// zero adds, the machine's wake-up from the pause taken out.
    pub cold_to_paused_warm_p50: f64,
    /// `cold_start_us.p50 / warm_us.p50`.
    pub cold_to_warm_p50: f64,
    /// The host-side split of the cold starts, by phase.
    pub split_us: BTreeMap<String, Stats>,
    /// Wasm: the host side of every request on a warm app (a fresh wasmtime
    /// instance each), from `Server-Timing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_request_us: Option<BTreeMap<String, Stats>>,
    /// Wasm: the steps of loading the component (what a start from zero
    /// does), timed apart, outside the request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_phases_us: Option<BTreeMap<String, Stats>>,
    /// Container: the same request through berth and straight to the
    /// instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_us: Option<ProxyReport>,
    /// Minor page faults of the bench process (host and client) per
    /// request: `cold` and `warm` (counts, not µs).
    pub minor_faults: BTreeMap<String, Stats>,
    /// How often berth closed the client's keep-alive connection after a
    /// warm response (the bench then connects again, untimed).
    pub client_reconnects: usize,
    /// Warm responses that reached the client with `Connection: close`.
    pub connection_close_responses: usize,
}

/// berth's reverse proxy in front of a container, against no proxy.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyReport {
    /// Through berth on a keep-alive connection: request sent → first byte.
    pub through_berth: Stats,
    /// Straight to the instance's port: TCP connect started → first byte
    /// (busybox httpd closes every connection, so a connect is part of every
    /// direct request, as it is of every request berth forwards).
    pub direct: Stats,
    /// `through_berth.p50 - direct.p50`.
    pub overhead_p50: f64,
}

/// Bare runc on the same image and spec.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// `runc run -d` started → first response byte of `GET /`.
    pub cold_start_us: Stats,
    /// What was run.
    pub method: String,
}

/// The machine.
#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// The first `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `runc --version`, first line.
    pub runc: String,
    /// berth's version.
    pub berth: String,
    /// `release` or `debug` (a debug build's figures mean little).
    pub profile: String,
    /// The 1-minute load average when the bench started (other work on the
    /// machine skews every figure).
    pub loadavg_1m: f64,
    /// How the Wasm engine resets a pool slot (`DirtyPages` with Linux's
    /// `PAGEMAP_SCAN`, else `Madvise`): instance figures depend on it.
    pub slot_reset: String,
}

impl HostInfo {
    /// Reads the machine's facts.
    pub fn detect(runc: &std::path::Path) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let runc_version = std::process::Command::new(runc)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu_model: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == "model name").then(|| v.trim().to_owned())
                })
                .unwrap_or_default(),
            runc: runc_version,
            slot_reset: String::new(),
            berth: env!("CARGO_PKG_VERSION").to_owned(),
            loadavg_1m: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(f64::NAN),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_owned(),
        }
    }
}

/// Everything `berth bench cold-start` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Cold starts per kind.
    pub iterations: usize,
    /// Warm requests per kind.
    pub warm_requests: usize,
    /// The hello component.
    pub wasm: KindReport,
    /// The hello container.
    pub container: KindReport,
    /// `--baseline-runc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_runc: Option<BaselineReport>,
    /// Wasm:container cold-start ratio: container p50 / wasm p50.
    pub ratio_cold_p50: f64,
    /// berth container cold start p50 / bare runc p50.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_container_to_runc_p50: Option<f64>,
    /// The machine.
    pub host: HostInfo,
    /// What each figure measures.
    pub definitions: BTreeMap<String, String>,
}

/// `412 µs`, `35.2 ms`, `1.25 s`: three significant digits or so.
pub fn fmt_us(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a < 10.0 {
        format!("{v:.2} µs")
    } else if a < 1_000.0 {
        format!("{v:.0} µs")
    } else if a < 10_000.0 {
        format!("{:.2} ms", v / 1e3)
    } else if a < 1_000_000.0 {
        format!("{:.1} ms", v / 1e3)
    } else {
        format!("{:.2} s", v / 1e6)
    }
}

/// `85×`, `1.17×`.
pub fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// Split phases in the order they happen, with their labels.
const SPLIT_ROWS: &[(&str, &str, &str)] = &[
    (
        "wasm",
        "instance_start",
        "instance start: load compiled artifact + pre-link",
    ),
    (
        "wasm",
        "host",
        "front door → guest handler entered (Server-Timing)",
    ),
    (
        "wasm",
        "instantiate",
        "of which instantiation (Server-Timing)",
    ),
    (
        "wasm",
        "rest",
        "handler + response + loopback I/O (cold − host)",
    ),
    (
        "container",
        "instance_start",
        "instance start (the revision's timing)",
    ),
    (
        "container",
        "prepare",
        "runtime spec + instance dir + overlay + config.json",
    ),
    (
        "container",
        "network",
        "own netns + lo (+ bridge); host network: 0",
    ),
    ("container", "run", "runc run --detach + pid"),
    (
        "container",
        "ready",
        "process running → first readiness probe ok",
    ),
    (
        "container",
        "rest",
        "activator + proxy + first response (cold − instance start)",
    ),
];

impl Report {
    /// Prints the tables.
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let h = &self.host;
        writeln!(
            out,
            "berth bench cold-start: {} cold starts and {} warm requests per kind",
            self.iterations, self.warm_requests
        )?;
        writeln!(
            out,
            "host: {} CPUs ({}), Linux {}, {}, berth {} ({} build), Wasm slot reset {}, load average {:.2}",
            h.cpus, h.cpu_model, h.kernel, h.runc, h.berth, h.profile, h.slot_reset, h.loadavg_1m
        )?;
        if h.loadavg_1m > h.cpus as f64 / 2.0 {
            writeln!(
                out,
                "warning: the machine is busy (load average {:.2} on {} CPUs): figures are skewed",
                h.loadavg_1m, h.cpus
            )?;
        }
        if h.profile != "release" {
            writeln!(
                out,
                "warning: a debug build; measure with `cargo build --release -p berth`"
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "cold start from zero, request sent → first response byte; warm = instance running,"
        )?;
        writeln!(
            out,
            "back to back on one connection; paused = warm, but made as a cold start is (new \
             connection, {} ms pause)",
            crate::cold_start::SETTLE.as_millis()
        )?;
        writeln!(
            out,
            "{:<12} {:>10} {:>10} {:>10} {:>10}   {:>10} {:>10} {:>10}",
            "kind", "p50", "p90", "p99", "max", "warm p50", "warm p99", "paused p50"
        )?;
        let row = |out: &mut dyn Write, kind: &str, c: &Stats, k: Option<&KindReport>| {
            writeln!(
                out,
                "{:<12} {:>10} {:>10} {:>10} {:>10}   {:>10} {:>10} {:>10}",
                kind,
                fmt_us(c.p50),
                fmt_us(c.p90),
                fmt_us(c.p99),
                fmt_us(c.max),
                k.map_or("-".into(), |k| fmt_us(k.warm_us.p50)),
                k.map_or("-".into(), |k| fmt_us(k.warm_us.p99)),
                k.map_or("-".into(), |k| fmt_us(k.warm_after_pause_us.p50)),
            )
        };
        row(out, "wasm", &self.wasm.cold_start_us, Some(&self.wasm))?;
        row(
            out,
            "container",
            &self.container.cold_start_us,
            Some(&self.container),
        )?;
        if let Some(b) = &self.baseline_runc {
            row(out, "bare runc", &b.cold_start_us, None)?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "Wasm:container cold-start ratio (container p50 / wasm p50): {}",
            fmt_ratio(self.ratio_cold_p50)
        )?;
        writeln!(
            out,
            "Wasm from zero / warm after the same pause (p50):          {}",
            fmt_ratio(self.wasm.cold_to_paused_warm_p50)
        )?;
        writeln!(
            out,
            "Wasm from zero / warm back to back (p50):                  {}",
            fmt_ratio(self.wasm.cold_to_warm_p50)
        )?;
        if let Some(r) = self.ratio_container_to_runc_p50 {
            writeln!(
                out,
                "berth container / bare runc cold start (p50):              {}",
                fmt_ratio(r)
            )?;
        }
        if let Some(p) = &self.container.proxy_us {
            writeln!(
                out,
                "container proxy overhead (p50, through berth − direct):   {} ({} − {})",
                fmt_us(p.overhead_p50),
                fmt_us(p.through_berth.p50),
                fmt_us(p.direct.p50)
            )?;
        }
        if let Some(per) = &self.wasm.per_request_us
            && let Some(host) = per.get("host")
        {
            writeln!(
                out,
                "Wasm per-request instance, host side (p50 / p99):          {} / {}",
                fmt_us(host.p50),
                fmt_us(host.p99)
            )?;
        }
        for (kind, r) in [("wasm", &self.wasm), ("container", &self.container)] {
            if r.client_reconnects > 0 || r.connection_close_responses > 0 {
                writeln!(
                    out,
                    "note: {} {kind} responses reached the client with `Connection: close`, and berth \
                     closed the keep-alive connection {} times (the bench reconnected, untimed)",
                    r.connection_close_responses, r.client_reconnects
                )?;
            }
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:<10} {:<58} {:>10} {:>10} {:>10}",
            "split", "phase of the cold start", "p50", "p90", "max"
        )?;
        let rows = SPLIT_ROWS.iter().map(|(kind, key, label)| {
            let report = if *kind == "wasm" {
                &self.wasm
            } else {
                &self.container
            };
            (*kind, report.split_us.get(*key), (*label).to_owned())
        });
        let load = LOAD_ROWS.iter().map(|(key, label)| {
            let stats = self.wasm.load_phases_us.as_ref().and_then(|m| m.get(*key));
            (
                "wasm",
                stats,
                format!("{label} (apart, {}×)", stats.map_or(0, |s| s.n)),
            )
        });
        let faults = [("wasm", &self.wasm), ("container", &self.container)]
            .into_iter()
            .flat_map(|(kind, r)| {
                ["cold", "warm"].map(|when| {
                    (
                        kind,
                        r.minor_faults.get(when),
                        format!("minor page faults per {when} request"),
                    )
                })
            });
        for (kind, stats, label) in rows.chain(load) {
            if let Some(s) = stats {
                writeln!(
                    out,
                    "{:<10} {:<58} {:>10} {:>10} {:>10}",
                    kind,
                    label,
                    fmt_us(s.p50),
                    fmt_us(s.p90),
                    fmt_us(s.max)
                )?;
            }
        }
        for (kind, stats, label) in faults {
            if let Some(s) = stats {
                writeln!(
                    out,
                    "{:<10} {:<58} {:>10} {:>10} {:>10}",
                    kind, label, s.p50, s.p90, s.max
                )?;
            }
        }
        Ok(())
    }

    /// The JSON document.
    ///
    /// # Errors
    /// Never in practice (every field serialises).
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

/// The load steps, in order.
const LOAD_ROWS: &[(&str, &str)] = &[
    ("read_hash", "  read + sha256 the .wasm"),
    (
        "deserialize",
        "  map the cached artifact (deserialize_file)",
    ),
    ("check_link", "  header check + instantiate_pre + ProxyPre"),
    (
        "resident_context",
        "  found resident by sha256; the app's context",
    ),
    ("load_app", "  load_app as a whole"),
];

/// What each figure measures, for the JSON reader.
pub fn definitions() -> BTreeMap<String, String> {
    [
        (
            "cold_start_us",
            "scale from zero: every idle instance stopped, then one GET / on an \
             established keep-alive HTTP/1.1 connection; first request byte written → \
             first response byte read",
        ),
        (
            "warm_after_pause_us",
            "the same GET on a running instance, made as a cold start is: a new keep-alive \
             connection, the same pause, then the request; interleaved with the cold starts",
        ),
        (
            "warm_us",
            "the same GET on a running instance (Wasm: still a fresh wasmtime instance \
             per request)",
        ),
        (
            "wasm.split_us.instance_start",
            "the revision's timing of Backend::start_instance: read and hash the .wasm, \
             map the cached compiled artifact (Component::deserialize_file), pre-link \
             (Linker::instantiate_pre, ProxyPre::new), on a blocking thread",
        ),
        (
            "wasm.split_us.host",
            "Server-Timing berth-host: front door had the request → guest handler \
             entered (activator wait, instance start, store, instantiation)",
        ),
        (
            "wasm.split_us.instantiate",
            "Server-Timing berth-instantiate: ProxyPre::instantiate_async",
        ),
        ("wasm.split_us.rest", "cold_start − host, per sample"),
        (
            "wasm.load_phases_us",
            "the steps of WasmRuntime::load_app, repeated apart from any request: read + \
             sha256 of the .wasm; CompileCache::load of the cached artifact \
             (Component::deserialize_file); the remainder of load_app (header check, \
             instantiate_pre, ProxyPre::new)",
        ),
        (
            "minor_faults",
            "minor page faults of the bench process (host and client) during one request \
             (counts)",
        ),
        (
            "wasm.per_request_us",
            "Server-Timing of the warm requests: the per-request instance cold start",
        ),
        (
            "container.split_us",
            "ColdStartSplit of the shim: prepare (runtime spec, instance dir, overlay \
             mount, config.json), network (the instance's own network namespace, lo, the \
             bridge; at the same time as prepare; 0 on the host network), run (runc run \
             --detach, pid read), ready (process running → first successful TCP probe); \
             instance_start = the revision's timing of Backend::start_instance; rest = \
             cold_start − instance_start",
        ),
        (
            "container.proxy_us",
            "through_berth: GET / via berth on a keep-alive connection; direct: TCP \
             connect + GET / to the instance port (busybox httpd closes each \
             connection); interleaved",
        ),
        (
            "baseline_runc",
            "runc run -d of a bundle with a copy of berth's unpacked rootfs and the \
             runtime spec berth generated (no overlay), then GET / polled every 200 µs \
             until the first response byte; runc delete -f after each",
        ),
        ("percentiles", "nearest rank; all values in microseconds"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Stats::of_us((1..=20).rev().map(f64::from).collect()).unwrap();
        assert_eq!(
            (s.n, s.p50, s.p90, s.p99, s.max, s.min),
            (20, 10.0, 18.0, 20.0, 20.0, 1.0)
        );
        assert_eq!(s.samples[0], 20.0, "kept in measured order");
        let one = Stats::of_us(vec![7.0]).unwrap();
        assert_eq!((one.p50, one.p99, one.mean), (7.0, 7.0, 7.0));
        assert!(Stats::of_us(Vec::new()).is_none());
        let hundred = Stats::of_us((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!((hundred.p50, hundred.p90, hundred.p99), (50.0, 90.0, 99.0));
    }

    #[test]
    fn formats_durations_readably() {
        assert_eq!(fmt_us(3.456), "3.46 µs");
        assert_eq!(fmt_us(412.3), "412 µs");
        assert_eq!(fmt_us(3_456.0), "3.46 ms");
        assert_eq!(fmt_us(35_210.0), "35.2 ms");
        assert_eq!(fmt_us(1_250_000.0), "1.25 s");
        assert_eq!(fmt_ratio(85.2), "85.2×");
        assert_eq!(fmt_ratio(1.1749), "1.17×");
        assert_eq!(fmt_ratio(1234.0), "1234×");
    }
}
