//! [`PluginHost`]: the engine, the linker, the live route table, hot swap,
//! and the start (and migration) of every connection's consumer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde::Serialize;
use switchyard_layer::{ChannelLayer, Inbox};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Engine, Store};

use crate::bindings::{Scope, add_host_to_linker, add_types_to_linker};
use crate::connection::{Connection, Handshake, Outbound};
use crate::consumer::{CallBook, Consumer, GuestError, Instance, SharedInstance};
use crate::engine::{EpochTicker, GuestLimits, build_engine, epoch_ticks, yield_or_interrupt};
use crate::failures::{FailureBook, PluginFailures};
use crate::manifest::{InstanceMode, ReplacePolicy};
use crate::plugin::{self, Plugin, PluginError, PluginFiles, Retirement};
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

/// Why a connection stayed on its old version during a `migrate` swap.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("version {version} of `{plugin}` does not export `migration`")]
    NotMigratable { plugin: String, version: String },
    #[error("no instance slot free for the new version")]
    AtCapacity,
    #[error("instantiating the new version: {0}")]
    Instantiate(String),
    /// `snapshot` failed: the old instance is unusable, the connection must
    /// close (1011).
    #[error("snapshot failed: {0}")]
    Snapshot(GuestError),
    #[error("the new version refused the state: {0}")]
    Refused(String),
    #[error("restore failed: {0}")]
    Restore(GuestError),
}

impl MigrateError {
    /// Whether the old instance can go on serving the connection.
    pub fn old_version_usable(&self) -> bool {
        !matches!(self, Self::Snapshot(_))
    }
}

/// The outcome of loading a plugin directory.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    pub failed: Vec<(PathBuf, PluginError)>,
}

/// A plugin file that failed to load, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    pub file: String,
    pub error: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// One version of a plugin, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    pub version: String,
    /// Seconds since the Unix epoch.
    pub loaded_at: u64,
    pub live: bool,
    pub open_connections: usize,
    pub migratable: bool,
}

/// One plugin, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    /// The live version's hash, if the plugin is live.
    pub version: Option<String>,
    pub source: Option<String>,
    pub routes: Vec<String>,
    pub on_replace: Option<ReplacePolicy>,
    /// The live version first, then retired versions that still serve
    /// connections.
    pub versions: Vec<VersionStatus>,
    pub last_error: Option<LoadFailure>,
}

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
    pub limits: GuestLimits,
    /// Where compiled components are cached, keyed by content hash, so an
    /// unchanged plugin is not compiled again after a restart. `None`
    /// disables the cache.
    pub compile_cache: Option<PathBuf>,
}

