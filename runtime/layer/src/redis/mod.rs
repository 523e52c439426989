//! The Redis channel layer: a peer of channels_redis's `RedisChannelLayer` 4.x
//! on the same Redis, byte for byte (see `docs/channels_redis_wire.md`).
//!
//! - Keys: `<prefix><channel>` for normal channels, `<prefix>specific.<client
//!   prefix>!` for a process's shared inbox, `<prefix>:group:<group>` for groups;
//!   zsets scored by Unix time, as channels_redis writes them.
//! - Entries: a random prefix, then a msgpack map (Fernet-encrypted when keys
//!   are set); routing in `__asgi_channel__` (a str for `send`, a list for
//!   `group_send`). [`wire`] documents how JSON events map to msgpack, including
//!   bytes as `{"__bytes__": "<base64>"}`.
//! - Shards: several hosts are picked by channels_redis's CRC-32 hash. A direct
//!   send goes to `hash(non_local_name)`, where the receiver reads, and each
//!   process polls its inbox on *every* shard, so direct sends are received from
//!   Switchyard and from Python (whose `send` hashes the full name:
//!   channels_redis#221).
//! - Efficiency: one blocking-pop loop per shard per process, draining a backlog
//!   with batched `ZPOPMIN`; a `group_send` reads the member names once, delivers
//!   to this process's members directly, and writes one entry per other process
//!   inbox with one script per shard, so its Redis writes and the receivers' pops
//!   grow with the number of processes, not members.
//! - Ordering: this process's scores strictly increase, so one sender's messages
//!   pop in order at every receiver; a sender's messages to local members are
//!   always delivered directly, and to remote members always through Redis, so
//!   each (sender, receiver) pair sees one path in order.
//! - Faults: Redis may be down at start or restart at any time. Operations then
//!   fail as [`LayerError::Unavailable`](crate::LayerError::Unavailable) (within
//!   5 s); every background loop retries every failure (a lost connection, a
//!   refused command such as NOAUTH, READONLY or WRONGTYPE) after a jittered
//!   exponential backoff, logs once per change of state with a running count,
//!   and reports its state in [`ChannelLayer::health`](crate::ChannelLayer::health).
//!   After a reconnect (of any connection) this process re-adds its group
//!   memberships; memberships are refreshed every half group expiry, and a
//!   dropped inbox's channel leaves its groups (its `ZREM`s queued, bounded,
//!   while Redis is away). A malformed entry is logged and skipped; a group
//!   member that is not UTF-8 or a full process inbox is skipped, counted
//!   and logged as a summary at most every 10 s (`summary`).
//! - Lost data and dead processes (`heartbeat`): every process keeps a
//!   heartbeat key per host, and the live ones remove the members of dead
//!   Switchyard processes (never of Django ones). A group send delivers to
//!   this process's members from its own membership map, re-adds those the
//!   group key lacks, and after Redis lost its data (a restart, a flush)
//!   waits until every live process has re-added its members, or fails as
//!   `Unavailable`.
//!
//! - Sentinel: a host entry may name a master through Redis Sentinel
//!   (`endpoint`); the receive loop asks the sentinels again at every
//!   reconnect, so a failover is a reconnect to the new master followed by
//!   the usual re-add of memberships. With `wait_for_replicas`, a write
//!   returns `Ok` only once replicas confirmed it (`WAIT`).
//!
//! - Redis Cluster (`cluster` seeds instead of `hosts`): Switchyard's own
//!   mode, which channels_redis cannot share; operations split by slot
//!   where the single-host layer runs one script (see `cluster`).
//!
//! Modules: [`config`] ([`RedisConfig`]), [`hosts`] ([`HostEntry`], the
//! forms of `hosts`), `endpoint` (a shard's server, direct or via Sentinel),
//! `cluster` (the connection to a host or a cluster, and the cluster's split
//! writes), [`wire`] (entry encoding), `shard`
//! (the consistent hash), `scripts` (Lua), `retry` (backoff and loop health),
//! `summary` (counted, rate-limited log lines), `heartbeat` (liveness and the
//! purge of dead processes), `layer` ([`RedisLayer`]).

mod cluster;
pub mod config;
#[cfg(test)]
mod count_events;
mod endpoint;
mod heartbeat;
pub mod hosts;
mod layer;
mod retry;
mod scripts;
mod shard;
mod summary;
pub mod wire;

pub use config::RedisConfig;
pub use hosts::HostEntry;
pub use layer::RedisLayer;
