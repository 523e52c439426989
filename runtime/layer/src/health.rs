//! [`LayerHealth`]: whether a layer's background loops currently reach their
//! backend, for a readiness check.

/// The health of a layer's background work. The memory layer has none and is
/// always healthy; the Redis layer reports each shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerHealth {
    /// One entry per Redis host, in shard order (one for a whole Redis
    /// Cluster); empty for the memory layer.
    pub shards: Vec<ShardHealth>,
}

impl LayerHealth {
    /// True when no loop of any shard is failing now.
    pub fn is_healthy(&self) -> bool {
        self.shards.iter().all(ShardHealth::is_healthy)
    }
}

/// The health of one Redis host's loops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHealth {
    /// The host's URL, its password redacted.
    pub url: String,
    /// The loop that pops this process's inbox key (and re-adds memberships
    /// after a reconnect): while it fails, nothing sent to this process through
    /// this host arrives.
    pub receive: LoopHealth,
    /// The loop that refreshes memberships and removes those of dropped
    /// channels.
    pub refresh: LoopHealth,
    /// The loop that renews this process's heartbeat on this host and
    /// removes the members of dead Switchyard processes.
    pub heartbeat: LoopHealth,
    /// Switchyard processes (this one included) whose heartbeat this
    /// process last saw alive on this host.
    pub processes: usize,
}

impl ShardHealth {
    /// True when neither loop is failing now.
    pub fn is_healthy(&self) -> bool {
        !self.receive.failing && !self.refresh.failing && !self.heartbeat.failing
    }
}

/// The state of one background loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopHealth {
    /// Whether its last attempt failed (it is backing off to try again).
    pub failing: bool,
    /// Failed attempts in a row (0 once an attempt succeeds).
    pub failures: u64,
    /// Failed attempts since the layer started.
    pub total_failures: u64,
    /// The last error, kept after a recovery for the record.
    pub last_error: Option<String>,
}
