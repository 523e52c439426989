//! The host's metrics hook and its own event counts.
//!
//! The host keeps no metrics registry. A server that wants guest call
//! timings passes a [`GuestMetrics`] in [`crate::HostOptions::metrics`]:
//! the host asks it once per consumer (one map lookup per connection) for
//! the plugin's [`CallObserver`], and tells that observer the duration of
//! every call into the guest (`connect`, `receive`, `event`, `disconnect`,
//! `snapshot`, `restore`). Without one, a call costs no clock reading.
//!
//! Plugin loads, load errors, hot swaps and migrations are rare, so the
//! host counts them itself ([`HostEvents`], read through
//! [`crate::PluginHost::events`]) for whoever reports them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where guest call timings go: one [`CallObserver`] per plugin name.
pub trait GuestMetrics: Send + Sync + fmt::Debug {
    /// The observer of `plugin`'s calls. Asked once per consumer, so it
    /// may look the plugin up in a map; the observer it returns is called
    /// on every guest call and should be cheap (atomics).
    fn plugin(&self, plugin: &str) -> Arc<dyn CallObserver>;
}

/// Told the duration of each guest call of one plugin.
pub trait CallObserver: Send + Sync + fmt::Debug {
    /// A call returned, trapped or ran past its deadline after `elapsed`.
    fn observe(&self, elapsed: Duration);
}

/// Plugin lifecycle events counted since the host was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostEvents {
    /// Plugin versions made live (first loads and replacements).
    pub loads: u64,
    /// Plugin files that failed to load.
    pub load_errors: u64,
    /// Versions that replaced a live version of the same plugin.
    pub swaps: u64,
    /// Connections moved to a newer version by a `migrate` swap.
    pub migrations: u64,
    /// Connections that could not be moved (they stayed on the old
    /// version, or closed with 1011 when the snapshot failed).
    pub failed_migrations: u64,
    /// Connections whose idle instance hibernated (`hibernate-after-secs`).
    pub hibernations: u64,
    /// Hibernated connections woken by a frame, an event or their close.
    pub wakes: u64,
    /// Hibernated connections that could not be woken (closed with 1011).
    pub failed_wakes: u64,
    /// Connections hibernated right now.
    pub hibernated: u64,
}

/// The live counters behind [`HostEvents`].
#[derive(Debug, Default)]
pub(crate) struct EventCounters {
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) swaps: AtomicU64,
    pub(crate) migrations: AtomicU64,
    pub(crate) failed_migrations: AtomicU64,
    pub(crate) hibernations: AtomicU64,
    pub(crate) wakes: AtomicU64,
    pub(crate) failed_wakes: AtomicU64,
    /// Shared with every hibernated consumer, which counts itself out when
    /// it wakes or closes.
    pub(crate) hibernated: Arc<AtomicU64>,
}

impl EventCounters {
    /// Add one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HostEvents {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        HostEvents {
            loads: get(&self.loads),
            load_errors: get(&self.load_errors),
            swaps: get(&self.swaps),
            migrations: get(&self.migrations),
            failed_migrations: get(&self.failed_migrations),
            hibernations: get(&self.hibernations),
            wakes: get(&self.wakes),
            failed_wakes: get(&self.failed_wakes),
            hibernated: get(&self.hibernated),
        }
    }
}
