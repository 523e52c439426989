//! [`PluginHost`]: the engine, the linker, the live route table, and the
//! start of every connection's consumer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use switchyard_layer::{ChannelLayer, Inbox};
use tokio::sync::{Semaphore, mpsc};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};

use crate::bindings::{Scope, add_host_to_linker, add_types_to_linker};
use crate::connection::{Connection, Handshake, Outbound};
use crate::consumer::{Consumer, GuestError};
use crate::engine::{EpochTicker, GuestLimits, build_engine, epoch_ticks, yield_or_interrupt};
use crate::failures::{FailureBook, PluginFailures};
use crate::plugin::{self, Plugin, PluginError};
use crate::registry::{RouteInfo, RouteMatch, RouteTable};
use crate::state::{ConsumerState, HostCtx};

/// What the server knows about a handshake; the host adds the route.
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    /// Percent-decoded path with its leading `/`.
    pub path: String,
    /// Raw query string without `?`.
    pub query_string: String,
    /// Lower-case names; values decoded as ISO-8859-1.
    pub headers: Vec<(String, String)>,
    /// `ip:port` of the client.
    pub client: Option<String>,
    pub subprotocols: Vec<String>,
    /// The authenticated user, if the server authenticated one.
    pub user: Option<String>,
    /// Claims of the authenticated user as a JSON object.
    pub claims: Option<String>,
}

/// Why a consumer could not be started for a handshake.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The cap on live instances is reached (the server answers 503).
    #[error("all {0} instance slots are in use")]
    AtCapacity(u32),
    /// The plugin's own `limits.max-instances` is reached (503 too).
    #[error("all {slots} instance slots of plugin `{plugin}` are in use")]
    PluginAtCapacity { plugin: String, slots: u32 },
    #[error("instantiating plugin `{plugin}`: {message}")]
    Instantiate { plugin: String, message: String },
    #[error(transparent)]
    Guest(#[from] GuestError),
}

/// A consumer whose `connect` has returned.
#[derive(Debug)]
pub struct Started {
    pub consumer: Consumer,
    /// The connection's channel-layer inbox: feed its events to
    /// [`Consumer::event`].
    pub inbox: Inbox,
    /// Accepted or rejected; never pending.
    pub handshake: Handshake,
}

/// The outcome of loading a plugin directory.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub failed: Vec<(PathBuf, PluginError)>,
}

