//! [`PluginHost`]: the engine, the linker and the live route table that
//! every connection task shares. What the host does lives in its child
//! modules, one job each:
//!
//! - `reconcile`: bringing the live plugins in line with the plugin
//!   directory (reading, compiling, file stamps, load failures).
//! - `swap`: installing, removing and retiring versions in the route table.
//! - `status`: the admin API's view of plugins and their versions.
//! - `loading`: plugins being compiled (reported as `loading`, their
//!   routes answered 503), and whether the initial load has finished.
//! - `start`: instantiating a connection's consumer, and migrating it to a
//!   newer version.
//! - `http`: serving one HTTP request through a plugin's
//!   `wasi:http/incoming-handler`.
//! - `hibernate`: putting an idle connection's instance to sleep and
//!   waking it.

mod hibernate;
mod http;
mod loading;
mod reconcile;
mod start;
mod status;
mod swap;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use switchyard_kv::KeyValue;
use switchyard_layer::ChannelLayer;
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{add_host_to_linker, add_http_context_to_linker, add_types_to_linker, v0_1};
use crate::engine::{EpochTicker, GuestLimits, build_engine};
use crate::failures::{FailureBook, PluginFailures};
use crate::metrics::{EventCounters, GuestMetrics, HostEvents};
use crate::registry::{Protocol, RouteInfo, RouteMatch, RouteTable};
use crate::state::{ConsumerState, HostCtx};
use crate::version::Version;

pub use http::{HttpBody, HttpBodyError, HttpCall, HttpError};
use loading::LoadingBook;
pub use loading::LoadingStatus;
pub use reconcile::LoadReport;
use reconcile::{FileStamp, Outcome};
pub use start::{ConnectRequest, InstantiateError, MigrateError, StartError, Started};
pub use status::{LoadFailure, PluginStatus, VersionStatus};

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Options of the host beyond the guest limits.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// The limits every guest runs under.
    pub limits: GuestLimits,
    /// Where compiled components are cached, keyed by content hash, so an
    /// unchanged plugin is not compiled again after a restart. `None`
    /// disables the cache.
    pub compile_cache: Option<PathBuf>,
    /// The key-value store behind `wasi:keyvalue` (for plugins whose
    /// manifest says `keyvalue = true`); in memory by default.
    pub keyvalue: KeyValue,
    /// Where guest call timings go; `None` times nothing.
    pub metrics: Option<Arc<dyn GuestMetrics>>,
}

