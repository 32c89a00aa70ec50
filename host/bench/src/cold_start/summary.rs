//! Summaries: the raw samples turned into the [`Report`] (medians,
//! percentiles, ratios) and the chart's series.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ColdStartOptions;
use super::sample::{ColdSample, Measured, WarmSeries};
use crate::report::{
    BaselineReport, HostInfo, KindReport, ProxyReport, Report, Stats, definitions,
};

fn stats_map<K: AsRef<str>>(
    m: impl IntoIterator<Item = (K, Vec<Duration>)>,
) -> BTreeMap<String, Stats> {
    m.into_iter()
        .filter_map(|(k, v)| Some((k.as_ref().to_owned(), Stats::of(&v)?)))
        .collect()
}

fn kind_report(cold: &[ColdSample], warm: &WarmSeries, paused: &[Duration]) -> KindReport {
    let first: Vec<Duration> = cold.iter().map(|s| s.first_byte).collect();
    let mut phases: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for s in cold {
        for (k, d) in &s.split {
            phases.entry(k).or_default().push(*d);
        }
    }
    let counts = |v: &[u64]| Stats::of_us(v.iter().map(|&n| n as f64).collect());
    let cold_faults: Vec<u64> = cold.iter().map(|s| s.faults).collect();
    let cold_start_us = Stats::of(&first).unwrap_or_else(empty);
    let warm_us = Stats::of(&warm.first_byte).unwrap_or_else(empty);
    let warm_after_pause_us = Stats::of(paused).unwrap_or_else(empty);
    KindReport {
        cold_to_paused_warm_p50: cold_start_us.p50 / warm_after_pause_us.p50,
        cold_to_warm_p50: cold_start_us.p50 / warm_us.p50,
        cold_start_us,
        warm_us,
        warm_after_pause_us,
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
    pub(super) fn report(self, opts: &ColdStartOptions, host: HostInfo) -> Report {
        let mut wasm = kind_report(&self.wasm_cold, &self.wasm_warm, &self.wasm_paused);
        wasm.load_phases_us = Some(stats_map(self.wasm_load));
        let mut container = kind_report(&self.ctr_cold, &self.ctr_warm, &self.ctr_paused);
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
pub fn chart_series(report: &Report) -> Vec<crate::svg::Series> {
    let mut series = vec![
        crate::svg::Series {
            label: "Wasm component".into(),
            stats: report.wasm.cold_start_us.clone(),
        },
        crate::svg::Series {
            label: "container (berth)".into(),
            stats: report.container.cold_start_us.clone(),
        },
    ];
    if let Some(b) = &report.baseline_runc {
        series.push(crate::svg::Series {
            label: "container (bare runc)".into(),
            stats: b.cold_start_us.clone(),
        });
    }
    series
}
