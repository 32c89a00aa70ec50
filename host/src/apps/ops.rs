//! The operations on one app that the admin API and the web console share,
//! with typed requests and answers: [`Apps::put`] (deploy from settings as a
//! user writes them), [`Apps::scale`], [`Apps::set_traffic`],
//! [`Apps::delete`], and the read views ([`Apps::list`], [`Apps::view`],
//! [`Apps::buckets`], [`Apps::figures`], [`Apps::cold_start_figures`]).
//!
//! Each change of one app holds that app's lock ([`Apps::lock_app`]) for its
//! read-modify-write, so a scale and a deploy of the same app cannot lose
//! one another's settings. Errors are [`OpError`]; the API maps each variant
//! to a status in one place, the console shows its text.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Apps;
use super::view::{AppList, AppView, BucketView, KeyvalueView};
use crate::config::{AppConfig, AppSpec, Source, validate_label};
use crate::metrics::{AppCounters, Buckets};
use crate::state::{Record, StateError, StoredApp};

/// The body of `POST /v1/apps/{name}/scale`: the bounds to change (at least
/// one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// Instances kept even when idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_scale: Option<u32>,
    /// Most instances (1 to 10,000; default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale: Option<u32>,
}

/// The body of `POST /v1/apps/{name}/traffic`: the latest revision's share
/// of new requests; the one before it gets the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficRequest {
    /// 0 to 100; at 100 the older revision is retired.
    pub latest_percent: u32,
}

/// A deploy of settings as a user writes them (`PUT /v1/apps/{name}`, the
/// console's deploy form).
#[derive(Debug, Clone, PartialEq)]
pub struct PutRequest {
    /// The settings: the shape of an `[apps.NAME]` table; `wasm` an absolute
    /// path on this host.
    pub config: AppConfig,
    /// The new revision's share of new requests (below 100: a canary).
    pub traffic_percent: u32,
}

/// What [`Apps::put`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Put {
    /// The app after the deploy.
    pub app: AppView,
    /// Whether no app of that name existed before.
    pub created: bool,
}

/// Why an operation on an app was refused or failed. The text is what the
/// admin API answers and the console shows.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No app of that name.
    #[error("no app `{0}`")]
    UnknownApp(String),
    /// A request or setting that is refused; `key` names it where there is
    /// one (`name`, `traffic`, `wasm`, a dotted settings key).
    #[error("{message}")]
    Invalid {
        /// The refused key, if there is one.
        key: Option<String>,
        /// Why, for a human.
        message: String,
    },
    /// The deploy failed: why, typed.
    #[error(transparent)]
    Deploy(#[from] super::DeployError),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The app was deleted while it was being deployed.
    #[error("app `{0}` was removed while it was being deployed")]
    Removed(String),
}

impl OpError {
    /// A refusal of `key` (or of the request, without one), worded whole.
    pub fn invalid(key: Option<&str>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.map(str::to_string),
            message: message.into(),
        }
    }

    /// A setting that does not validate: `key `KEY`: REASON` (just the
    /// reason when the key is empty).
    pub fn setting(key: &str, reason: &str) -> Self {
        if key.is_empty() {
            Self::invalid(None, reason)
        } else {
            Self::invalid(Some(key), format!("key `{key}`: {reason}"))
        }
    }
}

/// The cold starts of one kind on this host.
#[derive(Debug, Clone, PartialEq)]
pub struct ColdStarts {
    /// `wasm` or `container`.
    pub kind: crate::backend::Kind,
    /// Instances started.
    pub count: u64,
    /// How long they took, cumulative buckets in seconds.
    pub durations: Buckets,
}

/// Refuses a name that is not a DNS label.
///
/// # Errors
/// [`OpError::Invalid`] with key `name`.
pub fn check_name(name: &str) -> Result<(), OpError> {
    validate_label(name).map_err(|reason| OpError::invalid(Some("name"), reason))
}

/// Refuses a canary share above 100 percent.
///
/// # Errors
/// [`OpError::Invalid`] with key `traffic`.
pub fn check_traffic(percent: u32) -> Result<u32, OpError> {
    if percent > 100 {
        return Err(OpError::invalid(
            Some("traffic"),
            "`traffic` is a percentage from 0 to 100",
        ));
    }
    Ok(percent)
}

