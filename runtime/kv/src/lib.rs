//! Plugin key-value state for Switchyard: what the host's `wasi:keyvalue`
//! reaches. This crate knows nothing of wasm; the plugin host depends on it.
//!
//! Every key lives in a [`Bucket`]: a plugin's name (its namespace) and a
//! bucket identifier the plugin chose with `open`. A bucket can only be made
//! by [`KeyValue::open`] for the plugin the host runs, so one plugin never
//! names another's keys. [`KeyValue`] checks sizes ([`KvLimits`]) before a
//! backend sees a call, so an oversized key or value stores nothing.
//!
//! Backends ([`KvBackend`]):
//! - [`memory`]: [`MemoryBackend`], one map per server process, owned by the
//!   server (not an instance), so values survive plugin swaps.
//! - [`redis`]: [`RedisBackend`], keys `<prefix>:<plugin>:<bucket>:<key>` on
//!   one Redis, shared by every process and surviving restarts; every call
//!   bounded by a timeout; `INCRBY` for increments, a Lua script for
//!   compare-and-swap.
//!
//! Consistency (both backends): each call is atomic on its own and reads see
//! every write that completed before them (in every process, with Redis);
//! `increment` is an atomic read-modify-write on a decimal counter;
//! `compare_and_swap` writes only if the value is still the one read (by
//! value); the batch calls are not atomic as a whole (the interface allows
//! partial results).

pub mod memory;
pub mod redis;

use std::sync::Arc;

pub use memory::MemoryBackend;
pub use redis::{RedisBackend, RedisKvConfig};

/// Why a key-value call failed. Every variant becomes the interface's
/// `error::other(message)`; nothing was stored when a size check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A key, value or bucket identifier is over its limit, or malformed.
    #[error("{0}")]
    Invalid(String),
    /// `increment` on a value that is not a decimal counter, or past its range.
    #[error("{0}")]
    NotACounter(String),
    /// The backend answered with an error (a refused `increment`, a Redis
    /// error reply).
    #[error("{0}")]
    Refused(String),
    /// The backend did not answer (Redis down or slow): nothing is known to
    /// have been stored.
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
}

/// Size limits on what a plugin may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Longest bucket identifier, in bytes.
    pub max_bucket_bytes: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 512,
            max_value_bytes: 1 << 20,
            max_bucket_bytes: 64,
        }
    }
}

/// A plugin's bucket: the namespace (plugin name) and the identifier it
/// opened. Only [`KeyValue::open`] makes one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bucket {
    plugin: Arc<str>,
    name: Arc<str>,
}

impl Bucket {
    /// The plugin whose namespace holds the bucket.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The identifier the plugin opened.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One page of `list-keys`: the keys and the cursor of the next page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys of this page (no order promised).
    pub keys: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub cursor: Option<u64>,
}

