//! [`LayerStats`]: counters of what a layer delivered and what it dropped.
//!
//! Channels drops events silently in three places (a full member in
//! `group_send`, an expired event, a send to a channel nobody reads); here each is
//! counted so an operator can see it.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a layer's counters, all since the layer was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// `send` and `group_send` calls that passed validation (one per call).
    pub sent: u64,
    /// `group_send` calls that passed validation (also counted in `sent`).
    pub group_sends: u64,
    /// Events put into a local inbox (one per receiving channel).
    pub delivered: u64,
    /// `send` calls refused with `ChannelFull`.
    pub channel_full: u64,
    /// Group members skipped by `group_send` because their channel was full.
    pub group_over_capacity: u64,
    /// Events dropped unread because they waited longer than the expiry.
    pub expired: u64,
    /// Events addressed to a channel with no local inbox (by `send` or as a group
    /// member).
    pub undeliverable: u64,
    /// Times a Redis `group_send` skipped a whole process inbox because it
    /// was full (its members are counted in `group_over_capacity`); a
    /// process that died without leaving its groups costs one per send
    /// until the live processes remove its members.
    pub full_inbox_skips: u64,
}

/// The live counters behind [`LayerStats`], shared by a layer and its inboxes.
///
/// Counters are independent and only read for reporting, so `Relaxed` suffices.
#[derive(Debug, Default)]
pub(crate) struct StatCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) group_sends: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) channel_full: AtomicU64,
    pub(crate) group_over_capacity: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) undeliverable: AtomicU64,
    pub(crate) full_inbox_skips: AtomicU64,
}

impl StatCounters {
    pub(crate) fn snapshot(&self) -> LayerStats {
        LayerStats {
            sent: self.sent.load(Ordering::Relaxed),
            group_sends: self.group_sends.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            channel_full: self.channel_full.load(Ordering::Relaxed),
            group_over_capacity: self.group_over_capacity.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            undeliverable: self.undeliverable.load(Ordering::Relaxed),
            full_inbox_skips: self.full_inbox_skips.load(Ordering::Relaxed),
        }
    }
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
