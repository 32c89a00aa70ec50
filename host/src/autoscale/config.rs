//! [`KpaConfig`]: the autoscaler's knobs, their defaults, how the
//! per-instance target is resolved, and validation. It is the one autoscaling
//! configuration of berth: an app's spec carries it, the config file, the
//! admin API and the restored state all validate it here, and the revision
//! hands it to [`Kpa`](super::Kpa) as it is.

use std::ops::RangeInclusive;
use std::time::Duration;

// A refused setting is the one error of every settings check, a leaf type
// of the engine's; its key here is the field as an app's settings name it.
use berth_wasm::InvalidSetting;

/// Soft concurrency target per instance when neither `target` nor a hard
/// `concurrency` limit is set (Knative's `container-concurrency-target-default`).
pub const DEFAULT_TARGET: f64 = 100.0;
/// Share of the target the autoscaler aims for (Knative's
/// `container-concurrency-target-percentage`, 70 %).
pub const DEFAULT_UTILIZATION: f64 = 0.7;
/// Knative's `stable-window`.
pub const DEFAULT_STABLE_WINDOW: Duration = Duration::from_secs(60);
/// Knative's `panic-window-percentage`: the panic window is this share of the
/// stable window.
pub const DEFAULT_PANIC_WINDOW_PERCENTAGE: f64 = 10.0;
/// Knative's `panic-threshold-percentage`.
pub const DEFAULT_PANIC_THRESHOLD_PERCENTAGE: f64 = 200.0;
/// Knative's `max-scale-up-rate`.
pub const DEFAULT_MAX_SCALE_UP_RATE: f64 = 1000.0;
/// Knative's `max-scale-down-rate`.
pub const DEFAULT_MAX_SCALE_DOWN_RATE: f64 = 2.0;
/// Knative's `initial-scale`.
pub const DEFAULT_INITIAL_SCALE: u32 = 1;
/// Most instances of one app unless it says otherwise: Cloud Run's default
/// maximum (Knative's is unbounded; berth never is).
pub const DEFAULT_MAX_SCALE: u32 = 100;
/// Knative's `scale-to-zero-grace-period`.
pub const DEFAULT_SCALE_TO_ZERO_GRACE: Duration = Duration::from_secs(30);
/// How often berth samples and decides. Knative decides every 2 s
/// (`tickInterval`); berth samples once a second, which its one-second
/// buckets want, and decides at every sample.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
/// Knative's `target-burst-capacity`.
pub const DEFAULT_TARGET_BURST_CAPACITY: f64 = 200.0;
/// The per-instance target never goes below this (Knative's `TargetMin`).
pub const MIN_PER_INSTANCE_TARGET: f64 = 0.01;

/// Allowed `concurrency` (0 = unbounded; Cloud Run's maximum is 1000).
pub const CONCURRENCY_RANGE: RangeInclusive<u32> = 0..=1000;
/// Allowed `target` (Knative's minimum is 0.01).
pub const TARGET_RANGE: RangeInclusive<f64> = 0.01..=10_000.0;
/// Allowed `utilization` (Knative: 1 % to 100 %).
pub const UTILIZATION_RANGE: RangeInclusive<f64> = 0.01..=1.0;
/// Allowed `stable_window` (Knative: 6 s to 1 h; berth allows 1 s so tests
/// can shorten it).
pub const STABLE_WINDOW_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
/// Allowed `panic_window_percentage` (Knative: 1 to 100).
pub const PANIC_WINDOW_PERCENTAGE_RANGE: RangeInclusive<f64> = 1.0..=100.0;
/// Allowed `panic_threshold_percentage` (Knative: 110 to 1000).
pub const PANIC_THRESHOLD_PERCENTAGE_RANGE: RangeInclusive<f64> = 110.0..=1000.0;
/// Allowed `max_scale_up_rate` (above 1, or the count could never grow).
pub const MAX_SCALE_UP_RATE_RANGE: RangeInclusive<f64> = 1.000_001..=10_000.0;
/// Allowed `max_scale_down_rate` (above 1: a rate below 1 would make the
/// "lower bound" `ready / rate` exceed `ready` and grow the count every
/// decision).
pub const MAX_SCALE_DOWN_RATE_RANGE: RangeInclusive<f64> = 1.000_001..=10_000.0;
/// Allowed `max_scale`.
pub const MAX_SCALE_RANGE: RangeInclusive<u32> = 1..=10_000;
/// Allowed `scale_to_zero_grace` and `scale_down_delay`.
pub const DELAY_RANGE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);
/// Allowed `tick` (an hour makes only the activator's pokes decide, which
/// `berth bench` uses).
pub const TICK_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(3600);

