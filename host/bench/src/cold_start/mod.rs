//! `berth bench cold-start`: the driver (see the [module docs](super)):
//! find the tools, start the registry and an in-process host, deploy both
//! kinds, run the sampling (`sample`) and summarise it (`summary`); stop
//! everything it started, however it ends.

mod sample;
mod summary;

pub use summary::chart_series;

use sample::{Bench, Target, measure};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

use super::image::Image;
use super::registry::{self, Registry};
use super::report::{HostInfo, Report};
use super::runc::BareRunc;
use berth::backend::Kind;
use berth::config::{AppSpec, Config, Source};
use berth::revision::Revision;
use berth::server::{Server, ServerOptions};

/// The Wasm app.
pub const WASM_APP: &str = "hello-wasm";
/// The container app.
pub const CONTAINER_APP: &str = "hello-container";
/// The hello component, relative to the repository.
pub const HELLO_WASM: &str = "components/target/wasm32-wasip2/release/hello.wasm";
/// Where the image goes in the registry.
const IMAGE_REPO: &str = "berth-bench/hello:latest";
/// Pause between stopping the instances and the measured request, so that
/// the stop's last effects (a finished guest task releasing the component,
/// a container's teardown) are over and not measured.
pub(crate) const SETTLE: Duration = Duration::from_millis(20);
/// Attempts at one cold start whose precondition did not hold.
pub(super) const ATTEMPTS: usize = 3;
/// Requests before measuring, per kind (page in, fill pools).
pub(super) const WARM_UP: usize = 10;

/// What `berth bench cold-start` was asked.
#[derive(Debug, Clone)]
pub struct ColdStartOptions {
    /// Cold starts per kind.
    pub iterations: usize,
    /// Warm requests per kind (and proxy-overhead pairs).
    pub warm: usize,
    /// The hello component (default: [`HELLO_WASM`] under the current
    /// directory, else under the source tree berth was built from).
    pub wasm: Option<PathBuf>,
    /// berth's data directory (default: a temporary one).
    pub data_dir: Option<PathBuf>,
    /// Also time bare `runc run -d` on the same bundle.
    pub baseline_runc: bool,
    /// Draw a progress bar (only on a terminal).
    pub progress: bool,
}

/// The programs and files the bench needs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The hello component.
    pub wasm: PathBuf,
    /// runc.
    pub runc: PathBuf,
    /// docker-registry.
    pub registry: PathBuf,
}

impl Tools {
    /// Finds everything, or says what is missing and how to get it.
    ///
    /// # Errors
    /// Lists every missing piece.
    pub fn find(wasm: Option<&Path>) -> anyhow::Result<Self> {
        let mut missing = Vec::new();
        let wasm = match wasm {
            Some(p) if p.is_file() => Some(p.to_path_buf()),
            Some(p) => {
                missing.push(format!("the component {} does not exist", p.display()));
                None
            }
            None => {
                let candidates = [
                    PathBuf::from(HELLO_WASM),
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("../..")
                        .join(HELLO_WASM),
                ];
                let found = candidates.iter().find(|p| p.is_file()).cloned();
                if found.is_none() {
                    missing.push(format!(
                        "the hello component is missing (looked for {HELLO_WASM} here and in {}): \
                         build it with `make components` (or `cd components && cargo build --release`), \
                         or pass --wasm PATH",
                        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").display()
                    ));
                }
                found
            }
        };
        let runc = berth::container::runc::find_runc(None);
        if runc.is_none() {
            missing.push(
                "runc is missing: install the Debian package `runc` (scripts/setup.sh does)".into(),
            );
        }
        let registry = registry::find_binary();
        if registry.is_none() {
            missing.push(format!(
                "docker-registry is missing (not on PATH nor at {}): install the Debian package \
                 `docker-registry` (scripts/setup.sh does)",
                registry::DEFAULT_BINARY
            ));
        }
        if !Image::available() {
            missing.push(format!(
                "{} is missing (the container image is built from it): install the Debian \
                 package `busybox-static` (scripts/setup.sh does)",
                super::image::BUSYBOX
            ));
        }
        if !rustix::process::geteuid().is_root() {
            missing
                .push("containers need root (overlay mounts, runc): run the bench as root".into());
        }
        match (wasm, runc, registry) {
            (Some(wasm), Some(runc), Some(registry)) if missing.is_empty() => Ok(Self {
                wasm: std::path::absolute(&wasm).unwrap_or(wasm),
                runc,
                registry,
            }),
            _ => anyhow::bail!("cannot run the bench:\n  - {}", missing.join("\n  - ")),
        }
    }
}

