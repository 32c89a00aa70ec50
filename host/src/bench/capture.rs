//! Reads the container cold-start split from the `container ready` event.
//!
//! The container backend logs, for every instance it starts,
//! `container ready` with `app`, `instance`, `port` and the four phases of
//! [`ColdStartSplit`] (`overlay`, `create`, `start`, `ready`, as `Debug`
//! durations), but does not return the split. Until it does (an accessor on
//! the instance, surfaced through the revision's cold-start record), this
//! [`tracing_subscriber::Layer`] keeps those events, so the bench can pair
//! each cold start with its split.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;

use crate::container::ColdStartSplit;

/// The module whose event carries the split.
pub const TARGET: &str = "berth::container::backend";
/// That event's message.
pub const MESSAGE: &str = "container ready";

/// One container instance that became ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerReady {
    /// The app.
    pub app: String,
    /// The instance (runc container) id.
    pub instance: String,
    /// The port it listens on (host network).
    pub port: u16,
    /// Where its cold start spent its time.
    pub split: ColdStartSplit,
}

/// Keeps every `container ready` event seen, in order. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SplitCapture {
    seen: Arc<Mutex<Vec<ContainerReady>>>,
}

impl SplitCapture {
    /// A capture that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many events were seen so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none was seen.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The events of `app` seen after the first `from`.
    pub fn since(&self, from: usize, app: &str) -> Vec<ContainerReady> {
        self.lock()
            .iter()
            .skip(from)
            .filter(|e| e.app == app)
            .cloned()
            .collect()
    }

    /// The newest event of `app`.
    pub fn last(&self, app: &str) -> Option<ContainerReady> {
        self.lock().iter().rev().find(|e| e.app == app).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ContainerReady>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for SplitCapture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut v = Fields::default();
        event.record(&mut v);
        if v.message.as_deref() != Some(MESSAGE) {
            return;
        }
        let (Some(overlay), Some(create), Some(start), Some(ready)) =
            (v.overlay, v.create, v.start, v.ready)
        else {
            return;
        };
        self.lock().push(ContainerReady {
            app: v.app.unwrap_or_default(),
            instance: v.instance.unwrap_or_default(),
            port: v.port.unwrap_or(0),
            split: ColdStartSplit {
                overlay,
                create,
                start,
                ready,
            },
        });
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    app: Option<String>,
    instance: Option<String>,
    port: Option<u16>,
    overlay: Option<Duration>,
    create: Option<Duration>,
    start: Option<Duration>,
    ready: Option<Duration>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "port" {
            self.port = u16::try_from(value).ok();
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "port" {
            self.port = u16::try_from(value).ok();
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_text(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_text(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record_text(&mut self, field: &Field, text: String) {
        match field.name() {
            "message" => self.message = Some(text),
            "app" => self.app = Some(text),
            "instance" => self.instance = Some(text),
            "port" => self.port = text.parse().ok(),
            "overlay" => self.overlay = parse_debug_duration(&text),
            "create" => self.create = parse_debug_duration(&text),
            "start" => self.start = parse_debug_duration(&text),
            "ready" => self.ready = parse_debug_duration(&text),
            _ => {}
        }
    }
}

/// Parses what `<Duration as Debug>` prints (`1.5ms`, `250µs`, `3ns`,
/// `2.000000001s`); it prints every significant digit, so nothing is lost
/// below the nanosecond.
pub fn parse_debug_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let nanos_per_unit: u64 = match unit {
        "ns" => 1,
        "µs" | "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        _ => return None,
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    // Exact: the fraction's digits scaled to nanoseconds of the unit.
    let scale_digits = nanos_per_unit.ilog10() as usize;
    let mut frac_nanos = 0u64;
    for (i, c) in frac.chars().enumerate() {
        if i >= scale_digits {
            break;
        }
        let digit = u64::from(c.to_digit(10)?);
        frac_nanos += digit * 10u64.pow((scale_digits - 1 - i) as u32);
    }
    let nanos = int.checked_mul(nanos_per_unit)?.checked_add(frac_nanos)?;
    Some(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn parses_what_duration_debug_prints() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(3),
            Duration::from_nanos(1_234),
            Duration::from_micros(250),
            Duration::from_nanos(1_500_000),
            Duration::from_nanos(12_345_678),
            Duration::from_secs(2),
            Duration::new(2, 1),
            Duration::new(61, 999_999_999),
        ] {
            let text = format!("{d:?}");
            assert_eq!(parse_debug_duration(&text), Some(d), "{text}");
        }
        assert_eq!(parse_debug_duration("1.5 parsecs"), None);
        assert_eq!(parse_debug_duration("ms"), None);
    }

    #[test]
    fn keeps_the_container_ready_event_only() {
        let capture = SplitCapture::new();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            let split = ColdStartSplit {
                overlay: Duration::from_micros(800),
                create: Duration::from_nanos(12_345_678),
                start: Duration::from_millis(7),
                ready: Duration::from_micros(2_100),
            };
            tracing::info!(
                target: TARGET,
                app = %"web",
                instance = "web-00001-1-abcd",
                port = 40123u16,
                overlay = ?split.overlay,
                create = ?split.create,
                start = ?split.start,
                ready = ?split.ready,
                "container ready"
            );
            tracing::info!(target: TARGET, app = %"web", "something else");
            tracing::info!(app = %"web", overlay = ?split.overlay, create = ?split.create,
                start = ?split.start, ready = ?split.ready, "container ready");
            assert_eq!(capture.len(), 1);
            let got = capture.last("web").expect("captured");
            assert_eq!(got.split, split);
            assert_eq!(got.port, 40123);
            assert_eq!(got.instance, "web-00001-1-abcd");
            assert!(capture.last("other").is_none());
            assert_eq!(capture.since(1, "web"), Vec::new());
        });
    }
}
