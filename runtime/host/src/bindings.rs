//! The generated bindings of `wit/consumer.wit`, fenced in one private module.
//!
//! Nothing outside this module names a generated path: the rest of the crate
//! (and the server) use the curated re-exports below. The bindings are for
//! the `migratable-consumer` world, but the host loads each exported
//! interface on its own: `websocket-consumer` is required, `migration` is
//! optional (a plain `consumer` component simply lacks it). A second set,
//! for the `http-handler` world, adds the `http-context` import; its
//! `wasi:http` export is wasmtime-wasi-http's (`IncomingHandler`).

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "switchyard:consumer/migratable-consumer",
        // Host functions may await the channel layer (Redis) and may trap the
        // guest (e.g. `send` before `accept`).
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "switchyard:consumer/host.connection": crate::connection::Connection,
        },
    });
}

mod http_generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "switchyard:consumer/http-handler",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "switchyard:consumer/types": super::generated::switchyard::consumer::types,
            "switchyard:consumer/host": super::generated::switchyard::consumer::host,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
        },
    });
}

pub(crate) use http_generated::switchyard::consumer::http_context::{
    Host as HttpContextHost, add_to_linker as add_http_context_to_linker,
};
pub(crate) use wasmtime_wasi_http::p2::bindings::exports::wasi::http::incoming_handler::{
    Guest as IncomingHandler, GuestIndices as IncomingHandlerIndices,
};

pub(crate) use generated::exports::switchyard::consumer::migration::{
    Guest as Migration, GuestIndices as MigrationIndices,
};
pub(crate) use generated::exports::switchyard::consumer::websocket_consumer::{
    Guest as WebsocketConsumer, GuestIndices as WebsocketConsumerIndices,
};
pub(crate) use generated::switchyard::consumer::host::{
    Host, HostConnection, Level, add_to_linker as add_host_to_linker,
};
pub(crate) use generated::switchyard::consumer::types::{
    Frame, Host as TypesHost, LayerError as WitLayerError, Scope,
    add_to_linker as add_types_to_linker,
};
