//! `berth bench cold-start`: the driver (see the [module docs](super)).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::capture::SplitCapture;
use super::client::{Reconnecting, Timed, TimedClient, server_timing};
use super::image::Image;
use super::registry::{self, Registry};
use super::report::{
    BaselineReport, HostInfo, KindReport, ProxyReport, Report, Stats, definitions,
};
use super::runc::BareRunc;
use crate::backend::Kind;
use crate::config::{AppSpec, Config, Source};
use crate::revision::{Revision, RevisionStatus};
use crate::server::{Server, ServerOptions};

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
const SETTLE: Duration = Duration::from_millis(20);
/// Attempts at one cold start whose precondition did not hold.
const ATTEMPTS: usize = 3;
/// Requests before measuring, per kind (page in, fill pools).
const WARM_UP: usize = 10;

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
                        .join("..")
                        .join(HELLO_WASM),
                ];
                let found = candidates.iter().find(|p| p.is_file()).cloned();
                if found.is_none() {
                    missing.push(format!(
                        "the hello component is missing (looked for {HELLO_WASM} here and in {}): \
                         build it with `make components` (or `cd components && cargo build --release`), \
                         or pass --wasm PATH",
                        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").display()
                    ));
                }
                found
            }
        };
        let runc = super::find_on_path("runc").or_else(|| {
            let p = PathBuf::from("/usr/sbin/runc");
            p.is_file().then_some(p)
        });
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
    spec.scaling.min_scale = 0;
    spec.scaling.max_scale = 1;
    let a = &mut spec.scaling.autoscale;
    a.initial_scale = 1;
    a.tick = Duration::from_secs(3600);
    a.stable_window = Duration::from_secs(3600);
    a.queue_timeout = Duration::from_secs(60);
    spec.container.startup_timeout = Duration::from_secs(30);
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
pub async fn run_cold_start(
    opts: &ColdStartOptions,
    capture: &SplitCapture,
) -> anyhow::Result<Report> {
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
    let held = Held::default();
    let result = tokio::select! {
        r = bench(opts, &tools, capture, work.path(), &data_dir, &held) => r,
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated")),
    };
    let server = held.server.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(server) = server {
        server.stop_all().await;
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
    match crate::container::Shim::new(&state, runc.to_path_buf()) {
        Ok(shim) => match shim.reap_leftovers().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(count = n, "removed containers the bench left behind"),
            Err(e) => tracing::warn!("cannot remove the bench's containers: {e}"),
        },
        Err(e) => tracing::warn!("cannot remove the bench's containers: {e}"),
    }
}

fn step(msg: &str) {
    eprintln!("berth bench: {msg}");
}

async fn bench(
    opts: &ColdStartOptions,
    tools: &Tools,
    capture: &SplitCapture,
    work: &Path,
    data_dir: &Path,
    held: &Held,
) -> anyhow::Result<Report> {
    // Before anything of the bench runs: the load of the machine itself.
    let host = HostInfo::detect(&tools.runc);
    step("starting docker-registry on loopback");
    let (binary, dir) = (tools.registry.clone(), work.join("registry"));
    let registry = tokio::task::spawn_blocking(move || Registry::start(&binary, &dir)).await??;
    let reference = registry.reference(IMAGE_REPO);
    *held.registry.lock().unwrap_or_else(|e| e.into_inner()) = Some(registry);
    step(&format!(
        "building the busybox httpd image and pushing it to {reference}"
    ));
    let container_body = format!("hello from {CONTAINER_APP}");
    Image::hello(&container_body)?.push(&reference).await?;

    let mut options = ServerOptions::new(data_dir);
    options.runc = Some(tools.runc.clone());
    options.drain_timeout = Duration::from_secs(5);
    let config = Config {
        domain: crate::config::DEFAULT_DOMAIN.into(),
        ..Config::default()
    };
    let server = Arc::new(Server::start(&config, options).await?);
    *held.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(server.clone());
    step(&format!("deploying {}", tools.wasm.display()));
    server
        .deploy(WASM_APP, &bench_spec(Source::Wasm(tools.wasm.clone())))
        .await?;
    step(&format!("deploying {reference}"));
    let container = server
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
        capture,
        data_dir,
    };
    let measured = measure(opts, &bench, baseline).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
    Ok(measured?.report(opts, host))
}

