//! A consumer serving one connection: its own store and instance (the
//! default, Channels semantics) or its turn on an instance shared by every
//! connection of the plugin version (`instance = "shared"`), and the calls
//! into it, each bounded by an epoch deadline and a tokio timeout. An own
//! instance may hibernate while its connection idles (`hibernation`).

mod hibernation;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use switchyard_layer::{ChannelLayer, Event};
use tokio::sync::{MutexGuard, OwnedSemaphorePermit, watch};
use wasmtime::component::Resource;

use crate::bindings::Frame;
use crate::call_deadline;
use crate::connection::{Connection, Handshake, OutboundOverflow};
use crate::engine::{EpochClock, epoch_ticks};
use crate::failures::FailureCounter;
use crate::instance::{Instance, SharedInstance};
use crate::metrics::CallObserver;
use crate::scope::ScopeInfo;
use crate::version::{Retired, Retirement, Version};

use hibernation::Dormant;

/// A frame received from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InFrame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// How a call into the guest failed. The instance is unusable afterwards:
/// the server closes the connection with 1011.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The guest trapped (or a host function trapped it).
    #[error("plugin `{plugin}` trapped in `{call}`: {source:?}")]
    Trap {
        /// The plugin's name.
        plugin: Arc<str>,
        /// The export that was called.
        call: &'static str,
        /// The trap, with the guest's backtrace.
        source: wasmtime::Error,
    },
    /// The call ran past its deadline (the epoch or the tokio timeout).
    #[error("plugin `{plugin}` ran past its {timeout:?} deadline in `{call}`")]
    Deadline {
        /// The plugin's name.
        plugin: Arc<str>,
        /// The export that was called.
        call: &'static str,
        /// The deadline it ran past.
        timeout: Duration,
    },
    /// The shared instance failed in another connection's call.
    #[error(
        "plugin `{plugin}`'s shared instance failed in another connection's call; cannot `{call}`"
    )]
    Broken {
        /// The plugin's name.
        plugin: Arc<str>,
        /// The export that could not be called.
        call: &'static str,
    },
    /// The previous call into this instance was dropped before it returned
    /// (its future was cancelled), so the instance cannot be entered again.
    #[error("plugin `{plugin}`'s instance was left in the middle of a call; cannot `{call}`")]
    Abandoned {
        /// The plugin's name.
        plugin: Arc<str>,
        /// The export that could not be called.
        call: &'static str,
    },
    /// The instance hibernated and was not woken before this call (a host
    /// bug: the server wakes a hibernated consumer before every call).
    #[error("plugin `{plugin}`'s instance is hibernating; cannot `{call}`")]
    Hibernated {
        /// The plugin's name.
        plugin: Arc<str>,
        /// The export that could not be called.
        call: &'static str,
    },
    /// A hibernated instance could not be woken: no instance slot came
    /// free in time, the version could not be instantiated, or its
    /// `restore` refused the state it snapshotted.
    #[error("plugin `{plugin}` could not wake its hibernated instance: {reason}")]
    Wake {
        /// The plugin's name.
        plugin: Arc<str>,
        /// What failed.
        reason: String,
    },
}

/// The state of the connection after a call, as the plugin left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Still open.
    Open,
    /// The plugin called `close`.
    Closed,
    /// The outbound queue overflowed (slow reader) or the socket is gone.
    Overflowed(OutboundOverflow),
}

/// What a consumer's calls report to: the plugin's failure counters, and
/// the epoch clock that ticks while a call runs.
#[derive(Debug)]
pub(crate) struct CallBook {
    pub(crate) failures: Arc<FailureCounter>,
    pub(crate) clock: EpochClock,
    /// Told each call's duration, when the server collects metrics.
    pub(crate) observer: Option<Arc<dyn CallObserver>>,
}

/// Where a consumer's instance lives.
enum Backing {
    /// Its own (`instance = "per-connection"`, Channels semantics); holds
    /// the instance slots.
    Own {
        instance: Box<Instance>,
        _permits: [OwnedSemaphorePermit; 2],
    },
    /// Shared with the version's other connections.
    Shared(Arc<SharedInstance>),
    /// Hibernated: the instance is gone, only its snapshot and the
    /// connection are kept until the next frame or event wakes it.
    Dormant(Box<Dormant>),
}

