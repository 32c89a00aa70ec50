//! The KPA's behaviours on a simulated clock, with exact counts and instants.

use std::time::{Duration, Instant};

use super::{Decision, Kpa, KpaConfig};

/// A `Kpa` plus its clock origin; times are seconds since the origin.
struct Sim {
    kpa: Kpa,
    origin: Instant,
    /// The next whole second [`Sim::load_until`] will record.
    next_sample: u64,
}

impl Sim {
    fn new(config: KpaConfig) -> Self {
        assert_eq!(config.validate(), Ok(()));
        let origin = Instant::now();
        Self {
            kpa: Kpa::new(config, origin),
            origin,
            next_sample: 0,
        }
    }

    fn at(&self, s: f64) -> Instant {
        self.origin + Duration::from_secs_f64(s)
    }

    fn record(&mut self, s: f64, concurrency: f64) {
        self.kpa.record(self.at(s), concurrency);
    }

    /// Records `load(s)` at every whole second `s` not recorded yet, up to and
    /// including `until`.
    fn load_until(&mut self, until: u64, load: impl Fn(u64) -> f64) {
        while self.next_sample <= until {
            let s = self.next_sample;
            self.record(s as f64, load(s));
            self.next_sample += 1;
        }
    }

    fn decide(&mut self, s: f64, ready: u32) -> Decision {
        self.kpa.decide(self.at(s), ready)
    }

    fn poke(&mut self, s: f64, ready: u32) -> Decision {
        self.kpa.poke(self.at(s), ready)
    }
}

/// A per-instance target of exactly 5 (target 10 × utilization 0.5), so the
/// expected counts below are exact.
fn five() -> KpaConfig {
    KpaConfig {
        utilization: 0.5,
        ..KpaConfig::for_concurrency(10, None)
    }
}

/// Samples `load` every second and decides every 2 s from 0 to `until`, each
/// decision seeing as ready the count the previous one asked for (instances
/// start within a tick). Returns `(second, decision)` per tick.
fn run(
    sim: &mut Sim,
    until: u64,
    first_ready: u32,
    load: impl Fn(u64) -> f64,
) -> Vec<(u64, Decision)> {
    let mut ready = first_ready;
    let mut out = Vec::new();
    for s in (0..=until).step_by(2) {
        sim.load_until(s, &load);
        let d = sim.decide(s as f64, ready);
        ready = d.desired;
        out.push((s, d));
    }
    out
}

fn counts(decisions: &[(u64, Decision)]) -> Vec<(u64, u32, bool)> {
    decisions
        .iter()
        .map(|(s, d)| (*s, d.desired, d.panicking))
        .collect()
}

fn decision_at(decisions: &[(u64, Decision)], second: u64) -> Decision {
    decisions
        .iter()
        .find(|(s, _)| *s == second)
        .map(|(_, d)| *d)
        .expect("a decision at that second")
}

#[test]
fn steady_load_sizes_by_the_stable_average() {
    // concurrency = 1: T = 0.7; 10 concurrent requests want ceil(10 / 0.7) = 15.
    let mut sim = Sim::new(KpaConfig::for_concurrency(1, None));
    for s in (0..=20).step_by(2) {
        sim.load_until(s, |_| 10.0);
        let d = sim.decide(s as f64, 15);
        assert_eq!(
            d,
            Decision {
                desired: 15,
                panicking: false,
                stable_concurrency: 10.0,
                panic_concurrency: 10.0,
                excess_burst_capacity: 15.0 - 200.0 - 10.0,
            },
            "at {s}s"
        );
    }
}

#[test]
fn steady_load_is_capped_by_max_scale() {
    let mut sim = Sim::new(KpaConfig {
        max_scale: 4,
        ..KpaConfig::for_concurrency(1, None)
    });
    let decisions = run(&mut sim, 120, 0, |_| 10.0);
    // 15 wanted on at most 4 ready: 15 / 4 ≥ 2 keeps it panicking, and the
    // count never exceeds 4.
    for (s, desired, panicking) in counts(&decisions) {
        assert_eq!((desired, panicking), (4, true), "at {s}s");
    }
}

#[test]
fn whole_ratios_are_not_rounded_up_by_float_noise() {
    // 2.1 / 0.7 is 3.0000000000000004 in f64: still 3 instances.
    let mut sim = Sim::new(KpaConfig::for_concurrency(1, None));
    sim.load_until(10, |_| 2.1);
    assert_eq!(sim.decide(10.0, 3).desired, 3);
}