/// The app spec both kinds use: from zero to at most one instance, started
/// only by the activator's poke (the reconcile tick and the stable window
/// are an hour, so no background decision runs during the measurement).
pub fn bench_spec(source: Source) -> AppSpec {
    let mut spec = match source {
        Source::Wasm(path) => AppSpec::wasm(path),
        Source::Image(reference) => AppSpec::image(reference),
    };
    let a = &mut spec.scaling.autoscale;
    a.min_scale = 0;
    a.max_scale = 1;
    a.initial_scale = 1;
    a.tick = Duration::from_secs(3600);
    a.stable_window = Duration::from_secs(3600);
    spec.scaling.queue_timeout = Duration::from_secs(60);
    spec.container.startup_timeout = Duration::from_secs(30);
    // The host network, as the bare-runc baseline has it (and as the image
    // binds 127.0.0.1): the comparison is of the runtimes, not of networks.
    spec.container.network = berth::config::NetworkMode::Host;
    // httpd is PID 1 of its namespace and ignores SIGTERM: do not wait
    // for it (stopping is not measured).
    spec.container.shutdown_grace = Duration::from_millis(50);
    spec
}

/// What must be cleaned up however the bench ends.
#[derive(Debug, Default)]
struct Held {
    server: Mutex<Option<Arc<Server>>>,
    revisions: Mutex<Vec<Arc<Revision>>>,
    registry: Mutex<Option<Registry>>,
}

