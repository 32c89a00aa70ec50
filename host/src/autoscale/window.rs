//! Per-second buckets of concurrency samples, and their averages over a window.
//!
//! Samples recorded within the same second (counted from the window's origin)
//! fall into one bucket whose value is their mean. The average over a window
//! of `n` seconds ending at `now` covers the buckets `now − n + 1 ..= now`
//! (in whole seconds), restricted to the *written span*: from the first to the
//! last bucket written inside that range. Unwritten seconds inside the span
//! count as 0; unwritten seconds before the first write (start-up) or after the
//! last one (the current second not sampled yet) are left out, as Knative's
//! `TimedFloat64Buckets::WindowAverage` does. A window with no written bucket
//! averages to 0.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The width of one bucket.
pub const BUCKET: Duration = Duration::from_secs(1);

/// How many one-second buckets a window of this length spans: the length
/// rounded up to whole seconds, and at least 1.
pub fn window_buckets(window: Duration) -> u64 {
    let secs = window.as_secs() + u64::from(window.subsec_nanos() > 0);
    secs.max(1)
}

/// Concurrency samples kept in one-second buckets for the longest window of
/// interest (the retention); older buckets are dropped as newer ones arrive.
#[derive(Debug, Clone)]
pub struct ConcurrencyWindow {
    /// Time zero; bucket `k` holds samples taken in `[origin + k s, origin + (k+1) s)`.
    origin: Instant,
    /// Number of buckets kept, counted back from the newest written one.
    retention: u64,
    /// Written buckets, oldest first, seconds strictly increasing.
    buckets: VecDeque<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    second: u64,
    sum: f64,
    count: u32,
}

impl Bucket {
    fn value(&self) -> f64 {
        self.sum / f64::from(self.count)
    }
}

impl ConcurrencyWindow {
    /// An empty window whose buckets count seconds from `origin`, keeping
    /// enough history to average over `retention`.
    pub fn new(origin: Instant, retention: Duration) -> Self {
        Self {
            origin,
            retention: window_buckets(retention),
            buckets: VecDeque::new(),
        }
    }

    /// The bucket (whole seconds since the origin) that `t` falls in; instants
    /// before the origin fall in bucket 0.
    fn second(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_secs()
    }

    /// Adds a sample taken at `now`. Non-finite values are ignored and
    /// negative ones count as 0. A sample older than the retention, counted
    /// back from the newest bucket, is ignored.
    pub fn record(&mut self, now: Instant, value: f64) {
        if !value.is_finite() {
            return;
        }
        let value = value.max(0.0);
        let second = self.second(now);
        if let Some(newest) = self.buckets.back()
            && second + self.retention <= newest.second
        {
            return;
        }
        match self.buckets.binary_search_by_key(&second, |b| b.second) {
            Ok(i) => {
                let bucket = &mut self.buckets[i];
                bucket.sum += value;
                bucket.count += 1;
            }
            Err(i) => self.buckets.insert(
                i,
                Bucket {
                    second,
                    sum: value,
                    count: 1,
                },
            ),
        }
        let newest = self.buckets.back().map_or(second, |b| b.second);
        while let Some(front) = self.buckets.front()
            && front.second + self.retention <= newest
        {
            self.buckets.pop_front();
        }
    }

    /// The average over the `window` (rounded up to whole seconds) ending at
    /// `now`, as described in the module documentation. Windows longer than
    /// the retention see only the retained buckets.
    pub fn average(&self, now: Instant, window: Duration) -> f64 {
        let end = self.second(now);
        let start = (end + 1).saturating_sub(window_buckets(window));
        let mut span: Option<(u64, u64)> = None;
        let mut sum = 0.0;
        for bucket in self
            .buckets
            .iter()
            .filter(|b| (start..=end).contains(&b.second))
        {
            sum += bucket.value();
            span = Some(match span {
                None => (bucket.second, bucket.second),
                Some((first, _)) => (first, bucket.second),
            });
        }
        match span {
            None => 0.0,
            Some((first, last)) => sum / (last - first + 1) as f64,
        }
    }