/// The runtime spec berth wrote for its (only) running container instance.
fn instance_spec(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let instances = data_dir.join("containers").join("instances");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&instances)
        .with_context(|| format!("cannot list {}", instances.display()))?
    {
        let spec = entry?.path().join("bundle").join("config.json");
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
fn instance_port(spec: &Path) -> anyhow::Result<u16> {
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(spec)?)?;
    spec.pointer("/process/env")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.strip_prefix("PORT="))
        .find_map(|p| p.parse().ok())
        .context("no PORT in the instance's environment")
}

/// One app under test.
#[derive(Debug)]
struct Target {
    app: &'static str,
    kind: Kind,
    host: String,
    body: String,
    revision: Arc<Revision>,
}

impl Target {
    fn new(server: &Server, app: &'static str, kind: Kind, body: String) -> anyhow::Result<Self> {
        let revisions = server.revisions(app);
        let [revision] = revisions.as_slice() else {
            anyhow::bail!("app `{app}` has {} revisions, expected 1", revisions.len());
        };
        Ok(Self {
            app,
            kind,
            host: format!("{app}.{}", crate::config::DEFAULT_DOMAIN),
            body,
            revision: revision.clone(),
        })
    }

    fn status(&self) -> RevisionStatus {
        self.revision.status()
    }

    fn check(&self, t: &Timed) -> anyhow::Result<()> {
        anyhow::ensure!(
            t.status == http::StatusCode::OK && t.body == self.body.as_bytes(),
            "{}: expected 200 `{}`, got {} {:?}",
            self.app,
            self.body,
            t.status,
            String::from_utf8_lossy(&t.body)
        );
        Ok(())
    }
}

/// One measured cold start.
#[derive(Debug, Default)]
struct ColdSample {
    first_byte: Duration,
    /// Phase name → duration.
    split: Vec<(&'static str, Duration)>,
    /// Minor page faults of this process during the request.
    faults: u64,
}

/// One kind's warm series.
#[derive(Debug, Default)]
struct WarmSeries {
    first_byte: Vec<Duration>,
    /// Wasm: `Server-Timing` metric → values.
    per_request: BTreeMap<&'static str, Vec<Duration>>,
    faults: Vec<u64>,
    /// Keep-alive connections berth closed.
    reconnects: usize,
    /// Responses with `Connection: close`.
    close_headers: usize,
}

/// Everything measured, before summarising.
#[derive(Debug, Default)]
struct Measured {
    wasm_cold: Vec<ColdSample>,
    ctr_cold: Vec<ColdSample>,
    runc_cold: Vec<Duration>,
    wasm_warm: WarmSeries,
    ctr_warm: WarmSeries,
    through_berth: Vec<Duration>,
    direct: Vec<Duration>,
    wasm_load: BTreeMap<&'static str, Vec<Duration>>,
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Wasm,
    Container,
    BareRunc,
}

/// What the measurement works on.
#[derive(Debug)]
struct Bench<'a> {
    server: &'a Server,
    front: SocketAddr,
    wasm: &'a Target,
    ctr: &'a Target,
    capture: &'a SplitCapture,
    data_dir: &'a Path,
}

