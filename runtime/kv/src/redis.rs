//! [`RedisBackend`]: every plugin's buckets in Redis, shared by every
//! process on that Redis and surviving server restarts.
//!
//! Key layout: `<prefix>:<plugin>:<bucket>:<key>` (prefix `switchyard:kv`
//! by default), each a plain Redis string. A plugin name holds no `:` and a
//! bucket identifier none either ([`crate::KeyValue::open`]), so the layout
//! is unambiguous: the key is everything after the third `:` past the
//! prefix. Counters are decimal strings, so `INCRBY` works on them.
//!
//! Every call runs under [`RedisKvConfig::timeout`] (and the connection's
//! own connect and response timeouts), so a dead Redis gives
//! [`KvError::Unavailable`] within it, never a hang; the connection is
//! re-established on a later call.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use crate::{Bucket, KeyPage, KvBackend, KvError};

/// Keys one `SCAN` step looks at (Redis's `COUNT`).
const SCAN_COUNT: usize = 1000;

/// Compare-and-swap: `SET` only if the value is still the one the `cas`
/// handle read (`ARGV[1]` = `1` and the value in `ARGV[2]`, or `0` for an
/// absent key); 1 if it stored. Lua strings are byte strings, so any value
/// compares exactly.
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
local unchanged
if ARGV[1] == '1' then unchanged = (current == ARGV[2]) else unchanged = (current == false) end
if not unchanged then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
return 1
";

/// Where the Redis backend keeps keys, and how long a call may take.
#[derive(Clone)]
pub struct RedisKvConfig {
    /// A `redis://`, `rediss://` or `unix://` URL (the Redis layer's first host).
    pub url: String,
    /// Put before every key, followed by `:`.
    pub prefix: String,
    /// Longest one key-value call may wait for Redis.
    pub timeout: Duration,
}

impl RedisKvConfig {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "switchyard:kv";
}

impl std::fmt::Debug for RedisKvConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKvConfig")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A URL with its password hidden, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Buckets in Redis.
pub struct RedisBackend {
    commands: ConnectionManager,
    url: String,
    prefix: String,
    timeout: Duration,
    compare_and_swap: Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Escape Redis glob characters, for a `SCAN MATCH` pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisBackend {
    /// A backend on `config.url`. Connects lazily: Redis need not be up
    /// yet; calls fail as unavailable until it is.
    ///
    /// # Errors
    /// When redis-rs cannot parse the URL.
    pub fn new(config: RedisKvConfig) -> Result<Self, redis::RedisError> {
        let RedisKvConfig {
            url,
            prefix,
            timeout,
        } = config;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let client = Client::open(url.as_str())?;
        let commands = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(Self {
            commands,
            url: redact(&url),
            prefix,
            timeout,
            compare_and_swap: Script::new(COMPARE_AND_SWAP),
        })
    }

    /// `<prefix>:<plugin>:<bucket>:`, the start of every key of `bucket`.
    fn bucket_prefix(&self, bucket: &Bucket) -> String {
        format!("{}:{}:{}:", self.prefix, bucket.plugin(), bucket.name())
    }

    fn key(&self, bucket: &Bucket, key: &str) -> String {
        let mut full = self.bucket_prefix(bucket);
        full.push_str(key);
        full
    }

    /// Run one Redis call under the timeout; every failure is
    /// `Unavailable` naming the server, except an error reply (`Refused`).
    async fn run<T>(
        &self,
        what: &str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, KvError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            // An error reply (a refused increment, NOAUTH, OOM): Redis is
            // there but said no.
            Ok(Err(error)) if error.code().is_some() => {
                Err(KvError::Refused(format!("Redis refused {what}: {error}")))
            }
            Ok(Err(error)) => Err(KvError::Unavailable(format!(
                "Redis at {} failed {what}: {error}",
                self.url
            ))),
            Err(_) => Err(KvError::Unavailable(format!(
                "Redis at {} did not answer {what} within {:?}",
                self.url, self.timeout
            ))),
        }
    }
}

#[async_trait::async_trait]
impl KvBackend for RedisBackend {
    async fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut conn = self.commands.clone();
        let cmd = redis::cmd("GET").arg(self.key(bucket, key)).clone();
        self.run("GET", cmd.query_async(&mut conn)).await
    }

    async fn set(&self, bucket: &Bucket, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        let mut conn = self.commands.clone();
        let cmd = redis::cmd("SET")
            .arg(self.key(bucket, key))
            .arg(value)
            .clone();
        self.run("SET", cmd.query_async::<()>(&mut conn)).await
    }

    async fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KvError> {
        let mut conn = self.commands.clone();
        let cmd = redis::cmd("DEL").arg(self.key(bucket, key)).clone();
        self.run("DEL", cmd.query_async::<()>(&mut conn)).await
    }

    async fn exists(&self, bucket: &Bucket, key: &str) -> Result<bool, KvError> {
        let mut conn = self.commands.clone();
        let cmd = redis::cmd("EXISTS").arg(self.key(bucket, key)).clone();
        self.run("EXISTS", cmd.query_async(&mut conn)).await
    }

    async fn list_keys(&self, bucket: &Bucket, cursor: Option<u64>) -> Result<KeyPage, KvError> {
        let mut conn = self.commands.clone();
        let prefix = self.bucket_prefix(bucket);
        let cmd = redis::cmd("SCAN")
            .arg(cursor.unwrap_or(0))
            .arg("MATCH")
            .arg(format!("{}*", glob_escape(&prefix)))
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .clone();
        let (next, keys): (u64, Vec<String>) = self.run("SCAN", cmd.query_async(&mut conn)).await?;
        Ok(KeyPage {
            keys: keys
                .into_iter()
                .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
                .collect(),
            cursor: (next != 0).then_some(next),
        })
    }

    async fn increment(&self, bucket: &Bucket, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut conn = self.commands.clone();
        let cmd = redis::cmd("INCRBY")
            .arg(self.key(bucket, key))
            .arg(delta)
            .clone();
        self.run("INCRBY", cmd.query_async(&mut conn)).await
    }

    async fn compare_and_swap(
        &self,
        bucket: &Bucket,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> Result<bool, KvError> {
        let mut conn = self.commands.clone();
        let mut invocation = self.compare_and_swap.key(self.key(bucket, key));
        invocation
            .arg(u8::from(expected.is_some()))
            .arg(expected.unwrap_or_default())
            .arg(value);
        let stored: i64 = self
            .run("compare-and-swap", invocation.invoke_async(&mut conn))
            .await?;
        Ok(stored == 1)
    }

    async fn get_many(
        &self,
        bucket: &Bucket,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let mut conn = self.commands.clone();
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(bucket, key));
        }
        self.run("MGET", cmd.query_async(&mut conn)).await
    }

    async fn set_many(
        &self,
        bucket: &Bucket,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError> {
        let mut conn = self.commands.clone();
        let mut cmd = redis::cmd("MSET");
        for (key, value) in entries {
            cmd.arg(self.key(bucket, &key)).arg(value);
        }
        self.run("MSET", cmd.query_async::<()>(&mut conn)).await
    }

    async fn delete_many(&self, bucket: &Bucket, keys: &[String]) -> Result<(), KvError> {
        let mut conn = self.commands.clone();
        let mut cmd = redis::cmd("DEL");
        for key in keys {
            cmd.arg(self.key(bucket, key));
        }
        self.run("DEL", cmd.query_async::<()>(&mut conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("switchyard:kv:p:b:"), "switchyard:kv:p:b:");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("unix:///tmp/r.sock"), "unix:///tmp/r.sock");
    }
}
