//! `wasi:keyvalue` (store, atomics, batch; `0.2.0-draft`, the version of
//! wasmtime's `wasmtime-wasi-keyvalue` 50) and `wasi:config/store`
//! (`0.2.0-rc.1`) for guests.
//!
//! - An app declares its buckets (`keyvalue = ["default", "sessions"]`);
//!   `open` of any other name is refused, naming the declared ones. Every
//!   key is stored under the app's name and the bucket's, so no app can
//!   reach another app's data whatever it passes.
//! - A bucket lives in the store of its name when the host configures one
//!   (`[keyvalue.stores.NAME]`, Redis), else in the embedded store
//!   ([`embedded`]: one `redb` file under the data dir, crash-safe).
//! - [`KvQuota`]: per app (keys, value size, total bytes of keys and values,
//!   in each store) and per call (batch size, key length), each named in
//!   its error. Checked inside the store's own transaction (redb's write
//!   transaction, a Lua script on Redis), so concurrent writers cannot
//!   overshoot them and `increment` loses no update.
//! - `list-keys` pages hold at most [`LIST_PAGE`] keys, in byte order. A
//!   cursor is an opaque number the host hands out with a page; it stands
//!   for the page's last key (kept on the host for [`CURSOR_TTL`], bound to
//!   the app and bucket), and the next page starts after that key, so keys
//!   added or deleted between pages shift nothing: every key present
//!   throughout is listed exactly once.
//! - [`ConfigSource`]: where `wasi:config/store` reads an app's values; the
//!   host's reads the app's current `config` table and resolves secrets at
//!   each call.

mod cursors;
mod names;
use cursors::Cursors;
pub use names::{check_redis_url, validate_bucket, validate_buckets};
pub mod embedded;
pub mod redis;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/host",
        world: "berth:host/stateful",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::keyvalue::Bucket,
        },
        require_store_data_send: true,
    });
}

use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::{atomics, batch, store};

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Keys one `list-keys` call returns at most; the cursor gives the rest.
pub const LIST_PAGE: usize = 100;
/// How long a `list-keys` cursor stays valid after the page that gave it.
pub const CURSOR_TTL: Duration = Duration::from_secs(300);
/// Cursors the host keeps at once; past that the oldest is dropped.
pub const MAX_CURSORS: usize = 10_000;
/// Buckets one request may hold open at once.
pub const MAX_OPEN_BUCKETS: u32 = 64;
/// Most buckets an app may declare.
pub const MAX_BUCKETS: usize = 32;

/// Bounds of [`KvQuota`]'s settings.
pub const MAX_QUOTA_KEYS: u64 = 10_000_000;
/// Largest `keyvalue_limits.value_size`.
pub const MAX_QUOTA_VALUE_SIZE: u64 = 64 << 20;
/// Largest `keyvalue_limits.total_size`.
pub const MAX_QUOTA_TOTAL_SIZE: u64 = 16 << 30;
/// Largest `keyvalue_limits.batch`.
pub const MAX_QUOTA_BATCH: u32 = 10_000;

/// An app's key-value quotas (`[apps.NAME.keyvalue_limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    /// Keys the app may hold (all its buckets in one store).
    pub keys: u64,
    /// Largest value, in bytes.
    pub value_size: u64,
    /// Bytes of keys and values the app may hold (all its buckets in one
    /// store).
    pub total_size: u64,
    /// Keys one batch call (`get-many`, `set-many`, `delete-many`) may name.
    pub batch: u32,
}

impl Default for KvQuota {
    fn default() -> Self {
        Self {
            keys: 10_000,
            value_size: 1 << 20,
            total_size: 64 << 20,
            batch: 1000,
        }
    }
}

impl KvQuota {
    /// Checks each setting against its range.
    ///
    /// # Errors
    /// The key (`keyvalue_limits.keys`, …) and the reason.
    pub fn validate(&self) -> Result<(), crate::InvalidSetting> {
        let check = |key: &str, v: u64, max: u64| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(crate::InvalidSetting::new(
                    format!("keyvalue_limits.{key}"),
                    format!("{v} is outside 1..={max}"),
                ))
            }
        };
        check("keys", self.keys, MAX_QUOTA_KEYS)?;
        check("value_size", self.value_size, MAX_QUOTA_VALUE_SIZE)?;
        check("total_size", self.total_size, MAX_QUOTA_TOTAL_SIZE)?;
        check("batch", u64::from(self.batch), u64::from(MAX_QUOTA_BATCH))?;
        Ok(())
    }
}