#[test]
fn burst_enters_panic_holds_and_leaves_after_a_stable_window() {
    // T = 5. 10 requests for a minute (2 instances), then 100 for 10 s
    // (60 s ..= 69 s), then nothing.
    let mut sim = Sim::new(five());
    let load = |s: u64| match s {
        0..60 => 10.0,
        60..70 => 100.0,
        _ => 0.0,
    };
    let decisions = run(&mut sim, 170, 2, load);

    let expected = |s: u64| match s {
        0..=58 => (2, false),
        // Panic window (55..=60 s) = (5 × 10 + 100) / 6 = 25 → 5 ≥ 2 × 2 ready.
        60 => (5, true),
        // (3 × 10 + 3 × 100) / 6 = 55 → 11 ≥ 2 × 5: panic extended at 62 s.
        62 => (11, true),
        // 85 → 17 < 2 × 11: below the threshold, but still panicking.
        64 => (17, true),
        // 100 → 20; then the count holds at 20 although the load is gone...
        66..=122 => (20, true),
        // ...until more than 60 s after 62 s. Stable average 500/60 → 2,
        // but scale-down is limited to halving: 20 → 10 → 5 → 2 → 1.
        124 => (10, false),
        126 => (5, false),
        128 => (2, false),
        // Last request at 69 s: one instance until 69 + 60 + 30 = 159 s.
        130..=158 => (1, false),
        _ => (0, false),
    };
    for (s, desired, panicking) in counts(&decisions) {
        assert_eq!((desired, panicking), expected(s), "at {s}s");
    }

    let entry = decision_at(&decisions, 60);
    assert_eq!(entry.panic_concurrency, 25.0);
    assert_eq!(entry.stable_concurrency, 11.5); // (59 × 10 + 100) / 60
    assert_eq!(decision_at(&decisions, 62).panic_concurrency, 55.0);
    assert_eq!(
        decision_at(&decisions, 124).stable_concurrency,
        500.0 / 60.0
    );

    // The count never decreases while panicking.
    for pair in decisions.windows(2) {
        let ((_, a), (s, b)) = (pair[0], pair[1]);
        if a.panicking && b.panicking {
            assert!(b.desired >= a.desired, "decreased while panicking at {s}s");
        }
    }
}

#[test]
fn scale_up_is_rate_limited() {
    // 100 requests want 20 instances; at most doubling per decision.
    let mut sim = Sim::new(KpaConfig {
        max_scale_up_rate: 2.0,
        ..five()
    });
    let decisions = run(&mut sim, 10, 1, |_| 100.0);
    assert_eq!(
        counts(&decisions),
        vec![
            (0, 2, true),
            (2, 4, true),
            (4, 8, true),
            (6, 16, true),
            (8, 20, true),
            (10, 20, true),
        ]
    );

    // With the default rate (1000) the first decision asks for all 20.
    let mut sim = Sim::new(five());
    sim.load_until(0, |_| 100.0);
    assert_eq!(sim.decide(0.0, 0).desired, 20);

    // A timid rate still grows by at least one: ceil(1.1 × 2) = 3.
    let mut sim = Sim::new(KpaConfig {
        max_scale_up_rate: 1.1,
        ..five()
    });
    sim.load_until(0, |_| 100.0);
    assert_eq!(sim.decide(0.0, 2).desired, 3);
    assert_eq!(sim.decide(0.0, 10).desired, 11);
}

#[test]
fn scale_down_is_rate_limited() {
    // No load at all, but a recent poke so the hold keeps one instance.
    let mut sim = Sim::new(KpaConfig {
        initial_scale: 0,
        ..five()
    });
    assert_eq!(sim.poke(0.0, 0).desired, 1);
    assert_eq!(sim.decide(2.0, 10).desired, 5);
    assert_eq!(sim.decide(4.0, 5).desired, 2);
    assert_eq!(sim.decide(6.0, 2).desired, 1);
    assert_eq!(sim.decide(8.0, 1).desired, 1); // held until 90 s

    let mut sim = Sim::new(KpaConfig {
        initial_scale: 0,
        max_scale_down_rate: 4.0,
        ..five()
    });
    sim.poke(0.0, 0);
    assert_eq!(sim.decide(2.0, 10).desired, 2); // floor(10 / 4)
}