/// A storage backend. Implementations trust their arguments: [`KeyValue`]
/// has checked every size.
#[async_trait::async_trait]
pub trait KvBackend: Send + Sync + std::fmt::Debug + 'static {
    /// The value of `key`, if any.
    async fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Store `value` under `key`, replacing any value.
    async fn set(&self, bucket: &Bucket, key: &str, value: Vec<u8>) -> Result<(), KvError>;
    /// Remove `key`; a missing key is not an error.
    async fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KvError>;
    /// Whether `key` has a value.
    async fn exists(&self, bucket: &Bucket, key: &str) -> Result<bool, KvError>;
    /// A page of the bucket's keys, starting at `cursor` (`None`: the first).
    async fn list_keys(&self, bucket: &Bucket, cursor: Option<u64>) -> Result<KeyPage, KvError>;
    /// Add `delta` to the decimal counter at `key` (missing: 0) atomically
    /// and return the new value.
    async fn increment(&self, bucket: &Bucket, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Store `value` under `key` only if its value is still `expected`
    /// (`None`: absent), atomically; whether it was stored.
    async fn compare_and_swap(
        &self,
        bucket: &Bucket,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> Result<bool, KvError>;
    /// The values of `keys`, in order.
    async fn get_many(
        &self,
        bucket: &Bucket,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError>;
    /// Store every pair.
    async fn set_many(
        &self,
        bucket: &Bucket,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError>;
    /// Remove every key.
    async fn delete_many(&self, bucket: &Bucket, keys: &[String]) -> Result<(), KvError>;
}

/// The host's key-value store: a backend and the limits checked before it.
/// Cheap to clone; every clone shares the backend.
#[derive(Debug, Clone)]
pub struct KeyValue {
    backend: Arc<dyn KvBackend>,
    limits: KvLimits,
}

impl Default for KeyValue {
    /// An in-memory store with the default limits.
    fn default() -> Self {
        Self::new(Arc::new(MemoryBackend::default()), KvLimits::default())
    }
}

impl KeyValue {
    /// A store over `backend` with `limits`.
    pub fn new(backend: Arc<dyn KvBackend>, limits: KvLimits) -> Self {
        Self { backend, limits }
    }

    /// The limits checked before every call.
    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    /// Open the bucket `identifier` in `plugin`'s namespace. Identifiers are
    /// up to `max_bucket_bytes` of ASCII letters, digits, `-`, `_` and `.`
    /// (the empty identifier is a bucket too), so the Redis key layout stays
    /// unambiguous.
    pub fn open(&self, plugin: &Arc<str>, identifier: &str) -> Result<Bucket, KvError> {
        if identifier.len() > self.limits.max_bucket_bytes {
            return Err(KvError::Invalid(format!(
                "bucket identifier is {} bytes, over the limit of {} bytes",
                identifier.len(),
                self.limits.max_bucket_bytes
            )));
        }
        if !identifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(KvError::Invalid(format!(
                "bucket identifier `{identifier}` may only contain ASCII letters, digits, '-', '_' and '.'"
            )));
        }
        Ok(Bucket {
            plugin: Arc::clone(plugin),
            name: identifier.into(),
        })
    }

    fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(KvError::Invalid(format!(
                "key is {} bytes, over the limit of {} bytes; nothing stored",
                key.len(),
                self.limits.max_key_bytes
            )));
        }
        Ok(())
    }

    fn check_value(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.limits.max_value_bytes {
            return Err(KvError::Invalid(format!(
                "value for key `{}` is {} bytes, over the limit of {} bytes; nothing stored",
                key.chars().take(64).collect::<String>(),
                value.len(),
                self.limits.max_value_bytes
            )));
        }
        Ok(())
    }

    /// `bucket.get`.
    pub async fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check_key(key)?;
        self.backend.get(bucket, key).await
    }

    /// `bucket.set`: refused (nothing stored) past the key or value limit.
    pub async fn set(&self, bucket: &Bucket, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.check_key(key)?;
        self.check_value(key, &value)?;
        self.backend.set(bucket, key, value).await
    }

    /// `bucket.delete`.
    pub async fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KvError> {
        self.check_key(key)?;
        self.backend.delete(bucket, key).await
    }

    /// `bucket.exists`.
    pub async fn exists(&self, bucket: &Bucket, key: &str) -> Result<bool, KvError> {
        self.check_key(key)?;
        self.backend.exists(bucket, key).await
    }

    /// `bucket.list-keys`.
    pub async fn list_keys(
        &self,
        bucket: &Bucket,
        cursor: Option<u64>,
    ) -> Result<KeyPage, KvError> {
        self.backend.list_keys(bucket, cursor).await
    }

    /// `atomics.increment`: counters are decimal ASCII signed 64-bit
    /// integers (as Redis's `INCRBY` keeps them).
    pub async fn increment(&self, bucket: &Bucket, key: &str, delta: i64) -> Result<i64, KvError> {
        self.check_key(key)?;
        self.backend.increment(bucket, key, delta).await
    }

    /// The draft interface's `increment`, unsigned both ways: a delta past
    /// `i64::MAX` is refused (nothing changes), and so is reporting a
    /// counter below zero (only a `set` can make one).
    pub async fn increment_unsigned(
        &self,
        bucket: &Bucket,
        key: &str,
        delta: u64,
    ) -> Result<u64, KvError> {
        let delta = i64::try_from(delta).map_err(|_| {
            KvError::NotACounter(format!(
                "increment by {delta} is past the counter range (up to {})",
                i64::MAX
            ))
        })?;
        let value = self.increment(bucket, key, delta).await?;
        u64::try_from(value).map_err(|_| {
            KvError::NotACounter(format!(
                "counter is negative ({value}); this interface version returns an unsigned value"
            ))
        })
    }

    /// `atomics.swap` of a `cas` handle: store `value` only if the key's
    /// value is still `expected` (what the handle read; `None`: absent).
    /// Refused past the value limit, nothing stored.
    pub async fn compare_and_swap(
        &self,
        bucket: &Bucket,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> Result<bool, KvError> {
        self.check_key(key)?;
        self.check_value(key, &value)?;
        self.backend
            .compare_and_swap(bucket, key, expected, value)
            .await
    }

    /// `batch.get-many`.
    pub async fn get_many(
        &self,
        bucket: &Bucket,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        keys.iter().try_for_each(|key| self.check_key(key))?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.backend.get_many(bucket, keys).await
    }

    /// `batch.set-many`: every pair is checked first, so one oversized pair
    /// stores nothing.
    pub async fn set_many(
        &self,
        bucket: &Bucket,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError> {
        for (key, value) in &entries {
            self.check_key(key)?;
            self.check_value(key, value)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.backend.set_many(bucket, entries).await
    }

    /// `batch.delete-many`.
    pub async fn delete_many(&self, bucket: &Bucket, keys: &[String]) -> Result<(), KvError> {
        keys.iter().try_for_each(|key| self.check_key(key))?;
        if keys.is_empty() {
            return Ok(());
        }
        self.backend.delete_many(bucket, keys).await
    }
}

/// What Redis says of a value `INCRBY` cannot use; the memory backend says
/// the same.
const NOT_A_COUNTER: &str = "value is not an integer or out of range";

/// The new value of a counter stored as `current` after adding `delta`:
/// both backends keep counters as decimal ASCII signed 64-bit integers, and
/// this reads them as strictly as Redis's `INCRBY` (no sign but `-`, no
/// leading zeros or spaces).
fn add_to_counter(current: Option<&[u8]>, delta: i64) -> Result<i64, KvError> {
    let current = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok().filter(|n| n.to_string() == text))
            .ok_or_else(|| KvError::NotACounter(NOT_A_COUNTER.to_owned()))?,
    };
    current.checked_add(delta).ok_or_else(|| {
        KvError::NotACounter(format!(
            "increment or decrement would overflow ({current} + {delta})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(limits: KvLimits) -> KeyValue {
        KeyValue::new(Arc::new(MemoryBackend::default()), limits)
    }

    #[tokio::test]
    async fn plugins_never_share_keys() {
        let kv = KeyValue::default();
        let a = kv.open(&Arc::from("a"), "").expect("open");
        let b = kv.open(&Arc::from("b"), "").expect("open");
        kv.set(&a, "k", b"1".to_vec()).await.expect("set");
        assert_eq!(kv.get(&b, "k").await.expect("get"), None);
        assert_eq!(kv.get(&a, "k").await.expect("get"), Some(b"1".to_vec()));
    }

    #[tokio::test]
    async fn oversized_keys_and_values_store_nothing() {
        let kv = store(KvLimits {
            max_key_bytes: 4,
            max_value_bytes: 8,
            max_bucket_bytes: 3,
        });
        let plugin: Arc<str> = Arc::from("p");
        assert!(kv.open(&plugin, "abcd").is_err());
        assert!(kv.open(&plugin, "a:b").is_err());
        let bucket = kv.open(&plugin, "abc").expect("open");
        let err = kv.set(&bucket, "k", vec![0; 9]).await.expect_err("value");
        assert!(err.to_string().contains("over the limit of 8"), "{err}");
        assert!(kv.set(&bucket, "kkkkk", vec![0]).await.is_err());
        let pairs = vec![("a".to_owned(), vec![1]), ("b".to_owned(), vec![0; 9])];
        assert!(kv.set_many(&bucket, pairs).await.is_err());
        assert_eq!(kv.get(&bucket, "a").await.expect("get"), None);
        assert_eq!(kv.get(&bucket, "k").await.expect("get"), None);
    }

    #[test]
    fn counters_are_decimal_and_bounded() {
        assert_eq!(add_to_counter(None, 3), Ok(3));
        assert_eq!(add_to_counter(Some(b"40"), 2), Ok(42));
        assert_eq!(add_to_counter(Some(b"-1"), -1), Ok(-2));
        assert!(add_to_counter(Some(b"x"), 1).is_err());
        assert!(add_to_counter(Some(b"007"), 1).is_err());
        assert!(add_to_counter(Some(b"+7"), 1).is_err());
        assert!(add_to_counter(Some(b"9223372036854775807"), 1).is_err());
    }

    #[tokio::test]
    async fn compare_and_swap_writes_only_over_the_value_it_read() {
        let kv = KeyValue::default();
        let bucket = kv.open(&Arc::from("p"), "").expect("open");
        assert_eq!(
            kv.compare_and_swap(&bucket, "k", None, b"1".to_vec()).await,
            Ok(true)
        );
        assert_eq!(
            kv.compare_and_swap(&bucket, "k", None, b"2".to_vec()).await,
            Ok(false)
        );
        let swapped = kv
            .compare_and_swap(&bucket, "k", Some(b"1"), b"3".to_vec())
            .await;
        assert_eq!(swapped, Ok(true));
        assert_eq!(kv.get(&bucket, "k").await, Ok(Some(b"3".to_vec())));
    }
}
