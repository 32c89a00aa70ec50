//! What this host remembers across restarts: the deployed apps.
//!
//! The state lives in `<data-dir>/state.json`, rewritten whole on every
//! change through a temporary file, `fsync`, `rename` and a directory
//! `fsync` ([`write_atomic`]), so a crash leaves either the old file or the
//! new one, never a torn one. For each app it holds:
//!
//! - the app's settings as an [`AppConfig`] (the shape of an `[apps.NAME]`
//!   table and of the admin API's deploy body; `wasm` paths are absolute);
//! - for an image, the digest its reference was pinned to
//!   (`registry/repo@sha256:…`);
//! - the revision id and the sha256 of the code that serves;
//! - where the app came from ([`Origin`]): the `--config` file or the admin
//!   API.
//!
//! # At start
//! [`StateStore::plan`] merges the config file with the state:
//!
//! 1. Every app of the config file is deployed from the file: **the file
//!    wins** over the state for the same name (an app that was scaled or
//!    replaced through the API gets the file's settings back).
//! 2. An app the state remembers from the config file that is no longer in
//!    the file is forgotten: the file owns the apps it declares.
//! 3. Every app made through the API (and not in the file) comes back as it
//!    was. An app deleted through the API that the file still declares comes
//!    back at the next start.
//!
//! An app whose settings and code are unchanged keeps its revision id, and an
//! image is deployed by its pinned digest instead of its tag: a restart pulls
//! nothing (a digest reference makes no registry request at all when its blobs
//! are stored) and compiles nothing (the compile cache maps the artifact). To
//! pick up a tag that moved, deploy the app again.
//!
//! # Layout
//! - this file: what is stored ([`StoredApp`], [`Origin`], [`Record`]) and
//!   [`StateError`];
//! - `store`: [`StateStore`], persistence: the file, read at open and
//!   rewritten whole on each change;
//! - `plan`: the start plan ([`StateStore::plan`], [`StartPlan`]) and the
//!   bookkeeping of why a stored app could not be restored
//!   ([`RestoreErrors`]);
//! - `locks`: [`AppLocks`], serialising read-modify-write changes of one app;
//! - `hash`: the sha256 of `.wasm` files, to tell unchanged code at start.

mod hash;
mod locks;
mod plan;
mod store;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use locks::AppLocks;
pub use plan::{PlannedApp, RestoreErrors, StartPlan, Unrestorable};
pub use store::StateStore;

use crate::backend::Kind;
use crate::config::{AppConfig, AppSpec, InvalidSetting, Source};

/// The state file's name inside the data directory.
pub const STATE_FILE: &str = "state.json";

/// The version of the state file's layout this build reads and writes.
pub const STATE_VERSION: u32 = 1;

/// Where a deployed app came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The `--config` file: re-applied at every start, forgotten once the
    /// file no longer declares it.
    Config,
    /// The admin API (or [`Apps::deploy`](crate::apps::Apps::deploy)):
    /// kept until deleted.
    Api,
}

impl Origin {
    /// `config` or `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
        }
    }
}

/// What a deploy asks the host to remember, besides what the deploy
/// resolves (pinned digest, revision, code hash).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The app's settings as given (an image keeps its tag here).
    pub config: AppConfig,
    /// Where the app came from.
    pub origin: Origin,
    /// Reuse this revision id instead of minting one: set by
    /// [`StateStore::plan`] when a restart finds settings and code unchanged.
    pub revision: Option<String>,
}

impl Record {
    /// A deploy through the admin API of `config`.
    pub fn api(config: AppConfig) -> Self {
        Self {
            config,
            origin: Origin::Api,
            revision: None,
        }
    }

    /// A deploy of `spec` without an [`AppConfig`] at hand (a programmatic
    /// deploy): the config is derived with [`AppSpec::to_config`].
    pub fn from_spec(spec: &AppSpec, origin: Origin) -> Self {
        Self {
            config: spec.to_config(),
            origin,
            revision: None,
        }
    }
}