/// Loads plugins and starts consumers. Shared by every connection task.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<ConsumerState>,
    layer: Arc<dyn ChannelLayer>,
    limits: GuestLimits,
    table: ArcSwap<RouteTable>,
    /// Serialises table updates (reads never lock: they load the pointer).
    update: Mutex<()>,
    /// Versions replaced or removed while connections still ran on them.
    retired: Mutex<Vec<Arc<Plugin>>>,
    /// The last load failure of each plugin name, cleared when it loads.
    load_failures: Mutex<BTreeMap<String, LoadFailure>>,
    /// Each plugin file's stamp when the directory was last reconciled, and
    /// what came of it: an unchanged file is not read again.
    stamps: Mutex<HashMap<PathBuf, (FileStamp, Outcome)>>,
    /// Bumped by every install and removal.
    generation: AtomicU64,
    /// Plugin files read by reconciles since start.
    files_read: AtomicU64,
    instances: Arc<Semaphore>,
    failures: FailureBook,
    next_connection: AtomicU64,
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
            },
        )
    }

    /// Build the engine (with the compile cache, if any) and the linker (WASI
    /// without ambient authority plus the `host` interface), and start the
    /// epoch ticker.
    pub fn with_options(
        layer: Arc<dyn ChannelLayer>,
        options: HostOptions,
    ) -> anyhow::Result<Self> {
        let HostOptions {
            limits,
            compile_cache,
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
        let ticker = EpochTicker::start(engine.clone()).context("starting the epoch thread")?;
        let slots = usize::try_from(limits.max_instances).unwrap_or(usize::MAX);
        Ok(Self {
            engine,
            linker,
            layer,
            instances: Arc::new(Semaphore::new(slots.min(Semaphore::MAX_PERMITS))),
            limits,
            table: ArcSwap::from_pointee(RouteTable::default()),
            update: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            failures: FailureBook::default(),
            load_failures: Mutex::new(BTreeMap::new()),
            stamps: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            files_read: AtomicU64::new(0),
            next_connection: AtomicU64::new(1),
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

    pub fn layer(&self) -> &Arc<dyn ChannelLayer> {
        &self.layer
    }

    pub fn limits(&self) -> &GuestLimits {
        &self.limits
    }

    /// Read and compile one plugin off the async threads.
    pub async fn compile(&self, wasm_path: &Path) -> Result<Arc<Plugin>, PluginError> {
        let engine = self.engine.clone();
        let linker = self.linker.clone();
        let limits = self.limits.clone();
        let path = wasm_path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let files = PluginFiles::read(&path)?;
            plugin::compile(&engine, &linker, &limits, files)
        })
        .await
        .map_err(|_| PluginError::Join {
            path: wasm_path.display().to_string(),
        })?
        .map(Arc::new)
    }

    /// Make a compiled plugin live, replacing the live version of the same
    /// name. The swap is atomic: new handshakes see the new table; open
    /// connections of the old version follow the new manifest's
    /// `on-replace` policy.
    pub fn install(&self, plugin: &Arc<Plugin>) -> Result<(), PluginError> {
        let previous = {
            let _guard = lock(&self.update);
            let current = self.table.load();
            let previous = current.get(plugin.name()).cloned();
            let next = current.with_plugin(Arc::clone(plugin))?;
            self.table.store(Arc::new(next));
            self.generation.fetch_add(1, Ordering::Relaxed);
            previous
        };
        lock(&self.load_failures).remove(plugin.name());
        tracing::info!(
            plugin = plugin.name(),
            version = plugin.hash(),
            routes = ?plugin.manifest().routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "plugin live"
        );
        if let Some(old) = previous {
            let how = match plugin.manifest().on_replace {
                ReplacePolicy::Drain => Retirement::Drain,
                ReplacePolicy::Restart => Retirement::Restart,
                ReplacePolicy::Migrate => Retirement::Migrate(Arc::clone(plugin)),
            };
            self.retire(old, how);
        }
        Ok(())
    }

    /// Unroute a plugin: new handshakes no longer reach it, and its open
    /// connections follow its own `on-replace` policy (`migrate`, having
    /// nowhere to go, drains).
    pub fn remove(&self, name: &str) {
        let removed = {
            let _guard = lock(&self.update);
            let current = self.table.load();
            let removed = current.get(name).cloned();
            self.table.store(Arc::new(current.without_plugin(name)));
            self.generation.fetch_add(1, Ordering::Relaxed);
            removed
        };
        lock(&self.load_failures).remove(name);
        if let Some(old) = removed {
            tracing::info!(plugin = name, version = old.hash(), "plugin removed");
            let how = match old.manifest().on_replace {
                ReplacePolicy::Restart => Retirement::Restart,
                ReplacePolicy::Drain | ReplacePolicy::Migrate => Retirement::Drain,
            };
            self.retire(old, how);
        }
    }

    fn retire(&self, old: Arc<Plugin>, how: Retirement) {
        tracing::info!(
            plugin = old.name(),
            version = old.hash(),
            open = old.open_connections(),
            policy = match &how {
                Retirement::Live | Retirement::Drain | Retirement::Broken => "drain",
                Retirement::Restart => "restart",
                Retirement::Migrate(_) => "migrate",
            },
            "retiring the previous version"
        );
        old.retire(how);
        let mut retired = lock(&self.retired);
        retired.retain(|version| version.open_connections() > 0);
        retired.push(old);
    }

    fn record_failure(&self, path: &Path, err: &PluginError) {
        tracing::error!(path = %path.display(), "plugin not loaded: {err}");
        let name = failure_key(path);
        lock(&self.load_failures).insert(
            name,
            LoadFailure {
                file: path.display().to_string(),
                error: err.to_string(),
                at: unix_secs(SystemTime::now()),
            },
        );
    }

    /// Bring the live plugins in line with `dir`: load new and changed
    /// plugins (a version is the component plus its manifest), unroute the
    /// ones whose `.wasm` is gone. Files whose names start with `.` are
    /// ignored: that is where editors and copy tools keep partial files. A
    /// plugin that fails to load never replaces its live version: the error
    /// is logged and kept for the admin API.
    pub async fn load_dir(&self, dir: &Path) -> anyhow::Result<LoadReport> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading plugin directory {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| is_plugin_file(path))
            .collect();
        paths.sort();
        let mut report = LoadReport::default();
        let mut present = Vec::new();
        let mut seen = HashMap::new();
        for path in paths {
            present.push(failure_key(&path));
            let before = file_stamp(&path);
            let last = lock(&self.stamps).get(&path).cloned();
            if let Some((stamp, outcome)) = last
                && stamp == before
                && self.still_holds(&path, outcome)
            {
                // Neither file changed since it was last read, so it is not
                // read again: a plugin that failed is retried only once it
                // changes (or another plugin comes or goes).
                if outcome == Outcome::Loaded {
                    report
                        .unchanged
                        .push(plugin::plugin_name(&path).unwrap_or_default());
                }
                seen.insert(path, (stamp, outcome));
                continue;
            }
            match self.load_file(&path).await {
                Ok(Some(name)) => {
                    report.loaded.push(name);
                    seen.insert(path, (before, Outcome::Loaded));
                }
                Ok(None) => {
                    report
                        .unchanged
                        .push(plugin::plugin_name(&path).unwrap_or_default());
                    seen.insert(path, (before, Outcome::Loaded));
                }
                Err(err) if file_stamp(&path) != before => {
                    // Still being written: the watcher will see the next write.
                    tracing::debug!(path = %path.display(), "plugin file changed while loading: {err}");
                }
                Err(err) => {
                    // Only a route conflict can be cured by another plugin
                    // coming or going; anything else waits for the file.
                    let generation = matches!(err, PluginError::RouteConflict { .. })
                        .then(|| self.generation.load(Ordering::Relaxed));
                    self.record_failure(&path, &err);
                    report.failed.push((path.clone(), err));
                    seen.insert(path, (before, Outcome::Failed { generation }));
                }
            }
        }
        *lock(&self.stamps) = seen;
        let live: Vec<String> = self
            .table
            .load()
            .plugins()
            .map(|p| p.name().to_owned())
            .collect();
        for name in live {
            if !present.contains(&name) {
                self.remove(&name);
                report.removed.push(name);
            }
        }
        lock(&self.load_failures).retain(|name, _| present.contains(name));
        Ok(report)
    }

    /// Whether what the last reconcile found for an unchanged file still
    /// holds: the plugin it loaded is still live, or it failed, and for a
    /// route conflict nothing was installed or removed since.
    fn still_holds(&self, path: &Path, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Loaded => {
                plugin::plugin_name(path).is_ok_and(|name| self.table.load().get(&name).is_some())
            }
            Outcome::Failed { generation } => {
                generation.is_none_or(|at| at == self.generation.load(Ordering::Relaxed))
            }
        }
    }

    /// Load one plugin file unless the live version is the same; `Ok(None)`
    /// when unchanged.
    async fn load_file(&self, path: &Path) -> Result<Option<String>, PluginError> {
        let engine = self.engine.clone();
        let linker = self.linker.clone();
        let limits = self.limits.clone();
        let owned = path.to_path_buf();
        let table = self.table.load_full();
        self.files_read.fetch_add(1, Ordering::Relaxed);
        let compiled = tokio::task::spawn_blocking(move || {
            let files = PluginFiles::read(&owned)?;
            if table
                .get(&files.name)
                .is_some_and(|live| live.fingerprint() == files.fingerprint)
            {
                return Ok(None);
            }
            plugin::compile(&engine, &linker, &limits, files).map(Some)
        })
        .await
        .map_err(|_| PluginError::Join {
            path: path.display().to_string(),
        })??;
        let Some(plugin) = compiled else {
            return Ok(None);
        };
        let name = plugin.name().to_owned();
        self.install(&Arc::new(plugin))?;
        Ok(Some(name))
    }

    /// The plugin version and kwargs for a request path.
    pub fn resolve(&self, path: &str) -> Option<RouteMatch> {
        self.table.load().resolve(path)
    }

    /// Live routes in the order they are tried.
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.table.load().routes()
    }

    /// Every plugin that is live, serves connections on a retired version,
    /// or failed to load, for the admin API.
    pub fn status(&self) -> Vec<PluginStatus> {
        let table = self.table.load();
        let retired = {
            let mut retired = lock(&self.retired);
            retired.retain(|version| version.open_connections() > 0);
            retired.clone()
        };
        let failures = lock(&self.load_failures).clone();
        let mut names: Vec<String> = table.plugins().map(|p| p.name().to_owned()).collect();
        names.extend(retired.iter().map(|p| p.name().to_owned()));
        names.extend(failures.keys().cloned());
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let live = table.get(&name);
                let version = |plugin: &Arc<Plugin>, is_live: bool| VersionStatus {
                    version: plugin.hash().to_owned(),
                    loaded_at: unix_secs(plugin.loaded_at()),
                    live: is_live,
                    open_connections: plugin.open_connections(),
                    migratable: plugin.migratable(),
                };
                let mut versions: Vec<VersionStatus> =
                    live.iter().map(|p| version(p, true)).collect();
                versions.extend(
                    retired
                        .iter()
                        .filter(|p| p.name() == name)
                        .map(|p| version(p, false)),
                );
                PluginStatus {
                    version: live.map(|p| p.hash().to_owned()),
                    source: live.map(|p| p.source().display().to_string()),
                    routes: live
                        .map(|p| {
                            p.manifest()
                                .routes
                                .iter()
                                .map(ToString::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                    on_replace: live.map(|p| p.manifest().on_replace),
                    versions,
                    last_error: failures.get(&name).cloned(),
                    name,
                }
            })
            .collect()
    }

    /// What a consumer's calls report to: the plugin's failure counters and
    /// the epoch clock.
    fn calls(&self, plugin: &Plugin) -> CallBook {
        CallBook {
            failures: self.failures.counter(plugin.name()),
            clock: self.ticker.clock(),
        }
    }

    /// An instance slot of the server and one of the plugin version.
    fn take_slots(&self, plugin: &Plugin) -> Result<[OwnedSemaphorePermit; 2], StartError> {
        let server = Arc::clone(&self.instances)
            .try_acquire_owned()
            .map_err(|_| StartError::AtCapacity(self.limits.max_instances))?;
        let own = Arc::clone(&plugin.slots).try_acquire_owned().map_err(|_| {
            StartError::PluginAtCapacity {
                plugin: plugin.name().to_owned(),
                slots: plugin.limits().max_instances,
            }
        })?;
        Ok([server, own])
    }

    /// A store and an instance of `plugin`, with `connection` in its
    /// table (a shared instance starts with none).
    async fn new_instance(
        &self,
        plugin: &Arc<Plugin>,
        connection: Option<Connection>,
    ) -> Result<(Instance, Option<Resource<Connection>>), String> {
        let limits = plugin.limits();
        let mut connections = ResourceTable::new();
        let id = connection.as_ref().map_or(0, |c| c.id);
        let handle = match connection {
            Some(connection) => Some(
                connections
                    .push(connection)
                    .map_err(|err| err.to_string())?,
            ),
            None => None,
        };
        let host = HostCtx {
            connections,
            layer: Arc::clone(&self.layer),
            plugin: plugin.name_arc(),
            current_connection: Arc::new(AtomicU64::new(id)),
        };
        let mut store = Store::new(&self.engine, ConsumerState::new(host, limits.memory_bytes));
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(yield_or_interrupt);
        store.data_mut().ticks_left = epoch_ticks(limits.call_timeout);
        store.set_epoch_deadline(1);
        let running = self.ticker.clock().running();
        let instance = tokio::time::timeout(
            limits.call_timeout,
            plugin.pre.instantiate_async(&mut store),
        )
        .await
        .map_err(|_| format!("timed out after {:?}", limits.call_timeout))?
        .map_err(|err| format!("{err:#}"))?;
        let guest = plugin
            .consumer_exports
            .load(&mut store, &instance)
            .map_err(|err| format!("{err:#}"))?;
        let migration = match &plugin.migration_exports {
            Some(indices) => Some(
                indices
                    .load(&mut store, &instance)
                    .map_err(|err| format!("{err:#}"))?,
            ),
            None => None,
        };
        drop(running);
        let instance = Instance {
            store,
            guest,
            migration,
            in_call: false,
        };
        Ok((instance, handle))
    }

    /// A store and an instance of `plugin` serving `connection`.
    async fn instantiate(
        &self,
        plugin: &Arc<Plugin>,
        connection: Connection,
        permits: [OwnedSemaphorePermit; 2],
    ) -> Result<Consumer, String> {
        let (instance, handle) = self.new_instance(plugin, Some(connection)).await?;
        let handle = handle.ok_or("connection not in the new instance's table")?;
        Ok(Consumer::new(
            instance,
            &handle,
            Arc::clone(plugin),
            self.calls(plugin),
            permits,
        ))
    }

    /// `connection` on the version's shared instance, started (with the
    /// version's instance slots) if there is none or the last one broke.
    async fn attach_shared(
        &self,
        plugin: &Arc<Plugin>,
        connection: Connection,
    ) -> Result<Consumer, StartError> {
        let shared = {
            let mut slot = plugin.shared.lock().await;
            match &*slot {
                Some(shared) if !shared.is_broken() => Arc::clone(shared),
                _ => {
                    // A broken instance gave its slots back when it broke;
                    // its connections still hold it until they close.
                    *slot = None;
                    let permits = self.take_slots(plugin)?;
                    let (instance, _) =
                        self.new_instance(plugin, None).await.map_err(|message| {
                            StartError::Instantiate {
                                plugin: plugin.name().to_owned(),
                                message,
                            }
                        })?;
                    let shared = Arc::new(SharedInstance::new(
                        instance,
                        permits,
                        self.failures.counter(plugin.name()),
                    ));
                    *slot = Some(Arc::clone(&shared));
                    shared
                }
            }
        };
        let id = connection.id;
        let channel_name = Arc::clone(&connection.channel_name);
        let handle =
            shared
                .attach(connection)
                .await
                .map_err(|message| StartError::Instantiate {
                    plugin: plugin.name().to_owned(),
                    message,
                })?;
        Ok(Consumer::shared(
            shared,
            &handle,
            (id, channel_name),
            Arc::clone(&self.layer),
            Arc::clone(plugin),
            self.calls(plugin),
        ))
    }

    /// Start a consumer for a handshake: create the connection's channel,
    /// take an instance slot and instantiate from the pre-instantiated
    /// plugin (or join the version's shared instance), and call `connect`.
    pub async fn start(
        &self,
        matched: &RouteMatch,
        request: ConnectRequest,
        outbound: mpsc::Sender<Outbound>,
    ) -> Result<Started, StartError> {
        let plugin = &matched.plugin;
        let shared = plugin.manifest().instance == InstanceMode::Shared;
        let permits = if shared {
            None
        } else {
            Some(self.take_slots(plugin)?)
        };
        let inbox = self.layer.new_channel();
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let connection = Connection::new(id, inbox.name().into(), outbound);
        let mut consumer = match permits {
            None => self.attach_shared(plugin, connection).await?,
            Some(permits) => self
                .instantiate(plugin, connection, permits)
                .await
                .map_err(|message| StartError::Instantiate {
                    plugin: plugin.name().to_owned(),
                    message,
                })?,
        };
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

    /// Move a connection to `next`, a newer version of its plugin: snapshot
    /// the old instance, instantiate `next` for the same connection, restore
    /// there, and swap `consumer` in place. The connection keeps its id,
    /// channel and groups; `connect` is not called again. On error the old
    /// instance stays (unless [`MigrateError::old_version_usable`] says
    /// otherwise).
    pub async fn migrate(
        &self,
        consumer: &mut Consumer,
        next: &Arc<Plugin>,
    ) -> Result<(), MigrateError> {
        if !next.migratable() {
            return Err(MigrateError::NotMigratable {
                plugin: next.name().to_owned(),
                version: next.hash().to_owned(),
            });
        }
        let old_version = Arc::clone(consumer.version());
        let state = match consumer.snapshot().await {
            None => {
                return Err(MigrateError::NotMigratable {
                    plugin: old_version.name().to_owned(),
                    version: old_version.hash().to_owned(),
                });
            }
            Some(Err(err)) => return Err(MigrateError::Snapshot(err)),
            Some(Ok(state)) => state,
        };
        let permits = self
            .take_slots(next)
            .map_err(|_| MigrateError::AtCapacity)?;
        let connection = consumer
            .successor()
            .await
            .ok_or_else(|| MigrateError::NotMigratable {
                plugin: old_version.name().to_owned(),
                version: old_version.hash().to_owned(),
            })?;
        let mut successor = self
            .instantiate(next, connection, permits)
            .await
            .map_err(MigrateError::Instantiate)?;
        match successor.restore(state).await {
            Ok(Ok(())) => {
                tracing::debug!(
                    plugin = next.name(),
                    connection = consumer.connection_id(),
                    from = old_version.hash(),
                    to = next.hash(),
                    "connection migrated"
                );
                // The old instance goes without `disconnect` and without
                // leaving groups: the connection lives on in `successor`.
                *consumer = successor;
                Ok(())
            }
            Ok(Err(reason)) => Err(MigrateError::Refused(reason)),
            Err(err) => Err(MigrateError::Restore(err)),
        }
    }
}

/// The name a file's load failure is kept under: its plugin name, or the
/// file name when that cannot name a plugin.
fn failure_key(path: &Path) -> String {
    plugin::plugin_name(path).unwrap_or_else(|_| {
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    })
}

/// What the last reconcile made of a plugin file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Loaded,
    /// It failed; for a route conflict, while the table was at this
    /// generation.
    Failed {
        generation: Option<u64>,
    },
}

/// What identifies the content of a plugin file and its manifest without
/// reading them: size, inode and modification and change times (a rename
/// into place changes the inode; a write, the times).
type FileStamp = [Option<(u64, u64, i64, i64, i64, i64)>; 2];

/// The [`FileStamp`] of a plugin file and its manifest, to notice a file
/// that changed since it was last read or while it is being loaded.
fn file_stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt as _;
    let stamp = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| {
            (
                m.len(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        })
    };
    [stamp(path), stamp(&path.with_extension("toml"))]
}

/// `*.wasm` files whose names do not start with `.`.
pub(crate) fn is_plugin_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden && path.is_file() && path.extension().is_some_and(|ext| ext == "wasm")
}
