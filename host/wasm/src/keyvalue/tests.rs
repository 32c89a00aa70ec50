use super::*;

#[test]
fn bucket_names_are_checked() {
    assert!(validate_buckets(&["default".into(), "sessions".into()]).is_ok());
    assert!(
        validate_buckets(&["a".into(), "a".into()])
            .unwrap_err()
            .contains("twice")
    );
    assert!(validate_bucket("Bad").is_err());
    assert!(validate_bucket("").is_err());
    assert!(validate_bucket(&"x".repeat(64)).is_err());
}

#[test]
fn cursors_are_opaque_bound_to_their_bucket_and_bounded() {
    let ns = |app: &str, bucket: &str| {
        Arc::new(Namespace {
            app: app.into(),
            bucket: bucket.into(),
        })
    };
    let (a, b) = (ns("a", "default"), ns("b", "default"));
    let c = Cursors::new();
    let first = c.make(&a, "k99".into());
    let second = c.make(&a, "k99".into());
    assert_ne!(first, second, "each page gets a cursor of its own");
    assert!(
        first.abs_diff(second) > 1_000,
        "not a counter: {first} {second}"
    );
    assert_eq!(c.after(first, &a).as_deref(), Some("k99"));
    assert_eq!(c.after(first, &a).as_deref(), Some("k99"), "reusable");
    assert_eq!(c.after(first, &b), None, "another app's");
    assert_eq!(c.after(first, &ns("a", "other")), None, "another bucket's");
    assert_eq!(c.after(100, &a), None, "made up");
    for i in 0..MAX_CURSORS {
        c.make(&b, format!("x{i}"));
    }
    assert_eq!(c.len(), MAX_CURSORS);
    assert_eq!(c.after(first, &a), None, "the oldest went first");
}

#[test]
fn quota_ranges_name_their_key() {
    let q = KvQuota {
        batch: 0,
        ..KvQuota::default()
    };
    assert_eq!(q.validate().unwrap_err().key, "keyvalue_limits.batch");
    assert!(KvQuota::default().validate().is_ok());
}
