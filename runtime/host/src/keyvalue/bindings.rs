//! The generated bindings of `wit/deps/keyvalue` (`wasi:keyvalue/imports`
//! @0.2.0-draft) and `wit/deps/keyvalue-draft2` (@0.2.0-draft2), fenced in
//! private modules; the rest of the crate uses the re-exports.

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
        // A call may await Redis.
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::keyvalue::OpenBucket,
        },
    });
}

mod generated_draft2 {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/keyvalue-draft2",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::keyvalue::OpenBucket,
            "wasi:keyvalue/atomics.cas": crate::keyvalue::OpenCas,
        },
    });
}

/// `wasi:keyvalue@0.2.0-draft2`: the draft's interfaces plus compare-and-swap.
pub(crate) mod draft2 {
    pub(crate) use super::generated_draft2::wasi::keyvalue::atomics::{
        CasError, Host as AtomicsHost, HostCas, add_to_linker as add_atomics_to_linker,
    };
    pub(crate) use super::generated_draft2::wasi::keyvalue::batch::{
        Host as BatchHost, add_to_linker as add_batch_to_linker,
    };
    pub(crate) use super::generated_draft2::wasi::keyvalue::store::{
        Error, Host as StoreHost, HostBucket, KeyResponse, add_to_linker as add_store_to_linker,
    };
}

pub(crate) use generated::wasi::keyvalue::atomics::{
    Host as AtomicsHost, add_to_linker as add_atomics_to_linker,
};
pub(crate) use generated::wasi::keyvalue::batch::{
    Host as BatchHost, add_to_linker as add_batch_to_linker,
};
pub(crate) use generated::wasi::keyvalue::store::{
    Error, Host as StoreHost, HostBucket, KeyResponse, add_to_linker as add_store_to_linker,
};