/// The instance, locked for one call.
enum Locked<'a> {
    Own(&'a mut Instance),
    Shared(MutexGuard<'a, Instance>, &'a SharedInstance),
}

impl Locked<'_> {
    fn instance(&mut self) -> &mut Instance {
        match self {
            Self::Own(instance) => instance,
            Self::Shared(guard, _) => guard,
        }
    }

    /// Whether this is a shared instance that broke.
    fn is_broken(&self) -> bool {
        matches!(self, Self::Shared(_, shared) if shared.is_broken())
    }

    /// A call failed: a shared instance is not called again, and its slots
    /// go back at once for the fresh instance that replaces it.
    fn mark_broken(&self) {
        if let Self::Shared(_, shared) = self {
            shared.mark_broken();
        }
    }
}

impl Drop for Locked<'_> {
    /// A shared instance unlocked in the middle of a call (the call's
    /// future was dropped) is broken now, before the next connection takes
    /// its turn on it: its connections close with 1011 and new ones get a
    /// fresh instance. An own instance keeps the mark, and its next call
    /// fails ([`GuestError::Abandoned`]).
    fn drop(&mut self) {
        if let Self::Shared(guard, shared) = self
            && guard.in_call
            && !shared.is_broken()
        {
            let total = shared.failures.abandoned();
            tracing::warn!(
                plugin = %guard.store.data().host.plugin,
                failures = total,
                "a call into the shared instance was abandoned halfway; replacing the instance"
            );
            shared.mark_broken();
        }
    }
}

impl Backing {
    /// The instance for one call; `None` when a shared instance broke in
    /// another connection's call.
    async fn lock(&mut self) -> Option<Locked<'_>> {
        let locked = self.lock_even_broken().await?;
        // Checked with the lock held: the call before ours may have broken it.
        (!locked.is_broken()).then_some(locked)
    }

    /// The instance, to read or tidy its connection table (not to call it);
    /// `None` while it hibernates.
    async fn lock_even_broken(&mut self) -> Option<Locked<'_>> {
        match self {
            Self::Dormant(_) => None,
            Self::Own { instance, .. } => Some(Locked::Own(instance)),
            Self::Shared(shared) => {
                let mut guard = shared.instance.lock().await;
                let orphans = std::mem::take(
                    &mut *shared
                        .orphans
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                for rep in orphans {
                    let _ = guard
                        .store
                        .data_mut()
                        .host
                        .connections
                        .delete(Resource::<Connection>::new_own(rep));
                }
                Some(Locked::Shared(guard, shared))
            }
        }
    }
}

/// A live consumer bound to one connection: its own instance, or its turn
/// on a shared one.
pub struct Consumer {
    backing: Backing,
    meta: Meta,
}

/// Everything about a consumer but its instance, so a call can hold the
/// instance and update these.
struct Meta {
    /// The handle (rep) of the connection's `connection` resource in the
    /// instance's table.
    handle: u32,
    /// The connection's id, unique in this process.
    id: u64,
    channel_name: Arc<str>,
    /// The handshake and the connection's state as the last call left them.
    handshake: Handshake,
    status: ConnectionStatus,
    /// The plugin's name, for errors and logs.
    plugin: Arc<str>,
    /// The version this instance runs; counts it as open while alive.
    version: Arc<Version>,
    /// Tells when a newer version retires this one; `None` once handed out
    /// by [`Consumer::retirement`].
    retirement: Option<watch::Receiver<Retirement>>,
    layer: Arc<dyn ChannelLayer>,
    call_timeout: Duration,
    /// `call_timeout` in epoch ticks.
    call_ticks: u64,
    /// The plugin's failure counters.
    failures: Arc<FailureCounter>,
    /// Ticks while any guest call runs.
    clock: EpochClock,
    /// Told each call's duration, when the server collects metrics.
    observer: Option<Arc<dyn CallObserver>>,
    /// Set once a call failed; the instance is never called again.
    failed: bool,
    /// Whether the connection's entry was deleted from a shared instance.
    detached: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("plugin", &self.meta.plugin)
            .field("version", &self.meta.version.hash())
            .field("shared", &matches!(self.backing, Backing::Shared(_)))
            .field("failed", &self.meta.failed)
            .finish_non_exhaustive()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.meta.version.closed();
        if let Backing::Shared(shared) = &self.backing
            && !self.meta.detached
        {
            // Normally `disconnect` deletes the entry; a consumer dropped
            // without it (a failed start) leaves it for the next call.
            shared
                .orphans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(self.meta.handle);
        }
    }
}