#[test]
fn min_and_max_scale_bound_the_count() {
    let mut sim = Sim::new(KpaConfig {
        min_scale: 2,
        max_scale: 4,
        ..five()
    });
    assert_eq!(sim.kpa.desired(), 2);
    assert_eq!(sim.decide(0.0, 0).desired, 2);
    assert_eq!(sim.decide(2.0, 2).desired, 2);
    // Long idle: never below min_scale, never to zero.
    sim.load_until(1000, |_| 0.0);
    assert_eq!(sim.decide(1000.0, 2).desired, 2);
    // A burst wanting 20: never above max_scale.
    sim.load_until(1010, |_| 100.0);
    let d = sim.decide(1010.0, 4);
    assert_eq!((d.desired, d.panicking), (4, true));
}

#[test]
fn min_scale_one_keeps_a_warm_instance() {
    let mut sim = Sim::new(KpaConfig {
        min_scale: 1,
        ..five()
    });
    let decisions = run(&mut sim, 600, 1, |s| if s < 10 { 5.0 } else { 0.0 });
    for (s, desired, _) in counts(&decisions) {
        assert_eq!(desired, 1, "at {s}s");
    }
}

#[test]
fn initial_scale_holds_until_reached() {
    let mut sim = Sim::new(KpaConfig {
        initial_scale: 3,
        ..five()
    });
    // What to start at creation, and kept while instances come up.
    assert_eq!(sim.kpa.desired(), 3);
    assert_eq!(sim.decide(0.0, 0).desired, 3);
    assert_eq!(sim.decide(2.0, 2).desired, 3);
    // 3 ready at 4 s: from now on the algorithm decides (no load: halve).
    assert_eq!(sim.decide(4.0, 3).desired, 1);
    assert_eq!(sim.decide(6.0, 1).desired, 1);
    // Reaching the initial scale counts as activity: zero at 4 + 60 + 30 s.
    assert_eq!(sim.decide(93.9, 1).desired, 1);
    assert_eq!(sim.decide(94.0, 1).desired, 0);

    // initial_scale 0: nothing starts, nothing is held.
    let mut sim = Sim::new(KpaConfig {
        initial_scale: 0,
        ..five()
    });
    assert_eq!(sim.kpa.desired(), 0);
    assert_eq!(sim.decide(0.0, 0).desired, 0);
    assert_eq!(sim.decide(500.0, 0).desired, 0);

    // An initial scale above max_scale is capped (validation refuses it).
    let kpa = Kpa::new(
        KpaConfig {
            initial_scale: 5,
            max_scale: 2,
            ..five()
        },
        Instant::now(),
    );
    assert_eq!(kpa.desired(), 2);
}

#[test]
fn scales_to_zero_after_stable_window_plus_grace() {
    // 5 requests (one instance) from 0 s to 9 s, then none.
    let mut sim = Sim::new(five());
    let load = |s: u64| if s <= 9 { 5.0 } else { 0.0 };
    sim.load_until(0, load);
    assert_eq!(sim.decide(0.0, 1).desired, 1);
    sim.load_until(68, load);
    // Bucket 9 is still in the stable window [9, 68].
    let d = sim.decide(68.0, 1);
    assert_eq!((d.desired, d.stable_concurrency), (1, 5.0 / 60.0));
    sim.load_until(69, load);
    // A full stable window without traffic; the grace keeps one instance.
    let d = sim.decide(69.0, 1);
    assert_eq!((d.desired, d.stable_concurrency), (1, 0.0));
    sim.load_until(98, load);
    assert_eq!(sim.decide(98.0, 1).desired, 1);
    assert_eq!(sim.decide(98.999, 1).desired, 1);
    sim.load_until(99, load);
    // 9 + 60 + 30 = 99 s.
    assert_eq!(sim.decide(99.0, 1).desired, 0);
    // At zero without traffic it stays at zero, sampled or not.
    sim.load_until(120, load);
    assert_eq!(sim.decide(120.0, 0).desired, 0);
    assert_eq!(sim.decide(1000.0, 0).desired, 0);
}

