//! The read views of apps: what the admin API serialises and the console
//! renders, built from the app table, the failed list and the state.

use serde::{Deserialize, Serialize};

use super::AppStatus;
use crate::backend::Kind;
use crate::config::AppConfig;
use crate::state::{Origin, StoredApp};

/// `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppList {
    /// Every app, by name.
    pub apps: Vec<AppView>,
}

/// How an app is doing, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppState {
    /// At least one instance serves.
    Ready,
    /// No instance is ready yet; some are starting.
    Starting,
    /// Scaled to zero: the next request starts an instance.
    Idle,
    /// No instance is ready and the last start failed.
    Failing,
    /// Remembered but not deployed: its settings no longer validate
    /// (`last_error` says why). Deploy it again or delete it.
    NotRunning,
    /// Could not be deployed (`last_error` says why); berth retries it in
    /// the background with backoff.
    Failed,
}

impl AppState {
    /// The word shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Ready => "ready",
            AppState::Starting => "starting",
            AppState::Idle => "idle",
            AppState::Failing => "failing",
            AppState::NotRunning => "not-running",
            AppState::Failed => "failed",
        }
    }
}

/// Instance counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instances {
    /// What the autoscaler wants.
    pub desired: u32,
    /// Serving.
    pub ready: u32,
    /// Starting.
    pub starting: u32,
}

/// One serving revision of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionView {
    /// `<app>-<n>`.
    pub id: String,
    /// What runs it: `wasm` or `container`.
    pub kind: Kind,
    /// Share of the app's new requests.
    pub traffic_percent: u32,
    /// Its instances.
    pub instances: Instances,
    /// Requests waiting for capacity.
    pub queued: usize,
    /// Requests being served.
    pub in_flight: usize,
    /// Whether the autoscaler is in panic mode.
    pub panicking: bool,
    /// Instances started so far.
    pub cold_starts: u64,
    /// How long the latest cold start took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cold_start_ms: Option<f64>,
    /// The last failure to start an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// An app, as `GET /v1/apps/{name}` shows it. Counts are summed over the
/// serving revisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    /// The app's name.
    pub name: String,
    /// In one word.
    pub state: AppState,
    /// What runs it: `wasm` or `container`; `""` (none) for an app that
    /// failed before its first deploy told.
    #[serde(with = "kind_or_empty")]
    pub kind: Option<Kind>,
    /// The latest revision.
    pub revision: String,
    /// For an image, `registry/repo@sha256:…`: what its reference was pinned
    /// to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// sha256 of the code that serves.
    pub sha256: String,
    /// For a component, the wasi:http world it exports: `wasi:http@0.2`
    /// (incoming-handler) or `wasi:http@0.3` (handler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<String>,
    /// Path prefixes routed to it.
    pub routes: Vec<String>,
    /// Its settings, in the shape of a deploy body.
    pub config: AppConfig,
    /// `config` (the `--config` file) or `api`.
    pub origin: Origin,
    /// When the latest revision was deployed (RFC 3339).
    pub deployed_at: String,
    /// Instances, over all serving revisions.
    pub instances: Instances,
    /// Requests waiting for capacity.
    pub queued: usize,
    /// Requests being served.
    pub in_flight: usize,
    /// Whether a revision's autoscaler is in panic mode.
    pub panicking: bool,
    /// Instances started so far.
    pub cold_starts: u64,
    /// The most recent problem: a failed instance start, or why the app
    /// could not be restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The serving revisions and their traffic.
    pub revisions: Vec<RevisionView>,
}