impl Consumer {
    /// A consumer with its own instance.
    pub(crate) fn new(
        instance: Instance,
        handle: &Resource<Connection>,
        version: Arc<Version>,
        calls: CallBook,
        permits: [OwnedSemaphorePermit; 2],
    ) -> Self {
        let (id, channel_name) = {
            let conn = instance
                .store
                .data()
                .host
                .connections
                .get(handle)
                .expect("connection resource pushed before the consumer");
            (conn.id, Arc::clone(&conn.channel_name))
        };
        let layer = Arc::clone(&instance.store.data().host.layer);
        let meta = Meta::new(handle.rep(), id, channel_name, layer, version, calls);
        Self {
            backing: Backing::Own {
                instance: Box::new(instance),
                _permits: permits,
            },
            meta,
        }
    }

    /// A consumer taking turns on `shared`, where `handle` is attached.
    pub(crate) fn shared(
        shared: Arc<SharedInstance>,
        handle: &Resource<Connection>,
        (id, channel_name): (u64, Arc<str>),
        layer: Arc<dyn ChannelLayer>,
        version: Arc<Version>,
        calls: CallBook,
    ) -> Self {
        let meta = Meta::new(handle.rep(), id, channel_name, layer, version, calls);
        Self {
            backing: Backing::Shared(shared),
            meta,
        }
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        &self.meta.plugin
    }

    /// The plugin version this instance runs.
    pub(crate) fn version(&self) -> &Arc<Version> {
        &self.meta.version
    }