/// Runs the whole bench and returns its report. Everything it started
/// (instances, containers, the registry) is stopped before it returns, on
/// success, on error, and on SIGINT/SIGTERM.
///
/// # Errors
/// A missing tool, a failed deploy or request, an unexpected answer, or an
/// interruption.
pub async fn run_cold_start(opts: &ColdStartOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(
        opts.iterations >= 1 && opts.warm >= 1,
        "--iterations and --warm must be at least 1"
    );
    let tools = Tools::find(opts.wasm.as_deref())?;
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let work = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
    // Outlives the server: removed only once every instance has stopped.
    let (data_dir, _data_temp) = match &opts.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("berth-bench-data-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    berth::files::create_private_dir(&data_dir)
        .with_context(|| format!("cannot create data directory `{}`", data_dir.display()))?;
    // As `berth serve` does: a data directory a running host holds is refused.
    let _lock = berth::server::DataDirLock::acquire(&data_dir)?;
    let held = Held::default();
    let result = tokio::select! {
        r = bench(opts, &tools, work.path(), &data_dir, &held) => r,
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated")),
    };
    let server = held.server.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(server) = server {
        server.apps().stop_all().await;
    }
    // A start still under way stops its instance when it finds the
    // revision stopped; wait for that (bounded).
    let revisions = std::mem::take(&mut *held.revisions.lock().unwrap_or_else(|e| e.into_inner()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for r in revisions {
        r.shutdown().await;
        while r.status().starting > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    reap_containers(&tools.runc, &data_dir).await;
    drop(
        held.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(),
    );
    result
}

/// Makes sure no container of the run outlives it: stopped instances tear
/// down in the background, and a start under way when the bench was
/// interrupted stops its instance late. Waits (bounded) for the instance
/// directories to go, then reaps whatever is left under the run's runc root.
async fn reap_containers(runc: &Path, data_dir: &Path) {
    let state = data_dir.join("containers");
    let instances = state.join("instances");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&instances).is_ok_and(|mut d| d.next().is_some())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !state.exists() {
        return;
    }
    match berth::container::Shim::new(&state, runc.to_path_buf()) {
        Ok(shim) => match shim.reap_leftovers().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(count = n, "removed containers the bench left behind"),
            Err(e) => tracing::warn!("cannot remove the bench's containers: {e}"),
        },
        Err(e) => tracing::warn!("cannot remove the bench's containers: {e}"),
    }
}

pub(super) fn step(msg: &str) {
    eprintln!("berth bench: {msg}");
}

async fn bench(
    opts: &ColdStartOptions,
    tools: &Tools,
    work: &Path,
    data_dir: &Path,
    held: &Held,
) -> anyhow::Result<Report> {
    // Before anything of the bench runs: the load of the machine itself.
    let mut host = HostInfo::detect(&tools.runc);
    step("starting docker-registry on loopback");
    let (binary, dir) = (tools.registry.clone(), work.join("registry"));
    let registry = Registry::start(&binary, &dir).await?;
    let reference = registry.reference(IMAGE_REPO);
    *held.registry.lock().unwrap_or_else(|e| e.into_inner()) = Some(registry);
    step(&format!(
        "building the busybox httpd image and pushing it to {reference}"
    ));
    let container_body = format!("hello from {CONTAINER_APP}");
    Image::hello(&container_body)?
        .push_plain_http(&reference)
        .await?;

    // The baseline's template is berth's own spec, read from the bundle.
    berth::container::keep_runtime_specs();
    let mut options = ServerOptions::new(data_dir);
    options.runc = Some(tools.runc.clone());
    options.drain_timeout = Duration::from_secs(5);
    let config = Config {
        domain: berth::config::DEFAULT_DOMAIN.into(),
        ..Config::default()
    };
    let server = Arc::new(Server::start(&config, options).await?);
    host.slot_reset = format!("{:?}", server.apps().runtime().slot_reset());
    *held.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(server.clone());
    step(&format!("deploying {}", tools.wasm.display()));
    server
        .apps()
        .deploy(WASM_APP, &bench_spec(Source::Wasm(tools.wasm.clone())))
        .await?;
    step(&format!("deploying {reference}"));
    let container = server
        .apps()
        .deploy(CONTAINER_APP, &bench_spec(Source::Image(reference.clone())))
        .await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let front = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.clone().run(listener, admin, async move {
        let _ = stopped.await;
    }));

    let wasm = Target::new(
        &server,
        WASM_APP,
        Kind::Wasm,
        format!("hello from {WASM_APP}"),
    )?;
    let ctr = Target::new(&server, CONTAINER_APP, Kind::Container, container_body)?;
    held.revisions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend([wasm.revision.clone(), ctr.revision.clone()]);

    // The spec berth wrote for the container's first instance: the
    // baseline's template, and where the instance's port is.
    let berth_spec = instance_spec(data_dir)?;
    let baseline = if opts.baseline_runc {
        step("preparing the bare-runc baseline from berth's rootfs and runtime spec");
        let lower = data_dir
            .join("rootfs")
            .join(container.sha256.trim_start_matches("sha256:"));
        Some(BareRunc::prepare(
            &tools.runc,
            &work.join("baseline"),
            &berth_spec,
            &lower,
            &ctr.body,
        )?)
    } else {
        None
    };

    let bench = Bench {
        server: &server,
        front,
        wasm: &wasm,
        ctr: &ctr,
        data_dir,
    };
    let measured = measure(opts, &bench, baseline).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
    Ok(measured?.report(opts, host))
}

/// The runtime spec berth wrote for its (only) running container instance.
pub(super) fn instance_spec(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let instances = data_dir.join("containers").join("instances");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&instances)
        .with_context(|| format!("cannot list {}", instances.display()))?
    {
        let spec = entry?
            .path()
            .join("scratch")
            .join("bundle")
            .join("config.json");
        if spec.is_file() {
            found.push(spec);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => anyhow::bail!(
            "expected one running container instance under {}, found {}",
            instances.display(),
            found.len()
        ),
    }
}

/// The `PORT` of the process environment in a runtime spec.
pub(super) fn instance_port(spec: &Path) -> anyhow::Result<u16> {
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(spec)?)?;
    spec.pointer("/process/env")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.strip_prefix("PORT="))
        .find_map(|p| p.parse().ok())
        .context("no PORT in the instance's environment")
}