impl Apps {
    /// Takes the lock that serialises read-modify-write changes of app
    /// `name` (held until the guard drops).
    pub async fn lock_app(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(name).await
    }

    /// Every app: the running ones, those waiting for a retry, and those the
    /// state remembers but could not restore; by name.
    pub fn list(&self) -> AppList {
        let stored = self.state.apps();
        let running = self.status();
        let mut views: Vec<AppView> = running
            .iter()
            .map(|s| AppView::running(s, stored.get(&s.deployed.name)))
            .collect();
        for failed in self.failed() {
            if !running.iter().any(|s| s.deployed.name == failed.name) {
                views.push(AppView::failed(&failed, stored.get(&failed.name)));
            }
        }
        for (name, app) in &stored {
            if !running.iter().any(|s| &s.deployed.name == name)
                && !views.iter().any(|v| &v.name == name)
            {
                views.push(AppView::not_running(
                    name,
                    app,
                    self.state.restore_error(name),
                ));
            }
        }
        views.sort_by(|a, b| a.name.cmp(&b.name));
        AppList { apps: views }
    }

    /// App `name` as [`Apps::list`] shows it.
    ///
    /// # Errors
    /// [`OpError::UnknownApp`].
    pub fn view(&self, name: &str) -> Result<AppView, OpError> {
        let stored = self.state.get(name);
        if let Some(status) = self.status().into_iter().find(|s| s.deployed.name == name) {
            return Ok(AppView::running(&status, stored.as_ref()));
        }
        if let Some(failed) = self.failed_app(name) {
            return Ok(AppView::failed(&failed, stored.as_ref()));
        }
        stored
            .map(|app| AppView::not_running(name, &app, self.state.restore_error(name)))
            .ok_or_else(|| OpError::UnknownApp(name.to_string()))
    }

    /// What each declared `wasi:keyvalue` bucket of app `name` holds (counts
    /// only, never a key or a value; a store that cannot say is named per
    /// bucket).
    ///
    /// # Errors
    /// [`OpError::UnknownApp`].
    pub async fn buckets(&self, name: &str) -> Result<KeyvalueView, OpError> {
        let declared = self.view(name)?.config.keyvalue;
        let usage = self.runtime.keyvalue().bucket_usage(name, &declared).await;
        Ok(KeyvalueView {
            buckets: usage
                .into_iter()
                .map(|u| {
                    let (keys, bytes, error) = match u.usage {
                        Ok((k, b)) => (Some(k), Some(b), None),
                        Err(e) => (None, None, Some(e)),
                    };
                    BucketView {
                        bucket: u.bucket,
                        store: u.store,
                        keys,
                        bytes,
                        error,
                    }
                })
                .collect(),
        })
    }

    /// The counters of each app of `names` now (requests, latency,
    /// metering), as a scrape of `/metrics` at this moment would report them.
    pub fn figures(&self, names: &[&str]) -> Vec<AppCounters> {
        self.metrics.sample(&self.snapshots());
        names
            .iter()
            .map(|name| self.metrics.app_counters(name))
            .collect()
    }

    /// The cold starts of each kind on this host.
    pub fn cold_start_figures(&self) -> Vec<ColdStarts> {
        [crate::backend::Kind::Wasm, crate::backend::Kind::Container]
            .into_iter()
            .map(|kind| {
                let (count, durations) = self.metrics.cold_starts(kind.as_str());
                ColdStarts {
                    kind,
                    count,
                    durations,
                }
            })
            .collect()
    }

    /// Deploys (or replaces) app `name` from settings as a user writes them;
    /// below 100 percent, as a canary beside the revision serving most.
    ///
    /// # Errors
    /// [`OpError::Invalid`] for a bad name, share, path or setting;
    /// [`OpError::Deploy`] when the deploy fails; [`OpError::Removed`] when
    /// the app was deleted meanwhile.
    pub async fn put(&self, name: &str, req: PutRequest) -> Result<Put, OpError> {
        check_name(name)?;
        check_traffic(req.traffic_percent)?;
        let spec = put_spec(name, &req.config)?;
        let _guard = self.lock_app(name).await;
        let created = self.view(name).is_err();
        let deployed = self
            .deploy_with_traffic(name, &spec, Record::api(req.config), req.traffic_percent)
            .await
            .map_err(OpError::Deploy)?;
        tracing::debug!(app = name, revision = %deployed.revision, created, "put");
        match self.view(name) {
            Ok(app) => Ok(Put { app, created }),
            Err(_) => Err(OpError::Removed(name.to_string())),
        }
    }