    #[cfg(test)]
    fn bucket_count(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn window_lengths_round_up_to_whole_seconds() {
        assert_eq!(window_buckets(Duration::from_secs(6)), 6);
        assert_eq!(window_buckets(secs(6.5)), 7);
        assert_eq!(window_buckets(Duration::from_millis(1)), 1);
        assert_eq!(window_buckets(Duration::ZERO), 1);
    }

    #[test]
    fn samples_within_one_second_are_averaged() {
        let o = Instant::now();
        let mut w = ConcurrencyWindow::new(o, MINUTE);
        w.record(o + secs(0.2), 1.0);
        w.record(o + secs(0.7), 3.0);
        assert_eq!(w.average(o + secs(0.9), MINUTE), 2.0);
        assert_eq!(w.bucket_count(), 1);
    }

    #[test]
    fn start_up_averages_over_the_written_span_only() {
        let o = Instant::now();
        let mut w = ConcurrencyWindow::new(o, MINUTE);
        w.record(o, 4.0);
        w.record(o + secs(1.0), 8.0);
        // Two buckets written, not 60: (4 + 8) / 2.
        assert_eq!(w.average(o + secs(1.0), MINUTE), 6.0);
    }

    #[test]
    fn gaps_inside_the_span_count_as_zero() {
        let o = Instant::now();
        let mut w = ConcurrencyWindow::new(o, MINUTE);
        w.record(o, 6.0);
        w.record(o + secs(2.0), 0.0);
        assert_eq!(w.average(o + secs(2.0), MINUTE), 2.0);
    }

    #[test]
    fn unsampled_trailing_seconds_are_left_out() {
        let o = Instant::now();
        let mut w = ConcurrencyWindow::new(o, MINUTE);
        for s in 0..=2 {
            w.record(o + secs(f64::from(s)), 6.0);
        }
        assert_eq!(w.average(o + secs(3.5), MINUTE), 6.0);
    }

    #[test]
    fn a_window_without_samples_averages_zero() {
        let o = Instant::now();
        let mut w = ConcurrencyWindow::new(o, MINUTE);
        assert_eq!(w.average(o, MINUTE), 0.0);
        w.record(o, 6.0);
        // Bucket 0 is inside [0, 59] but not inside [1, 60].
        assert_eq!(w.average(o + secs(59.9), MINUTE), 6.0);
        assert_eq!(w.average(o + secs(60.0), MINUTE), 0.0);
    }

    #[test]
    fn a_short_window_sees_only_its_own_seconds() {
        let o = Instant::now();
        let mut w = ConcurrencyWindow::new(o, MINUTE);
        for s in 0..10 {
            w.record(o + secs(f64::from(s)), f64::from(s));
        }
        assert_eq!(w.average(o + secs(9.0), secs(3.0)), 8.0);
        assert_eq!(w.average(o + secs(9.0), MINUTE), 4.5);
    }

    #[test]
    fn old_buckets_are_dropped_and_old_samples_ignored() {
        let o = Instant::now();
        let mut w = ConcurrencyWindow::new(o, Duration::from_secs(10));
        for s in 0..=100 {
            w.record(o + secs(f64::from(s)), 1.0);
        }
        assert_eq!(w.bucket_count(), 10);
        // Bucket 50 is far older than the retention: ignored.
        w.record(o + secs(50.0), 1000.0);
        assert_eq!(w.bucket_count(), 10);
        assert_eq!(w.average(o + secs(100.0), Duration::from_secs(10)), 1.0);
        // Bucket 95 is still retained: a late sample lands in it.
        w.record(o + secs(95.5), 11.0);
        assert_eq!(w.average(o + secs(100.0), Duration::from_secs(10)), 1.5);
    }

    #[test]
    fn a_late_sample_fills_a_gap() {
        let o = Instant::now();
        let mut w = ConcurrencyWindow::new(o, MINUTE);
        w.record(o, 3.0);
        w.record(o + secs(2.0), 3.0);
        assert_eq!(w.average(o + secs(2.0), MINUTE), 2.0);
        w.record(o + secs(1.0), 3.0);
        assert_eq!(w.average(o + secs(2.0), MINUTE), 3.0);
    }

    #[test]
    fn bad_values_are_ignored_or_floored() {
        let o = Instant::now();
        let mut w = ConcurrencyWindow::new(o, MINUTE);
        w.record(o, f64::NAN);
        w.record(o, f64::INFINITY);
        assert_eq!(w.bucket_count(), 0);
        w.record(o, -5.0);
        w.record(o, 4.0);
        assert_eq!(w.average(o, MINUTE), 2.0);
    }
}
