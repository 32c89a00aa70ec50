//! [`KpaConfig`]: the autoscaler's knobs, their Knative defaults, how the
//! per-instance target is resolved, and validation.

use std::time::Duration;

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
/// Knative's `scale-to-zero-grace-period`.
pub const DEFAULT_SCALE_TO_ZERO_GRACE: Duration = Duration::from_secs(30);
/// Knative's autoscaler tick (`tickInterval`).
pub const DEFAULT_TICK: Duration = Duration::from_secs(2);
/// Knative's `target-burst-capacity`.
pub const DEFAULT_TARGET_BURST_CAPACITY: f64 = 200.0;
/// The per-instance target never goes below this (Knative's `TargetMin`).
pub const MIN_PER_INSTANCE_TARGET: f64 = 0.01;

/// How one app is autoscaled. [`Default`] gives Knative's defaults; use
/// [`KpaConfig::for_concurrency`] to derive the target from the app's hard
/// concurrency limit, then override what the app's `[autoscale]` table sets,
/// then [`validate`](KpaConfig::validate).
#[derive(Debug, Clone, PartialEq)]
pub struct KpaConfig {
    /// Soft concurrency target per instance, already resolved from `target`
    /// or `concurrency` (see [`KpaConfig::resolve_target`]). The autoscaler
    /// aims at `target × utilization` per instance.
    pub target: f64,
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
    /// Never more instances than this; 0 means unbounded.
    pub max_scale: u32,
    /// Instances asked for at creation, until that many have been ready once.
    pub initial_scale: u32,
    /// After the stable window has gone without traffic, the last instance
    /// stays this much longer before the app goes to zero.
    pub scale_to_zero_grace: Duration,
    /// A decrease takes effect only once it has been the largest count asked
    /// for during this long (0 = at once).
    pub scale_down_delay: Duration,
    /// How often the caller asks for a decision. The algorithm does not depend
    /// on it; it is here so the host's loop reads it from one place.
    pub tick: Duration,
    /// Spare capacity (in requests) the app should keep for bursts; only used
    /// for [`Decision::excess_burst_capacity`](super::Decision). 0 disables
    /// the computation, −1 means unlimited.
    pub target_burst_capacity: f64,
}

impl Default for KpaConfig {
    fn default() -> Self {
        Self {
            target: DEFAULT_TARGET,
            utilization: DEFAULT_UTILIZATION,
            stable_window: DEFAULT_STABLE_WINDOW,
            panic_window_percentage: DEFAULT_PANIC_WINDOW_PERCENTAGE,
            panic_threshold_percentage: DEFAULT_PANIC_THRESHOLD_PERCENTAGE,
            max_scale_up_rate: DEFAULT_MAX_SCALE_UP_RATE,
            max_scale_down_rate: DEFAULT_MAX_SCALE_DOWN_RATE,
            min_scale: 0,
            max_scale: 0,
            initial_scale: DEFAULT_INITIAL_SCALE,
            scale_to_zero_grace: DEFAULT_SCALE_TO_ZERO_GRACE,
            scale_down_delay: Duration::ZERO,
            tick: DEFAULT_TICK,
            target_burst_capacity: DEFAULT_TARGET_BURST_CAPACITY,
        }
    }
}