    /// Resolves when a newer version retired this one with `restart` or
    /// `migrate` (never for `drain`: the connection just carries on), or
    /// with [`Retired::Broken`] when the shared instance it runs on
    /// failed in another connection's call. The future owns its watches, so
    /// it can be kept across loop iterations and polled cheaply; it is
    /// handed out once per consumer (later calls get a future that never
    /// resolves). After a migration, ask the successor.
    pub fn retirement(&mut self) -> Pin<Box<dyn Future<Output = Retired> + Send + 'static>> {
        let version = self.meta.retirement.take();
        let broke = match &self.backing {
            Backing::Shared(shared) if version.is_some() => Some(shared.broke.subscribe()),
            _ => None,
        };
        Box::pin(async move {
            let retired = async move {
                let Some(mut watch) = version else {
                    return std::future::pending().await;
                };
                loop {
                    match &*watch.borrow_and_update() {
                        Retirement::Restart => return Retired::Restart,
                        Retirement::Migrate(next) => return Retired::Migrate(Arc::clone(next)),
                        Retirement::Live | Retirement::Drain => {}
                    }
                    if watch.changed().await.is_err() {
                        // The version is gone without a retirement: nothing
                        // will ever come.
                        return std::future::pending().await;
                    }
                }
            };
            let broken = async move {
                if let Some(mut broke) = broke
                    && broke.wait_for(|broke| *broke).await.is_ok()
                {
                    return Retired::Broken;
                }
                std::future::pending().await
            };
            tokio::select! {
                retirement = retired => retirement,
                broken = broken => broken,
            }
        })
    }

    /// The connection's id (unique in this process).
    pub fn connection_id(&self) -> u64 {
        self.meta.id
    }

    /// The connection's state as the last call left it.
    pub fn status(&self) -> ConnectionStatus {
        self.meta.status
    }

    /// Call `connect`; returns the plugin's answer to the handshake. A plugin
    /// that neither accepts nor closes is taken to reject (HTTP 403).
    pub(crate) async fn connect(&mut self, scope: ScopeInfo) -> Result<Handshake, GuestError> {
        let Self { backing, meta } = self;
        let mut locked = meta.lock(backing, "connect").await?;
        let Instance { store, guest, .. } = locked.instance();
        let conn = meta.borrow();
        let result = meta
            .guarded("connect", guest.call_connect(&mut *store, conn, scope))
            .await;
        meta.settle(&mut locked, result)?;
        if meta.handshake == Handshake::Pending {
            tracing::warn!(
                plugin = %meta.plugin,
                connection = meta.id,
                "connect returned without accept or close; rejecting with 403"
            );
            return Ok(Handshake::Rejected {
                code: 1006,
                reason: None,
            });
        }
        Ok(meta.handshake.clone())
    }

    /// Deliver a client frame.
    ///
    /// # Memory
    /// `receive` and [`event`](Self::event) box the call (the instance's
    /// lock, wasmtime's call and its deadline: about 1.7 KiB) for the
    /// call's length. A socket's task awaits them, so unboxed they would
    /// sit in the task for the socket's whole life, awake or hibernated,
    /// to save one allocation per call.
    pub async fn receive(&mut self, frame: InFrame) -> Result<(), GuestError> {
        Box::pin(self.call_receive(frame)).await
    }

    async fn call_receive(&mut self, frame: InFrame) -> Result<(), GuestError> {
        let Self { backing, meta } = self;
        let mut locked = meta.lock(backing, "receive").await?;
        let Instance { store, guest, .. } = locked.instance();
        let conn = meta.borrow();
        let frame = match frame {
            InFrame::Text(text) => Frame::Text(text),
            InFrame::Binary(bytes) => Frame::Binary(bytes),
        };
        let result = meta
            .guarded("receive", guest.call_receive(&mut *store, conn, frame))
            .await;
        meta.settle(&mut locked, result)
    }

    /// Deliver a channel-layer event (boxed, as [`receive`](Self::receive)
    /// says).
    pub async fn event(&mut self, event: &Event) -> Result<(), GuestError> {
        Box::pin(self.call_event(event)).await
    }

    async fn call_event(&mut self, event: &Event) -> Result<(), GuestError> {
        let Self { backing, meta } = self;
        let mut locked = meta.lock(backing, "event").await?;
        let Instance { store, guest, .. } = locked.instance();
        let conn = meta.borrow();
        let result = meta
            .guarded("event", guest.call_event(&mut *store, conn, event.as_str()))
            .await;
        meta.settle(&mut locked, result)
    }

    /// The last call: `disconnect` (skipped when an earlier call failed,
    /// since the instance is unusable), then leave every group the
    /// connection joined.
    pub async fn disconnect(mut self, code: u16) {
        let groups = {
            let Self { backing, meta } = &mut self;
            if let Backing::Dormant(dormant) = backing {
                // Not woken (the server wakes it first; this one could not
                // be): no guest call, but the groups are still left.
                let groups = dormant.connection.groups.iter().cloned().collect();
                meta.leave_groups(groups).await;
                return;
            }
            let Some(mut locked) = backing.lock_even_broken().await else {
                return;
            };
            if !meta.failed && !locked.is_broken() && !locked.instance().in_call {
                meta.arm(locked.instance());
                let Instance { store, guest, .. } = locked.instance();
                let conn = meta.borrow();
                let result = meta
                    .guarded("disconnect", guest.call_disconnect(&mut *store, conn, code))
                    .await;
                if let Err(err) = meta.settle(&mut locked, result) {
                    tracing::warn!(connection = meta.id, "{err}");
                }
            }
            meta.detach(&mut locked)
        };
        self.meta.leave_groups(groups).await;
    }

    /// The connection as the instance of a newer version takes it over.
    pub(crate) async fn successor(&mut self) -> Option<Connection> {
        let Self { backing, meta } = self;
        let mut locked = backing.lock().await?;
        let table = &locked.instance().store.data().host.connections;
        let conn = table.get(&meta.borrow()).ok()?;
        Some(conn.successor())
    }

    /// Ask the guest for this connection's state (`migration.snapshot`).
    /// `None` when the plugin does not export `migration` (or the instance
    /// is shared: shared versions do not migrate).
    pub(crate) async fn snapshot(&mut self) -> Option<Result<Vec<u8>, GuestError>> {
        let Self { backing, meta } = self;
        let Backing::Own { instance, .. } = backing else {
            return None;
        };
        instance.migration.as_ref()?;
        if let Err(err) = meta.enter(instance, "snapshot") {
            return Some(Err(err));
        }
        let Instance {
            store, migration, ..
        } = &mut **instance;
        let migration = migration.as_ref()?;
        let conn = meta.borrow();
        let result = meta
            .guarded("snapshot", migration.call_snapshot(&mut *store, conn))
            .await;
        Some(meta.settle(&mut Locked::Own(instance), result))
    }

    /// Hand the guest a previous version's state (`migration.restore`).
    pub(crate) async fn restore(
        &mut self,
        state: Vec<u8>,
    ) -> Result<Result<(), String>, GuestError> {
        let Self { backing, meta } = self;
        let Backing::Own { instance, .. } = backing else {
            return Ok(Err("a shared instance does not migrate".to_owned()));
        };
        if instance.migration.is_none() {
            return Ok(Err("this version does not export `migration`".to_owned()));
        }
        meta.enter(instance, "restore")?;
        let Instance {
            store, migration, ..
        } = &mut **instance;
        let Some(migration) = migration.as_ref() else {
            return Ok(Err("this version does not export `migration`".to_owned()));
        };
        let conn = meta.borrow();
        let result = meta
            .guarded("restore", migration.call_restore(&mut *store, conn, &state))
            .await;
        meta.settle(&mut Locked::Own(instance), result)
    }
}

