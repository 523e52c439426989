//! A store and an instance of one plugin version: a connection's own, or
//! the one instance shared by every connection of a version whose manifest
//! says `instance = "shared"`.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedSemaphorePermit, watch};
use wasmtime::Store;
use wasmtime::component::{Resource, ResourceTableError};

use crate::connection::Connection;
use crate::failures::FailureCounter;
use crate::guest_exports::{ConsumerExports, MigrationExports};
use crate::state::ConsumerState;

/// A store and an instance of one plugin version, with its exports.
pub(crate) struct Instance {
    pub(crate) store: Store<ConsumerState>,
    pub(crate) guest: ConsumerExports,
    /// Present when the plugin exports `migration`.
    pub(crate) migration: Option<MigrationExports>,
    /// Set while a call runs, cleared when it returns. Still set when the
    /// instance is locked again means the last call's future was dropped
    /// halfway: wasmtime cannot enter such an instance again.
    pub(crate) in_call: bool,
}

/// One instance serving every connection of a plugin version whose manifest
/// says `instance = "shared"`: calls take turns on it. It holds the
/// version's instance slots for its life.
pub(crate) struct SharedInstance {
    pub(crate) instance: Mutex<Instance>,
    /// Handles of consumers dropped while the instance was busy, deleted
    /// from its connection table at the next call.
    pub(crate) orphans: std::sync::Mutex<Vec<u32>>,
    /// The version's instance slots, given back as soon as it breaks.
    permits: std::sync::Mutex<Option<[OwnedSemaphorePermit; 2]>>,
    /// Set once a call failed: the instance is never called again, every
    /// connection on it is told, and the version starts a new one for new
    /// connections.
    pub(crate) broke: watch::Sender<bool>,
    /// The plugin's failure counters, for a call abandoned halfway.
    pub(crate) failures: Arc<FailureCounter>,
}

impl SharedInstance {
    pub(crate) fn new(
        instance: Instance,
        permits: [OwnedSemaphorePermit; 2],
        failures: Arc<FailureCounter>,
    ) -> Self {
        Self {
            instance: Mutex::new(instance),
            orphans: std::sync::Mutex::new(Vec::new()),
            permits: std::sync::Mutex::new(Some(permits)),
            broke: watch::Sender::new(false),
            failures,
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        *self.broke.borrow()
    }

    /// Never call the instance again, tell its connections, and give its
    /// slots back at once for the fresh instance that replaces it.
    pub(crate) fn mark_broken(&self) {
        self.broke.send_replace(true);
        drop(
            self.permits
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }

    /// Add a connection to the instance's table.
    pub(crate) async fn attach(
        &self,
        connection: Connection,
    ) -> Result<Resource<Connection>, ResourceTableError> {
        let mut instance = self.instance.lock().await;
        instance.store.data_mut().host.connections.push(connection)
    }
}

impl std::fmt::Debug for SharedInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedInstance")
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}