/// A store the host configures (`[keyvalue.stores.NAME]`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded store under the data dir.
    Embedded,
    /// A Redis server (`redis://[user:password@]host:port[/db]`).
    Redis {
        /// Its URL (may hold a password: never shown).
        url: String,
    },
    /// A Redis server whose URL (with its credentials) is the value of a
    /// berth secret; the host resolves it into [`StoreConfig::Redis`]
    /// before the engine starts.
    RedisFromSecret {
        /// The secret's name.
        secret: String,
    },
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Embedded => f.write_str("Embedded"),
            StoreConfig::Redis { .. } => f.write_str("Redis { url: <hidden> }"),
            StoreConfig::RedisFromSecret { secret } => {
                write!(f, "RedisFromSecret {{ secret: {secret:?} }}")
            }
        }
    }
}

/// Why a key-value call failed; the guest sees the text as
/// `error::other`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    /// A quota or per-call limit (named in the text).
    #[error("{0}")]
    Quota(String),
    /// The call itself is refused (undeclared bucket, key too long, …).
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

/// What a store holds for one app in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Namespace {
    pub(crate) app: String,
    pub(crate) bucket: String,
}

/// The backend of one bucket.
#[derive(Clone)]
pub(crate) enum Backend {
    Embedded(Arc<embedded::Embedded>),
    Redis(Arc<redis::RedisStore>),
}

/// Every store of the host: the embedded one (opened on first use) and the
/// configured ones.
pub struct KvStores {
    path: PathBuf,
    embedded: Mutex<Option<Arc<embedded::Embedded>>>,
    named: BTreeMap<String, Backend>,
    cursors: Arc<Cursors>,
}