/// Loads plugins and starts consumers. Shared by every connection task.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<ConsumerState>,
    layer: Arc<dyn ChannelLayer>,
    limits: GuestLimits,
    table: ArcSwap<RouteTable>,
    instances: Arc<Semaphore>,
    failures: FailureBook,
    next_connection: AtomicU64,
    _ticker: EpochTicker,
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
    /// Build the engine and the linker (WASI without ambient authority plus
    /// the `host` interface), and start the epoch ticker.
    pub fn new(layer: Arc<dyn ChannelLayer>, limits: GuestLimits) -> anyhow::Result<Self> {
        let engine = build_engine(&limits)?;
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
        let ticker = EpochTicker::start(engine.clone()).context("starting the epoch thread")?;
        let slots = usize::try_from(limits.max_instances).unwrap_or(usize::MAX);
        Ok(Self {
            engine,
            linker,
            layer,
            instances: Arc::new(Semaphore::new(slots.min(Semaphore::MAX_PERMITS))),
            limits,
            failures: FailureBook::default(),
            table: ArcSwap::from_pointee(RouteTable::default()),
            next_connection: AtomicU64::new(1),
            _ticker: ticker,
        })
    }

    pub fn layer(&self) -> &Arc<dyn ChannelLayer> {
        &self.layer
    }

    pub fn limits(&self) -> &GuestLimits {
        &self.limits
    }

    /// Traps and deadline overruns counted per plugin since start, for
    /// every plugin that has failed at least once.
    pub fn failures(&self) -> Vec<PluginFailures> {
        self.failures.report()
    }

    /// Compile one plugin off the async threads.
    pub async fn compile(&self, wasm_path: &Path) -> Result<Arc<Plugin>, PluginError> {
        let engine = self.engine.clone();
        let linker = self.linker.clone();
        let limits = self.limits.clone();
        let path = wasm_path.to_path_buf();
        tokio::task::spawn_blocking(move || plugin::compile(&engine, &linker, &limits, &path))
            .await
            .map_err(|_| PluginError::Join {
                path: wasm_path.display().to_string(),
            })?
            .map(Arc::new)
    }

    /// Make a compiled plugin live (or replace the version of the same
    /// name). The swap is atomic: new handshakes see the new table, open
    /// connections keep the version they started with.
    pub fn install(&self, plugin: Arc<Plugin>) -> Result<(), PluginError> {
        let name = plugin.name().to_owned();
        let current = self.table.load();
        let next = current.with_plugin(plugin)?;
        self.table.store(Arc::new(next));
        tracing::info!(plugin = name, "plugin live");
        Ok(())
    }

    /// Unroute a plugin: new handshakes no longer reach it.
    pub fn remove(&self, name: &str) {
        let next = self.table.load().without_plugin(name);
        self.table.store(Arc::new(next));
    }

    /// Load every `*.wasm` in `dir` (files starting with `.` are skipped: that
    /// is where editors and copy tools keep partial files). A plugin that
    /// fails to load is reported and skipped; the others go live.
    pub async fn load_dir(&self, dir: &Path) -> anyhow::Result<LoadReport> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading plugin directory {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| is_plugin_file(path))
            .collect();
        paths.sort();
        let mut report = LoadReport::default();
        for path in paths {
            let outcome = match self.compile(&path).await {
                Ok(plugin) => {
                    let name = plugin.name().to_owned();
                    self.install(plugin).map(|()| name)
                }
                Err(err) => Err(err),
            };
            match outcome {
                Ok(name) => report.loaded.push(name),
                Err(err) => {
                    tracing::error!(path = %path.display(), "plugin not loaded: {err}");
                    report.failed.push((path, err));
                }
            }
        }
        Ok(report)
    }

    /// The plugin version and kwargs for a request path.
    pub fn resolve(&self, path: &str) -> Option<RouteMatch> {
        self.table.load().resolve(path)
    }

    /// Live routes in the order they are tried.
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.table.load().routes()
    }

    /// Start a consumer for a handshake: take an instance slot, create the
    /// connection's channel, instantiate from the pre-instantiated plugin
    /// and call `connect`.
    pub async fn start(
        &self,
        matched: &RouteMatch,
        request: ConnectRequest,
        outbound: mpsc::Sender<Outbound>,
    ) -> Result<Started, StartError> {
        let plugin = &matched.plugin;
        let limits = plugin.limits();
        let server_permit = Arc::clone(&self.instances)
            .try_acquire_owned()
            .map_err(|_| StartError::AtCapacity(self.limits.max_instances))?;
        let plugin_permit = Arc::clone(&plugin.slots).try_acquire_owned().map_err(|_| {
            StartError::PluginAtCapacity {
                plugin: plugin.name().to_owned(),
                slots: limits.max_instances,
            }
        })?;
        let inbox = self.layer.new_channel();
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let mut connections = ResourceTable::new();
        let connection = connections
            .push(Connection::new(id, inbox.name().into(), outbound))
            .map_err(|err| StartError::Instantiate {
                plugin: plugin.name().to_owned(),
                message: err.to_string(),
            })?;
        let host = HostCtx {
            connections,
            layer: Arc::clone(&self.layer),
            plugin: plugin.name_arc(),
            current_connection: id,
        };
        let mut store = Store::new(&self.engine, ConsumerState::new(host, limits.memory_bytes));
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(yield_or_interrupt);
        store.data_mut().ticks_left = epoch_ticks(limits.call_timeout);
        store.set_epoch_deadline(1);
        let bindings = tokio::time::timeout(
            limits.call_timeout,
            plugin.pre.instantiate_async(&mut store),
        )
        .await
        .map_err(|_| StartError::Instantiate {
            plugin: plugin.name().to_owned(),
            message: format!("timed out after {:?}", limits.call_timeout),
        })?
        .map_err(|err| StartError::Instantiate {
            plugin: plugin.name().to_owned(),
            message: format!("{err:#}"),
        })?;
        let mut consumer = Consumer::new(
            store,
            bindings,
            connection,
            limits.call_timeout,
            self.failures.counter(plugin.name()),
            [server_permit, plugin_permit],
        );
        let scope = Scope {
            path: request.path,
            query_string: request.query_string,
            headers: request.headers,
            url_route: matched.kwargs.clone(),
            route: matched.route.to_string(),
            client: request.client,
            subprotocols: request.subprotocols,
            user: request.user,
            claims: request.claims,
        };
        match consumer.connect(scope).await {
            Ok(handshake) => Ok(Started {
                consumer,
                inbox,
                handshake,
            }),
            Err(err) => {
                // Leave any group joined before the failure.
                consumer.disconnect(1006).await;
                Err(err.into())
            }
        }
    }
}

/// `*.wasm` files whose names do not start with `.`.
fn is_plugin_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden && path.is_file() && path.extension().is_some_and(|ext| ext == "wasm")
}
