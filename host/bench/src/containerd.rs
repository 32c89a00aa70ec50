//! `berth bench containerd --socket SOCKET`: task start → first HTTP byte
//! through a running containerd, for the hello component on berth's shim
//! (`io.containerd.berth.v1`) and for a busybox `httpd` image on runc
//! (`io.containerd.runc.v2`), side by side.
//!
//! Both images are pushed to a loopback `docker-registry` of the bench's
//! own and pulled with `ctr --plain-http` once. Each sample: a fresh network
//! namespace (`ip netns add`, the way a pod gets one), `ctr run -d
//! --with-ns network:PATH` timed from spawning ctr to the first byte of
//! `GET /` on `127.0.0.1:8080` inside that namespace (polled every 200 µs
//! from a thread that joined it), then `SIGKILL`, delete, namespace removed.
//! Kinds alternate sample by sample. Traffic stays inside namespaces the
//! bench made.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::image::Image;
use super::registry::{self, Registry};
use super::report::Stats;
use super::svg::Series;
use berth::oci::{self, RegistryClient};

/// Bound on one task answering its first byte.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the probe tries to connect.
const PROBE_EVERY: Duration = Duration::from_micros(200);
/// The containerd namespace the bench's images and tasks live in.
pub const NAMESPACE: &str = "berth-bench";

/// What to run.
#[derive(Debug, Clone)]
pub struct ContainerdBenchOptions {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// Samples per kind.
    pub iterations: usize,
    /// The hello component.
    pub wasm: PathBuf,
}

/// The result: start → first byte per runtime (µs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerdReport {
    /// Samples per kind.
    pub iterations: usize,
    /// `io.containerd.berth.v1` running the hello component.
    pub berth_shim_us: Stats,
    /// `io.containerd.runc.v2` running busybox httpd.
    pub runc_us: Stats,
    /// runc p50 / berth p50.
    pub ratio_p50: f64,
    /// containerd's version (`ctr version`).
    pub containerd: String,
    /// How a sample is taken.
    pub method: String,
}

impl ContainerdReport {
    /// Prints the table.
    ///
    /// # Errors
    /// When `out` fails.
    pub fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "task start → first byte through containerd ({}), {} samples each",
            self.containerd, self.iterations
        )?;
        writeln!(
            out,
            "{:<34} {:>10} {:>10} {:>10} {:>10}",
            "runtime", "p50 ms", "p90 ms", "min ms", "max ms"
        )?;
        for (name, s) in [
            ("io.containerd.berth.v1 (Wasm)", &self.berth_shim_us),
            ("io.containerd.runc.v2 (busybox)", &self.runc_us),
        ] {
            writeln!(
                out,
                "{name:<34} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                s.p50 / 1e3,
                s.p90 / 1e3,
                s.min / 1e3,
                s.max / 1e3
            )?;
        }
        writeln!(out, "runc / berth shim (p50): {:.1}×", self.ratio_p50)?;
        writeln!(out, "{}", self.method)
    }

    /// The chart's series.
    pub fn series(&self) -> Vec<Series> {
        vec![
            Series {
                label: "berth shim (Wasm)".into(),
                stats: self.berth_shim_us.clone(),
            },
            Series {
                label: "runc (busybox httpd)".into(),
                stats: self.runc_us.clone(),
            },
        ]
    }
}

struct Ctr<'a> {
    socket: &'a Path,
}

impl Ctr<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.socket)
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(args)
            .output()
            .context("cannot run ctr (install the Debian package `containerd`)")?;
        if !out.status.success() {
            bail!(
                "ctr {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A network namespace (`ip netns add`, the way a pod gets one) with `lo`
/// up, deleted on drop; the shim's tests make theirs with it too.
#[derive(Debug)]
pub struct Netns(String);

impl Netns {
    /// Creates the namespace `name` (under `/run/netns`).
    ///
    /// # Errors
    /// When `ip` fails (it needs root and iproute2).
    pub fn new(name: String) -> anyhow::Result<Self> {
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()?
            .success()
            && Command::new("ip")
                .args(["-n", &name, "link", "set", "lo", "up"])
                .status()?
                .success();
        if !ok {
            bail!("cannot create network namespace {name} (needs root and iproute2)");
        }
        Ok(Self(name))
    }

    /// Its name under `/run/netns`.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Its file, for `ctr run --with-ns network:PATH`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// From a thread inside `ns`: connect to 127.0.0.1:8080 every
/// [`PROBE_EVERY`] until `GET /` returns a byte, at most `limit`.
fn first_byte_in(ns: &str, limit: Duration) -> anyhow::Result<()> {
    let file = File::open(ns).with_context(|| format!("cannot open {ns}"))?;
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
            let deadline = Instant::now() + limit;
            loop {
                if let Ok(mut s) = TcpStream::connect(addr) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() {
                        let mut b = [0u8; 1];
                        if matches!(s.read(&mut b), Ok(1)) {
                            return Ok(());
                        }
                    }
                }
                if Instant::now() >= deadline {
                    bail!("no answer within {limit:?} (FIRST_BYTE_TIMEOUT)");
                }
                std::thread::sleep(PROBE_EVERY);
            }
        })
        .join()
        .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
    })
}

