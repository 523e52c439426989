//! [`LayerError`]: everything a layer operation can refuse, and
//! [`LayerConfigError`]: why a layer could not be built.

use crate::capacity::InvalidCapacity;

/// Why a layer operation failed.
///
/// Names in these errors are the names the caller passed, cut to
/// [`MAX_NAME_LENGTH`](crate::names::MAX_NAME_LENGTH) characters plus `...` when
/// longer, so an oversized name cannot flood a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    /// The channel is at capacity (Channels' `ChannelFull`). Only `send` returns
    /// it; `group_send` skips full members instead.
    #[error("channel {channel:?} is full")]
    ChannelFull {
        /// The full channel.
        channel: String,
    },
    /// The channel name breaks Channels' rules (see [`crate::names`]).
    #[error("invalid channel name {name:?}: {reason}")]
    InvalidChannelName {
        /// The offending name.
        name: String,
        /// What exactly is wrong with it.
        reason: String,
    },
    /// The group name breaks Channels' rules (see [`crate::names`]).
    #[error("invalid group name {name:?}: {reason}")]
    InvalidGroupName {
        /// The offending name.
        name: String,
        /// What exactly is wrong with it.
        reason: String,
    },
    /// The event is not a JSON object with a string `"type"`, or is too large.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The layer cannot serve the request (a backend is down or refuses).
    #[error("channel layer unavailable: {0}")]
    Unavailable(String),
}

/// Why a layer could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum LayerConfigError {
    /// A channel capacity is out of range.
    #[error("invalid layer configuration: {0}")]
    Capacity(#[from] InvalidCapacity),
    /// The Redis layer was given no host.
    #[error("invalid Redis layer configuration: no hosts")]
    NoHosts,
    /// Both `hosts` and `cluster` were given: a layer is either sharded by
    /// channels_redis's hash or a Redis Cluster, not both.
    #[error("invalid Redis layer configuration: `hosts` and `cluster` are mutually exclusive")]
    HostsAndCluster,
    /// redis-rs cannot use a host's URL.
    #[error("invalid Redis URL {url}")]
    RedisUrl {
        /// The URL, its password redacted.
        url: String,
        /// What redis-rs said.
        #[source]
        source: redis::RedisError,
    },
}
