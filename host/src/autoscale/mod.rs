//! Request-concurrency autoscaling: the Knative Pod Autoscaler (KPA)
//! algorithm as pure, deterministic code. Timestamped concurrency samples go
//! in, a desired instance count comes out; nothing here reads a clock, sleeps
//! or does I/O, so the same inputs always give the same decisions.
//!
//! # The algorithm
//!
//! Each instance of an app is aimed at a *per-instance target* `T` of
//! concurrent requests: `T = max(0.01, target × utilization)`, where `target`
//! is the app's soft target, else its hard `concurrency` limit, else 100, and
//! `utilization` defaults to 0.7 (so 70 by default, 0.7 with
//! `concurrency = 1`). The caller samples the app's concurrency (requests in
//! flight plus queued, over all instances) about once a second with
//! [`Kpa::record`]. Samples fall into one-second buckets (a bucket holds the
//! mean of its samples), and two averages are taken over them: over the
//! *stable window* (60 s) to size the app for its steady load, and over the
//! *panic window* (10 % of the stable window, 6 s) to react to bursts. A
//! window's average is over its written span: seconds before the first sample
//! or after the last one are left out, unsampled seconds in between count as
//! 0 (see [`window`]). Every `tick` (berth: 1 s; Knative: 2 s) [`Kpa::decide`]
//! computes, with
//! `ready` = max(1, ready instances):
//!
//! ```text
//! want_stable    = ceil(stable average / T)
//! want_panic     = ceil(panic average / T)
//! lower, upper   = floor(ready / max_scale_down_rate), ceil(max_scale_up_rate × ready)
//! desired_stable = clamp(want_stable, lower, upper)        rates 2 and 1000 by default
//! desired_panic  = clamp(want_panic, lower, upper)
//! ```
//!
//! *Panic mode* starts, or is extended, at every decision where
//! `want_panic / ready ≥ panic_threshold_percentage / 100` (2.0): the last few
//! seconds need at least twice the ready instances. While panicking the count
//! is `max(desired_stable, desired_panic)` and never goes down; panic ends at
//! the first decision more than one stable window after it was last extended,
//! once the burst has made its way into the stable average. Otherwise the
//! count is `desired_stable`. Then, in order:
//!
//! - *scale-down delay*: the count is the largest one asked for during the
//!   last `scale_down_delay` (0 = off), so decreases wait that long;
//! - *initial scale*: until `initial_scale` instances have been ready once,
//!   the count is at least `initial_scale` (what the app starts with);
//! - *bounds*: the count is clamped to `[min_scale, max_scale]` (`max_scale`
//!   is always finite: 100 unless set, at most 10,000);
//! - *scale to zero*: a count of 0 (possible only with `min_scale` 0) is held
//!   at 1 until `stable_window + scale_to_zero_grace` has passed since the
//!   last activity: a sample above 0, a [`Kpa::poke`], or the initial scale
//!   being reached. The stable average is 0 by then, so the app goes to zero
//!   after a full stable window without traffic plus the grace: 90 s after its
//!   last request by default. At zero without traffic it stays at zero.
//!
//! A request that finds the app at zero must not wait for the next tick: the
//! activator calls [`Kpa::poke`], which decides at once with a count of at
//! least 1 (and keeps it for the hold above).
//!
//! Example: `concurrency = 1` gives `T` = 0.7. A steady 10 concurrent requests
//! ask for `ceil(10 / 0.7)` = 15 instances (then capped by `max_scale`). A
//! jump from 10 to 100 requests on 2 ready instances with `T` = 5 raises the
//! 6 s average to 25 at once, `want_panic` = 5 ≥ 2 × 2: panic, 5 instances
//! now rather than the stable window's 3; the count climbs as instances come
//! up and holds until a stable window after the burst last crossed the
//! threshold, then steps down at most halving per decision.
//!
//! # Differences from Knative
//!
//! Time is whole-second buckets from [`Kpa::new`]'s `now`; the scale-down
//! delay keeps exact decision timestamps instead of 2 s buckets. Ratios
//! within a relative 1e-9 of a whole number are not rounded up (float noise)
//! (`2.1 / 0.7` asks for 3). Knative's reconciler marks a revision inactive
//! and then waits the grace; here the equivalent hold is measured from the
//! last activity. Not modelled: the RPS metric, `activation-scale`,
//! unreachable revisions, and starting in panic mode when an autoscaler is
//! restarted over more than one ready pod.
//!
//! # Layout
//!
//! - [`config`]: [`KpaConfig`], the one autoscaling configuration of an app:
//!   Knative's defaults, target resolution, and validation of every knob
//!   against a documented range.
//! - [`window`]: [`ConcurrencyWindow`], per-second buckets and window averages.
//! - [`kpa`]: [`Kpa`], the decision procedure, and [`Decision`].
//! - `tests.rs`: the behaviours above on a simulated clock.

pub mod config;
pub mod kpa;
pub mod window;

pub use config::KpaConfig;
pub use kpa::{Decision, Kpa};
pub use window::ConcurrencyWindow;

#[cfg(test)]
mod tests;