impl Meta {
    fn new(
        handle: u32,
        id: u64,
        channel_name: Arc<str>,
        layer: Arc<dyn ChannelLayer>,
        version: Arc<Version>,
        CallBook {
            failures,
            clock,
            observer,
        }: CallBook,
    ) -> Self {
        let call_timeout = version.limits().call_timeout;
        let plugin = version.artifact().name_arc();
        version.opened();
        let retirement = Some(version.watch_retirement());
        Self {
            handle,
            id,
            channel_name,
            handshake: Handshake::Pending,
            status: ConnectionStatus::Open,
            plugin,
            version,
            retirement,
            layer,
            call_timeout,
            call_ticks: epoch_ticks(call_timeout),
            failures,
            clock,
            observer,
            failed: false,
            detached: false,
        }
    }

    /// The instance for a call, or the error that ends the connection when
    /// a shared instance broke in another connection's call.
    async fn lock<'a>(
        &mut self,
        backing: &'a mut Backing,
        call: &'static str,
    ) -> Result<Locked<'a>, GuestError> {
        if matches!(backing, Backing::Dormant(_)) {
            return Err(GuestError::Hibernated {
                plugin: Arc::clone(&self.plugin),
                call,
            });
        }
        match backing.lock().await {
            Some(mut locked) => {
                self.enter(locked.instance(), call)?;
                Ok(locked)
            }
            None => {
                self.failed = true;
                Err(GuestError::Broken {
                    plugin: Arc::clone(&self.plugin),
                    call,
                })
            }
        }
    }

    /// Check that the instance is not stuck in an abandoned call, and arm
    /// it for `call`.
    fn enter(&mut self, instance: &mut Instance, call: &'static str) -> Result<(), GuestError> {
        if instance.in_call {
            self.failed = true;
            let total = self.failures.abandoned();
            tracing::warn!(
                plugin = %self.plugin,
                connection = self.id,
                failures = total,
                "the previous call into this instance was abandoned halfway; cannot `{call}`"
            );
            return Err(GuestError::Abandoned {
                plugin: Arc::clone(&self.plugin),
                call,
            });
        }
        self.arm(instance);
        Ok(())
    }

    fn borrow(&self) -> Resource<Connection> {
        Resource::new_borrow(self.handle)
    }

    /// Give the next call its ticks; the store's epoch callback yields at
    /// each tick and traps when they are spent. A shared instance's guest
    /// output is tagged with the connection it runs for.
    ///
    /// Marks the instance as in a call until [`Meta::settle`].
    fn arm(&self, instance: &mut Instance) {
        instance.in_call = true;
        let store = &mut instance.store;
        let state = store.data_mut();
        state.ticks_left = self.call_ticks;
        state
            .host
            .current_connection_id
            .store(self.id, std::sync::atomic::Ordering::Relaxed);
        crate::guest_output::set_span(&state.host.current_span);
        store.set_epoch_deadline(1);
    }

    /// Run one guest call under the epoch deadline and a tokio timeout.
    async fn guarded<R>(
        &mut self,
        call: &'static str,
        future: impl Future<Output = wasmtime::Result<R>>,
    ) -> Result<R, GuestError> {
        let plugin = &self.plugin;
        let timeout = self.call_timeout;
        let running = self.clock.running();
        let started = tokio::time::Instant::now();
        let finished = call_deadline::within(started + timeout, future).await;
        drop(running);
        if let Some(observer) = &self.observer {
            observer.observe(started.elapsed());
        }
        let outcome = match finished {
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
                        source: err,
                    }
                }
            }
            Err(call_deadline::Elapsed) => GuestError::Deadline {
                plugin: Arc::clone(plugin),
                call,
                timeout,
            },
        };
        self.failed = true;
        let total = match outcome {
            GuestError::Trap { .. } => self.failures.trap(),
            GuestError::Deadline { .. }
            | GuestError::Broken { .. }
            | GuestError::Abandoned { .. }
            | GuestError::Hibernated { .. }
            | GuestError::Wake { .. } => self.failures.deadline(),
        };
        tracing::warn!(
            plugin = %plugin,
            call,
            failures = total,
            "guest failure {total} of plugin `{plugin}` since start"
        );
        Err(outcome)
    }

    /// After a call: note what the plugin did to the connection, and mark a
    /// shared instance broken if the call failed.
    fn settle<R>(
        &mut self,
        locked: &mut Locked<'_>,
        result: Result<R, GuestError>,
    ) -> Result<R, GuestError> {
        locked.instance().in_call = false;
        if result.is_err() {
            locked.mark_broken();
        }
        let table = &locked.instance().store.data().host.connections;
        if let Ok(conn) = table.get(&self.borrow()) {
            self.handshake.clone_from(&conn.handshake);
            self.status = match (conn.overflow, conn.closed) {
                (Some(overflow), _) => ConnectionStatus::Overflowed(overflow),
                (None, true) => ConnectionStatus::Closed,
                (None, false) => ConnectionStatus::Open,
            };
        }
        result
    }

    /// The groups the connection joined; a shared instance's entry for it
    /// is deleted (an own instance's goes with its store).
    fn detach(&mut self, locked: &mut Locked<'_>) -> Vec<String> {
        let shared = matches!(locked, Locked::Shared(..));
        let table = &mut locked.instance().store.data_mut().host.connections;
        if shared {
            self.detached = true;
            table
                .delete(Resource::<Connection>::new_own(self.handle))
                .map(|conn| conn.groups.into_iter().collect())
                .unwrap_or_default()
        } else {
            table
                .get(&self.borrow())
                .map(|conn| conn.groups.iter().cloned().collect())
                .unwrap_or_default()
        }
    }

    async fn leave_groups(&self, groups: Vec<String>) {
        for group in groups {
            if let Err(err) = self.layer.group_discard(&group, &self.channel_name).await {
                tracing::warn!(
                    plugin = %self.plugin,
                    group,
                    channel = %self.channel_name,
                    error = %err,
                    "could not leave group on close"
                );
            }
        }
    }
}
