//! `berth bench containerd --cri`: pod created → first HTTP byte through
//! containerd's CRI plugin, made as the kubelet makes a pod, for the hello
//! component under the runtime handler `berth` (a RuntimeClass `berth`) and
//! for a busybox `httpd` image under `runc`, side by side in one run.
//!
//! The node is either a running containerd whose CRI plugin has the
//! handlers `berth` (`deploy/kubernetes/containerd-config.toml`) and `runc`
//! and a CNI network the host can reach pod IPs on (`--socket`), or a
//! private containerd 1.7 the bench starts and stops itself
//! (`--private-node`, [`PrivateNode`]): its own root, state, socket and
//! config, the `berth` handler read from the same snippet users add, a
//! sandbox image (busybox `sleep`) from the bench's registry, and CNI
//! `bridge` + `host-local` on a bridge and `/24` of its own.
//!
//! Both app images are pushed to a loopback `docker-registry` of the
//! bench's own and pulled once through `ImageService/PullImage` before any
//! timing; one untimed pod of each kind then runs first (its first
//! container compiles the component on the node; reported as `warmup`).
//! Each sample, kinds alternating and their order swapped every iteration:
//!
//! 1. `RunPodSandbox` (`runtime_handler` `berth` or `runc`) is called: the
//!    clock starts; it returns when the sandbox runs in its network
//!    namespace (`sandbox_ready`);
//! 2. `PodSandboxStatus` (the pod's IP) → `CreateContainer` (`PORT=8080`)
//!    → `StartContainer` returns (`container_started`);
//! 3. the host connects to `POD_IP:8080` every millisecond and sends `GET /`
//!    until a byte of answer arrives (`first_byte`);
//!
//! then, untimed, `StopContainer` (no grace: SIGKILL) → `RemoveContainer`
//! → `StopPodSandbox` → `RemovePodSandbox`, also when the sample failed.
//! Every call is bounded ([`cri::CALL_TIMEOUT`]), and so is the wait for
//! the first byte ([`FIRST_BYTE_TIMEOUT`]).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::cri::{self, BERTH_HANDLER, CriClient, PodSandboxConfig, SANDBOX_READY};
use super::image::Image;
use super::registry::{self, Registry};
use super::report::{Stats, us};
use super::svg::Series;
use berth::oci::{self, RegistryClient};

pub use crate::private_node::PrivateNode;

/// Bound on one pod answering its first byte after `StartContainer`.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the probe tries to connect.
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// Bound on the CRI plugin answering `Version` (a private node starting).
const CRI_READY: Duration = Duration::from_secs(30);
/// The port the containers listen on.
const PORT: u16 = 8080;
/// The snippet users add to containerd's config: a private node reads it
/// as it is (the `berth` handler), as the CRI tests do.
pub(crate) const CONFIG_SNIPPET: &str =
    include_str!("../../../deploy/kubernetes/containerd-config.toml");
/// Where `scripts/setup.sh` unpacks Debian trixie's containerd 1.7.24.
pub const DEFAULT_CONTAINERD17_DIR: &str = "/opt/berth/containerd-1.7";
/// The shim's binary name.
pub(crate) const SHIM: &str = "containerd-shim-berth-v1";

/// Which node the pods run on.
#[derive(Debug, Clone)]
pub enum Node {
    /// A running containerd with its CRI plugin, handlers `berth` and
    /// `runc`, and CNI.
    Socket(PathBuf),
    /// A containerd the bench starts: the directory holding its
    /// `usr/bin/containerd` (an unpacked Debian package), and the shim.
    Private {
        /// e.g. [`DEFAULT_CONTAINERD17_DIR`].
        containerd_dir: PathBuf,
        /// `containerd-shim-berth-v1`.
        shim: PathBuf,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CriBenchOptions {
    /// The node.
    pub node: Node,
    /// Samples per kind.
    pub iterations: usize,
    /// The hello component.
    pub wasm: PathBuf,
}

/// One kind's marks, each from the `RunPodSandbox` call (µs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CriKindReport {
    /// The runtime handler.
    pub handler: String,
    /// What the container runs.
    pub image: String,
    /// `RunPodSandbox` returned.
    pub sandbox_ready_us: Stats,
    /// `StartContainer` returned.
    pub container_started_us: Stats,
    /// The first byte of `GET /` from the pod's IP arrived.
    pub first_byte_us: Stats,
    /// The untimed first pod of the kind, to its first byte (its first
    /// container compiles the component on the node).
    pub warmup_first_byte_us: f64,
}

/// The result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CriReport {
    /// Samples per kind.
    pub iterations: usize,
    /// `runtime_handler = "berth"`.
    pub berth: CriKindReport,
    /// `runtime_handler = "runc"`.
    pub runc: CriKindReport,
    /// runc p50 / berth p50 of pod created → first byte.
    pub ratio_p50: f64,
    /// runc p90 / berth p90 of pod created → first byte.
    pub ratio_p90: f64,
    /// containerd's version (CRI `Version`).
    pub containerd: String,
    /// `private` (started by the bench) or the socket.
    pub node: String,
    /// The CRI calls of one sample, in order.
    pub calls: Vec<String>,
    /// How a sample is taken.
    pub method: String,
}

