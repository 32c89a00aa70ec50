//! Rates and recent latency: the console keeps, per app, the counters it read
//! over the last [`WINDOW`] (pages poll every 2 s), and derives requests per
//! second and recent percentiles from the oldest one kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::{AppCounters, Buckets};

/// Readings kept per app for rates and recent latency.
const WINDOW: Duration = Duration::from_secs(30);
/// Most readings kept per app.
const MAX_READINGS: usize = 64;

/// What the console shows of an app's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Figures {
    pub(super) requests: u64,
    /// Requests per second over the window (none before a second of it).
    pub(super) rate: Option<f64>,
    pub(super) p50_ms: Option<f64>,
    pub(super) p99_ms: Option<f64>,
    pub(super) cpu_seconds: Option<f64>,
    pub(super) gb_seconds: Option<f64>,
    pub(super) instance_seconds: f64,
}

/// One reading of an app's request counter and latency histogram.
struct Reading {
    at: Instant,
    requests: u64,
    latency: Buckets,
}

/// The readings of every app shown lately.
#[derive(Default)]
pub(super) struct Window(Mutex<HashMap<String, VecDeque<Reading>>>);

impl Window {
    /// The figures of `app` from `counters` read now, with a rate and recent
    /// latency against the readings kept; keeps this reading.
    pub(super) fn figures(&self, app: &str, counters: AppCounters) -> Figures {
        self.figures_at(Instant::now(), app, counters)
    }

    fn figures_at(&self, now: Instant, app: &str, counters: AppCounters) -> Figures {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let series = kept.entry(app.to_string()).or_default();
        while series.front().is_some_and(|s| now - s.at > WINDOW) || series.len() > MAX_READINGS {
            series.pop_front();
        }
        let (rate, recent) = match series.front() {
            Some(old) if now - old.at >= Duration::from_secs(1) => {
                let secs = (now - old.at).as_secs_f64();
                let more = counters.requests.saturating_sub(old.requests);
                (
                    Some(more as f64 / secs),
                    counters.latency.since(&old.latency),
                )
            }
            _ => (None, counters.latency.clone()),
        };
        series.push_back(Reading {
            at: now,
            requests: counters.requests,
            latency: counters.latency,
        });
        drop(kept);
        let ms = |q| recent.quantile(q).map(|s| s * 1000.0);
        Figures {
            requests: counters.requests,
            rate,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            cpu_seconds: counters.cpu_seconds,
            gb_seconds: counters.memory_gb_seconds,
            instance_seconds: counters.instance_seconds,
        }
    }

    /// Forgets the readings of apps not in `names`.
    pub(super) fn keep_only<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let names: std::collections::HashSet<&str> = names.collect();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| names.contains(name.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(requests: u64, fast: u64, slow: u64) -> AppCounters {
        AppCounters {
            requests,
            latency: Buckets(vec![
                (0.001, fast),
                (0.1, fast + slow),
                (f64::INFINITY, fast + slow),
            ]),
            ..AppCounters::default()
        }
    }

    #[test]
    fn rates_and_percentiles_cover_the_window_only() {
        let w = Window::default();
        let t = Instant::now();
        let first = w.figures_at(t, "a", counters(100, 100, 0));
        assert_eq!(first.rate, None, "no rate from one reading");
        assert!(first.p99_ms.unwrap() <= 1.0, "{first:?}");
        // Ten seconds later: 20 more requests, all slow.
        let later = w.figures_at(t + Duration::from_secs(10), "a", counters(120, 100, 20));
        assert_eq!(later.requests, 120);
        assert_eq!(later.rate, Some(2.0));
        assert!(later.p50_ms.unwrap() > 1.0, "only the window's: {later:?}");
        // Past the window, the old readings go.
        let much_later = w.figures_at(t + Duration::from_secs(60), "a", counters(120, 100, 20));
        assert_eq!(much_later.rate, None, "{much_later:?}");
        w.keep_only(["b"].into_iter());
        assert!(w.0.lock().unwrap().is_empty());
    }
}
