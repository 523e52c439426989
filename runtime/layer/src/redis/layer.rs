//! [`RedisLayer`]: the channels_redis-compatible layer.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use redis::aio::ConnectionManagerConfig;
use redis::{Script, Value as RedisValue};
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::cluster::{Backend, Conn};
use super::config::RedisConfig;
use super::endpoint::Endpoint;
use super::heartbeat::{ProcessKeys, beat_period, heartbeat_loop};
use super::retry::{Backoff, LoopMonitor};
use super::scripts;
use super::shard::consistent_hash;
use super::summary::{SUMMARY_PERIOD, Summary};
use super::wire::{ASGI_CHANNEL, Codec, Target, unix_now};
use crate::health::{LayerHealth, ShardHealth};
use crate::local::{Delivery, LocalChannels};
use crate::memberships::Memberships;
use crate::names::{non_local_name, validate_channel_name, validate_group_name};
use crate::stats::{self, StatCounters};
use crate::{
    CapacityRules, ChannelLayer, Event, GroupSendReport, Inbox, LayerConfigError, LayerError,
    LayerStats, lock_unpoisoned,
};

/// The blocking-pop timeout (channels_redis's `brpop_timeout`).
const POP_TIMEOUT_SECS: u64 = 5;
/// The receiver's read timeout: above the pop timeout, so an idle pop never
/// looks like a dead connection (the channels_redis#422 trap).
pub(super) const RECEIVER_READ_TIMEOUT: Duration = Duration::from_secs(POP_TIMEOUT_SECS + 5);
/// How long one layer operation may take before it fails as `Unavailable`.
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries taken per `ZPOPMIN` while the inbox has a backlog.
const POP_BATCH: usize = 256;
/// The most group removals kept for Redis while it cannot take them. Beyond
/// this, a removal is dropped (and logged): the membership is no longer
/// refreshed, so Redis prunes it within one group expiry anyway.
const MAX_PENDING_DISCARDS: usize = 10_000;
/// The longest a group send waits, after Redis lost its data, for the other
/// Switchyard processes to re-add their members (it then fails as
/// `Unavailable`); shorter when a heartbeat period is shorter.
const MAX_RESYNC_WAIT: Duration = Duration::from_secs(3);
/// The shortest such wait, however short the heartbeat period.
const MIN_RESYNC_WAIT: Duration = Duration::from_secs(1);

/// A Redis-backed channel layer that shares Redis with Django processes running
/// channels_redis's `RedisChannelLayer` (see the [module docs](super)).
///
/// Dropping the layer stops its background tasks.
pub struct RedisLayer {
    inner: Arc<Inner>,
    _stop: DropGuard,
}

pub(super) struct Shard {
    /// The entry's label (URL or Sentinel master) with its password
    /// redacted, for logs and errors.
    pub(super) url: String,
    /// A host (fixed or found through Sentinel), or the whole Redis Cluster.
    pub(super) backend: Backend,
    receive_health: LoopMonitor,
    refresh_health: LoopMonitor,
    pub(super) heartbeat_health: LoopMonitor,
    /// Set when a connection to this host was lost (or timed out); the next
    /// operation that succeeds clears it and wakes the receive and heartbeat
    /// loops, so the memberships are re-added as soon as any connection is
    /// back, not after the receive loop's backoff. A refused command
    /// (NOAUTH, READONLY) does not set it: another command succeeding says
    /// nothing about those.
    down: AtomicBool,
    wake_receive: Notify,
    pub(super) wake_heartbeat: Notify,
    /// Whether this process's memberships were ever written here (before
    /// that, a missing heartbeat key is no loss).
    pub(super) beaten: AtomicBool,
    /// When a re-add found this process's heartbeat key gone (Redis lost
    /// its data); cleared once the other processes have re-added theirs, or
    /// a send gave up waiting for them, or one heartbeat TTL later (a
    /// process not back by then is dead). Meanwhile the sweep adds to
    /// `peers` but removes nobody: a restarted Redis's registry lists only
    /// the processes that are already back. A std mutex: never held across
    /// an `.await`.
    pub(super) lost_since: Mutex<Option<Instant>>,
    /// The other Switchyard processes alive at the last sweep: whom a send
    /// waits for after Redis lost its data. A std mutex: swapped or cloned,
    /// never held across an `.await`.
    pub(super) peers: Mutex<Vec<String>>,
    /// Switchyard processes alive at the last sweep, this one included.
    pub(super) processes: AtomicUsize,
    /// One re-add at a time after a loss, however many sends notice it.
    pub(super) recovering: tokio::sync::Mutex<()>,
}

/// This process's group memberships, and the removals Redis still owes.
/// Shared with the inbox close hook, which makes a dropped channel leave its
/// groups (the hook cannot hold the layer itself: the layer owns the inboxes'
/// registry).
#[derive(Default)]
pub(super) struct Book {
    /// Group → local member channels; re-added after a reconnect and refreshed
    /// before the group expiry. A std mutex: map work only, never across
    /// `.await`.
    pub(super) memberships: Mutex<Memberships<()>>,
    /// `ZREM`s not yet done: `group_discard`s that failed while Redis was down,
    /// and the memberships of dropped inboxes; at most
    /// [`MAX_PENDING_DISCARDS`].
    pending_discards: Mutex<PendingDiscards>,
    /// Wakes the refresh loop to send queued discards at once.
    discards_queued: Notify,
}

#[derive(Default)]
struct PendingDiscards {
    set: HashSet<(String, Arc<str>)>,
    /// Removals dropped since the queue was last full (logged on the first).
    dropped: u64,
}

impl Book {
    /// Queues `ZREM group channel` for the refresh loop (or the next
    /// reconnect); drops it when the queue is full.
    pub(super) fn queue_discard(&self, group: &str, channel: &str) {
        {
            let mut pending = lock_unpoisoned(&self.pending_discards);
            let entry = (group.to_owned(), Arc::from(channel));
            if pending.set.len() >= MAX_PENDING_DISCARDS && !pending.set.contains(&entry) {
                pending.dropped += 1;
                if pending.dropped == 1 {
                    tracing::warn!(
                        limit = MAX_PENDING_DISCARDS,
                        group,
                        channel,
                        "too many group removals waiting for Redis; dropping some \
                         (Redis prunes them after the group expiry)"
                    );
                }
                return;
            }
            pending.set.insert(entry);
        }
        self.discards_queued.notify_one();
    }

    /// The close hook: a dropped inbox's channel leaves its groups here at
    /// once and in Redis as soon as the refresh loop can tell it.
    fn channel_closed(&self, channel: &str) {
        let groups = lock_unpoisoned(&self.memberships).remove_channel(channel);
        for group in groups {
            tracing::debug!(%group, channel, "a dropped channel leaves its group");
            self.queue_discard(&group, channel);
        }
    }

