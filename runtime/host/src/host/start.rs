//! Starting a connection's consumer (its own instance, or a turn on the
//! version's shared one) and migrating it to a newer version.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchyard_layer::Inbox;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;
use wasmtime::component::{ResourceTable, ResourceTableError};

use super::PluginHost;
use crate::connection::{Connection, Handshake, OutboundSender};
use crate::consumer::{CallBook, Consumer, GuestError};
use crate::engine::{epoch_ticks, yield_or_interrupt};
use crate::instance::{Instance, SharedInstance};
use crate::keyvalue::KvCtx;
use crate::manifest::InstanceMode;
use crate::metrics::EventCounters;
use crate::registry::RouteMatch;
use crate::scope::ScopeInfo;
use crate::state::{ConsumerState, HostCtx};
use crate::version::Version;

/// What the server knows about a handshake; the host adds the route.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// Percent-decoded path with its leading `/`.
    pub path: String,
    /// Raw query string without `?`.
    pub query_string: String,
    /// Lower-case names; values decoded as ISO-8859-1.
    pub headers: Vec<(String, String)>,
    /// `ip:port` of the client.
    pub client: Option<String>,
    /// The subprotocols the client offered, in its order.
    pub subprotocols: Vec<String>,
    /// The authenticated user, if the server authenticated one.
    pub user: Option<String>,
    /// Claims of the authenticated user as a JSON object.
    pub claims: Option<String>,
    /// Whether the connection came over TLS (scope `scheme` `wss`, else `ws`).
    pub tls: bool,
    /// The handshake's HTTP version, e.g. `1.1` (ASGI `http_version`).
    pub http_version: String,
    /// The address of the listening socket that accepted the connection
    /// (ASGI `server`), when known.
    pub server: Option<std::net::SocketAddr>,
}

impl Default for ConnectRequest {
    /// An empty request over plain HTTP/1.1 (the only HTTP a WebSocket
    /// handshake uses here), from no known server address.
    fn default() -> Self {
        Self {
            path: String::new(),
            query_string: String::new(),
            headers: Vec::new(),
            client: None,
            subprotocols: Vec::new(),
            user: None,
            claims: None,
            tls: false,
            http_version: "1.1".to_owned(),
            server: None,
        }
    }
}

/// Why a consumer could not be started for a handshake.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The cap on live instances is reached (the server answers 503).
    #[error("all {0} instance slots are in use")]
    AtCapacity(u32),
    /// The plugin's own `limits.max-instances` is reached (503 too).
    #[error("all {slots} instance slots of plugin `{plugin}` are in use")]
    PluginAtCapacity {
        /// The plugin's name.
        plugin: String,
        /// Its `limits.max-instances`.
        slots: u32,
    },
    /// The store or the instance could not be made.
    #[error("instantiating plugin `{plugin}`: {source}")]
    Instantiate {
        /// The plugin's name.
        plugin: String,
        /// What failed.
        source: InstantiateError,
    },
    /// `connect` trapped or ran past its deadline.
    #[error(transparent)]
    Guest(#[from] GuestError),
}

