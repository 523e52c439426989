//! [`RedisLayer`]: the channels_redis-compatible layer.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, Value as RedisValue};
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::config::{RedisConfig, redact_url};
use super::retry::{Backoff, LoopMonitor};
use super::scripts;
use super::shard::consistent_hash;
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
const RECEIVER_READ_TIMEOUT: Duration = Duration::from_secs(POP_TIMEOUT_SECS + 5);
/// How long one layer operation may take before it fails as `Unavailable`.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries taken per `ZPOPMIN` while the inbox has a backlog.
const POP_BATCH: usize = 256;
/// The most group removals kept for Redis while it cannot take them. Beyond
/// this, a removal is dropped (and logged): the membership is no longer
/// refreshed, so Redis prunes it within one group expiry anyway.
const MAX_PENDING_DISCARDS: usize = 10_000;

/// A Redis-backed channel layer that shares Redis with Django processes running
/// channels_redis's `RedisChannelLayer` (see the [module docs](super)).
///
/// Dropping the layer stops its background tasks.
pub struct RedisLayer {
    inner: Arc<Inner>,
    _stop: DropGuard,
}

struct Shard {
    /// The URL with its password redacted, for logs and errors.
    url: String,
    client: Client,
    commands: ConnectionManager,
    receive_health: LoopMonitor,
    refresh_health: LoopMonitor,
}