/// How one app is autoscaled. [`Default`] gives Knative's defaults (with
/// berth's finite [`DEFAULT_MAX_SCALE`] and one-second [`DEFAULT_TICK`]);
/// override what the app sets, then [`validate`](KpaConfig::validate).
#[derive(Debug, Clone, PartialEq)]
pub struct KpaConfig {
    /// The hard limit of requests one instance serves at once (Knative's
    /// `containerConcurrency`), 0 = unbounded. `None` leaves it to whoever
    /// runs the instances (berth: unbounded for Wasm, 80 for containers);
    /// the autoscaler reads `None` as 0.
    pub concurrency: Option<u32>,
    /// Soft concurrency target per instance; `None` = from `concurrency`
    /// (see [`KpaConfig::resolve_target`]). The autoscaler aims at
    /// `target × utilization` per instance.
    pub target: Option<f64>,
    /// Share of `target` aimed for, in (0, 1].
    pub utilization: f64,
    /// Window the steady-state average is taken over.
    pub stable_window: Duration,
    /// Panic window as a percentage of the stable window, in (0, 100].
    pub panic_window_percentage: f64,
    /// Panic mode starts when the panic window asks for this percentage of the
    /// ready instances or more.
    pub panic_threshold_percentage: f64,
    /// One decision asks for at most `ceil(rate × ready)` instances.
    pub max_scale_up_rate: f64,
    /// One decision asks for at least `floor(ready / rate)` instances.
    pub max_scale_down_rate: f64,
    /// Never fewer instances than this; 0 allows scaling to zero.
    pub min_scale: u32,
    /// Never more instances than this.
    pub max_scale: u32,
    /// Instances asked for at creation, until that many have been ready once.
    pub initial_scale: u32,
    /// After the stable window has gone without traffic, the last instance
    /// stays this much longer before the app goes to zero.
    pub scale_to_zero_grace: Duration,
    /// A decrease takes effect only once it has been the largest count asked
    /// for during this long (0 = at once).
    pub scale_down_delay: Duration,
    /// How often the caller samples and asks for a decision. The algorithm
    /// does not depend on it; it is here so the host's loop reads it from one
    /// place.
    pub tick: Duration,
    /// Spare capacity (in requests) the app should keep for bursts; only used
    /// for [`Decision::excess_burst_capacity`](super::Decision). 0 disables
    /// the computation, −1 means unlimited.
    pub target_burst_capacity: f64,
}

impl Default for KpaConfig {
    fn default() -> Self {
        Self {
            concurrency: None,
            target: None,
            utilization: DEFAULT_UTILIZATION,
            stable_window: DEFAULT_STABLE_WINDOW,
            panic_window_percentage: DEFAULT_PANIC_WINDOW_PERCENTAGE,
            panic_threshold_percentage: DEFAULT_PANIC_THRESHOLD_PERCENTAGE,
            max_scale_up_rate: DEFAULT_MAX_SCALE_UP_RATE,
            max_scale_down_rate: DEFAULT_MAX_SCALE_DOWN_RATE,
            min_scale: 0,
            max_scale: DEFAULT_MAX_SCALE,
            initial_scale: DEFAULT_INITIAL_SCALE,
            scale_to_zero_grace: DEFAULT_SCALE_TO_ZERO_GRACE,
            scale_down_delay: Duration::ZERO,
            tick: DEFAULT_TICK,
            target_burst_capacity: DEFAULT_TARGET_BURST_CAPACITY,
        }
    }
}

