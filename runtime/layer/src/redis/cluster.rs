//! Redis Cluster mode (`cluster` seed nodes instead of `hosts`), for
//! deployments where only Switchyard processes share the layer.
//!
//! channels_redis has no cluster support: it talks to each host with a plain
//! redis-py client (a key on another master answers `MOVED`), its group-send
//! Lua script and its expiry `MULTI` span the inbox keys of many processes,
//! which live in different slots (`CROSSSLOT`). So no Django process can
//! share a cluster layer; this mode is Switchyard's own.
//!
//! The connection is redis-rs's async cluster connection (slot routing,
//! `MOVED`/`ASK`, reconnects); the layer sees the whole cluster as one shard.
//! The keys and entries are those of the single-host layer (`<prefix><inbox>`,
//! `<prefix>:group:<group>`, msgpack entries), each in its own slot, so
//! groups and inboxes spread over the masters. The heartbeat keys move under
//! the hash tag `{<prefix>:switchyard}` (one slot, on one master) so the
//! heartbeat and purge scripts still run whole. What is split by slot, and
//! so loses the atomicity the single-host layer has:
//!
//! - `group_add`/`group_discard`: the group key and this process's group
//!   record are two writes (the record is best effort: a failed one is
//!   written again by the next heartbeat).
//! - `group_send`: one script per receiving process's inbox key instead of
//!   one per host; a failing master fails the send (`Unavailable`) after the
//!   inboxes on the other masters got the event.
//! - the re-add of memberships: one transaction per group, then the record
//!   and heartbeat key (written only once every group write succeeded).
//! - the purge of a dead process: its record is read in one script, its
//!   members removed group by group, then its record dropped only if its
//!   heartbeat key is still gone (a process back meanwhile is asked to
//!   re-add its memberships through the resync counter).
//!
//! `send`, the receive pops and the capacity check of each inbox key stay
//! single-key scripts, as atomic as on one host.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Script,
    Value,
};

use super::config::redact_url;
use super::endpoint::{Endpoint, ShardConnection, no_master};
use super::heartbeat::record_live;
use super::layer::{CONNECT_TIMEOUT, Inner, OP_TIMEOUT, RECEIVER_READ_TIMEOUT};
use crate::{LayerConfigError, LayerError};

/// The members of one group after the expiry prune (the single-host script
/// also checks the heartbeat key, which lives in another slot here).
///
/// KEYS[1] = group key; ARGV[1] = prune-before score.
const GROUP_MEMBERS: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// The registered processes, split into live ones and dead ones with the
/// groups their record lists. Every key here carries the heartbeat hash tag.
///
/// KEYS[1] = registry; ARGV = the tagged base (`{P:switchyard}`), this
/// process's inbox name. Returns `{{{dead inbox, {group, ...}}, ...}, {live
/// inbox, ...}}`.
const PURGE_FIND: &str = r"
local base = ARGV[1]
local dead = {}
local live = {}
for _, inbox in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if inbox == ARGV[2] or redis.call('EXISTS', base .. ':alive:' .. inbox) == 1 then
        table.insert(live, inbox)
    else
        table.insert(dead, {inbox, redis.call('SMEMBERS', base .. ':groups:' .. inbox)})
    end
end
return {dead, live}
";

/// Removes a dead process's members from one group: those whose name starts
/// with its inbox name.
///
/// KEYS[1] = group key; ARGV[1] = the dead process's inbox name. Returns the
/// number removed.
const PURGE_MEMBERS: &str = r"
local removed = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if string.sub(member, 1, #ARGV[1]) == ARGV[1] then
        redis.call('ZREM', KEYS[1], member)
        removed = removed + 1
    end
end
return removed
";

/// Forgets a purged process, unless its heartbeat key came back meanwhile.
///
/// KEYS = registry, its heartbeat key, its record; ARGV[1] = its inbox name.
/// Returns 1 when forgotten, 0 when it is alive again.
const PURGE_FORGET: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then
    return 0
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
";

static GROUP_MEMBERS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GROUP_MEMBERS));
static PURGE_FIND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PURGE_FIND));
static PURGE_MEMBERS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PURGE_MEMBERS));
static PURGE_FORGET_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PURGE_FORGET));

