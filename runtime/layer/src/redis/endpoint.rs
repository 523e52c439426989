//! [`Endpoint`]: where one shard's connections go. A direct entry is one
//! server for the layer's life; a Sentinel entry is whichever server the
//! sentinels name as master, asked again by the shard's receive loop every
//! time it (re)connects: after a lost connection, a refused pop (`READONLY`
//! on a demoted master) or any other failure, under the loop's backoff.
//!
//! The master is found with redis-rs's `sentinel` module
//! ([`Sentinel::async_master_for`]): it asks the sentinels in order (a few
//! at once), skips masters they flag down, and checks with `ROLE` that the
//! server named is a master before it is used.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{Client, Cmd, ConnectionInfo, Pipeline, RedisError, RedisFuture, Value};

use super::hosts::HostEntry;
use crate::lock_unpoisoned;

/// How long asking the sentinels (and checking the master's role) may take.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(3);

/// One shard's server: fixed, or found through Sentinel.
pub(super) struct Endpoint {
    manager_config: ConnectionManagerConfig,
    sentinel: Option<SentinelSource>,
    /// The server in use. A std mutex: cloned out, never held across an
    /// `.await`.
    current: Mutex<Option<Current>>,
}

struct SentinelSource {
    master_name: String,
    node: SentinelNodeConnectionInfo,
    /// redis-rs's Sentinel client needs `&mut` (it caches its connections).
    sentinel: tokio::sync::Mutex<Sentinel>,
}

#[derive(Clone)]
struct Current {
    /// `host:port` of the master, for logs and to notice a change.
    addr: String,
    client: Client,
    commands: ConnectionManager,
}

impl Endpoint {
    /// An endpoint for `entry`; connects to nothing yet.
    pub(super) fn new(
        entry: &HostEntry,
        manager_config: ConnectionManagerConfig,
    ) -> Result<Self, RedisError> {
        let (sentinel, current) = match entry {
            HostEntry::Sentinel(sentinel) => {
                let source = SentinelSource {
                    master_name: sentinel.master_name.clone(),
                    node: sentinel.node_info(),
                    sentinel: tokio::sync::Mutex::new(Sentinel::build(sentinel.sentinel_infos()?)?),
                };
                (Some(source), None)
            }
            direct => {
                let info = direct.connection_info()?.ok_or_else(|| {
                    RedisError::from((redis::ErrorKind::InvalidClientConfig, "no address"))
                })?;
                (None, Some(Current::open(info, &manager_config)?))
            }
        };
        Ok(Self {
            manager_config,
            sentinel,
            current: Mutex::new(current),
        })
    }

    /// A handle on the shared command connection of the current server; one
    /// that fails every command while no master is known.
    pub(super) fn commands(&self) -> ShardConnection {
        ShardConnection(
            lock_unpoisoned(&self.current)
                .as_ref()
                .map(|current| current.commands.clone()),
        )
    }

    /// The current server's client (for the receive loop's own connection).
    pub(super) fn client(&self) -> Option<Client> {
        lock_unpoisoned(&self.current)
            .as_ref()
            .map(|current| current.client.clone())
    }

    /// For a Sentinel entry: asks the sentinels for the master and, when it
    /// is another server than the one in use, switches the shard's
    /// connections to it. Returns the new address when it switched. A direct
    /// endpoint returns `Ok(None)` at once.
    ///
    /// # Errors
    /// No sentinel answered with a master that says it is one, in time.
    pub(super) async fn refresh_master(&self) -> Result<Option<String>, String> {
        let Some(source) = &self.sentinel else {
            return Ok(None);
        };
        let lookup = async {
            let mut sentinel = source.sentinel.lock().await;
            sentinel
                .async_master_for(&source.master_name, Some(&source.node))
                .await
        };
        let client = match tokio::time::timeout(SENTINEL_TIMEOUT, lookup).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                return Err(format!(
                    "no sentinel named a reachable master for {:?}: {error}",
                    source.master_name
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the sentinels did not name a master for {:?} within {SENTINEL_TIMEOUT:?}",
                    source.master_name
                ));
            }
        };
        let addr = client.get_connection_info().addr().to_string();
        if lock_unpoisoned(&self.current)
            .as_ref()
            .is_some_and(|current| current.addr == addr)
        {
            return Ok(None);
        }
        let fresh = Current::open(client.get_connection_info().clone(), &self.manager_config)
            .map_err(|error| format!("cannot use the master at {addr}: {error}"))?;
        let previous = lock_unpoisoned(&self.current).replace(fresh);
        tracing::info!(master_name = %source.master_name, master = %addr,
            previous = previous.as_ref().map_or("none", |p| p.addr.as_str()),
            "Sentinel names this master; the shard now uses it");
        Ok(Some(addr))
    }
}

impl Current {
    fn open(info: ConnectionInfo, config: &ConnectionManagerConfig) -> Result<Self, RedisError> {
        let addr = info.addr().to_string();
        let client = Client::open(info)?;
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self {
            addr,
            client,
            commands,
        })
    }
}

/// A shard's command connection: redis-rs's [`ConnectionManager`], or, for
/// a Sentinel entry whose master is not known yet, nothing (every command
/// fails as a lost connection, so callers see `Unavailable`).
#[derive(Clone)]
pub(super) struct ShardConnection(Option<ConnectionManager>);

pub(super) fn no_master() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "no master known yet: the sentinels have not named one (retrying)",
    ))
}

impl ConnectionLike for ShardConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Some(manager) => manager.req_packed_command(cmd),
            None => Box::pin(async { Err(no_master()) }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Some(manager) => manager.req_packed_commands(pipeline, offset, count),
            None => Box::pin(async { Err(no_master()) }),
        }
    }

    fn get_db(&self) -> i64 {
        self.0.as_ref().map_or(0, ConnectionLike::get_db)
    }
}
