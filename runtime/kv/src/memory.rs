//! [`MemoryBackend`]: every plugin's buckets in this process's memory.
//!
//! The server owns the backend, not an instance or a plugin version, so
//! values survive hot swaps; they are lost when the process exits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::{Bucket, KeyPage, KvBackend, KvError, add_to_counter};

/// Keys returned by one `list-keys` page.
const PAGE: usize = 1000;

/// Buckets in memory. A std mutex guards the map: every call holds it for
/// one map operation and never across an `.await`.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    buckets: Mutex<HashMap<Bucket, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryBackend {
    fn lock(&self) -> MutexGuard<'_, HashMap<Bucket, BTreeMap<String, Vec<u8>>>> {
        // A poisoned map is still consistent: no code panics halfway
        // through one of the updates below.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl KvBackend for MemoryBackend {
    async fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.lock().get(bucket).and_then(|b| b.get(key)).cloned())
    }

    async fn set(&self, bucket: &Bucket, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.lock()
            .entry(bucket.clone())
            .or_default()
            .insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KvError> {
        let mut buckets = self.lock();
        if let Some(entries) = buckets.get_mut(bucket) {
            entries.remove(key);
            if entries.is_empty() {
                buckets.remove(bucket);
            }
        }
        Ok(())
    }

    async fn exists(&self, bucket: &Bucket, key: &str) -> Result<bool, KvError> {
        Ok(self.lock().get(bucket).is_some_and(|b| b.contains_key(key)))
    }

    async fn list_keys(&self, bucket: &Bucket, cursor: Option<u64>) -> Result<KeyPage, KvError> {
        let buckets = self.lock();
        let Some(entries) = buckets.get(bucket) else {
            return Ok(KeyPage::default());
        };
        // The cursor is the guest's: clamp it rather than trust it.
        let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let keys: Vec<String> = entries.keys().skip(skip).take(PAGE).cloned().collect();
        let next = skip.saturating_add(keys.len());
        let cursor = (next < entries.len()).then(|| u64::try_from(next).unwrap_or(u64::MAX));
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(&self, bucket: &Bucket, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut buckets = self.lock();
        let entries = buckets.entry(bucket.clone()).or_default();
        let value = add_to_counter(entries.get(key).map(Vec::as_slice), delta)?;
        entries.insert(key.to_owned(), value.to_string().into_bytes());
        Ok(value)
    }

    async fn compare_and_swap(
        &self,
        bucket: &Bucket,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> Result<bool, KvError> {
        let mut buckets = self.lock();
        let entries = buckets.entry(bucket.clone()).or_default();
        if entries.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        entries.insert(key.to_owned(), value);
        Ok(true)
    }

    async fn get_many(
        &self,
        bucket: &Bucket,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let buckets = self.lock();
        let entries = buckets.get(bucket);
        Ok(keys
            .iter()
            .map(|key| entries.and_then(|e| e.get(key)).cloned())
            .collect())
    }

    async fn set_many(
        &self,
        bucket: &Bucket,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError> {
        self.lock()
            .entry(bucket.clone())
            .or_default()
            .extend(entries);
        Ok(())
    }

    async fn delete_many(&self, bucket: &Bucket, keys: &[String]) -> Result<(), KvError> {
        let mut buckets = self.lock();
        if let Some(entries) = buckets.get_mut(bucket) {
            for key in keys {
                entries.remove(key);
            }
            if entries.is_empty() {
                buckets.remove(bucket);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::KeyValue;

    #[tokio::test]
    async fn list_keys_pages_through_a_bucket() {
        let kv = KeyValue::default();
        let bucket = kv.open(&Arc::from("p"), "b").expect("open");
        let pairs = (0..PAGE + 5)
            .map(|i| (format!("k{i:05}"), vec![1]))
            .collect();
        kv.set_many(&bucket, pairs).await.expect("set");
        let first = kv.list_keys(&bucket, None).await.expect("list");
        assert_eq!(first.keys.len(), PAGE);
        let second = kv.list_keys(&bucket, first.cursor).await.expect("list");
        assert_eq!(second.keys.len(), 5);
        assert_eq!(second.cursor, None);
        let past = kv.list_keys(&bucket, Some(u64::MAX)).await.expect("list");
        assert!(past.keys.is_empty());
    }

    #[tokio::test]
    async fn increment_is_exact_under_concurrency() {
        let kv = KeyValue::default();
        let bucket = kv.open(&Arc::from("p"), "").expect("open");
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (kv, bucket) = (kv.clone(), bucket.clone());
                tokio::spawn(async move { kv.increment(&bucket, "n", 2).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("increment");
        }
        assert_eq!(
            kv.get(&bucket, "n").await.expect("get"),
            Some(b"100".to_vec())
        );
    }
}
