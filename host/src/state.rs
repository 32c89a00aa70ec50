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

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::{AppConfig, AppSpec, Config, InvalidSetting, Source};
use crate::files::write_atomic;

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
    /// `wasm` or `container`.
    pub kind: String,
    /// When the revision was deployed (RFC 3339, UTC).
    pub deployed_at: String,
}

impl StoredApp {
    /// What to store after a deploy of `record` succeeded as `revision`,
    /// serving code `sha256` of `kind` (`wasm` or `container`), pinned to
    /// `pinned` for an image.
    pub fn new(
        record: &Record,
        pinned: Option<String>,
        revision: String,
        sha256: String,
        kind: &str,
    ) -> Self {
        Self {
            config: record.config.clone(),
            origin: record.origin,
            pinned,
            revision,
            sha256,
            kind: kind.to_string(),
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

/// The file's layout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    /// Highest revision number ever handed out, so ids are never reused,
    /// even for an app deleted and created again.
    last_revision: u64,
    apps: BTreeMap<String, StoredApp>,
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

/// An app to deploy at start, as [`StateStore::plan`] decided.
#[derive(Debug, Clone)]
pub struct PlannedApp {
    /// The app.
    pub name: String,
    /// What to deploy (an unchanged image by its pinned digest).
    pub spec: AppSpec,
    /// What to record once deployed.
    pub record: Record,
}

/// An app of the state file that cannot be deployed again as stored.
#[derive(Debug, Clone)]
pub struct Unrestorable {
    /// The app.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// How to bring a host up from its config file and its state.
#[derive(Debug, Clone, Default)]
pub struct StartPlan {
    /// The config file's apps, in name order. Failing to deploy one fails the
    /// start, as without state.
    pub config: Vec<PlannedApp>,
    /// Apps made through the API, in name order. Failing to deploy one is
    /// reported ([`StateStore::set_restore_error`]) and the start goes on;
    /// the app stays in the state, so the next start tries again.
    pub restore: Vec<PlannedApp>,
    /// Stored apps whose settings no longer validate (kept, reported).
    pub unrestorable: Vec<Unrestorable>,
    /// Apps that came from the config file and are no longer in it: to
    /// forget.
    pub forget: Vec<String>,
}

/// The persisted apps of one data directory.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    file: Mutex<StateFile>,
    restore_errors: Mutex<BTreeMap<String, String>>,
    app_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Times the file was written since it was opened.
    writes: AtomicU64,
}

impl StateStore {
    /// Opens the state of `data_dir` (an absent file is an empty state).
    ///
    /// # Errors
    /// [`StateError`] when the file exists but cannot be read or parsed, or
    /// was written by a newer berth. Starting anyway would silently drop the
    /// apps it lists, so the host refuses to start instead.
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        let path = data_dir.join(STATE_FILE);
        let file = match std::fs::File::open(&path) {
            Ok(mut f) => {
                let mut text = String::new();
                f.read_to_string(&mut text)
                    .map_err(|source| StateError::Io {
                        action: "read",
                        path: path.clone(),
                        source,
                    })?;
                parse(&text).map_err(|reason| StateError::Invalid {
                    path: path.clone(),
                    reason,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile {
                version: STATE_VERSION,
                ..StateFile::default()
            },
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        Ok(Self {
            path,
            file: Mutex::new(file),
            restore_errors: Mutex::new(BTreeMap::new()),
            app_locks: Mutex::new(BTreeMap::new()),
            writes: AtomicU64::new(0),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times the file was written since it was opened (each
    /// write is a whole file, synced: a batch deploy at start writes it
    /// once).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// One stored app.
    pub fn get(&self, name: &str) -> Option<StoredApp> {
        self.lock().apps.get(name).cloned()
    }

    /// Every stored app, by name.
    pub fn apps(&self) -> BTreeMap<String, StoredApp> {
        self.lock().apps.clone()
    }

    /// The highest revision number handed out so far: seed the revision
    /// counter with it.
    pub fn last_revision(&self) -> u64 {
        self.lock().last_revision
    }

    /// Stores `app` under `name` and writes the file. Call it while holding
    /// whatever orders deploys of one app (the server's app table lock), so
    /// the file and the running apps agree on the last deploy.
    ///
    /// # Errors
    /// When the file cannot be written; the state is then unchanged.
    pub fn record(&self, name: &str, app: StoredApp) -> Result<(), StateError> {
        self.record_many(vec![(name.to_string(), app)])
    }

    /// Stores every app of `apps` (name, app) and writes the file once: a
    /// host that deploys its apps at start as one batch pays one write (one
    /// `fsync`) for all of them, not one rewrite of the whole file per app.
    /// As [`record`](Self::record), under whatever orders deploys.
    ///
    /// # Errors
    /// When the file cannot be written; the state is then unchanged.
    pub fn record_many(&self, apps: Vec<(String, StoredApp)>) -> Result<(), StateError> {
        if apps.is_empty() {
            return Ok(());
        }
        let mut file = self.lock();
        let mut next = file.clone();
        let names: Vec<String> = apps.iter().map(|(n, _)| n.clone()).collect();
        for (name, mut app) in apps {
            if let Some(old) = next.apps.get(&name)
                && old.revision == app.revision
            {
                app.deployed_at.clone_from(&old.deployed_at);
            }
            if let Some(n) = revision_number(&app.revision) {
                next.last_revision = next.last_revision.max(n);
            }
            next.apps.insert(name, app);
        }
        self.write(&next)?;
        *file = next;
        drop(file);
        let mut errors = self
            .restore_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for name in &names {
            errors.remove(name);
        }
        Ok(())
    }

    /// Forgets every app of `names` and writes the file once (if any was
    /// stored). Returns how many were stored.
    ///
    /// # Errors
    /// When the file cannot be written; the state is then unchanged.
    pub fn forget_many(&self, names: &[String]) -> Result<usize, StateError> {
        let mut file = self.lock();
        {
            let mut errors = self
                .restore_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for name in names {
                errors.remove(name);
            }
        }
        let mut next = file.clone();
        let forgotten = names
            .iter()
            .filter(|n| next.apps.remove(n.as_str()).is_some())
            .count();
        if forgotten > 0 {
            self.write(&next)?;
            *file = next;
        }
        Ok(forgotten)
    }

    /// Forgets `name` and writes the file. Returns whether it was stored.
    ///
    /// # Errors
    /// When the file cannot be written; the state is then unchanged.
    pub fn forget(&self, name: &str) -> Result<bool, StateError> {
        self.forget_many(&[name.to_string()]).map(|n| n > 0)
    }

    /// Notes why a stored app could not be deployed at start (shown by the
    /// admin API until the app is deployed again or deleted).
    pub fn set_restore_error(&self, name: &str, reason: String) {
        self.restore_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), reason);
    }

    /// Why a stored app is not running, if its restore failed.
    pub fn restore_error(&self, name: &str) -> Option<String> {
        self.restore_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// A lock that serialises read-modify-write changes of one app (the
    /// admin API holds it across a scale or deploy, so two concurrent
    /// changes cannot lose one another).
    pub async fn lock_app(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .app_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Merges `config` with the stored apps (see the [module docs](self)).
    pub fn plan(&self, config: &Config) -> StartPlan {
        let stored = self.apps();
        let mut plan = StartPlan::default();
        // Many apps may run one file: hash each file once.
        let mut hashes = FileHashes::default();
        for (name, spec) in &config.apps {
            let as_config = spec.to_config();
            let mut spec = spec.clone();
            let mut revision = None;
            if let Some(old) = stored.get(name)
                && old.config == as_config
                && same_code(old, &spec, &mut hashes)
            {
                if let (Source::Image(_), Some(pinned)) = (&spec.source, &old.pinned) {
                    spec.source = Source::Image(pinned.clone());
                }
                revision = Some(old.revision.clone());
            }
            plan.config.push(PlannedApp {
                name: name.clone(),
                spec,
                record: Record {
                    config: as_config,
                    origin: Origin::Config,
                    revision,
                },
            });
        }
        for (name, old) in stored {
            if config.apps.contains_key(&name) {
                continue;
            }
            match old.origin {
                Origin::Config => plan.forget.push(name),
                Origin::Api => match old.pinned_spec(&name) {
                    Ok(spec) => {
                        let revision =
                            same_code(&old, &spec, &mut hashes).then(|| old.revision.clone());
                        plan.restore.push(PlannedApp {
                            name,
                            spec,
                            record: Record {
                                config: old.config,
                                origin: Origin::Api,
                                revision,
                            },
                        });
                    }
                    Err(e) => plan.unrestorable.push(Unrestorable {
                        name,
                        reason: e.to_string(),
                    }),
                },
            }
        }
        plan
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StateFile> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, file: &StateFile) -> Result<(), StateError> {
        let mut text = serde_json::to_vec_pretty(file).map_err(|e| StateError::Io {
            action: "write",
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        text.push(b'\n');
        write_atomic(&self.path, &text).map_err(|source| StateError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        })?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn parse(text: &str) -> Result<StateFile, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or("no `version`")?;
    if version != u64::from(STATE_VERSION) {
        return Err(format!(
            "it has version {version}, this berth reads version {STATE_VERSION}"
        ));
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| format!("key `{}`: {}", e.path(), e.inner()))
}

/// Whether the code `spec` would deploy is the code `old` recorded: an
/// image pinned to a digest is (blobs are content-addressed); a Wasm file is
/// when its bytes hash to the recorded sha256.
fn same_code(old: &StoredApp, spec: &AppSpec, hashes: &mut FileHashes) -> bool {
    match &spec.source {
        Source::Image(_) => old.pinned.is_some(),
        Source::Wasm(path) => hashes
            .entry(path.clone())
            .or_insert_with(|| file_sha256(path))
            .as_deref()
            .is_some_and(|sha| sha.eq_ignore_ascii_case(&old.sha256)),
    }
}

/// The sha256 of each file read so far by one [`StateStore::plan`] (`None`:
/// unreadable).
type FileHashes = std::collections::HashMap<PathBuf, Option<String>>;

fn file_sha256(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).ok()?;
    Some(hex::encode(hasher.finalize()))
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

    fn stored(record: &Record, revision: &str, pinned: Option<&str>, sha: &str) -> StoredApp {
        StoredApp::new(
            record,
            pinned.map(str::to_string),
            revision.into(),
            sha.into(),
            "wasm",
        )
    }

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
    fn records_survive_a_reopen_and_revision_numbers_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert!(store.apps().is_empty());
        let rec = Record::from_spec(&AppSpec::wasm("/a.wasm"), Origin::Api);
        store
            .record("a", stored(&rec, "a-00007", None, "aa"))
            .unwrap();
        store
            .record("b", stored(&rec, "b-00003", None, "bb"))
            .unwrap();
        assert!(store.forget("a").unwrap());
        assert!(!store.forget("a").unwrap());

        let again = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            again.last_revision(),
            7,
            "a deleted app's number stays used"
        );
        let apps = again.apps();
        assert_eq!(apps.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(apps["b"].revision, "b-00003");
        assert_eq!(apps["b"].config.wasm.as_deref(), Some(Path::new("/a.wasm")));
        // No temporary files are left next to it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATE_FILE]);
    }

    #[test]
    fn an_unusable_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        for (text, needle) in [
            ("{", "not valid JSON"),
            (
                "{\"version\": 99, \"last_revision\": 0, \"apps\": {}}",
                "version 99",
            ),
            (
                "{\"version\": 1, \"last_revision\": 0, \"apps\": {\"a\": {\"config\": {}}}}",
                "apps.a",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let msg = StateStore::open(dir.path()).unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg}");
            assert!(msg.contains(STATE_FILE), "{msg}");
        }
    }

    #[test]
    fn plan_merges_the_config_file_with_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("app.wasm");
        std::fs::write(&wasm, b"code").unwrap();
        let sha = hex::encode(Sha256::digest(b"code"));
        let store = StateStore::open(dir.path()).unwrap();

        let file_app = AppSpec::wasm(&wasm);
        let tagged = AppSpec::image("r.example/img:v1");
        let pinned = "r.example/img@sha256:0123";
        store
            .record(
                "same",
                stored(
                    &Record::from_spec(&file_app, Origin::Config),
                    "same-00001",
                    None,
                    &sha,
                ),
            )
            .unwrap();
        store
            .record(
                "img",
                stored(
                    &Record::from_spec(&tagged, Origin::Config),
                    "img-00002",
                    Some(pinned),
                    "ff",
                ),
            )
            .unwrap();
        store
            .record(
                "gone",
                stored(
                    &Record::from_spec(&file_app, Origin::Config),
                    "gone-00003",
                    None,
                    &sha,
                ),
            )
            .unwrap();
        store
            .record(
                "made",
                stored(
                    &Record::api(tagged.to_config()),
                    "made-00004",
                    Some(pinned),
                    "ff",
                ),
            )
            .unwrap();
        let mut scaled = file_app.clone();
        scaled.scaling.autoscale.min_scale = 2;
        store
            .record(
                "over",
                stored(
                    &Record::from_spec(&scaled, Origin::Api),
                    "over-00005",
                    None,
                    &sha,
                ),
            )
            .unwrap();
        let mut changed_code = file_app.clone();
        changed_code.source = Source::Wasm(wasm.clone());
        store
            .record(
                "rebuilt",
                stored(
                    &Record::from_spec(&changed_code, Origin::Config),
                    "rebuilt-00006",
                    None,
                    "00",
                ),
            )
            .unwrap();

        let mut config = Config::default();
        for name in ["same", "img", "over", "rebuilt", "new"] {
            let spec = if name == "img" {
                tagged.clone()
            } else {
                file_app.clone()
            };
            config.apps.insert(name.into(), spec);
        }
        let plan = store.plan(&config);
        let by_name =
            |list: &[PlannedApp], n: &str| list.iter().find(|p| p.name == n).cloned().unwrap();

        let same = by_name(&plan.config, "same");
        assert_eq!(same.record.revision.as_deref(), Some("same-00001"));
        assert_eq!(same.record.origin, Origin::Config);

        let img = by_name(&plan.config, "img");
        assert_eq!(img.spec.source, Source::Image(pinned.into()), "by digest");
        assert_eq!(img.record.config.image.as_deref(), Some("r.example/img:v1"));
        assert_eq!(img.record.revision.as_deref(), Some("img-00002"));

        let over = by_name(&plan.config, "over");
        assert_eq!(over.spec, file_app, "the file wins");
        assert_eq!(over.record.revision, None, "settings changed: new revision");
        assert_eq!(over.record.origin, Origin::Config);

        let rebuilt = by_name(&plan.config, "rebuilt");
        assert_eq!(rebuilt.record.revision, None, "code changed: new revision");
        assert_eq!(by_name(&plan.config, "new").record.revision, None);

        assert_eq!(plan.forget, ["gone"]);
        assert_eq!(plan.restore.len(), 1);
        let made = &plan.restore[0];
        assert_eq!(made.name, "made");
        assert_eq!(made.spec.source, Source::Image(pinned.into()));
        assert_eq!(made.record.origin, Origin::Api);
        assert_eq!(made.record.revision.as_deref(), Some("made-00004"));
        assert!(plan.unrestorable.is_empty());
    }

    #[test]
    fn revision_numbers_parse() {
        assert_eq!(revision_number("hello-00042"), Some(42));
        assert_eq!(revision_number("my-app-00001"), Some(1));
        assert_eq!(revision_number("nonumber"), None);
    }
}