/// This process's group memberships, and the removals Redis still owes.
/// Shared with the inbox close hook, which makes a dropped channel leave its
/// groups (the hook cannot hold the layer itself: the layer owns the inboxes'
/// registry).
#[derive(Default)]
struct Book {
    /// Group → local member channels; re-added after a reconnect and refreshed
    /// before the group expiry. A std mutex: map work only, never across
    /// `.await`.
    memberships: Mutex<Memberships<()>>,
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
    fn queue_discard(&self, group: &str, channel: &str) {
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

struct Inner {
    local: LocalChannels,
    shards: Vec<Shard>,
    prefix: String,
    /// `specific.<client prefix>!`: the non-local name of every local channel.
    inbox_name: String,
    /// `prefix + inbox_name`: this process's inbox key on every shard.
    inbox_key: String,
    codec: Codec,
    capacity: CapacityRules,
    expiry_secs: u64,
    group_expiry_secs: u64,
    book: Arc<Book>,
    /// The last score written; scores only grow, so one sender's messages keep
    /// their order in a zset even within one clock tick.
    last_score: Mutex<f64>,
    round_robin: AtomicUsize,
    stats: Arc<StatCounters>,
    send_script: Script,
    group_send_script: Script,
    members_script: Script,
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
            prefix,
            symmetric_encryption_keys,
            random_prefix_length,
        } = config;
        if hosts.is_empty() {
            return Err(LayerConfigError::NoHosts);
        }
        let capacity = CapacityRules::new(layer.capacity, &layer.channel_capacity)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let shards = hosts
            .iter()
            .map(|host| {
                let url = redact_url(host);
                let invalid = |source: redis::RedisError| LayerConfigError::RedisUrl {
                    url: url.clone(),
                    source,
                };
                let client = Client::open(host.as_str()).map_err(invalid)?;
                let commands =
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                        .map_err(invalid)?;
                Ok(Shard {
                    receive_health: LoopMonitor::new(url.clone(), "receive"),
                    refresh_health: LoopMonitor::new(url.clone(), "refresh"),
                    url,
                    client,
                    commands,
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
        let inner = Arc::new(Inner {
            inbox_key: format!("{prefix}{inbox_name}"),
            inbox_name,
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
            members_script: Script::new(scripts::GROUP_MEMBERS),
        });
        let stop = CancellationToken::new();
        for index in 0..inner.shards.len() {
            tokio::spawn(receive_loop(Arc::clone(&inner), index, stop.clone()));
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
    fn group_key(&self, group: &str) -> String {
        format!("{}:group:{group}", self.prefix)
    }

    fn is_local(&self, channel: &str) -> bool {
        non_local_name(channel) == self.inbox_name
    }

    /// A score above every score this process wrote before.
    fn next_score(&self) -> f64 {
        let now = unix_now();
        let mut last = lock_unpoisoned(&self.last_score);
        let score = if now > *last { now } else { last.next_up() };
        *last = score;
        score
    }

    fn now_secs() -> u64 {
        // Truncation is Python's `int(time.time())`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let secs = unix_now() as u64;
        secs
    }

    /// Runs one Redis operation on a shard under [`OP_TIMEOUT`], turning every
    /// failure into `Unavailable` naming the shard.
    async fn run<T, F>(&self, shard: usize, what: &str, operation: F) -> Result<T, LayerError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let url = &self.shards[shard].url;
        match tokio::time::timeout(OP_TIMEOUT, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(LayerError::Unavailable(format!(
                "Redis at {url} failed {what}: {error}"
            ))),
            Err(_) => Err(LayerError::Unavailable(format!(
                "Redis at {url} did not answer {what} within {OP_TIMEOUT:?}"
            ))),
        }
    }

    fn conn(&self, shard: usize) -> ConnectionManager {
        self.shards[shard].commands.clone()
    }

    /// The event's msgpack map entries and their count, refusing a
    /// `__asgi_channel__` key (reserved for routing, as in channels_redis).
    fn event_entries(event: &Event) -> Result<(Vec<u8>, u32), LayerError> {
        Codec::encode_entries(event.as_str()).map_err(LayerError::InvalidEvent)
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
    /// join time; over `conn`, a connection to that shard. Returns how many
    /// memberships and discards it wrote, `None` when there was nothing to write
    /// (and Redis was not asked).
    async fn sync_shard<C>(
        &self,
        shard: usize,
        conn: &mut C,
        readd: bool,
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
        if snapshot.is_empty() && discards.is_empty() {
            return Ok(None);
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let mut count = 0;
        for (group, members) in &snapshot {
            let key = self.group_key(group);
            let score = self.next_score().to_string();
            let mut zadd = ::redis::cmd("ZADD");
            zadd.arg(&key);
            for member in members {
                zadd.arg(&score).arg(&**member);
            }
            count += members.len();
            pipe.add_command(zadd).ignore();
            pipe.cmd("EXPIRE")
                .arg(&key)
                .arg(self.group_expiry_secs)
                .ignore();
        }
        for (group, channel) in &discards {
            pipe.cmd("ZREM")
                .arg(self.group_key(group))
                .arg(&**channel)
                .ignore();
        }
        self.run(
            shard,
            "re-adding group memberships",
            pipe.query_async::<()>(conn),
        )
        .await?;
        {
            let mut pending = lock_unpoisoned(&self.book.pending_discards);
            for discard in &discards {
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

/// Sleeps for `duration` unless stopped first; true when stopped.
async fn stopped_during(stop: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(duration) => false,
    }
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
        let error = tokio::select! {
            () = stop.cancelled() => return,
            error = receive_session(&inner, shard, &mut backoff) => error,
        };
        let delay = backoff.next_delay();
        health.failed(&error, delay);
        if stopped_during(&stop, delay).await {
            return;
        }
    }
}

/// One connection's life in the receive loop: connect, re-add memberships,
/// pop until something fails; returns what failed.
async fn receive_session(inner: &Inner, shard: usize, backoff: &mut Backoff) -> String {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RECEIVER_READ_TIMEOUT));
    let mut conn = match inner.shards[shard]
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(conn) => conn,
        Err(error) => {
            return format!(
                "cannot connect to Redis (sends fail as unavailable meanwhile): {error}"
            );
        }
    };
    // A restarted Redis may have lost the groups: put ours back before
    // popping; a failure here is a failure like any other.
    let resynced = inner.sync_shard(shard, &mut conn, true).await;
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
        Err(error) => return format!("cannot re-add group memberships: {error}"),
    }
    let error = pop_until_error(inner, shard, &mut conn, backoff).await;
    format!("lost the connection or a pop was refused: {error}")
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
    conn: &mut MultiplexedConnection,
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
            match inner.sync_shard(shard, &mut conn, *due).await {
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
        Ok(())
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
        let mut conn = inner.conn(shard);
        inner
            .run(shard, "group_add", pipe.query_async::<()>(&mut conn))
            .await?;
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
        lock_unpoisoned(&inner.book.memberships).remove(group, channel);
        let shard = consistent_hash(group, inner.shards.len());
        let mut conn = inner.conn(shard);
        let zrem = redis::cmd("ZREM")
            .arg(inner.group_key(group))
            .arg(channel)
            .to_owned();
        let result = inner
            .run(shard, "group_discard", zrem.query_async::<()>(&mut conn))
            .await;
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
        let shards = inner.shards.len();
        let group_shard = consistent_hash(group, shards);
        let prune = Inner::now_secs().saturating_sub(inner.group_expiry_secs);
        let mut invocation = inner.members_script.key(inner.group_key(group));
        invocation.arg(prune);
        // Reading is idempotent: one retry covers a connection that died since
        // its last use (the retry runs on the reconnected connection).
        let mut conn = inner.conn(group_shard);
        // Bytes, not `String`: one member name that is not UTF-8 (written by
        // another client) is skipped below, not a failure of the whole send.
        let members: Vec<Vec<u8>> = match inner
            .run(
                group_shard,
                "reading the group",
                invocation.invoke_async(&mut conn),
            )
            .await
        {
            Ok(members) => members,
            Err(_) => {
                let mut conn = inner.conn(group_shard);
                inner
                    .run(
                        group_shard,
                        "reading the group",
                        invocation.invoke_async(&mut conn),
                    )
                    .await?
            }
        };

        // Bucket by inbox key, keeping first-seen order.
        let mut local: Vec<Arc<str>> = Vec::new();
        let mut buckets: Vec<(String, Vec<String>)> = Vec::new();
        let mut bucket_of: HashMap<String, usize> = HashMap::new();
        let mut undeliverable = 0;
        for member in members {
            let member = match String::from_utf8(member) {
                Ok(member) => member,
                Err(error) => {
                    undeliverable += 1;
                    tracing::warn!(redis = %inner.shards[group_shard].url, group,
                        member = %String::from_utf8_lossy(error.as_bytes()),
                        "skipped a group member whose name is not UTF-8");
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

        let mut report = GroupSendReport::default();
        for outcome in inner.local.deliver_each(&local, &event) {
            match outcome {
                Ok(Delivery::Delivered) => report.delivered += 1,
                Ok(Delivery::NoInbox) => undeliverable += 1,
                Err(_) => report.over_capacity += 1,
            }
        }

        if !buckets.is_empty() {
            let score = inner.next_score().to_string();
            let now = Inner::now_secs();
            let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); shards];
            for (i, (non_local, _)) in buckets.iter().enumerate() {
                per_shard[consistent_hash(non_local, shards)].push(i);
            }
            for (shard, indexes) in per_shard.iter().enumerate() {
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
                let added: Vec<i64> = inner
                    .run(shard, "group_send", invocation.invoke_async(&mut conn))
                    .await?;
                for (&i, added) in indexes.iter().zip(added) {
                    let names = buckets[i].1.len();
                    if added == 1 {
                        report.delivered += names;
                    } else {
                        report.over_capacity += names;
                        tracing::info!(group, inbox = %buckets[i].0, members = names,
                            "group_send skipped a process inbox over capacity");
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
        Ok(report)
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