/// Runs the bench.
///
/// # Errors
/// A missing tool, a registry or containerd that refuses, a task that does
/// not answer within [`FIRST_BYTE_TIMEOUT`].
pub async fn run_containerd_bench(
    opts: &ContainerdBenchOptions,
) -> anyhow::Result<ContainerdReport> {
    let ctr = Ctr {
        socket: &opts.socket,
    };
    let version = ctr
        .ok(&["version"])
        .context("containerd does not answer on the socket")?;
    let server_version = version
        .split("Server:")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.trim().strip_prefix("Version:")))
        .map_or_else(|| "unknown".into(), |v| v.trim().to_string());
    let binary = registry::find_binary()
        .context("docker-registry is missing (install the Debian package `docker-registry`)")?;
    let dir = tempfile::Builder::new()
        .prefix("berth-ctr-bench-")
        .tempdir()?;
    let registry = Registry::start(&binary, &dir.path().join("registry")).await?;
    let wasm_ref = registry.reference("bench-hello-wasm:v1");
    let busybox_ref = registry.reference("bench-hello-busybox:v1");
    let wasm = std::fs::read(&opts.wasm)
        .with_context(|| format!("cannot read {} (make components)", opts.wasm.display()))?;
    oci::push_component_image(&RegistryClient::anonymous(), &wasm_ref, &wasm).await?;
    Image::hello("hello from a container\n")?
        .push_plain_http(&busybox_ref)
        .await?;
    ctr.ok(&["images", "pull", "--plain-http", &wasm_ref])?;
    ctr.ok(&["images", "pull", "--plain-http", &busybox_ref])?;

    let kinds = [
        ("io.containerd.berth.v1", wasm_ref.as_str()),
        ("io.containerd.runc.v2", busybox_ref.as_str()),
    ];
    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let pid = std::process::id();
    for i in 0..opts.iterations {
        for (k, (runtime, image)) in kinds.iter().enumerate() {
            let id = format!("berth-bench-{pid}-{i}-{k}");
            let ns = Netns::new(id.clone())?;
            let with_ns = format!("network:{}", ns.path());
            let started = Instant::now();
            ctr.ok(&[
                "run",
                "-d",
                "--null-io",
                "--runtime",
                runtime,
                "--with-ns",
                &with_ns,
                "--env",
                "PORT=8080",
                image,
                &id,
            ])?;
            let probed = {
                let path = ns.path();
                tokio::task::spawn_blocking(move || first_byte_in(&path, FIRST_BYTE_TIMEOUT))
                    .await?
            };
            let took = started.elapsed();
            let _ = ctr.ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while ctr.ok(&["tasks", "delete", &id]).is_err() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = ctr.ok(&["containers", "delete", &id]);
            drop(ns);
            probed.with_context(|| format!("{runtime} task {id}"))?;
            samples[k].push(took);
        }
    }
    let berth_shim_us = Stats::of(&samples[0]).context("no samples")?;
    let runc_us = Stats::of(&samples[1]).context("no samples")?;
    Ok(ContainerdReport {
        iterations: opts.iterations,
        ratio_p50: runc_us.p50 / berth_shim_us.p50,
        berth_shim_us,
        runc_us,
        containerd: server_version,
        method: "per sample: a fresh network namespace, `ctr run -d --null-io --with-ns` timed \
                 from spawning ctr to the first byte of GET / on 127.0.0.1:8080 inside it \
                 (polled every 200 µs); images pulled once beforehand; kinds interleaved"
            .into(),
    })
}