    /// Changes the scale bounds of app `name` and redeploys the same code (an
    /// image stays on its pinned digest) as a new revision. `min_scale = 0`
    /// removes the minimum.
    ///
    /// # Errors
    /// [`OpError::Invalid`] for a bad name, no bound given or a bound out of
    /// range; [`OpError::UnknownApp`]; [`OpError::Deploy`].
    pub async fn scale(&self, name: &str, req: ScaleRequest) -> Result<AppView, OpError> {
        check_name(name)?;
        if req.min_scale.is_none() && req.max_scale.is_none() {
            return Err(OpError::invalid(
                None,
                "give `min_scale`, `max_scale` or both",
            ));
        }
        let _guard = self.lock_app(name).await;
        let stored = self
            .state
            .get(name)
            .ok_or_else(|| OpError::UnknownApp(name.to_string()))?;
        let (spec, record) = scaled(name, &stored, req)?;
        let deployed = self
            .deploy_recorded(name, &spec, record)
            .await
            .map_err(OpError::Deploy)?;
        tracing::info!(
            app = name,
            revision = %deployed.revision,
            min_scale = ?req.min_scale,
            max_scale = ?req.max_scale,
            "scaled"
        );
        self.view(name)
    }

    /// Moves the traffic split of app `name`: the latest revision gets
    /// `latest_percent`, the one before it the rest; at 100 the older one is
    /// retired.
    ///
    /// # Errors
    /// [`OpError::UnknownApp`]; [`OpError::Invalid`] for a share above 100,
    /// or below 100 for an app with a single revision.
    pub fn set_traffic(&self, name: &str, req: TrafficRequest) -> Result<AppView, OpError> {
        check_name(name)?;
        self.view(name)?;
        let latest_percent = req.latest_percent;
        if latest_percent > 100 {
            return Err(OpError::invalid(
                Some("latest_percent"),
                format!("a traffic share is at most 100 percent, not {latest_percent}"),
            ));
        }
        let retired = {
            let mut table = self.lock_table();
            let entry = table
                .get_mut(name)
                .ok_or_else(|| OpError::invalid(None, format!("no app `{name}`")))?;
            let traffic = &entry.routed.traffic;
            let Some((latest, _)) = traffic.last().cloned() else {
                return Err(OpError::invalid(
                    None,
                    format!("app `{name}` has no revision"),
                ));
            };
            let (split, retired) = if latest_percent == 100 {
                let older = traffic[..traffic.len() - 1].iter().map(|(r, _)| r.clone());
                (vec![(latest, 100)], older.collect())
            } else if traffic.len() >= 2 {
                let previous = traffic[traffic.len() - 2].0.clone();
                let split = vec![(previous, 100 - latest_percent), (latest, latest_percent)];
                (split, Vec::new())
            } else {
                return Err(OpError::invalid(
                    None,
                    format!("app `{name}` has a single revision; deploy a canary first"),
                ));
            };
            entry.routed = std::sync::Arc::new(super::RoutedApp::split(name, split));
            self.publish(&table);
            retired
        };
        self.retire(retired);
        tracing::info!(app = name, latest_percent, "traffic moved");
        self.view(name)
    }

    /// Deletes app `name`: it stops serving (in-flight requests finish),
    /// leaves the retry list and the state file.
    ///
    /// # Errors
    /// [`OpError::Invalid`] for a bad name, [`OpError::UnknownApp`], or
    /// [`OpError::State`] when the state file cannot be written (the app
    /// would come back at the next start).
    pub async fn delete(&self, name: &str) -> Result<(), OpError> {
        check_name(name)?;
        let _guard = self.lock_app(name).await;
        let running = self.remove(name);
        // `remove` forgets the app too; this covers an app that is only
        // remembered (its restore failed) and a failed write in `remove`.
        let stored = self.state.forget(name)?;
        if !running && !stored {
            return Err(OpError::UnknownApp(name.to_string()));
        }
        tracing::info!(app = name, "deleted");
        Ok(())
    }
}

