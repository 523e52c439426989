//! `wasi:keyvalue` store, atomics and batch, implemented on [`KvCtx`].
//!
//! Every failure of the store is the interface's `error` (a guest error,
//! never a trap): `other(message)` for a size limit, a refused increment or
//! an unavailable Redis; `access-denied` without the manifest opt-in. Only
//! a bucket handle the guest does not own traps, as any bad handle does.

use switchyard_kv::{Bucket, KeyValue, KvError};
use wasmtime::component::Resource;

use super::bindings::{AtomicsHost, BatchHost, Error, HostBucket, KeyResponse, StoreHost};
use super::{KvCtx, OpenBucket};

type KvResult<T> = wasmtime::Result<Result<T, Error>>;

pub(super) fn to_wit(err: KvError) -> Error {
    match err {
        KvError::Invalid(message) | KvError::NotACounter(message) | KvError::Refused(message) => {
            Error::Other(message)
        }
        unavailable @ KvError::Unavailable(_) => Error::Other(unavailable.to_string()),
    }
}

impl KvCtx {
    /// The store and the bucket behind `handle`, cloned so no borrow of the
    /// store's data lives across an `.await`.
    pub(super) fn bucket(
        &self,
        handle: &Resource<OpenBucket>,
    ) -> wasmtime::Result<Result<(KeyValue, Bucket), Error>> {
        let bucket = self.buckets.get(handle)?.0.clone();
        Ok(match &self.store {
            Some(store) => Ok((store.clone(), bucket)),
            None => Err(Error::AccessDenied),
        })
    }
}

/// Unwrap the store and bucket or return the guest error.
macro_rules! open_or_return {
    ($ctx:expr, $handle:expr) => {
        match $ctx.bucket(&$handle)? {
            Ok(pair) => pair,
            Err(err) => return Ok(Err(err)),
        }
    };
}

impl StoreHost for KvCtx {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<OpenBucket>> {
        let Some(store) = &self.store else {
            return Ok(Err(Error::AccessDenied));
        };
        match store.open(&self.plugin, &identifier) {
            Ok(bucket) => Ok(Ok(self.buckets.push(OpenBucket(bucket))?)),
            Err(err) => Ok(Err(to_wit(err))),
        }
    }
}

impl HostBucket for KvCtx {
    async fn get(
        &mut self,
        handle: Resource<OpenBucket>,
        key: String,
    ) -> KvResult<Option<Vec<u8>>> {
        let (store, bucket) = open_or_return!(self, handle);
        Ok(store.get(&bucket, &key).await.map_err(to_wit))
    }

    async fn set(
        &mut self,
        handle: Resource<OpenBucket>,
        key: String,
        value: Vec<u8>,
    ) -> KvResult<()> {
        let (store, bucket) = open_or_return!(self, handle);
        Ok(store.set(&bucket, &key, value).await.map_err(to_wit))
    }

    async fn delete(&mut self, handle: Resource<OpenBucket>, key: String) -> KvResult<()> {
        let (store, bucket) = open_or_return!(self, handle);
        Ok(store.delete(&bucket, &key).await.map_err(to_wit))
    }

    async fn exists(&mut self, handle: Resource<OpenBucket>, key: String) -> KvResult<bool> {
        let (store, bucket) = open_or_return!(self, handle);
        Ok(store.exists(&bucket, &key).await.map_err(to_wit))
    }

    async fn list_keys(
        &mut self,
        handle: Resource<OpenBucket>,
        cursor: Option<u64>,
    ) -> KvResult<KeyResponse> {
        let (store, bucket) = open_or_return!(self, handle);
        Ok(store
            .list_keys(&bucket, cursor)
            .await
            .map(|page| KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(to_wit))
    }

    async fn drop(&mut self, handle: Resource<OpenBucket>) -> wasmtime::Result<()> {
        self.buckets.delete(handle)?;
        Ok(())
    }
}

impl AtomicsHost for KvCtx {
    async fn increment(
        &mut self,
        handle: Resource<OpenBucket>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        let (store, bucket) = open_or_return!(self, handle);
        Ok(store
            .increment_unsigned(&bucket, &key, delta)
            .await
            .map_err(to_wit))
    }
}

impl BatchHost for KvCtx {
    async fn get_many(
        &mut self,
        handle: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let (store, bucket) = open_or_return!(self, handle);
        Ok(store
            .get_many(&bucket, &keys)
            .await
            .map(|values| {
                keys.into_iter()
                    .zip(values)
                    .map(|(key, value)| value.map(|value| (key, value)))
                    .collect()
            })
            .map_err(to_wit))
    }

    async fn set_many(
        &mut self,
        handle: Resource<OpenBucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let (store, bucket) = open_or_return!(self, handle);
        Ok(store.set_many(&bucket, key_values).await.map_err(to_wit))
    }

    async fn delete_many(
        &mut self,
        handle: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> KvResult<()> {
        let (store, bucket) = open_or_return!(self, handle);
        Ok(store.delete_many(&bucket, &keys).await.map_err(to_wit))
    }
}