/// Where a shard's commands go: one Redis host, or a whole Redis Cluster.
// One per shard, built once and never moved on a hot path: the size
// difference between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Backend {
    /// One host (channels_redis's `hosts` entry): fixed, or the master the
    /// sentinels name.
    Host(Endpoint),
    /// A Redis Cluster: the client (for the receive loop's own connection,
    /// whose blocking pops must not hold up commands) and the shared command
    /// connection.
    Cluster {
        client: ClusterClient,
        commands: ClusterConnection,
    },
}

impl Backend {
    /// A cluster reached through `seeds`, and its name for logs and health
    /// (`cluster redis://a,redis://b`, passwords redacted). Connects lazily:
    /// the cluster need not be up yet.
    pub(super) fn cluster(seeds: &[String]) -> Result<(String, Self), LayerConfigError> {
        let redacted: Vec<String> = seeds.iter().map(|seed| redact_url(seed)).collect();
        let name = format!("cluster {}", redacted.join(","));
        let mut infos = Vec::with_capacity(seeds.len());
        for (seed, url) in seeds.iter().zip(&redacted) {
            let info = seed.as_str().into_connection_info().map_err(|source| {
                LayerConfigError::RedisUrl {
                    url: url.clone(),
                    source,
                }
            })?;
            infos.push(info);
        }
        let client = ClusterClientBuilder::new(infos)
            .retries(3)
            .min_retry_wait(20)
            .max_retry_wait(500)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(OP_TIMEOUT)
            .build()
            .map_err(|source| LayerConfigError::RedisUrl {
                url: name.clone(),
                source,
            })?;
        let config = ClusterConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT);
        let commands = client.get_pending_async_connection_with_config(config);
        Ok((name, Self::Cluster { client, commands }))
    }

    /// The shared connection for commands (cheap to clone).
    pub(super) fn commands(&self) -> Conn {
        match self {
            Self::Host(endpoint) => Conn::Host(endpoint.commands()),
            Self::Cluster { commands, .. } => Conn::Cluster(commands.clone()),
        }
    }

    /// For a Sentinel entry, asks the sentinels which server is master now
    /// and switches to it ([`Endpoint::refresh_master`]); nothing to do for
    /// a fixed host or a cluster.
    pub(super) async fn refresh_master(&self) -> Result<Option<String>, String> {
        match self {
            Self::Host(endpoint) => endpoint.refresh_master().await,
            Self::Cluster { .. } => Ok(None),
        }
    }

    /// Whether there is a server to connect to: false only for a Sentinel
    /// entry whose master no sentinel has named yet.
    pub(super) fn has_server(&self) -> bool {
        match self {
            Self::Host(endpoint) => endpoint.client().is_some(),
            Self::Cluster { .. } => true,
        }
    }

    /// A new connection of its own for the receive loop, with a read timeout
    /// above the blocking-pop timeout.
    pub(super) async fn receive_connection(&self) -> RedisResult<Conn> {
        match self {
            Self::Host(endpoint) => {
                let client = endpoint.client().ok_or_else(no_master)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RECEIVER_READ_TIMEOUT));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Multiplexed)
            }
            Self::Cluster { client, .. } => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RECEIVER_READ_TIMEOUT);
                client
                    .get_async_connection_with_config(config)
                    .await
                    .map(Conn::Cluster)
            }
        }
    }
}

