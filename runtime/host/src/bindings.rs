//! The generated bindings of `wit/consumer.wit`, fenced in one private module.
//!
//! Nothing outside this module names a generated path: the rest of the crate
//! (and the server) use the curated re-exports below.

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "switchyard:consumer/consumer",
        // Host functions may await the channel layer (Redis) and may trap the
        // guest (e.g. `send` before `accept`).
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "switchyard:consumer/host.connection": crate::connection::Connection,
        },
    });
}

pub use generated::switchyard::consumer::host::{
    Host, HostConnection, Level, add_to_linker as add_host_to_linker,
};
pub use generated::switchyard::consumer::types::{
    Frame, Host as TypesHost, LayerError as WitLayerError, Scope,
    add_to_linker as add_types_to_linker,
};
pub use generated::{Consumer, ConsumerPre};
