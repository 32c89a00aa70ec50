//! Prometheus metrics, served as `GET /metrics` on the admin listener.
//!
//! Every name starts with `berth_`. Counters and histograms are updated as
//! things happen; gauges are computed from the [`AppSnapshot`]s the caller
//! passes at each scrape, so an app that is deleted stops being reported at
//! once. This module is a sink: callers feed it, it imports none of them.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `berth_requests_total` | counter | `app`, `status` | requests routed to an app, by response status |
//! | `berth_request_duration_seconds` | histogram | `app` | from the request's arrival to the end of its response body (or the client going away) |
//! | `berth_cold_starts_total` | counter | `kind` | instances started (`wasm`, `container`) |
//! | `berth_cold_start_duration_seconds` | histogram | `kind` | how long an instance took to become ready |
//! | `berth_instances` | gauge | `app`, `revision`, `state` | `ready`, `starting` and `desired` instances |
//! | `berth_queue_depth` | gauge | `app` | requests waiting for capacity |
//! | `berth_in_flight` | gauge | `app` | requests being served |
//! | `berth_traffic_percent` | gauge | `app`, `revision` | each serving revision's share of new requests |
//! | `berth_app_deploy_failed` | gauge | `app` | 1 while an app that could not be deployed waits for a retry |
//! | `berth_app_requests_total` | counter | `app` | metering: requests |
//! | `berth_instance_seconds_total` | counter | `app`, `kind` | metering: ready instances × time |
//! | `berth_cpu_seconds_total` | counter | `app` | metering: CPU time, for apps whose backend reports it |
//! | `berth_memory_gb_seconds_total` | counter | `app` | metering: memory (GB, 10⁹ bytes) × time, for apps whose backend reports it |
//! | `berth_outbound_connections_opened_total` | counter | `app` | Wasm guests' outbound connections opened (TCP, with TLS for `https`) |
//! | `berth_outbound_connections_reused_total` | counter | `app` | Wasm guests' outbound requests sent on a pooled connection |
//! | `berth_outbound_requests_refused_total` | counter | `app` | Wasm guests' outbound requests refused by a connection or DNS lookup cap (`connection-limit-reached`) |
//! | `berth_outbound_idle_connections` | gauge | `app` | idle outbound connections in the app's pool now |
//! | `berth_trace_spans_exported_total` | counter | | spans sent to the OTLP endpoint |
//! | `berth_trace_spans_dropped_total` | counter | `reason` | spans lost: `queue_full` (the export queue was full), `export_failed` (the endpoint refused or was down) |
//!
//! # Metering
//! *Instance-seconds* are integrated by sampling: every [`Metrics::sample`]
//! (once a second from [`Metrics::spawn_sampler`], and at every scrape) adds
//! `ready instances at the previous sample × seconds since it` for each app
//! and kind. An instance that starts or stops between two samples is counted
//! from or until the next sample, so the error is at most one sampling
//! interval per change of the instance count. For Wasm an instance is a unit
//! of capacity sharing one resident compiled component (see
//! [`crate::backend`]), which is what scale-to-zero saves.
//!
//! *CPU-seconds* and *memory GB-seconds* are measured, never estimated:
//!
//! - A container's come from its cgroup ([`Metrics::track_cgroup`] when it
//!   starts, [`Metrics::untrack_cgroup`] before it is deleted): CPU from
//!   `cpu.stat` `usage_usec` (cgroup v2) or `cpuacct.usage` (v1), memory from
//!   `memory.current` (v2) or `memory.usage_in_bytes` (v1). They are read at
//!   every sample; CPU is the growth of the cumulative counter, memory is
//!   integrated with the trapezoid rule between two readings (GB = 10⁹
//!   bytes).
//! - Anything else a backend measures can be added with
//!   [`Metrics::record_usage`].
//!
//! Wasm apps are metered per request by the runtime through
//! [`Metrics::record_usage`]: CPU is the time the request's guest task spent
//! being polled, memory is its linear memory × its wall time.
//!
//! # Layout
//! - this file: [`Metrics`], the registry, counters, histograms, gauges from
//!   snapshots, instance-seconds sampling;
//! - `cgroup`: container metering from cgroup files;
//! - `latency`: the histograms, readable as [`Buckets`] as well as encoded
//!   (what [`Metrics::app_counters`] and [`Metrics::cold_starts`] return);
//! - `observe`: [`Metrics::instrument`], counting a request when its body
//!   is done.

mod cgroup;
mod latency;
mod observe;

pub use latency::Buckets;
use latency::Latency;