impl KpaConfig {
    /// Knative's defaults with the target resolved from an app's hard
    /// `concurrency` limit (0 = unbounded) and optional soft `target`.
    pub fn for_concurrency(concurrency: u32, target: Option<f64>) -> Self {
        Self {
            target: Self::resolve_target(concurrency, target),
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

    /// What one instance is aimed to hold: `max(0.01, target × utilization)`.
    pub fn per_instance_target(&self) -> f64 {
        let t = self.target * self.utilization;
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

    /// Checks every field; the error names the key and says what is allowed.
    /// Ranges follow Knative's, except that windows may be as short as 1 s so
    /// tests can shorten them.
    pub fn validate(&self) -> Result<(), String> {
        fn finite(name: &str, v: f64) -> Result<(), String> {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be a finite number (got {v})"))
            }
        }
        finite("target", self.target)?;
        if self.target <= 0.0 {
            return Err(format!(
                "target must be greater than 0 (got {})",
                self.target
            ));
        }
        finite("utilization", self.utilization)?;
        if !(self.utilization > 0.0 && self.utilization <= 1.0) {
            return Err(format!(
                "utilization must be in (0, 1] (got {})",
                self.utilization
            ));
        }
        if self.stable_window < Duration::from_secs(1) {
            return Err(format!(
                "stable_window must be at least 1s (got {:?})",
                self.stable_window
            ));
        }
        finite("panic_window_percentage", self.panic_window_percentage)?;
        if !(self.panic_window_percentage > 0.0 && self.panic_window_percentage <= 100.0) {
            return Err(format!(
                "panic_window_percentage must be in (0, 100] (got {})",
                self.panic_window_percentage
            ));
        }
        if self.panic_window() < Duration::from_secs(1) {
            return Err(format!(
                "the panic window (stable_window {:?} × panic_window_percentage {} %) \
                 must be at least 1s (got {:?})",
                self.stable_window,
                self.panic_window_percentage,
                self.panic_window()
            ));
        }
        finite(
            "panic_threshold_percentage",
            self.panic_threshold_percentage,
        )?;
        if !(110.0..=1000.0).contains(&self.panic_threshold_percentage) {
            return Err(format!(
                "panic_threshold_percentage must be in [110, 1000] (got {})",
                self.panic_threshold_percentage
            ));
        }
        finite("max_scale_up_rate", self.max_scale_up_rate)?;
        if self.max_scale_up_rate <= 1.0 {
            return Err(format!(
                "max_scale_up_rate must be greater than 1 (got {})",
                self.max_scale_up_rate
            ));
        }
        finite("max_scale_down_rate", self.max_scale_down_rate)?;
        if self.max_scale_down_rate <= 1.0 {
            return Err(format!(
                "max_scale_down_rate must be greater than 1 (got {})",
                self.max_scale_down_rate
            ));
        }
        if self.max_scale > 0 && self.min_scale > self.max_scale {
            return Err(format!(
                "min_scale ({}) must not exceed max_scale ({})",
                self.min_scale, self.max_scale
            ));
        }
        if self.max_scale > 0 && self.initial_scale > self.max_scale {
            return Err(format!(
                "initial_scale ({}) must not exceed max_scale ({})",
                self.initial_scale, self.max_scale
            ));
        }
        if self.tick.is_zero() {
            return Err("tick must be greater than 0".to_owned());
        }
        finite("target_burst_capacity", self.target_burst_capacity)?;
        if self.target_burst_capacity < 0.0 && self.target_burst_capacity != -1.0 {
            return Err(format!(
                "target_burst_capacity must be at least 0, or -1 for unlimited (got {})",
                self.target_burst_capacity
            ));
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
        assert_eq!(c.target, 100.0);
        assert_eq!(c.utilization, 0.7);
        assert_eq!(c.per_instance_target(), 70.0);
        assert_eq!(c.stable_window, Duration::from_secs(60));
        assert_eq!(c.panic_window(), Duration::from_secs(6));
        assert_eq!(c.panic_threshold(), 2.0);
        assert_eq!(c.max_scale_up_rate, 1000.0);
        assert_eq!(c.max_scale_down_rate, 2.0);
        assert_eq!((c.min_scale, c.max_scale, c.initial_scale), (0, 0, 1));
        assert_eq!(c.scale_to_zero_grace, Duration::from_secs(30));
        assert_eq!(c.scale_down_delay, Duration::ZERO);
        assert_eq!(c.tick, Duration::from_secs(2));
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
        assert_eq!(c.target, 1.0);
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
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }

    #[test]
    fn validation_names_the_bad_key() {
        refused(|c| c.target = 0.0, "target must be greater than 0");
        refused(|c| c.target = f64::NAN, "target must be a finite number");
        refused(|c| c.utilization = 0.0, "utilization must be in (0, 1]");
        refused(|c| c.utilization = 1.5, "utilization must be in (0, 1]");
        refused(
            |c| c.stable_window = Duration::from_millis(500),
            "stable_window must be at least 1s",
        );
        refused(
            |c| c.panic_window_percentage = 0.0,
            "panic_window_percentage must be in (0, 100]",
        );
        refused(
            |c| c.panic_window_percentage = 101.0,
            "panic_window_percentage must be in (0, 100]",
        );
        refused(
            |c| c.stable_window = Duration::from_secs(5),
            "the panic window",
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
        refused(|c| c.tick = Duration::ZERO, "tick must be greater than 0");
        refused(
            |c| c.target_burst_capacity = -2.0,
            "target_burst_capacity must be at least 0, or -1",
        );
    }

    #[test]
    fn unbounded_max_scale_accepts_any_min() {
        let c = KpaConfig {
            min_scale: 7,
            max_scale: 0,
            initial_scale: 9,
            target_burst_capacity: -1.0,
            ..KpaConfig::default()
        };
        assert_eq!(c.validate(), Ok(()));
    }
}