async fn measure(
    opts: &ColdStartOptions,
    b: &Bench<'_>,
    mut baseline: Option<BareRunc>,
) -> anyhow::Result<Measured> {
    let Bench {
        server,
        front,
        wasm,
        ctr,
        capture,
        data_dir,
    } = *b;
    let mut m = Measured::default();
    for t in [wasm, ctr] {
        let mut c = Reconnecting::connect(front, &t.host).await?;
        for _ in 0..WARM_UP {
            t.check(&c.get("/").await?)?;
        }
    }

    let mut kinds = vec![Which::Wasm, Which::Container];
    if baseline.is_some() {
        kinds.push(Which::BareRunc);
    }
    let total = (opts.iterations * kinds.len() + 3 * opts.warm + opts.iterations) as u64;
    let bar = if opts.progress {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    step(&format!(
        "{} cold starts of {} kinds, interleaved",
        opts.iterations,
        kinds.len()
    ));
    for i in 0..opts.iterations {
        let mut order = kinds.clone();
        order.rotate_left(i % kinds.len());
        for which in order {
            bar.set_message(format!(
                "cold start {}/{}: {which:?}",
                i + 1,
                opts.iterations
            ));
            match which {
                Which::Wasm => m.wasm_cold.push(cold(server, front, wasm, capture).await?),
                Which::Container => m.ctr_cold.push(cold(server, front, ctr, capture).await?),
                Which::BareRunc => {
                    if let Some(b) = baseline.as_mut() {
                        m.runc_cold.push(b.cold_start().await?);
                    }
                }
            }
            bar.inc(1);
        }
    }
    drop(baseline);

    step(&format!("{} warm requests per kind", opts.warm));
    bar.set_message("warm: wasm");
    m.wasm_warm = warm(front, wasm, opts.warm, &bar).await?;
    bar.set_message("warm: container");
    m.ctr_warm = warm(front, ctr, opts.warm, &bar).await?;

    step("container proxy overhead: through berth and straight to the instance, interleaved");
    bar.set_message("proxy overhead");
    // The running instance's port, from its environment (`PORT`).
    let port = instance_port(&instance_spec(data_dir)?)?;
    if let Some(ready) = capture.last(ctr.app) {
        anyhow::ensure!(
            ready.port == port,
            "the instance's spec says port {port}, its `container ready` event {}",
            ready.port
        );
    }
    let direct = SocketAddr::from(([127, 0, 0, 1], port));
    let cold_starts = ctr.status().cold_starts;
    let mut c = Reconnecting::connect(front, &ctr.host).await?;
    for _ in 0..opts.warm {
        let t = c.get("/").await?;
        ctr.check(&t)?;
        m.through_berth.push(t.first_byte);
        let t = TimedClient::get_fresh(direct, &direct.to_string(), "/").await?;
        ctr.check(&t)?;
        m.direct.push(t.first_byte);
        bar.inc(1);
    }
    anyhow::ensure!(
        ctr.status().cold_starts == cold_starts,
        "an instance started during the proxy measurement"
    );
    m.ctr_warm.reconnects += c.reconnects;
    m.ctr_warm.close_headers += c.close_headers;

    step("Wasm component load, phase by phase, outside the request path");
    bar.set_message("wasm load phases");
    for _ in 0..opts.iterations {
        let phases = tokio::task::block_in_place(|| load_phases(server, &wasm.revision, data_dir))?;
        for (k, d) in phases {
            m.wasm_load.entry(k).or_default().push(d);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(m)
}

/// Minor page faults of this process so far (`/proc/self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses: state is
    // field 3, so minflt (10) is the 8th.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(7)?.parse().ok())
        .unwrap_or(0)
}

/// The steps of [`WasmRuntime::load_app`](crate::wasm::WasmRuntime::load_app)
/// (a Wasm instance start from zero), timed apart: read and hash the
/// `.wasm`; map the cached artifact (`CompileCache::load`, i.e.
/// `Component::deserialize_file`); and `load_app` as a whole, whose
/// remainder is the header check, pre-linking and `ProxyPre::new`.
fn load_phases(
    server: &Server,
    revision: &Revision,
    data_dir: &Path,
) -> anyhow::Result<Vec<(&'static str, Duration)>> {
    use sha2::Digest as _;
    let runtime = server.runtime();
    let spec = revision.spec();
    let Source::Wasm(path) = &spec.source else {
        anyhow::bail!("not a Wasm app");
    };
    let cache = crate::wasm::cache::CompileCache::new(data_dir.join("compiled"), runtime.engine())?;
    let log = Arc::new(crate::logs::AppLog::open(
        &data_dir.join("logs"),
        "bench-load",
    )?);

    let t = Instant::now();
    let bytes = std::fs::read(path)?;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    let read_hash = t.elapsed();
    let t = Instant::now();
    let (component, from) = cache.load(runtime.engine(), &bytes, &sha256)?;
    let deserialize = t.elapsed();
    anyhow::ensure!(
        from == crate::wasm::cache::LoadedFrom::Cache,
        "the component was compiled, not loaded from the cache"
    );
    drop(component);
    let t = Instant::now();
    let app = runtime.load_app("bench-load", path, spec, log)?;
    let load_app = t.elapsed();
    drop(app);
    Ok(vec![
        ("read_hash", read_hash),
        ("deserialize", deserialize),
        (
            "check_link",
            load_app.saturating_sub(read_hash + deserialize),
        ),
        ("load_app", load_app),
    ])
}

/// One cold start of `t`, retried (up to [`ATTEMPTS`]) when the Wasm
/// component was still resident.
async fn cold(
    server: &Server,
    front: SocketAddr,
    t: &Target,
    capture: &SplitCapture,
) -> anyhow::Result<ColdSample> {
    for _ in 0..ATTEMPTS {
        if let Some(sample) = try_cold(server, front, t, capture).await? {
            return Ok(sample);
        }
    }
    anyhow::bail!(
        "{}: the compiled component stayed resident after its instances stopped, \
         {ATTEMPTS} times: no cold start to measure",
        t.app
    )
}

async fn try_cold(
    server: &Server,
    front: SocketAddr,
    t: &Target,
    capture: &SplitCapture,
) -> anyhow::Result<Option<ColdSample>> {
    let mut client = TimedClient::connect(front, &t.host).await?;
    for r in server.revisions(t.app) {
        r.drop_idle_instances().await;
    }
    let before = t.status();
    anyhow::ensure!(
        before.ready == 0 && before.starting == 0,
        "{}: {} instances ready and {} starting after stopping the idle ones",
        t.app,
        before.ready,
        before.starting
    );
    tokio::time::sleep(SETTLE).await;
    let hits = server.runtime().stats().cache_hits();
    let seen = capture.len();

    let faults = minor_faults();
    let timed = client.get("/").await?;
    let faults = minor_faults().saturating_sub(faults);
    t.check(&timed)?;

    let after = t.status();
    anyhow::ensure!(
        after.cold_starts == before.cold_starts + 1,
        "{}: the request made {} cold starts, expected 1",
        t.app,
        after.cold_starts - before.cold_starts
    );
    let instance_start = after
        .recent_cold_starts
        .last()
        .map(|r| r.duration)
        .context("no cold-start record")?;
    let first_byte = timed.first_byte;
    let mut split = vec![("instance_start", instance_start)];
    match t.kind {
        Kind::Wasm => {
            if server.runtime().stats().cache_hits() == hits {
                // Still resident: not a cold start from zero.
                return Ok(None);
            }
            let host = server_timing(&timed.headers, "berth-host")
                .context("no berth-host in Server-Timing")?;
            let instantiate = server_timing(&timed.headers, "berth-instantiate")
                .context("no berth-instantiate in Server-Timing")?;
            split.extend([
                ("host", host),
                ("instantiate", instantiate),
                ("rest", first_byte.saturating_sub(host)),
            ]);
        }
        Kind::Container => {
            let events = capture.since(seen, t.app);
            let [ready] = events.as_slice() else {
                anyhow::bail!(
                    "{}: expected one `container ready` event, saw {}",
                    t.app,
                    events.len()
                );
            };
            let s = ready.split;
            split.extend([
                ("overlay", s.overlay),
                ("create", s.create),
                ("start", s.start),
                ("ready", s.ready),
                ("rest", first_byte.saturating_sub(instance_start)),
            ]);
        }
    }
    Ok(Some(ColdSample {
        first_byte,
        split,
        faults,
    }))
}

async fn warm(
    front: SocketAddr,
    t: &Target,
    n: usize,
    bar: &ProgressBar,
) -> anyhow::Result<WarmSeries> {
    let mut series = WarmSeries::default();
    let mut c = Reconnecting::connect(front, &t.host).await?;
    // Not counted: makes sure an instance runs.
    t.check(&c.get("/").await?)?;
    let cold_starts = t.status().cold_starts;
    for _ in 0..n {
        let faults = minor_faults();
        let timed = c.get("/").await?;
        series.faults.push(minor_faults().saturating_sub(faults));
        t.check(&timed)?;
        series.first_byte.push(timed.first_byte);
        if t.kind == Kind::Wasm {
            for (key, metric) in [("host", "berth-host"), ("instantiate", "berth-instantiate")] {
                let d = server_timing(&timed.headers, metric)
                    .with_context(|| format!("no {metric} in Server-Timing"))?;
                series.per_request.entry(key).or_default().push(d);
            }
        }
        bar.inc(1);
    }
    anyhow::ensure!(
        t.status().cold_starts == cold_starts,
        "{}: an instance started during the warm series",
        t.app
    );
    series.reconnects = c.reconnects;
    series.close_headers = c.close_headers;
    Ok(series)
}

fn stats_map<K: AsRef<str>>(
    m: impl IntoIterator<Item = (K, Vec<Duration>)>,
) -> BTreeMap<String, Stats> {
    m.into_iter()
        .filter_map(|(k, v)| Some((k.as_ref().to_owned(), Stats::of(&v)?)))
        .collect()
}

fn kind_report(cold: &[ColdSample], warm: &WarmSeries) -> KindReport {
    let first: Vec<Duration> = cold.iter().map(|s| s.first_byte).collect();
    let mut phases: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for s in cold {
        for (k, d) in &s.split {
            phases.entry(k).or_default().push(*d);
        }
    }
    let counts = |v: &[u64]| Stats::of_us(v.iter().map(|&n| n as f64).collect());
    let cold_faults: Vec<u64> = cold.iter().map(|s| s.faults).collect();
    KindReport {
        cold_start_us: Stats::of(&first).unwrap_or_else(empty),
        warm_us: Stats::of(&warm.first_byte).unwrap_or_else(empty),
        split_us: stats_map(phases),
        per_request_us: (!warm.per_request.is_empty())
            .then(|| stats_map(warm.per_request.iter().map(|(k, v)| (k, v.clone())))),
        load_phases_us: None,
        proxy_us: None,
        minor_faults: [
            ("cold", counts(&cold_faults)),
            ("warm", counts(&warm.faults)),
        ]
        .into_iter()
        .filter_map(|(k, s)| Some((k.to_owned(), s?)))
        .collect(),
        client_reconnects: warm.reconnects,
        connection_close_responses: warm.close_headers,
    }
}

impl Measured {
    fn report(self, opts: &ColdStartOptions, host: HostInfo) -> Report {
        let mut wasm = kind_report(&self.wasm_cold, &self.wasm_warm);
        wasm.load_phases_us = Some(stats_map(self.wasm_load));
        let mut container = kind_report(&self.ctr_cold, &self.ctr_warm);
        container.proxy_us = match (Stats::of(&self.through_berth), Stats::of(&self.direct)) {
            (Some(through_berth), Some(direct)) => Some(ProxyReport {
                overhead_p50: through_berth.p50 - direct.p50,
                through_berth,
                direct,
            }),
            _ => None,
        };
        let baseline_runc = Stats::of(&self.runc_cold).map(|cold_start_us| BaselineReport {
            cold_start_us,
            method: "runc run -d on a copy of berth's unpacked rootfs with berth's runtime \
                     spec, GET / polled every 200 µs, timed from spawning runc to the first \
                     response byte"
                .into(),
        });
        let ratio_cold_p50 = container.cold_start_us.p50 / wasm.cold_start_us.p50;
        let ratio_container_to_runc_p50 = baseline_runc
            .as_ref()
            .map(|b| container.cold_start_us.p50 / b.cold_start_us.p50);
        Report {
            iterations: opts.iterations,
            warm_requests: opts.warm,
            wasm,
            container,
            baseline_runc,
            ratio_cold_p50,
            ratio_container_to_runc_p50,
            host,
            definitions: definitions(),
        }
    }
}

fn empty() -> Stats {
    Stats {
        n: 0,
        p50: f64::NAN,
        p90: f64::NAN,
        p99: f64::NAN,
        max: f64::NAN,
        min: f64::NAN,
        mean: f64::NAN,
        samples: Vec::new(),
    }
}

/// For the chart: the cold-start series of a report.
pub fn chart_series(report: &Report) -> Vec<super::svg::Series> {
    let mut series = vec![
        super::svg::Series {
            label: "Wasm component".into(),
            stats: report.wasm.cold_start_us.clone(),
        },
        super::svg::Series {
            label: "container (berth)".into(),
            stats: report.container.cold_start_us.clone(),
        },
    ];
    if let Some(b) = &report.baseline_runc {
        series.push(super::svg::Series {
            label: "container (bare runc)".into(),
            stats: b.cold_start_us.clone(),
        });
    }
    series
}
