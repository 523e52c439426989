//! `wasi:keyvalue@0.2.0-draft2` store, atomics (with compare-and-swap) and
//! batch, implemented on [`KvCtx`] over the same buckets as the draft.
//!
//! Compare-and-swap: `cas.new(bucket, key)` reads the key's value into the
//! handle; `swap(cas, value)` stores `value` only if the key still holds
//! that value (compared by value, atomically in the backend), and otherwise
//! fails with `cas-failed` and a fresh handle holding the latest value.

use switchyard_kv::KvError;
use wasmtime::component::Resource;

use super::bindings::draft2::{
    AtomicsHost, BatchHost, CasError, Error, HostBucket, HostCas, KeyResponse, StoreHost,
};
use super::{KvCtx, OpenBucket, OpenCas};

type KvResult<T> = wasmtime::Result<Result<T, Error>>;

fn to_wit(err: KvError) -> Error {
    match super::api::to_wit(err) {
        super::bindings::Error::NoSuchStore => Error::NoSuchStore,
        super::bindings::Error::AccessDenied => Error::AccessDenied,
        super::bindings::Error::Other(message) => Error::Other(message),
    }
}

/// The store and bucket behind a handle, or return the guest's error.
macro_rules! open_or_return {
    ($ctx:expr, $handle:expr) => {
        match $ctx.bucket(&$handle)? {
            Ok(pair) => pair,
            Err(_) => return Ok(Err(Error::AccessDenied)),
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
        cursor: Option<String>,
    ) -> KvResult<KeyResponse> {
        let (store, bucket) = open_or_return!(self, handle);
        // draft2's cursor is a string: ours, a number, written out.
        let cursor = match cursor.map(|c| c.parse::<u64>()) {
            None => None,
            Some(Ok(cursor)) => Some(cursor),
            Some(Err(_)) => return Ok(Err(Error::Other("invalid list-keys cursor".to_owned()))),
        };
        Ok(store
            .list_keys(&bucket, cursor)
            .await
            .map(|page| KeyResponse {
                keys: page.keys,
                cursor: page.cursor.map(|c| c.to_string()),
            })
            .map_err(to_wit))
    }

    async fn drop(&mut self, handle: Resource<OpenBucket>) -> wasmtime::Result<()> {
        self.buckets.delete(handle)?;
        Ok(())
    }
}

impl HostCas for KvCtx {
    async fn new(
        &mut self,
        handle: Resource<OpenBucket>,
        key: String,
    ) -> KvResult<Resource<OpenCas>> {
        let (store, bucket) = open_or_return!(self, handle);
        let current = match store.get(&bucket, &key).await {
            Ok(current) => current,
            Err(err) => return Ok(Err(to_wit(err))),
        };
        Ok(Ok(self.buckets.push(OpenCas {
            bucket,
            key,
            current,
        })?))
    }

    async fn current(&mut self, handle: Resource<OpenCas>) -> KvResult<Option<Vec<u8>>> {
        Ok(Ok(self.buckets.get(&handle)?.current.clone()))
    }

    async fn drop(&mut self, handle: Resource<OpenCas>) -> wasmtime::Result<()> {
        self.buckets.delete(handle)?;
        Ok(())
    }
}

impl AtomicsHost for KvCtx {
    async fn increment(
        &mut self,
        handle: Resource<OpenBucket>,
        key: String,
        delta: i64,
    ) -> KvResult<i64> {
        let (store, bucket) = open_or_return!(self, handle);
        Ok(store.increment(&bucket, &key, delta).await.map_err(to_wit))
    }

    async fn swap(
        &mut self,
        handle: Resource<OpenCas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), CasError>> {
        let cas = self.buckets.delete(handle)?;
        let Some(store) = self.store.clone() else {
            return Ok(Err(CasError::StoreError(Error::AccessDenied)));
        };
        match store
            .compare_and_swap(&cas.bucket, &cas.key, cas.current.as_deref(), value)
            .await
        {
            Ok(true) => Ok(Ok(())),
            Ok(false) => {
                // A fresh handle on the latest value, for the retry.
                let current = match store.get(&cas.bucket, &cas.key).await {
                    Ok(current) => current,
                    Err(err) => return Ok(Err(CasError::StoreError(to_wit(err)))),
                };
                let fresh = self.buckets.push(OpenCas {
                    bucket: cas.bucket,
                    key: cas.key,
                    current,
                })?;
                Ok(Err(CasError::CasFailed(fresh)))
            }
            Err(err) => Ok(Err(CasError::StoreError(to_wit(err)))),
        }
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
