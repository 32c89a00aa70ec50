//! Persistence: `state.json`, read once at open, rewritten whole (and
//! atomically) on every change.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::plan::{RestoreErrors, StartPlan};
use super::{STATE_FILE, STATE_VERSION, StateError, StoredApp, revision_number};
use crate::config::Config;
use crate::files::write_atomic;

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

/// The persisted apps of one data directory.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    file: Mutex<StateFile>,
    /// Why stored apps could not be restored; an entry goes when its app is
    /// recorded again or forgotten.
    restore_errors: RestoreErrors,
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
            restore_errors: RestoreErrors::default(),
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
        self.restore_errors.clear(&names);
        Ok(())
    }

    /// Forgets every app of `names` and writes the file once (if any was
    /// stored). Returns how many were stored.
    ///
    /// # Errors
    /// When the file cannot be written; the state is then unchanged.
    pub fn forget_many(&self, names: &[String]) -> Result<usize, StateError> {
        let mut file = self.lock();
        self.restore_errors.clear(names);
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
    /// admin API until the app is deployed again or forgotten).
    pub fn set_restore_error(&self, name: &str, reason: String) {
        self.restore_errors.set(name, reason);
    }

    /// Why a stored app is not running, if its restore failed.
    pub fn restore_error(&self, name: &str) -> Option<String> {
        self.restore_errors.get(name)
    }

    /// Merges `config` with the stored apps (see the [module docs](super)).
    pub fn plan(&self, config: &Config) -> StartPlan {
        super::plan::plan(&self.apps(), config)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Kind;
    use crate::config::AppSpec;
    use crate::state::{Origin, Record};

    fn stored(record: &Record, revision: &str, pinned: Option<&str>, sha: &str) -> StoredApp {
        StoredApp::new(
            record,
            pinned.map(str::to_string),
            revision.into(),
            sha.into(),
            Kind::Wasm,
        )
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

    /// A state file written before the kind was an enum (and by every berth
    /// since: the strings on disk are the same) still loads, kinds and all.
    #[test]
    fn an_existing_state_file_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{
  "version": 1,
  "last_revision": 12,
  "apps": {
    "hello": {
      "config": { "wasm": "/srv/hello.wasm", "routes": ["/hello"] },
      "origin": "api",
      "revision": "hello-00012",
      "sha256": "ab",
      "kind": "wasm",
      "deployed_at": "2026-12-01T10:00:00Z"
    },
    "web": {
      "config": { "image": "127.0.0.1:5000/web:v1" },
      "origin": "config",
      "pinned": "127.0.0.1:5000/web@sha256:0123",
      "revision": "web-00003",
      "sha256": "cd",
      "kind": "container",
      "deployed_at": "2026-12-01T10:00:01Z"
    }
  }
}
"#;
        std::fs::write(dir.path().join(STATE_FILE), text).unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.last_revision(), 12);
        let apps = store.apps();
        assert_eq!(apps["hello"].kind, Kind::Wasm);
        assert_eq!(apps["hello"].origin, Origin::Api);
        assert_eq!(apps["web"].kind, Kind::Container);
        assert_eq!(
            apps["web"].pinned.as_deref(),
            Some("127.0.0.1:5000/web@sha256:0123")
        );
        // Written back, the kinds are the same strings.
        store.forget("hello").unwrap();
        let again: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(STATE_FILE)).unwrap()).unwrap();
        assert_eq!(again["apps"]["web"]["kind"], "container");
        // A kind this build does not know is refused, naming the key.
        std::fs::write(
            dir.path().join(STATE_FILE),
            text.replace("\"kind\": \"wasm\"", "\"kind\": \"vm\""),
        )
        .unwrap();
        let msg = StateStore::open(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("apps.hello.kind"), "{msg}");
    }
}
