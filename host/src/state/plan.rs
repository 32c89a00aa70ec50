//! The start plan: how the config file and the stored apps merge (see the
//! [module docs](super)), and why a stored app could not be restored.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::hash::FileHashes;
use super::{Origin, Record, StoredApp};
use crate::config::{AppSpec, Config, Source};

/// An app to deploy at start, as [`plan`] decided.
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
    /// reported (the app is listed as failed and retried) and the start goes
    /// on; the app stays in the state, so the next start tries again.
    pub restore: Vec<PlannedApp>,
    /// Stored apps whose settings no longer validate (kept, reported through
    /// [`RestoreErrors`]).
    pub unrestorable: Vec<Unrestorable>,
    /// Apps that came from the config file and are no longer in it: to
    /// forget.
    pub forget: Vec<String>,
}

/// Merges `config` with the `stored` apps (see the [module docs](super)).
pub fn plan(stored: &BTreeMap<String, StoredApp>, config: &Config) -> StartPlan {
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
        if config.apps.contains_key(name) {
            continue;
        }
        match old.origin {
            Origin::Config => plan.forget.push(name.clone()),
            Origin::Api => match old.pinned_spec(name) {
                Ok(spec) => {
                    let revision = same_code(old, &spec, &mut hashes).then(|| old.revision.clone());
                    plan.restore.push(PlannedApp {
                        name: name.clone(),
                        spec,
                        record: Record {
                            config: old.config.clone(),
                            origin: Origin::Api,
                            revision,
                        },
                    });
                }
                Err(e) => plan.unrestorable.push(Unrestorable {
                    name: name.clone(),
                    reason: e.to_string(),
                }),
            },
        }
    }
    plan
}

/// Whether the code `spec` would deploy is the code `old` recorded: an
/// image pinned to a digest is (blobs are content-addressed); a Wasm file is
/// when its bytes hash to the recorded sha256.
fn same_code(old: &StoredApp, spec: &AppSpec, hashes: &mut FileHashes) -> bool {
    match &spec.source {
        Source::Image(_) => old.pinned.is_some(),
        Source::Wasm(path) => hashes
            .sha256(path)
            .is_some_and(|sha| sha.eq_ignore_ascii_case(&old.sha256)),
    }
}

/// Why stored apps could not be deployed at start, by app: shown by the
/// admin API until the app is recorded again or forgotten.
#[derive(Debug, Default)]
pub struct RestoreErrors(Mutex<BTreeMap<String, String>>);

impl RestoreErrors {
    /// Notes why `name` could not be restored.
    pub fn set(&self, name: &str, reason: String) {
        self.lock().insert(name.to_string(), reason);
    }

    /// Why `name` could not be restored, if it could not.
    pub fn get(&self, name: &str) -> Option<String> {
        self.lock().get(name).cloned()
    }

    /// Forgets the reasons of `names` (recorded again, or forgotten).
    pub fn clear(&self, names: &[String]) {
        let mut errors = self.lock();
        for name in names {
            errors.remove(name);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::backend::Kind;
    use crate::state::StateStore;

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
    fn restore_errors_go_when_their_app_is_recorded_or_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.set_restore_error("a", "key `x`: bad".into());
        store.set_restore_error("b", "key `y`: bad".into());
        assert_eq!(store.restore_error("a").as_deref(), Some("key `x`: bad"));
        let rec = Record::from_spec(&AppSpec::wasm("/a.wasm"), Origin::Api);
        store
            .record("a", stored(&rec, "a-00001", None, "aa"))
            .unwrap();
        assert_eq!(store.restore_error("a"), None, "recorded again");
        store.forget("b").unwrap();
        assert_eq!(store.restore_error("b"), None, "forgotten");
    }
}