/// Loads plugins and starts consumers. Shared by every connection task.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<ConsumerState>,
    layer: Arc<dyn ChannelLayer>,
    /// The server's key-value store, shared by every plugin that opted in.
    keyvalue: KeyValue,
    limits: GuestLimits,
    table: ArcSwap<RouteTable>,
    /// Serialises table updates (reads never lock: they load the pointer).
    update: Mutex<()>,
    /// Versions replaced or removed while connections still ran on them.
    retired: Mutex<Vec<Arc<Version>>>,
    /// The last load failure of each plugin name, cleared when it loads.
    load_failures: Mutex<BTreeMap<String, LoadFailure>>,
    /// Each plugin file's stamp when the directory was last reconciled, and
    /// what came of it: an unchanged file is not read again.
    stamps: Mutex<HashMap<PathBuf, (FileStamp, Outcome)>>,
    /// Plugins being compiled, and whether the initial load is done.
    loading: LoadingBook,
    /// Held by a reconcile of the plugin directory: the initial load and
    /// the watcher's reconciles take turns.
    reconciling: tokio::sync::Mutex<()>,
    /// Bumped by every install and removal.
    generation: AtomicU64,
    /// Plugin files read by reconciles since start.
    files_read: AtomicU64,
    instances: Arc<Semaphore>,
    failures: FailureBook,
    /// Told the duration of every guest call, when set.
    metrics: Option<Arc<dyn GuestMetrics>>,
    /// Loads, load errors, swaps and migrations since start.
    events: EventCounters,
    next_connection_id: AtomicU64,
    cache: Option<wasmtime::Cache>,
    ticker: EpochTicker,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("limits", &self.limits)
            .field("routes", &self.routes())
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// A host without a compile cache.
    pub fn new(layer: Arc<dyn ChannelLayer>, limits: GuestLimits) -> anyhow::Result<Self> {
        Self::with_options(
            layer,
            HostOptions {
                limits,
                compile_cache: None,
                keyvalue: KeyValue::default(),
                metrics: None,
            },
        )
    }

    /// Build the engine (with the compile cache, if any) and the linker (WASI
    /// without ambient authority, `wasi:http` types without outgoing
    /// requests, the `host` and `http-context` interfaces), and start the
    /// epoch ticker.
    pub fn with_options(
        layer: Arc<dyn ChannelLayer>,
        options: HostOptions,
    ) -> anyhow::Result<Self> {
        let HostOptions {
            limits,
            compile_cache,
            keyvalue,
            metrics,
        } = options;
        let (engine, cache) = build_engine(&limits, compile_cache.as_deref())?;
        let mut linker: Linker<ConsumerState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        add_types_to_linker::<_, HasSelf<HostCtx>>(&mut linker, |state| &mut state.host)
            .map_err(anyhow::Error::from)
            .context("linking switchyard:consumer/types")?;
        add_host_to_linker::<_, HasSelf<HostCtx>>(&mut linker, |state| &mut state.host)
            .map_err(anyhow::Error::from)
            .context("linking switchyard:consumer/host")?;
        crate::keyvalue::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:keyvalue")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http")?;
        add_http_context_to_linker::<_, HasSelf<ConsumerState>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking switchyard:consumer/http-context")?;
        // The 0.1 contract beside the current one, for components built
        // against 0.1.x (see `host_api_v0_1`).
        v0_1::add_types_to_linker::<_, HasSelf<HostCtx>>(&mut linker, |state| &mut state.host)
            .map_err(anyhow::Error::from)
            .context("linking switchyard:consumer/types@0.1")?;
        v0_1::add_host_to_linker::<_, HasSelf<HostCtx>>(&mut linker, |state| &mut state.host)
            .map_err(anyhow::Error::from)
            .context("linking switchyard:consumer/host@0.1")?;
        v0_1::add_http_context_to_linker::<_, HasSelf<ConsumerState>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking switchyard:consumer/http-context@0.1")?;
        let ticker = EpochTicker::start(engine.clone()).context("starting the epoch thread")?;
        let slots = usize::try_from(limits.max_instances).unwrap_or(usize::MAX);
        Ok(Self {
            engine,
            linker,
            layer,
            keyvalue,
            instances: Arc::new(Semaphore::new(slots.min(Semaphore::MAX_PERMITS))),
            limits,
            table: ArcSwap::from_pointee(RouteTable::default()),
            update: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            failures: FailureBook::default(),
            metrics,
            events: EventCounters::default(),
            load_failures: Mutex::new(BTreeMap::new()),
            stamps: Mutex::new(HashMap::new()),
            loading: LoadingBook::default(),
            reconciling: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            files_read: AtomicU64::new(0),
            next_connection_id: AtomicU64::new(1),
            cache,
            ticker,
        })
    }

    /// Hits and misses of the compile cache since start, if it is enabled.
    pub fn compile_cache_stats(&self) -> Option<(usize, usize)> {
        self.cache
            .as_ref()
            .map(|cache| (cache.cache_hits(), cache.cache_misses()))
    }

    /// Plugin files the directory reconciles have read since start: an
    /// unchanged file is read once, however often the directory is
    /// reconciled.
    pub fn files_read(&self) -> u64 {
        self.files_read.load(Ordering::Relaxed)
    }

    /// Traps and deadline overruns counted per plugin since start, for
    /// every plugin that has failed at least once.
    pub fn failures(&self) -> Vec<PluginFailures> {
        self.failures.report()
    }

    /// Plugin loads, load errors, hot swaps and migrations since start.
    pub fn events(&self) -> HostEvents {
        self.events.snapshot()
    }

    /// Instance slots in use now, and the cap (`guest.max-instances`).
    pub fn instance_slots(&self) -> (u64, u64) {
        let cap = u64::from(self.limits.max_instances);
        let free = self.instances.available_permits() as u64;
        (cap.saturating_sub(free), cap)
    }

    /// The channel layer every consumer of this host reaches.
    pub fn layer(&self) -> &Arc<dyn ChannelLayer> {
        &self.layer
    }

    /// The plugin version and kwargs for a WebSocket request path.
    pub fn resolve(&self, path: &str) -> Option<RouteMatch> {
        self.table.load().resolve(Protocol::Websocket, path)
    }

    /// The plugin version and kwargs for a plain HTTP request path.
    pub fn resolve_http(&self, path: &str) -> Option<RouteMatch> {
        self.table.load().resolve(Protocol::Http, path)
    }

    /// Live routes in the order they are tried.
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.table.load().routes()
    }
}
