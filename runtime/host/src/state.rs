//! The data of one store: a plain struct of capability slices, each host
//! interface implemented on its own part.

use std::sync::Arc;

use switchyard_layer::ChannelLayer;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::engine::{GuestLimits, MEMORIES_PER_COMPONENT, TABLE_ELEMENTS};
use crate::guest_output::{CurrentConnectionId, CurrentSpan, GuestOutput, Stream};
use crate::http_context::RequestCtx;
use crate::keyvalue::KvCtx;

/// Everything one store holds.
pub(crate) struct ConsumerState {
    /// WASI with no ambient authority: no preopened directories, no
    /// environment, no arguments, no network; stdout and stderr go to the log.
    wasi: WasiCtx,
    wasi_table: ResourceTable,
    /// The `switchyard:consumer/host` interface.
    pub(crate) host: HostCtx,
    /// `wasi:keyvalue`, for a plugin that opted in.
    pub(crate) kv: KvCtx,
    /// `wasi:http` types, for a store serving an HTTP request.
    http: WasiHttpCtx,
    http_hooks: NoOutgoingRequests,
    /// The `http-context` interface: the request this store serves, if any.
    pub(crate) request: Option<RequestCtx>,
    /// Memory and table caps of this store.
    pub(crate) limits: StoreLimits,
    /// Epoch ticks the current guest call may still run (see
    /// [`crate::engine::yield_or_interrupt`]).
    pub(crate) ticks_left: u64,
}

impl std::fmt::Debug for ConsumerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerState")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl ConsumerState {
    pub(crate) fn new(host: HostCtx, kv: KvCtx, limits: &GuestLimits) -> Self {
        let core_instances = limits.max_core_instances as usize;
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(GuestOutput::new(
                Arc::clone(&host.plugin),
                Arc::clone(&host.current_connection_id),
                Arc::clone(&host.current_span),
                Stream::Stdout,
            ))
            .stderr(GuestOutput::new(
                Arc::clone(&host.plugin),
                Arc::clone(&host.current_connection_id),
                Arc::clone(&host.current_span),
                Stream::Stderr,
            ))
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .table_elements(TABLE_ELEMENTS)
            .instances(core_instances)
            .tables(core_instances)
            .memories(MEMORIES_PER_COMPONENT as usize)
            .trap_on_grow_failure(true)
            .build();
        Self {
            wasi,
            wasi_table: ResourceTable::new(),
            host,
            kv,
            http: WasiHttpCtx::new(),
            http_hooks: NoOutgoingRequests,
            request: None,
            limits,
            ticks_left: 0,
        }
    }
}

impl ConsumerState {
    /// Entries in the WASI resource table (requests, bodies, streams,
    /// pollables): an HTTP instance that ends a request holding more than
    /// it began with is not reused.
    pub(crate) fn wasi_resources(&mut self) -> usize {
        self.wasi_table.iter_mut().count()
    }
}

impl WasiView for ConsumerState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.wasi_table,
        }
    }
}

impl WasiHttpView for ConsumerState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.wasi_table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// `wasi:http` hooks without ambient authority: a plugin makes no outgoing
/// requests (`outgoing-handler.handle` fails with `HTTP-request-denied`).
#[derive(Debug, Clone, Copy)]
struct NoOutgoingRequests;

impl WasiHttpHooks for NoOutgoingRequests {
    fn send_request(
        &mut self,
        _request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    hyper::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The host interface's slice: the connections this store serves and the
/// channel layer.
pub(crate) struct HostCtx {
    /// `connection` resources. One entry in the per-connection mode.
    pub(crate) connections: ResourceTable,
    pub(crate) layer: Arc<dyn ChannelLayer>,
    /// The plugin's name, for log lines.
    pub(crate) plugin: Arc<str>,
    /// The connection the current call is about, for log lines.
    pub(crate) current_connection_id: CurrentConnectionId,
    /// The span of the current call, for guest output's log lines.
    pub(crate) current_span: CurrentSpan,
}

impl std::fmt::Debug for HostCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCtx")
            .field("plugin", &self.plugin)
            .field("current_connection_id", &self.current_connection_id)
            .finish_non_exhaustive()
    }
}
