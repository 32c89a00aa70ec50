use super::*;

fn status(app: &str, ready: u32, queued: usize) -> AppSnapshot {
    AppSnapshot {
        deploy_failed: false,
        name: app.into(),
        revisions: vec![RevisionSnapshot {
            id: format!("{app}-00001"),
            kind: "wasm",
            traffic_percent: 100,
            desired: ready,
            ready,
            starting: 0,
            queued,
            in_flight: 2,
            stock: Some(StockSnapshot {
                hits: 7,
                misses: 3,
                stocked: 4,
                live: 0,
            }),
            outbound: Some(OutboundSnapshot {
                opened: 5,
                reused: 40,
                refused: 1,
                idle: 2,
            }),
        }],
    }
}

#[test]
fn renders_counters_histograms_and_snapshot_gauges() {
    let m = Metrics::new();
    m.observe_request("hello", 200, Duration::from_millis(3));
    m.observe_request("hello", 200, Duration::from_millis(3));
    m.observe_request("hello", 503, Duration::from_millis(1));
    m.observe_cold_start("wasm", Duration::from_micros(300));
    let text = m.render(&[status("hello", 2, 5)]);
    for line in [
        "# TYPE berth_requests_total counter",
        "berth_requests_total{app=\"hello\",status=\"200\"} 2",
        "berth_requests_total{app=\"hello\",status=\"503\"} 1",
        "berth_app_requests_total{app=\"hello\"} 3",
        "# TYPE berth_request_duration_seconds histogram",
        "berth_request_duration_seconds_count{app=\"hello\"} 3",
        "berth_request_duration_seconds_bucket{app=\"hello\",le=\"0.0025\"} 1",
        "berth_cold_starts_total{kind=\"wasm\"} 1",
        "berth_cold_start_duration_seconds_count{kind=\"wasm\"} 1",
        "berth_instances{app=\"hello\",revision=\"hello-00001\",state=\"ready\"} 2",
        "berth_instances{app=\"hello\",revision=\"hello-00001\",state=\"desired\"} 2",
        "berth_queue_depth{app=\"hello\"} 5",
        "berth_in_flight{app=\"hello\"} 2",
        "berth_traffic_percent{app=\"hello\",revision=\"hello-00001\"} 100",
        "berth_outbound_connections_opened_total{app=\"hello\"} 5",
        "berth_outbound_connections_reused_total{app=\"hello\"} 40",
        "berth_outbound_requests_refused_total{app=\"hello\"} 1",
        "berth_outbound_idle_connections{app=\"hello\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        !text.contains("berth_cpu_seconds_total"),
        "nothing measured, nothing reported:\n{text}"
    );
    m.record_usage("hello", Duration::from_millis(1500), 0.25);
    let text = m.render(&[]);
    assert!(
        text.contains("berth_cpu_seconds_total{app=\"hello\"} 1.5"),
        "{text}"
    );
    assert!(
        text.contains("berth_memory_gb_seconds_total{app=\"hello\"} 0.25"),
        "{text}"
    );
    let om = m.render_openmetrics(&[]);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        !om.contains("berth_queue_depth{"),
        "gone apps are not reported"
    );
}

#[test]
fn counters_read_back_typed_as_a_scrape_shows_them() {
    let m = Metrics::new();
    assert_eq!(
        m.app_counters("a"),
        AppCounters {
            latency: request_histogram().buckets(),
            ..AppCounters::default()
        }
    );
    m.observe_request("a", 200, Duration::from_millis(3));
    m.observe_request("a", 500, Duration::from_secs(90));
    m.observe_request("b", 200, Duration::from_millis(3));
    m.observe_cold_start("wasm", Duration::from_micros(300));
    m.record_usage("a", Duration::from_millis(1500), 0.25);
    let t = Instant::now();
    m.sample_at(t, &[status("a", 2, 0)]);
    m.sample_at(t + Duration::from_millis(500), &[status("a", 2, 0)]);
    let a = m.app_counters("a");
    assert_eq!(a.requests, 2);
    assert_eq!(a.latency.count(), 2);
    // 3 ms is in the 5 ms bucket; 90 s only in +Inf.
    assert!(a.latency.0.contains(&(0.005, 1)), "{:?}", a.latency);
    assert_eq!(a.latency.0.last(), Some(&(f64::INFINITY, 2)));
    assert_eq!(a.cpu_seconds, Some(1.5));
    assert_eq!(a.memory_gb_seconds, Some(0.25));
    assert!(
        (a.instance_seconds - 1.0).abs() < 1e-9,
        "{}",
        a.instance_seconds
    );
    assert_eq!(m.app_counters("b").cpu_seconds, None, "not measured");
    let (count, durations) = m.cold_starts("wasm");
    assert_eq!((count, durations.count()), (1, 1));
    assert_eq!(m.cold_starts("container").0, 0);
    // The same histogram is what a scrape encodes.
    let text = m.render(&[]);
    for line in [
        "berth_request_duration_seconds_bucket{app=\"a\",le=\"0.005\"} 1",
        "berth_request_duration_seconds_bucket{app=\"a\",le=\"+Inf\"} 2",
        "berth_request_duration_seconds_count{app=\"a\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn instance_seconds_integrate_ready_instances_over_time() {
    let m = Metrics::new();
    let t = Instant::now();
    m.sample_at(t, &[status("a", 3, 0)]);
    m.sample_at(t + Duration::from_millis(200), &[status("a", 0, 0)]);
    m.sample_at(t + Duration::from_millis(400), &[status("a", 0, 0)]);
    let v = m
        .instance_seconds
        .get_or_create(&AppKindLabels {
            app: "a".into(),
            kind: "wasm".into(),
        })
        .get();
    assert!((v - 0.6).abs() < 1e-9, "3 instances × 0.2 s, got {v}");
}