use cgroup::{CgroupMeter, read_cgroup};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::render`].
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// The `Content-Type` of [`Metrics::render_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request latency buckets (seconds): a Wasm request takes well under a
/// millisecond, a slow one up to the default 30 s timeout.
const REQUEST_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Cold start buckets (seconds): microseconds for Wasm, seconds for a
/// container.
const COLD_START_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

fn request_histogram() -> Latency {
    Latency::new(&REQUEST_BUCKETS)
}

fn cold_start_histogram() -> Latency {
    Latency::new(&COLD_START_BUCKETS)
}

type FloatCounter = Counter<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Latency, fn() -> Latency>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    app: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppKindLabels {
    app: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    app: String,
    revision: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    app: String,
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The trace exporter's counters (the exporter feeds them).
#[derive(Debug, Clone)]
pub struct TraceCounters {
    /// Spans the endpoint took.
    pub exported: Counter,
    /// Spans dropped because the export queue was full.
    pub dropped_queue_full: Counter,
    /// Spans dropped because their export failed.
    pub dropped_export_failed: Counter,
}

/// One app's gauges at a moment, as the caller sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSnapshot {
    /// The app.
    pub name: String,
    /// Its serving revisions.
    pub revisions: Vec<RevisionSnapshot>,
    /// Whether it could not be deployed and waits for a retry.
    pub deploy_failed: bool,
}

/// One revision's gauges at a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevisionSnapshot {
    /// `<app>-<n>`.
    pub id: String,
    /// `wasm` or `container`.
    pub kind: &'static str,
    /// Its share of the app's new requests.
    pub traffic_percent: u32,
    /// Instances serving.
    pub ready: u32,
    /// Instances starting.
    pub starting: u32,
    /// What the autoscaler wants.
    pub desired: u32,
    /// Requests waiting for capacity.
    pub queued: usize,
    /// Requests being served.
    pub in_flight: usize,
    /// Its stock of pre-instantiated instances (Wasm).
    pub stock: Option<StockSnapshot>,
    /// Its guests' outbound connections (Wasm).
    pub outbound: Option<OutboundSnapshot>,
}

/// A revision's outbound connections: counts so far and idle ones now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundSnapshot {
    /// Connections opened.
    pub opened: u64,
    /// Requests sent on a pooled connection.
    pub reused: u64,
    /// Requests refused by a cap.
    pub refused: u64,
    /// Idle connections in the pool now.
    pub idle: u32,
}

/// A revision's stock of instances made ahead of their requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StockSnapshot {
    /// Requests that took a stocked instance.
    pub hits: u64,
    /// Requests that instantiated their own.
    pub misses: u64,
    /// Instances in stock now.
    pub stocked: u32,
    /// Reusable wasmtime instances alive now (instance reuse).
    pub live: u32,
}

/// Ready instances per (app, kind) at the last sample.
#[derive(Debug, Default)]
struct Sample {
    at: Option<Instant>,
    ready: HashMap<(String, &'static str), u32>,
    /// Every kind sampled so far (the labels instance-seconds may have).
    kinds: std::collections::BTreeSet<&'static str>,
}

/// One app's counters at a moment: what a scrape would report for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppCounters {
    /// Requests routed to it.
    pub requests: u64,
    /// Their durations, from arrival to the end of the response body.
    pub latency: Buckets,
    /// Ready instances × seconds, up to the last sample.
    pub instance_seconds: f64,
    /// CPU time, where its backend measures it.
    pub cpu_seconds: Option<f64>,
    /// Memory GB × seconds, where its backend measures it.
    pub memory_gb_seconds: Option<f64>,
}