    fn forget_discard(&self, group: &str, channel: &str) {
        let mut pending = lock_unpoisoned(&self.pending_discards);
        pending
            .set
            .retain(|(g, c)| !(g == group && &**c == channel));
    }
}

pub(super) struct Inner {
    local: LocalChannels,
    /// Whether `shards` is one Redis Cluster (see `cluster`): multi-key
    /// writes are then split by slot.
    pub(super) cluster: bool,
    /// A cluster `group_add` could not write this process's group record:
    /// the next heartbeat re-adds the memberships (and the record).
    pub(super) record_owed: AtomicBool,
    pub(super) shards: Vec<Shard>,
    pub(super) prefix: String,
    /// `specific.<client prefix>!`: the non-local name of every local channel.
    pub(super) inbox_name: String,
    /// This process's heartbeat, registry, groups-record and resync keys.
    pub(super) keys: ProcessKeys,
    pub(super) heartbeat_ttl: Duration,
    /// How long a send waits for the other processes' re-adds after Redis
    /// lost its data.
    resync_wait: Duration,
    /// Process inboxes a group send skipped because they were full.
    pub(super) full_inbox_skips: Summary,
    /// Group members skipped because their name is not UTF-8.
    pub(super) bad_members: Summary,
    /// `prefix + inbox_name`: this process's inbox key on every shard.
    pub(super) inbox_key: String,
    pub(super) codec: Codec,
    pub(super) capacity: CapacityRules,
    pub(super) expiry_secs: u64,
    pub(super) group_expiry_secs: u64,
    pub(super) book: Arc<Book>,
    /// The last score written; scores only grow, so one sender's messages keep
    /// their order in a zset even within one clock tick.
    last_score: Mutex<f64>,
    round_robin: AtomicUsize,
    pub(super) stats: Arc<StatCounters>,
    send_script: Script,
    pub(super) group_send_script: Script,
    members_script: Script,
    pub(super) heartbeat_script: Script,
    pub(super) purge_script: Script,
    /// `WAIT` after writes: how many replicas, and for how long (see
    /// [`RedisConfig::wait_for_replicas`]).
    wait_for_replicas: usize,
    wait_timeout: Duration,
}

impl RedisLayer {
    /// Builds the layer and starts its background tasks (one receive loop per
    /// shard, and the membership refresher). Must be called inside a tokio
    /// runtime. Redis need not be reachable: the receive loops log each failure
    /// naming the URL and keep retrying with backoff, and meanwhile sends fail
    /// with [`LayerError::Unavailable`].
    ///
    /// # Errors
    /// [`LayerConfigError`] for an invalid configuration: no hosts, a URL
    /// redis-rs cannot parse, a capacity of 0.
    pub fn new(config: RedisConfig) -> Result<Self, LayerConfigError> {
        let RedisConfig {
            layer,
            hosts,
            cluster: seeds,
            prefix,
            symmetric_encryption_keys,
            random_prefix_length,
            heartbeat_ttl,
            wait_for_replicas,
            wait_timeout,
        } = config;
        if !hosts.is_empty() && !seeds.is_empty() {
            return Err(LayerConfigError::HostsAndCluster);
        }
        if hosts.is_empty() && seeds.is_empty() {
            return Err(LayerConfigError::NoHosts);
        }
        let cluster = !seeds.is_empty();
        let capacity = CapacityRules::new(layer.capacity, &layer.channel_capacity)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let backends = if cluster {
            vec![Backend::cluster(&seeds)?]
        } else {
            hosts
                .iter()
                .map(|host| {
                    let url = host.label();
                    let endpoint =
                        Endpoint::new(host, manager_config.clone()).map_err(|source| {
                            LayerConfigError::RedisUrl {
                                url: url.clone(),
                                source,
                            }
                        })?;
                    Ok((url, Backend::Host(endpoint)))
                })
                .collect::<Result<Vec<_>, LayerConfigError>>()?
        };
        let shards = backends
            .into_iter()
            .map(|(url, backend)| {
                Ok(Shard {
                    receive_health: LoopMonitor::new(url.clone(), "receive"),
                    refresh_health: LoopMonitor::new(url.clone(), "refresh"),
                    heartbeat_health: LoopMonitor::new(url.clone(), "heartbeat"),
                    url,
                    backend,
                    down: AtomicBool::new(false),
                    wake_receive: Notify::new(),
                    wake_heartbeat: Notify::new(),
                    beaten: AtomicBool::new(false),
                    lost_since: Mutex::new(None),
                    peers: Mutex::default(),
                    processes: AtomicUsize::new(0),
                    recovering: tokio::sync::Mutex::new(()),
                })
            })
            .collect::<Result<Vec<_>, LayerConfigError>>()?;
        let stats = Arc::new(StatCounters::default());
        let book = Arc::new(Book::default());
        let on_close = {
            let book = Arc::clone(&book);
            Box::new(move |channel: &str| book.channel_closed(channel))
        };
        let local =
            LocalChannels::new(capacity.clone(), layer.expiry, Arc::clone(&stats), on_close);
        let inbox_name = local.channel_prefix().to_owned();
        let heartbeat_ttl = heartbeat_ttl.max(Duration::from_millis(1));
        let inner = Arc::new(Inner {
            inbox_key: format!("{prefix}{inbox_name}"),
            keys: ProcessKeys::new(&prefix, &inbox_name, cluster),
            cluster,
            record_owed: AtomicBool::new(false),
            inbox_name,
            heartbeat_ttl,
            resync_wait: (beat_period(heartbeat_ttl) * 3 / 2)
                .clamp(MIN_RESYNC_WAIT, MAX_RESYNC_WAIT),
            full_inbox_skips: Summary::new(
                "group_send skipped process inboxes over capacity (a process that \
                 died without leaving its groups, until its heartbeat expires, or a slow one)",
                SUMMARY_PERIOD,
            ),
            bad_members: Summary::new(
                "group_send skipped group members whose name is not UTF-8",
                SUMMARY_PERIOD,
            ),
            local,
            shards,
            codec: Codec::new(
                random_prefix_length,
                &symmetric_encryption_keys,
                layer.expiry.as_secs(),
            ),
            prefix,
            capacity,
            expiry_secs: layer.expiry.as_secs().max(1),
            group_expiry_secs: layer.group_expiry.as_secs().max(1),
            book,
            last_score: Mutex::new(0.0),
            round_robin: AtomicUsize::new(0),
            stats,
            send_script: Script::new(scripts::SEND),
            group_send_script: Script::new(scripts::GROUP_SEND),
            members_script: Script::new(scripts::GROUP_MEMBERS_AND_ALIVE),
            heartbeat_script: Script::new(scripts::HEARTBEAT),
            purge_script: Script::new(scripts::PURGE_DEAD),
            wait_for_replicas,
            wait_timeout,
        });
        let stop = CancellationToken::new();
        for index in 0..inner.shards.len() {
            tokio::spawn(receive_loop(Arc::clone(&inner), index, stop.clone()));
            tokio::spawn(heartbeat_loop(Arc::clone(&inner), index, stop.clone()));
        }
        tokio::spawn(refresh_loop(Arc::clone(&inner), stop.clone()));
        tracing::info!(
            hosts = ?inner.shards.iter().map(|s| s.url.as_str()).collect::<Vec<_>>(),
            inbox = %inner.inbox_key,
            "Redis channel layer started"
        );
        Ok(Self {
            inner,
            _stop: stop.drop_guard(),
        })
    }

