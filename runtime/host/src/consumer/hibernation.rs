//! Hibernation, the consumer's side: an idle connection's own instance is
//! snapshotted through the `migration` exports and dropped, with its store
//! and its instance slots; only the snapshot's bytes and the connection (id,
//! channel name, groups, outbound queue) stay. Waking puts a fresh instance
//! of the same version (or of the version a `migrate` swap moved the
//! connection to meanwhile) in its place and hands it the bytes through
//! `restore`; the host's side is `PluginHost::wake`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::Resource;

use super::{Backing, Consumer, GuestError};
use crate::connection::{Connection, Handshake};
use crate::engine::epoch_ticks;
use crate::instance::Instance;
use crate::version::Version;

/// What a hibernated consumer keeps.
pub(crate) struct Dormant {
    /// What `migration.snapshot` returned.
    state: Vec<u8>,
    /// The connection, taken out of the dropped instance's table.
    pub(crate) connection: Connection,
    /// Counts the consumer as hibernated while it lives.
    _gauge: HibernatedGauge,
}

/// Counts one hibernated connection in the host's gauge for as long as it
/// lives (it is dropped on waking and with a consumer that closes asleep).
#[derive(Debug)]
struct HibernatedGauge(Arc<AtomicU64>);

impl HibernatedGauge {
    fn new(gauge: &Arc<AtomicU64>) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(gauge))
    }
}

impl Drop for HibernatedGauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Consumer {
    /// Whether the instance hibernated (it is woken by
    /// [`crate::PluginHost::wake`] before the next call).
    pub fn is_hibernated(&self) -> bool {
        matches!(self.backing, Backing::Dormant(_))
    }

    /// How long the connection may idle before its instance hibernates:
    /// the version's `hibernate-after-secs` when it can (its own instance,
    /// the `migration` exports, no failed call, accepted and open), else
    /// `None`.
    pub fn hibernate_after(&self) -> Option<Duration> {
        let open = !self.meta.failed
            && self.meta.status == super::ConnectionStatus::Open
            && matches!(self.meta.handshake, Handshake::Accepted { .. });
        match &self.backing {
            Backing::Own { .. } if open => self.meta.version.artifact().hibernate_after(),
            _ => None,
        }
    }

    /// The version a hibernated consumer wakes into.
    pub(crate) fn dormant_version(&self) -> Option<&Arc<Version>> {
        matches!(self.backing, Backing::Dormant(_)).then_some(&self.meta.version)
    }

    /// The connection a hibernated consumer keeps, to put in the table of
    /// the instance that wakes it.
    pub(crate) fn dormant_connection(&self) -> Option<Connection> {
        match &self.backing {
            Backing::Dormant(dormant) => Some(dormant.connection.successor()),
            _ => None,
        }
    }

    /// Snapshot the instance and drop it (store, instance and slots), keeping
    /// the bytes and the connection. `Ok(false)` when this consumer cannot
    /// hibernate (see [`Consumer::hibernate_after`]); an error when
    /// `snapshot` failed: the instance is unusable, the connection closes
    /// with 1011.
    pub(crate) async fn hibernate(&mut self, gauge: &Arc<AtomicU64>) -> Result<bool, GuestError> {
        if self.hibernate_after().is_none() {
            return Ok(false);
        }
        let mut state = match self.snapshot().await {
            None => return Ok(false),
            Some(result) => result?,
        };
        let Backing::Own { instance, .. } = &mut self.backing else {
            return Ok(false);
        };
        let Ok(connection) = instance
            .store
            .data_mut()
            .host
            .connections
            .delete(Resource::<Connection>::new_own(self.meta.handle))
        else {
            return Ok(false);
        };
        state.shrink_to_fit();
        // Drops the instance, its store and its two slots.
        self.backing = Backing::Dormant(Box::new(Dormant {
            state,
            connection,
            _gauge: HibernatedGauge::new(gauge),
        }));
        Ok(true)
    }

    /// Put `instance` (whose table holds the connection at `handle`) in
    /// place of the hibernated one and hand it the snapshot through
    /// `restore`. A refusal or a failed `restore` leaves the consumer
    /// failed: the connection closes with 1011.
    pub(crate) async fn revive(
        &mut self,
        instance: Instance,
        handle: &Resource<Connection>,
        permits: [OwnedSemaphorePermit; 2],
    ) -> Result<(), GuestError> {
        let Backing::Dormant(dormant) = std::mem::replace(
            &mut self.backing,
            Backing::Own {
                instance: Box::new(instance),
                _permits: permits,
            },
        ) else {
            unreachable!("revive is only called on a hibernated consumer");
        };
        self.meta.handle = handle.rep();
        let Dormant { state, .. } = *dormant;
        match self.restore(state).await? {
            Ok(()) => Ok(()),
            Err(reason) => {
                self.meta.failed = true;
                Err(GuestError::Wake {
                    plugin: Arc::clone(&self.meta.plugin),
                    reason: format!("`restore` refused the state: {reason}"),
                })
            }
        }
    }

    /// A `migrate` swap while hibernated: the consumer will wake into
    /// `next` (restoring there the state the old version snapshotted),
    /// without waking now.
    pub(crate) fn rebase(&mut self, next: &Arc<Version>) {
        let meta = &mut self.meta;
        meta.version.closed();
        next.opened();
        meta.version = Arc::clone(next);
        meta.retirement = Some(next.watch_retirement());
        meta.call_timeout = next.limits().call_timeout;
        meta.call_ticks = epoch_ticks(meta.call_timeout);
    }
}
