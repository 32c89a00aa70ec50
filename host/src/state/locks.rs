//! Per-app locks: read-modify-write changes of one app (a scale, a deploy,
//! a delete through the admin API or the console) are serialised, so two
//! concurrent changes cannot lose one another.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One async lock per app name, made on first use.
#[derive(Debug, Default)]
pub struct AppLocks(Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl AppLocks {
    /// Waits for and takes the lock of app `name`; held until the guard
    /// drops.
    pub async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_app_at_a_time_others_free() {
        let locks = AppLocks::default();
        let held = locks.lock("a").await;
        // Another app is not held up.
        let _b = locks.lock("b").await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a"));
        assert!(waiting.await.is_err(), "`a` is held");
        drop(held);
        let _again = locks.lock("a").await;
    }
}
