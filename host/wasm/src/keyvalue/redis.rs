//! The Redis backend. Per app and bucket: the value of key `K` at
//! `berth:kv:{app}:{bucket}:K`, the bucket's keys in the sorted set
//! `berth:kv-index:{app}:{bucket}` (all at score 0, so in byte order: a
//! page of `list-keys` is a `ZRANGEBYLEX` after the last key of the one
//! before); per app, its key count and bytes in the hash
//! `berth:kv-usage:{app}` (fields `keys`, `bytes`, and `{bucket}:keys`,
//! `{bucket}:bytes` for each bucket). App and bucket names are labels (no
//! `:`), so one app's names never fall under another's prefix. Writes run
//! as Lua scripts, atomic on the server, so the quota checks and
//! `increment` hold under any number of concurrent callers and hosts.
//! One multiplexed connection per store (`ConnectionManager`: reconnects,
//! timeouts).

use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{KvError, KvQuota, LIST_PAGE, Namespace};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis store.
pub struct RedisStore {
    name: String,
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

// KEYS: usage, index, data keys…; ARGV: max keys, max bytes, then a name
// and a value per data key, then the bucket. Returns {1} or {0, what,
// would-be}.
const SET_MANY: &str = r"
local keys = tonumber(redis.call('HGET', KEYS[1], 'keys') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local keys0, bytes0, bucket = keys, bytes, ARGV[#ARGV]
local n = #KEYS - 2
for i = 1, n do
  local name = ARGV[1 + 2 * i]
  local value = ARGV[2 + 2 * i]
  local dk = KEYS[2 + i]
  if redis.call('EXISTS', dk) == 1 then
    bytes = bytes - string.len(name) - redis.call('STRLEN', dk)
  else
    keys = keys + 1
  end
  bytes = bytes + string.len(name) + string.len(value)
end
if keys > tonumber(ARGV[1]) then return {0, 'keys', keys} end
if bytes > tonumber(ARGV[2]) then return {0, 'bytes', bytes} end
for i = 1, n do
  redis.call('SET', KEYS[2 + i], ARGV[2 + 2 * i])
  redis.call('ZADD', KEYS[2], 0, ARGV[1 + 2 * i])
end
redis.call('HSET', KEYS[1], 'keys', keys, 'bytes', bytes)
redis.call('HINCRBY', KEYS[1], bucket .. ':keys', keys - keys0)
redis.call('HINCRBY', KEYS[1], bucket .. ':bytes', bytes - bytes0)
return {1}
";

// KEYS: usage, index, data keys…; ARGV: a name per data key, then the
// bucket.
const DELETE_MANY: &str = r"
local keys = tonumber(redis.call('HGET', KEYS[1], 'keys') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local keys0, bytes0, bucket = keys, bytes, ARGV[#ARGV]
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    bytes = bytes - string.len(ARGV[i - 2]) - redis.call('STRLEN', KEYS[i])
    keys = keys - 1
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[2], ARGV[i - 2])
  end
end
redis.call('HSET', KEYS[1], 'keys', keys, 'bytes', bytes)
redis.call('HINCRBY', KEYS[1], bucket .. ':keys', keys - keys0)
redis.call('HINCRBY', KEYS[1], bucket .. ':bytes', bytes - bytes0)
return 1
";

// KEYS: usage, index, data key; ARGV: max keys, max bytes, name, delta,
// bucket.
// Returns {1, new value as text} or {0, what, would-be}. INCRBY checks the
// value is an integer and the sum fits Redis's signed 64 bits.
const INCREMENT: &str = r"
local keys = tonumber(redis.call('HGET', KEYS[1], 'keys') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local keys0, bytes0 = keys, bytes
local old = redis.call('GET', KEYS[3])
redis.call('INCRBY', KEYS[3], ARGV[4])
local new = redis.call('GET', KEYS[3])
if old then
  bytes = bytes - string.len(old)
else
  keys = keys + 1
  bytes = bytes + string.len(ARGV[3])
end
bytes = bytes + string.len(new)
local refused = nil
if keys > tonumber(ARGV[1]) then refused = {0, 'keys', keys}
elseif bytes > tonumber(ARGV[2]) then refused = {0, 'bytes', bytes} end
if refused then
  if old then redis.call('SET', KEYS[3], old) else redis.call('DEL', KEYS[3]) end
  return refused
end
redis.call('ZADD', KEYS[2], 0, ARGV[3])
redis.call('HSET', KEYS[1], 'keys', keys, 'bytes', bytes)
redis.call('HINCRBY', KEYS[1], ARGV[5] .. ':keys', keys - keys0)
redis.call('HINCRBY', KEYS[1], ARGV[5] .. ':bytes', bytes - bytes0)
return {1, new}
";

fn store_err(name: &str, e: &redis::RedisError) -> KvError {
    KvError::Store(format!("key-value store `{name}` (redis): {e}"))
}

fn data_key(ns: &Namespace, key: &str) -> Vec<u8> {
    let mut k = format!("berth:kv:{}:{}:", ns.app, ns.bucket).into_bytes();
    k.extend_from_slice(key.as_bytes());
    k
}

fn index_key(ns: &Namespace) -> String {
    format!("berth:kv-index:{}:{}", ns.app, ns.bucket)
}

fn usage_key(app: &str) -> String {
    format!("berth:kv-usage:{app}")
}

fn refusal(app: &str, what: &str, n: i64, quota: KvQuota) -> KvError {
    if what == "keys" {
        KvError::Quota(format!(
            "app `{app}` would hold {n} keys, over keyvalue_limits.keys ({})",
            quota.keys
        ))
    } else {
        KvError::Quota(format!(
            "app `{app}` would hold {n} bytes of keys and values, over keyvalue_limits.total_size ({} bytes)",
            quota.total_size
        ))
    }
}

impl RedisStore {
    /// The store `name` at `url`; connects on first use.
    ///
    /// # Errors
    /// When `url` is not a Redis URL (the URL is not repeated: it may hold
    /// a password).
    pub fn new(name: &str, url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            anyhow::anyhow!(
                "keyvalue.stores.{name}.url is not a usable Redis URL ({:?})",
                e.kind()
            )
        })?;
        Ok(Self {
            name: name.into(),
            client,
            conn: OnceCell::new(),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, KvError> {
        self.conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .cloned()
            .map_err(|e| store_err(&self.name, &e))
    }

    pub(crate) async fn get_many(
        &self,
        ns: &Namespace,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let dks: Vec<Vec<u8>> = keys.iter().map(|k| data_key(ns, k)).collect();
        redis::cmd("MGET")
            .arg(dks)
            .query_async(&mut c)
            .await
            .map_err(|e| store_err(&self.name, &e))
    }

    pub(crate) async fn set_many(
        &self,
        ns: &Namespace,
        pairs: &[(String, Vec<u8>)],
        quota: KvQuota,
    ) -> Result<(), KvError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let script = Script::new(SET_MANY);
        let mut inv = script.prepare_invoke();
        inv.key(usage_key(&ns.app)).key(index_key(ns));
        for (k, _) in pairs {
            inv.key(data_key(ns, k));
        }
        inv.arg(quota.keys).arg(quota.total_size);
        for (k, v) in pairs {
            inv.arg(k.as_str()).arg(v.as_slice());
        }
        inv.arg(ns.bucket.as_str());
        let reply: Vec<redis::Value> = inv
            .invoke_async(&mut c)
            .await
            .map_err(|e| store_err(&self.name, &e))?;
        match reply.as_slice() {
            [redis::Value::Int(1)] => Ok(()),
            [_, what, n] => Err(refusal(
                &ns.app,
                &redis::from_redis_value_ref::<String>(what).unwrap_or_default(),
                redis::from_redis_value_ref(n).unwrap_or(0),
                quota,
            )),
            _ => Err(KvError::Store(format!(
                "key-value store `{}` (redis): unexpected reply to set",
                self.name
            ))),
        }
    }

    pub(crate) async fn delete_many(&self, ns: &Namespace, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let script = Script::new(DELETE_MANY);
        let mut inv = script.prepare_invoke();
        inv.key(usage_key(&ns.app)).key(index_key(ns));
        for k in keys {
            inv.key(data_key(ns, k));
        }
        for k in keys {
            inv.arg(k.as_str());
        }
        inv.arg(ns.bucket.as_str());
        inv.invoke_async::<i64>(&mut c)
            .await
            .map_err(|e| store_err(&self.name, &e))?;
        Ok(())
    }

    /// Up to [`LIST_PAGE`] keys of `ns` in byte order, after `after` when
    /// given, and whether more follow.
    pub(crate) async fn list(
        &self,
        ns: &Namespace,
        after: Option<&str>,
    ) -> Result<(Vec<String>, bool), KvError> {
        let mut c = self.conn().await?;
        // All at score 0, so ZRANGEBYLEX walks them in byte order; `(`
        // starts after the key. One more than a page, to know whether there
        // are more.
        let min: Vec<u8> = match after {
            Some(a) => [b"(".as_slice(), a.as_bytes()].concat(),
            None => b"-".to_vec(),
        };
        let mut keys: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(index_key(ns))
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(LIST_PAGE + 1)
            .query_async(&mut c)
            .await
            .map_err(|e| store_err(&self.name, &e))?;
        let more = keys.len() > LIST_PAGE;
        keys.truncate(LIST_PAGE);
        Ok((keys, more))
    }

    pub(crate) async fn increment(
        &self,
        ns: &Namespace,
        key: &str,
        delta: u64,
        quota: KvQuota,
    ) -> Result<u64, KvError> {
        let Ok(delta) = i64::try_from(delta) else {
            return Err(KvError::Refused(format!(
                "a delta of {delta} is over Redis's integer range (at most {})",
                i64::MAX
            )));
        };
        let mut c = self.conn().await?;
        let script = Script::new(INCREMENT);
        let mut inv = script.prepare_invoke();
        inv.key(usage_key(&ns.app))
            .key(index_key(ns))
            .key(data_key(ns, key))
            .arg(quota.keys)
            .arg(quota.total_size)
            .arg(key)
            .arg(delta)
            .arg(ns.bucket.as_str());
        let reply: Vec<redis::Value> = inv.invoke_async(&mut c).await.map_err(|e| {
            if e.to_string().contains("not an integer") {
                KvError::Refused(format!(
                    "key `{}` does not hold an integer Redis can increment (at most {})",
                    key.escape_debug(),
                    i64::MAX
                ))
            } else {
                store_err(&self.name, &e)
            }
        })?;
        let text = |v: &redis::Value| -> Option<String> { redis::from_redis_value_ref(v).ok() };
        match reply.as_slice() {
            [redis::Value::Int(1), v] => {
                text(v).and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
                    KvError::Refused(format!(
                        "key `{}` holds a negative count after incrementing",
                        key.escape_debug()
                    ))
                })
            }
            [_, what, n] => Err(refusal(
                &ns.app,
                &text(what).unwrap_or_default(),
                redis::from_redis_value_ref(n).unwrap_or(0),
                quota,
            )),
            _ => Err(KvError::Store(format!(
                "key-value store `{}` (redis): unexpected reply to increment",
                self.name
            ))),
        }
    }

    /// Keys and bytes `app` holds here.
    pub(crate) async fn usage(&self, app: &str) -> Result<(u64, u64), String> {
        let mut c = self.conn().await.map_err(|e| e.to_string())?;
        let (keys, bytes): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(usage_key(app))
            .arg("keys")
            .arg("bytes")
            .query_async(&mut c)
            .await
            .map_err(|e| store_err(&self.name, &e).to_string())?;
        Ok((keys.unwrap_or(0), bytes.unwrap_or(0)))
    }

    /// Keys and bytes bucket `ns` holds.
    pub(crate) async fn bucket_usage(&self, ns: &Namespace) -> Result<(u64, u64), String> {
        let mut c = self.conn().await.map_err(|e| e.to_string())?;
        let (keys, bytes): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(usage_key(&ns.app))
            .arg(format!("{}:keys", ns.bucket))
            .arg(format!("{}:bytes", ns.bucket))
            .query_async(&mut c)
            .await
            .map_err(|e| store_err(&self.name, &e).to_string())?;
        Ok((keys.unwrap_or(0), bytes.unwrap_or(0)))
    }
}
