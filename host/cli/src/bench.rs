//! `berth bench`: measure berth against itself and its anchors.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context as _;

use berth_bench::cold_start::{ColdStartOptions, chart_series, run_cold_start};
use berth_bench::svg;

/// `berth bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Wasm and container cold starts of the same hello service, side by
    /// side: scale from zero, then one request, N times each; warm latency;
    /// the host-side split; the container proxy overhead. Needs root, runc,
    /// docker-registry, busybox-static and the hello component (`make
    /// components`); talks to loopback only.
    ColdStart(ColdStartArgs),
    /// Task start → first byte through a running containerd: the hello
    /// component on berth's shim (`io.containerd.berth.v1`) next to busybox
    /// httpd on runc (`io.containerd.runc.v2`), each in a fresh network
    /// namespace. Needs root, ctr, `containerd-shim-berth-v1` on
    /// containerd's PATH, docker-registry and busybox-static. With `--cri`:
    /// pod created → first byte through the CRI, as the kubelet makes pods
    /// (runtime handler `berth` against `runc`), on the node at `--socket`
    /// or on a private containerd 1.7 (`--private-node`).
    Containerd(ContainerdArgs),
}

/// Arguments of `berth bench containerd`.
#[derive(Debug, clap::Args)]
pub struct ContainerdArgs {
    /// containerd's gRPC socket.
    #[arg(
        long,
        value_name = "SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub socket: PathBuf,
    /// Drive containerd's CRI plugin as the kubelet does: per sample a new
    /// pod (RunPodSandbox with runtime handler `berth` or `runc`), its
    /// container created and started, timed to the first byte from the
    /// pod's IP. The node at `--socket` needs both handlers and CNI.
    #[arg(long)]
    pub cri: bool,
    /// With `--cri`: start a private containerd 1.7 for the run (own root,
    /// state, socket, CNI bridge and subnet; `--socket` unused) and stop it
    /// after.
    #[arg(long, requires = "cri")]
    pub private_node: bool,
    /// The private node's containerd: the directory holding
    /// `usr/bin/containerd` (what scripts/setup.sh unpacks).
    #[arg(long, value_name = "DIR", default_value = berth_bench::cri_bench::DEFAULT_CONTAINERD17_DIR, requires = "private_node")]
    pub containerd_dir: PathBuf,
    /// The private node's `containerd-shim-berth-v1` [default: next to
    /// this berth, else on PATH].
    #[arg(long, value_name = "PATH", requires = "private_node")]
    pub shim: Option<PathBuf>,
    /// Samples per runtime.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub iterations: u32,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the distributions as an SVG chart to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// The hello component [default: components/target/wasm32-wasip2/release/hello.wasm].
    #[arg(long, value_name = "PATH")]
    pub wasm: Option<PathBuf>,
}

/// Arguments of `berth bench cold-start`.
#[derive(Debug, clap::Args)]
pub struct ColdStartArgs {
    /// Cold starts per kind.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub iterations: u32,
    /// Warm requests per kind (and pairs for the proxy overhead).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub warm: u32,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the cold-start distributions as an SVG chart to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Also write the printed table to FILE (the console shows
    /// `<data-dir>/bench/cold-start.txt` and `cold-start.svg`).
    #[arg(long, value_name = "FILE")]
    pub table: Option<PathBuf>,
    /// The hello component [default: components/target/wasm32-wasip2/release/hello.wasm].
    #[arg(long, value_name = "PATH")]
    pub wasm: Option<PathBuf>,
    /// berth's data directory for the run [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Also time bare `runc run -d` on the same rootfs and runtime spec, in
    /// the same run, interleaved with berth's cold starts.
    #[arg(long)]
    pub baseline_runc: bool,
}

/// Runs a `berth bench` subcommand.
///
/// # Errors
/// What the bench reports: a missing tool, a failed request, an
/// interruption, or a file that cannot be written.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::ColdStart(args) => cold_start(args),
        BenchCommand::Containerd(args) => containerd(args),
    }
}

fn containerd(args: ContainerdArgs) -> anyhow::Result<()> {
    use berth_bench::containerd::{ContainerdBenchOptions, run_containerd_bench};
    if args.cri {
        return containerd_cri(args);
    }
    let opts = ContainerdBenchOptions {
        socket: args.socket,
        iterations: args.iterations as usize,
        wasm: args
            .wasm
            .unwrap_or_else(|| PathBuf::from(berth_bench::cold_start::HELLO_WASM)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(run_containerd_bench(&opts))?;
    let mut out = std::io::stdout().lock();
    report.print(&mut out)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        svg::write(
            path,
            "task start → first byte through containerd",
            &report.series(),
        )?;
    }
    Ok(())
}

fn containerd_cri(args: ContainerdArgs) -> anyhow::Result<()> {
    use berth_bench::cri_bench::{CriBenchOptions, Node, find_shim, run_cri_bench};
    let node = if args.private_node {
        let shim = args.shim.or_else(find_shim).context(
            "containerd-shim-berth-v1 is neither next to berth nor on PATH \
             (cargo build --release -p berth-shim, or --shim PATH)",
        )?;
        Node::Private {
            containerd_dir: args.containerd_dir,
            shim,
        }
    } else {
        Node::Socket(args.socket)
    };
    let opts = CriBenchOptions {
        node,
        iterations: args.iterations as usize,
        wasm: args
            .wasm
            .unwrap_or_else(|| PathBuf::from(berth_bench::cold_start::HELLO_WASM)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(run_cri_bench(&opts))?;
    let mut out = std::io::stdout().lock();
    report.print(&mut out)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        svg::write(
            path,
            "pod created → first byte through the CRI",
            &report.series(),
        )?;
    }
    Ok(())
}

fn cold_start(args: ColdStartArgs) -> anyhow::Result<()> {
    let opts = ColdStartOptions {
        iterations: args.iterations as usize,
        warm: args.warm as usize,
        wasm: args.wasm,
        data_dir: args.data_dir,
        baseline_runc: args.baseline_runc,
        progress: std::io::stderr().is_terminal(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berth-bench")
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(run_cold_start(&opts));
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    let report = report?;

    let mut out = std::io::stdout().lock();
    report.print(&mut out)?;
    for path in [&args.json, &args.svg, &args.table].into_iter().flatten() {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
    }
    if let Some(path) = &args.table {
        let mut text = Vec::new();
        report.print(&mut text)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("berth bench: wrote {}", path.display());
    }
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json()? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("berth bench: wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        let title = format!(
            "berth cold start from zero: request sent → first response byte ({} per kind)",
            report.iterations
        );
        svg::write(path, &title, &chart_series(&report))?;
        eprintln!("berth bench: wrote {}", path.display());
    }
    Ok(())
}