/// The host's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<AppLabels>,
    cold_starts: Family<KindLabels, Counter>,
    cold_start_duration: HistogramFamily<KindLabels>,
    app_requests: Family<AppLabels, Counter>,
    instance_seconds: Family<AppKindLabels, FloatCounter>,
    cpu_seconds: Family<AppLabels, FloatCounter>,
    memory_gb_seconds: Family<AppLabels, FloatCounter>,
    trace: TraceCounters,
    sample: Mutex<Sample>,
    cgroup_root: PathBuf,
    /// Tracked container cgroups, by cgroup path.
    cgroups: Mutex<HashMap<PathBuf, CgroupMeter>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests routed to an app, by response status",
            requests.clone(),
        );
        let request_duration: HistogramFamily<AppLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "request_duration",
            "From a request's arrival to the end of its response body",
            Unit::Seconds,
            request_duration.clone(),
        );
        let cold_starts = Family::<KindLabels, Counter>::default();
        registry.register(
            "cold_starts",
            "Instances started, by kind (wasm, container)",
            cold_starts.clone(),
        );
        let cold_start_duration: HistogramFamily<KindLabels> =
            Family::new_with_constructor(cold_start_histogram);
        registry.register_with_unit(
            "cold_start_duration",
            "How long an instance took to become ready, by kind",
            Unit::Seconds,
            cold_start_duration.clone(),
        );
        let app_requests = Family::<AppLabels, Counter>::default();
        registry.register(
            "app_requests",
            "Metering: requests routed to an app",
            app_requests.clone(),
        );
        let instance_seconds = Family::<AppKindLabels, FloatCounter>::default();
        registry.register_with_unit(
            "instance",
            "Metering: ready instances times seconds, sampled every second and at each scrape",
            Unit::Seconds,
            instance_seconds.clone(),
        );
        let cpu_seconds = Family::<AppLabels, FloatCounter>::default();
        registry.register_with_unit(
            "cpu",
            "Metering: CPU time used by an app's instances, where the backend measures it",
            Unit::Seconds,
            cpu_seconds.clone(),
        );
        let memory_gb_seconds = Family::<AppLabels, FloatCounter>::default();
        registry.register(
            "memory_gb_seconds",
            "Metering: memory in GB (1e9 bytes) times seconds, where the backend measures it",
            memory_gb_seconds.clone(),
        );
        let exported = Counter::default();
        registry.register(
            "trace_spans_exported",
            "Spans sent to the OTLP endpoint",
            exported.clone(),
        );
        let dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "trace_spans_dropped",
            "Spans lost: queue_full (the export queue was full), export_failed (the endpoint refused or was down)",
            dropped.clone(),
        );
        // (Each guard of `get_or_create` is dropped before the next call:
        // it holds the family's lock.)
        let dropped_queue_full = dropped
            .get_or_create(&ReasonLabels {
                reason: "queue_full",
            })
            .clone();
        let dropped_export_failed = dropped
            .get_or_create(&ReasonLabels {
                reason: "export_failed",
            })
            .clone();
        let trace = TraceCounters {
            exported,
            dropped_queue_full,
            dropped_export_failed,
        };
        Self {
            registry,
            trace,
            requests,
            request_duration,
            cold_starts,
            cold_start_duration,
            app_requests,
            instance_seconds,
            cpu_seconds,
            memory_gb_seconds,
            sample: Mutex::new(Sample::default()),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroups: Mutex::new(HashMap::new()),
        }
    }

    /// The counters the trace exporter feeds.
    pub fn trace_counters(&self) -> TraceCounters {
        self.trace.clone()
    }

    /// Reads cgroups under `root` instead of `/sys/fs/cgroup` (for tests).
    #[must_use]
    pub fn with_cgroup_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.cgroup_root = root.into();
        self
    }

    /// Counts one request to `app` that ended with `status` after `elapsed`.
    pub fn observe_request(&self, app: &str, status: u16, elapsed: Duration) {
        let labels = AppLabels { app: app.into() };
        self.requests
            .get_or_create(&RequestLabels {
                app: labels.app.clone(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.app_requests.get_or_create(&labels).inc();
    }

    /// Counts one instance start of `kind` (`wasm` or `container`) that took
    /// `elapsed` to become ready.
    pub fn observe_cold_start(&self, kind: &str, elapsed: Duration) {
        let labels = KindLabels { kind: kind.into() };
        self.cold_starts.get_or_create(&labels).inc();
        self.cold_start_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Adds measured usage of `app`: CPU time, and memory × time in GB-seconds
    /// (bytes × seconds / 10⁹). For backends that measure them.
    pub fn record_usage(&self, app: &str, cpu: Duration, memory_gb_seconds: f64) {
        let labels = AppLabels { app: app.into() };
        if !cpu.is_zero() {
            self.cpu_seconds
                .get_or_create(&labels)
                .inc_by(cpu.as_secs_f64());
        }
        if memory_gb_seconds > 0.0 && memory_gb_seconds.is_finite() {
            self.memory_gb_seconds
                .get_or_create(&labels)
                .inc_by(memory_gb_seconds);
        }
    }

    /// Integrates instance-seconds up to now (see the [module docs](self)).
    pub fn sample(&self, apps: &[AppSnapshot]) {
        self.sample_at(Instant::now(), apps);
    }

    fn sample_at(&self, now: Instant, apps: &[AppSnapshot]) {
        let mut ready: HashMap<(String, &'static str), u32> = HashMap::new();
        for app in apps {
            for revision in &app.revisions {
                *ready.entry((app.name.clone(), revision.kind)).or_default() += revision.ready;
            }
        }
        let mut sample = self.sample.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = sample.at {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            for ((app, kind), n) in &sample.ready {
                if *n > 0 {
                    self.instance_seconds
                        .get_or_create(&AppKindLabels {
                            app: app.clone(),
                            kind: (*kind).to_string(),
                        })
                        .inc_by(f64::from(*n) * dt);
                }
            }
        }
        sample.at = Some(now);
        sample.kinds.extend(ready.keys().map(|(_, kind)| *kind));
        sample.ready = ready;
        drop(sample);
        let mut cgroups = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        for (path, meter) in cgroups.iter_mut() {
            let reading = read_cgroup(&self.cgroup_root, path);
            self.meter(meter, reading, now);
        }
    }

    /// The counters of `app` now (instance-seconds up to the last
    /// [`Metrics::sample`]).
    pub fn app_counters(&self, app: &str) -> AppCounters {
        let labels = AppLabels { app: app.into() };
        let kinds = self
            .sample
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kinds
            .clone();
        let instance_seconds = kinds
            .into_iter()
            .filter_map(|kind| {
                let labels = AppKindLabels {
                    app: app.into(),
                    kind: kind.into(),
                };
                self.instance_seconds.get(&labels).map(|c| c.get())
            })
            .sum();
        AppCounters {
            requests: self.app_requests.get(&labels).map_or(0, |c| c.get()),
            latency: self
                .request_duration
                .get(&labels)
                .map(|h| h.buckets())
                .unwrap_or_else(|| request_histogram().buckets()),
            instance_seconds,
            cpu_seconds: self.cpu_seconds.get(&labels).map(|c| c.get()),
            memory_gb_seconds: self.memory_gb_seconds.get(&labels).map(|c| c.get()),
        }
    }

    /// Instances of `kind` started, and how long they took.
    pub fn cold_starts(&self, kind: &str) -> (u64, Buckets) {
        let labels = KindLabels { kind: kind.into() };
        let count = self.cold_starts.get(&labels).map_or(0, |c| c.get());
        let durations = self
            .cold_start_duration
            .get(&labels)
            .map(|h| h.buckets())
            .unwrap_or_else(|| cold_start_histogram().buckets());
        (count, durations)
    }

    /// Samples every `every` until `snapshot` returns `None` (the server is
    /// gone) or the task is aborted.
    pub fn spawn_sampler<F>(
        self: &Arc<Self>,
        every: Duration,
        snapshot: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Option<Vec<AppSnapshot>> + Send + 'static,
    {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let (Some(metrics), Some(apps)) = (me.upgrade(), snapshot()) else {
                    return;
                };
                metrics.sample(&apps);
            }
        })
    }

    /// Everything in the Prometheus text format (version 0.0.4,
    /// [`PROMETHEUS_CONTENT_TYPE`]), gauges from `apps`.
    pub fn render(&self, apps: &[AppSnapshot]) -> String {
        self.sample(apps);
        let gauges = gauges(apps);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_text::encode(&mut out, &gauges);
        out
    }

    /// Everything in the OpenMetrics text format
    /// ([`OPENMETRICS_CONTENT_TYPE`]), gauges from `apps`.
    pub fn render_openmetrics(&self, apps: &[AppSnapshot]) -> String {
        self.sample(apps);
        let gauges = gauges(apps);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = text::encode_registry(&mut out, &self.registry);
        let _ = text::encode_registry(&mut out, &gauges);
        let _ = text::encode_eof(&mut out);
        out
    }
}

/// The point-in-time gauges of `apps`.
fn gauges(apps: &[AppSnapshot]) -> Registry {
    let mut registry = Registry::with_prefix("berth");
    let instances = Family::<InstanceLabels, Gauge>::default();
    let queue = Family::<AppLabels, Gauge>::default();
    let in_flight = Family::<AppLabels, Gauge>::default();
    let traffic = Family::<RevisionLabels, Gauge>::default();
    let failed = Family::<AppLabels, Gauge>::default();
    let stock_hits = Family::<RevisionLabels, Counter>::default();
    let stock_misses = Family::<RevisionLabels, Counter>::default();
    let stocked = Family::<RevisionLabels, Gauge>::default();
    let live = Family::<RevisionLabels, Gauge>::default();
    let opened = Family::<AppLabels, Counter>::default();
    let reused = Family::<AppLabels, Counter>::default();
    let refused = Family::<AppLabels, Counter>::default();
    let idle = Family::<AppLabels, Gauge>::default();
    for app in apps {
        if app.deploy_failed {
            failed
                .get_or_create(&AppLabels {
                    app: app.name.clone(),
                })
                .set(1);
        }
        let name = &app.name;
        let (mut queued, mut serving) = (0_i64, 0_i64);
        for revision in &app.revisions {
            for (state, n) in [
                ("ready", revision.ready),
                ("starting", revision.starting),
                ("desired", revision.desired),
            ] {
                instances
                    .get_or_create(&InstanceLabels {
                        app: name.clone(),
                        revision: revision.id.clone(),
                        state,
                    })
                    .set(i64::from(n));
            }
            traffic
                .get_or_create(&RevisionLabels {
                    app: name.clone(),
                    revision: revision.id.clone(),
                })
                .set(i64::from(revision.traffic_percent));
            if let Some(stock) = revision.stock {
                let labels = RevisionLabels {
                    app: name.clone(),
                    revision: revision.id.clone(),
                };
                stock_hits.get_or_create(&labels).inc_by(stock.hits);
                stock_misses.get_or_create(&labels).inc_by(stock.misses);
                stocked.get_or_create(&labels).set(i64::from(stock.stocked));
                live.get_or_create(&labels).set(i64::from(stock.live));
            }
            queued += i64::try_from(revision.queued).unwrap_or(i64::MAX);
            serving += i64::try_from(revision.in_flight).unwrap_or(i64::MAX);
        }
        let labels = AppLabels { app: name.clone() };
        queue.get_or_create(&labels).set(queued);
        in_flight.get_or_create(&labels).set(serving);
        // Per app: the sum over its revisions (each has its own pool).
        let outbound = app.revisions.iter().filter_map(|r| r.outbound);
        let mut total: Option<OutboundSnapshot> = None;
        for o in outbound {
            let t = total.get_or_insert_with(OutboundSnapshot::default);
            t.opened += o.opened;
            t.reused += o.reused;
            t.refused += o.refused;
            t.idle += o.idle;
        }
        if let Some(t) = total {
            opened.get_or_create(&labels).inc_by(t.opened);
            reused.get_or_create(&labels).inc_by(t.reused);
            refused.get_or_create(&labels).inc_by(t.refused);
            idle.get_or_create(&labels).set(i64::from(t.idle));
        }
    }
    registry.register(
        "instances",
        "Instances of each revision: ready, starting, and desired by the autoscaler",
        instances,
    );
    registry.register("queue_depth", "Requests waiting for capacity", queue);
    registry.register("in_flight", "Requests being served", in_flight);
    registry.register(
        "traffic_percent",
        "Share of an app's new requests each revision receives",
        traffic,
    );
    registry.register(
        "wasm_stock_hits",
        "Requests that took a pre-instantiated instance from the revision's stock",
        stock_hits,
    );
    registry.register(
        "wasm_stock_misses",
        "Requests that found the revision's stock empty and instantiated their own",
        stock_misses,
    );
    registry.register(
        "wasm_stocked_instances",
        "Pre-instantiated instances in the revision's stock now",
        stocked,
    );
    registry.register(
        "wasm_live_instances",
        "Reusable wasmtime instances of the revision alive now (instance reuse; 0 without)",
        live,
    );
    registry.register(
        "outbound_connections_opened",
        "Outbound connections the app's Wasm guests opened (TCP, with TLS for https)",
        opened,
    );
    registry.register(
        "outbound_connections_reused",
        "Outbound requests of the app's Wasm guests sent on a pooled connection",
        reused,
    );
    registry.register(
        "outbound_requests_refused",
        "Outbound requests of the app's Wasm guests refused by a connection or DNS lookup cap",
        refused,
    );
    registry.register(
        "outbound_idle_connections",
        "Idle outbound connections in the app's pool now",
        idle,
    );
    registry.register(
        "app_deploy_failed",
        "1 for an app that could not be deployed and waits for a retry",
        failed,
    );
    registry
}

/// Formats `apps`' metrics for a scrape whose `Accept` header is `accept`:
/// OpenMetrics when asked for, else the Prometheus text format. Returns the
/// body and its content type.
pub fn negotiate(
    metrics: &Metrics,
    apps: &[AppSnapshot],
    accept: Option<&str>,
) -> (String, &'static str) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (metrics.render_openmetrics(apps), OPENMETRICS_CONTENT_TYPE)
    } else {
        (metrics.render(apps), PROMETHEUS_CONTENT_TYPE)
    }
}

#[cfg(test)]
mod tests;