impl KpaConfig {
    /// The defaults with a hard `concurrency` limit (0 = unbounded) and an
    /// optional soft `target`.
    pub fn for_concurrency(concurrency: u32, target: Option<f64>) -> Self {
        Self {
            concurrency: Some(concurrency),
            target,
            ..Self::default()
        }
    }

    /// The soft target: `target` if set, else `concurrency` if it is not 0,
    /// else [`DEFAULT_TARGET`]. As in Knative, a set `target` above a non-zero
    /// `concurrency` is lowered to it: an instance cannot be asked to hold
    /// more requests than it admits.
    pub fn resolve_target(concurrency: u32, target: Option<f64>) -> f64 {
        let hard = f64::from(concurrency);
        match target {
            Some(t) if concurrency > 0 => t.min(hard),
            Some(t) => t,
            None if concurrency > 0 => hard,
            None => DEFAULT_TARGET,
        }
    }

    /// This configuration's soft target (see [`KpaConfig::resolve_target`]).
    pub fn resolved_target(&self) -> f64 {
        Self::resolve_target(self.concurrency.unwrap_or(0), self.target)
    }

    /// What one instance is aimed to hold: `max(0.01, target × utilization)`.
    pub fn per_instance_target(&self) -> f64 {
        let t = self.resolved_target() * self.utilization;
        if t.is_nan() {
            MIN_PER_INSTANCE_TARGET
        } else {
            t.max(MIN_PER_INSTANCE_TARGET)
        }
    }

    /// `stable_window × panic_window_percentage / 100`, to the nanosecond. A
    /// percentage outside (0, 100] is taken as 100 (validation refuses it).
    pub fn panic_window(&self) -> Duration {
        let pct = self.panic_window_percentage;
        if !(pct > 0.0 && pct <= 100.0) {
            return self.stable_window;
        }
        let nanos = (self.stable_window.as_nanos() as f64 * pct / 100.0).round();
        Duration::from_nanos(nanos as u64)
    }

    /// `panic_threshold_percentage / 100`, the ratio of desired (over the
    /// panic window) to ready instances that starts panic mode.
    pub fn panic_threshold(&self) -> f64 {
        self.panic_threshold_percentage / 100.0
    }