impl CriReport {
    /// Prints the table.
    ///
    /// # Errors
    /// When `out` fails.
    pub fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "pod created → first byte through the CRI (containerd {}, node {}), {} samples each",
            self.containerd, self.node, self.iterations
        )?;
        writeln!(
            out,
            "{:<28} {:>14} {:>14} {:>10} {:>10} {:>10} {:>12}",
            "runtime handler",
            "sandbox p50",
            "started p50",
            "p50 ms",
            "p90 ms",
            "min ms",
            "warm-up ms"
        )?;
        for (name, k) in [
            ("berth (Wasm)", &self.berth),
            ("runc (busybox httpd)", &self.runc),
        ] {
            writeln!(
                out,
                "{name:<28} {:>14.2} {:>14.2} {:>10.2} {:>10.2} {:>10.2} {:>12.2}",
                k.sandbox_ready_us.p50 / 1e3,
                k.container_started_us.p50 / 1e3,
                k.first_byte_us.p50 / 1e3,
                k.first_byte_us.p90 / 1e3,
                k.first_byte_us.min / 1e3,
                k.warmup_first_byte_us / 1e3,
            )?;
        }
        writeln!(
            out,
            "runc / berth (first byte): p50 {:.2}×, p90 {:.2}×",
            self.ratio_p50, self.ratio_p90
        )?;
        writeln!(out, "calls: {}", self.calls.join(" → "))?;
        writeln!(out, "{}", self.method)
    }

    /// The chart's series (pod created → first byte).
    pub fn series(&self) -> Vec<Series> {
        vec![
            Series {
                label: "berth handler (Wasm)".into(),
                stats: self.berth.first_byte_us.clone(),
            },
            Series {
                label: "runc handler (busybox httpd)".into(),
                stats: self.runc.first_byte_us.clone(),
            },
        ]
    }
}

/// One kind: handler, image, the container's command (empty: the image's).
struct Kind {
    handler: &'static str,
    image: String,
    command: &'static [&'static str],
}

/// The marks of one sample, from the `RunPodSandbox` call.
#[derive(Debug, Clone, Copy)]
struct Marks {
    sandbox_ready: Duration,
    container_started: Duration,
    first_byte: Duration,
}

/// Where pods' logs go, and how pods are named.
struct Pods<'a> {
    client: &'a CriClient,
    logs: PathBuf,
    prefix: String,
    /// Every pod id `RunPodSandbox` returned.
    made: std::sync::Mutex<Vec<String>>,
}

impl Pods<'_> {
    /// One pod of `kind` from `RunPodSandbox` to its first byte, then
    /// removed whatever happened.
    async fn sample(&self, kind: &Kind, name: &str) -> anyhow::Result<Marks> {
        let uid = format!("{}-{name}", self.prefix);
        let log_directory = self.logs.join(format!("default_{name}_{uid}"));
        std::fs::create_dir_all(log_directory.join("app"))
            .with_context(|| format!("cannot create {}", log_directory.display()))?;
        let config = cri::pod_config(name, &uid, &log_directory);
        let started = Instant::now();
        let pod = self
            .client
            .run_pod_sandbox(&config, kind.handler)
            .await
            .with_context(|| format!("pod {name} (handler {:?})", kind.handler))?;
        let sandbox_ready = started.elapsed();
        if let Ok(mut made) = self.made.lock() {
            made.push(pod.clone());
        }
        let measured =
            self.container(kind, &pod, &config)
                .await
                .map(|(container_started, first_byte)| Marks {
                    sandbox_ready,
                    container_started: container_started - started,
                    first_byte: first_byte - started,
                });
        let removed = self.remove(&pod).await;
        let _ = std::fs::remove_dir_all(&log_directory);
        let marks = measured.with_context(|| format!("pod {name} (handler {:?})", kind.handler))?;
        removed?;
        Ok(marks)
    }

    /// `PodSandboxStatus` → `CreateContainer` → `StartContainer` → the
    /// first byte: the instants `StartContainer` returned and the byte came.
    async fn container(
        &self,
        kind: &Kind,
        pod: &str,
        config: &PodSandboxConfig,
    ) -> anyhow::Result<(Instant, Instant)> {
        let status = self.client.pod_sandbox_status(pod, false).await?;
        let status = status.status.context("PodSandboxStatus without a status")?;
        if status.state != SANDBOX_READY {
            bail!(
                "the sandbox is not ready after RunPodSandbox (state {})",
                status.state
            );
        }
        let ip: IpAddr = status
            .network
            .as_ref()
            .map(|n| n.ip.as_str())
            .unwrap_or_default()
            .parse()
            .context("PodSandboxStatus has no pod IP (is CNI configured on the node?)")?;
        let port = PORT.to_string();
        let container =
            cri::container_config("app", &kind.image, &[("PORT", port.as_str())], kind.command);
        let id = self.client.create_container(pod, container, config).await?;
        self.client.start_container(&id).await?;
        let container_started = Instant::now();
        let addr = SocketAddr::new(ip, PORT);
        tokio::task::spawn_blocking(move || first_byte(addr, FIRST_BYTE_TIMEOUT))
            .await
            .context("the probe thread panicked")??;
        let first_byte = Instant::now();
        // The kubelet's order when a pod is deleted; untimed.
        self.client.stop_container(&id, 0).await?;
        self.client.remove_container(&id).await?;
        Ok((container_started, first_byte))
    }

    /// `StopPodSandbox` → `RemovePodSandbox` (which also removes any
    /// container still in it).
    async fn remove(&self, pod: &str) -> anyhow::Result<()> {
        let stopped = self.client.stop_pod_sandbox(pod).await;
        let removed = self.client.remove_pod_sandbox(pod).await;
        stopped
            .and(removed)
            .with_context(|| format!("cannot remove pod {pod}"))
    }
}