#[test]
fn without_grace_zero_comes_right_after_the_stable_window() {
    let mut sim = Sim::new(KpaConfig {
        scale_to_zero_grace: Duration::ZERO,
        ..five()
    });
    let load = |s: u64| if s <= 9 { 5.0 } else { 0.0 };
    sim.load_until(0, load);
    assert_eq!(sim.decide(0.0, 1).desired, 1);
    sim.load_until(68, load);
    assert_eq!(sim.decide(68.999, 1).desired, 1);
    sim.load_until(69, load);
    assert_eq!(sim.decide(69.0, 1).desired, 0);
}

#[test]
fn the_zero_moment_follows_the_last_sample_exactly() {
    let mut sim = Sim::new(five());
    sim.load_until(0, |_| 5.0);
    assert_eq!(sim.decide(0.0, 1).desired, 1);
    sim.load_until(8, |_| 5.0);
    sim.record(9.5, 5.0);
    sim.next_sample = 10;
    sim.load_until(99, |_| 0.0);
    assert_eq!(sim.decide(99.49, 1).desired, 1);
    assert_eq!(sim.decide(99.5, 1).desired, 0);
}

#[test]
fn a_request_at_zero_scales_up_at_once() {
    let mut sim = Sim::new(KpaConfig {
        initial_scale: 0,
        ..five()
    });
    assert_eq!(sim.decide(0.0, 0).desired, 0);
    assert_eq!(sim.decide(100.0, 0).desired, 0);
    // Between ticks: the poke decides at once.
    let d = sim.poke(100.5, 0);
    assert_eq!((d.desired, d.panicking), (1, false));
    assert_eq!(sim.kpa.desired(), 1);
    // The next tick, before any sample shows the request: still 1.
    assert_eq!(sim.decide(101.0, 0).desired, 1);
    // The request is seen for two seconds, then the app idles; the last
    // activity is at 102 s, so zero comes at 102 + 90 = 192 s.
    sim.next_sample = 101;
    let load = |s: u64| if s <= 102 { 1.0 } else { 0.0 };
    sim.load_until(191, load);
    assert_eq!(sim.decide(191.9, 1).desired, 1);
    sim.load_until(192, load);
    assert_eq!(sim.decide(192.0, 1).desired, 0);
}

#[test]
fn scale_down_delay_holds_the_count() {
    // Stable window 10 s (panic 1 s), T = 5, 10 ready throughout; 50 requests
    // until 19 s, then none.
    let config = KpaConfig {
        stable_window: Duration::from_secs(10),
        ..five()
    };
    let load = |s: u64| if s < 20 { 50.0 } else { 0.0 };
    let ticks = |config: KpaConfig| {
        let mut sim = Sim::new(config);
        let mut out = Vec::new();
        for s in (0..=32).step_by(2) {
            sim.load_until(s, load);
            let d = sim.decide(s as f64, 10);
            assert!(!d.panicking);
            if s >= 18 {
                out.push((s, d.desired));
            }
        }
        out
    };
    // Without delay: the stable average falls 50 → 45 → 35 → 25 → 15..., the
    // count 10 → 9 → 7 → 5, then no lower than 10 / 2.
    assert_eq!(
        ticks(config.clone()),
        vec![
            (18, 10),
            (20, 9),
            (22, 7),
            (24, 5),
            (26, 5),
            (28, 5),
            (30, 5),
            (32, 5)
        ]
    );
    // With a 10 s delay each count is the largest of the last 10 s: the
    // 10 asked at 18 s lasts until 28 s, and so on.
    assert_eq!(
        ticks(KpaConfig {
            scale_down_delay: Duration::from_secs(10),
            ..config
        }),
        vec![
            (18, 10),
            (20, 10),
            (22, 10),
            (24, 10),
            (26, 10),
            (28, 9),
            (30, 7),
            (32, 5)
        ]
    );
}

#[test]
fn excess_burst_capacity() {
    let ebc = |tbc: f64, ready: u32| {
        let mut sim = Sim::new(KpaConfig {
            target_burst_capacity: tbc,
            ..five()
        });
        sim.load_until(5, |_| 10.0);
        sim.decide(5.0, ready).excess_burst_capacity
    };
    // ready × target − burst − panic average = 2 × 10 − 200 − 10.
    assert_eq!(ebc(200.0, 2), -190.0);
    assert_eq!(ebc(5.0, 4), 25.0);
    assert_eq!(ebc(0.0, 2), 0.0);
    assert_eq!(ebc(-1.0, 2), -1.0);
}