    /// Checks every field against its documented range (the `*_RANGE`
    /// constants); the error names the key and says what is allowed. Ranges
    /// follow Knative's, except that windows may be as short as 1 s so tests
    /// can shorten them (a panic window under a second averages the current
    /// second: windows are whole one-second buckets) and that `max_scale` is
    /// always finite.
    ///
    /// # Errors
    /// The first setting out of range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        fn refuse(key: &'static str, reason: String) -> Result<(), InvalidSetting> {
            Err(InvalidSetting::new(key, reason))
        }
        fn within(
            key: &'static str,
            v: f64,
            range: &RangeInclusive<f64>,
        ) -> Result<(), InvalidSetting> {
            if range.contains(&v) {
                Ok(())
            } else {
                refuse(
                    key,
                    format!(
                        "{key} must be in [{}, {}] (got {v})",
                        range.start(),
                        range.end()
                    ),
                )
            }
        }
        fn span(
            key: &'static str,
            v: Duration,
            range: &RangeInclusive<Duration>,
        ) -> Result<(), InvalidSetting> {
            if range.contains(&v) {
                Ok(())
            } else {
                refuse(
                    key,
                    format!(
                        "{key} must be from {:?} to {:?} (got {v:?})",
                        range.start(),
                        range.end()
                    ),
                )
            }
        }
        if let Some(c) = self.concurrency
            && !CONCURRENCY_RANGE.contains(&c)
        {
            return refuse(
                "concurrency",
                format!(
                    "concurrency must be at most {} (got {c}; 0 = unbounded)",
                    CONCURRENCY_RANGE.end()
                ),
            );
        }
        if let Some(t) = self.target {
            within("target", t, &TARGET_RANGE)?;
        }
        within("utilization", self.utilization, &UTILIZATION_RANGE)?;
        span("stable_window", self.stable_window, &STABLE_WINDOW_RANGE)?;
        within(
            "panic_window_percentage",
            self.panic_window_percentage,
            &PANIC_WINDOW_PERCENTAGE_RANGE,
        )?;
        within(
            "panic_threshold_percentage",
            self.panic_threshold_percentage,
            &PANIC_THRESHOLD_PERCENTAGE_RANGE,
        )?;
        for (key, rate, range) in [
            (
                "max_scale_up_rate",
                self.max_scale_up_rate,
                &MAX_SCALE_UP_RATE_RANGE,
            ),
            (
                "max_scale_down_rate",
                self.max_scale_down_rate,
                &MAX_SCALE_DOWN_RATE_RANGE,
            ),
        ] {
            if !range.contains(&rate) {
                return refuse(
                    key,
                    format!(
                        "{key} must be greater than 1 and at most {} (got {rate})",
                        range.end()
                    ),
                );
            }
        }
        if !MAX_SCALE_RANGE.contains(&self.max_scale) {
            return refuse(
                "max_scale",
                format!(
                    "max_scale must be from {} to {} (got {})",
                    MAX_SCALE_RANGE.start(),
                    MAX_SCALE_RANGE.end(),
                    self.max_scale
                ),
            );
        }
        if self.min_scale > self.max_scale {
            return refuse(
                "min_scale",
                format!(
                    "min_scale ({}) must not exceed max_scale ({})",
                    self.min_scale, self.max_scale
                ),
            );
        }
        if self.initial_scale > self.max_scale {
            return refuse(
                "initial_scale",
                format!(
                    "initial_scale ({}) must not exceed max_scale ({})",
                    self.initial_scale, self.max_scale
                ),
            );
        }
        span(
            "scale_to_zero_grace",
            self.scale_to_zero_grace,
            &DELAY_RANGE,
        )?;
        span("scale_down_delay", self.scale_down_delay, &DELAY_RANGE)?;
        span("tick", self.tick, &TICK_RANGE)?;
        if !self.target_burst_capacity.is_finite()
            || (self.target_burst_capacity < 0.0 && self.target_burst_capacity != -1.0)
        {
            return refuse(
                "target_burst_capacity",
                format!(
                    "target_burst_capacity must be at least 0, or -1 for unlimited (got {})",
                    self.target_burst_capacity
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_knatives() {
        let c = KpaConfig::default();
        assert_eq!(c.resolved_target(), 100.0);
        assert_eq!(c.utilization, 0.7);
        assert_eq!(c.per_instance_target(), 70.0);
        assert_eq!(c.stable_window, Duration::from_secs(60));
        assert_eq!(c.panic_window(), Duration::from_secs(6));
        assert_eq!(c.panic_threshold(), 2.0);
        assert_eq!(c.max_scale_up_rate, 1000.0);
        assert_eq!(c.max_scale_down_rate, 2.0);
        assert_eq!((c.min_scale, c.max_scale, c.initial_scale), (0, 100, 1));
        assert_eq!(c.scale_to_zero_grace, Duration::from_secs(30));
        assert_eq!(c.scale_down_delay, Duration::ZERO);
        assert_eq!(c.tick, Duration::from_secs(1));
        assert_eq!(c.target_burst_capacity, 200.0);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn target_resolution() {
        // Nothing set: Knative's default target.
        assert_eq!(KpaConfig::resolve_target(0, None), 100.0);
        // The hard limit becomes the soft target.
        assert_eq!(KpaConfig::resolve_target(1, None), 1.0);
        assert_eq!(KpaConfig::resolve_target(80, None), 80.0);
        // An explicit target wins...
        assert_eq!(KpaConfig::resolve_target(0, Some(7.0)), 7.0);
        assert_eq!(KpaConfig::resolve_target(10, Some(5.0)), 5.0);
        // ...but never above the hard limit.
        assert_eq!(KpaConfig::resolve_target(1, Some(5.0)), 1.0);

        let c = KpaConfig::for_concurrency(1, None);
        assert_eq!(c.resolved_target(), 1.0);
        assert_eq!(c.per_instance_target(), 0.7);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn per_instance_target_has_a_floor() {
        let c = KpaConfig::for_concurrency(0, Some(0.001));
        assert_eq!(c.per_instance_target(), 0.01);
    }

    #[test]
    fn panic_window_is_exact() {
        let mut c = KpaConfig {
            stable_window: Duration::from_secs(70),
            ..KpaConfig::default()
        };
        assert_eq!(c.panic_window(), Duration::from_secs(7));
        c.panic_window_percentage = 12.5;
        assert_eq!(c.panic_window(), Duration::from_millis(8750));
    }

    fn refused(change: impl FnOnce(&mut KpaConfig), needle: &str) {
        let mut c = KpaConfig::default();
        change(&mut c);
        let err = c.validate().expect_err(needle);
        assert!(
            err.reason.contains(needle),
            "{err:?} should mention {needle:?}"
        );
    }

    #[test]
    fn validation_names_the_bad_key() {
        refused(|c| c.target = Some(0.0), "target must be in [0.01, 10000]");
        refused(|c| c.target = Some(f64::NAN), "target must be in");
        refused(
            |c| c.concurrency = Some(1001),
            "concurrency must be at most 1000",
        );
        refused(|c| c.utilization = 0.0, "utilization must be in [0.01, 1]");
        refused(|c| c.utilization = 1.5, "utilization must be in [0.01, 1]");
        refused(
            |c| c.stable_window = Duration::from_millis(500),
            "stable_window must be from 1s to 3600s",
        );
        refused(
            |c| c.panic_window_percentage = 0.0,
            "panic_window_percentage must be in [1, 100]",
        );
        refused(
            |c| c.panic_window_percentage = 101.0,
            "panic_window_percentage must be in [1, 100]",
        );
        refused(
            |c| c.panic_threshold_percentage = 100.0,
            "panic_threshold_percentage must be in [110, 1000]",
        );
        refused(
            |c| c.max_scale_up_rate = 1.0,
            "max_scale_up_rate must be greater than 1",
        );
        refused(
            |c| c.max_scale_down_rate = 0.5,
            "max_scale_down_rate must be greater than 1",
        );
        refused(
            |c| c.max_scale_down_rate = f64::INFINITY,
            "max_scale_down_rate must be greater than 1 and at most 10000",
        );
        refused(|c| c.max_scale = 0, "max_scale must be from 1 to 10000");
        refused(
            |c| {
                c.min_scale = 5;
                c.max_scale = 4;
            },
            "min_scale (5) must not exceed max_scale (4)",
        );
        refused(
            |c| {
                c.initial_scale = 5;
                c.max_scale = 4;
            },
            "initial_scale (5) must not exceed max_scale (4)",
        );
        refused(
            |c| c.tick = Duration::ZERO,
            "tick must be from 10ms to 3600s",
        );
        refused(
            |c| c.scale_to_zero_grace = Duration::from_secs(7200),
            "scale_to_zero_grace must be from 0ns to 3600s",
        );
        refused(
            |c| c.target_burst_capacity = -2.0,
            "target_burst_capacity must be at least 0, or -1",
        );
    }

    #[test]
    fn errors_carry_the_key() {
        let c = KpaConfig {
            max_scale_down_rate: 0.5,
            ..KpaConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "max_scale_down_rate");
    }

    #[test]
    fn burst_capacity_may_be_unlimited() {
        let c = KpaConfig {
            target_burst_capacity: -1.0,
            ..KpaConfig::default()
        };
        assert_eq!(c.validate(), Ok(()));
    }
}