/// One app as the state file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredApp {
    /// The app's settings (absolute paths; an image keeps its reference as
    /// given, tag included).
    pub config: AppConfig,
    /// Where it came from.
    pub origin: Origin,
    /// For an image: `registry/repo@sha256:…`, what the reference resolved
    /// to at deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// The revision serving it (`<app>-<n>`).
    pub revision: String,
    /// sha256 (hex) of the code that serves.
    pub sha256: String,
    /// What runs it (`wasm` or `container` in the file).
    pub kind: Kind,
    /// When the revision was deployed (RFC 3339, UTC).
    pub deployed_at: String,
}

impl StoredApp {
    /// What to store after a deploy of `record` succeeded as `revision`,
    /// serving code `sha256` of `kind`, pinned to `pinned` for an image.
    pub fn new(
        record: &Record,
        pinned: Option<String>,
        revision: String,
        sha256: String,
        kind: Kind,
    ) -> Self {
        Self {
            config: record.config.clone(),
            origin: record.origin,
            pinned,
            revision,
            sha256,
            kind,
            deployed_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    /// The spec that deploys this app again without resolving its tag: the
    /// stored settings with the image replaced by its pinned digest.
    ///
    /// # Errors
    /// The setting refused when the stored settings no longer validate (for
    /// instance after an upgrade tightened a rule).
    pub fn pinned_spec(&self, name: &str) -> Result<AppSpec, InvalidSetting> {
        let mut spec = AppSpec::from_config(name, &self.config, Path::new("/"))?;
        if let (Source::Image(_), Some(pinned)) = (&spec.source, &self.pinned) {
            spec.source = Source::Image(pinned.clone());
        }
        Ok(spec)
    }
}

/// The state file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// It could not be read or written.
    #[error("cannot {action} state file `{}`: {source}", path.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a state file this build understands.
    #[error(
        "state file `{}` is unusable: {reason}; move it away to start without the apps it lists",
        path.display()
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The number at the end of a revision id `<app>-<n>`.
pub fn revision_number(revision: &str) -> Option<u64> {
    revision.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::NetworkMode;

    #[test]
    fn app_config_validates_back_to_the_same_spec() {
        let mut spec = AppSpec::wasm("/srv/app.wasm");
        spec.routes = vec!["/api".into()];
        spec.env.insert("K".into(), "V".into());
        spec.secrets
            .insert("DB_PASSWORD".into(), "db-password".into());
        spec.allowed_outbound_hosts = vec!["*.example.com".into()];
        spec.limits.memory = 64 << 20;
        spec.limits.timeout = Duration::from_millis(1500);
        let a = &mut spec.scaling.autoscale;
        a.concurrency = Some(4);
        a.min_scale = 1;
        a.max_scale = 7;
        a.target = Some(3.5);
        a.utilization = 0.5;
        a.stable_window = Duration::from_secs(6);
        a.scale_to_zero_grace = Duration::ZERO;
        a.tick = Duration::from_millis(100);
        a.initial_scale = 2;
        spec.scaling.queue_depth = Some(9);
        spec.container.network = NetworkMode::Isolated;
        spec.container.readiness_path = Some("/ready".into());
        spec.container.shutdown_grace = Duration::from_secs(3);
        spec.container.cpu = Some(0.5);
        spec.container.pids = Some(64);
        let config = spec.to_config();
        let back = AppSpec::from_config("x", &config, Path::new("/elsewhere")).unwrap();
        assert_eq!(back, spec);
        // And through JSON, as the state file and the API carry it.
        let json = serde_json::to_string(&config).unwrap();
        let again: AppConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(again, config);

        let image = AppSpec::image("127.0.0.1:5000/hello:v1");
        let config = image.to_config();
        assert_eq!(
            serde_json::to_value(&config).unwrap(),
            serde_json::json!({"image": "127.0.0.1:5000/hello:v1"}),
            "defaults are left out"
        );
    }

    #[test]
    fn revision_numbers_parse() {
        assert_eq!(revision_number("hello-00042"), Some(42));
        assert_eq!(revision_number("my-app-00001"), Some(1));
        assert_eq!(revision_number("nonumber"), None);
    }
}