impl fmt::Debug for KvStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvStores")
            .field("path", &self.path)
            .field("stores", &self.named.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KvStores {
    /// The embedded store at `path` (opened when an app first needs it)
    /// and the `configured` ones.
    ///
    /// # Errors
    /// A configured store that cannot be set up (a bad Redis URL), named.
    pub fn new(path: PathBuf, configured: &BTreeMap<String, StoreConfig>) -> anyhow::Result<Self> {
        let mut named = BTreeMap::new();
        for (name, config) in configured {
            match config {
                StoreConfig::Redis { url } => {
                    let store = redis::RedisStore::new(name, url)?;
                    named.insert(name.clone(), Backend::Redis(Arc::new(store)));
                }
                StoreConfig::RedisFromSecret { secret } => anyhow::bail!(
                    "keyvalue.stores.{name}: the secret `{secret}` holding its URL was not resolved"
                ),
                StoreConfig::Embedded => {}
            }
        }
        Ok(Self {
            path,
            embedded: Mutex::new(None),
            named,
            cursors: Arc::new(Cursors::new()),
        })
    }

    fn embedded(&self) -> Result<Arc<embedded::Embedded>, String> {
        let mut slot = self.embedded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = &*slot {
            return Ok(e.clone());
        }
        let e = Arc::new(embedded::Embedded::open(&self.path)?);
        *slot = Some(e.clone());
        Ok(e)
    }

    /// `app`'s buckets: each in `own` when given (the app's own store),
    /// else in the store of its name, else in the embedded one.
    ///
    /// # Errors
    /// When the embedded store cannot be opened, or `own` is not a usable
    /// Redis URL.
    pub fn for_app(
        &self,
        app: &str,
        buckets: &[String],
        quota: KvQuota,
        own: Option<&StoreConfig>,
    ) -> Result<Option<Arc<AppKv>>, String> {
        if buckets.is_empty() {
            return Ok(None);
        }
        let own = match own {
            None => None,
            Some(StoreConfig::Embedded) => Some(Backend::Embedded(self.embedded()?)),
            Some(StoreConfig::Redis { url }) => Some(Backend::Redis(Arc::new(
                redis::RedisStore::new(app, url).map_err(|e| format!("{e:#}"))?,
            ))),
            Some(StoreConfig::RedisFromSecret { secret }) => {
                return Err(format!(
                    "the secret `{secret}` holding the store's URL was not resolved"
                ));
            }
        };
        let mut map = BTreeMap::new();
        for b in buckets {
            let backend = match (&own, self.named.get(b)) {
                (Some(backend), _) | (None, Some(backend)) => backend.clone(),
                (None, None) => Backend::Embedded(self.embedded()?),
            };
            map.insert(b.clone(), backend);
        }
        Ok(Some(Arc::new(AppKv {
            app: app.into(),
            buckets: map,
            quota,
            cursors: self.cursors.clone(),
        })))
    }

    /// Keys and bytes each of `buckets` of `app` holds, in the store each
    /// lives in.
    pub async fn bucket_usage(&self, app: &str, buckets: &[String]) -> Vec<BucketUsage> {
        let mut out = Vec::with_capacity(buckets.len());
        for b in buckets {
            let ns = Namespace {
                app: app.into(),
                bucket: b.clone(),
            };
            let (store, usage) = match self.named.get(b) {
                Some(Backend::Redis(r)) => (b.clone(), r.bucket_usage(&ns).await),
                Some(Backend::Embedded(e)) => ("embedded".into(), e.bucket_usage(&ns).await),
                None => (
                    "embedded".into(),
                    match self.embedded() {
                        Ok(e) => e.bucket_usage(&ns).await,
                        Err(e) => Err(e),
                    },
                ),
            };
            out.push(BucketUsage {
                bucket: b.clone(),
                store,
                usage,
            });
        }
        out
    }

    /// Keys and bytes `app` holds in each store it has data in, by store
    /// (`embedded` or the configured name).
    pub async fn usage(&self, app: &str) -> Vec<(String, Result<(u64, u64), String>)> {
        let mut out = Vec::new();
        if let Ok(e) = self.embedded() {
            out.push(("embedded".to_string(), e.usage(app).await));
        }
        for (name, b) in &self.named {
            if let Backend::Redis(r) = b {
                out.push((name.clone(), r.usage(app).await));
            }
        }
        out
    }
}

/// What one bucket of an app holds (never its values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUsage {
    /// The bucket's name.
    pub bucket: String,
    /// The store it lives in: `embedded`, or the configured store's name.
    pub store: String,
    /// Its keys and their bytes (keys plus values), or why the store
    /// could not say.
    pub usage: Result<(u64, u64), String>,
}

/// One app's buckets and quotas.
pub struct AppKv {
    app: String,
    buckets: BTreeMap<String, Backend>,
    quota: KvQuota,
    cursors: Arc<Cursors>,
}

impl fmt::Debug for AppKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppKv")
            .field("app", &self.app)
            .field("buckets", &self.buckets.keys().collect::<Vec<_>>())
            .field("quota", &self.quota)
            .finish()
    }
}

impl AppKv {
    fn open(&self, name: &str) -> Result<Bucket, KvError> {
        let Some(backend) = self.buckets.get(name) else {
            let declared: Vec<String> = self.buckets.keys().map(|b| format!("`{b}`")).collect();
            return Err(KvError::Refused(format!(
                "bucket `{}` is not declared by app `{}` (its keyvalue = [{}])",
                name.escape_debug(),
                self.app,
                declared.join(", ")
            )));
        };
        Ok(Bucket {
            ns: Arc::new(Namespace {
                app: self.app.clone(),
                bucket: name.into(),
            }),
            backend: backend.clone(),
            quota: self.quota,
            cursors: self.cursors.clone(),
        })
    }
}

/// An open bucket (the guest's `bucket` resource).
pub struct Bucket {
    ns: Arc<Namespace>,
    backend: Backend,
    quota: KvQuota,
    cursors: Arc<Cursors>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

impl Bucket {
    fn clone_handle(&self) -> Self {
        Self {
            ns: self.ns.clone(),
            backend: self.backend.clone(),
            quota: self.quota,
            cursors: self.cursors.clone(),
        }
    }

