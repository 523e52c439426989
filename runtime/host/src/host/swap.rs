//! Hot swap: a new version goes live by an atomic swap of the route table,
//! and the version it replaces (or a removed one) is retired, its open
//! connections following the `on-replace` policy.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{PluginHost, lock};
use crate::manifest::ReplacePolicy;
use crate::metrics::EventCounters;
use crate::plugin::{Artifact, PluginError};
use crate::version::{Retirement, Version};

impl PluginHost {
    /// Make a compiled plugin live as a new version, replacing the live
    /// version of the same name. The swap is atomic: new handshakes see the
    /// new table; open connections of the old version follow the new
    /// manifest's `on-replace` policy.
    pub(crate) fn install(&self, artifact: Arc<Artifact>) -> Result<(), PluginError> {
        let plugin = &Arc::new(Version::new(artifact));
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
        EventCounters::bump(&self.events.loads);
        if previous.is_some() {
            EventCounters::bump(&self.events.swaps);
        }
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
    pub(crate) fn remove(&self, name: &str) {
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

    fn retire(&self, old: Arc<Version>, how: Retirement) {
        tracing::info!(
            plugin = old.name(),
            version = old.hash(),
            open = old.open_connections(),
            policy = match &how {
                Retirement::Live | Retirement::Drain => "drain",
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
}
