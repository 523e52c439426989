//! One consumer instance serving one connection: a store, an instance, and
//! the calls into it, each bounded by an epoch deadline and a tokio timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use switchyard_layer::{ChannelLayer, Event};
use tokio::sync::{OwnedSemaphorePermit, watch};
use wasmtime::Store;
use wasmtime::component::Resource;

use crate::bindings::{Frame, Migration, Scope, WebsocketConsumer};
use crate::connection::{Connection, Handshake, OutboundOverflow};
use crate::engine::epoch_ticks;
use crate::failures::FailureCounter;
use crate::plugin::{Plugin, Retirement};
use crate::state::ConsumerState;

/// A frame received from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InFrame {
    Text(String),
    Binary(Vec<u8>),
}

/// How a call into the guest failed. The instance is unusable afterwards:
/// the server closes the connection with 1011.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("plugin `{plugin}` trapped in `{call}`: {message}")]
    Trap {
        plugin: Arc<str>,
        call: &'static str,
        message: String,
    },
    #[error("plugin `{plugin}` ran past its {timeout:?} deadline in `{call}`")]
    Deadline {
        plugin: Arc<str>,
        call: &'static str,
        timeout: Duration,
    },
}

/// The state of the connection after a call, as the plugin left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    Open,
    /// The plugin called `close`.
    Closed,
    /// The outbound queue overflowed (slow reader) or the socket is gone.
    Overflowed(OutboundOverflow),
}

/// A live consumer instance bound to one connection.
pub struct Consumer {
    store: Store<ConsumerState>,
    guest: WebsocketConsumer,
    /// Present when the plugin exports `migration`.
    migration: Option<Migration>,
    connection: Resource<Connection>,
    /// The plugin's name, for errors and logs.
    plugin: Arc<str>,
    /// The version this instance runs; counts it as open while alive.
    version: Arc<Plugin>,
    /// Tells when a newer version retires this one; `None` once handed out
    /// by [`Consumer::retirement`].
    retirement: Option<watch::Receiver<Retirement>>,
    layer: Arc<dyn ChannelLayer>,
    call_timeout: Duration,
    /// The plugin's failure counters.
    failures: Arc<FailureCounter>,
    /// Set once a call failed; the instance is never called again.
    failed: bool,
    /// Held for the instance's life: the caps on live instances (the
    /// server's and the plugin's).
    _permits: [OwnedSemaphorePermit; 2],
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("plugin", &self.plugin)
            .field("version", &self.version.hash())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.version.closed();
    }
}

impl Consumer {
    pub(crate) fn new(
        store: Store<ConsumerState>,
        guest: WebsocketConsumer,
        migration: Option<Migration>,
        connection: Resource<Connection>,
        version: Arc<Plugin>,
        failures: Arc<FailureCounter>,
        permits: [OwnedSemaphorePermit; 2],
    ) -> Self {
        let call_timeout = version.limits().call_timeout;
        let plugin = Arc::clone(&store.data().host.plugin);
        let layer = Arc::clone(&store.data().host.layer);
        version.opened();
        let retirement = Some(version.watch_retirement());
        Self {
            store,
            guest,
            migration,
            connection,
            plugin,
            version,
            retirement,
            layer,
            call_timeout,
            failures,
            failed: false,
            _permits: permits,
        }
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The plugin version this instance runs.
    pub fn version(&self) -> &Arc<Plugin> {
        &self.version
    }

    /// Resolves when a newer version retired this one with `restart` or
    /// `migrate`; never for `drain` (the connection just carries on). The
    /// future owns the watch, so it can be kept across loop iterations and
    /// polled cheaply; it is handed out once per instance (later calls get a
    /// future that never resolves). After a migration, ask the successor.
    pub fn retirement(&mut self) -> Pin<Box<dyn Future<Output = Retirement> + Send + 'static>> {
        let watch = self.retirement.take();
        Box::pin(async move {
            let Some(mut watch) = watch else {
                return std::future::pending().await;
            };
            loop {
                let current = watch.borrow_and_update().clone();
                if matches!(current, Retirement::Restart | Retirement::Migrate(_)) {
                    return current;
                }
                if watch.changed().await.is_err() {
                    // The version is gone without a retirement: nothing
                    // will ever come.
                    return std::future::pending().await;
                }
            }
        })
    }

    pub(crate) fn conn(&self) -> &Connection {
        // The entry is pushed before the consumer exists and only removed
        // when the store is dropped; a missing entry is a host bug.
        self.store
            .data()
            .host
            .connections
            .get(&self.connection)
            .expect("connection resource present for the consumer's life")
    }

    /// The connection's id (unique in this process).
    pub fn connection_id(&self) -> u64 {
        self.conn().id
    }

    /// The connection's channel name on the layer.
    pub fn channel_name(&self) -> Arc<str> {
        Arc::clone(&self.conn().channel_name)
    }

    /// What the plugin decided about the handshake so far.
    pub fn handshake(&self) -> Handshake {
        self.conn().handshake.clone()
    }

    pub fn status(&self) -> ConnectionStatus {
        let conn = self.conn();
        match (conn.overflow, conn.closed) {
            (Some(overflow), _) => ConnectionStatus::Overflowed(overflow),
            (None, true) => ConnectionStatus::Closed,
            (None, false) => ConnectionStatus::Open,
        }
    }

    fn borrow(&self) -> Resource<Connection> {
        Resource::new_borrow(self.connection.rep())
    }

