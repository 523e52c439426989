//! Which Switchyard processes on a Redis are alive, and the removal of the
//! group members of those that died without leaving their groups (a
//! `kill -9`, an OOM kill, a lost machine).
//!
//! channels_redis has no such thing: a dead Django process's members stay in
//! their groups until the group expiry (a day by default), and every group
//! send meanwhile writes to (or skips, once it is full) an inbox nobody
//! reads. Switchyard processes keep these keys, per Redis host (`P` is the
//! prefix, `I` a process's inbox name `specific.<32 hex>!`):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:switchyard:alive:I` | string, TTL = `heartbeat_ttl` | written by a re-add of the process's memberships on that host, renewed every third of the TTL while it exists |
//! | `P:switchyard:processes` | zset `I` → time of its last beat | the Switchyard processes to watch |
//! | `P:switchyard:groups:I` | set, TTL = group expiry | the groups on that host holding the process's members |
//! | `P:switchyard:resync` | counter | bumped by a process that found a group short of its members; every process re-adds its memberships on that host when it changes |
//!
//! The `:` after the prefix keeps these keys apart from channel keys (a
//! channel name cannot hold a `:`), and `:switchyard:` from the `:group:`
//! keys; channels_redis never reads them, and its `flush()` deletes them with
//! the rest, which the next beat notices.
//!
//! **The purge rule.** A member is removed only when (1) its name starts
//! with the inbox name of a process in the registry, which only Switchyard
//! processes write, so a Django process's members are never touched; (2)
//! that process's heartbeat key no longer exists, in the same atomic script
//! (`PURGE_DEAD`), so a process that beats again in between is seen alive;
//! (3) the group is listed in that process's record. A live process whose
//! heartbeat lapsed (stalled past the TTL, or its key evicted) loses its
//! members for at most one beat: its next beat finds its key gone and
//! re-adds them.
//!
//! The heartbeat key doubles as a "Redis lost my data" flag: it exists only
//! after this process's memberships were written, so a beat that finds it
//! gone (a restart, `FLUSHDB`, an eviction) re-adds them; and a group send
//! that finds it gone waits (bounded) until every process seen alive before
//! has re-added its members (see `Inner::recover_lost_data`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::layer::Inner;
use super::retry::Backoff;
use super::wire::unix_now;
use crate::{LayerError, lock_unpoisoned};

/// The names of one process's liveness keys (the same on every host).
#[derive(Debug)]
pub(super) struct ProcessKeys {
    pub(super) prefix: String,
    /// `P:switchyard`, or `{P:switchyard}` in a Redis Cluster.
    pub(super) base: String,
    /// `P:switchyard:alive:I`.
    pub(super) alive: String,
    /// `P:switchyard:processes`.
    pub(super) registry: String,
    /// `P:switchyard:groups:I`.
    pub(super) groups: String,
    /// `P:switchyard:resync`.
    pub(super) resync: String,
}

impl ProcessKeys {
    /// The keys under `P:switchyard:`; in a Redis Cluster under the hash tag
    /// `{P:switchyard}:`, so that they share one slot and the heartbeat and
    /// purge scripts can touch several of them (see `cluster`).
    pub(super) fn new(prefix: &str, inbox_name: &str, cluster: bool) -> Self {
        let base = if cluster {
            format!("{{{prefix}:switchyard}}")
        } else {
            format!("{prefix}:switchyard")
        };
        Self {
            prefix: prefix.to_owned(),
            alive: format!("{base}:alive:{inbox_name}"),
            registry: format!("{base}:processes"),
            groups: format!("{base}:groups:{inbox_name}"),
            resync: format!("{base}:resync"),
            base,
        }
    }

    /// Another process's heartbeat key.
    pub(super) fn alive_of(&self, inbox_name: &str) -> String {
        format!("{}:alive:{inbox_name}", self.base)
    }
}

/// How often a process beats: a third of the TTL, so two beats in a row
/// may be late before the others take it for dead.
pub(super) fn beat_period(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(10))
}