impl AppView {
    /// A running app; `stored` is what the state file says about it (every
    /// deploy records one; without it the settings show as empty).
    pub fn running(status: &AppStatus, stored: Option<&StoredApp>) -> Self {
        let mut instances = Instances::default();
        let (mut queued, mut in_flight, mut cold_starts, mut panicking) = (0, 0, 0, false);
        let mut revisions = Vec::new();
        for (r, percent) in &status.revisions {
            instances.desired += r.desired;
            instances.ready += r.ready;
            instances.starting += r.starting;
            queued += r.queued;
            in_flight += r.in_flight;
            cold_starts += r.cold_starts;
            panicking |= r.panicking;
            revisions.push(RevisionView {
                id: r.id.clone(),
                kind: r.kind,
                traffic_percent: *percent,
                instances: Instances {
                    desired: r.desired,
                    ready: r.ready,
                    starting: r.starting,
                },
                queued: r.queued,
                in_flight: r.in_flight,
                panicking: r.panicking,
                cold_starts: r.cold_starts,
                last_cold_start_ms: r
                    .recent_cold_starts
                    .last()
                    .map(|c| c.duration.as_secs_f64() * 1000.0),
                last_error: r.last_error.clone(),
            });
        }
        // The latest revision's problem first, else any serving revision's.
        let last_error = status
            .revisions
            .iter()
            .find(|(r, _)| r.id == status.deployed.revision)
            .and_then(|(r, _)| r.last_error.clone())
            .or_else(|| {
                status
                    .revisions
                    .iter()
                    .find_map(|(r, _)| r.last_error.clone())
            });
        let state = if instances.ready > 0 {
            AppState::Ready
        } else if instances.starting > 0 {
            AppState::Starting
        } else if last_error.is_some() {
            AppState::Failing
        } else {
            AppState::Idle
        };
        Self {
            name: status.deployed.name.clone(),
            state,
            kind: Some(status.deployed.kind),
            revision: status.deployed.revision.clone(),
            pinned: status.deployed.pinned.clone(),
            sha256: status.deployed.sha256.clone(),
            world: status.deployed.world.clone(),
            routes: status.routes.clone(),
            config: stored.map(|s| s.config.clone()).unwrap_or_default(),
            origin: stored.map_or(Origin::Api, |s| s.origin),
            deployed_at: stored.map(|s| s.deployed_at.clone()).unwrap_or_default(),
            instances,
            queued,
            in_flight,
            panicking,
            cold_starts,
            last_error,
            revisions,
        }
    }

    /// `wasm`, `container`, or `""` when not known.
    pub fn kind_name(&self) -> &'static str {
        self.kind.map_or("", Kind::as_str)
    }

    /// An app that could not be deployed and waits for a retry; `stored` is
    /// what the state remembers of its last deploy (an app that failed to
    /// restore), whose revision, code and deploy time it keeps showing.
    pub fn failed(f: &crate::apps::FailedApp, stored: Option<&StoredApp>) -> Self {
        let fmt = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let field = |get: fn(&StoredApp) -> &String| stored.map(get).cloned().unwrap_or_default();
        Self {
            name: f.name.clone(),
            state: AppState::Failed,
            kind: stored.map(|s| s.kind),
            revision: field(|s| &s.revision),
            pinned: stored.and_then(|s| s.pinned.clone()),
            sha256: field(|s| &s.sha256),
            world: None,
            routes: f.record.config.routes.clone(),
            config: f.record.config.clone(),
            origin: f.record.origin,
            deployed_at: field(|s| &s.deployed_at),
            instances: Instances::default(),
            queued: 0,
            in_flight: 0,
            panicking: false,
            cold_starts: 0,
            last_error: Some(format!(
                "{} (attempt {}, failing since {}, next attempt at {})",
                f.reason,
                f.attempts,
                fmt(f.since),
                fmt(f.next_retry)
            )),
            revisions: Vec::new(),
        }
    }

    /// An app the state remembers but that is not deployed.
    pub fn not_running(name: &str, stored: &StoredApp, why: Option<String>) -> Self {
        Self {
            name: name.to_string(),
            state: AppState::NotRunning,
            kind: Some(stored.kind),
            revision: stored.revision.clone(),
            pinned: stored.pinned.clone(),
            sha256: stored.sha256.clone(),
            world: None,
            routes: stored.config.routes.clone(),
            config: stored.config.clone(),
            origin: stored.origin,
            deployed_at: stored.deployed_at.clone(),
            instances: Instances::default(),
            queued: 0,
            in_flight: 0,
            panicking: false,
            cold_starts: 0,
            last_error: why,
            revisions: Vec::new(),
        }
    }
}

/// `GET /v1/apps/{name}/keyvalue`: what each of the app's declared buckets
/// holds (counts only, never a key or a value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyvalueView {
    /// The app's buckets, in declared order.
    pub buckets: Vec<BucketView>,
}

/// One bucket in [`KeyvalueView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketView {
    /// The bucket's name.
    pub bucket: String,
    /// Where it lives: `embedded`, or the `[keyvalue.stores.NAME]` name.
    pub store: String,
    /// Keys it holds (absent when the store could not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Bytes of its keys and values (absent when the store could not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Why the store could not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// [`AppView::kind`] on the wire: the kind's name, `""` for none (as before
/// the kind was typed).
mod kind_or_empty {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use crate::backend::Kind;

    pub fn serialize<S: Serializer>(kind: &Option<Kind>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.map_or("", Kind::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Kind>, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "" => Ok(None),
            "wasm" => Ok(Some(Kind::Wasm)),
            "container" => Ok(Some(Kind::Container)),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["wasm", "container", ""],
            )),
        }
    }
}
