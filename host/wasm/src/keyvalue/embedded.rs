//! The embedded store: one `redb` file (copy-on-write B-trees, a commit is
//! durable once it returns: crash-safe, no server). Table `data` maps
//! `app \0 bucket \0 key` to the value; table `usage` maps an app to its
//! key count and bytes (keys plus values), and table `buckets` maps
//! `app \0 bucket \0` to the same for one bucket, both updated in the same
//! write transaction as the data, so quotas and counts are exact. redb runs one write
//! transaction at a time, which makes every write (and `increment`) atomic.
//! Calls run on tokio's blocking pool.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{KvError, KvQuota, LIST_PAGE, Namespace};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
const USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("usage");
const BUCKETS: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("buckets");

/// The embedded store.
pub struct Embedded {
    db: Database,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").finish_non_exhaustive()
    }
}

fn store_err(e: impl std::fmt::Display) -> KvError {
    KvError::Store(format!("the embedded key-value store failed: {e}"))
}

fn prefix(ns: &Namespace) -> Vec<u8> {
    let mut p = Vec::with_capacity(ns.app.len() + ns.bucket.len() + 2);
    p.extend_from_slice(ns.app.as_bytes());
    p.push(0);
    p.extend_from_slice(ns.bucket.as_bytes());
    p.push(0);
    p
}

fn data_key(prefix: &[u8], key: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

/// The first key past every key under `prefix` (which ends in `\0`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    end
}

/// Moves the bucket `p`'s count and bytes by what its app's went from
/// `before` to `after` (a write touches one bucket).
fn bump_bucket(
    txn: &redb::WriteTransaction,
    p: &[u8],
    before: (u64, u64),
    after: (u64, u64),
) -> Result<(), KvError> {
    let mut buckets = txn.open_table(BUCKETS).map_err(store_err)?;
    let (keys, bytes) = buckets
        .get(p)
        .map_err(store_err)?
        .map_or((0, 0), |g| g.value());
    let keys = (keys + after.0).saturating_sub(before.0);
    let bytes = (bytes + after.1).saturating_sub(before.1);
    buckets.insert(p, (keys, bytes)).map_err(store_err)?;
    Ok(())
}

fn over_quota(app: &str, keys: u64, bytes: u64, quota: KvQuota) -> Result<(), KvError> {
    if keys > quota.keys {
        return Err(KvError::Quota(format!(
            "app `{app}` would hold {keys} keys, over keyvalue_limits.keys ({})",
            quota.keys
        )));
    }
    if bytes > quota.total_size {
        return Err(KvError::Quota(format!(
            "app `{app}` would hold {bytes} bytes of keys and values, over keyvalue_limits.total_size ({} bytes)",
            quota.total_size
        )));
    }
    Ok(())
}

