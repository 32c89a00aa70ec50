//! Sampling: cold starts from zero, warm series, the container proxy
//! overhead and the Wasm load phases, as raw durations.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::{ATTEMPTS, ColdStartOptions, SETTLE, WARM_UP, instance_port, instance_spec, step};
use crate::client::{Reconnecting, Timed, TimedClient, server_timing};
use crate::runc::BareRunc;
use berth::backend::Kind;
use berth::config::Source;
use berth::revision::{Revision, RevisionStatus};
use berth::server::Server;

/// One app under test.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) app: &'static str,
    pub(super) kind: Kind,
    pub(super) host: String,
    pub(super) body: String,
    pub(super) revision: Arc<Revision>,
}

impl Target {
    pub(super) fn new(
        server: &Server,
        app: &'static str,
        kind: Kind,
        body: String,
    ) -> anyhow::Result<Self> {
        let revisions = server.apps().revisions(app);
        let [revision] = revisions.as_slice() else {
            anyhow::bail!("app `{app}` has {} revisions, expected 1", revisions.len());
        };
        Ok(Self {
            app,
            kind,
            host: format!("{app}.{}", berth::config::DEFAULT_DOMAIN),
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
pub(super) struct ColdSample {
    pub(super) first_byte: Duration,
    /// Phase name → duration.
    pub(super) split: Vec<(&'static str, Duration)>,
    /// Minor page faults of this process during the request.
    pub(super) faults: u64,
}

/// One kind's warm series.
#[derive(Debug, Default)]
pub(super) struct WarmSeries {
    pub(super) first_byte: Vec<Duration>,
    /// Wasm: `Server-Timing` metric → values.
    pub(super) per_request: BTreeMap<&'static str, Vec<Duration>>,
    pub(super) faults: Vec<u64>,
    /// Keep-alive connections berth closed.
    pub(super) reconnects: usize,
    /// Responses with `Connection: close`.
    pub(super) close_headers: usize,
}

/// Everything measured, before summarising.
#[derive(Debug, Default)]
pub(super) struct Measured {
    pub(super) wasm_cold: Vec<ColdSample>,
    pub(super) ctr_cold: Vec<ColdSample>,
    /// Warm requests made as the cold ones are (new connection, the same
    /// pause before), interleaved with them.
    pub(super) wasm_paused: Vec<Duration>,
    pub(super) ctr_paused: Vec<Duration>,
    pub(super) runc_cold: Vec<Duration>,
    pub(super) wasm_warm: WarmSeries,
    pub(super) ctr_warm: WarmSeries,
    pub(super) through_berth: Vec<Duration>,
    pub(super) direct: Vec<Duration>,
    pub(super) wasm_load: BTreeMap<&'static str, Vec<Duration>>,
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Wasm,
    Container,
    /// A warm request to a running instance, made like a cold one.
    WasmPaused,
    ContainerPaused,
    BareRunc,
}

/// What the measurement works on.
#[derive(Debug)]
pub(super) struct Bench<'a> {
    pub(super) server: &'a Server,
    pub(super) front: SocketAddr,
    pub(super) wasm: &'a Target,
    pub(super) ctr: &'a Target,
    pub(super) data_dir: &'a Path,
}

pub(super) async fn measure(
    opts: &ColdStartOptions,
    b: &Bench<'_>,
    mut baseline: Option<BareRunc>,
) -> anyhow::Result<Measured> {
    let Bench {
        server,
        front,
        wasm,
        ctr,
        data_dir,
    } = *b;
    let mut m = Measured::default();
    for t in [wasm, ctr] {
        let mut c = Reconnecting::connect(front, &t.host).await?;
        for _ in 0..WARM_UP {
            t.check(&c.get("/").await?)?;
        }
    }

    // Each kind's paused warm request sits in the rotation as far from its
    // cold start as the kinds allow.
    let mut kinds = vec![
        Which::Wasm,
        Which::Container,
        Which::WasmPaused,
        Which::ContainerPaused,
    ];
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
        "{} cold starts of 2 kinds{}, interleaved with as many warm requests made the same way",
        opts.iterations,
        if baseline.is_some() {
            " and of bare runc"
        } else {
            ""
        }
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
                Which::Wasm => m.wasm_cold.push(cold(server, front, wasm).await?),
                Which::Container => m.ctr_cold.push(cold(server, front, ctr).await?),
                Which::WasmPaused => m.wasm_paused.push(paused_warm(front, wasm).await?),
                Which::ContainerPaused => m.ctr_paused.push(paused_warm(front, ctr).await?),
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

/// The steps of [`WasmRuntime::load_app`](berth::wasm::WasmRuntime::load_app)
/// (a Wasm instance start from zero), timed apart: read and hash the
/// `.wasm`; map the cached artifact (`CompileCache::load`, i.e.
/// `Component::deserialize_file`); and `load_app` as a whole, whose
/// remainder is the header check, pre-linking and `ProxyPre::new` when it
/// maps the artifact, or the app's context around the component when it
/// finds that resident.
fn load_phases(
    server: &Server,
    revision: &Revision,
    data_dir: &Path,
) -> anyhow::Result<Vec<(&'static str, Duration)>> {
    use sha2::Digest as _;
    let runtime = server.apps().runtime();
    let spec = revision.spec();
    let Source::Wasm(path) = &spec.source else {
        anyhow::bail!("not a Wasm app");
    };
    let cache = berth::wasm::cache::CompileCache::new(data_dir.join("compiled"), runtime.engine())?;
    let log = Arc::new(berth::logs::AppLog::open(
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
        from == berth::wasm::cache::LoadedFrom::Cache,
        "the component was compiled, not loaded from the cache"
    );
    drop(component);
    let shared = runtime.stats().shared();
    let t = Instant::now();
    let app = runtime.load_app("bench-load", path, spec, &[], log)?;
    let load_app = t.elapsed();
    drop(app);
    // The running revision keeps the component resident, so `load_app`
    // usually finds it by its sha256 and maps nothing: its remainder is
    // then the app's context, not the pre-linking.
    let rest = if runtime.stats().shared() > shared {
        ("resident_context", load_app.saturating_sub(read_hash))
    } else {
        (
            "check_link",
            load_app.saturating_sub(read_hash + deserialize),
        )
    };
    Ok(vec![
        ("read_hash", read_hash),
        ("deserialize", deserialize),
        rest,
        ("load_app", load_app),
    ])
}

/// One cold start of `t`, retried (up to [`ATTEMPTS`]) when an instance
/// still held the loaded Wasm app.
async fn cold(server: &Server, front: SocketAddr, t: &Target) -> anyhow::Result<ColdSample> {
    for _ in 0..ATTEMPTS {
        if let Some(sample) = try_cold(server, front, t).await? {
            return Ok(sample);
        }
    }
    anyhow::bail!(
        "{}: the loaded app stayed held after its instances stopped, \
         {ATTEMPTS} times: no cold start from zero to measure",
        t.app
    )
}

async fn try_cold(
    server: &Server,
    front: SocketAddr,
    t: &Target,
) -> anyhow::Result<Option<ColdSample>> {
    let mut client = TimedClient::connect(front, &t.host).await?;
    for r in server.apps().revisions(t.app) {
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
    let stats = server.apps().runtime().stats();
    let loads = stats.cache_hits() + stats.shared();

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
    let record = after
        .recent_cold_starts
        .last()
        .context("no cold-start record")?;
    let instance_start = record.duration;
    let first_byte = timed.first_byte;
    let mut split = vec![("instance_start", instance_start)];
    match t.kind {
        Kind::Wasm => {
            let stats = server.apps().runtime().stats();
            if stats.cache_hits() + stats.shared() == loads {
                // An instance still held the loaded app: not a start from
                // zero. (From zero, the component is found resident, which
                // berth keeps within its budget, or mapped from disk.)
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
            let phases = record
                .split
                .as_ref()
                .with_context(|| format!("{}: the cold start has no split", t.app))?;
            split.extend(phases.phases.iter().copied());
            split.push(("rest", first_byte.saturating_sub(instance_start)));
        }
    }
    Ok(Some(ColdSample {
        first_byte,
        split,
        faults,
    }))
}

/// A warm request made the way [`try_cold`] makes a cold one: a new
/// connection, the same [`SETTLE`] pause, one `GET /`; only no instance is
/// stopped first. What it costs beyond a back-to-back warm request is the
/// machine waking from that pause (idle CPUs, parked threads), which a cold
/// start pays too.
async fn paused_warm(front: SocketAddr, t: &Target) -> anyhow::Result<Duration> {
    let mut client = TimedClient::connect(front, &t.host).await?;
    if t.status().ready == 0 {
        // Not counted: the previous cold start's instance is gone.
        t.check(&client.get("/").await?)?;
    }
    let before = t.status().cold_starts;
    tokio::time::sleep(SETTLE).await;
    let timed = client.get("/").await?;
    t.check(&timed)?;
    anyhow::ensure!(
        t.status().cold_starts == before,
        "{}: an instance started during a warm request",
        t.app
    );
    Ok(timed.first_byte)
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
