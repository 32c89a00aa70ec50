//! `wasi:config/store` for an app: its `config` table, its
//! `config_secrets` (each resolved from the secret store when the guest
//! reads it, never kept or logged), and values set through the admin API
//! (`PUT /v1/apps/NAME/config/KEY`), which win over the table and take
//! effect on the next read without a new revision. The API's values are
//! kept in `<data-dir>/config-values.json`, written atomically.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::AppSpec;
use crate::config::spec::{MAX_CONFIG_KEYS, validate_config_key, validate_config_value};
use crate::secrets::SecretStore;

type Values = BTreeMap<String, String>;

/// The values set through the API, by app.
#[derive(Debug)]
pub struct LiveConfig {
    path: PathBuf,
    apps: Mutex<BTreeMap<String, Arc<ArcSwap<Values>>>>,
}

impl LiveConfig {
    /// Reads `<data_dir>/config-values.json` (none: empty).
    ///
    /// # Errors
    /// A file that cannot be read or parsed, named.
    pub fn open(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let path = data_dir.join("config-values.json");
        let stored: BTreeMap<String, Values> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("`{}` is not valid: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => anyhow::bail!("cannot read `{}`: {e}", path.display()),
        };
        Ok(Self {
            path,
            apps: Mutex::new(
                stored
                    .into_iter()
                    .map(|(app, v)| (app, Arc::new(ArcSwap::from_pointee(v))))
                    .collect(),
            ),
        })
    }

    fn slot(&self, app: &str) -> Arc<ArcSwap<Values>> {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_string())
            .or_default()
            .clone()
    }

    /// What `app`'s guests read: `spec`'s table and secrets under the
    /// API's values.
    pub fn source(&self, app: &str, spec: &AppSpec, secrets: Arc<SecretStore>) -> AppConfigSource {
        AppConfigSource {
            live: self.slot(app),
            table: spec.config.clone(),
            secret_names: spec.config_secrets.clone(),
            secrets,
        }
    }

    /// Sets (`Some`) or removes (`None`) `key` for `app`; persisted before
    /// it is seen.
    ///
    /// # Errors
    /// A key or value out of bounds (the reason), or the file not written.
    pub fn set(&self, app: &str, key: &str, value: Option<String>) -> Result<(), String> {
        validate_config_key(key)?;
        if let Some(v) = &value {
            validate_config_value(v)?;
        }
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let current = apps.get(app).map(|s| s.load_full()).unwrap_or_default();
        let mut next = (*current).clone();
        match value {
            Some(v) => {
                next.insert(key.to_string(), v);
            }
            None => {
                next.remove(key);
            }
        }
        if next.len() > MAX_CONFIG_KEYS {
            return Err(format!(
                "app `{app}` would have more than {MAX_CONFIG_KEYS} config values set through the API"
            ));
        }
        let mut all: BTreeMap<&str, Values> = apps
            .iter()
            .map(|(a, v)| (a.as_str(), (*v.load_full()).clone()))
            .collect();
        all.insert(app, next.clone());
        all.retain(|_, v| !v.is_empty());
        let bytes = serde_json::to_vec_pretty(&all).map_err(|e| e.to_string())?;
        berth_wasm::files::write_atomic(&self.path, &bytes)
            .map_err(|e| format!("cannot write `{}`: {e}", self.path.display()))?;
        drop(apps);
        self.slot(app).store(Arc::new(next));
        Ok(())
    }

    /// The values set through the API for `app`.
    pub fn values(&self, app: &str) -> Values {
        (*self.slot(app).load_full()).clone()
    }
}

/// One app's `wasi:config` values, read afresh at each call.
pub struct AppConfigSource {
    live: Arc<ArcSwap<Values>>,
    table: Values,
    secret_names: Values,
    secrets: Arc<SecretStore>,
}

impl std::fmt::Debug for AppConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfigSource").finish_non_exhaustive()
    }
}

impl AppConfigSource {
    fn secret(&self, key: &str, name: &str) -> Result<String, String> {
        self.secrets
            .get(name)
            .map(|v| v.expose().to_string())
            .map_err(|e| format!("config key `{key}`: {e}"))
    }
}

impl berth_wasm::keyvalue::ConfigSource for AppConfigSource {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        if let Some(v) = self.live.load().get(key) {
            return Ok(Some(v.clone()));
        }
        if let Some(v) = self.table.get(key) {
            return Ok(Some(v.clone()));
        }
        match self.secret_names.get(key) {
            Some(name) => self.secret(key, name).map(Some),
            None => Ok(None),
        }
    }

    fn get_all(&self) -> Result<Vec<(String, String)>, String> {
        let mut all = self.table.clone();
        for (key, name) in &self.secret_names {
            all.insert(key.clone(), self.secret(key, name)?);
        }
        for (k, v) in self.live.load().iter() {
            all.insert(k.clone(), v.clone());
        }
        Ok(all.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_wasm::keyvalue::ConfigSource as _;

    #[test]
    fn api_values_win_persist_and_secrets_resolve_at_read() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Arc::new(SecretStore::open(dir.path(), None).unwrap());
        let mut spec = AppSpec::wasm("/x.wasm");
        spec.config.insert("a".into(), "table".into());
        spec.config_secrets.insert("s".into(), "sec".into());
        let live = LiveConfig::open(dir.path()).unwrap();
        let source = live.source("app", &spec, secrets.clone());
        assert_eq!(source.get("a").unwrap().as_deref(), Some("table"));
        assert!(
            source
                .get("s")
                .unwrap_err()
                .contains("secret `sec` does not exist")
        );
        secrets.set("sec", "v1").unwrap();
        assert_eq!(source.get("s").unwrap().as_deref(), Some("v1"));
        live.set("app", "a", Some("api".into())).unwrap();
        assert_eq!(source.get("a").unwrap().as_deref(), Some("api"));
        assert!(live.set("app", "bad key", Some("x".into())).is_err());
        // Another app's values are its own.
        assert_eq!(live.values("other"), Values::new());
        let reopened = LiveConfig::open(dir.path()).unwrap();
        assert_eq!(
            reopened.values("app").get("a").map(String::as_str),
            Some("api")
        );
        live.set("app", "a", None).unwrap();
        assert_eq!(source.get("a").unwrap().as_deref(), Some("table"));
        assert_eq!(
            source.get_all().unwrap(),
            vec![("a".into(), "table".into()), ("s".into(), "v1".into())]
        );
    }
}