    fn check_key(key: &str) -> Result<(), KvError> {
        if key.len() > MAX_KEY_LEN {
            return Err(KvError::Refused(format!(
                "a key of {} bytes is over the key length limit of {MAX_KEY_LEN} bytes",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_batch(&self, n: usize) -> Result<(), KvError> {
        if n > self.quota.batch as usize {
            return Err(KvError::Quota(format!(
                "{n} keys in one call is over keyvalue_limits.batch ({})",
                self.quota.batch
            )));
        }
        Ok(())
    }

    fn check_value(&self, v: &[u8]) -> Result<(), KvError> {
        if v.len() as u64 > self.quota.value_size {
            return Err(KvError::Quota(format!(
                "a value of {} bytes is over keyvalue_limits.value_size ({} bytes)",
                v.len(),
                self.quota.value_size
            )));
        }
        Ok(())
    }

    async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        for k in &keys {
            Self::check_key(k)?;
        }
        match &self.backend {
            Backend::Embedded(e) => e.get_many(&self.ns, keys).await,
            Backend::Redis(r) => r.get_many(&self.ns, &keys).await,
        }
    }

    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        // The last write of a key wins; counted once.
        let mut unique: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in pairs {
            Self::check_key(&k)?;
            self.check_value(&v)?;
            unique.insert(k, v);
        }
        let pairs: Vec<(String, Vec<u8>)> = unique.into_iter().collect();
        match &self.backend {
            Backend::Embedded(e) => e.set_many(&self.ns, pairs, self.quota).await,
            Backend::Redis(r) => r.set_many(&self.ns, &pairs, self.quota).await,
        }
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        let mut unique: Vec<String> = Vec::with_capacity(keys.len());
        for k in keys {
            Self::check_key(&k)?;
            if !unique.contains(&k) {
                unique.push(k);
            }
        }
        match &self.backend {
            Backend::Embedded(e) => e.delete_many(&self.ns, unique).await,
            Backend::Redis(r) => r.delete_many(&self.ns, &unique).await,
        }
    }

    /// One page of keys, from the start or after `cursor`'s key, and the
    /// cursor of the next page when there are more.
    async fn list(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), KvError> {
        let after = match cursor {
            None => None,
            Some(id) => Some(self.cursors.after(id, &self.ns).ok_or_else(|| {
                KvError::Refused(format!(
                    "cursor {id} was not handed out for bucket `{}` of app `{}`, or is over {} s old; list again without a cursor",
                    self.ns.bucket,
                    self.ns.app,
                    CURSOR_TTL.as_secs()
                ))
            })?),
        };
        let (keys, more) = match &self.backend {
            Backend::Embedded(e) => e.list(&self.ns, after).await?,
            Backend::Redis(r) => r.list(&self.ns, after.as_deref()).await?,
        };
        let next = match keys.last() {
            Some(last) if more => Some(self.cursors.make(&self.ns, last.clone())),
            _ => None,
        };
        Ok((keys, next))
    }

    async fn increment(&self, key: String, delta: u64) -> Result<u64, KvError> {
        Self::check_key(&key)?;
        match &self.backend {
            Backend::Embedded(e) => e.increment(&self.ns, key, delta, self.quota).await,
            Backend::Redis(r) => r.increment(&self.ns, &key, delta, self.quota).await,
        }
    }
}

/// Where `wasi:config/store` reads one app's values. Each call reads
/// afresh, so a value changed on the host is seen by the next call.
pub trait ConfigSource: Send + Sync {
    /// The value of `key`, or `None`.
    ///
    /// # Errors
    /// Why it cannot be read (a secret that cannot be decrypted, …).
    fn get(&self, key: &str) -> Result<Option<String>, String>;
    /// Every key and value.
    ///
    /// # Errors
    /// As [`ConfigSource::get`].
    fn get_all(&self) -> Result<Vec<(String, String)>, String>;
}

/// What a request's store holds for these interfaces.
#[derive(Default)]
pub struct GuestKv {
    pub(crate) kv: Option<Arc<AppKv>>,
    pub(crate) config: Option<Arc<dyn ConfigSource>>,
    open: u32,
}

impl GuestKv {
    /// For an app with `kv` buckets and `config` values.
    pub fn new(kv: Option<Arc<AppKv>>, config: Option<Arc<dyn ConfigSource>>) -> Self {
        Self {
            kv,
            config,
            open: 0,
        }
    }
}

impl fmt::Debug for GuestKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestKv")
            .field("kv", &self.kv)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

/// The view the bindings get of a request's store.
pub struct KvView<'a> {
    table: &'a mut ResourceTable,
    state: &'a mut GuestKv,
}

impl fmt::Debug for KvView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvView")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<'a> KvView<'a> {
    /// A view over `table` and `state`.
    pub fn new(table: &'a mut ResourceTable, state: &'a mut GuestKv) -> Self {
        Self { table, state }
    }

    fn bucket(&self, b: &Resource<Bucket>) -> wasmtime::Result<Bucket> {
        Ok(self.table.get(b)?.clone_handle())
    }
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Adds `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft` and
/// `wasi:config/store@0.2.0-rc.1` to `linker`.
///
/// # Errors
/// When the linker already has them.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKv>(linker, view)?;
    atomics::add_to_linker::<T, HasKv>(linker, view)?;
    batch::add_to_linker::<T, HasKv>(linker, view)?;
    config::add_to_linker::<T, HasKv>(linker, view)?;
    Ok(())
}

fn guest_error(e: KvError) -> store::Error {
    store::Error::Other(e.to_string())
}

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        let Some(kv) = &self.state.kv else {
            return Ok(Err(store::Error::Other(
                "this app declares no key-value buckets (`keyvalue = [\"default\"]` in its settings)"
                    .into(),
            )));
        };
        if self.state.open >= MAX_OPEN_BUCKETS {
            return Ok(Err(store::Error::Other(format!(
                "{MAX_OPEN_BUCKETS} buckets are open in this request already (the per-request limit); drop one first"
            ))));
        }
        match kv.open(&identifier) {
            Ok(bucket) => {
                let r = self.table.push(bucket)?;
                self.state.open += 1;
                Ok(Ok(r))
            }
            Err(e) => Ok(Err(guest_error(e))),
        }
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let b = self.bucket(&bucket)?;
        Ok(b.get_many(vec![key])
            .await
            .map(|mut v| v.pop().flatten())
            .map_err(guest_error))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let b = self.bucket(&bucket)?;
        Ok(b.set_many(vec![(key, value)]).await.map_err(guest_error))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        let b = self.bucket(&bucket)?;
        Ok(b.delete_many(vec![key]).await.map_err(guest_error))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        let b = self.bucket(&bucket)?;
        Ok(b.get_many(vec![key])
            .await
            .map(|v| v.first().is_some_and(Option::is_some))
            .map_err(guest_error))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        let b = self.bucket(&bucket)?;
        Ok(b.list(cursor)
            .await
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
            .map_err(guest_error))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        self.state.open = self.state.open.saturating_sub(1);
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        let b = self.bucket(&bucket)?;
        Ok(b.increment(key, delta).await.map_err(guest_error))
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let b = self.bucket(&bucket)?;
        if let Err(e) = b.check_batch(keys.len()) {
            return Ok(Err(guest_error(e)));
        }
        let values = match b.get_many(keys.clone()).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(guest_error(e))),
        };
        Ok(Ok(keys
            .into_iter()
            .zip(values)
            .map(|(k, v)| v.map(|v| (k, v)))
            .collect()))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let b = self.bucket(&bucket)?;
        if let Err(e) = b.check_batch(key_values.len()) {
            return Ok(Err(guest_error(e)));
        }
        Ok(b.set_many(key_values).await.map_err(guest_error))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let b = self.bucket(&bucket)?;
        if let Err(e) = b.check_batch(keys.len()) {
            return Ok(Err(guest_error(e)));
        }
        Ok(b.delete_many(keys).await.map_err(guest_error))
    }
}

impl config::Host for KvView<'_> {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, config::Error>> {
        Ok(match &self.state.config {
            None => Ok(None),
            Some(c) => c.get(&key).map_err(config::Error::Io),
        })
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config::Error>> {
        Ok(match &self.state.config {
            None => Ok(Vec::new()),
            Some(c) => c.get_all().map_err(config::Error::Io),
        })
    }
}

#[cfg(test)]
mod tests;
