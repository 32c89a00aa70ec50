//! [`Kpa`]: one app's autoscaler state, fed samples, asked for decisions.
//! The algorithm is described in the [module documentation](super).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::config::KpaConfig;
use super::window::ConcurrencyWindow;

/// One decision of the autoscaler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// How many instances the app should have.
    pub desired: u32,
    /// Whether panic mode is on (the count then never decreases).
    pub panicking: bool,
    /// Average concurrency over the stable window.
    pub stable_concurrency: f64,
    /// Average concurrency over the panic window.
    pub panic_concurrency: f64,
    /// `floor(ready × target − target_burst_capacity − panic_concurrency)`:
    /// negative when the ready instances cannot absorb a burst of
    /// `target_burst_capacity` more requests; 0 when that capacity is 0 and
    /// −1 when it is unlimited (−1), as in Knative.
    pub excess_burst_capacity: f64,
}

/// The Knative Pod Autoscaler algorithm for one app, on an explicit clock.
///
/// The caller [`record`](Kpa::record)s the app's concurrency about once a
/// second, asks for a [`decide`](Kpa::decide) every [`KpaConfig::tick`], and
/// calls [`poke`](Kpa::poke) when a request finds no ready instance. Nothing
/// here reads a clock, sleeps or does I/O; every method takes `now`.
#[derive(Debug, Clone)]
pub struct Kpa {
    config: KpaConfig,
    panic_window: Duration,
    samples: ConcurrencyWindow,
    /// When panic mode was last entered or extended; `None` when not panicking.
    panic_since: Option<Instant>,
    /// The largest count asked for during the current panic.
    max_panic: u32,
    /// Counts asked for during the last `scale_down_delay`, oldest first.
    recent: VecDeque<(Instant, u32)>,
    /// Last sign of life: a sample above 0, a poke, or the initial scale being
    /// reached. Scale to zero waits `stable_window + scale_to_zero_grace` from it.
    last_activity: Option<Instant>,
    /// `initial_scale`, capped by `max_scale`.
    initial_scale: u32,
    /// Whether `initial_scale` instances have been ready once.
    initialized: bool,
    /// The latest decision's count (the initial scale before any).
    desired: u32,
}

impl Kpa {
    /// An autoscaler created at `now` (its clock's origin). It does not
    /// validate `config`: call [`KpaConfig::validate`] first; an invalid
    /// configuration gives odd counts but never a panic.
    pub fn new(config: KpaConfig, now: Instant) -> Self {
        let initial_scale = match config.max_scale {
            0 => config.initial_scale,
            max => config.initial_scale.min(max),
        };
        let panic_window = config.panic_window();
        let samples = ConcurrencyWindow::new(now, config.stable_window.max(panic_window));
        let mut kpa = Self {
            panic_window,
            samples,
            panic_since: None,
            max_panic: 0,
            recent: VecDeque::new(),
            last_activity: None,
            initial_scale,
            initialized: initial_scale == 0,
            desired: 0,
            config,
        };
        kpa.desired = kpa.bounded(initial_scale);
        kpa
    }

    /// The configuration this autoscaler runs with.
    pub fn config(&self) -> &KpaConfig {
        &self.config
    }

    /// The latest decision's count; before the first decision, the initial
    /// scale within the bounds (what to start at creation).
    pub fn desired(&self) -> u32 {
        self.desired
    }

    /// Whether panic mode is on as of the latest decision.
    pub fn panicking(&self) -> bool {
        self.panic_since.is_some()
    }

    /// Records the app's concurrency (requests in flight plus queued, over all
    /// instances) observed at `now`. Sample at least once a second, zeros
    /// included: a second without a sample counts as 0 inside a window.
    pub fn record(&mut self, now: Instant, concurrency: f64) {
        self.samples.record(now, concurrency);
        if concurrency > 0.0 {
            self.touch(now);
        }
    }

    /// A request arrived and found no free capacity (typically: the app is at
    /// zero). Marks activity at `now` and decides at once, without waiting for
    /// the next tick; the count is at least 1 and stays so for at least
    /// `stable_window + scale_to_zero_grace`.
    pub fn poke(&mut self, now: Instant, ready_instances: u32) -> Decision {
        self.touch(now);
        self.decide(now, ready_instances)
    }

    fn touch(&mut self, now: Instant) {
        self.last_activity = Some(match self.last_activity {
            Some(t) if t > now => t,
            _ => now,
        });
    }