/// A connection to a host or to a cluster; redis-rs routes a cluster
/// command by its first key.
#[derive(Clone)]
pub(super) enum Conn {
    /// The shared, reconnecting command connection to one host (none while
    /// a Sentinel entry has no master).
    Host(ShardConnection),
    /// The receive loop's own connection to one host.
    Multiplexed(MultiplexedConnection),
    /// A connection to a Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Host(conn) => conn.req_packed_command(cmd),
            Self::Multiplexed(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Host(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Multiplexed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Host(conn) => conn.get_db(),
            Self::Multiplexed(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The shard index of the cluster: it is the layer's only shard.
const SHARD: usize = 0;

impl Inner {
    /// Writes this process's group record (`record`, a transaction on the
    /// heartbeat slot) after a cluster `group_add`. A failure is logged and
    /// left to the next heartbeat, which re-adds the memberships and the
    /// record: the membership itself is in.
    pub(super) async fn write_record(&self, conn: &mut Conn, record: &Pipeline) {
        if let Err(error) = self
            .run(SHARD, "recording the group", record.query_async::<()>(conn))
            .await
        {
            self.record_owed.store(true, Ordering::Relaxed);
            tracing::warn!(%error,
                "could not record a group membership for the purge of dead processes; \
                 the heartbeat will write it again");
        }
    }

    /// A group's members and whether this process's heartbeat key exists,
    /// in two reads (two slots). When the heartbeat's master cannot be
    /// reached (or the heartbeat loop is failing), the key counts as
    /// present: that master failing says nothing about the group's.
    pub(super) async fn read_group_cluster(
        &self,
        group: &str,
    ) -> Result<(bool, Vec<Vec<u8>>), LayerError> {
        let prune = Self::now_secs().saturating_sub(self.group_expiry_secs);
        let mut invocation = GROUP_MEMBERS_SCRIPT.key(self.group_key(group));
        invocation.arg(prune);
        let mut conn = self.conn(SHARD);
        let members: Vec<Vec<u8>> = self
            .run(
                SHARD,
                "reading the group",
                invocation.invoke_async(&mut conn),
            )
            .await?;
        if self.shards[SHARD].heartbeat_health.snapshot().failing {
            // Its master is away: do not wait for it on every send.
            return Ok((true, members));
        }
        let alive: Result<i64, LayerError> = self
            .run(
                SHARD,
                "checking the heartbeat",
                redis::cmd("EXISTS")
                    .arg(&self.keys.alive)
                    .query_async(&mut conn),
            )
            .await;
        Ok((alive.map_or(true, |alive| alive == 1), members))
    }

    /// The writes of `sync_shard` in a cluster: whether the heartbeat key
    /// existed, then one transaction per group, each discard, and last the
    /// record and (when every group write succeeded) the heartbeat key.
    /// Every write is tried; the discards done are pushed to `done`; the
    /// first failure is returned.
    pub(super) async fn sync_writes_cluster<C>(
        &self,
        conn: &mut C,
        snapshot: &[(String, Vec<Arc<str>>)],
        discards: &[(String, Arc<str>)],
        left: &[&str],
        mark_alive: bool,
        done: &mut Vec<(String, Arc<str>)>,
    ) -> Result<i64, LayerError>
    where
        C: ConnectionLike + Send,
    {
        let what = "re-adding group memberships";
        let alive_before = self
            .run(
                SHARD,
                what,
                redis::cmd("EXISTS")
                    .arg(&self.keys.alive)
                    .query_async::<i64>(conn),
            )
            .await;
        let mut failed: Option<LayerError> = None;
        for (group, members) in snapshot {
            let key = self.group_key(group);
            let score = self.next_score().to_string();
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&key);
            for member in members {
                zadd.arg(&score).arg(&**member);
            }
            let mut pipe = redis::pipe();
            pipe.atomic()
                .add_command(zadd)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(self.group_expiry_secs)
                .ignore();
            if let Err(error) = self
                .run(SHARD, what, pipe.query_async::<()>(&mut *conn))
                .await
            {
                failed.get_or_insert(error);
            }
        }
        for (group, channel) in discards {
            let zrem = redis::cmd("ZREM")
                .arg(self.group_key(group))
                .arg(&**channel)
                .to_owned();
            match self
                .run(
                    SHARD,
                    "removing group members",
                    zrem.query_async::<()>(&mut *conn),
                )
                .await
            {
                Ok(()) => done.push((group.clone(), Arc::clone(channel))),
                Err(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        let mut bookkeeping = redis::pipe();
        bookkeeping.atomic();
        let mut writes = 0;
        for (group, _) in snapshot {
            bookkeeping
                .cmd("SADD")
                .arg(&self.keys.groups)
                .arg(group)
                .ignore();
            writes += 1;
        }
        if !snapshot.is_empty() {
            bookkeeping
                .cmd("EXPIRE")
                .arg(&self.keys.groups)
                .arg(self.group_expiry_secs)
                .ignore();
        }
        for group in left {
            bookkeeping
                .cmd("SREM")
                .arg(&self.keys.groups)
                .arg(group)
                .ignore();
            writes += 1;
        }
        // The heartbeat key says "my memberships are in": not before they are.
        if mark_alive && failed.is_none() {
            self.mark_alive(&mut bookkeeping);
            writes += 1;
        }
        if writes > 0
            && let Err(error) = self
                .run(SHARD, what, bookkeeping.query_async::<()>(&mut *conn))
                .await
        {
            failed.get_or_insert(error);
        }
        match failed {
            Some(error) => Err(error),
            None => alive_before,
        }
    }

    /// The sweep for dead processes in a cluster: find them (one script on
    /// the heartbeat slot), remove their members group by group, then forget
    /// each whose members are all gone, unless it beat again meanwhile (it
    /// is then asked, through the resync counter, to re-add what the purge
    /// removed). A process whose groups could not all be reached is kept for
    /// the next sweep.
    pub(super) async fn sweep_cluster(&self, conn: &mut Conn) -> Result<(), LayerError> {
        let keys = &self.keys;
        let mut invocation = PURGE_FIND_SCRIPT.key(&keys.registry);
        invocation.arg(&keys.base).arg(&self.inbox_name);
        let (dead, live): (Vec<(String, Vec<String>)>, Vec<String>) = self
            .run(
                SHARD,
                "finding dead processes",
                invocation.invoke_async(conn),
            )
            .await?;
        let mut failed: Option<LayerError> = None;
        for (inbox, groups) in dead {
            let mut removed = 0;
            let mut complete = true;
            for group in &groups {
                let mut invocation = PURGE_MEMBERS_SCRIPT.key(self.group_key(group));
                invocation.arg(&inbox);
                match self
                    .run(
                        SHARD,
                        "removing dead processes' members",
                        invocation.invoke_async::<i64>(conn),
                    )
                    .await
                {
                    Ok(count) => removed += count,
                    Err(error) => {
                        complete = false;
                        failed.get_or_insert(error);
                    }
                }
            }
            if !complete {
                continue;
            }
            let mut invocation = PURGE_FORGET_SCRIPT.key(&keys.registry);
            invocation
                .key(keys.alive_of(&inbox))
                .key(format!("{}:groups:{inbox}", keys.base))
                .arg(&inbox);
            let forgotten: i64 = match self
                .run(
                    SHARD,
                    "forgetting a dead process",
                    invocation.invoke_async(conn),
                )
                .await
            {
                Ok(forgotten) => forgotten,
                Err(error) => {
                    failed.get_or_insert(error);
                    continue;
                }
            };
            if forgotten == 1 {
                // Nobody pops its inbox any more (its own slot).
                let _ = self
                    .run(
                        SHARD,
                        "deleting a dead process's inbox",
                        redis::cmd("DEL")
                            .arg(format!("{}{inbox}", self.prefix))
                            .query_async::<()>(conn),
                    )
                    .await;
                tracing::info!(redis = %self.shards[SHARD].url, process = %inbox, members = removed,
                    "removed the group members of a Switchyard process whose heartbeat expired \
                     (it stopped without leaving its groups)");
            } else if removed > 0 {
                let _ = self
                    .run(
                        SHARD,
                        "asking a process back to re-add",
                        redis::cmd("INCR").arg(&keys.resync).query_async::<()>(conn),
                    )
                    .await;
                tracing::info!(process = %inbox, members = removed,
                    "a process beat again while its members were purged: asked it to re-add them");
            }
        }
        record_live(self, SHARD, live);
        match failed {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