/// One host's heartbeat loop: beats, re-adds this process's memberships when
/// the host lost them (or another process asked), removes the members of
/// dead processes, and flushes the layer's log summaries. A failure is
/// retried after a jittered backoff of at most one period; a success of any
/// other operation on the host wakes it at once, so a Redis that comes back
/// is noticed by the first connection that reaches it.
pub(super) async fn heartbeat_loop(inner: Arc<Inner>, shard: usize, stop: CancellationToken) {
    let period = beat_period(inner.heartbeat_ttl);
    let mut backoff = Backoff::default();
    let mut resync_seen: Option<String> = None;
    loop {
        let health = &inner.shards[shard].heartbeat_health;
        let delay = match beat(&inner, shard, &mut resync_seen).await {
            Ok(()) => {
                health.succeeded();
                backoff.reset();
                period
            }
            Err(error) => {
                let delay = backoff.next_delay().min(period);
                health.failed(&error, delay);
                delay
            }
        };
        inner.full_inbox_skips.flush();
        inner.bad_members.flush();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
            () = inner.shards[shard].wake_heartbeat.notified() => {}
        }
    }
}

/// One beat on one host, then one sweep for dead processes.
async fn beat(
    inner: &Inner,
    shard: usize,
    resync_seen: &mut Option<String>,
) -> Result<(), LayerError> {
    let keys = &inner.keys;
    let mut conn = inner.conn(shard);
    let ttl_ms = u64::try_from(inner.heartbeat_ttl.as_millis()).unwrap_or(u64::MAX);
    let mut invocation = inner.heartbeat_script.key(&keys.alive);
    invocation
        .key(&keys.registry)
        .key(&keys.resync)
        .arg(ttl_ms)
        .arg(&inner.inbox_name)
        .arg(unix_now());
    let (alive, resync): (i64, String) = inner
        .run(
            shard,
            "renewing the heartbeat",
            invocation.invoke_async(&mut conn),
        )
        .await?;
    let asked = resync_seen.as_ref().is_some_and(|seen| *seen != resync);
    // A cluster `group_add` whose group record could not be written.
    let owed = inner.record_owed.swap(false, Ordering::Relaxed);
    if alive == 0 || asked || owed {
        let shard_state = &inner.shards[shard];
        let first = !shard_state.beaten.load(Ordering::Relaxed);
        let synced = {
            let _recovering = shard_state.recovering.lock().await;
            inner.sync_shard(shard, &mut conn, true, true).await
        };
        if synced.is_err() && owed {
            inner.record_owed.store(true, Ordering::Relaxed);
        }
        let count = synced?.map_or(0, |(count, _)| count);
        if !first {
            let reason = if alive == 0 {
                "Redis lost this process's heartbeat (a restart, a flush, an eviction, \
                 or this process stalled past the heartbeat TTL)"
            } else {
                "another process found a group short of its members"
            };
            tracing::info!(redis = %shard_state.url, count, reason,
                "re-added this process's group memberships");
        }
    }
    *resync_seen = Some(resync);

    if inner.cluster {
        return inner.sweep_cluster(&mut conn).await;
    }
    let mut invocation = inner.purge_script.key(&keys.registry);
    invocation.arg(&keys.prefix).arg(&inner.inbox_name);
    let (purged, removed, live): (Vec<String>, Vec<i64>, Vec<String>) = inner
        .run(
            shard,
            "removing dead processes' members",
            invocation.invoke_async(&mut conn),
        )
        .await?;
    for (process, removed) in purged.iter().zip(removed) {
        tracing::info!(redis = %inner.shards[shard].url, %process, members = removed,
            "removed the group members of a Switchyard process whose heartbeat expired \
             (it stopped without leaving its groups)");
    }
    record_live(inner, shard, live);
    Ok(())
}

/// Records the processes a sweep found alive on `shard`: its process count
/// for the health report, and the peers a send waits for after a loss.
pub(super) fn record_live(inner: &Inner, shard: usize, live: Vec<String>) {
    let shard_state = &inner.shards[shard];
    shard_state.processes.store(live.len(), Ordering::Relaxed);
    let others = live
        .into_iter()
        .filter(|process| *process != inner.inbox_name);
    let recovering = {
        let mut lost_since = lock_unpoisoned(&shard_state.lost_since);
        if lost_since.is_some_and(|since| since.elapsed() >= inner.heartbeat_ttl) {
            *lost_since = None;
        }
        lost_since.is_some()
    };
    let mut peers = lock_unpoisoned(&shard_state.peers);
    if recovering {
        // Those not back yet are still awaited.
        for process in others {
            if !peers.contains(&process) {
                peers.push(process);
            }
        }
    } else {
        *peers = others.collect();
    }
}