/// The spec of a deploy of `config` as app `name`: `wasm` must be an
/// absolute path to a file of this host.
fn put_spec(name: &str, config: &AppConfig) -> Result<AppSpec, OpError> {
    if let Some(wasm) = &config.wasm
        && !wasm.is_absolute()
    {
        return Err(OpError::invalid(
            Some("wasm"),
            format!(
                "`{}` is a relative path; the host has no directory to resolve it against: give an absolute path",
                wasm.display()
            ),
        ));
    }
    let spec = AppSpec::from_config(name, config, Path::new("/"))
        .map_err(|e| OpError::setting(&e.key, &e.reason))?;
    if let Source::Wasm(path) = &spec.source
        && !path.is_file()
    {
        return Err(OpError::invalid(
            Some("wasm"),
            format!("no file `{}` on the host", path.display()),
        ));
    }
    Ok(spec)
}

/// The spec and record of `stored` with the bounds of `req`, on the same
/// code.
fn scaled(name: &str, stored: &StoredApp, req: ScaleRequest) -> Result<(AppSpec, Record), OpError> {
    let mut config = stored.config.clone();
    if let Some(min) = req.min_scale {
        config.min_scale = (min != 0).then_some(min);
    }
    if let Some(max) = req.max_scale {
        // Out of range (0 included) is refused by validation, naming the key.
        config.max_scale = Some(max);
    }
    let changed = StoredApp {
        config: config.clone(),
        ..stored.clone()
    };
    let spec = changed
        .pinned_spec(name)
        .map_err(|e| OpError::setting(&e.key, &e.reason))?;
    let record = Record {
        config,
        origin: stored.origin,
        revision: None,
    };
    Ok((spec, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_worded_as_the_api_words_them() {
        let e = OpError::setting("max_scale", "must be at least 1");
        assert_eq!(e.to_string(), "key `max_scale`: must be at least 1");
        assert!(matches!(e, OpError::Invalid { key: Some(k), .. } if k == "max_scale"));
        let e = OpError::setting("", "give `wasm` or `image`");
        assert_eq!(e.to_string(), "give `wasm` or `image`");
        assert!(matches!(e, OpError::Invalid { key: None, .. }));
        assert_eq!(OpError::UnknownApp("x".into()).to_string(), "no app `x`");
        let deploy = OpError::Deploy(super::super::DeployError::new(
            "x",
            super::super::DeployFailure::Start(
                anyhow::anyhow!("exit 1").context("cannot start an instance"),
            ),
        ));
        assert_eq!(
            deploy.to_string(),
            "cannot deploy app `x`: cannot start an instance: exit 1",
            "the whole cause"
        );
        assert!(check_name("Bad_Name").is_err());
        assert!(check_name("good-name").is_ok());
    }

    #[test]
    fn scaling_keeps_the_code_and_the_origin() {
        let spec = AppSpec::image("r.example/img:v1");
        let record = Record {
            config: spec.to_config(),
            origin: crate::state::Origin::Config,
            revision: Some("img-00002".into()),
        };
        let stored = StoredApp::new(
            &record,
            Some("r.example/img@sha256:0123".into()),
            "img-00002".into(),
            "ff".into(),
            crate::backend::Kind::Container,
        );
        let req = ScaleRequest {
            min_scale: Some(0),
            max_scale: Some(3),
        };
        let (spec, record) = scaled("img", &stored, req).unwrap();
        assert_eq!(
            spec.source,
            Source::Image("r.example/img@sha256:0123".into()),
            "by digest"
        );
        assert_eq!(spec.scaling.autoscale.max_scale, 3);
        assert_eq!(record.config.min_scale, None, "0 removes the minimum");
        assert_eq!(record.config.image.as_deref(), Some("r.example/img:v1"));
        assert_eq!(record.origin, crate::state::Origin::Config);
        assert_eq!(record.revision, None, "a new revision");
        let zero = ScaleRequest {
            min_scale: None,
            max_scale: Some(0),
        };
        let e = scaled("img", &stored, zero).unwrap_err();
        assert!(
            matches!(e, OpError::Invalid { key: Some(ref k), .. } if k == "max_scale"),
            "{e}"
        );
    }
}