    /// This process's inbox key (`<prefix>specific.<client prefix>!`).
    pub fn inbox_key(&self) -> &str {
        &self.inner.inbox_key
    }
}

impl Inner {
    pub(super) fn group_key(&self, group: &str) -> String {
        format!("{}:group:{group}", self.prefix)
    }

    fn is_local(&self, channel: &str) -> bool {
        non_local_name(channel) == self.inbox_name
    }

    /// A score above every score this process wrote before.
    pub(super) fn next_score(&self) -> f64 {
        let now = unix_now();
        let mut last = lock_unpoisoned(&self.last_score);
        let score = if now > *last { now } else { last.next_up() };
        *last = score;
        score
    }

    pub(super) fn now_secs() -> u64 {
        // Truncation is Python's `int(time.time())`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let secs = unix_now() as u64;
        secs
    }

    /// Runs one Redis operation on a shard under [`OP_TIMEOUT`], turning every
    /// failure into `Unavailable` naming the shard.
    pub(super) async fn run<T, F>(
        &self,
        shard: usize,
        what: &str,
        operation: F,
    ) -> Result<T, LayerError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let url = &self.shards[shard].url;
        let down = &self.shards[shard].down;
        match tokio::time::timeout(OP_TIMEOUT, operation).await {
            Ok(Ok(value)) => {
                self.back_up(shard);
                Ok(value)
            }
            Ok(Err(error)) => {
                if disconnected(&error) {
                    down.store(true, Ordering::Relaxed);
                }
                Err(LayerError::Unavailable(format!(
                    "Redis at {url} failed {what}: {error}"
                )))
            }
            Err(_) => {
                down.store(true, Ordering::Relaxed);
                Err(LayerError::Unavailable(format!(
                    "Redis at {url} did not answer {what} within {OP_TIMEOUT:?}"
                )))
            }
        }
    }

    /// Records a success on `shard`: if a connection there had been lost, wakes the
    /// receive loop (out of its backoff: it reconnects and re-adds the
    /// memberships) and the heartbeat loop (which notices a Redis that lost
    /// its data and re-adds them).
    fn back_up(&self, shard: usize) {
        let state = &self.shards[shard];
        if state.down.swap(false, Ordering::Relaxed) {
            state.wake_receive.notify_one();
            state.wake_heartbeat.notify_one();
        }
    }

    pub(super) fn conn(&self, shard: usize) -> Conn {
        self.shards[shard].backend.commands()
    }

    /// With [`wait_for_replicas`](RedisConfig::wait_for_replicas) set: waits
    /// until that many replicas have every write made so far on `conn` (so
    /// the one just made), or fails as `Unavailable` saying the write may
    /// be lost in a failover. `WAIT` covers the connection, not one command:
    /// on the shared connection it also waits for other tasks' writes.
    async fn confirm_replicated(
        &self,
        shard: usize,
        conn: &mut Conn,
        what: &str,
    ) -> Result<(), LayerError> {
        if self.wait_for_replicas == 0 {
            return Ok(());
        }
        let timeout_ms = u64::try_from(self.wait_timeout.as_millis()).unwrap_or(u64::MAX);
        let confirmed: usize = self
            .run(
                shard,
                "WAIT",
                ::redis::cmd("WAIT")
                    .arg(self.wait_for_replicas)
                    .arg(timeout_ms)
                    .query_async(conn),
            )
            .await?;
        if confirmed < self.wait_for_replicas {
            return Err(LayerError::Unavailable(format!(
                "Redis at {} took the {what} but only {confirmed} of {} replicas confirmed it within {:?}: it may be lost in a failover",
                self.shards[shard].url, self.wait_for_replicas, self.wait_timeout
            )));
        }
        Ok(())
    }

    /// The event's msgpack map entries and their count, refusing a
    /// `__asgi_channel__` key (reserved for routing, as in channels_redis);
    /// a ready frame goes last, under `__frame__`.
    fn event_entries(event: &Event) -> Result<(Vec<u8>, u32), LayerError> {
        let (mut entries, count) =
            Codec::encode_entries(event.as_str()).map_err(LayerError::InvalidEvent)?;
        let Some(frame) = event.frame() else {
            return Ok((entries, count));
        };
        Codec::append_frame(&mut entries, frame);
        Ok((entries, count + 1))
    }

    fn deliver_local(&self, channel: &str, event: Event) -> Result<(), LayerError> {
        match self.local.deliver(channel, event) {
            Ok(Delivery::Delivered) => stats::add(&self.stats.delivered, 1),
            Ok(Delivery::NoInbox) => {
                stats::add(&self.stats.undeliverable, 1);
                tracing::debug!(channel, "send to a local channel with no inbox");
            }
            Err(error) => {
                stats::add(&self.stats.channel_full, 1);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Sends Redis the queued discards of the groups on `shard` and, when
    /// `readd`, this process's memberships of those groups again, with a fresh
    /// join time, and its record of those groups; when `mark_alive` too, its
    /// heartbeat key (whose presence says the memberships are in); over
    /// `conn`, a connection to that shard. Returns how many memberships and
    /// discards it wrote, `None` when there was nothing to write (and Redis
    /// was not asked).
    ///
    /// A re-add that finds the heartbeat key gone after this process had
    /// written it learns that Redis lost its data, and marks the shard
    /// `lost` so that group sends wait for the other processes' re-adds.
    pub(super) async fn sync_shard<C>(
        &self,
        shard: usize,
        conn: &mut C,
        readd: bool,
        mark_alive: bool,
    ) -> Result<Option<(usize, usize)>, LayerError>
    where
        C: ::redis::aio::ConnectionLike + Send,
    {
        let on_shard = |group: &str| consistent_hash(group, self.shards.len()) == shard;
        let snapshot: Vec<(String, Vec<Arc<str>>)> = if readd {
            lock_unpoisoned(&self.book.memberships)
                .groups()
                .filter(|(group, _)| on_shard(group))
                .map(|(group, members)| (group.clone(), members.keys().cloned().collect()))
                .collect()
        } else {
            Vec::new()
        };
        let discards: Vec<(String, Arc<str>)> = lock_unpoisoned(&self.book.pending_discards)
            .set
            .iter()
            .filter(|(group, _)| on_shard(group))
            .cloned()
            .collect();
        if discards.is_empty() && !mark_alive && (!readd || snapshot.is_empty()) {
            return Ok(None);
        }
        // Groups this process no longer has members in leave its record.
        let left: Vec<&str> = {
            let memberships = lock_unpoisoned(&self.book.memberships);
            let mut left: Vec<&str> = discards
                .iter()
                .map(|(group, _)| group.as_str())
                .filter(|group| !memberships.has_group(group))
                .collect();
            left.sort_unstable();
            left.dedup();
            left
        };
        let count = snapshot.iter().map(|(_, members)| members.len()).sum();
        let mut done: Vec<(String, Arc<str>)> = Vec::new();
        let written = if self.cluster {
            self.sync_writes_cluster(conn, &snapshot, &discards, &left, mark_alive, &mut done)
                .await
        } else {
            self.sync_writes(conn, shard, &snapshot, &discards, &left, mark_alive)
                .await
                .inspect(|_| done.clone_from(&discards))
        };
        {
            let mut pending = lock_unpoisoned(&self.book.pending_discards);
            for discard in &done {
                pending.set.remove(discard);
            }
            if pending.set.is_empty() && pending.dropped > 0 {
                tracing::info!(
                    dropped = pending.dropped,
                    "group removals waiting for Redis are all sent; some were dropped"
                );
                pending.dropped = 0;
            }
        }
        let alive_before = written?;
        let state = &self.shards[shard];
        if readd && alive_before == 0 && state.beaten.load(Ordering::Relaxed) {
            lock_unpoisoned(&state.lost_since).get_or_insert_with(Instant::now);
        }
        if mark_alive {
            state.beaten.store(true, Ordering::Relaxed);
        }
        // A member discarded (or closed) while the pipeline ran was just
        // re-added: remove it.
        let stale: Vec<(String, Arc<str>)> = {
            let memberships = lock_unpoisoned(&self.book.memberships);
            snapshot
                .iter()
                .flat_map(|(group, members)| {
                    members
                        .iter()
                        .filter(|m| !memberships.contains(group, m))
                        .map(|m| (group.clone(), Arc::clone(m)))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        for (group, member) in stale {
            let zrem = ::redis::cmd("ZREM")
                .arg(self.group_key(&group))
                .arg(&*member)
                .to_owned();
            self.run(shard, "ZREM", zrem.query_async::<()>(conn))
                .await?;
        }
        Ok(Some((count, discards.len())))
    }

    /// The writes of [`sync_shard`](Self::sync_shard) on one host, in one
    /// transaction: whether the heartbeat key existed, the memberships and
    /// the record, the heartbeat key, the discards. Returns whether the
    /// heartbeat key existed before.
    async fn sync_writes<C>(
        &self,
        conn: &mut C,
        shard: usize,
        snapshot: &[(String, Vec<Arc<str>>)],
        discards: &[(String, Arc<str>)],
        left: &[&str],
        mark_alive: bool,
    ) -> Result<i64, LayerError>
    where
        C: ::redis::aio::ConnectionLike + Send,
    {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        pipe.cmd("EXISTS").arg(&self.keys.alive);
        for (group, members) in snapshot {
            let key = self.group_key(group);
            let score = self.next_score().to_string();
            let mut zadd = ::redis::cmd("ZADD");
            zadd.arg(&key);
            for member in members {
                zadd.arg(&score).arg(&**member);
            }
            pipe.add_command(zadd).ignore();
            pipe.cmd("EXPIRE")
                .arg(&key)
                .arg(self.group_expiry_secs)
                .ignore();
            pipe.cmd("SADD").arg(&self.keys.groups).arg(group).ignore();
        }
        if !snapshot.is_empty() {
            pipe.cmd("EXPIRE")
                .arg(&self.keys.groups)
                .arg(self.group_expiry_secs)
                .ignore();
        }
        if mark_alive {
            self.mark_alive(&mut pipe);
        }
        for (group, channel) in discards {
            pipe.cmd("ZREM")
                .arg(self.group_key(group))
                .arg(&**channel)
                .ignore();
        }
        for group in left {
            pipe.cmd("SREM").arg(&self.keys.groups).arg(group).ignore();
        }
        let (alive_before,): (i64,) = self
            .run(shard, "re-adding group memberships", pipe.query_async(conn))
            .await?;
        Ok(alive_before)
    }

    /// Adds to `pipe` the writes that say this process's memberships are
    /// in: its heartbeat key and its registry entry.
    pub(super) fn mark_alive(&self, pipe: &mut ::redis::Pipeline) {
        let ttl_ms = u64::try_from(self.heartbeat_ttl.as_millis()).unwrap_or(u64::MAX);
        pipe.cmd("SET")
            .arg(&self.keys.alive)
            .arg(std::process::id())
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        pipe.cmd("ZADD")
            .arg(&self.keys.registry)
            .arg(unix_now())
            .arg(&self.inbox_name)
            .ignore();
    }

    /// The members of `group` (after the expiry prune) and whether this
    /// process's heartbeat key exists on that host. Reading is idempotent:
    /// one retry covers a connection that died since its last use (the
    /// retry runs on the reconnected connection).
    async fn read_group(
        &self,
        shard: usize,
        group: &str,
    ) -> Result<(bool, Vec<Vec<u8>>), LayerError> {
        if self.cluster {
            return self.read_group_cluster(group).await;
        }
        let prune = Self::now_secs().saturating_sub(self.group_expiry_secs);
        let mut invocation = self.members_script.key(self.group_key(group));
        invocation.key(&self.keys.alive).arg(prune);
        // Bytes, not `String`: one member name that is not UTF-8 (written by
        // another client) is skipped, not a failure of the whole send.
        let mut conn = self.conn(shard);
        let read = self
            .run(
                shard,
                "reading the group",
                invocation.invoke_async(&mut conn),
            )
            .await;
        let (alive, members): (i64, Vec<Vec<u8>>) = match read {
            Ok(read) => read,
            Err(_) => {
                let mut conn = self.conn(shard);
                self.run(
                    shard,
                    "reading the group",
                    invocation.invoke_async(&mut conn),
                )
                .await?
            }
        };
        Ok((alive == 1, members))
    }

    /// After Redis lost this process's heartbeat key on `shard` (so, most
    /// likely, everyone's memberships): re-adds this process's memberships
    /// unless another task just did, then waits until every other process
    /// seen alive before has re-added its own (each re-creates its heartbeat
    /// key only after its memberships), at most `resync_wait` after the loss
    /// was seen. Past that, sends fail at once while a process is missing,
    /// until it is back or the heartbeat gives up on it.
    ///
    /// # Errors
    /// `Unavailable` when Redis fails, or when some process has not re-added
    /// its members in time (a send now would miss them).
    async fn recover_lost_data(&self, shard: usize) -> Result<(), LayerError> {
        let state = &self.shards[shard];
        let mut conn = self.conn(shard);
        {
            let _recovering = state.recovering.lock().await;
            let alive: i64 = self
                .run(
                    shard,
                    "checking the heartbeat",
                    ::redis::cmd("EXISTS")
                        .arg(&self.keys.alive)
                        .query_async(&mut conn),
                )
                .await?;
            if alive == 0 {
                let count = self
                    .sync_shard(shard, &mut conn, true, true)
                    .await?
                    .map_or(0, |(count, _)| count);
                tracing::info!(redis = %state.url, count,
                    "Redis lost this process's records (a restart or a flush): \
                     re-added its group memberships");
            }
        }
        let peers: Vec<String> = lock_unpoisoned(&state.peers)
            .iter()
            .map(|peer| self.keys.alive_of(peer))
            .collect();
        if peers.is_empty() {
            *lock_unpoisoned(&state.lost_since) = None;
            return Ok(());
        }
        // The wait runs from when the loss was seen, not per send: once it
        // has passed, each send looks once and fails at once while some
        // process is still missing, until the heartbeat gives up on those
        // (`heartbeat_ttl` after the loss: by then they count as dead).
        let since = *lock_unpoisoned(&state.lost_since).get_or_insert_with(Instant::now);
        let deadline = since + self.resync_wait;
        loop {
            let back: usize = self
                .run(
                    shard,
                    "waiting for the other processes' re-adds",
                    ::redis::cmd("EXISTS").arg(&peers).query_async(&mut conn),
                )
                .await?;
            if back >= peers.len() {
                *lock_unpoisoned(&state.lost_since) = None;
                return Ok(());
            }
            if Instant::now() >= deadline {
                // A send now would miss their members without a word.
                return Err(LayerError::Unavailable(format!(
                    "Redis at {} lost its data (a restart or a flush) and {} of {} other \
                     Switchyard processes have not re-added their group members yet",
                    state.url,
                    peers.len() - back,
                    peers.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Puts back this process's `members` of `group`, which the group key in
    /// Redis lacked (deleted, flushed, evicted), and bumps the resync counter
    /// so every other process re-adds its memberships on that host at its
    /// next beat. A failure is only logged: the send goes on.
    async fn readd_lost(&self, shard: usize, group: &str, members: &[Arc<str>]) {
        let key = self.group_key(group);
        let score = self.next_score().to_string();
        let mut zadd = ::redis::cmd("ZADD");
        zadd.arg(&key);
        for member in members {
            zadd.arg(&score).arg(&**member);
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .add_command(zadd)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.group_expiry_secs)
            .ignore();
        // In a cluster the record and the counter live in another slot.
        let mut bookkeeping = ::redis::pipe();
        bookkeeping.atomic();
        let target = if self.cluster {
            &mut bookkeeping
        } else {
            &mut pipe
        };
        target
            .cmd("SADD")
            .arg(&self.keys.groups)
            .arg(group)
            .ignore()
            .cmd("INCR")
            .arg(&self.keys.resync)
            .ignore();
        let mut conn = self.conn(shard);
        let mut result = self
            .run(
                shard,
                "re-adding lost members",
                pipe.query_async::<()>(&mut conn),
            )
            .await;
        if self.cluster && result.is_ok() {
            result = self
                .run(
                    shard,
                    "asking the other processes to re-add",
                    bookkeeping.query_async::<()>(&mut conn),
                )
                .await;
        }
        match result {
            Ok(()) => {
                tracing::warn!(redis = %self.shards[shard].url, group, count = members.len(),
                    "the group in Redis lacked members of this process (deleted, flushed or \
                     evicted): re-added them and asked the other processes to re-add theirs");
                // A member discarded meanwhile was just put back: remove it.
                let stale: Vec<&Arc<str>> = {
                    let memberships = lock_unpoisoned(&self.book.memberships);
                    members
                        .iter()
                        .filter(|m| !memberships.contains(group, m))
                        .collect()
                };
                for member in stale {
                    self.book.queue_discard(group, member);
                }
            }
            Err(error) => {
                tracing::debug!(%error, group, "could not re-add lost members");
            }
        }
    }

    /// Decodes one popped entry and delivers it to the local channels it names.
    /// A malformed entry is logged and skipped.
    fn dispatch(&self, shard: usize, entry: &[u8]) {
        let url = &self.shards[shard].url;
        let (map, target) = match self.codec.open(entry) {
            Ok(decoded) => decoded,
            Err(error) => {
                stats::add(&self.stats.undeliverable, 1);
                tracing::warn!(redis = %url, key = %self.inbox_key, %error,
                    "skipped a malformed entry in the inbox");
                return;
            }
        };
        let event = match Event::from_value(Value::Object(map)) {
            Ok(event) => event,
            Err(error) => {
                stats::add(&self.stats.undeliverable, 1);
                tracing::warn!(redis = %url, %error, "skipped an inbox entry that is not an event");
                return;
            }
        };
        let names = match target {
            Target::One(name) => vec![name],
            Target::Many(names) => names,
            Target::None => {
                stats::add(&self.stats.undeliverable, 1);
                tracing::warn!(redis = %url, event_type = event.event_type(),
                    "skipped an inbox entry without {ASGI_CHANNEL}");
                return;
            }
        };
        let group = names.len() > 1;
        for name in names {
            if !self.is_local(&name) {
                stats::add(&self.stats.undeliverable, 1);
                tracing::debug!(channel = %name, "inbox entry names another process's channel");
                continue;
            }
            match self.local.deliver(&name, event.clone()) {
                Ok(Delivery::Delivered) => stats::add(&self.stats.delivered, 1),
                Ok(Delivery::NoInbox) => stats::add(&self.stats.undeliverable, 1),
                Err(_) => {
                    let counter = if group {
                        &self.stats.group_over_capacity
                    } else {
                        &self.stats.channel_full
                    };
                    stats::add(counter, 1);
                    tracing::debug!(channel = %name, event_type = event.event_type(),
                        "dropped an event from Redis: the local channel is full");
                }
            }
        }
    }
}

/// The entries of a `ZPOPMIN`/`BZPOPMIN` reply, in order, in RESP2 (flat
/// `[key,] member, score, ...`) or RESP3 (pairs) form. `skip_key` drops the
/// leading key of a `BZPOPMIN` reply.
fn popped_members(reply: RedisValue, skip_key: bool) -> Vec<Vec<u8>> {
    let RedisValue::Array(items) = reply else {
        return Vec::new();
    };
    let mut items = items.into_iter();
    if skip_key {
        items.next();
        return items
            .next()
            .and_then(|member| match member {
                RedisValue::BulkString(bytes) => Some(vec![bytes]),
                _ => None,
            })
            .unwrap_or_default();
    }
    let mut members = Vec::new();
    let mut flat_member_next = true;
    for item in items {
        match item {
            RedisValue::Array(pair) => {
                if let Some(RedisValue::BulkString(bytes)) = pair.into_iter().next() {
                    members.push(bytes);
                }
            }
            RedisValue::BulkString(bytes) if flat_member_next => {
                members.push(bytes);
                flat_member_next = false;
            }
            _ => flat_member_next = true,
        }
    }
    members
}

/// One shard's receive loop: pops this process's inbox key and delivers locally;
/// on any failure (no connection, a refused command, a lost connection) waits
/// a jittered backoff, reconnects and re-adds the memberships of the groups on
/// this shard (a restarted Redis may have lost them). The backoff resets only
/// once a pop has succeeded, so a Redis that accepts connections but refuses
/// commands is retried a few times a second at most, not in a storm.
async fn receive_loop(inner: Arc<Inner>, shard: usize, stop: CancellationToken) {
    let health = &inner.shards[shard].receive_health;
    let mut backoff = Backoff::default();
    loop {
        let (error, disconnected) = tokio::select! {
            () = stop.cancelled() => return,
            failure = receive_session(&inner, shard, &mut backoff) => failure,
        };
        let delay = backoff.next_delay();
        health.failed(&error, delay);
        let state = &inner.shards[shard];
        if disconnected {
            state.down.store(true, Ordering::Relaxed);
        }
        // Another connection reaching Redis again cuts the backoff short.
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
            () = state.wake_receive.notified() => {}
        }
    }
}

/// One connection's life in the receive loop: connect, re-add memberships,
/// pop until something fails; returns what failed.
async fn receive_session(inner: &Inner, shard: usize, backoff: &mut Backoff) -> (String, bool) {
    let backend = &inner.shards[shard].backend;
    // For a Sentinel entry: which server is master now (after a failover,
    // another one: the shard switches to it here). Sentinels that do not
    // answer leave the shard on the master it knows, if any: it may well
    // still be the master (a demoted one refuses the pops with READONLY).
    let sentinel_error = backend.refresh_master().await.err();
    if !backend.has_server() {
        let error = sentinel_error.unwrap_or_else(|| "no master known yet".to_owned());
        return (
            format!("cannot find the master (sends fail as unavailable meanwhile): {error}"),
            true,
        );
    }
    let mut conn = match backend.receive_connection().await {
        Ok(conn) => conn,
        Err(error) => {
            let sentinels = sentinel_error
                .map(|error| format!("; asking the sentinels failed too: {error}"))
                .unwrap_or_default();
            return (
                format!(
                    "cannot connect to Redis (sends fail as unavailable meanwhile): \
                     {error}{sentinels}"
                ),
                true,
            );
        }
    };
    if let Some(error) = sentinel_error {
        tracing::debug!(redis = %inner.shards[shard].url, %error,
            "the sentinels did not answer; staying on the master known before");
    }
    // A restarted Redis may have lost the groups: put ours back before
    // popping; a failure here is a failure like any other. (The heartbeat
    // key is left to the heartbeat loop, which this wakes.)
    let resynced = inner.sync_shard(shard, &mut conn, true, false).await;
    // Wake the command connection too, so the first send after an outage
    // does not land on the dead connection (the first PING may fail and
    // make it reconnect).
    for _ in 0..2 {
        let mut commands = inner.conn(shard);
        if ::redis::cmd("PING")
            .query_async::<()>(&mut commands)
            .await
            .is_ok()
        {
            break;
        }
    }
    match resynced {
        Ok(Some((count, _))) if count > 0 => {
            tracing::info!(redis = %inner.shards[shard].url, count, "re-added group memberships");
        }
        Ok(_) => {}
        Err(error) => return (format!("cannot re-add group memberships: {error}"), false),
    }
    let error = pop_until_error(inner, shard, &mut conn, backoff).await;
    if error.code() == Some("WRONGTYPE")
        && let Some(kind) = remove_foreign_inbox(inner, &mut conn).await
    {
        return (
            format!(
                "a pop was refused: {error}; removed the {kind} that another client \
                 stored under this process's inbox key"
            ),
            false,
        );
    }
    (
        format!("lost the connection or a pop was refused: {error}"),
        disconnected(&error),
    )
}

/// Whether an error means the connection is gone (Redis down, restarted,
/// unreachable), as opposed to a command Redis refused (NOAUTH, READONLY,
/// WRONGTYPE): only the first kind ends when another connection gets
/// through.
fn disconnected(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
}

/// Deletes whatever is stored under this process's inbox key when it is not
/// a sorted set, and returns its type. The key's name holds this process's
/// random prefix, so nothing but a mistake (or malice) puts anything else
/// there, and without this the receive loop would fail on it until the key
/// expires, if it ever does.
async fn remove_foreign_inbox(inner: &Inner, conn: &mut Conn) -> Option<String> {
    let kind: String = redis::cmd("TYPE")
        .arg(&inner.inbox_key)
        .query_async(conn)
        .await
        .ok()?;
    if kind == "zset" || kind == "none" {
        return None;
    }
    let () = redis::cmd("DEL")
        .arg(&inner.inbox_key)
        .query_async(conn)
        .await
        .ok()?;
    tracing::warn!(key = %inner.inbox_key, %kind,
        "deleted a value of the wrong type stored under this process's inbox key");
    Some(kind)
}

/// Pops and dispatches until a pop fails; returns the error. The first
/// successful pop marks the receive loop healthy; a completed blocking pop (or
/// a batch of entries) resets the backoff.
///
/// # Cancel safety
/// Not cancel safe in the strict sense: a cancelled pop may have taken an entry
/// off Redis that is then lost. It is only cancelled when the layer is dropped.
async fn pop_until_error(
    inner: &Inner,
    shard: usize,
    conn: &mut Conn,
    backoff: &mut Backoff,
) -> redis::RedisError {
    let health = &inner.shards[shard].receive_health;
    loop {
        // Drain a backlog in batches; block only when the inbox is empty.
        let batch: RedisValue = match redis::cmd("ZPOPMIN")
            .arg(&inner.inbox_key)
            .arg(POP_BATCH)
            .query_async(conn)
            .await
        {
            Ok(reply) => reply,
            Err(error) => return error,
        };
        health.succeeded();
        let members = popped_members(batch, false);
        if !members.is_empty() {
            backoff.reset();
            for member in &members {
                inner.dispatch(shard, member);
            }
            continue;
        }
        let reply: RedisValue = match redis::cmd("BZPOPMIN")
            .arg(&inner.inbox_key)
            .arg(POP_TIMEOUT_SECS)
            .query_async(conn)
            .await
        {
            Ok(reply) => reply,
            Err(error) => return error,
        };
        backoff.reset();
        for member in popped_members(reply, true) {
            inner.dispatch(shard, &member);
        }
    }
}

/// Refreshes every local membership every half group expiry, so a socket open
/// longer than the group expiry never falls out of its groups; and sends the
/// queued discards (of dropped channels, of `group_discard`s that failed) as
/// soon as they are queued. A shard that fails is retried after a jittered
/// backoff, not before, however many discards are queued meanwhile.
async fn refresh_loop(inner: Arc<Inner>, stop: CancellationToken) {
    let period = Duration::from_secs(inner.group_expiry_secs).div_f64(2.0);
    let shards = inner.shards.len();
    let mut next_refresh = Instant::now() + period;
    // Per shard: whether its memberships are due to be re-added.
    let mut readd_due = vec![false; shards];
    let mut backoff = Backoff::default();
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next_refresh) => {
                readd_due.fill(true);
                next_refresh = Instant::now() + period;
            }
            () = inner.book.discards_queued.notified() => {}
            () = tokio::time::sleep_until(retry_at.unwrap_or(next_refresh)), if retry_at.is_some() => {}
        }
        if retry_at.is_some_and(|at| Instant::now() < at) {
            // Woken by a discard while backing off: it waits for the retry.
            continue;
        }
        // Drawn at the first failure, for every shard that fails this round.
        let mut delay: Option<Duration> = None;
        for (shard, due) in readd_due.iter_mut().enumerate() {
            let health = &inner.shards[shard].refresh_health;
            let mut conn = inner.conn(shard);
            match inner.sync_shard(shard, &mut conn, *due, false).await {
                Ok(wrote) => {
                    *due = false;
                    if wrote.is_some() {
                        health.succeeded();
                    }
                }
                Err(error) => {
                    let delay = *delay.get_or_insert_with(|| backoff.next_delay());
                    health.failed(&error, delay);
                }
            }
        }
        retry_at = match delay {
            Some(delay) => Some(Instant::now() + delay),
            None => {
                backoff.reset();
                None
            }
        };
    }
}

#[async_trait::async_trait]
impl ChannelLayer for RedisLayer {
    fn new_channel(&self) -> Inbox {
        self.inner.local.new_channel()
    }

    /// A local channel gets the event directly; any other goes to its process's
    /// inbox key on the shard that process reads (`hash(non_local_name)`, which
    /// avoids channels_redis#221), with channels_redis's capacity check.
    async fn send(&self, channel: &str, event: Event) -> Result<(), LayerError> {
        validate_channel_name(channel)?;
        let inner = &*self.inner;
        let (entries, count) = Inner::event_entries(&event)?;
        stats::add(&inner.stats.sent, 1);
        if inner.is_local(channel) {
            return inner.deliver_local(channel, event);
        }
        let non_local = non_local_name(channel);
        let key = format!("{}{non_local}", inner.prefix);
        let (shard, target) = if channel.contains('!') {
            (
                consistent_hash(non_local, inner.shards.len()),
                Target::One(channel.to_owned()),
            )
        } else {
            let next = inner.round_robin.fetch_add(1, Ordering::Relaxed);
            (next % inner.shards.len(), Target::None)
        };
        let member = inner.codec.seal(&entries, count, &target);
        let now = Inner::now_secs();
        let mut conn = inner.conn(shard);
        let mut invocation = inner.send_script.key(&key);
        invocation
            .arg(member)
            .arg(inner.next_score().to_string())
            .arg(inner.capacity.capacity_for(channel))
            .arg(now.saturating_sub(inner.expiry_secs))
            .arg(inner.expiry_secs);
        let added: i64 = inner
            .run(shard, "send", invocation.invoke_async(&mut conn))
            .await?;
        if added == 0 {
            stats::add(&inner.stats.channel_full, 1);
            return Err(LayerError::ChannelFull {
                channel: channel.to_owned(),
            });
        }
        inner.confirm_replicated(shard, &mut conn, "send").await
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let inner = &*self.inner;
        let shard = consistent_hash(group, inner.shards.len());
        let key = inner.group_key(group);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg(inner.next_score().to_string())
            .arg(channel)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(inner.group_expiry_secs)
            .ignore();
        // In a cluster the record lives in another slot: its own transaction.
        let mut record = redis::pipe();
        record.atomic();
        if inner.is_local(channel) {
            // The record that lets the other processes remove this
            // membership should this process die without leaving.
            let target = if inner.cluster {
                &mut record
            } else {
                &mut pipe
            };
            target
                .cmd("SADD")
                .arg(&inner.keys.groups)
                .arg(group)
                .ignore()
                .cmd("EXPIRE")
                .arg(&inner.keys.groups)
                .arg(inner.group_expiry_secs)
                .ignore();
        }
        let mut conn = inner.conn(shard);
        inner
            .run(shard, "group_add", pipe.query_async::<()>(&mut conn))
            .await?;
        if inner.cluster && inner.is_local(channel) {
            inner.write_record(&mut conn, &record).await;
        }
        if inner.is_local(channel) {
            let mut memberships = lock_unpoisoned(&inner.book.memberships);
            // Under the memberships lock, so an inbox dropped meanwhile either
            // is seen closed here or has its close hook remove this membership
            // after: a closed channel is never refreshed into a group forever.
            if inner.local.is_open(channel) {
                memberships.insert(group, channel, ());
                drop(memberships);
                inner.book.forget_discard(group, channel);
            } else {
                drop(memberships);
                tracing::debug!(
                    group,
                    channel,
                    "group_add of a closed channel: removing it again"
                );
                inner.book.queue_discard(group, channel);
            }
        }
        Ok(())
    }

    /// Forgets the membership locally at once; if Redis is down, the removal is
    /// retried after the reconnect (and the error returned meanwhile).
    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let inner = &*self.inner;
        let left = {
            let mut memberships = lock_unpoisoned(&inner.book.memberships);
            memberships.remove(group, channel) && !memberships.has_group(group)
        };
        let shard = consistent_hash(group, inner.shards.len());
        let mut conn = inner.conn(shard);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(inner.group_key(group))
            .arg(channel)
            .ignore();
        if left && !inner.cluster {
            pipe.cmd("SREM").arg(&inner.keys.groups).arg(group).ignore();
        }
        let result = inner
            .run(shard, "group_discard", pipe.query_async::<()>(&mut conn))
            .await;
        if left && inner.cluster && result.is_ok() {
            // Another slot; a stale record entry only costs a purge a
            // look at a group without this process's members.
            let srem = redis::cmd("SREM")
                .arg(&inner.keys.groups)
                .arg(group)
                .to_owned();
            let _ = inner
                .run(shard, "group_discard", srem.query_async::<()>(&mut conn))
                .await;
        }
        if result.is_err() && inner.is_local(channel) {
            inner.book.queue_discard(group, channel);
        }
        result
    }

    /// channels_redis's group send: this process's own members get the event
    /// directly; every other process gets one entry per inbox key carrying the
    /// list of its members, written by one script per shard.
    async fn group_send(&self, group: &str, event: Event) -> Result<GroupSendReport, LayerError> {
        validate_group_name(group)?;
        let inner = &*self.inner;
        let (entries, count) = Inner::event_entries(&event)?;
        stats::add(&inner.stats.sent, 1);
        stats::add(&inner.stats.group_sends, 1);
        let shards = inner.shards.len();
        let group_shard = consistent_hash(group, shards);
        // This process's members, taken before Redis is read: each was in
        // Redis before it was put here (see `group_add`).
        let ours_before = lock_unpoisoned(&inner.book.memberships).members_of(group);
        let (alive, mut members) = inner.read_group(group_shard, group).await?;
        let state = &inner.shards[group_shard];
        let lost = lock_unpoisoned(&state.lost_since).is_some();
        if (!alive && state.beaten.load(Ordering::Relaxed)) || lost {
            // Redis lost this process's records since its last beat (a
            // restart, a flush): the others' members may be missing too.
            inner.recover_lost_data(group_shard).await?;
            members = inner.read_group(group_shard, group).await?.1;
        }

        // Bucket by inbox key, keeping first-seen order.
        let mut local: Vec<Arc<str>> = Vec::new();
        let mut buckets: Vec<(String, Vec<String>)> = Vec::new();
        let mut bucket_of: HashMap<String, usize> = HashMap::new();
        let mut undeliverable = 0;
        for member in members {
            let member = match String::from_utf8(member) {
                Ok(member) => member,
                Err(_) => {
                    undeliverable += 1;
                    inner.bad_members.record(group, 1);
                    continue;
                }
            };
            if inner.is_local(&member) {
                local.push(Arc::from(member));
                continue;
            }
            let non_local = non_local_name(&member).to_owned();
            match bucket_of.get(&non_local) {
                Some(&i) => buckets[i].1.push(member),
                None => {
                    bucket_of.insert(non_local.clone(), buckets.len());
                    buckets.push((non_local, vec![member]));
                }
            }
        }

        // This process's members come from its own map, so they get the
        // event even when Redis lost them; those Redis lacks are put back.
        let ours_now = lock_unpoisoned(&inner.book.memberships).members_of(group);
        let missing: Vec<Arc<str>> = {
            let in_redis: HashSet<&str> = local.iter().map(|m| &**m).collect();
            let ours: HashSet<&str> = ours_now.iter().map(|m| &**m).collect();
            ours_before
                .into_iter()
                .filter(|m| !in_redis.contains(&**m) && ours.contains(&**m))
                .collect()
        };
        if local.len() < ours_now.len() || !missing.is_empty() {
            // Every member here plus those Redis names as this process's
            // (closed ones among them count as undeliverable, as before).
            let ours: HashSet<&str> = ours_now.iter().map(|m| &**m).collect();
            let extra: Vec<Arc<str>> = local
                .iter()
                .filter(|m| !ours.contains(&***m))
                .cloned()
                .collect();
            drop(ours);
            local = ours_now;
            local.extend(extra);
        }
        if !missing.is_empty() {
            inner.readd_lost(group_shard, group, &missing).await;
        }

        let mut report = GroupSendReport::default();
        for outcome in inner.local.deliver_each(&local, &event) {
            match outcome {
                Ok(Delivery::Delivered) => report.delivered += 1,
                Ok(Delivery::NoInbox) => undeliverable += 1,
                Err(_) => report.over_capacity += 1,
            }
        }

        let mut failed: Option<LayerError> = None;
        if !buckets.is_empty() {
            let score = inner.next_score().to_string();
            let now = Inner::now_secs();
            // One script per host; in a cluster one per inbox key (each
            // its own slot), and a master that fails costs only its keys.
            let batches: Vec<(usize, Vec<usize>)> = if inner.cluster {
                (0..buckets.len()).map(|i| (0, vec![i])).collect()
            } else {
                let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); shards];
                for (i, (non_local, _)) in buckets.iter().enumerate() {
                    per_shard[consistent_hash(non_local, shards)].push(i);
                }
                per_shard.into_iter().enumerate().collect()
            };
            for (shard, indexes) in &batches {
                let (shard, indexes) = (*shard, indexes.as_slice());
                if indexes.is_empty() {
                    continue;
                }
                let mut invocation = inner.group_send_script.prepare_invoke();
                for &i in indexes {
                    invocation.key(format!("{}{}", inner.prefix, buckets[i].0));
                }
                for &i in indexes {
                    let names = &buckets[i].1;
                    invocation.arg(
                        inner
                            .codec
                            .seal(&entries, count, &Target::Many(names.clone())),
                    );
                }
                for &i in indexes {
                    invocation.arg(inner.capacity.capacity_for(&buckets[i].1[0]));
                }
                invocation
                    .arg(&score)
                    .arg(inner.expiry_secs)
                    .arg(now.saturating_sub(inner.expiry_secs));
                let mut conn = inner.conn(shard);
                let added: Vec<i64> = match inner
                    .run(shard, "group_send", invocation.invoke_async(&mut conn))
                    .await
                {
                    Ok(added) => added,
                    Err(error) if inner.cluster => {
                        failed.get_or_insert(error);
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                inner
                    .confirm_replicated(shard, &mut conn, "group_send")
                    .await?;
                for (&i, added) in indexes.iter().zip(added) {
                    let names = buckets[i].1.len();
                    if added == 1 {
                        report.delivered += names;
                    } else {
                        report.over_capacity += names;
                        stats::add(&inner.stats.full_inbox_skips, 1);
                        inner.full_inbox_skips.record(&buckets[i].0, 1);
                    }
                }
            }
        }
        stats::add(&inner.stats.delivered, report.delivered as u64);
        stats::add(
            &inner.stats.group_over_capacity,
            report.over_capacity as u64,
        );
        stats::add(&inner.stats.undeliverable, undeliverable);
        match failed {
            // Some processes' inboxes are on a master that failed: the
            // others got the event, and the sender learns of the loss.
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    fn stats(&self) -> LayerStats {
        self.inner.stats.snapshot()
    }

    fn health(&self) -> LayerHealth {
        LayerHealth {
            shards: self
                .inner
                .shards
                .iter()
                .map(|shard| ShardHealth {
                    url: shard.url.clone(),
                    receive: shard.receive_health.snapshot(),
                    refresh: shard.refresh_health.snapshot(),
                    heartbeat: shard.heartbeat_health.snapshot(),
                    processes: shard.processes.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}

impl fmt::Debug for RedisLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("RedisLayer")
            .field(
                "hosts",
                &inner
                    .shards
                    .iter()
                    .map(|s| s.url.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("inbox_key", &inner.inbox_key)
            .field("local", &inner.local)
            .field("codec", &inner.codec)
            .field("stats", &inner.stats.snapshot())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While Redis is away the removals queue up to the cap; past it they
    /// are dropped and counted, and a removal already queued is no drop.
    #[test]
    fn the_discard_queue_is_bounded() {
        let book = Book::default();
        for i in 0..MAX_PENDING_DISCARDS + 5 {
            book.queue_discard("room", &format!("specific.p!{i}"));
        }
        book.queue_discard("room", "specific.p!0");
        let pending = lock_unpoisoned(&book.pending_discards);
        assert_eq!(pending.set.len(), MAX_PENDING_DISCARDS);
        assert_eq!(pending.dropped, 5);
    }
}