    /// Clamps to `[min_scale, max_scale]` (an unvalidated `max_scale` of 0
    /// is read as unbounded).
    fn bounded(&self, n: u32) -> u32 {
        let n = n.max(self.config.min_scale);
        match self.config.max_scale {
            0 => n,
            max => n.min(max),
        }
    }

    /// Decides how many instances the app should have at `now`, given how many
    /// are ready. Steps, in order: stable and panic counts within the rate
    /// limits; panic mode; scale-down delay; initial scale; min/max bounds;
    /// the scale-to-zero hold.
    pub fn decide(&mut self, now: Instant, ready_instances: u32) -> Decision {
        if !self.initialized && ready_instances >= self.initial_scale {
            self.initialized = true;
            self.touch(now);
        }
        let cfg = &self.config;

        let stable_concurrency = self.samples.average(now, cfg.stable_window);
        let panic_concurrency = self.samples.average(now, self.panic_window);
        let target = cfg.per_instance_target();
        let want_stable = ceil_count(stable_concurrency / target);
        let want_panic = ceil_count(panic_concurrency / target);

        // Rate limits, relative to at least one ready instance.
        let ready = f64::from(ready_instances.max(1));
        let max_up = (cfg.max_scale_up_rate * ready).ceil();
        let max_down = (ready / cfg.max_scale_down_rate).floor();
        let limit = |n: f64| n.max(max_down).min(max_up) as u32;
        let desired_stable = limit(want_stable);
        let desired_panic = limit(want_panic);

        // Panic mode: entered or extended whenever the panic window asks for
        // threshold × ready or more; left once more than a stable window has
        // passed since then.
        if want_panic / ready >= cfg.panic_threshold() {
            self.panic_since = Some(now);
        } else if let Some(since) = self.panic_since
            && now.saturating_duration_since(since) > cfg.stable_window
        {
            self.panic_since = None;
            self.max_panic = 0;
        }
        let mut desired = desired_stable;
        if self.panic_since.is_some() {
            self.max_panic = self.max_panic.max(desired_stable.max(desired_panic));
            desired = self.max_panic;
        }

        // Scale-down delay: the largest count asked for within the delay.
        let delay = cfg.scale_down_delay;
        if !delay.is_zero() {
            self.recent
                .retain(|&(t, _)| now.saturating_duration_since(t) < delay);
            self.recent.push_back((now, desired));
            desired = self.recent.iter().map(|&(_, n)| n).max().unwrap_or(desired);
        }

        if !self.initialized {
            desired = desired.max(self.initial_scale);
        }
        desired = self.bounded(desired);

        // Scale to zero only after a stable window plus the grace without
        // activity; until then keep one instance.
        let hold = cfg.stable_window.saturating_add(cfg.scale_to_zero_grace);
        if desired == 0
            && self
                .last_activity
                .is_some_and(|t| now.saturating_duration_since(t) < hold)
        {
            desired = 1;
        }

        let tbc = cfg.target_burst_capacity;
        let excess_burst_capacity = if tbc == 0.0 {
            0.0
        } else if tbc < 0.0 {
            -1.0
        } else {
            (f64::from(ready_instances) * cfg.resolved_target() - tbc - panic_concurrency).floor()
        };

        self.desired = desired;
        Decision {
            desired,
            panicking: self.panic_since.is_some(),
            stable_concurrency,
            panic_concurrency,
            excess_burst_capacity,
        }
    }
}

/// `ceil(x)`, except that a value within floating-point noise of a whole
/// number ≥ 1 counts as that number: 2.1 / 0.7 is 3.0000000000000004 in
/// `f64`, and asks for 3 instances, not 4.
fn ceil_count(x: f64) -> f64 {
    let r = x.round();
    if r >= 1.0 && (x - r).abs() <= r * 1e-9 {
        r
    } else {
        x.ceil().max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_count_ignores_float_noise() {
        assert_eq!(2.1f64 / 0.7, 3.0000000000000004);
        assert_eq!(ceil_count(2.1 / 0.7), 3.0);
        assert_eq!(ceil_count(21.0 / 0.7), 30.0);
        assert_eq!(ceil_count(10.0 / 0.7), 15.0);
        assert_eq!(ceil_count(3.01), 4.0);
        assert_eq!(ceil_count(1e-6), 1.0);
        assert_eq!(ceil_count(0.0), 0.0);
    }
}
