//! A histogram that both a scrape and a typed reader can read: the same
//! buckets encode as a Prometheus histogram and read back as [`Buckets`]
//! (for the console's percentiles), so nobody parses the text format back.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Cumulative histogram buckets: `(upper bound in seconds, observations at
/// or below it)`, by bound, the last bound `+∞`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, u64)>);

impl Buckets {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.0.last().map_or(0, |b| b.1)
    }

    /// The `q` quantile, interpolated linearly inside the bucket it falls in
    /// (as Prometheus' `histogram_quantile` does); `None` without
    /// observations. A quantile in the `+Inf` bucket is the largest finite
    /// bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count() as f64;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(bound, count) in &self.0 {
            let count = count as f64;
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower);
                }
                let inside = count - below;
                let fraction = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return Some(lower + (bound - lower) * fraction);
            }
            lower = bound;
            below = count;
        }
        Some(lower)
    }

    /// The observations made since `then` (an earlier reading of the same
    /// histogram), bucket by bucket.
    #[must_use]
    pub fn since(&self, then: &Buckets) -> Buckets {
        if self.0.len() != then.0.len() {
            return self.clone();
        }
        Buckets(
            self.0
                .iter()
                .zip(&then.0)
                .map(|(a, b)| (a.0, a.1.saturating_sub(b.1)))
                .collect(),
        )
    }
}

/// A histogram of durations in seconds over fixed bounds.
#[derive(Debug, Clone)]
pub struct Latency {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    sum: f64,
    count: u64,
    /// `(upper bound, observations in this bucket alone)`; the last bound
    /// is `+∞`, which the encoders write as `+Inf`.
    buckets: Vec<(f64, u64)>,
}

impl Latency {
    /// An empty histogram over `bounds` (ascending), plus `+Inf`.
    pub fn new(bounds: &[f64]) -> Self {
        let buckets = bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        Self {
            inner: Arc::new(Mutex::new(Inner {
                sum: 0.0,
                count: 0,
                buckets,
            })),
        }
    }

    /// Counts one observation of `seconds`.
    pub fn observe(&self, seconds: f64) {
        let mut inner = self.lock();
        inner.sum += seconds;
        inner.count += 1;
        // (A NaN is counted in the last bucket, as prometheus-client does.)
        let at = inner.buckets.iter().position(|(b, _)| *b >= seconds);
        let last = inner.buckets.len() - 1;
        inner.buckets[at.unwrap_or(last)].1 += 1;
    }

    /// The cumulative buckets now.
    pub fn buckets(&self) -> Buckets {
        let inner = self.lock();
        let mut total = 0;
        Buckets(
            inner
                .buckets
                .iter()
                .map(|&(bound, n)| {
                    total += n;
                    (bound, total)
                })
                .collect(),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let inner = self.lock();
        encoder.encode_histogram::<NoLabelSet>(inner.sum, inner.count, &inner.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let b = Buckets(vec![(0.01, 0), (0.1, 10), (1.0, 10), (f64::INFINITY, 10)]);
        let p50 = b.quantile(0.5).unwrap();
        assert!((p50 - 0.055).abs() < 1e-9, "{p50}");
        assert_eq!(
            Buckets(vec![(0.1, 0), (f64::INFINITY, 0)]).quantile(0.5),
            None
        );
        let tail = Buckets(vec![(0.1, 0), (f64::INFINITY, 2)]);
        assert_eq!(tail.quantile(0.99), Some(0.1));
    }

    #[test]
    fn observations_read_back_cumulative_and_since() {
        let h = Latency::new(&[0.001, 0.01]);
        h.observe(0.0005);
        let then = h.buckets();
        h.observe(0.005);
        h.observe(5.0);
        let now = h.buckets();
        assert_eq!(
            now,
            Buckets(vec![(0.001, 1), (0.01, 2), (f64::INFINITY, 3)])
        );
        assert_eq!(
            now.since(&then),
            Buckets(vec![(0.001, 0), (0.01, 1), (f64::INFINITY, 2)])
        );
    }
}