/// A consumer whose `connect` has returned.
#[derive(Debug)]
pub struct Started {
    /// The consumer, its `connect` done.
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
    /// A version does not export `migration`, or runs shared instances.
    #[error("version {version} of `{plugin}` does not export `migration`")]
    NotMigratable {
        /// The plugin's name.
        plugin: String,
        /// The version's id.
        version: String,
    },
    /// No instance slot is free for the new version.
    #[error("no instance slot free for the new version")]
    AtCapacity,
    /// The new version could not be instantiated; the old one goes on.
    #[error("instantiating the new version: {0}")]
    Instantiate(#[source] InstantiateError),
    /// `snapshot` failed: the old instance is unusable, the connection must
    /// close (1011).
    #[error("snapshot failed: {0}")]
    Snapshot(#[source] GuestError),
    /// The guest's `restore` returned an error: its own text.
    #[error("the new version refused the state: {0}")]
    Refused(String),
    /// `restore` trapped or ran past its deadline in the new instance; the
    /// old one goes on.
    #[error("restore failed: {0}")]
    Restore(#[source] GuestError),
}

/// Why a store and an instance of a plugin version could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InstantiateError {
    /// Instantiation ran past the version's call timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// wasmtime refused to instantiate the component or to find its
    /// exports in the instance.
    #[error("{0:#}")]
    Wasm(#[source] wasmtime::Error),
    /// The instance's connection table is full.
    #[error(transparent)]
    Table(#[from] ResourceTableError),
}

impl MigrateError {
    /// Whether the old instance can go on serving the connection.
    pub fn old_version_usable(&self) -> bool {
        !matches!(self, Self::Snapshot(_))
    }
}

impl PluginHost {
    /// What a consumer's calls report to: the plugin's failure counters and
    /// the epoch clock.
    fn calls(&self, plugin: &Version) -> CallBook {
        CallBook {
            failures: self.failures.counter(plugin.name()),
            clock: self.ticker.clock(),
            observer: self.metrics.as_ref().map(|m| m.plugin(plugin.name())),
        }
    }

    /// An instance slot of the server and one of the plugin version.
    pub(super) fn take_slots(
        &self,
        plugin: &Version,
    ) -> Result<[OwnedSemaphorePermit; 2], StartError> {
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

    /// A store for an instance of `plugin`, under its limits, with the
    /// deadline of one call armed.
    pub(super) fn new_store(
        &self,
        plugin: &Arc<Version>,
        connections: ResourceTable,
        current_connection_id: u64,
    ) -> Store<ConsumerState> {
        let limits = plugin.limits();
        let host = HostCtx {
            connections,
            layer: Arc::clone(&self.layer),
            plugin: plugin.artifact().name_arc(),
            current_connection_id: Arc::new(AtomicU64::new(current_connection_id)),
            current_span: crate::guest_output::no_span(),
        };
        let kv = KvCtx::new(
            plugin.artifact().name_arc(),
            plugin
                .artifact()
                .manifest()
                .keyvalue
                .then(|| self.keyvalue.clone()),
        );
        let mut store = Store::new(&self.engine, ConsumerState::new(host, kv, limits));
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(yield_or_interrupt);
        store.data_mut().ticks_left = epoch_ticks(limits.call_timeout);
        store.set_epoch_deadline(1);
        store
    }

    /// A store and an instance of `plugin`, its host state holding
    /// `connections` (a shared instance starts with none) and naming
    /// `current_connection_id` in guest output (0 for a shared instance).
    pub(super) async fn new_instance(
        &self,
        plugin: &Arc<Version>,
        connections: ResourceTable,
        current_connection_id: u64,
    ) -> Result<Instance, InstantiateError> {
        let limits = plugin.limits();
        let mut store = self.new_store(plugin, connections, current_connection_id);
        let running = self.ticker.clock().running();
        let instance = tokio::time::timeout(
            limits.call_timeout,
            plugin.artifact().pre.instantiate_async(&mut store),
        )
        .await
        .map_err(|_| InstantiateError::Timeout(limits.call_timeout))?
        .map_err(InstantiateError::Wasm)?;
        let guest = plugin
            .artifact()
            .consumer_exports
            .as_ref()
            .ok_or_else(|| {
                InstantiateError::Wasm(wasmtime::format_err!(
                    "the plugin serves no WebSocket routes"
                ))
            })?
            .load(&mut store, &instance)
            .map_err(InstantiateError::Wasm)?;
        let migration = match &plugin.artifact().migration_exports {
            Some(indices) => Some(
                indices
                    .load(&mut store, &instance)
                    .map_err(InstantiateError::Wasm)?,
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
        Ok(instance)
    }

    /// A store and an instance of `plugin` serving `connection`.
    async fn instantiate(
        &self,
        plugin: &Arc<Version>,
        connection: Connection,
        permits: [OwnedSemaphorePermit; 2],
    ) -> Result<Consumer, InstantiateError> {
        let id = connection.id;
        let mut connections = ResourceTable::new();
        let handle = connections.push(connection)?;
        let instance = self.new_instance(plugin, connections, id).await?;
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
        plugin: &Arc<Version>,
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
                    let instance = self
                        .new_instance(plugin, ResourceTable::new(), 0)
                        .await
                        .map_err(|source| StartError::Instantiate {
                            plugin: plugin.name().to_owned(),
                            source,
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
        let handle = shared
            .attach(connection)
            .await
            .map_err(|err| StartError::Instantiate {
                plugin: plugin.name().to_owned(),
                source: err.into(),
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
        outbound: OutboundSender,
    ) -> Result<Started, StartError> {
        let plugin = &matched.plugin;
        let shared = plugin.manifest().instance == InstanceMode::Shared;
        let permits = if shared {
            None
        } else {
            Some(self.take_slots(plugin)?)
        };
        let inbox = self.layer.new_channel();
        let id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        // The server's span for this connection (if it has one, with an
        // empty `connection` field) names it from here on, so every log
        // line of the handshake and the socket carries the id.
        tracing::Span::current().record("connection", id);
        let connection = Connection::new(id, inbox.name().into(), outbound);
        let mut consumer = match permits {
            None => self.attach_shared(plugin, connection).await?,
            Some(permits) => self
                .instantiate(plugin, connection, permits)
                .await
                .map_err(|source| StartError::Instantiate {
                    plugin: plugin.name().to_owned(),
                    source,
                })?,
        };
        let scope = ScopeInfo {
            path: request.path,
            query_string: request.query_string,
            headers: request.headers,
            url_route: matched.kwargs.clone(),
            route: matched.route.to_string(),
            client: request.client,
            subprotocols: request.subprotocols,
            user: request.user,
            claims: request.claims,
            scheme: if request.tls { "wss" } else { "ws" },
            http_version: request.http_version,
            server: request
                .server
                .map(|addr| (addr.ip().to_string(), addr.port())),
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
        next: &Arc<Version>,
    ) -> Result<(), MigrateError> {
        let result = self.move_to(consumer, next).await;
        EventCounters::bump(if result.is_ok() {
            &self.events.migrations
        } else {
            &self.events.failed_migrations
        });
        result
    }

    /// [`PluginHost::migrate`], uncounted.
    async fn move_to(
        &self,
        consumer: &mut Consumer,
        next: &Arc<Version>,
    ) -> Result<(), MigrateError> {
        if !next.artifact().migratable() {
            return Err(MigrateError::NotMigratable {
                plugin: next.name().to_owned(),
                version: next.hash().to_owned(),
            });
        }
        if consumer.is_hibernated() {
            // Its snapshot is taken already: it wakes into `next`.
            consumer.rebase(next);
            return Ok(());
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
