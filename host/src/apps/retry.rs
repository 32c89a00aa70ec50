//! Apps that could not be deployed at start: listed as failed with their
//! reason, and deployed again with exponential backoff, while every other
//! app serves (Knative: a revision that fails never affects others).
//!
//! A failed app leaves the list when a retry succeeds, when it is deployed
//! again or deleted through the API, or when the host stops.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Apps;
use crate::config::AppSpec;
use crate::state::Record;

/// First wait before a retry; it doubles after each failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between retries.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// An app that could not be deployed, as the API shows it.
#[derive(Debug, Clone)]
pub struct FailedApp {
    /// The app.
    pub name: String,
    /// Its settings as given, and where they came from.
    pub record: Record,
    /// Why the last attempt failed.
    pub reason: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When the first attempt failed.
    pub since: SystemTime,
    /// When the next attempt is due.
    pub next_retry: SystemTime,
}

#[derive(Debug)]
pub(super) struct Failed {
    pub(super) info: FailedApp,
    spec: AppSpec,
    /// Bumped whenever the entry is replaced, so a stale retry task stops.
    generation: u64,
}

/// The wait after `attempts` failures: 1 s, 2 s, 4 s, … up to 5 min.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_RETRY)
}

impl Apps {
    /// Notes that app `name` could not be deployed (`why`), and keeps trying
    /// in the background.
    pub(super) fn fail(self: &Arc<Self>, name: &str, spec: &AppSpec, record: Record, why: String) {
        tracing::error!(app = %name, "cannot deploy the app; retrying in the background: {why}");
        let generation = {
            let mut failed = self.lock_failed();
            let generation = failed.values().map(|f| f.generation).max().unwrap_or(0) + 1;
            let now = SystemTime::now();
            failed.insert(
                name.to_string(),
                Failed {
                    info: FailedApp {
                        name: name.to_string(),
                        record,
                        reason: why,
                        attempts: 1,
                        since: now,
                        next_retry: now + backoff(1),
                    },
                    spec: spec.clone(),
                    generation,
                },
            );
            generation
        };
        let me = Arc::downgrade(self);
        let name = name.to_string();
        tokio::spawn(async move { retry(me, name, generation).await });
    }

    /// The apps waiting for a retry, by name.
    pub fn failed(&self) -> Vec<FailedApp> {
        self.lock_failed()
            .values()
            .map(|f| f.info.clone())
            .collect()
    }

    /// One failed app.
    pub fn failed_app(&self, name: &str) -> Option<FailedApp> {
        self.lock_failed().get(name).map(|f| f.info.clone())
    }

    /// The failed app that would answer `host` and `path` if it were
    /// deployed: the one the host names, else the one with the longest
    /// route prefix covering the path. Asked only when no deployed app
    /// answers, so that the caller hears why instead of a 404.
    pub fn failed_for(&self, host: Option<&str>, path: &str) -> Option<FailedApp> {
        let failed = self.lock_failed();
        if failed.is_empty() {
            return None;
        }
        let routes = self.routes();
        if let Some(label) = host.and_then(|h| routes.label(h))
            && let Some(f) = failed.get(&label.to_ascii_lowercase())
        {
            return Some(f.info.clone());
        }
        failed
            .values()
            .flat_map(|f| f.spec.routes.iter().map(move |r| (r, f)))
            .filter(|(route, _)| super::routes::prefix_matches(route, path))
            .max_by_key(|(route, _)| route.len())
            .map(|(_, f)| f.info.clone())
    }

    /// Stops retrying app `name` (deployed or deleted otherwise). Returns
    /// whether it was waiting.
    pub(super) fn forget_failed(&self, name: &str) -> bool {
        self.lock_failed().remove(name).is_some()
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Failed>> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Retries app `name` until it deploys, its entry is replaced or gone, or
/// the host stops.
async fn retry(apps: std::sync::Weak<Apps>, name: String, generation: u64) {
    loop {
        let wait = {
            let Some(apps) = apps.upgrade() else { return };
            let failed = apps.lock_failed();
            match failed.get(&name) {
                Some(f) if f.generation == generation => backoff(f.info.attempts),
                _ => return,
            }
        };
        let shutdown = match apps.upgrade() {
            Some(apps) => apps.shutdown_token().clone(),
            None => return,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(apps) = apps.upgrade() else { return };
        if apps.is_shutting_down() {
            return;
        }
        let (spec, record) = {
            let failed = apps.lock_failed();
            match failed.get(&name) {
                Some(f) if f.generation == generation => (f.spec.clone(), f.info.record.clone()),
                _ => return,
            }
        };
        let outcome = apps.deploy_recorded(&name, &spec, record).await;
        let mut failed = apps.lock_failed();
        let Some(f) = failed.get_mut(&name).filter(|f| f.generation == generation) else {
            return;
        };
        match outcome {
            Ok(deployed) => {
                tracing::info!(app = %name, revision = %deployed.revision, attempts = f.info.attempts + 1, "deployed after failing");
                failed.remove(&name);
                return;
            }
            Err(e) => {
                f.info.attempts += 1;
                f.info.reason = format!("{e:#}");
                f.info.next_retry = SystemTime::now() + backoff(f.info.attempts);
                tracing::warn!(app = %name, attempts = f.info.attempts, next_in = ?backoff(f.info.attempts), "deploy retry failed: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), MAX_RETRY);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }
}
