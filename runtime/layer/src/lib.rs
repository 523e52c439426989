//! Channel layers for Switchyard: how consumers reach each other.
//!
//! A channel layer carries events (JSON objects with a `"type"` key) to named
//! channels and to groups of channels, with the semantics of Django Channels'
//! layers: per-channel capacity with a `ChannelFull` error the sender sees,
//! message expiry, group membership expiry. Every connection owns one channel,
//! created by [`ChannelLayer::new_channel`] and read through its [`Inbox`].
//!
//! This crate knows nothing of wasm or HTTP; the plugin host depends on it, never the
//! other way round.
//!
//! Modules:
//! - [`names`]: Channels' channel and group name rules.
//! - [`event`]: [`Event`], a validated JSON event, cheap to clone for fan-out.
//! - [`frame`]: [`ReadyFrame`], a WebSocket frame an event carries for the
//!   host to write to its members' sockets (host-side broadcast).
//! - [`capacity`]: [`CapacityRules`], the default capacity plus per-pattern
//!   (`fnmatch` glob) capacities.
//! - [`memory`]: [`MemoryLayer`], the single-process layer (Channels'
//!   `InMemoryChannelLayer`).
//! - [`redis`]: [`RedisLayer`], the multi-process layer that speaks
//!   channels_redis's wire format, so Django processes share it.
//! - `inbox`: [`Inbox`], the receiving end of one channel.
//! - `local`: the registry of this process's channels; every layer delivers to
//!   local inboxes through it (the Redis layer too, for the entries it pops).
//! - `memberships`: group memberships indexed both ways, so a dropped
//!   inbox's channel leaves its groups.
//! - `stats`: [`LayerStats`], counters of what the layer delivered and dropped.
//! - `error`: [`LayerError`] and [`LayerConfigError`].
//! - `health`: [`LayerHealth`], whether a layer's background loops fail now.
//! - `glob`: the `fnmatch` matcher behind [`capacity`].
//! - `fuzzing` (feature `fuzzing` only): the Redis wire codec, exposed to the
//!   fuzz targets in `fuzz/`.

pub mod capacity;
mod error;
pub mod event;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod glob;
mod health;
mod inbox;
mod local;
mod memberships;
pub mod memory;
pub mod names;
pub mod queue;
pub mod redis;
mod stats;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use capacity::CapacityRules;
pub use error::{LayerConfigError, LayerError};
pub use event::Event;
pub use frame::{FRAME_KEY, ReadyFrame};
pub use health::{LayerHealth, LoopHealth, ShardHealth};
pub use inbox::Inbox;
pub use memory::MemoryLayer;
pub use redis::{HostEntry, RedisConfig, RedisLayer};
pub use stats::LayerStats;

/// Channels' layer options, with Channels' defaults.
///
/// The same options as `InMemoryChannelLayer` and `channels_redis`'s
/// `RedisChannelLayer`: `expiry`, `group_expiry`, `capacity`, `channel_capacity`.
#[derive(Debug, Clone)]
pub struct LayerConfig {
    /// How long an event may wait in a channel before it is dropped unread.
    pub expiry: Duration,
    /// How long a group membership lasts after its last `group_add`.
    pub group_expiry: Duration,
    /// Capacity of a channel that no `channel_capacity` pattern matches.
    pub capacity: usize,
    /// `fnmatch` glob pattern → capacity, matched against the full channel name;
    /// the first match wins (Channels' `channel_capacity`, in dict order).
    pub channel_capacity: Vec<(String, usize)>,
}

impl LayerConfig {
    /// Channels' default `expiry`: 60 s.
    pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);
    /// Channels' default `group_expiry`: 86400 s (one day).
    pub const DEFAULT_GROUP_EXPIRY: Duration = Duration::from_secs(86_400);
    /// Channels' default `capacity`: 100.
    pub const DEFAULT_CAPACITY: usize = 100;
}

impl Default for LayerConfig {
    fn default() -> Self {
        Self {
            expiry: Self::DEFAULT_EXPIRY,
            group_expiry: Self::DEFAULT_GROUP_EXPIRY,
            capacity: Self::DEFAULT_CAPACITY,
            channel_capacity: Vec::new(),
        }
    }
}

/// What a `group_send` did: members reached, and members skipped because their
/// channel was full. Members with no local inbox appear in neither count (they are
/// counted in [`LayerStats::undeliverable`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSendReport {
    /// Members whose inbox received the event.
    pub delivered: usize,
    /// Members skipped because their channel was at capacity.
    pub over_capacity: usize,
}

/// A channel layer, as Channels defines it (`send`, `new_channel`, and the
/// `groups` extension).
///
/// Events are addressed by name; a name is checked by the rules in [`names`]
/// before anything else happens, so an invalid name is always an error, never a
/// silent drop.
#[async_trait::async_trait]
pub trait ChannelLayer: Send + Sync + std::fmt::Debug + 'static {
    /// A new process-local channel (a `!` name, valid by Channels' rules) and the
    /// inbox that receives its events. Dropping the inbox removes the channel.
    fn new_channel(&self) -> Inbox;

    /// Channels' `send`.
    ///
    /// `Err(ChannelFull)` when the channel is at capacity. `Ok` when the event was
    /// delivered, and also when no local inbox has that name (counted in
    /// [`LayerStats::undeliverable`]), as Channels gives a sender no way to know
    /// whether anyone listens.
    async fn send(&self, channel: &str, event: Event) -> Result<(), LayerError>;

    /// Channels' `group_add`: joins `channel` to `group`, or refreshes the
    /// membership's join time if it is already a member.
    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError>;

    /// Channels' `group_discard`: removes `channel` from `group`; not being a
    /// member is not an error.
    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError>;

    /// Channels' `group_send`: never `ChannelFull`; members at capacity are skipped
    /// and counted in the report and in [`LayerStats::group_over_capacity`].
    async fn group_send(&self, group: &str, event: Event) -> Result<GroupSendReport, LayerError>;

    /// A snapshot of the layer's counters.
    fn stats(&self) -> LayerStats;

    /// Whether the layer's background work reaches its backend now, for a
    /// readiness check. The default (a layer with no background work) is
    /// healthy.
    fn health(&self) -> LayerHealth {
        LayerHealth::default()
    }
}

/// Locks a std mutex, ignoring poisoning.
///
/// The layer's mutexes guard plain maps, and no code panics halfway through
/// updating one, so a poisoned map is still consistent; refusing it would turn one
/// panicking task into a dead layer.
fn lock_unpoisoned<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
