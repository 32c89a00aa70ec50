//! Key-value storage through `wasi:keyvalue` (store, atomics, batch).
//!
//! An app names the buckets it uses in its settings (`keyvalue =
//! ["default"]` in `berth.toml`); [`Store::open`] of any other name fails.
//! What a bucket holds outlives requests, instances and host restarts, and
//! no other app can see it. Keys are strings, values bytes.
//!
//! ```no_run
//! use berth_sdk::{Request, Response, StatusCode};
//!
//! #[berth_sdk::http_component]
//! fn handle(_request: Request) -> berth_sdk::Result<Response> {
//!     let store = berth_sdk::kv::Store::open("default")?;
//!     let visits = store.increment("visits", 1)?;
//!     store.set("last-path", "/")?;
//!     Ok(berth_sdk::text(StatusCode::OK, format!("visit {visits}\n")))
//! }
//! ```
//!
//! Each call goes to the host's store; quotas (keys, value size, total
//! bytes, keys per batch call) are the app's `keyvalue_limits`, and a call
//! over one fails with an [`Error`] that names it.

use std::fmt;

use crate::wit::wasi::keyvalue::{atomics, batch, store};

/// Why a key-value call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The host has no store of that name.
    NoSuchStore,
    /// The app may not use the bucket.
    AccessDenied,
    /// Anything else, in the host's words: a bucket the app does not
    /// declare, a quota, a key that does not hold a number, the store
    /// failing.
    Other(String),
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NoSuchStore => Self::NoSuchStore,
            store::Error::AccessDenied => Self::AccessDenied,
            store::Error::Other(s) => Self::Other(s),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchStore => f.write_str("key-value: no such store"),
            Self::AccessDenied => f.write_str("key-value: access denied"),
            Self::Other(s) => write!(f, "key-value: {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// An open bucket of the app.
pub struct Store {
    name: String,
    bucket: store::Bucket,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("name", &self.name).finish()
    }
}

impl Store {
    /// Opens the bucket `name`, one of the app's `keyvalue` list.
    ///
    /// # Errors
    ///
    /// If the app does not declare `name` (the error lists what it does
    /// declare), or declares no buckets at all.
    pub fn open(name: &str) -> Result<Self, Error> {
        Ok(Self {
            name: name.into(),
            bucket: store::open(name)?,
        })
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key`, or `None` when it is not set.
    ///
    /// # Errors
    ///
    /// If the store fails or the key is over the host's length limit.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.bucket.get(key)?)
    }

    /// The value of `key` as text (invalid UTF-8 replaced), or `None`.
    ///
    /// # Errors
    ///
    /// As [`Store::get`].
    pub fn get_string(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self
            .get(key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets `key` to `value`, replacing what it held.
    ///
    /// # Errors
    ///
    /// If the write would go over one of the app's quotas (nothing is
    /// written then), or the store fails.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
        Ok(self.bucket.set(key, value.as_ref())?)
    }

    /// Deletes `key`; deleting a key that is not set is no error.
    ///
    /// # Errors
    ///
    /// If the store fails.
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        Ok(self.bucket.delete(key)?)
    }

    /// Whether `key` is set.
    ///
    /// # Errors
    ///
    /// If the store fails.
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(self.bucket.exists(key)?)
    }

    /// Adds `delta` to the number `key` holds (a key that is not set counts
    /// as 0) and returns the sum, atomically: concurrent increments lose
    /// nothing. The value is stored as decimal text, so [`Store::get_string`]
    /// reads it back.
    ///
    /// # Errors
    ///
    /// If `key` holds something other than a number, the sum overflows, or
    /// a new key would go over a quota.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        Ok(atomics::increment(&self.bucket, key, delta)?)
    }

    /// Every key of the bucket, in byte order, fetched a page at a time as
    /// the iterator is advanced. Keys set or deleted while it runs may or
    /// may not show; every key present throughout shows exactly once.
    pub fn keys(&self) -> Keys<'_> {
        Keys {
            store: self,
            page: Vec::new().into_iter(),
            cursor: None,
            done: false,
        }
    }

    /// The values of `keys`, in their order (`None` for one that is not
    /// set). At most the app's `keyvalue_limits.batch` keys.
    ///
    /// # Errors
    ///
    /// If there are too many keys, or the store fails.
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let got = batch::get_many(&self.bucket, &owned)?;
        Ok(got.into_iter().map(|kv| kv.map(|(_, v)| v)).collect())
    }

    /// Sets every pair, all or none (a quota refusal writes nothing). At
    /// most the app's `keyvalue_limits.batch` pairs.
    ///
    /// # Errors
    ///
    /// As [`Store::set`], and if there are too many pairs.
    pub fn set_many<K, V>(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<(), Error>
    where
        K: Into<String>,
        V: Into<Vec<u8>>,
    {
        let pairs: Vec<(String, Vec<u8>)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Ok(batch::set_many(&self.bucket, &pairs)?)
    }

    /// Deletes every key in `keys`. At most the app's
    /// `keyvalue_limits.batch` keys.
    ///
    /// # Errors
    ///
    /// If there are too many keys, or the store fails.
    pub fn delete_many(&self, keys: &[&str]) -> Result<(), Error> {
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        Ok(batch::delete_many(&self.bucket, &owned)?)
    }
}

/// The keys of a [`Store`], from [`Store::keys`].
pub struct Keys<'a> {
    store: &'a Store,
    page: std::vec::IntoIter<String>,
    cursor: Option<u64>,
    done: bool,
}

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("store", &self.store.name)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Iterator for Keys<'_> {
    type Item = Result<String, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(key) = self.page.next() {
                return Some(Ok(key));
            }
            if self.done {
                return None;
            }
            match self.store.bucket.list_keys(self.cursor) {
                Ok(response) => {
                    self.page = response.keys.into_iter();
                    self.cursor = response.cursor;
                    self.done = self.cursor.is_none();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
            }
        }
    }
}
