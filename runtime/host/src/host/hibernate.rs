//! Hibernation, the host's side: putting an idle connection's instance to
//! sleep ([`PluginHost::hibernate`]) and waking it before its next call
//! ([`PluginHost::wake`]). The consumer's side (what is kept, the restore)
//! is `consumer::hibernation`.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::ResourceTable;

use super::PluginHost;
use crate::consumer::{Consumer, GuestError};
use crate::metrics::EventCounters;
use crate::version::Version;

impl PluginHost {
    /// Snapshot `consumer`'s instance and drop it, keeping only the bytes:
    /// its store, instance and both instance slots go back. `Ok(false)`
    /// when it cannot hibernate ([`Consumer::hibernate_after`] is `None`);
    /// an error when `snapshot` trapped or ran past its deadline (close the
    /// connection with 1011, as after any failed call).
    pub async fn hibernate(&self, consumer: &mut Consumer) -> Result<bool, GuestError> {
        let slept = consumer.hibernate(&self.events.hibernated).await?;
        if slept {
            EventCounters::bump(&self.events.hibernations);
            tracing::debug!(
                plugin = consumer.plugin(),
                connection = consumer.connection_id(),
                "connection hibernated"
            );
        }
        Ok(slept)
    }

    /// Wake a hibernated `consumer` (does nothing to an awake one): take an
    /// instance slot (waiting up to the call timeout for one), instantiate
    /// its version (the one a `migrate` swap moved it to, if any), put the
    /// connection in the new instance's table and call `restore` with the
    /// snapshot. On an error the connection must close with 1011; the
    /// failure is counted (`failed_wakes`, and the plugin's traps or
    /// deadlines when `restore` failed).
    pub async fn wake(&self, consumer: &mut Consumer) -> Result<(), GuestError> {
        let Some(version) = consumer.dormant_version().map(Arc::clone) else {
            return Ok(());
        };
        let result = self.revive(consumer, &version).await;
        match &result {
            Ok(()) => {
                EventCounters::bump(&self.events.wakes);
                tracing::debug!(
                    plugin = consumer.plugin(),
                    connection = consumer.connection_id(),
                    "connection woke"
                );
            }
            Err(err) => {
                EventCounters::bump(&self.events.failed_wakes);
                tracing::warn!(
                    plugin = consumer.plugin(),
                    connection = consumer.connection_id(),
                    "could not wake the hibernated connection: {err}"
                );
            }
        }
        result
    }

    /// [`PluginHost::wake`], uncounted.
    async fn revive(
        &self,
        consumer: &mut Consumer,
        version: &Arc<Version>,
    ) -> Result<(), GuestError> {
        let failed = |reason: String| GuestError::Wake {
            plugin: version.artifact().name_arc(),
            reason,
        };
        let permits = self.wait_for_slots(version).await.map_err(failed)?;
        let connection = consumer
            .dormant_connection()
            .ok_or_else(|| failed("the consumer is not hibernated".to_owned()))?;
        let id = connection.id;
        let mut connections = ResourceTable::new();
        let handle = connections
            .push(connection)
            .map_err(|err| failed(err.to_string()))?;
        let instance = self
            .new_instance(version, connections, id)
            .await
            .map_err(|err| failed(format!("instantiating version {}: {err}", version.hash())))?;
        consumer.revive(instance, &handle, permits).await
    }

    /// An instance slot of the server and one of `version`, waiting up to
    /// the version's call timeout for them: a wake is a call the client
    /// already made, so it waits a little rather than fail at once when
    /// every slot is briefly taken.
    async fn wait_for_slots(&self, version: &Version) -> Result<[OwnedSemaphorePermit; 2], String> {
        let timeout = version.limits().call_timeout;
        let slots = async {
            let server = Arc::clone(&self.instances).acquire_owned().await;
            let own = Arc::clone(&version.slots).acquire_owned().await;
            match (server, own) {
                (Ok(server), Ok(own)) => Some([server, own]),
                _ => None,
            }
        };
        match tokio::time::timeout(timeout, slots).await {
            Ok(Some(permits)) => Ok(permits),
            Ok(None) => Err("the instance slots were closed".to_owned()),
            Err(_elapsed) => Err(format!(
                "no instance slot came free within {timeout:?} (guest.max-instances or the plugin's limits.max-instances)"
            )),
        }
    }
}
