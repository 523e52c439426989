//! [`RedisConfig`]: the options of channels_redis's `RedisChannelLayer`.

use std::time::Duration;

use super::hosts::HostEntry;
use crate::LayerConfig;

/// The Redis layer's options: Channels' shared options in [`LayerConfig`], plus
/// the channels_redis ones. Set them to the values of the Django processes that
/// share the Redis (hosts in the same order).
#[derive(Clone)]
pub struct RedisConfig {
    /// `expiry`, `group_expiry`, `capacity`, `channel_capacity`.
    pub layer: LayerConfig,
    /// One entry per shard, in any form channels_redis's `hosts` takes
    /// ([`HostEntry`]: a URL, a host/port pair, a table with options, a
    /// Sentinel master); an entry's position is its shard index.
    pub hosts: Vec<HostEntry>,
    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://` URLs), instead
    /// of `hosts`: Switchyard's own cluster mode, for deployments where only
    /// Switchyard processes share the layer (channels_redis has no cluster
    /// support; see `cluster`). Empty: `hosts` is used.
    pub cluster: Vec<String>,
    /// Put before every key with no separator (channels_redis's `prefix`).
    pub prefix: String,
    /// Fernet keys (channels_redis's `symmetric_encryption_keys`): messages are
    /// encrypted with the first, and any of them decrypts.
    pub symmetric_encryption_keys: Vec<String>,
    /// Random bytes before every stored message (channels_redis 4.2.1+'s
    /// `random_prefix_length`, 12 before that).
    pub random_prefix_length: usize,
    /// How long this process's heartbeat key lives without a renewal: the
    /// process renews it every third of this, and the other Switchyard
    /// processes remove its group members once it has expired (see
    /// `heartbeat`). Whole seconds or milliseconds; at least 1 ms.
    pub heartbeat_ttl: Duration,
    /// When above 0, every write that carries a message (`send`,
    /// `group_send`) is followed by
    /// `WAIT <wait_for_replicas> <wait_timeout>`, and succeeds only when that
    /// many replicas confirmed it: what returned `Ok` survives a Sentinel
    /// failover to one of them. (Memberships need no wait: the process
    /// re-adds its own after a failover.) 0 (the default, channels_redis's
    /// behaviour):
    /// replication is asynchronous, and a failover may lose the last writes.
    pub wait_for_replicas: usize,
    /// How long a write waits for [`wait_for_replicas`](Self::wait_for_replicas)
    /// confirmations before it fails as `Unavailable`.
    pub wait_timeout: Duration,
}

impl RedisConfig {
    /// channels_redis's default `prefix`.
    pub const DEFAULT_PREFIX: &'static str = "asgi";
    /// channels_redis's default `random_prefix_length`.
    pub const DEFAULT_RANDOM_PREFIX_LENGTH: usize = 12;
    /// The default [`heartbeat_ttl`](Self::heartbeat_ttl): a killed process
    /// stops costing the others within about 13 s.
    pub const DEFAULT_HEARTBEAT_TTL: Duration = Duration::from_secs(10);
    /// The default [`wait_timeout`](Self::wait_timeout).
    pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(1);

    /// A Redis Cluster reached through these seed nodes, with channels_redis's
    /// defaults for everything else.
    pub fn cluster(seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            hosts: Vec::new(),
            cluster: seeds.into_iter().map(Into::into).collect(),
            ..Self::single("")
        }
    }

    /// One host with channels_redis's defaults for everything else.
    pub fn single(url: impl Into<String>) -> Self {
        Self::with_host(HostEntry::from(url.into()))
    }

    /// One host entry of any form, with channels_redis's defaults for
    /// everything else.
    pub fn with_host(host: HostEntry) -> Self {
        Self {
            layer: LayerConfig::default(),
            hosts: vec![host],
            cluster: Vec::new(),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            symmetric_encryption_keys: Vec::new(),
            random_prefix_length: Self::DEFAULT_RANDOM_PREFIX_LENGTH,
            heartbeat_ttl: Self::DEFAULT_HEARTBEAT_TTL,
            wait_for_replicas: 0,
            wait_timeout: Self::DEFAULT_WAIT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("layer", &self.layer)
            .field("hosts", &self.hosts)
            .field(
                "cluster",
                &self
                    .cluster
                    .iter()
                    .map(|h| redact_url(h))
                    .collect::<Vec<_>>(),
            )
            .field("prefix", &self.prefix)
            .field(
                "symmetric_encryption_keys",
                &format_args!("{} (redacted)", self.symmetric_encryption_keys.len()),
            )
            .field("random_prefix_length", &self.random_prefix_length)
            .field("heartbeat_ttl", &self.heartbeat_ttl)
            .field("wait_for_replicas", &self.wait_for_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

/// A URL with its password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                // `redis://password@host` is a password with no user.
                None => format!("{}***{}", &url[..scheme_end + 3], &url[at..]),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("rediss://u:secret@h:6380/0"),
            "rediss://u:***@h:6380/0"
        );
        assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://secret@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
