//! The Switchyard plugin host: loads consumer components from a plugin
//! directory, routes request paths to them, and runs one instance per
//! connection under limits. It knows nothing of HTTP or WebSocket framing
//! (the server does that) and reaches the channel layer only through
//! [`switchyard_layer::ChannelLayer`].
//!
//! Modules (all private; the crate root re-exports what the server, the
//! tests and the benchmarks use):
//! - `route`: Django `path()` route patterns ([`RoutePattern`]).
//! - `manifest`: the `<plugin>.toml` manifest ([`Manifest`]).
//! - `plugin`: compiling and validating one plugin version into an
//!   immutable [`Artifact`].
//! - `version`: a live (or retired) [`Version`] of a plugin: its artifact
//!   and the state of the connections it serves.
//! - `registry`: the immutable route table swapped atomically.
//! - `host`: [`PluginHost`], shared by every connection task, and its
//!   parts: `host::reconcile` (loading the plugin directory), `host::swap`
//!   (installing and retiring versions), `host::status` (the admin API's
//!   view), `host::start` (starting and migrating consumers) and
//!   `host::hibernate` (an idle connection's instance put to sleep and woken).
//! - `consumer`: a [`Consumer`], one instance serving one connection (and
//!   `consumer::hibernation`, what it keeps while its instance sleeps).
//! - `instance`: a store and an instance, a connection's own or shared by
//!   a version's connections.
//! - `connection`: the host side of the WIT `connection` resource, and
//!   what it asks of the socket ([`Outbound`]).
//! - `precompiled`: `.cwasm` files, written by `switchyard compile`
//!   ([`precompile_file`]) and preferred by the loader when they match.
//! - `engine`: the wasmtime engine, the compile cache and [`GuestLimits`].
//! - `call_deadline`: the tokio half of a guest call's deadline, a timer
//!   made only for a call that waits.
//! - `watch`: watching the plugin directory for hot swap
//!   ([`PluginWatcher`]).
//! - `http_pool`: idle HTTP instances of a version that opted into reuse.
//! - `failures`: guest traps and deadlines counted per plugin.
//! - `metrics`: the hook that times guest calls ([`GuestMetrics`]) and
//!   the plugin lifecycle counts ([`HostEvents`]).
//! - `keyvalue`: `wasi:keyvalue` for the plugins that opt in, over the
//!   server's [`switchyard_kv::KeyValue`].
//! - `bindings`, `state`, `host_api`, `http_context`, `guest_output`: the
//!   generated bindings, the store's data, the host and http-context
//!   interfaces, guest stdout/stderr.

mod bindings;
mod call_deadline;
mod connection;
mod consumer;
mod engine;
mod failures;
mod guest_exports;
mod guest_output;
mod host;
mod host_api;
mod host_api_v0_1;
mod http_context;
mod http_pool;
mod instance;
mod keyvalue;
mod manifest;
mod metrics;
mod plugin;
mod precompiled;
mod registry;
mod route;
mod scope;
mod state;
mod version;
mod watch;

pub use connection::{
    Handshake, OutFrame, Outbound, OutboundOverflow, OutboundReceiver, OutboundSender,
    REFUSAL_STATUSES, outbound_queue,
};
pub use consumer::{ConnectionStatus, Consumer, GuestError, InFrame};
pub use engine::{
    DEFAULT_CORE_INSTANCES, DEFAULT_WASM_STACK, GuestLimits, MAX_CORE_INSTANCES, WASM_STACK_RANGE,
};
pub use failures::PluginFailures;
pub use host::{
    ConnectRequest, HostOptions, HttpBody, HttpBodyError, HttpCall, HttpError, InstantiateError,
    LoadFailure, LoadReport, LoadingStatus, MigrateError, PluginHost, PluginStatus, StartError,
    Started, VersionStatus,
};
pub use manifest::{
    HttpOptions, InstanceMode, MAX_HIBERNATE_AFTER_SECS, Manifest, ManifestError, PluginLimits,
    ReplacePolicy,
};
pub use metrics::{CallObserver, GuestMetrics, HostEvents};
pub use plugin::{Artifact, PluginError};
pub use precompiled::precompile_file;
pub use registry::{Protocol, RouteInfo, RouteMatch};
pub use route::{RouteError, RoutePattern};
pub use version::{Retired, Version};
pub use watch::{PluginWatcher, WatchOptions, changes_files, settle, watch_dirs};