    /// Run one guest call under the epoch deadline and a tokio timeout.
    async fn guarded<R>(
        plugin: &Arc<str>,
        call: &'static str,
        timeout: Duration,
        (failed, failures): (&mut bool, &FailureCounter),
        future: impl Future<Output = wasmtime::Result<R>>,
    ) -> Result<R, GuestError> {
        let outcome = match tokio::time::timeout(timeout, future).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => {
                if matches!(
                    err.downcast_ref::<wasmtime::Trap>(),
                    Some(wasmtime::Trap::Interrupt)
                ) {
                    GuestError::Deadline {
                        plugin: Arc::clone(plugin),
                        call,
                        timeout,
                    }
                } else {
                    GuestError::Trap {
                        plugin: Arc::clone(plugin),
                        call,
                        message: format!("{err:?}"),
                    }
                }
            }
            Err(_elapsed) => GuestError::Deadline {
                plugin: Arc::clone(plugin),
                call,
                timeout,
            },
        };
        *failed = true;
        let total = match outcome {
            GuestError::Trap { .. } => failures.trap(),
            GuestError::Deadline { .. } => failures.deadline(),
        };
        tracing::warn!(
            plugin = %plugin,
            call,
            failures = total,
            "guest failure {total} of plugin `{plugin}` since start"
        );
        Err(outcome)
    }

    /// Give the next call its ticks; the store's epoch callback yields at
    /// each tick and traps when they are spent.
    fn arm(&mut self) {
        Self::arm_store(&mut self.store, self.call_timeout);
    }

    /// [`Self::arm`] on the store alone, so a caller may hold other fields.
    fn arm_store(store: &mut Store<ConsumerState>, call_timeout: Duration) {
        store.data_mut().ticks_left = epoch_ticks(call_timeout);
        store.set_epoch_deadline(1);
    }

    /// Call `connect`; returns the plugin's answer to the handshake. A plugin
    /// that neither accepts nor closes is taken to reject (HTTP 403).
    pub async fn connect(&mut self, scope: Scope) -> Result<Handshake, GuestError> {
        self.arm();
        let conn = self.borrow();
        let guest = &self.guest;
        Self::guarded(
            &self.plugin,
            "connect",
            self.call_timeout,
            (&mut self.failed, &self.failures),
            guest.call_connect(&mut self.store, conn, &scope),
        )
        .await?;
        let handshake = self.handshake();
        if handshake == Handshake::Pending {
            tracing::warn!(
                plugin = %self.plugin,
                connection = self.connection_id(),
                "connect returned without accept or close; rejecting with 403"
            );
            return Ok(Handshake::Rejected {
                code: 1006,
                reason: None,
            });
        }
        Ok(handshake)
    }

    /// Deliver a client frame.
    pub async fn receive(&mut self, frame: InFrame) -> Result<(), GuestError> {
        self.arm();
        let conn = self.borrow();
        let frame = match frame {
            InFrame::Text(text) => Frame::Text(text),
            InFrame::Binary(bytes) => Frame::Binary(bytes),
        };
        let guest = &self.guest;
        Self::guarded(
            &self.plugin,
            "receive",
            self.call_timeout,
            (&mut self.failed, &self.failures),
            guest.call_receive(&mut self.store, conn, &frame),
        )
        .await
    }

    /// Deliver a channel-layer event.
    pub async fn event(&mut self, event: &Event) -> Result<(), GuestError> {
        self.arm();
        let conn = self.borrow();
        let guest = &self.guest;
        Self::guarded(
            &self.plugin,
            "event",
            self.call_timeout,
            (&mut self.failed, &self.failures),
            guest.call_event(&mut self.store, conn, event.as_str()),
        )
        .await
    }

    /// The last call: `disconnect` (skipped when an earlier call failed,
    /// since the instance is unusable), then leave every group the
    /// connection joined.
    pub async fn disconnect(mut self, code: u16) {
        if !self.failed {
            self.arm();
            let conn = self.borrow();
            let guest = &self.guest;
            let result = Self::guarded(
                &self.plugin,
                "disconnect",
                self.call_timeout,
                (&mut self.failed, &self.failures),
                guest.call_disconnect(&mut self.store, conn, code),
            )
            .await;
            if let Err(err) = result {
                tracing::warn!(connection = self.connection_id(), "{err}");
            }
        }
        self.leave_groups().await;
    }

    /// Ask the guest for this connection's state (`migration.snapshot`).
    /// `None` when the plugin does not export `migration`.
    pub(crate) async fn snapshot(&mut self) -> Option<Result<Vec<u8>, GuestError>> {
        let migration = self.migration.as_ref()?;
        Self::arm_store(&mut self.store, self.call_timeout);
        let conn = Resource::new_borrow(self.connection.rep());
        Some(
            Self::guarded(
                &self.plugin,
                "snapshot",
                self.call_timeout,
                (&mut self.failed, &self.failures),
                migration.call_snapshot(&mut self.store, conn),
            )
            .await,
        )
    }

    /// Hand the guest a previous version's state (`migration.restore`).
    pub(crate) async fn restore(
        &mut self,
        state: Vec<u8>,
    ) -> Result<Result<(), String>, GuestError> {
        let Some(migration) = self.migration.as_ref() else {
            return Ok(Err("this version does not export `migration`".to_owned()));
        };
        Self::arm_store(&mut self.store, self.call_timeout);
        let conn = Resource::new_borrow(self.connection.rep());
        Self::guarded(
            &self.plugin,
            "restore",
            self.call_timeout,
            (&mut self.failed, &self.failures),
            migration.call_restore(&mut self.store, conn, &state),
        )
        .await
    }

    async fn leave_groups(&mut self) {
        let (channel, groups) = {
            let conn = self.conn();
            (Arc::clone(&conn.channel_name), conn.groups.clone())
        };
        for group in groups {
            if let Err(err) = self.layer.group_discard(&group, &channel).await {
                tracing::warn!(
                    plugin = %self.plugin,
                    group,
                    channel = %channel,
                    error = %err,
                    "could not leave group on close"
                );
            }
        }
    }
}