impl Embedded {
    /// Opens (or creates) the store at `path`, its folder included.
    ///
    /// # Errors
    /// When the file cannot be created or opened, with the path.
    pub fn open(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        }
        let db = Database::create(path)
            .map_err(|e| format!("cannot open the key-value store `{}`: {e}", path.display()))?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(DATA).map_err(|e| e.to_string())?;
        txn.open_table(USAGE).map_err(|e| e.to_string())?;
        txn.open_table(BUCKETS).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        Ok(Self { db })
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Database) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me.db))
            .await
            .map_err(store_err)?
    }

    pub(crate) async fn get_many(
        self: &Arc<Self>,
        ns: &Namespace,
        keys: Vec<String>,
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let p = prefix(ns);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store_err)?;
            let data = txn.open_table(DATA).map_err(store_err)?;
            keys.iter()
                .map(|k| {
                    Ok(data
                        .get(data_key(&p, k).as_slice())
                        .map_err(store_err)?
                        .map(|v| v.value().to_vec()))
                })
                .collect()
        })
        .await
    }

    pub(crate) async fn set_many(
        self: &Arc<Self>,
        ns: &Namespace,
        pairs: Vec<(String, Vec<u8>)>,
        quota: KvQuota,
    ) -> Result<(), KvError> {
        let p = prefix(ns);
        let app = ns.app.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(store_err)?;
            {
                let mut data = txn.open_table(DATA).map_err(store_err)?;
                let mut usage = txn.open_table(USAGE).map_err(store_err)?;
                let (mut keys, mut bytes) = usage
                    .get(app.as_str())
                    .map_err(store_err)?
                    .map_or((0, 0), |g| g.value());
                let before = (keys, bytes);
                for (k, v) in &pairs {
                    let old = data
                        .insert(data_key(&p, k).as_slice(), v.as_slice())
                        .map_err(store_err)?
                        .map(|g| g.value().len() as u64);
                    match old {
                        Some(len) => bytes = bytes.saturating_sub(k.len() as u64 + len),
                        None => keys += 1,
                    }
                    bytes += (k.len() + v.len()) as u64;
                }
                over_quota(&app, keys, bytes, quota)?;
                usage
                    .insert(app.as_str(), (keys, bytes))
                    .map_err(store_err)?;
                bump_bucket(&txn, &p, before, (keys, bytes))?;
            }
            txn.commit().map_err(store_err)
        })
        .await
    }

    pub(crate) async fn delete_many(
        self: &Arc<Self>,
        ns: &Namespace,
        keys: Vec<String>,
    ) -> Result<(), KvError> {
        let p = prefix(ns);
        let app = ns.app.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(store_err)?;
            {
                let mut data = txn.open_table(DATA).map_err(store_err)?;
                let mut usage = txn.open_table(USAGE).map_err(store_err)?;
                let (mut count, mut bytes) = usage
                    .get(app.as_str())
                    .map_err(store_err)?
                    .map_or((0, 0), |g| g.value());
                let before = (count, bytes);
                for k in &keys {
                    let old = data
                        .remove(data_key(&p, k).as_slice())
                        .map_err(store_err)?
                        .map(|g| g.value().len() as u64);
                    if let Some(len) = old {
                        count = count.saturating_sub(1);
                        bytes = bytes.saturating_sub(k.len() as u64 + len);
                    }
                }
                usage
                    .insert(app.as_str(), (count, bytes))
                    .map_err(store_err)?;
                bump_bucket(&txn, &p, before, (count, bytes))?;
            }
            txn.commit().map_err(store_err)
        })
        .await
    }

    /// Up to [`LIST_PAGE`] keys of `ns` in byte order, after `after` when
    /// given, and whether more follow.
    pub(crate) async fn list(
        self: &Arc<Self>,
        ns: &Namespace,
        after: Option<String>,
    ) -> Result<(Vec<String>, bool), KvError> {
        let p = prefix(ns);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store_err)?;
            let data = txn.open_table(DATA).map_err(store_err)?;
            let end = prefix_end(&p);
            let start = after.as_deref().map(|a| data_key(&p, a));
            let from = match &start {
                Some(s) => Bound::Excluded(s.as_slice()),
                None => Bound::Included(p.as_slice()),
            };
            let mut keys = Vec::new();
            let mut more = false;
            for entry in data
                .range((from, Bound::Excluded(end.as_slice())))
                .map_err(store_err)?
            {
                let (k, _) = entry.map_err(store_err)?;
                if keys.len() == LIST_PAGE {
                    more = true;
                    break;
                }
                let k = k.value();
                keys.push(String::from_utf8_lossy(&k[p.len()..]).into_owned());
            }
            Ok((keys, more))
        })
        .await
    }

    pub(crate) async fn increment(
        self: &Arc<Self>,
        ns: &Namespace,
        key: String,
        delta: u64,
        quota: KvQuota,
    ) -> Result<u64, KvError> {
        let p = prefix(ns);
        let app = ns.app.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(store_err)?;
            let new;
            {
                let mut data = txn.open_table(DATA).map_err(store_err)?;
                let mut usage = txn.open_table(USAGE).map_err(store_err)?;
                let dk = data_key(&p, &key);
                let old = data
                    .get(dk.as_slice())
                    .map_err(store_err)?
                    .map(|g| g.value().to_vec());
                let current = match &old {
                    None => 0,
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| {
                            KvError::Refused(format!(
                                "key `{}` does not hold a decimal u64, so it cannot be incremented",
                                key.escape_debug()
                            ))
                        })?,
                };
                new = current.checked_add(delta).ok_or_else(|| {
                    KvError::Refused(format!(
                        "incrementing key `{}` by {delta} overflows u64",
                        key.escape_debug()
                    ))
                })?;
                let text = new.to_string();
                let (mut keys, mut bytes) = usage
                    .get(app.as_str())
                    .map_err(store_err)?
                    .map_or((0, 0), |g| g.value());
                let before = (keys, bytes);
                match &old {
                    Some(v) => bytes = bytes.saturating_sub((key.len() + v.len()) as u64),
                    None => keys += 1,
                }
                bytes += (key.len() + text.len()) as u64;
                over_quota(&app, keys, bytes, quota)?;
                data.insert(dk.as_slice(), text.as_bytes())
                    .map_err(store_err)?;
                usage
                    .insert(app.as_str(), (keys, bytes))
                    .map_err(store_err)?;
                bump_bucket(&txn, &p, before, (keys, bytes))?;
            }
            txn.commit().map_err(store_err)?;
            Ok(new)
        })
        .await
    }

    /// Keys and bytes `app` holds here.
    pub(crate) async fn usage(self: &Arc<Self>, app: &str) -> Result<(u64, u64), String> {
        let app = app.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store_err)?;
            let usage = txn.open_table(USAGE).map_err(store_err)?;
            Ok(usage
                .get(app.as_str())
                .map_err(store_err)?
                .map_or((0, 0), |g| g.value()))
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// Keys and bytes bucket `ns` holds.
    pub(crate) async fn bucket_usage(
        self: &Arc<Self>,
        ns: &Namespace,
    ) -> Result<(u64, u64), String> {
        let p = prefix(ns);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store_err)?;
            let buckets = txn.open_table(BUCKETS).map_err(store_err)?;
            Ok(buckets
                .get(p.as_slice())
                .map_err(store_err)?
                .map_or((0, 0), |g| g.value()))
        })
        .await
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(app: &str, bucket: &str) -> Namespace {
        Namespace {
            app: app.into(),
            bucket: bucket.into(),
        }
    }

    #[tokio::test]
    async fn apps_and_buckets_do_not_see_each_other_and_quotas_hold() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Embedded::open(&dir.path().join("kv.redb")).unwrap());
        let q = KvQuota::default();
        let a = ns("a", "default");
        db.set_many(&a, vec![("k".into(), b"1".to_vec())], q)
            .await
            .unwrap();
        for other in [ns("b", "default"), ns("a", "other"), ns("a\0default", "")] {
            assert_eq!(
                db.get_many(&other, vec!["k".into()]).await.unwrap(),
                vec![None]
            );
            assert!(db.list(&other, None).await.unwrap().0.is_empty());
        }
        assert_eq!(db.increment(&a, "k".into(), 4, q).await.unwrap(), 5);
        assert_eq!(db.usage("a").await.unwrap(), (1, 2));
        let other = ns("a", "other");
        db.set_many(&other, vec![("xy".into(), b"123".to_vec())], q)
            .await
            .unwrap();
        assert_eq!(db.bucket_usage(&a).await.unwrap(), (1, 2));
        assert_eq!(db.bucket_usage(&other).await.unwrap(), (1, 5));
        assert_eq!(db.usage("a").await.unwrap(), (2, 7));
        db.delete_many(&other, vec!["xy".into()]).await.unwrap();
        assert_eq!(db.bucket_usage(&other).await.unwrap(), (0, 0));
        let small = KvQuota { keys: 1, ..q };
        let err = db
            .set_many(&a, vec![("k2".into(), b"x".to_vec())], small)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("keyvalue_limits.keys"), "{err}");
        // Refused whole: nothing of it written.
        assert_eq!(db.usage("a").await.unwrap(), (1, 2));
        db.delete_many(&a, vec!["k".into(), "k".into()])
            .await
            .unwrap();
        assert_eq!(db.usage("a").await.unwrap(), (0, 0));
    }
}
