//! The generated bindings of the `switchyard:consumer` WIT, fenced in one
//! private module.
//!
//! Nothing outside this module names a generated path: the rest of the crate
//! (and the server) use the curated re-exports below. Two contracts are
//! bound side by side, and the host links both:
//!
//! * 0.2 (`wit/consumer.wit`, the current one): the bindings are for the
//!   `migratable-consumer` world, but the host loads each exported
//!   interface on its own: `websocket-consumer` is required, `migration` is
//!   optional (a plain `consumer` component simply lacks it). A second set,
//!   for the `http-handler` world, adds the `http-context` import; its
//!   `wasi:http` export is wasmtime-wasi-http's (`IncomingHandler`).
//! * 0.1 (`wit/v0.1/consumer.wit`, kept so that components built against
//!   0.1.x keep loading): the same two sets, re-exported under `v0_1`. Both
//!   map the `connection` resource to the same [`Connection`], so one host
//!   implementation serves both (`host_api_v0_1` adapts the 0.1 types).
//!
//! [`Connection`]: crate::connection::Connection

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
            "switchyard:consumer/host.scope": crate::scope::ScopeInfo,
            // The WASI interfaces the world states: wasmtime-wasi's own.
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
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
            "wasi": wasmtime_wasi::p2::bindings,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        },
    });
}

mod generated_v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1",
        world: "switchyard:consumer/migratable-consumer",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "switchyard:consumer/host.connection": crate::connection::Connection,
        },
    });
}

mod http_generated_v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1",
        world: "switchyard:consumer/http-handler",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "switchyard:consumer/types": super::generated_v0_1::switchyard::consumer::types,
            "switchyard:consumer/host": super::generated_v0_1::switchyard::consumer::host,
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
    Host, HostConnection, HostScope, Level, add_to_linker as add_host_to_linker,
};
pub(crate) use generated::switchyard::consumer::types::{
    Frame, Host as TypesHost, LayerError as WitLayerError, add_to_linker as add_types_to_linker,
};

/// The 0.1 contract (`wit/v0.1`), as the host serves it to components built
/// against `switchyard:consumer@0.1.x`.
pub(crate) mod v0_1 {
    pub(crate) use super::generated_v0_1::exports::switchyard::consumer::migration::{
        Guest as Migration, GuestIndices as MigrationIndices,
    };
    pub(crate) use super::generated_v0_1::exports::switchyard::consumer::websocket_consumer::{
        Guest as WebsocketConsumer, GuestIndices as WebsocketConsumerIndices,
    };
    pub(crate) use super::generated_v0_1::switchyard::consumer::host::{
        Host, HostConnection, Level, add_to_linker as add_host_to_linker,
    };
    pub(crate) use super::generated_v0_1::switchyard::consumer::types::{
        Frame, Host as TypesHost, LayerError as WitLayerError, Scope,
        add_to_linker as add_types_to_linker,
    };
    pub(crate) use super::http_generated_v0_1::switchyard::consumer::http_context::{
        Host as HttpContextHost, add_to_linker as add_http_context_to_linker,
    };
}
