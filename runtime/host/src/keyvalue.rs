//! `wasi:keyvalue@0.2.0-draft` (store, atomics, batch) for the plugins whose
//! manifest says `keyvalue = true`: the store's key-value slice
//! ([`KvCtx`]), linking it, and the opt-in check at load.
//!
//! The host implements the interface itself over
//! [`switchyard_kv::KeyValue`], which the server builds (in memory, or in
//! Redis when the Redis layer is on) and owns, so values outlive instances
//! and plugin versions. The namespace is the plugin's name: `open(id)`
//! opens bucket `id` of the calling plugin, never another's.
//!
//! Both `wasi:keyvalue@0.2.0-draft` (what `wasmtime-wasi-keyvalue` 48
//! implements) and `@0.2.0-draft2` (the same plus compare-and-swap: the
//! `cas` resource and `swap`) are linked, over the same buckets.
//!
//! Submodules: `bindings` (the generated bindings, fenced), `api` (the
//! draft implemented on [`KvCtx`]) and `api_draft2` (draft2).

mod api;
mod api_draft2;
mod bindings;

use std::sync::Arc;

use switchyard_kv::KeyValue;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};

use crate::state::ConsumerState;

/// The manifest key that opts a plugin in.
pub(crate) const MANIFEST_KEY: &str = "keyvalue";

/// The package every import of the interface starts with.
const PACKAGE: &str = "wasi:keyvalue/";

/// The host side of an open bucket (the WIT `bucket` resource).
#[expect(
    unreachable_pub,
    reason = "bindgen!'s `with` names this type from the generated bindings module"
)]
#[derive(Debug)]
pub struct OpenBucket(switchyard_kv::Bucket);

/// The host side of a draft2 `cas` handle: a key and the value it had
/// when the handle was made; `swap` writes only if it is still that value.
#[expect(
    unreachable_pub,
    reason = "bindgen!'s `with` names this type from the generated bindings module"
)]
#[derive(Debug)]
pub struct OpenCas {
    bucket: switchyard_kv::Bucket,
    key: String,
    current: Option<Vec<u8>>,
}

/// The key-value slice of a store.
pub(crate) struct KvCtx {
    /// The server's store; `None` when the plugin did not opt in (then
    /// `open` is `access-denied`, though such a component never loads).
    store: Option<KeyValue>,
    /// The plugin's name: the namespace of every bucket it opens.
    plugin: Arc<str>,
    /// Open `bucket` resources.
    buckets: ResourceTable,
}

impl std::fmt::Debug for KvCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCtx")
            .field("plugin", &self.plugin)
            .field("enabled", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl KvCtx {
    /// The slice for an instance of `plugin`; `store` is `None` unless its
    /// manifest opted in.
    pub(crate) fn new(plugin: Arc<str>, store: Option<KeyValue>) -> Self {
        Self {
            store,
            plugin,
            buckets: ResourceTable::new(),
        }
    }
}

/// Link `wasi:keyvalue` store, atomics and batch, draft and draft2.
pub(crate) fn add_to_linker(linker: &mut Linker<ConsumerState>) -> wasmtime::Result<()> {
    bindings::add_store_to_linker::<_, HasSelf<KvCtx>>(linker, |state| &mut state.kv)?;
    bindings::add_atomics_to_linker::<_, HasSelf<KvCtx>>(linker, |state| &mut state.kv)?;
    bindings::add_batch_to_linker::<_, HasSelf<KvCtx>>(linker, |state| &mut state.kv)?;
    bindings::draft2::add_store_to_linker::<_, HasSelf<KvCtx>>(linker, |state| &mut state.kv)?;
    bindings::draft2::add_atomics_to_linker::<_, HasSelf<KvCtx>>(linker, |state| &mut state.kv)?;
    bindings::draft2::add_batch_to_linker::<_, HasSelf<KvCtx>>(linker, |state| &mut state.kv)?;
    Ok(())
}

/// The first `wasi:keyvalue` interface `component` imports, if any.
pub(crate) fn imported_interface(component: &Component, engine: &Engine) -> Option<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name)
        .find(|name| name.starts_with(PACKAGE))
        .map(str::to_owned)
}