/// Connects to `addr` every [`PROBE_EVERY`] until `GET /` answers a byte,
/// at most `limit`.
fn first_byte(addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() {
                let mut b = [0u8; 1];
                if matches!(s.read(&mut b), Ok(1)) {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("{addr} did not answer within {limit:?} (FIRST_BYTE_TIMEOUT)");
        }
        std::thread::sleep(PROBE_EVERY);
    }
}

/// Waits until the CRI plugin on `socket` answers `Version`.
async fn connect(socket: &Path) -> anyhow::Result<(CriClient, String)> {
    let deadline = Instant::now() + CRI_READY;
    loop {
        let answer = match CriClient::connect(socket).await {
            Ok(client) => client.version().await.map(|v| (client, v)),
            Err(e) => Err(e),
        };
        match answer {
            Ok((client, v)) => return Ok((client, v.runtime_version)),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "the CRI plugin on {} did not answer within {CRI_READY:?} (CRI_READY)",
                    socket.display()
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs the bench.
///
/// # Errors
/// A missing tool, a registry or containerd that refuses, a pod that does
/// not answer within [`FIRST_BYTE_TIMEOUT`], a pod that cannot be removed.
pub async fn run_cri_bench(opts: &CriBenchOptions) -> anyhow::Result<CriReport> {
    let wasm = std::fs::read(&opts.wasm)
        .with_context(|| format!("cannot read {} (make components)", opts.wasm.display()))?;
    let binary = registry::find_binary()
        .context("docker-registry is missing (install the Debian package `docker-registry`)")?;
    let dir = tempfile::Builder::new()
        .prefix("berth-cri-bench-")
        .tempdir()?;
    let registry = Registry::start(&binary, &dir.path().join("registry")).await?;
    let wasm_ref = registry.reference("bench-hello-wasm:v1");
    let busybox_ref = registry.reference("bench-hello-busybox:v1");
    oci::push_component_image(&RegistryClient::anonymous(), &wasm_ref, &wasm).await?;
    Image::hello("hello from a container\n")?
        .push_plain_http(&busybox_ref)
        .await?;

    let (private, socket, node_name) = match &opts.node {
        Node::Socket(socket) => (None, socket.clone(), socket.display().to_string()),
        Node::Private {
            containerd_dir,
            shim,
        } => {
            let pause = registry.reference("bench-pause:v1");
            Image::pause()?.push_plain_http(&pause).await?;
            let node = PrivateNode::start(
                containerd_dir,
                shim,
                &dir.path().join("node"),
                &pause,
                &registry.addr.to_string(),
            )?;
            let socket = node.socket.clone();
            (Some(node), socket, "private".to_string())
        }
    };
    let result = measure(opts, &socket, dir.path(), &wasm_ref, &busybox_ref).await;
    let (left, log) = match private {
        Some(mut node) => (node.stop(), node.log_text()),
        None => (Vec::new(), String::new()),
    };
    let report = result.map_err(|e| {
        let mut text = format!("{e:#}");
        if !left.is_empty() {
            text.push_str(&format!("\nthe private node left behind: {left:?}"));
        }
        if !log.is_empty() {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            text.push_str(&format!(
                "\nthe private containerd's log ends with:\n{}",
                tail.join("\n")
            ));
        }
        anyhow::anyhow!(text)
    })?;
    if !left.is_empty() {
        bail!("the private node left behind: {left:?}");
    }
    Ok(CriReport {
        node: node_name,
        ..report
    })
}

/// Pulls, warms up and samples on the node at `socket`.
async fn measure(
    opts: &CriBenchOptions,
    socket: &Path,
    dir: &Path,
    wasm_ref: &str,
    busybox_ref: &str,
) -> anyhow::Result<CriReport> {
    let (client, version) = connect(socket).await?;
    let kinds = [
        Kind {
            handler: BERTH_HANDLER,
            image: wasm_ref.to_string(),
            command: &[],
        },
        Kind {
            handler: "runc",
            image: busybox_ref.to_string(),
            // Pod IPs are reached from the host: listen on every address.
            command: &["/bin/sh", "-c", "exec httpd -f -p 0.0.0.0:$PORT -h /www"],
        },
    ];
    let pods = Pods {
        client: &client,
        logs: dir.join("pods"),
        prefix: format!("berth-bench-{}", std::process::id()),
        made: std::sync::Mutex::new(Vec::new()),
    };
    // Images pulled once, in a pod's context as the kubelet does.
    let pull_config = cri::pod_config("pull", &pods.prefix, &pods.logs);
    for kind in &kinds {
        client
            .pull_image(&kind.image, &pull_config)
            .await
            .with_context(|| format!("cannot pull {}", kind.image))?;
    }
    let mut warmup = [0.0; 2];
    for (k, kind) in kinds.iter().enumerate() {
        let name = format!("{}-warmup-{}", pods.prefix, kind.handler);
        warmup[k] = us(pods.sample(kind, &name).await?.first_byte);
    }
    let mut marks: [Vec<Marks>; 2] = [Vec::new(), Vec::new()];
    for i in 0..opts.iterations {
        for j in 0..2 {
            let k = (i + j) % 2;
            let kind = &kinds[k];
            let name = format!("{}-{i}-{}", pods.prefix, kind.handler);
            marks[k].push(pods.sample(kind, &name).await?);
        }
    }
    // Nothing of the bench's left on the node (other pods may run there).
    let made = pods.made.lock().map(|m| m.clone()).unwrap_or_default();
    let left: Vec<String> = client
        .list_pod_sandboxes()
        .await?
        .into_iter()
        .filter(|id| made.contains(id))
        .collect();
    if !left.is_empty() {
        bail!("ListPodSandbox still lists the bench's pods {left:?}");
    }
    let kind_report = |k: usize| -> anyhow::Result<CriKindReport> {
        let of = |f: fn(&Marks) -> Duration| {
            Stats::of(&marks[k].iter().map(f).collect::<Vec<_>>()).context("no samples")
        };
        Ok(CriKindReport {
            handler: kinds[k].handler.into(),
            image: if k == 0 {
                "hello component (berth push --image)".into()
            } else {
                "busybox httpd".into()
            },
            sandbox_ready_us: of(|m| m.sandbox_ready)?,
            container_started_us: of(|m| m.container_started)?,
            first_byte_us: of(|m| m.first_byte)?,
            warmup_first_byte_us: warmup[k],
        })
    };
    let berth = kind_report(0)?;
    let runc = kind_report(1)?;
    Ok(CriReport {
        iterations: opts.iterations,
        ratio_p50: runc.first_byte_us.p50 / berth.first_byte_us.p50,
        ratio_p90: runc.first_byte_us.p90 / berth.first_byte_us.p90,
        berth,
        runc,
        containerd: version,
        node: String::new(),
        calls: [
            "RunPodSandbox",
            "PodSandboxStatus",
            "CreateContainer",
            "StartContainer",
            "GET / on POD_IP:8080 (first byte)",
            "StopContainer",
            "RemoveContainer",
            "StopPodSandbox",
            "RemovePodSandbox",
        ]
        .map(String::from)
        .to_vec(),
        method: "per sample: a new pod (RunPodSandbox with the kind's runtime_handler) \
                     timed from the RunPodSandbox call to the first byte of GET / on the pod's \
                     IP, port 8080, from the host (connect every 1 ms); images pulled once \
                     through PullImage and one untimed pod per kind first; kinds alternate, \
                     their order swapped every iteration"
            .into(),
    })
}

/// `containerd-shim-berth-v1` next to the running `berth` (both are built
/// into the same `target/<profile>`), else on `PATH`.
pub fn find_shim() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(SHIM)))
        .filter(|p| p.is_file())
        .or_else(|| super::find_on_path(SHIM))
}
