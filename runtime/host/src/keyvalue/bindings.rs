//! The generated bindings of `wit/deps/keyvalue` (`wasi:keyvalue/imports`),
//! fenced in one private module; the rest of the crate uses the re-exports.

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

pub(crate) use generated::wasi::keyvalue::atomics::{
    Host as AtomicsHost, add_to_linker as add_atomics_to_linker,
};
pub(crate) use generated::wasi::keyvalue::batch::{
    Host as BatchHost, add_to_linker as add_batch_to_linker,
};
pub(crate) use generated::wasi::keyvalue::store::{
    Error, Host as StoreHost, HostBucket, KeyResponse, add_to_linker as add_store_to_linker,
};
