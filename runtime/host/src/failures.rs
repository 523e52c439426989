//! Guest failures counted per plugin: a plugin that keeps trapping or
//! running past its deadline is reported (a warning with the running count
//! on every failure, and [`crate::PluginHost::failures`] for an admin API).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One plugin's counters, shared by all its consumers.
#[derive(Debug, Default)]
pub(crate) struct FailureCounter {
    traps: AtomicU64,
    deadlines: AtomicU64,
    abandoned: AtomicU64,
}

impl FailureCounter {
    /// Count a trap; returns the plugin's total failures so far.
    pub(crate) fn trap(&self) -> u64 {
        self.count(&self.traps)
    }

    /// Count a call that ran past its deadline; returns the total so far.
    pub(crate) fn deadline(&self) -> u64 {
        self.count(&self.deadlines)
    }

    /// Count an instance found left in the middle of a call (its call's
    /// future was dropped); returns the total so far.
    pub(crate) fn abandoned(&self) -> u64 {
        self.count(&self.abandoned)
    }

    fn count(&self, counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed);
        self.traps.load(Ordering::Relaxed)
            + self.deadlines.load(Ordering::Relaxed)
            + self.abandoned.load(Ordering::Relaxed)
    }
}

/// What a plugin's consumers have failed with since the process started
/// (across versions of the same name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailures {
    /// The plugin's name.
    pub plugin: String,
    /// Traps: panics, `unreachable`, out-of-memory, bad host calls.
    pub traps: u64,
    /// Calls stopped at their deadline (epoch or tokio timeout).
    pub deadlines: u64,
    /// Instances found left in the middle of a call whose future was
    /// dropped, and so never entered again.
    pub abandoned: u64,
}

/// Counters by plugin name.
///
/// A std mutex guards only the map lookup when a consumer starts; the
/// counters themselves are atomics, never touched under the lock.
#[derive(Debug, Default)]
pub(crate) struct FailureBook {
    by_plugin: Mutex<HashMap<String, Arc<FailureCounter>>>,
}

impl FailureBook {
    /// The counter of `plugin`, created on first use.
    pub(crate) fn counter(&self, plugin: &str) -> Arc<FailureCounter> {
        let mut map = self
            .by_plugin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Looked up per HTTP request: no key allocation once it exists.
        if let Some(counter) = map.get(plugin) {
            return Arc::clone(counter);
        }
        Arc::clone(map.entry(plugin.to_owned()).or_default())
    }

    /// Every plugin that has failed at least once, by name.
    pub(crate) fn report(&self) -> Vec<PluginFailures> {
        let map = self
            .by_plugin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut report: Vec<PluginFailures> = map
            .iter()
            .map(|(plugin, counter)| PluginFailures {
                plugin: plugin.clone(),
                traps: counter.traps.load(Ordering::Relaxed),
                deadlines: counter.deadlines.load(Ordering::Relaxed),
                abandoned: counter.abandoned.load(Ordering::Relaxed),
            })
            .filter(|f| f.traps + f.deadlines + f.abandoned > 0)
            .collect();
        report.sort_by(|a, b| a.plugin.cmp(&b.plugin));
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_plugin_and_reports_only_failures() {
        let book = FailureBook::default();
        let spin = book.counter("spin");
        assert_eq!(spin.trap(), 1);
        assert_eq!(spin.deadline(), 2);
        assert_eq!(book.counter("spin").trap(), 3);
        assert_eq!(spin.abandoned(), 4);
        let _quiet = book.counter("echo");
        assert_eq!(
            book.report(),
            [PluginFailures {
                plugin: "spin".into(),
                traps: 2,
                deadlines: 1,
                abandoned: 1,
            }]
        );
    }
}
